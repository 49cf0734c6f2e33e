//! Uploads kept in an object store, in one of two modes.
//!
//! **Direct** (`--s3-bucket`): the browser sends slices straight to the store; this server
//! only signs. **Through** (`--store s3://bucket/prefix`): slices stream through this
//! server, which passes each to the store as a part with the client's `Content-Digest` as
//! its SHA-256 checksum, so the store checks it; everything else is the same.
//!
//! `POST /uploads` starts a multipart upload whose parts carry SHA-256 checksums. For each
//! slice the browser asks `POST /uploads/{id}/sign` with the slice's SHA-256 and gets a
//! presigned `PUT` of that part, valid for minutes, signed just in time (so no URL can
//! expire in a queue); the store checks the checksum and refuses a corrupted part.
//! `GET /uploads/{id}` lists the parts the store holds (resuming), `POST /uploads/{id}`
//! checks every part's size and SHA-256 against the client's digest of all slices and
//! completes, `DELETE` aborts. The store, not this server, is the source of truth, and the
//! upload id is a signed token naming the multipart upload, so any number of instances
//! with the same credentials serve one upload, and one may be killed mid-upload.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chunkwise_core::protocol::{Complete, CreateUpload, SlicesDigest, VERSION};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::error::ApiError;
use crate::objects::{Multipart, Part};

/// S3's limits on multipart uploads.
const MAX_PARTS: u64 = 10_000;
const MAX_PART_SIZE: u64 = 5 << 30;
/// How long a presigned part URL lives. It is signed when the slice is about to go, so
/// this only has to cover one slice on a slow link.
const SIGNED_FOR: Duration = Duration::from_secs(60 * 60);
/// User metadata S3 keeps is at most 2 KiB; chunkwise's goes in one entry, as JSON.
const MAX_METADATA_JSON_BYTES: usize = 1536;

/// What direct mode's handlers share.
pub struct DirectState<M> {
    /// The store.
    pub store: M,
    /// Prepended to each upload id to make its object key.
    pub prefix: String,
    /// Signs upload tokens; the same for every instance that shares the store.
    pub token_key: [u8; 32],
    /// The smallest part the store accepts (all but the last); S3's is 5 MiB.
    pub min_part_size: u64,
    /// Largest upload, in bytes.
    pub max_upload_size: u64,
    /// Slices pass through this server (scale-out mode) instead of going straight to the
    /// store.
    pub through: bool,
}

/// An upload as its token names it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Token {
    id: String,
    upload_id: String,
    chunk_size: u64,
    size: Option<u64>,
}

impl<M> DirectState<M> {
    fn mac(&self, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.token_key).expect("any key length");
        mac.update(body.as_bytes());
        URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..16])
    }

    fn seal(&self, token: &Token) -> String {
        let body = format!(
            "{}.{}.{}.{}",
            token.id,
            URL_SAFE_NO_PAD.encode(&token.upload_id),
            token.chunk_size,
            token.size.map_or("u".to_string(), |s| s.to_string())
        );
        let mac = self.mac(&body);
        format!("{body}.{mac}")
    }

    fn open(&self, text: &str) -> Result<Token, ApiError> {
        let not_found = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "upload_not_found",
                "no such upload: the id is not one this server (or another sharing its store) gave out",
            )
        };
        let (body, mac) = text.rsplit_once('.').ok_or_else(not_found)?;
        if !crate::app::constant_time_eq(self.mac(body).as_bytes(), mac.as_bytes()) {
            return Err(not_found());
        }
        let mut fields = body.split('.');
        let (Some(id), Some(upload), Some(chunk), Some(size), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(not_found());
        };
        Ok(Token {
            id: id.to_string(),
            upload_id: URL_SAFE_NO_PAD
                .decode(upload)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(not_found)?,
            chunk_size: chunk.parse().map_err(|_| not_found())?,
            size: match size {
                "u" => None,
                s => Some(s.parse().map_err(|_| not_found())?),
            },
        })
    }

    /// What create and status say about where slices go.
    fn transfer(&self) -> &'static str {
        if self.through {
            "server"
        } else {
            "direct"
        }
    }

    fn key(&self, token: &Token) -> String {
        format!("{}{}", self.prefix, token.id)
    }
}

/// The API routes of direct mode.
pub fn api<M: Multipart>(state: Arc<DirectState<M>>) -> Router {
    Router::new()
        .route("/uploads", post(create::<M>))
        .route(
            "/uploads/{id}",
            get(status::<M>)
                .post(complete::<M>)
                .delete(abort::<M>)
                .put(put_slice::<M>),
        )
        .route("/uploads/{id}/sign", post(sign::<M>))
        .with_state(state)
}

