//! The protocol [`Transport`]: slices through `XMLHttpRequest` (for upload progress),
//! everything else through the global `fetch` (window or worker).
//!
//! Every request owns an `AbortController`; dropping the request's future aborts it, so
//! an aborted or failed upload leaves no request running.
//!
//! The transport speaks v2 to a server that says so in its create or status answer (one
//! URL per upload, so one CORS preflight), and v1 otherwise.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};

use chunkwise_core::engine::{CreatedUpload, SentBytes, SliceData, Transport, TransportError};
use chunkwise_core::protocol::{
    self, Complete, Completed, CreateUpload, Created, ErrorBody, Status, Transfer,
};
use chunkwise_core::retry::Failure;
use js_sys::{Array, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, AbortSignal, Headers, RequestInit, Response, Url};

use crate::interop::describe_js_error;
use crate::json::{self, FromJson};
use crate::s3::{Session, S3_ENDPOINT};
use crate::source::Body;

#[wasm_bindgen(module = "/src/js/browser.js")]
extern "C" {
    /// `fetch` of the global scope, whichever it is; a tus `PATCH` whose answer's
    /// `Upload-Offset` is not where its body ended is answered `409`, as by `sendXhr`.
    #[wasm_bindgen(js_name = fetchChecked)]
    fn global_fetch(input: &str, init: &RequestInit) -> Promise;
    #[wasm_bindgen(js_name = hasXhr)]
    fn has_xhr() -> bool;
    /// Resolves with `{status, statusText, retryAfter, text}`; rejects without an answer.
    #[wasm_bindgen(js_name = sendXhr)]
    fn send_xhr(
        method: &str,
        url: &str,
        headers: Array,
        body: &JsValue,
        on_sent: &Closure<dyn FnMut(f64)>,
        signal: &AbortSignal,
    ) -> Promise;
    #[wasm_bindgen(js_name = answersWithoutCors)]
    fn answers_without_cors(url: &str, ms: u32) -> Promise;
    /// `body` without its first `skip` bytes (a Blob or a byte view over the same memory).
    #[wasm_bindgen(js_name = restOf)]
    fn rest_of(body: &JsValue, skip: f64) -> JsValue;
}

/// How long the CORS diagnosis waits for a `no-cors` answer.
const CORS_PROBE_MS: u32 = 5_000;

/// Aborts its request when dropped before the answer was read.
struct AbortOnDrop(Option<AbortController>);

impl AbortOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(controller) = self.0.take() {
            controller.abort();
        }
    }
}

/// Talks the protocol to one server.
#[derive(Debug)]
pub struct HttpTransport {
    endpoint: String,
    headers: Vec<(String, String)>,
    /// Slices go through XMLHttpRequest (absent in service workers).
    xhr: bool,
    /// The protocol version the server announced (1 until it said otherwise).
    protocol: Cell<u32>,
    /// The server is a signer: slices go straight to an object store, each `PUT` signed
    /// by `POST {upload}/sign` just before it is sent.
    direct: Cell<bool>,
    /// The server is in the page: the app's `s3` callbacks, or tus spoken to a tus server.
    session: Option<Session>,
    /// The session speaks tus: a slice is a `PATCH` whose 409 and 423 are retried after
    /// asking where the upload stands, and whose 460 is a corrupted slice.
    tus: bool,
    /// Where the completed upload is, when the server said (an `s3` upload's object).
    completed_location: RefCell<Option<String>>,
}

fn network_error(message: String) -> TransportError {
    TransportError {
        failure: Failure::Network,
        code: None,
        message,
    }
}

fn protocol_error(status: u16, message: String) -> TransportError {
    TransportError {
        failure: Failure::Status {
            status,
            retry_after_ms: None,
        },
        code: Some("protocol".into()),
        message,
    }
}

impl HttpTransport {
    /// Uploads straight to S3 through the app's `s3` callbacks (checked).
    pub fn s3(calls: &Object) -> Self {
        Self {
            session: Some(Session::s3(calls)),
            ..Self::new(S3_ENDPOINT.into(), Vec::new())
        }
    }

