//! Test-only fault injection, enabled by `--enable-fault-injection` and never by default.
//!
//! Requests carrying `x-chunkwise-fault-key: K` are matched against the rules posted to
//! `POST /_test/faults/K`; `GET /_test/faults/K` tells how many slice PUTs with that key
//! the server saw and how many were in flight at most. Keys keep concurrent tests apart.
//!
//! `GET /_test/requests` counts every request the server saw by method (CORS preflights
//! included, which carry no custom headers), and `DELETE /_test/requests` resets it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The header naming a fault key.
pub const FAULT_KEY_HEADER: &str = "x-chunkwise-fault-key";

/// One rule: what to do to matching slice PUTs.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Only this slice index; any slice when absent.
    #[serde(default)]
    pub slice: Option<u64>,
    /// Answer with this status instead of handling the request.
    #[serde(default)]
    pub status: Option<u16>,
    /// How many matching requests the rule applies to.
    #[serde(default = "one")]
    pub times: u32,
    /// Wait this long before handling (or failing) the request.
    #[serde(default)]
    pub delay_ms: u64,
    /// Handle the request (reading its whole body), then wait this long before answering:
    /// a server that took every byte but does not answer.
    #[serde(default)]
    pub answer_delay_ms: u64,
    /// Apply to this fraction of matching requests (chosen at random); all when absent.
    #[serde(default)]
    pub probability: Option<f64>,
}

fn one() -> u32 {
    1
}

/// What the server saw for one key.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Slice PUTs received.
    pub puts: u64,
    /// Slice PUTs in flight now.
    pub in_flight: u64,
    /// The most slice PUTs in flight at once.
    pub max_in_flight: u64,
    /// Faults injected.
    pub injected: u64,
}

#[derive(Debug, Default)]
struct Entry {
    rules: Vec<Rule>,
    stats: Stats,
}

/// The registry of rules and statistics.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    requests: Arc<Mutex<BTreeMap<String, u64>>>,
}

struct InFlight {
    faults: Faults,
    key: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut entries = self
            .faults
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = entries.get_mut(&self.key) {
            entry.stats.in_flight -= 1;
        }
    }
}

/// Uniform in `[0, 1)`; test-only, so the OS generator per call is cheap enough.
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// The slice a PUT carries: v1 names it in the path, v2 in a header.
fn slice_index(request: &Request) -> Option<u64> {
    let rest = request.uri().path().strip_prefix("/uploads/")?;
    match rest.split_once("/slices/") {
        Some((_, index)) => index.parse().ok(),
        None => request
            .headers()
            .get(chunkwise_core::protocol::SLICE_INDEX)?
            .to_str()
            .ok()?
            .parse()
            .ok(),
    }
}

impl Faults {
    /// Routes to set rules and read statistics.
    pub fn routes(&self) -> Router {
        Router::new()
            .route("/_test/faults/{key}", post(set_rules).get(stats))
            .route(
                "/_test/requests",
                axum::routing::get(request_counts).delete(reset_request_counts),
            )
            .with_state(self.clone())
    }

    /// The outermost middleware: counts every request by method.
    pub async fn count(State(faults): State<Faults>, request: Request, next: Next) -> Response {
        if !request.uri().path().starts_with("/_test/") {
            let mut requests = faults.requests.lock().unwrap_or_else(|e| e.into_inner());
            *requests.entry(request.method().to_string()).or_default() += 1;
        }
        next.run(request).await
    }

    /// The middleware applying the rules.
    pub async fn apply(State(faults): State<Faults>, request: Request, next: Next) -> Response {
        let key = request
            .headers()
            .get(FAULT_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let index = slice_index(&request);
        let (Some(key), Some(index), true) = (key, index, request.method() == Method::PUT) else {
            return next.run(request).await;
        };
        let rule = {
            let mut entries = faults.entries.lock().unwrap_or_else(|e| e.into_inner());
            let entry = entries.entry(key.clone()).or_default();
            entry.stats.puts += 1;
            entry.stats.in_flight += 1;
            entry.stats.max_in_flight = entry.stats.max_in_flight.max(entry.stats.in_flight);
            let rule = entry.rules.iter_mut().find(|r| {
                r.times > 0
                    && r.slice.is_none_or(|s| s == index)
                    && r.probability.is_none_or(|p| random_fraction() < p)
            });
            rule.map(|r| {
                r.times -= 1;
                r.clone()
            })
        };
        let _in_flight = InFlight {
            faults: faults.clone(),
            key: key.clone(),
        };
        if let Some(rule) = rule {
            if rule.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(rule.delay_ms)).await;
            }
            if let Some(status) = rule.status.and_then(|s| StatusCode::from_u16(s).ok()) {
                let mut entries = faults.entries.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(entry) = entries.get_mut(&key) {
                    entry.stats.injected += 1;
                }
                return ApiError::new(
                    status,
                    "injected_fault",
                    format!("fault injected on slice {index}"),
                )
                .into_response();
            }
            if rule.answer_delay_ms > 0 {
                let response = next.run(request).await;
                tokio::time::sleep(Duration::from_millis(rule.answer_delay_ms)).await;
                return response;
            }
        }
        next.run(request).await
    }
}

async fn request_counts(State(faults): State<Faults>) -> Json<BTreeMap<String, u64>> {
    Json(
        faults
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    )
}

async fn reset_request_counts(State(faults): State<Faults>) -> StatusCode {
    faults
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    StatusCode::NO_CONTENT
}

async fn set_rules(
    State(faults): State<Faults>,
    Path(key): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
    let rules: Vec<Rule> = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
    let mut entries = faults.entries.lock().unwrap_or_else(|e| e.into_inner());
    entries.insert(
        key,
        Entry {
            rules,
            stats: Stats::default(),
        },
    );
    Ok(StatusCode::NO_CONTENT)
}

async fn stats(State(faults): State<Faults>, Path(key): Path<String>) -> Json<Stats> {
    let entries = faults.entries.lock().unwrap_or_else(|e| e.into_inner());
    Json(
        entries
            .get(&key)
            .map(|e| e.stats.clone())
            .unwrap_or_default(),
    )
}