/// The length of slice `index`, when the size is known.
fn slice_len(token: &Token, index: u64) -> Option<u64> {
    let size = token.size?;
    let start = index.checked_mul(token.chunk_size)?;
    (start < size).then(|| (size - start).min(token.chunk_size))
}

async fn create<M: Multipart>(
    State(state): State<Arc<DirectState<M>>>,
    request: Request,
) -> Result<Response, ApiError> {
    let request: CreateUpload = crate::app::read_json(request.into_body(), false).await?;
    let chunk = request.chunk_size;
    if chunk < state.min_part_size || chunk > MAX_PART_SIZE {
        return Err(ApiError::bad_request(
            "chunk_size_refused",
            format!(
                "chunkSize {chunk} is not one the object store accepts: its parts must be from {} ({} MiB) to {MAX_PART_SIZE} bytes; use e.g. chunkSize: 8388608",
                state.min_part_size,
                state.min_part_size >> 20
            ),
        ));
    }
    if let Some(size) = request.size {
        if size > state.max_upload_size {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "upload_too_large",
                format!(
                    "size {size} exceeds the server's limit of {} bytes",
                    state.max_upload_size
                ),
            ));
        }
        if size.div_ceil(chunk) > MAX_PARTS {
            return Err(ApiError::bad_request(
                "chunk_size_refused",
                format!(
                    "a store upload has at most {MAX_PARTS} parts, and {size} bytes in slices of {chunk} need {}; use chunkSize of at least {}",
                    size.div_ceil(chunk),
                    size.div_ceil(MAX_PARTS)
                ),
            ));
        }
    }
    let metadata = request.metadata.unwrap_or_default();
    crate::app::validate_metadata(&metadata)?;
    let stored = store_metadata(&metadata)?;
    let token = Token {
        id: crate::store::new_id()?,
        upload_id: String::new(),
        chunk_size: chunk,
        size: request.size,
    };
    let key = state.key(&token);
    let upload_id = state.store.create(&key, &stored).await?;
    let token = Token { upload_id, ..token };
    let sealed = state.seal(&token);
    tracing::info!(key, "direct upload created");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/uploads/{sealed}"))],
        Json(serde_json::json!({
            "id": sealed,
            "chunkSize": chunk,
            "size": request.size,
            "protocol": VERSION,
            "transfer": state.transfer(),
        })),
    )
        .into_response())
}

