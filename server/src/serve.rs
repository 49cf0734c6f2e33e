//! The public listener: accepts connections, bounds what each one may hold, and serves the
//! router on them (HTTP/1.1, and HTTP/2 for a proxy speaking it in clear text).
//!
//! What a peer that stops talking without closing can hold, and for how long:
//! - a connection waiting for a request's headers (a new one, or a kept-alive one between
//!   requests): [`ConnLimits::header_timeout`], then it is closed;
//! - a request body with no byte moving: the HTTP layer's body idle timeout
//!   ([`crate::app::Site::body_idle_timeout`]);
//! - a connection whose peer vanished (no FIN, no RST): TCP keepalive probes find it,
//!   and HTTP/2 pings, when nothing else would;
//! - connections past [`ConnLimits::max_connections`] are still served, but only
//!   `/healthz` and a `503` with `Retry-After` for everything else; past the overflow
//!   reserve they are closed at once, so the process never runs out of descriptors.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// How much the public listener lets connections hold.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    /// A request's headers, or a kept-alive connection's next request, must arrive within
    /// this.
    pub header_timeout: Duration,
    /// Idle time before TCP keepalive probes (then every [`Self::keepalive_interval`],
    /// 4 times) and between HTTP/2 pings.
    pub keepalive: Duration,
    /// Time between unanswered keepalive probes.
    pub keepalive_interval: Duration,
    /// Connections served in full.
    pub max_connections: usize,
    /// Connections past `max_connections` still accepted, to be answered `503` (or
    /// `/healthz`) and closed.
    pub overflow: usize,
}

/// The request extension of a connection past [`ConnLimits::max_connections`]: the HTTP
/// layer answers it `503` with `Retry-After` (except `/healthz`) and closes it.
#[derive(Clone, Copy, Debug)]
pub struct Overloaded;

/// File descriptors kept for what is not a connection: data files of slices being written
/// (at most one per connection, counted in the budget), journals, the hook outbox, static
/// files, `statvfs`.
const RESERVED_DESCRIPTORS: u64 = 64;

/// Raises the soft limit on open files to the hard limit, and returns it.
pub fn raise_open_files_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum {
        if limit.current.is_some_and(|soft| soft < hard) {
            limit.current = Some(hard);
            if let Err(error) = setrlimit(Resource::Nofile, limit) {
                tracing::warn!(%error, "could not raise the open files limit");
            }
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

impl ConnLimits {
    /// Budgets for a process that may open `open_files` descriptors: each full connection
    /// may hold two (its socket and the data file of the slice it sends), each overflow
    /// connection one, and a reserve is kept.
    pub fn for_open_files(open_files: u64, max_connections: Option<usize>) -> Self {
        let spare = open_files.saturating_sub(RESERVED_DESCRIPTORS);
        let overflow = (spare / 8).clamp(1, 1024);
        let budget = (spare.saturating_sub(overflow) / 2).clamp(1, 100_000) as usize;
        Self {
            header_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(15),
            max_connections: max_connections.unwrap_or(budget).min(budget),
            overflow: overflow as usize,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then gives requests in flight
/// `grace` to finish and returns. `open` counts the connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    open: Gauge,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keepalive)
        .keep_alive_timeout(limits.keepalive_interval * 4);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let count = Arc::new(AtomicUsize::new(0));
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(limits.keepalive)
        .with_interval(limits.keepalive_interval)
        .with_retries(4);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors (or memory): wait for some to be released rather
                    // than spin; a connection reset before it was accepted: carry on.
                    if !matches!(
                        error.kind(),
                        std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                    ) {
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
        };
        let held = Connection::open(&count, &open);
        if held.n > limits.max_connections + limits.overflow {
            drop(stream);
            continue;
        }
        let overloaded = held.n > limits.max_connections;
        let sock = socket2::SockRef::from(&stream);
        let _ = sock.set_tcp_keepalive(&keepalive);
        let _ = stream.set_nodelay(true);
        let header_timeout = limits.header_timeout;
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            if overloaded {
                request.extensions_mut().insert(Overloaded);
            }
            let router = router.clone();
            async move {
                Ok::<_, Infallible>(
                    router
                        .oneshot(request.map(axum::body::Body::new))
                        .await
                        .unwrap_or_else(|e| match e {}),
                )
            }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _held = held;
            // HTTP/1's header timeout starts once the version is known, which takes a first
            // byte: a connection that never sends one is closed after the same time.
            let mut first = [0u8; 1];
            match tokio::time::timeout(header_timeout, stream.peek(&mut first)).await {
                Ok(Ok(1..)) => {}
                _ => return,
            }
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::info!("stopped; requests still in flight were cut and will be resent");
        }
    }
}

/// One accepted connection, counted until dropped.
struct Connection {
    n: usize,
    count: Arc<AtomicUsize>,
    open: Gauge,
}

impl Connection {
    fn open(count: &Arc<AtomicUsize>, open: &Gauge) -> Self {
        let n = count.fetch_add(1, Ordering::AcqRel) + 1;
        open.inc();
        Self {
            n,
            count: count.clone(),
            open: open.clone(),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.open.dec();
    }
}
