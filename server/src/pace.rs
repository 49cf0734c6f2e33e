//! A least rate for request bodies (Apache's `mod_reqtimeout` `MinRate`): a body has the
//! body idle timeout to begin with, and one more second for every `min_rate` bytes that
//! arrive. Past that it is cut off, and the slice answered `408 body_too_slow`.
//!
//! The idle timeout alone never closes a body trickled at one byte a second, since a byte
//! keeps arriving; one client could hold a connection, a slice and its file open for as
//! long as it liked. At the default 500 bytes/s, a 1 Mbit/s uplink shared by six slices in
//! flight (about 20 KB/s each) earns 40 s for every second it sends; a trickle of one byte
//! a second is cut off one idle timeout (60 s) after it began.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The default least rate, in bytes per second (`--body-min-rate`).
pub const MIN_RATE: u64 = 500;

/// Why a body was cut off: it arrived slower than the least rate.
#[derive(Debug, thiserror::Error)]
#[error("the body arrived slower than {min_rate} bytes/s: {received} bytes in {seconds} s")]
pub struct TooSlow {
    /// Bytes of the body that arrived.
    pub received: u64,
    /// Seconds since it began.
    pub seconds: u64,
    /// The least rate it was held to, in bytes per second.
    pub min_rate: u64,
}

/// The bounds a body is held to: `grace` to begin with, one second more per `min_rate`
/// bytes.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// The time a body has before any byte earns more (the body idle timeout).
    pub grace: Duration,
    /// Bytes per second: each brings `1 / min_rate` s more.
    pub min_rate: u64,
}

impl Pace {
    /// When a body that began at `start` and has brought `received` bytes is too slow.
    fn deadline(&self, start: Instant, received: u64) -> Instant {
        let earned = Duration::from_millis(received.saturating_mul(1000) / self.min_rate.max(1));
        start + self.grace.saturating_add(earned)
    }
}

/// A body held to a [`Pace`].
struct Paced {
    inner: Body,
    pace: Pace,
    start: Instant,
    received: u64,
    timer: Pin<Box<Sleep>>,
}

impl http_body::Body for Paced {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.received += frame.data_ref().map_or(0, |d| d.len() as u64);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                // The timer moves only when the body waits, not for every frame that
                // arrives while it flows.
                let deadline = this.pace.deadline(this.start, this.received);
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                ready!(this.timer.as_mut().poll(cx));
                Poll::Ready(Some(Err(axum::Error::new(TooSlow {
                    received: this.received,
                    seconds: this.start.elapsed().as_secs(),
                    min_rate: this.pace.min_rate,
                }))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The middleware: holds every request body to `pace` (a body already ended is left as
/// it is).
pub async fn pace(State(pace): State<Pace>, request: Request, next: Next) -> Response {
    use http_body::Body as _;
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let start = Instant::now();
    let request = request.map(|inner| {
        Body::new(Paced {
            inner,
            pace,
            start,
            received: 0,
            timer: Box::pin(tokio::time::sleep_until(pace.deadline(start, 0))),
        })
    });
    next.run(request).await
}