/// `PUT /uploads/{id}` with `Chunkwise-Slice` and `Content-Digest` (through mode): the
/// body streams into the store as a part, checked there against its digest.
async fn put_slice<M: Multipart>(
    State(state): State<Arc<DirectState<M>>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    if !state.through {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "slices go straight to the object store: ask POST /uploads/{id}/sign for each",
        ));
    }
    let token = state.open(&id)?;
    let headers = request.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let index: u64 = text(chunkwise_core::protocol::SLICE_INDEX)
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_slice_index",
                "Chunkwise-Slice must be the slice's index",
            )
        })?;
    let digest = text(chunkwise_core::protocol::CONTENT_DIGEST)
        .ok_or_else(|| {
            ApiError::bad_request(
                "digest_required",
                "uploads kept in an object store need each slice's Content-Digest (sha-256), which the store checks: use digest \"sha-256\"",
            )
        })
        .and_then(|v| {
            chunkwise_core::protocol::parse_content_digest(v)
                .map_err(|e| ApiError::bad_request("invalid_digest", e.to_string()))
        })?;
    let len: u64 = text("content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::LENGTH_REQUIRED,
                "length_required",
                "a slice needs Content-Length",
            )
        })?;
    check_slice(&token, index, len)?;
    let key = state.key(&token);
    let body = crate::objects::stream_body(request.into_body());
    state
        .store
        .put_part(
            &key,
            &token.upload_id,
            (index + 1) as u32,
            &digest,
            len,
            body,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Refuses a slice past the store's part limit, past the end, or of the wrong length.
fn check_slice(token: &Token, index: u64, len: u64) -> Result<(), ApiError> {
    if index >= MAX_PARTS {
        return Err(ApiError::bad_request(
            "too_many_slices",
            format!("a store upload has at most {MAX_PARTS} parts; use a larger chunkSize"),
        ));
    }
    let expected = match token.size {
        Some(_) => slice_len(token, index).ok_or_else(|| {
            ApiError::bad_request(
                "slice_out_of_range",
                format!("slice {index} is past the end of the upload"),
            )
        })?,
        None => token.chunk_size,
    };
    let wrong = match token.size {
        Some(_) => len != expected,
        None => len > expected || len == 0,
    };
    if wrong {
        return Err(ApiError::bad_request(
            "wrong_slice_size",
            format!("slice {index} must be {expected} bytes, not {len}"),
        ));
    }
    Ok(())
}

/// Metadata as the store keeps it: one `chunkwise` entry of JSON, base64 (S3 metadata is
/// headers: ASCII, 2 KiB in all).
fn store_metadata(
    metadata: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ApiError> {
    if metadata.is_empty() {
        return Ok(BTreeMap::new());
    }
    let json = serde_json::to_string(metadata).unwrap_or_default();
    if json.len() > MAX_METADATA_JSON_BYTES {
        return Err(ApiError::bad_request(
            "invalid_metadata",
            format!("an object store keeps at most 2 KiB of metadata: at most {MAX_METADATA_JSON_BYTES} bytes of JSON; this takes {}", json.len()),
        ));
    }
    Ok(BTreeMap::from([(
        "chunkwise".to_string(),
        URL_SAFE_NO_PAD.encode(json),
    )]))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SignRequest {
    slice: u64,
    size: u64,
    sha256: Option<String>,
}

async fn sign<M: Multipart>(
    State(state): State<Arc<DirectState<M>>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let token = state.open(&id)?;
    let request: SignRequest = crate::app::read_json(request.into_body(), false).await?;
    let Some(sha256) = request.sha256 else {
        return Err(ApiError::bad_request(
            "digest_required",
            "uploads straight to the object store need each slice's SHA-256 (the store checks it): use digest \"sha-256\"",
        ));
    };
    let digest: [u8; 32] = BASE64
        .decode(&sha256)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            ApiError::bad_request("invalid_digest", "sha256 must be 32 bytes in base64")
        })?;
    if state.through {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_route",
            "slices go through this server: PUT /uploads/{id} with Chunkwise-Slice",
        ));
    }
    check_slice(&token, request.slice, request.size)?;
    let signed = state
        .store
        .sign_part(
            &state.key(&token),
            &token.upload_id,
            (request.slice + 1) as u32,
            &digest,
            request.size,
            SIGNED_FOR,
        )
        .await?;
    Ok(Json(signed).into_response())
}

async fn status<M: Multipart>(
    State(state): State<Arc<DirectState<M>>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let token = state.open(&id)?;
    let key = state.key(&token);
    let Some(parts) = state.store.parts(&key, &token.upload_id).await? else {
        // Completed, or aborted.
        return match state.store.object_size(&key).await? {
            Some(size) => Ok(status_json(
                state.through,
                &id,
                &token,
                Some(size),
                &[],
                size,
                true,
            )),
            None => Err(ApiError::upload_not_found(&token.id)),
        };
    };
    let mut received: Vec<[u64; 2]> = Vec::new();
    let mut bytes = 0;
    for part in parts.iter().filter(|p| p.number >= 1) {
        let index = u64::from(part.number - 1);
        if slice_len(&token, index).is_some_and(|len| len != part.size) {
            continue;
        }
        bytes += part.size;
        match received.last_mut() {
            Some(range) if range[1] == index => range[1] += 1,
            _ => received.push([index, index + 1]),
        }
    }
    Ok(status_json(
        state.through,
        &id,
        &token,
        token.size,
        &received,
        bytes,
        false,
    ))
}

fn status_json(
    through: bool,
    id: &str,
    token: &Token,
    size: Option<u64>,
    received: &[[u64; 2]],
    bytes: u64,
    complete: bool,
) -> Response {
    Json(serde_json::json!({
        "id": id,
        "chunkSize": token.chunk_size,
        "size": size,
        "received": received,
        "bytesReceived": bytes,
        "complete": complete,
        "protocol": VERSION,
        "transfer": if through { "server" } else { "direct" },
    }))
    .into_response()
}

