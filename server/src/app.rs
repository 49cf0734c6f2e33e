//! The HTTP API (protocol v2, and v1's routes for older clients) and the static demo, as
//! one axum [`Router`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chunkwise_core::protocol::{self, Complete, CreateUpload, Created, Transfer};
use futures_util::TryStreamExt as _;
use serde::de::DeserializeOwned;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::services::ServeDir;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

/// The request id's header, set by a proxy or by this server, and sent back.
const X_REQUEST_ID: &str = "x-request-id";

use crate::error::ApiError;
use crate::metrics::{InFlight, Metrics};
use crate::store::{Backend, BodyError, Finish, IncomingSlice, NewUpload, SliceBody};

/// How long browsers may cache a CORS preflight.
pub const PREFLIGHT_MAX_AGE_SECS: u64 = 7200;

/// The largest JSON request body.
const MAX_JSON_BODY_BYTES: usize = 64 * 1024;
/// Metadata bounds: a handful of short strings, not a payload.
const MAX_METADATA_ENTRIES: usize = 64;
const MAX_METADATA_KEY_BYTES: usize = 256;
const MAX_METADATA_VALUE_BYTES: usize = 4096;
/// With a hook, every event carries the metadata and must stay under 64 KiB.
const MAX_METADATA_JSON_BYTES_WITH_HOOKS: usize = 32 * 1024;

/// Everything a handler needs.
#[derive(Debug)]
pub struct AppState<B> {
    /// Where uploads are kept.
    pub backend: Arc<B>,
    /// Bearer token required on every upload request, when set.
    pub token: Option<Arc<str>>,
    /// The app's hook (`--hook-url`), when set.
    pub hooks: Option<Arc<crate::hooks::Hooks>>,
    /// What `/metrics` reports (`--metrics-listen`); counted whether served or not.
    pub metrics: Arc<Metrics>,
}

impl<B> Clone for AppState<B> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            token: self.token.clone(),
            hooks: self.hooks.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// Where the static files are, who may call from another origin, and how long a request
/// body may go without a byte.
#[derive(Clone, Debug)]
pub struct Site {
    /// The demo page, served at `/`.
    pub www: Option<PathBuf>,
    /// The wasm package, served at `/pkg/`.
    pub pkg: Option<PathBuf>,
    /// Origins allowed through CORS; `*` allows any.
    pub allowed_origins: Vec<String>,
    /// Test-only fault injection (see [`crate::faults`]).
    pub faults: Option<crate::faults::Faults>,
    /// A request body none of whose bytes arrives for this long is cut off (`408`): the
    /// slice it carried, and the file it was written to, are released.
    pub body_idle_timeout: std::time::Duration,
    /// A body must bring this many bytes a second, after its first body idle timeout
    /// (see [`crate::pace`]); 0 turns the bound off.
    pub body_min_rate: u64,
}

/// The default of [`Site::body_idle_timeout`]: far above the gaps of a slow but moving
/// upload (a 1 Mbit/s link delivers a TCP segment every 12 ms), and above the client's own
/// stall timeout (30 s by default), which notices first and sends the slice again.
pub const BODY_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Default for Site {
    fn default() -> Self {
        Self {
            www: None,
            pkg: None,
            allowed_origins: Vec::new(),
            faults: None,
            body_idle_timeout: BODY_IDLE_TIMEOUT,
            body_min_rate: crate::pace::MIN_RATE,
        }
    }
}

/// Builds the router: the API under `/uploads`, `/healthz`, and the static files.
pub fn app<B: Backend>(state: AppState<B>, site: &Site) -> Router {
    let token = state.token.clone();
    let metrics = state.metrics.clone();
    let api = Router::new()
        .route("/uploads", post(create_upload::<B>))
        .route(
            "/uploads/{id}",
            get(upload_status::<B>)
                .put(put_slice::<B>)
                .post(complete_upload::<B>)
                .delete(delete_upload::<B>),
        )
        .route("/uploads/{id}/sign", post(sign_slice::<B>))
        .route("/uploads/{id}/slices/{index}", put(put_slice_v1::<B>))
        .route("/uploads/{id}/complete", post(complete_upload::<B>))
        .with_state(state);
    wrap(api, token, metrics, site)
}