    /// Speaks tus 1.0 to the tus server at `endpoint`, slicing in `chunk_size_bytes` (or,
    /// unless `given`, in larger slices where nothing reads them: see `TusSession`).
    pub fn tus(
        endpoint: String,
        headers: Vec<(String, String)>,
        chunk_size_bytes: u64,
        given: bool,
    ) -> Self {
        Self {
            session: Some(Session::tus(&endpoint, &headers, chunk_size_bytes, given)),
            tus: true,
            ..Self::new(endpoint, headers)
        }
    }

    /// Whether each slice's SHA-256 is checked by the receiver, so worth computing: always
    /// for chunkwise-server and S3; for tus, when the server says it checks sha256 (asked
    /// once, within `ms`).
    pub async fn checks_slices(&self, ms: f64) -> bool {
        match &self.session {
            Some(session) if self.tus => JsFuture::from(session.discover(ms))
                .await
                .is_ok_and(|v| v.is_truthy()),
            _ => true,
        }
    }

    /// Where the completed upload is, when the server said better than its location.
    pub fn completed_location(&self) -> Option<String> {
        self.completed_location.borrow().clone()
    }

    /// `endpoint` is already absolute; `headers` go on every request.
    pub fn new(endpoint: String, headers: Vec<(String, String)>) -> Self {
        Self {
            endpoint,
            headers,
            xhr: has_xhr(),
            protocol: Cell::new(1),
            direct: Cell::new(false),
            session: None,
            tus: false,
            completed_location: RefCell::default(),
        }
    }

    /// After a request to `url` got no answer: if `url` is on another origin and answers a
    /// `no-cors` request, the server is up and its CORS rules refuse this page, which no
    /// retry can mend. Otherwise the error stands (offline, server down).
    async fn diagnose(&self, to: To, url: &str, error: TransportError) -> TransportError {
        if error.failure != Failure::Network {
            return error;
        }
        let page_origin = Reflect::get(&js_sys::global(), &"location".into())
            .and_then(|location| Reflect::get(&location, &"origin".into()))
            .ok()
            .and_then(|origin| origin.as_string());
        let target_origin = Url::new(url).map(|u| u.origin()).ok();
        let (Some(page_origin), Some(target_origin)) = (page_origin, target_origin) else {
            return error;
        };
        if page_origin == target_origin {
            return error;
        }
        let reachable = JsFuture::from(answers_without_cors(url, CORS_PROBE_MS))
            .await
            .is_ok_and(|v| v.is_truthy());
        if !reachable {
            return error;
        }
        TransportError {
            failure: Failure::Blocked,
            code: Some("cors".into()),
            message: format!(
                "{target_origin} answers, but the browser hid its answer from this page \
                 ({page_origin}): its CORS rules most likely do not allow this origin \
                 ({})",
                if self.tus {
                    format!("the tus server must allow {page_origin}, the Tus-Resumable, Upload-* and Content-Type headers, and expose Location and Upload-Offset")
                } else if to == To::Store {
                    format!("the bucket needs a CORS rule allowing PUT from {page_origin} with header x-amz-checksum-sha256; see the README")
                } else {
                    format!("chunkwise-server: --allowed-origin {page_origin}; a bucket: a CORS rule for it")
                }
            ),
        }
    }