async fn complete<M: Multipart>(
    State(state): State<Arc<DirectState<M>>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let token = state.open(&id)?;
    let request: Complete = crate::app::read_json(body, true).await?;
    let key = state.key(&token);
    let size = match (token.size, request.size) {
        (Some(ours), Some(theirs)) if ours != theirs => {
            return Err(ApiError::bad_request(
                "size_mismatch",
                format!("the upload was created with size {ours}, not {theirs}"),
            ))
        }
        (Some(size), _) | (None, Some(size)) => size,
        (None, None) => {
            return Err(ApiError::bad_request(
                "size_required",
                "complete needs the size of an upload created without one",
            ))
        }
    };
    let sized = Token {
        size: Some(size),
        ..token.clone()
    };
    let Some(parts) = state.store.parts(&key, &token.upload_id).await? else {
        // Completed already (a retried complete) or aborted.
        return match state.store.object_size(&key).await? {
            Some(stored) if stored == size => {
                Ok(completed_json(&id, size, request.slices_sha256.as_deref()))
            }
            _ => Err(ApiError::upload_not_found(&token.id)),
        };
    };
    let count = size.div_ceil(token.chunk_size);
    let by_number: BTreeMap<u32, &Part> = parts.iter().map(|p| (p.number, p)).collect();
    let missing: Vec<u64> = (0..count)
        .filter(|&i| {
            by_number
                .get(&((i + 1) as u32))
                .is_none_or(|p| Some(p.size) != slice_len(&sized, i))
        })
        .take(10)
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::conflict(
            "slices_missing",
            format!("the store lacks slices (or holds them with the wrong size): {missing:?}"),
        ));
    }
    // Every part was checked by the store against the SHA-256 it was signed with; the
    // digest of all of them must be the client's digest of what it read.
    let mut digest = SlicesDigest::new();
    let mut chosen = Vec::with_capacity(count as usize);
    for i in 0..count {
        let part = by_number[&((i + 1) as u32)];
        let Some(sha256) = part.sha256 else {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "store_refused",
                format!("the store holds part {} without its SHA-256 checksum; this store does not check part checksums", i + 1),
            ));
        };
        digest.push(&sha256);
        chosen.push(part.clone());
    }
    let ours = digest.finish();
    if let Some(theirs) = &request.slices_sha256 {
        if !theirs.eq_ignore_ascii_case(&ours) {
            return Err(ApiError::bad_request(
                "digest_mismatch",
                format!("the store's slices have digest {ours} but the client's have {theirs}"),
            ));
        }
    }
    if count == 0 {
        state.store.abort(&key, &token.upload_id).await?;
        state.store.put_empty(&key, &BTreeMap::new()).await?;
    } else {
        state
            .store
            .complete(&key, &token.upload_id, &chosen)
            .await?;
    }
    tracing::info!(key, size, "direct upload completed");
    Ok(completed_json(&id, size, Some(&ours)))
}

fn completed_json(id: &str, size: u64, slices_sha256: Option<&str>) -> Response {
    Json(serde_json::json!({
        "id": id,
        "size": size,
        // The bytes never passed here: the store checked each part's SHA-256, and the
        // digest of all of them matched the client's. There is no whole-file hash.
        "sha256": null,
        "slicesSha256": slices_sha256,
    }))
    .into_response()
}

async fn abort<M: Multipart>(
    State(state): State<Arc<DirectState<M>>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let token = state.open(&id)?;
    state
        .store
        .abort(&state.key(&token), &token.upload_id)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The key that signs upload tokens, derived from the store's secret: every instance with
/// the same credentials accepts the others' tokens, and nobody without them can forge one.
pub fn token_key(secret_access_key: &str, bucket: &str, prefix: &str) -> [u8; 32] {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret_access_key.as_bytes()).expect("any key length");
    mac.update(b"chunkwise upload token v1\0");
    mac.update(bucket.as_bytes());
    mac.update(b"\0");
    mac.update(prefix.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> DirectState<()> {
        DirectState {
            store: (),
            prefix: "p/".into(),
            token_key: token_key("secret", "b", "p/"),
            min_part_size: 5 << 20,
            max_upload_size: 1 << 40,
            through: false,
        }
    }

    #[test]
    fn tokens_round_trip_and_refuse_tampering() {
        let state = state();
        let token = Token {
            id: "abcdefghijklmnopqrstuv".into(),
            upload_id: "some/upload+id=".into(),
            chunk_size: 8 << 20,
            size: Some(12345),
        };
        let sealed = state.seal(&token);
        assert_eq!(state.open(&sealed).unwrap(), token);
        let unknown = Token {
            size: None,
            ..token
        };
        assert_eq!(state.open(&state.seal(&unknown)).unwrap(), unknown);
        let tampered = sealed.replacen("12345", "12346", 1);
        assert_eq!(
            state.open(&tampered).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        let other = DirectState {
            token_key: token_key("other", "b", "p/"),
            ..state
        };
        assert!(
            other.open(&sealed).is_err(),
            "another store's key refuses it"
        );
    }

    #[test]
    fn slice_lengths() {
        let token = Token {
            id: String::new(),
            upload_id: String::new(),
            chunk_size: 10,
            size: Some(25),
        };
        assert_eq!(slice_len(&token, 0), Some(10));
        assert_eq!(slice_len(&token, 2), Some(5));
        assert_eq!(slice_len(&token, 3), None);
    }
}
