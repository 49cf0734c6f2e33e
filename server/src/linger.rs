//! Answers given before a request's body was read: the rest of the body is read and
//! dropped before the answer leaves (nginx's `lingering_close`), within bounds.
//!
//! A handler may answer without reading the body: a refusal (an unknown upload, a bad
//! index, a missing token, a test's injected fault) or a slice that is held already. Over
//! HTTP/1.1, hyper then closes the connection with the body's bytes unread, and the kernel
//! answers those bytes with a reset. Firefox (153) reports that as a network error and
//! drops the answer it already had, for any body larger than the socket's buffers (a
//! 4 MiB slice: measured, the 400 of a 256 KiB body arrives, the 400 of a 4 MiB body is
//! "NetworkError"). The client then retries what it should have given up on, with the
//! wrong words. So the rest is read first: at most [`LINGER_BYTES`], for at most
//! [`LINGER_TIME`], with no gap longer than [`LINGER_IDLE`]. Past any bound the answer
//! says `Connection: close`, as before. HTTP/2 needs none of this:
//! a stream's unread body is ended with `RST_STREAM(NO_ERROR)` after the answer, which
//! browsers read as the end of the request.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Version};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body as _, Frame, SizeHint};

/// The most of an unread body read and dropped before an answer: the server's largest
/// slice by default, so that the answer to any slice arrives.
pub const LINGER_BYTES: u64 = 256 << 20;
/// The longest an answer waits for an unread body (nginx's `lingering_time` is 30 s).
pub const LINGER_TIME: Duration = Duration::from_secs(30);
/// The longest an answer waits for the next bytes of an unread body (nginx's
/// `lingering_timeout` is 5 s): a client that stopped sending (an attempt superseded by its
/// retry, a dead peer) gets its answer this long after its last byte, with the connection
/// closed.
pub const LINGER_IDLE: Duration = Duration::from_secs(5);

/// The request's body, shared with [`linger`], which reads what the handler left of it.
struct Shared(Arc<Mutex<Option<Body>>>);

impl http_body::Body for Shared {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        let slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().map(|b| b.size_hint()).unwrap_or_default()
    }
}

/// The middleware: over HTTP/1.x, reads the rest of a body the handler left unread before
/// its answer leaves.
pub async fn linger(request: Request, next: Next) -> Response {
    if request.version() > Version::HTTP_11 {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let slot = Arc::new(Mutex::new(Some(body)));
    let shared = Body::new(Shared(slot.clone()));
    let mut response = next.run(Request::from_parts(parts, shared)).await;
    let rest = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(body) = rest.filter(|b| !b.is_end_stream()) {
        let read = tokio::time::timeout(LINGER_TIME, read_to_end(body, LINGER_BYTES)).await;
        if read != Ok(true) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    response
}

/// Reads `body` to its end and drops it; false if it failed or held more than `limit`.
async fn read_to_end(mut body: Body, limit: u64) -> bool {
    let mut read = 0u64;
    loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        let frame = match tokio::time::timeout(LINGER_IDLE, next).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => return true,
            Ok(Some(Err(_))) | Err(_) => return false,
        };
        read += frame.data_ref().map_or(0, |d| d.len() as u64);
        if read > limit {
            return false;
        }
    }
}
