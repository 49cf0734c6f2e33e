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
//! - connections past [`ConnLimits::max_connections`] first make room: the full
//!   connection that has read the fewest bytes a second over its life, if it is older
//!   than [`EVICTABLE_AFTER`], is closed, and the new one is served in its place (a
//!   trickle, or an idle kept-alive connection, gives way to a client with work to do);
//! - when none can make room, they are still served, but only `/healthz` and a `503`
//!   with `Retry-After` for everything else; past the overflow reserve they are closed
//!   at once, so the process never runs out of descriptors.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
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

/// A full connection younger than this never makes room for a new one: it has not had
/// the time to show its pace.
pub const EVICTABLE_AFTER: Duration = Duration::from_secs(5);

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
    let live = Live::default();
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
        // Past the budget, the slowest full connection makes room when one may.
        let overloaded = held.n > limits.max_connections && !live.evict_slowest();
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
        // Full connections are listed, so that they can be asked to make room.
        let listed = (!overloaded).then(|| live.add());
        tokio::spawn(async move {
            let _held = held;
            let (read, evicted) = match &listed {
                Some(listed) => (listed.read.clone(), listed.evict.clone()),
                None => (Arc::default(), Arc::new(Notify::new())),
            };
            let served = async {
                // HTTP/1's header timeout starts once the version is known, which takes a
                // first byte: a connection that never sends one is closed after the same time.
                let mut first = [0u8; 1];
                match tokio::time::timeout(header_timeout, stream.peek(&mut first)).await {
                    Ok(Ok(1..)) => {}
                    _ => return,
                }
                let io = TokioIo::new(Counted { stream, read });
                let connection = builder.serve_connection(io, service).into_owned();
                if let Err(error) = watcher.watch(connection).await {
                    tracing::debug!(%peer, error = %error, "connection ended with an error");
                }
            };
            tokio::select! {
                () = served => {}
                () = evicted.notified() => {
                    tracing::info!(%peer, "closed the slowest connection to make room for a new one");
                }
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

/// The full connections: what each has read, since when, and how to close it.
#[derive(Clone, Default)]
struct Live(Arc<Mutex<LiveSet>>);

#[derive(Default)]
struct LiveSet {
    next: u64,
    entries: HashMap<u64, Arc<Listed>>,
}

/// One full connection, as [`Live`] sees it.
struct Listed {
    read: Arc<AtomicU64>,
    since: Instant,
    evict: Arc<Notify>,
}

/// A listed connection; dropping it takes it off the list.
struct ListedGuard {
    id: u64,
    entry: Arc<Listed>,
    live: Live,
}

impl std::ops::Deref for ListedGuard {
    type Target = Listed;
    fn deref(&self) -> &Listed {
        &self.entry
    }
}

impl Drop for ListedGuard {
    fn drop(&mut self) {
        self.live.lock().entries.remove(&self.id);
    }
}

impl Live {
    fn lock(&self) -> std::sync::MutexGuard<'_, LiveSet> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self) -> ListedGuard {
        let entry = Arc::new(Listed {
            read: Arc::default(),
            since: Instant::now(),
            evict: Arc::new(Notify::new()),
        });
        let mut set = self.lock();
        let id = set.next;
        set.next += 1;
        set.entries.insert(id, entry.clone());
        ListedGuard {
            id,
            entry,
            live: self.clone(),
        }
    }

    /// Closes the full connection older than [`EVICTABLE_AFTER`] that has read the fewest
    /// bytes a second, and takes it off the list; false if there is none.
    fn evict_slowest(&self) -> bool {
        let now = Instant::now();
        let mut set = self.lock();
        let slowest = set
            .entries
            .iter()
            .filter(|(_, e)| now.duration_since(e.since) >= EVICTABLE_AFTER)
            .map(|(id, e)| {
                let rate = e.read.load(Ordering::Relaxed) as f64
                    / now.duration_since(e.since).as_secs_f64();
                (*id, rate)
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(id, _)| id);
        let Some(entry) = slowest.and_then(|id| set.entries.remove(&id)) else {
            return false;
        };
        entry.evict.notify_one();
        true
    }
}

/// A connection's socket, counting the bytes read from it.
struct Counted {
    stream: TcpStream,
    read: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        self.read.fetch_add(read, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