/// Wraps the API in the bearer token, fault injection for tests, `/healthz`, the static
/// files, request ids and tracing, the in-flight count, and CORS.
fn wrap(api: Router, token: Option<Arc<str>>, metrics: Arc<Metrics>, site: &Site) -> Router {
    // Faults (tests only) sit behind the token: a request without it is refused before any
    // rule is looked up or applied, and so is any change to the rules.
    let api = match &site.faults {
        Some(faults) => api
            .layer(middleware::from_fn_with_state(
                faults.clone(),
                crate::faults::Faults::apply,
            ))
            .merge(faults.routes()),
        None => api,
    };
    let api = api
        .layer(middleware::from_fn_with_state(token, require_token))
        .method_not_allowed_fallback(method_not_allowed);

    let mut router = Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .merge(api);
    if let Some(pkg) = &site.pkg {
        router = router.nest_service(
            "/pkg",
            ServeDir::new(pkg).not_found_service(axum::routing::any(unknown_route)),
        );
    }
    router = match &site.www {
        Some(www) => router.fallback_service(
            ServeDir::new(www).not_found_service(axum::routing::any(unknown_route)),
        ),
        None => router.fallback(unknown_route),
    };
    let router = router
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                // A 5xx is often a refusal that clears (503 with Retry-After); failures
                // worth an error are logged where they happen.
                .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::WARN))
                .on_response(
                    |response: &Response, latency: std::time::Duration, _: &tracing::Span| {
                        tracing::info!(
                            status = response.status().as_u16(),
                            latency_ms = latency.as_millis() as u64,
                            "answered"
                        );
                    },
                ),
        )
        // An answer given before the body was read waits for the rest of it (bounded; see
        // linger.rs), inside the body idle timeout, so that Firefox reads the answer.
        .layer(middleware::from_fn(crate::linger::linger));
    let router = match site.body_min_rate {
        0 => router,
        min_rate => router.layer(middleware::from_fn_with_state(
            crate::pace::Pace {
                grace: site.body_idle_timeout,
                min_rate,
            },
            crate::pace::pace,
        )),
    };
    let router = router
        .layer(RequestBodyTimeoutLayer::new(site.body_idle_timeout))
        .layer(middleware::from_fn(refuse_overloaded))
        .layer(middleware::from_fn_with_state(metrics, count_in_flight))
        // Outermost, so that the span above carries the id: the proxy's (nginx:
        // `proxy_set_header X-Request-Id $request_id`) when it sent one, else a new one.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid));
    let router = match cors(&site.allowed_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    match &site.faults {
        Some(faults) => router.layer(middleware::from_fn_with_state(
            faults.clone(),
            crate::faults::Faults::count,
        )),
        None => router,
    }
}

/// The span every log line of a request carries: its id, and the upload's id when the path
/// names one (`create_upload` records it once known). The path only: a query may carry
/// what logs must not.
fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let path = request.uri().path();
    let upload_id = path
        .strip_prefix("/uploads/")
        .and_then(|rest| rest.split('/').next())
        .filter(|id| !id.is_empty() && id.len() <= 256);
    tracing::info_span!(
        "request",
        request_id,
        method = %request.method(),
        path,
        upload_id,
    )
}

async fn count_in_flight(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let _in_flight = InFlight::start(&metrics.requests_in_flight);
    next.run(request).await
}

/// Answers a connection past the server's budget (see [`crate::serve`]) `503` with
/// `Retry-After`, and closes it; `/healthz` is still answered.
async fn refuse_overloaded(request: Request, next: Next) -> Response {
    if request
        .extensions()
        .get::<crate::serve::Overloaded>()
        .is_none()
        || request.uri().path() == "/healthz"
    {
        return next.run(request).await;
    }
    let mut response = ApiError::busy(
        "too_many_connections",
        "the server has as many connections open as it serves; try again shortly",
        5,
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            // Mirrored, so that the `headers` option can carry any header a deployment needs.
            .allow_headers(AllowHeaders::mirror_request())
            // Every header the client reads.
            .expose_headers([header::LOCATION, header::RETRY_AFTER])
            // Browsers cache a preflight per URL for at most 2 h (Chromium's cap); every
            // slice of a v2 upload goes to one URL, so one preflight serves the upload.
            .max_age(std::time::Duration::from_secs(PREFLIGHT_MAX_AGE_SECS)),
    )
}