    /// Sends a slice through XMLHttpRequest, reporting bytes as they leave.
    /// `extra` are the protocol's headers.
    async fn put_xhr(
        &self,
        method: &str,
        url: &str,
        body: &JsValue,
        extra: &[(&str, &str)],
        to: To,
        sent: SentBytes<'_>,
    ) -> Result<(), TransportError> {
        let headers = Array::new();
        for (name, value) in merge_headers(self.options_for(to), extra) {
            headers.push(&name.into());
            headers.push(&value.into());
        }
        // The XHR's events arrive outside any poll: they leave the latest count here (and
        // that there was news, for heartbeats that repeat it) and wake the future, which
        // hands it to `sent`.
        let latest = Rc::new(Cell::new(0.0f64));
        let heard = Rc::new(Cell::new(false));
        let waker: Rc<RefCell<Option<Waker>>> = Rc::default();
        let on_sent = {
            let (latest, heard, waker) = (latest.clone(), heard.clone(), waker.clone());
            Closure::<dyn FnMut(f64)>::new(move |bytes: f64| {
                latest.set(latest.get().max(bytes));
                heard.set(true);
                if let Some(waker) = waker.borrow_mut().take() {
                    waker.wake();
                }
            })
        };
        let controller =
            AbortController::new().map_err(|e| network_error(describe_js_error(&e)))?;
        // Declared after `on_sent`, so dropped (aborting the XHR) before it.
        let mut guard = AbortOnDrop(Some(controller.clone()));
        let mut answer = JsFuture::from(send_xhr(
            method,
            url,
            headers,
            body,
            &on_sent,
            &controller.signal(),
        ));
        let answer = std::future::poll_fn(|cx| {
            if heard.replace(false) {
                sent(latest.get() as u64);
            }
            match Pin::new(&mut answer).poll(cx) {
                Poll::Ready(result) => Poll::Ready(result),
                Poll::Pending => {
                    *waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await;
        guard.disarm();
        let answer = answer.map_err(|e| {
            network_error(format!("{method} {url} failed: {}", describe_js_error(&e)))
        })?;
        let field = |name: &str| Reflect::get(&answer, &name.into()).unwrap_or_default();
        let status = field("status").as_f64().unwrap_or(0.0) as u16;
        if (200..300).contains(&status) {
            return Ok(());
        }
        let text = field("text").as_string().unwrap_or_default();
        let error = status_error(
            method,
            url,
            status,
            &field("statusText").as_string().unwrap_or_default(),
            field("retryAfter").as_string(),
            &text,
        );
        Err(to.refine(status, &text, error))
    }

    /// Sends `body` (`len` bytes) with `method`, through XMLHttpRequest where there is one
    /// (it reports bytes as they leave), else through fetch (service workers).
    #[allow(clippy::too_many_arguments)]
    async fn send_body(
        &self,
        to: To,
        method: &str,
        url: &str,
        body: &JsValue,
        len: u64,
        extra: &[(&str, &str)],
        sent: SentBytes<'_>,
    ) -> Result<(), TransportError> {
        let result = if self.xhr {
            self.put_xhr(method, url, body, extra, to, sent).await
        } else {
            self.send_to(to, method, url, Some(body), extra)
                .await
                .map(drop)
        };
        result.map_err(|mut error| {
            if error.code.is_none()
                && matches!(error.failure, Failure::Status { status: 413, .. })
            {
                // A proxy's body limit (nginx's is 1 MiB by default) meets every slice.
                error.message = format!(
                    "the slice of {len} bytes was refused as too large by the server or a proxy in front of it ({}): lower chunkSize, or raise the proxy's body limit (nginx: client_max_body_size)",
                    error.message
                );
            }
            error
        })
    }

    /// The `headers` option goes along only to our own server, never to a store whose
    /// signature covers the headers.
    fn options_for(&self, to: To) -> &[(String, String)] {
        match to {
            To::Store => &[],
            To::Server | To::ServerSlice => &self.headers,
        }
    }

    /// A slice straight to the object store: sign it with our server, then `PUT` it there.
    async fn put_direct(
        &self,
        location: &str,
        slice: &SliceData<Body>,
        sent: SentBytes<'_>,
    ) -> Result<(), TransportError> {
        let header = slice.sha256.as_ref().map(protocol::content_digest);
        let base64 = header
            .as_deref()
            .map(|h| h.trim_start_matches("sha-256=:").trim_end_matches(':'));
        if base64.is_none() && !self.tus {
            return Err(TransportError {
                failure: Failure::Status {
                    status: 400,
                    retry_after_ms: None,
                },
                code: Some("digest_required".into()),
                message: "uploads straight to an object store need each slice's SHA-256, which the store checks: use digest \"sha-256\"".into(),
            });
        }
        let url = format!("{location}/sign");
        let response = self
            .post_json(&url, json::sign_body(slice.index, slice.len, base64))
            .await?;
        let signed: json::Signed = Self::json(&response).await?;
        let headers: Vec<(&str, &str)> = signed
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        // A tus server may hold part of the slice already (an earlier attempt's bytes):
        // only the rest is sent, and counted after what it holds.
        let skip = signed.skip.min(slice.len);
        sent(skip);
        if skip == slice.len {
            return Ok(());
        }
        let body = match skip {
            0 => slice.body.value.clone(),
            _ => rest_of(&slice.body.value, skip as f64),
        };
        // A CORS refusal stops a request before any of its body leaves; a request cut
        // after its bytes moved met a network fault, whatever a probe says afterwards.
        let moved = Rc::new(Cell::new(false));
        let counted: SentBytes<'_> = {
            let moved = moved.clone();
            Rc::new(move |bytes| {
                moved.set(moved.get() || bytes > 0);
                sent(skip + bytes)
            })
        };
        let method = signed.method.as_deref().unwrap_or("PUT");
        let result = self
            .send_body(
                To::Store,
                method,
                &signed.url,
                &body,
                slice.len - skip,
                &headers,
                counted,
            )
            .await;
        let Err(mut error) = result else {
            return Ok(());
        };
        if let (true, Failure::Status { status, .. }) = (self.tus, error.failure) {
            match status {
                409 | 423 => error.failure = Failure::Resync { status },
                460 => error.failure = Failure::Corrupted { status },
                _ => {}
            }
        }
        if moved.get() {
            return Err(error);
        }
        Err(self.diagnose(To::Store, &signed.url, error).await)
    }

    /// Whether the server speaks v2: everything at the upload's own URL.
    fn v2(&self) -> bool {
        self.protocol.get() >= 2
    }

    /// Where a request about the upload at `location` goes: the upload's URL in v2, or
    /// v1's sub-resource `v1_path` (`slices/{index}`, `complete`).
    fn upload_url(&self, location: &str, v1_path: impl std::fmt::Display) -> String {
        if self.v2() {
            location.to_string()
        } else {
            format!("{location}/{v1_path}")
        }
    }

    async fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<&JsValue>,
        extra: &[(&str, &str)],
    ) -> Result<Response, TransportError> {
        self.send_to(To::Server, method, url, body, extra).await
    }

    /// Sends a request with fetch, for `to`.
    async fn send_to(
        &self,
        to: To,
        method: &str,
        url: &str,
        body: Option<&JsValue>,
        extra: &[(&str, &str)],
    ) -> Result<Response, TransportError> {
        let headers = Headers::new().map_err(|e| network_error(describe_js_error(&e)))?;
        for (name, value) in merge_headers(self.options_for(to), extra) {
            headers
                .set(name, value)
                .map_err(|e| network_error(describe_js_error(&e)))?;
        }
        let controller =
            AbortController::new().map_err(|e| network_error(describe_js_error(&e)))?;
        let init = RequestInit::new();
        init.set_method(method);
        init.set_headers(&headers);
        init.set_signal(Some(&controller.signal()));
        if let Some(body) = body {
            init.set_body(body);
        }
        let mut guard = AbortOnDrop(Some(controller));
        let answer = JsFuture::from(match (&self.session, to) {
            (Some(session), To::Server) => session.fetch(url, &init),
            _ => global_fetch(url, &init),
        })
        .await;
        let response: Response = answer
            .map_err(|e| {
                network_error(format!("{method} {url} failed: {}", describe_js_error(&e)))
            })?
            .unchecked_into();
        if response.ok() {
            guard.disarm();
            return Ok(response);
        }
        let retry_after = response.headers().get("retry-after").ok().flatten();
        let text = match response.text() {
            Ok(promise) => JsFuture::from(promise)
                .await
                .ok()
                .and_then(|t| t.as_string())
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
        guard.disarm();
        let status = response.status();
        let error = status_error(
            method,
            url,
            status,
            &response.status_text(),
            retry_after,
            &text,
        );
        Err(to.refine(status, &text, error))
    }

    /// `POST`s `body` (a plain object) as JSON.
    async fn post_json(&self, url: &str, body: JsValue) -> Result<Response, TransportError> {
        let body = json::stringify(&body);
        self.send(
            "POST",
            url,
            Some(&body),
            &[("content-type", "application/json")],
        )
        .await
    }

    async fn json<T: FromJson>(response: &Response) -> Result<T, TransportError> {
        let value = Self::json_value(response).await?;
        T::from_json(&value).map_err(|e| not_protocol(response.status(), e))
    }

    async fn json_value(response: &Response) -> Result<JsValue, TransportError> {
        let status = response.status();
        let promise = response
            .text()
            .map_err(|e| network_error(describe_js_error(&e)))?;
        let text = JsFuture::from(promise)
            .await
            .map_err(|e| {
                network_error(format!(
                    "reading the answer failed: {}",
                    describe_js_error(&e)
                ))
            })?
            .as_string()
            .unwrap_or_default();
        json::parse_value(&text).map_err(|e| not_protocol(status, e))
    }
}

/// Where a request goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum To {
    /// chunkwise-server: create, status, complete, sign, delete.
    Server,
    /// A slice to chunkwise-server.
    ServerSlice,
    /// A slice straight to the object store.
    Store,
}

impl To {
    /// The error for an answer of `status` with body `text`: a store's XML error read, and
    /// a slice whose SHA-256 the receiver refused made [`Failure::Corrupted`].
    fn refine(self, status: u16, text: &str, mut error: TransportError) -> TransportError {
        if self == To::Store {
            error = store_error(status, text, error);
        }
        if self != To::Server && error.code.as_deref() == Some("digest_mismatch") && status == 400 {
            // The receiver checked the slice's SHA-256 and the bytes did not match: they
            // were corrupted on the way. Send the slice again, read again from the source.
            error.failure = Failure::Corrupted { status };
        }
        error
    }
}

/// `options`, then the protocol's own `extra` headers, which replace options of the same
/// name (XHR's `setRequestHeader` would append to them, where fetch's `Headers.set`
/// replaces).
fn merge_headers<'a>(
    options: &'a [(String, String)],
    extra: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = (&'a str, &'a str)> {
    let ours = |name: &str| extra.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    options
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .filter(move |(n, _)| !ours(n))
        .chain(extra.iter().copied())
}

/// The error for an answer that is not the protocol's shape.
fn not_protocol(status: u16, e: String) -> TransportError {
    protocol_error(
        status,
        format!("the server's answer is not chunkwise's protocol: {e}"),
    )
}

/// An error answer: the server's `{"error":{"code","message"}}` when it sent one.
fn status_error(
    method: &str,
    url: &str,
    status: u16,
    status_text: &str,
    retry_after: Option<String>,
    text: &str,
) -> TransportError {
    let (code, message) = match json::parse::<ErrorBody>(text) {
        Ok(body) => (Some(body.error.code), body.error.message),
        // Not chunkwise's answer: a tus server's words, or a proxy's own page. Say what it
        // usually means (HTTP/2 has no reason phrase to say it), and what the server said
        // when it is text rather than a page.
        Err(_) => (
            None,
            format!(
                "{method} {url} answered {status} {status_text}{}{}",
                match status {
                    // A tus PATCH: the upload is gone (expired or deleted).
                    404 | 410 if method == "PATCH" => "",
                    404 | 405 => ": no chunkwise API at this URL; if a proxy mounts it under a path, check that `endpoint` names that path and the proxy passes every path under it",
                    413 => ": refused as too large by the server or a proxy in front of it",
                    502 => ": a proxy could not reach the server (down, restarting, or the proxy points at the wrong address)",
                    504 => ": a proxy gave up waiting for the server; raise the proxy's timeouts (nginx: proxy_read_timeout, proxy_send_timeout)",
                    _ => "",
                },
                match text.trim() {
                    said if said.is_empty() || said.len() > 300 || said.starts_with('<') => {
                        String::new()
                    }
                    said => format!(" ({said})"),
                }
            ),
        ),
    };
    TransportError {
        failure: Failure::Status {
            status,
            retry_after_ms: retry_after.as_deref().and_then(parse_retry_after),
        },
        code,
        message,
    }
}

/// An object store's error answer is XML: `<Error><Code>..</Code><Message>..</Message>`.
/// A part whose bytes do not match its checksum is `digest_mismatch`; the rest keeps the
/// store's code and words.
fn store_error(status: u16, text: &str, mut error: TransportError) -> TransportError {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find("</")? + start;
        Some(text[start..end].to_string())
    };
    let Some(code) = tag("Code") else {
        return error;
    };
    let message = tag("Message").unwrap_or_default();
    error.message = format!("the object store answered {status} {code}: {message}");
    error.code = Some(
        match code.as_str() {
            "BadDigest" | "InvalidDigest" | "XAmzContentSHA256Mismatch" | "InvalidChecksum" => {
                "digest_mismatch"
            }
            _ => "store_refused",
        }
        .into(),
    );
    error
}

/// `Retry-After` as delay-seconds or an HTTP date, in milliseconds from now.
fn parse_retry_after(value: &str) -> Option<f64> {
    let text = value.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        // JS parses the number: Rust's float parser would add kilobytes of wasm.
        let seconds = js_sys::Number::parse_float(text);
        return (seconds >= 0.0).then_some(seconds * 1000.0);
    }
    let at = js_sys::Date::parse(value);
    (!at.is_nan()).then(|| (at - js_sys::Date::now()).max(0.0))
}

