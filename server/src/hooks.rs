//! Hooks: the web app behind the server decides who may upload (`pre-create`) and learns
//! reliably when an upload is done (`post-finish`) or gone (`post-terminate`).
//!
//! Every event is a JSON `POST` to `--hook-url`, signed with `--hook-secret` in the style
//! of Stripe's and GitHub's webhooks: `Chunkwise-Signature: t=<unix seconds>,v1=<hex
//! HMAC-SHA256 of "t.body">`, so a receiver can check it and refuse replays.
//!
//! `pre-create` is asked before the upload exists and fails closed: a hook that refuses
//! (4xx) refuses the upload with its status and message; one that is down, too slow or
//! answers anything else means 503. `post-finish` and `post-terminate` are delivered at
//! least once: each is written to a durable outbox (`{data-dir}/hooks/outbox`, fsynced)
//! before the request that caused it answers, and retried with backoff until the hook
//! answers 2xx, across hook outages and server restarts. Each carries an `eventId` that
//! is the same on every delivery, for de-duplication.
//!
//! A completed upload whose `post-finish` is in the outbox gets a marker
//! (`{data-dir}/hooks/finished/{id}`). At start, every completed upload without one gets
//! its `post-finish` again: the server may have died between completing an upload and
//! writing its event. (On the first start with hooks, uploads completed before are only
//! marked, so turning hooks on does not replay history.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, StatusCode};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::error::ApiError;
use crate::store::UploadInfo;

/// The header carrying an event's signature.
pub const SIGNATURE_HEADER: &str = "chunkwise-signature";
/// The largest event body.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// Headers of the create request that `pre-create` always sees.
const ALWAYS_FORWARDED: [&str; 2] = ["authorization", "cookie"];
/// Retry delays of an undelivered event: 1 s doubling to 5 min.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(300);

/// How to reach the hook.
#[derive(Clone, Debug)]
pub struct HookConfig {
    /// Where events are POSTed (`http://` or `https://`).
    pub url: reqwest::Url,
    /// Signs every event when set.
    pub secret: Option<String>,
    /// How long one delivery may take before the hook counts as down.
    pub timeout: Duration,
    /// More request headers for `pre-create`, besides `Authorization` and `Cookie`.
    pub forward_headers: Vec<HeaderName>,
    /// Ask the hook before every `complete` (`pre-finish`), with the size then known.
    pub pre_finish: bool,
}

impl HookConfig {
    /// Parses `--hook-url`: an absolute `http` or `https` URL.
    pub fn parse_url(text: &str) -> Result<reqwest::Url, String> {
        let url = reqwest::Url::parse(text).map_err(|e| format!("--hook-url {text:?}: {e}"))?;
        match url.scheme() {
            "http" if url.host().is_some() => Ok(url),
            "https" => Err(format!(
                "--hook-url {text:?}: https is not built into this server; run the hook beside it over http"
            )),
            _ => Err(format!("--hook-url {text:?}: must be an http:// URL with a host")),
        }
    }
}