async fn require_token(
    State(token): State<Option<Arc<str>>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required",
            )
            .into_response();
        }
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn unknown_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not allowed on this resource",
    )
}

fn path_error(rejection: PathRejection) -> ApiError {
    ApiError::bad_request(
        "invalid_path",
        format!("the path cannot be read: {rejection}"),
    )
}

pub(crate) async fn read_json<T: DeserializeOwned>(
    body: Body,
    allow_empty: bool,
) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_JSON_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("a JSON body must be at most {MAX_JSON_BODY_BYTES} bytes"),
            )
        })?;
    let bytes: &[u8] = if allow_empty && bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the JSON body is invalid: {e}"))
    })
}

fn check_metadata_fits_events(metadata: &BTreeMap<String, String>) -> Result<(), ApiError> {
    let len = serde_json::to_vec(metadata).map_or(usize::MAX, |v| v.len());
    if len > MAX_METADATA_JSON_BYTES_WITH_HOOKS {
        return Err(ApiError::bad_request(
            "invalid_metadata",
            format!("with hooks, metadata may take at most {MAX_METADATA_JSON_BYTES_WITH_HOOKS} bytes of JSON; this takes {len}"),
        ));
    }
    Ok(())
}

pub(crate) fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(ApiError::bad_request(
            "invalid_metadata",
            format!("metadata may hold at most {MAX_METADATA_ENTRIES} entries"),
        ));
    }
    for (key, value) in metadata {
        if key.is_empty() || key.len() > MAX_METADATA_KEY_BYTES || key.chars().any(char::is_control)
        {
            return Err(ApiError::bad_request(
                "invalid_metadata",
                format!("metadata keys must be 1 to {MAX_METADATA_KEY_BYTES} bytes without control characters"),
            ));
        }
        if value.len() > MAX_METADATA_VALUE_BYTES || value.contains('\0') {
            return Err(ApiError::bad_request(
                "invalid_metadata",
                format!(
                    "metadata values must be at most {MAX_METADATA_VALUE_BYTES} bytes without NUL"
                ),
            ));
        }
    }
    Ok(())
}

async fn create_upload<B: Backend>(
    State(state): State<AppState<B>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let request: CreateUpload = read_json(body, false).await?;
    if request.chunk_size == 0 {
        return Err(ApiError::bad_request(
            "invalid_chunk_size",
            "chunkSize must be at least 1 byte",
        ));
    }
    let mut metadata = request.metadata.unwrap_or_default();
    validate_metadata(&metadata)?;
    if let Some(hooks) = &state.hooks {
        check_metadata_fits_events(&metadata)?;
        let upload = serde_json::json!({
            "size": request.size, "chunkSize": request.chunk_size, "metadata": metadata,
        });
        let remote_addr = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0);
        if let Some(replaced) = hooks
            .pre_create(upload, &parts.headers, remote_addr)
            .await?
        {
            validate_metadata(&replaced)?;
            check_metadata_fits_events(&replaced)?;
            metadata = replaced;
        }
    }
    let upload = state
        .backend
        .create(NewUpload {
            chunk_size: request.chunk_size,
            size: request.size,
            metadata,
        })
        .await?;
    state.metrics.uploads_created.inc();
    tracing::Span::current().record("upload_id", upload.id.as_str());
    tracing::info!(id = upload.id, chunk_size = upload.chunk_size, size = ?request.size, "upload created");
    // Relative to the request's URL (`…/uploads`), so that it resolves under whatever
    // prefix a proxy mounts the API at and strips (`/api/uploads` → `/api/uploads/{id}`).
    let location = format!("uploads/{}", upload.id);
    let body = Created {
        id: upload.id,
        chunk_size: upload.chunk_size,
        size: request.size,
        protocol: protocol::VERSION,
        transfer: state.backend.transfer(),
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

async fn upload_status<B: Backend>(
    State(state): State<AppState<B>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(path_error)?;
    let status = state.backend.status(&id).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(status)).into_response())
}