impl Transport for HttpTransport {
    type Body = Body;

    fn reports_upload_progress(&self) -> bool {
        self.xhr
    }

    async fn create(&self, request: &CreateUpload) -> Result<CreatedUpload, TransportError> {
        let response = match self
            .post_json(&self.endpoint, json::create_body(request))
            .await
        {
            Ok(response) => response,
            Err(error) => return Err(self.diagnose(To::Server, &self.endpoint, error).await),
        };
        let value = Self::json_value(&response).await?;
        let created = Created::from_json(&value).map_err(|e| not_protocol(response.status(), e))?;
        self.protocol.set(created.protocol);
        self.direct.set(created.transfer == Transfer::Direct);
        // `Location` is relative to the endpoint; without CORS exposing it, the id is enough.
        let location = response
            .headers()
            .get("location")
            .ok()
            .flatten()
            .unwrap_or_else(|| format!("{}/{}", self.endpoint.trim_end_matches('/'), created.id));
        let location = Url::new_with_base(&location, &self.endpoint)
            .map(|u| u.href())
            .map_err(|e| {
                protocol_error(
                    response.status(),
                    format!("bad Location \"{location}\": {}", describe_js_error(&e)),
                )
            })?;
        Ok(CreatedUpload { location, created })
    }

    async fn put_slice(
        &self,
        location: &str,
        slice: &SliceData<Body>,
        sent: SentBytes<'_>,
    ) -> Result<(), TransportError> {
        if self.direct.get() {
            return self.put_direct(location, slice, sent).await;
        }
        let url = self.upload_url(location, format_args!("slices/{}", slice.index));
        let digest = slice.sha256.as_ref().map(protocol::content_digest);
        let index = slice.index.to_string();
        // Content-Type here is also what lets one cached preflight of the upload's URL
        // cover `complete`, a JSON POST to the same URL: the cache keeps header names.
        let mut extra: Vec<(&str, &str)> = vec![("content-type", "application/octet-stream")];
        extra.extend(
            digest
                .iter()
                .map(|d| (protocol::CONTENT_DIGEST, d.as_str())),
        );
        if self.v2() {
            extra.push((protocol::SLICE_INDEX, &index));
        }
        let body = &slice.body.value;
        self.send_body(To::ServerSlice, "PUT", &url, body, slice.len, &extra, sent)
            .await
    }

    async fn complete(
        &self,
        location: &str,
        request: &Complete,
    ) -> Result<Completed, TransportError> {
        let url = self.upload_url(location, "complete");
        let response = self.post_json(&url, json::complete_body(request)).await?;
        let value = Self::json_value(&response).await?;
        if self.session.is_some() {
            *self.completed_location.borrow_mut() =
                json::optional_string(&value, "location").unwrap_or_default();
        }
        Completed::from_json(&value).map_err(|e| not_protocol(response.status(), e))
    }

    async fn status(&self, location: &str) -> Result<Status, TransportError> {
        let response = match self.send("GET", location, None, &[]).await {
            Ok(response) => response,
            Err(error) => return Err(self.diagnose(To::Server, location, error).await),
        };
        let value = Self::json_value(&response).await?;
        let status = Status::from_json(&value).map_err(|e| not_protocol(response.status(), e))?;
        self.protocol.set(status.protocol);
        self.direct.set(status.transfer == Transfer::Direct);
        Ok(status)
    }

    async fn delete(&self, location: &str) -> Result<(), TransportError> {
        self.send("DELETE", location, None, &[]).await.map(drop)
    }
}
