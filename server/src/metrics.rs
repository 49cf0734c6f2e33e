//! Prometheus metrics (`--metrics-listen`): what an operator watches, in the text format
//! every Prometheus-compatible scraper reads. They are served on their own listener, never
//! on the public port.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::store::Backend;

/// The label of a refused slice: the error code it was answered with.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// The API error's code (`digest_mismatch`, `slice_too_large`, ...).
    pub reason: String,
}

/// Every metric chunkwise-server keeps. Counting is a few atomic adds; the gauges that
/// describe the disk and the hook outbox are read when scraped.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Uploads created.
    pub uploads_created: Counter,
    /// Uploads completed (a repeated `complete` counts once per answer).
    pub uploads_completed: Counter,
    /// `complete` refused for what the upload holds (a slice missing, a digest or size that
    /// does not match).
    pub uploads_failed: Counter,
    /// Uploads deleted by a client.
    pub uploads_deleted: Counter,
    /// Unfinished uploads removed after `--expire-after`.
    pub uploads_expired: Counter,
    /// Slice body bytes read from clients, stored or not.
    pub bytes_received: Counter,
    /// Slice requests answered with an error, by its code.
    pub slices_refused: Family<Reason, Counter>,
    /// How long slice requests took, from the first byte of the request to the answer.
    pub slice_duration: Histogram,
    /// HTTP requests being handled.
    pub requests_in_flight: Gauge,
    /// TCP connections open on the public listener.
    pub connections_open: Gauge,
    /// Uploads created and neither completed, deleted nor expired (stores that know).
    pub unfinished_uploads: Gauge,
    /// Events waiting in the hook outbox.
    pub outbox_events: Gauge,
    /// Age of the oldest event waiting in the hook outbox (0 when empty).
    pub outbox_oldest_age: Gauge<f64, AtomicU64>,
    /// Free bytes on the data directory's file system (for unprivileged users).
    pub data_dir_free: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("chunkwise");
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::<i64, AtomicI64>::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let uploads_created = counter(&mut registry, "uploads_created", "Uploads created");
        let uploads_completed = counter(&mut registry, "uploads_completed", "Uploads completed");
        let uploads_failed = counter(
            &mut registry,
            "uploads_failed",
            "Completes refused for what the upload holds (missing slices, a digest or size mismatch)",
        );
        let uploads_deleted = counter(&mut registry, "uploads_deleted", "Uploads deleted");
        let uploads_expired = counter(
            &mut registry,
            "uploads_expired",
            "Unfinished uploads removed after --expire-after",
        );
        let bytes_received = Counter::default();
        registry.register_with_unit(
            "received",
            "Slice body bytes read from clients, stored or not",
            Unit::Bytes,
            bytes_received.clone(),
        );
        let slices_refused = Family::<Reason, Counter>::default();
        registry.register(
            "slices_refused",
            "Slice requests answered with an error, by the error's code",
            slices_refused.clone(),
        );
        // 10 ms to about 20 min: a slice on loopback takes tens of milliseconds, an 8 MiB
        // slice on a 1 Mbit/s uplink over a minute.
        let slice_duration = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.01, 2.0, 18),
        );
        registry.register_with_unit(
            "slice_request_duration",
            "Slice requests, from the request's arrival to the answer",
            Unit::Seconds,
            slice_duration.clone(),
        );
        let requests_in_flight = gauge(
            &mut registry,
            "requests_in_flight",
            "HTTP requests being handled",
        );
        let connections_open = gauge(
            &mut registry,
            "connections_open",
            "TCP connections open on the public listener",
        );
        let unfinished_uploads = gauge(
            &mut registry,
            "unfinished_uploads",
            "Uploads neither completed, deleted nor expired (disk store only)",
        );
        let outbox_events = gauge(
            &mut registry,
            "hook_outbox_events",
            "Hook events waiting to be delivered",
        );
        let outbox_oldest_age = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "hook_outbox_oldest_age",
            "Age of the oldest hook event waiting to be delivered (0 when none)",
            Unit::Seconds,
            outbox_oldest_age.clone(),
        );
        let data_dir_free = Gauge::<i64, AtomicI64>::default();
        registry.register_with_unit(
            "data_dir_free",
            "Free bytes on the --data-dir file system",
            Unit::Bytes,
            data_dir_free.clone(),
        );
        Self {
            registry,
            uploads_created,
            uploads_completed,
            uploads_failed,
            uploads_deleted,
            uploads_expired,
            bytes_received,
            slices_refused,
            slice_duration,
            requests_in_flight,
            connections_open,
            unfinished_uploads,
            outbox_events,
            outbox_oldest_age,
            data_dir_free,
        }
    }
}

impl Metrics {
    /// Counts a slice request that took `elapsed` and was refused with `code`, if it was.
    pub fn slice_answered(&self, elapsed: Duration, refused: Option<&str>) {
        self.slice_duration.observe(elapsed.as_secs_f64());
        if let Some(code) = refused {
            self.slices_refused
                .get_or_create(&Reason {
                    reason: code.to_string(),
                })
                .inc();
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// What a scrape reads fresh each time: the gauges a counter cannot keep.
#[derive(Debug)]
pub struct Present<B> {
    /// The store, for its unfinished uploads.
    pub backend: Arc<B>,
    /// The hooks, for their outbox.
    pub hooks: Option<Arc<crate::hooks::Hooks>>,
    /// `--data-dir`, for its free space.
    pub data_dir: PathBuf,
}

impl<B: Backend> Present<B> {
    async fn refresh(&self, metrics: &Metrics) {
        let data_dir = self.data_dir.clone();
        if let Ok(Ok(free)) =
            tokio::task::spawn_blocking(move || crate::store::disk::free_bytes(&data_dir)).await
        {
            metrics
                .data_dir_free
                .set(i64::try_from(free).unwrap_or(i64::MAX));
        }
        if let Some(unfinished) = self.backend.unfinished_uploads() {
            metrics
                .unfinished_uploads
                .set(i64::try_from(unfinished).unwrap_or(i64::MAX));
        }
        if let Some(hooks) = &self.hooks {
            let (events, oldest) = hooks.outbox().await;
            metrics
                .outbox_events
                .set(i64::try_from(events).unwrap_or(i64::MAX));
            metrics
                .outbox_oldest_age
                .set(oldest.unwrap_or_default().as_secs_f64());
        }
    }
}

/// The router served on `--metrics-listen`: `GET /metrics`.
pub fn router<B: Backend>(metrics: Arc<Metrics>, present: Present<B>) -> Router {
    Router::new()
        .route("/metrics", get(scrape::<B>))
        .with_state((metrics, Arc::new(present)))
}

async fn scrape<B: Backend>(
    State((metrics, present)): State<(Arc<Metrics>, Arc<Present<B>>)>,
) -> Response {
    present.refresh(&metrics).await;
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}

/// Counts a request in [`Metrics::requests_in_flight`] while it is handled (dropped with
/// the request's future, so a request whose client vanished stops counting too).
pub struct InFlight(Gauge);

impl InFlight {
    /// Counts one more request until dropped.
    pub fn start(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