async fn delete_upload<B: Backend>(
    State(state): State<AppState<B>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = path.map_err(path_error)?;
    let upload = state.backend.delete(&id).await?;
    state.metrics.uploads_deleted.inc();
    tracing::info!(id = upload.id, "upload deleted");
    if let Some(hooks) = &state.hooks {
        hooks.upload_terminated(&upload, "deleted").await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn complete_upload<B: Backend>(
    State(state): State<AppState<B>>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(path_error)?;
    let (parts, body) = request.into_parts();
    let request: Complete = read_json(body, true).await?;
    let finish = Finish {
        size: request.size,
        sha256: hex_sha256_field(&request.sha256, "sha256", "invalid_sha256")?,
        slices_sha256: hex_sha256_field(
            &request.slices_sha256,
            "slicesSha256",
            "invalid_slices_sha256",
        )?,
    };
    if let Some(hooks) = state.hooks.as_ref().filter(|h| h.asks_pre_finish()) {
        ask_before_finish(&state, hooks, &id, finish.size, &parts).await?;
    }
    let (completed, upload) = match state.backend.complete(&id, finish).await {
        Ok(done) => done,
        Err(error) => {
            let error = ApiError::from(error);
            if error.status.is_client_error() && error.status != StatusCode::NOT_FOUND {
                state.metrics.uploads_failed.inc();
            }
            return Err(error);
        }
    };
    state.metrics.uploads_completed.inc();
    tracing::info!(id = upload.id, size = completed.size, sha256 = ?completed.sha256, "upload complete");
    if let Some(hooks) = &state.hooks {
        // Durable before the answer: the app hears of every completed upload, even if
        // the server dies right after answering.
        hooks.upload_finished(&upload, &completed).await?;
    }
    Ok(Json(completed).into_response())
}

/// With `--hook-pre-finish`, the hook is asked before an upload completes, with its size
/// (`pre-finish`): a quota that `pre-create` could not judge, since the upload was created
/// without a size, is judged here. A refusal deletes the upload, so that nothing the hook
/// refused stays on disk. A repeated `complete` is not asked again.
async fn ask_before_finish<B: Backend>(
    state: &AppState<B>,
    hooks: &crate::hooks::Hooks,
    id: &str,
    size: Option<u64>,
    parts: &axum::http::request::Parts,
) -> Result<(), ApiError> {
    let status = state.backend.status(id).await?;
    // Without a size anywhere, `complete` itself refuses it.
    let Some(size) = size.or(status.size).filter(|_| !status.complete) else {
        return Ok(());
    };
    let upload = serde_json::json!({
        "id": id, "size": size, "chunkSize": status.chunk_size, "metadata": status.metadata,
    });
    let remote_addr = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0);
    let asked = hooks.pre_finish(upload, &parts.headers, remote_addr).await;
    if let Err(refusal) = &asked {
        if refusal.status.is_client_error() {
            tracing::info!(
                id,
                size,
                "the pre-finish hook refused the upload; deleting it"
            );
            let _ = state.backend.delete(id).await;
        }
    }
    asked
}

/// An optional SHA-256 given as hex in a JSON field.
fn hex_sha256_field(
    text: &Option<String>,
    field: &str,
    code: &'static str,
) -> Result<Option<[u8; 32]>, ApiError> {
    text.as_deref()
        .map(|text| {
            protocol::parse_hex_sha256(text).ok_or_else(|| {
                ApiError::bad_request(code, format!("{field} must be 64 hexadecimal characters"))
            })
        })
        .transpose()
}

fn parse_index(text: &str) -> Result<u64, ApiError> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(
            "invalid_index",
            "a slice index is a non-negative decimal integer",
        ));
    }
    text.parse().map_err(|_| {
        ApiError::bad_request("invalid_index", "the slice index does not fit in 64 bits")
    })
}

/// v1: `PUT /uploads/{id}/slices/{index}`.
async fn put_slice_v1<B: Backend>(
    State(state): State<AppState<B>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let Path((id, index)) = path.map_err(path_error)?;
    let index = parse_index(&index)?;
    receive_slice(&state, &id, index, &headers, body).await
}