/// What `pre-create` decided.
#[derive(Debug, Deserialize, Default)]
struct PreCreateAnswer {
    /// Replaces the upload's metadata when given.
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

/// The hook client and its outbox.
#[derive(Debug)]
pub struct Hooks {
    config: HookConfig,
    client: reqwest::Client,
    outbox: PathBuf,
    /// Markers of completed uploads whose `post-finish` is in the outbox (or delivered).
    finished: PathBuf,
    wake: tokio::sync::Notify,
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`.
pub fn signature(secret: &str, unix_seconds: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!(
        "t={unix_seconds},v1={}",
        chunkwise_core::protocol::hex(&digest)
    )
}

impl Hooks {
    /// Opens the outbox under `data_dir`, queues the `post-finish` of every upload in
    /// `completed` that has none yet, and starts delivering.
    pub async fn start<Load, Loaded>(
        config: HookConfig,
        data_dir: &Path,
        completed_ids: Vec<String>,
        load: Load,
    ) -> std::io::Result<Arc<Self>>
    where
        Load: Fn(String) -> Loaded,
        Loaded:
            std::future::Future<Output = Option<(UploadInfo, chunkwise_core::protocol::Completed)>>,
    {
        let outbox = data_dir.join("hooks").join("outbox");
        let finished = data_dir.join("hooks").join("finished");
        let first_start = !finished.exists();
        std::fs::create_dir_all(&outbox)?;
        std::fs::create_dir_all(&finished)?;
        // The hook is the app beside the server: no system proxy in between.
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(config.timeout)
            .build()
            .map_err(std::io::Error::other)?;
        let hooks = Arc::new(Self {
            config,
            client,
            outbox,
            finished,
            wake: tokio::sync::Notify::new(),
        });
        // Only an upload whose post-finish was never stored is read (`load`): a restart
        // over many completed uploads holds their ids, not their metadata.
        for id in completed_ids {
            if hooks.finished.join(&id).exists() {
                continue;
            }
            if first_start {
                hooks.mark_finished(&id).await?;
                continue;
            }
            let Some((upload, completed)) = load(id).await else {
                continue;
            };
            tracing::info!(
                id = upload.id,
                "queueing a post-finish that was never stored"
            );
            hooks
                .upload_finished(&upload, &completed)
                .await
                .map_err(|e| std::io::Error::other(e.message))?;
        }
        tokio::spawn(hooks.clone().deliver_forever());
        Ok(hooks)
    }

    async fn mark_finished(&self, id: &str) -> std::io::Result<()> {
        let dir = self.finished.clone();
        let name = id.to_string();
        tokio::task::spawn_blocking(move || write_durably(&dir, &name, b""))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Queues the `post-finish` of a completed upload (durably) and marks it queued.
    pub async fn upload_finished(
        &self,
        upload: &UploadInfo,
        completed: &chunkwise_core::protocol::Completed,
    ) -> Result<(), ApiError> {
        // A repeated `complete` queues nothing: the event queued (or delivered) first is
        // the one the app hears, never replaced by another payload.
        let marker = self.finished.join(&upload.id);
        if tokio::fs::try_exists(&marker).await.unwrap_or(false) {
            return Ok(());
        }
        self.enqueue(finished(upload, completed)).await?;
        self.mark_finished(&upload.id).await.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "hook_outbox",
                format!("the hook event could not be marked: {e}"),
            )
        })
    }

    /// Queues the `post-terminate` of an upload removed for `reason`.
    pub async fn upload_terminated(
        &self,
        upload: &UploadInfo,
        reason: &str,
    ) -> Result<(), ApiError> {
        self.enqueue(terminated(upload, reason)).await?;
        let _ = tokio::fs::remove_file(self.finished.join(&upload.id)).await;
        Ok(())
    }

    /// How many events wait in the outbox, and how long the oldest has waited.
    pub async fn outbox(&self) -> (usize, Option<std::time::Duration>) {
        let pending = list_outbox(&self.outbox).await;
        let oldest = pending.iter().map(|(modified, _)| *modified).min();
        let age = oldest.and_then(|t| SystemTime::now().duration_since(t).ok());
        (pending.len(), age)
    }

    async fn post(&self, body: Vec<u8>) -> Result<reqwest::Response, reqwest::Error> {
        let mut request = self
            .client
            .post(self.config.url.clone())
            .header("content-type", "application/json");
        if let Some(secret) = &self.config.secret {
            request = request.header(SIGNATURE_HEADER, signature(secret, unix_seconds(), &body));
        }
        request.body(body).send().await
    }

    /// Asks the hook whether this upload may be created. `Ok(Some(metadata))` replaces the
    /// metadata; a refusal or an unreachable hook is the error to answer with.
    pub async fn pre_create(
        &self,
        upload: Value,
        headers: &HeaderMap,
        remote_addr: Option<SocketAddr>,
    ) -> Result<Option<BTreeMap<String, String>>, ApiError> {
        self.ask("pre-create", upload, headers, remote_addr).await
    }

    /// Whether `complete` asks [`Self::pre_finish`] first (`--hook-pre-finish`).
    pub fn asks_pre_finish(&self) -> bool {
        self.config.pre_finish
    }

    /// Asks the hook whether an upload may complete, with its size now known (an upload
    /// created without one passed `pre-create` unjudged). The same answers as
    /// [`Self::pre_create`]; metadata in the answer is ignored.
    pub async fn pre_finish(
        &self,
        upload: Value,
        headers: &HeaderMap,
        remote_addr: Option<SocketAddr>,
    ) -> Result<(), ApiError> {
        self.ask("pre-finish", upload, headers, remote_addr)
            .await
            .map(drop)
    }

    /// Sends the blocking event `kind` and reads the hook's answer.
    async fn ask(
        &self,
        kind: &str,
        upload: Value,
        headers: &HeaderMap,
        remote_addr: Option<SocketAddr>,
    ) -> Result<Option<BTreeMap<String, String>>, ApiError> {
        let mut forwarded = serde_json::Map::new();
        for name in ALWAYS_FORWARDED
            .iter()
            .copied()
            .chain(self.config.forward_headers.iter().map(HeaderName::as_str))
        {
            if let Some(value) = forwarded_value(headers, name) {
                forwarded.insert(name.to_string(), value.into());
            }
        }
        let event = json!({
            "type": kind,
            "eventId": new_event_id(),
            "upload": upload,
            "request": {"headers": forwarded, "remoteAddr": remote_addr.map(|a| a.to_string())},
        });
        let body = serde_json::to_vec(&event).unwrap_or_default();
        if body.len() > MAX_EVENT_BYTES {
            return Err(ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "hook_event_too_large",
                format!("the {kind} event would exceed {MAX_EVENT_BYTES} bytes (metadata and forwarded headers)"),
            ));
        }
        let down = |why: String| {
            tracing::warn!(%why, kind, "hook unavailable");
            let not = if kind == "pre-create" {
                "created"
            } else {
                "completed"
            };
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "hook_unavailable",
                format!("the upload was not {not}: the server's {kind} hook {why}"),
            )
        };
        let response = self
            .post(body)
            .await
            .map_err(|e| down(format!("could not be reached ({e})")))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            down(format!(
                "answered {status} but its body could not be read ({e})"
            ))
        })?;
        if status.is_success() {
            let answer: PreCreateAnswer = if text.trim().is_empty() {
                PreCreateAnswer::default()
            } else {
                serde_json::from_str(&text).map_err(|e| {
                    down(format!(
                        "answered {status} with a body that is not {{\"metadata\": {{...}}}} ({e})"
                    ))
                })?
            };
            return Ok(answer.metadata);
        }
        if status.is_client_error() {
            // The hook's own words reach the browser: `{"error":{"message"}}`, `{"message"}`
            // or plain text.
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| {
                    v.pointer("/error/message")
                        .or_else(|| v.get("message"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or_else(|| text.trim().chars().take(1024).collect());
            let message = if message.is_empty() {
                format!("the upload was refused ({status})")
            } else {
                message
            };
            return Err(ApiError::new(status, "refused_by_hook", message));
        }
        Err(down(format!("answered {status}")))
    }

    /// Writes `event` (with a `type` and an `eventId`) to the outbox, durably, and wakes
    /// the deliverer. The event is delivered at least once from then on.
    async fn enqueue(&self, event: Value) -> Result<(), ApiError> {
        let id = event["eventId"].as_str().unwrap_or_default().to_string();
        let mut body = serde_json::to_vec(&event).unwrap_or_default();
        if body.len() > MAX_EVENT_BYTES {
            // Metadata is bounded at create when hooks are on; this is the last guard.
            let mut trimmed = event.clone();
            trimmed["upload"]["metadata"] = json!({});
            trimmed["metadataOmitted"] = true.into();
            body = serde_json::to_vec(&trimmed).unwrap_or_default();
        }
        let dir = self.outbox.clone();
        tokio::task::spawn_blocking(move || write_durably(&dir, &format!("{id}.json"), &body))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "hook_outbox",
                    format!("the hook event could not be stored: {e}"),
                )
            })?;
        self.wake.notify_one();
        Ok(())
    }

    /// Delivers the outbox, oldest first, forever; an event that fails waits with backoff
    /// while the next ones are still tried.
    async fn deliver_forever(self: Arc<Self>) {
        let mut backoff: BTreeMap<String, (Duration, tokio::time::Instant)> = BTreeMap::new();
        loop {
            let mut pending = list_outbox(&self.outbox).await;
            pending.sort();
            let now = tokio::time::Instant::now();
            let mut next_try: Option<tokio::time::Instant> = None;
            for (_, name) in &pending {
                if let Some((_, at)) = backoff.get(name) {
                    if *at > now {
                        next_try = Some(next_try.map_or(*at, |n| n.min(*at)));
                        continue;
                    }
                }
                let path = self.outbox.join(name);
                let Ok(body) = tokio::fs::read(&path).await else {
                    continue;
                };
                let delivered = match self.post(body).await {
                    Ok(response) if response.status().is_success() => true,
                    Ok(response) => {
                        tracing::warn!(event = %name, status = %response.status(), "hook refused an event; trying again later");
                        false
                    }
                    Err(error) => {
                        tracing::warn!(event = %name, %error, "hook unreachable; trying again later");
                        false
                    }
                };
                if delivered {
                    backoff.remove(name);
                    let _ = tokio::fs::remove_file(&path).await;
                } else {
                    let delay = backoff
                        .get(name)
                        .map_or(FIRST_RETRY, |(d, _)| (*d * 2).min(LAST_RETRY));
                    let at = tokio::time::Instant::now() + delay;
                    backoff.insert(name.clone(), (delay, at));
                    next_try = Some(next_try.map_or(at, |n| n.min(at)));
                }
            }
            backoff.retain(|name, _| pending.iter().any(|(_, n)| n == name));
            let sleep = async {
                match next_try {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.wake.notified() => {}
                () = sleep => {}
            }
        }
    }
}

/// The outbox's events as (modified time, file name).
async fn list_outbox(dir: &Path) -> Vec<(SystemTime, String)> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let modified = e.metadata().ok()?.modified().ok()?;
                name.ends_with(".json").then_some((modified, name))
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// Writes `name` in `dir` so that it survives a crash: a temporary file, fsynced, renamed,
/// and the directory fsynced.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The `post-finish` event of a completed upload. Its `eventId` is the same however often
/// `complete` is repeated, so that a receiver sees one event per upload.
pub fn finished(upload: &UploadInfo, completed: &chunkwise_core::protocol::Completed) -> Value {
    let described = json!({
        "size": completed.size,
        "sha256": completed.sha256,
        "slicesSha256": completed.slices_sha256,
    });
    event("post-finish", upload, described)
}

/// The `post-terminate` event of an upload removed for `reason` (`deleted`, `expired`).
fn terminated(upload: &UploadInfo, reason: &str) -> Value {
    let mut event = event("post-terminate", upload, json!({}));
    event["reason"] = reason.into();
    event
}

/// An event of type `kind` about `upload`, described by its own fields and `more`.
fn event(kind: &str, upload: &UploadInfo, more: Value) -> Value {
    let mut described = json!({
        "id": upload.id,
        "chunkSize": upload.chunk_size,
        "metadata": upload.metadata,
        "location": format!("/uploads/{}", upload.id),
    });
    if let Some(object) = &upload.object {
        described["object"] = object.as_str().into();
    }
    if let (Some(fields), Value::Object(more)) = (described.as_object_mut(), more) {
        fields.extend(more);
    }
    json!({
        "type": kind,
        "eventId": format!("{kind}-{}", upload.id),
        "createdAt": unix_seconds(),
        "upload": described,
    })
}

/// 128 random bits, hex.
pub fn new_event_id() -> String {
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    chunkwise_core::protocol::hex(&bytes)
}

/// The value of header `name` the hook is given. A header sent more than once gives its
/// last line: a proxy appends its own after the client's, so the last is the one the
/// nearest hop vouches for, as with `X-Forwarded-For`. `Cookie` lines are one list (HTTP/2
/// sends each cookie on a line of its own), joined with `; `.
fn forwarded_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut lines = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    if name == "cookie" {
        let joined = lines.collect::<Vec<_>>().join("; ");
        return (!joined.is_empty()).then_some(joined);
    }
    lines.next_back().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_t_dot_body() {
        // RFC 4231-style check against an independent computation of the same HMAC.
        let sig = signature("whsec", 1700000000, b"{\"a\":1}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        let expected = chunkwise_core::protocol::hex(&mac.finalize().into_bytes());
        assert_eq!(sig, format!("t=1700000000,v1={expected}"));
    }

    #[test]
    fn hook_urls_are_checked_at_start() {
        assert!(HookConfig::parse_url("http://127.0.0.1:9/hook").is_ok());
        for bad in ["not a url", "/relative", "ftp://x/", "http://"] {
            assert!(HookConfig::parse_url(bad).is_err(), "{bad}");
        }
    }
}