/// v2: `PUT /uploads/{id}` with the index in `Chunkwise-Slice`.
async fn put_slice<B: Backend>(
    State(state): State<AppState<B>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let Path(id) = path.map_err(path_error)?;
    let index = match headers.get(protocol::SLICE_INDEX) {
        Some(value) => parse_index(value.to_str().unwrap_or_default())?,
        None => {
            return Err(ApiError::bad_request(
                "missing_slice_index",
                "a PUT to an upload names its slice in the Chunkwise-Slice header",
            ))
        }
    };
    receive_slice(&state, &id, index, &headers, body).await
}

async fn receive_slice<B: Backend>(
    state: &AppState<B>,
    id: &str,
    index: u64,
    headers: &HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let started = std::time::Instant::now();
    let received = state.metrics.bytes_received.clone();
    let body = Body::from_stream(body.into_data_stream().inspect_ok(move |bytes| {
        received.inc_by(bytes.len() as u64);
    }));
    let answer = store_slice(state, id, index, headers, body).await;
    state.metrics.slice_answered(
        started.elapsed(),
        answer.as_ref().err().map(|error| error.code),
    );
    answer
}

async fn store_slice<B: Backend>(
    state: &AppState<B>,
    id: &str,
    index: u64,
    headers: &HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let transfer = state.backend.transfer();
    if transfer != Transfer::Server {
        return Err(wrong_transfer(transfer));
    }
    let declared_len = match headers.get(header::CONTENT_LENGTH) {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_content_length",
                        "Content-Length is not a number",
                    )
                })?,
        ),
        None => None,
    };
    let digest = match headers.get(protocol::CONTENT_DIGEST) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| {
                    ApiError::bad_request("invalid_digest_header", "Content-Digest is not ASCII")
                })
                .and_then(|v| {
                    protocol::parse_content_digest(v)
                        .map_err(|e| ApiError::bad_request("invalid_digest_header", e.to_string()))
                })?,
        ),
        None => None,
    };
    let slice = IncomingSlice {
        index,
        declared_len,
        digest,
        body: slice_body(body),
    };
    state.backend.put_slice(id, slice).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A request body as a store reads it: bytes, or why they stopped (idle past
/// `--body-idle-timeout`, or cut off).
fn slice_body(body: Body) -> SliceBody {
    Box::pin(body.into_data_stream().map_err(|error| {
        let mut source: Option<&dyn std::error::Error> = Some(&error);
        while let Some(e) = source {
            if e.is::<tower_http::timeout::TimeoutError>() {
                return BodyError::TimedOut;
            }
            if let Some(slow) = e.downcast_ref::<crate::pace::TooSlow>() {
                return BodyError::TooSlow(slow.to_string());
            }
            source = e.source();
        }
        BodyError::Cut(error.to_string())
    }))
}

/// The answer to a request for the other [`Transfer`].
fn wrong_transfer(transfer: Transfer) -> ApiError {
    match transfer {
        Transfer::Server => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "slices go through this server: PUT /uploads/{id} with Chunkwise-Slice",
        ),
        Transfer::Direct => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "slices go straight to the object store: ask POST /uploads/{id}/sign for each",
        ),
    }
}

/// `POST /uploads/{id}/sign` body: the slice about to be sent straight to the store.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SignRequest {
    slice: u64,
    size: u64,
    /// Base64, as `x-amz-checksum-sha256` carries it.
    sha256: Option<String>,
}

async fn sign_slice<B: Backend>(
    State(state): State<AppState<B>>,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(path_error)?;
    let transfer = state.backend.transfer();
    if transfer != Transfer::Direct {
        return Err(wrong_transfer(transfer));
    }
    let request: SignRequest = read_json(body, false).await?;
    let sha256 = request
        .sha256
        .map(|text| {
            BASE64
                .decode(text)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_digest", "sha256 must be 32 bytes in base64")
                })
        })
        .transpose()?;
    let signed = state
        .backend
        .sign_slice(&id, request.slice, request.size, sha256)
        .await?;
    Ok(Json(signed).into_response())
}
