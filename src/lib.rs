//! chunkwise: upload huge files from the browser in fixed-size slices.
//!
//! This crate is the thin wasm facade: [`Upload`] parses options at the JS boundary,
//! then runs [`chunkwise_core::engine::Engine`] with browser adapters — a Blob or
//! ReadableStream source ([`source`]), the HTTP transport ([`http`]: XHR for slices, fetch
//! for the rest) and JS timers ([`runtime`]).
#![deny(missing_docs)]

pub mod digest;
pub mod http;
pub mod interop;
pub mod json;
pub mod resume;
pub mod runtime;
pub mod s3;
pub mod source;
pub mod tus;

use std::cell::{Cell, RefCell};
use std::pin::pin;
use std::rc::Rc;

use chunkwise_core::config::DigestAlgorithm;
use chunkwise_core::engine::{
    Control, Engine, ErrorCode, Events, SliceState, Start, Transport as _, UploadError,
};
use chunkwise_core::progress::Progress;
use chunkwise_core::retry::Failure;
use chunkwise_core::slots::Slots;
use futures_util::future::{self, Either};
use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{future_to_promise, JsFuture};
use web_sys::AbortSignal;

use crate::http::HttpTransport;
use crate::interop::{Parsed, SourceValue};
use crate::resume::ResumeKey;
use crate::runtime::BrowserRuntime;
use crate::s3::is_s3_location;
use crate::source::{BlobSource, Source, StreamSource};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** What an upload reads: a File, a Blob, or any stream of bytes (length known or not). */
export type UploadSource = Blob | ReadableStream<Uint8Array>;

/** Options of `new Upload(source, options)`. Unknown keys throw a TypeError. */
export interface UploadOptions {
  /** URL of the server's `/uploads`, absolute or relative to the page. Required, unless
   * `s3` is given. */
  endpoint?: string;
  /** Slice size in bytes. Default 8 MiB; 262144 (256 KiB) ..= 1073741824 (1 GiB). */
  chunkSize?: number;
  /** Most slice requests in flight at once. Default 4; 1 ..= 32. */
  maxInFlight?: number;
  /** Total bytes, only for a ReadableStream source of known length. */
  size?: number;
  /** String metadata sent when the upload is created. */
  metadata?: Record<string, string>;
  /** Extra headers on every request, e.g. Authorization. */
  headers?: Record<string, string>;
  /** "sha-256" (default): per-slice Content-Digest and a whole-file check; "none": no digest. */
  digest?: "sha-256" | "none";
  /** Retries per slice on network errors, 408, 429 and 5xx. Default 5; 0 ..= 100. */
  retries?: number;
  /** Called as bytes leave (at most every 50 ms), and at least once per acknowledged slice. */
  onProgress?: (progress: UploadProgress) => void;
  /** Called when a slice changes state (for slice maps). */
  onSlice?: (event: SliceEvent) => void;
  /** Aborts the upload: in-flight requests are cancelled and the server upload deleted. */
  signal?: AbortSignal;
  /** A slice request none of whose bytes has moved for this long is aborted and retried;
   * a slow but moving one never is. Before its first byte leaves a request may wait 4x as
   * long for a connection, and without limit while other chunkwise requests in the page
   * move bytes. Default 30000; 100 ..= 3600000. */
  stallTimeoutMs?: number;
  /** How long to wait out network errors (offline, server down) before failing; they do
   * not spend `retries`. Default 600000 (10 min); 0 ..= 86400000. */
  offlineTimeoutMs?: number;
  /** Remember the upload in IndexedDB and resume it when the same File is chosen again,
   * after a reload too. Default true. */
  resume?: boolean;
  /** Continue this upload (an id, or `upload.location`): the server is asked once what it
   * holds and only the missing slices are sent. File and Blob sources only. */
  resumeFrom?: string;
  /** Straight to an S3 bucket through the app's own backend, which signs (no
   * chunkwise-server): slice i is part i + 1. Not with `endpoint` or `headers`. */
  s3?: S3Callbacks;
  /** What `endpoint` speaks: "chunkwise" (default, chunkwise-server) or "tus" (tus 1.0:
   * tusd, @tus/server, hosted tus services). With "tus", one PATCH at a time per upload (the
   * protocol forbids parallel appends), `metadata` goes as Upload-Metadata, and slices are
   * hashed only when the server announces the sha256 checksum extension. */
  protocol?: "chunkwise" | "tus";
}

/** What identifies a multipart upload to the app's backend. */
export interface S3Upload {
  uploadId: string;
  key: string;
  /** Fires when the upload is cancelled (abortMultipartUpload gets a fresh one). */
  signal: AbortSignal;
}

/** A part as the store holds it. `sha256` is base64, as `x-amz-checksum-sha256`. */
export interface S3Part {
  partNumber: number;
  size: number;
  sha256?: string;
}

/** The app's backend doing the five store calls; each may return a value or a Promise.
 * A throw or rejection ends the upload with an `UploadError` of code "s3_callback". */
export interface S3Callbacks {
  /** May return `chunkSize` to impose one. `size` is null for a stream of unknown length. */
  createMultipartUpload(args: {
    size: number | null;
    chunkSize: number;
    metadata: Record<string, string>;
    signal: AbortSignal;
  }): { uploadId: string; key: string; chunkSize?: number } | Promise<{ uploadId: string; key: string; chunkSize?: number }>;
  /** Called just before part `partNumber` goes; the part is PUT to `url` with exactly
   * `headers`. Sign `sha256` as `x-amz-checksum-sha256` so the store checks it. */
  signPart(args: S3Upload & { partNumber: number; size: number; sha256: string }):
    { url: string; headers?: Record<string, string> } | Promise<{ url: string; headers?: Record<string, string> }>;
  /** The parts the store holds, for resuming. */
  listParts(args: S3Upload): S3Part[] | Promise<S3Part[]>;
  /** `parts` in order; list the parts for their ETags. */
  completeMultipartUpload(args: S3Upload & { parts: S3Part[] }):
    { location?: string } | void | Promise<{ location?: string } | void>;
  abortMultipartUpload(args: S3Upload): unknown;
}

/** An unfinished upload of the same file, found by `Upload.findPrevious`. */
export interface PreviousUpload {
  location: string;
  endpoint: string;
  name: string;
  size: number;
  chunkSize: number;
  /** When it was started (ms since the epoch). */
  createdAt: number;
  /** What the server holds now, or null when it could not be asked. */
  bytesReceived: number | null;
  /** Another tab or worker of this site is uploading it now (its `start()` here would
   * reject with code "busy" until that one ends). */
  uploading: boolean;
}

/** Progress. */
export interface UploadProgress {
  /** Bytes that have left the browser, in requests still alive or acknowledged; a
   * request that fails takes its bytes off again, so this never shows more than is true. */
  bytesSent: number;
  /** Bytes in slices the server acknowledged (stored and checked). */
  bytesAcknowledged: number;
  /** null while a stream of unknown length is still being read. */
  bytesTotal: number | null;
  slicesDone: number;
  slicesTotal: number | null;
  /** Slice requests outstanding now. */
  inFlight: number;
  /** Bytes put on the wire per second, moving average over the last 5 s. */
  bytesPerSecond: number;
  /** null until a rate and a total are known. */
  etaSeconds: number | null;
}

/** A slice changed state. */
export interface SliceEvent {
  index: number;
  state: "reading" | "sending" | "retrying" | "done";
  /** 1 for the first attempt. */
  attempt: number;
}

/** What `start()` resolves with. */
export interface UploadResult {
  id: string;
  /** Absolute URL of the upload on the server; with `s3`, what completeMultipartUpload
   * returned as `location` (the object key when it returned none). */
  location: string;
  size: number;
  slices: number;
  /** The slice size used: `chunkSize`, unless the server chose larger slices (an object
   * store takes at most 10,000 parts) or a resumed upload kept its own. */
  chunkSize: number;
  /** Slices the server already held from an earlier attempt and that were not sent again. */
  resumedSlices: number;
  /** SHA-256 the server computed over the bytes it stored (hex); null when the bytes went
   * straight to an object store (direct mode), where the store checked every slice's
   * SHA-256 instead and `verified` covers them all. */
  sha256: string | null;
  /**
   * Whether the server confirmed that it holds exactly the bytes read here: the browser
   * hashed every slice (SHA-256), the server checked each on arrival and, at the end, the
   * digest of all of them. false with digest "none".
   */
  verified: boolean;
  elapsedMs: number;
}

/** Why an upload failed. */
export type UploadErrorCode =
  | "network" | "http_status" | "digest_mismatch" | "aborted" | "source_read"
  | "size_mismatch" | "stalled" | "protocol" | "invalid_state" | "s3_callback"
  /** The WebAssembly module trapped (an internal error): nothing runs in it again until
   * the page or worker reloads. Every pending and later call rejects with this code. */
  | "crashed"
  /** Another tab or worker of this site is uploading the same file to the same endpoint
   * now (with `resume` on, an upload holds a Web Lock on it while it runs). */
  | "busy";

/** The rejection of `start()`. */
export interface UploadError extends Error {
  name: "UploadError" | "AbortError";
  code: UploadErrorCode;
  /** The HTTP status, when the server answered. */
  status?: number;
}
"#;

/// An upload of one source to one server. Construct it, then `await upload.start()`.
#[wasm_bindgen]
pub struct Upload {
    inner: Rc<Inner>,
}

struct Inner {
    source: RefCell<Option<SourceValue>>,
    parsed: Parsed,
    started: Cell<bool>,
    location: Rc<RefCell<Option<String>>>,
    control: Control,
}

#[wasm_bindgen]
impl Upload {
    /// Checks the source and options; throws `TypeError` or `RangeError` if they are wrong.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "UploadSource")] source: JsValue,
        #[wasm_bindgen(unchecked_param_type = "UploadOptions")] options: JsValue,
    ) -> Result<Upload, JsValue> {
        Upload::with_control(&source, &options, Control::default())
    }

    /// Stops starting requests (new slices and retries); requests in flight finish. The
    /// upload's promise stays pending until `resume()`.
    pub fn pause(&self) {
        self.inner.control.pause();
    }

    /// Starts requests again after `pause()`.
    pub fn resume(&self) {
        self.inner.control.resume();
    }

    /// Whether the upload is paused.
    #[wasm_bindgen(getter)]
    pub fn paused(&self) -> bool {
        self.inner.control.is_paused()
    }

    /// Unfinished uploads of this same file (same name, size, modification time and first
    /// MiB) that this browser remembers; entries the server no longer knows are forgotten.
    #[wasm_bindgen(js_name = findPrevious, unchecked_return_type = "Promise<PreviousUpload[]>")]
    pub fn find_previous(
        #[wasm_bindgen(unchecked_param_type = "Blob")] source: JsValue,
    ) -> Promise {
        future_to_promise(async move {
            let blob = source.dyn_into::<web_sys::Blob>().map_err(|_| {
                JsValue::from(js_sys::TypeError::new(
                    "findPrevious takes the File (or Blob) to look for",
                ))
            })?;
            let fingerprint = resume::fingerprint(&blob).await?;
            let found = js_sys::Array::new();
            for (key, value) in resume::entries_for(&fingerprint).await {
                let location = js_sys::Reflect::get(&value, &"location".into())?
                    .as_string()
                    .unwrap_or_default();
                let endpoint = js_sys::Reflect::get(&value, &"endpoint".into())?
                    .as_string()
                    .unwrap_or_default();
                let tus = js_sys::Reflect::get(&value, &"protocol".into())?.as_string()
                    == Some("tus".into());
                let transport = if tus {
                    // Without the app's headers: a server that wants them answers an
                    // error here, and bytesReceived is null.
                    HttpTransport::tus(endpoint, Vec::new(), 1, true)
                } else {
                    HttpTransport::new(location.clone(), Vec::new())
                };
                let status = if is_s3_location(&location) {
                    // Only the app's own callbacks can ask its store.
                    Err(None)
                } else {
                    transport.status(&location).await.map_err(Some)
                };
                let bytes_received = match status {
                    Ok(status) if !status.complete => {
                        JsValue::from_f64(status.bytes_received as f64)
                    }
                    Ok(_) => {
                        resume::forget_key(&key).await;
                        continue;
                    }
                    Err(Some(error))
                        if matches!(error.failure, Failure::Status { status: 404, .. }) =>
                    {
                        resume::forget_key(&key).await;
                        continue;
                    }
                    Err(_) => JsValue::NULL,
                };
                let entry = js_sys::Object::new();
                for name in [
                    "location",
                    "endpoint",
                    "name",
                    "size",
                    "chunkSize",
                    "createdAt",
                    "uploading",
                ] {
                    js_sys::Reflect::set(
                        &entry,
                        &name.into(),
                        &js_sys::Reflect::get(&value, &name.into())?,
                    )?;
                }
                js_sys::Reflect::set(&entry, &"bytesReceived".into(), &bytes_received)?;
                found.push(&entry);
            }
            Ok(found.into())
        })
    }

    /// The absolute URL of the upload on the server, once created (`undefined` before).
    /// Keep it to resume or delete the upload later.
    #[wasm_bindgen(getter)]
    pub fn location(&self) -> Option<String> {
        self.inner.location.borrow().clone()
    }

    /// Runs the upload. Resolves with an `UploadResult`; rejects with an `UploadError`
    /// (or an `AbortError` when the signal aborted it). Call it once.
    #[wasm_bindgen(unchecked_return_type = "Promise<UploadResult>")]
    pub fn start(&self) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move { inner.run().await })
    }
}

impl Upload {
    fn with_control(
        source: &JsValue,
        options: &JsValue,
        control: Control,
    ) -> Result<Upload, JsValue> {
        let source = interop::parse_source(source)?;
        let parsed = interop::parse_options(options, &source)?;
        Ok(Upload {
            inner: Rc::new(Inner {
                source: RefCell::new(Some(source)),
                parsed,
                started: Cell::new(false),
                location: Rc::default(),
                control,
            }),
        })
    }
}

/// Uploads made through one group share one limit of slice requests in flight, granted
/// first come, first served, so that a big file cannot starve the small ones behind it.
/// Each upload keeps its own `maxInFlight` too. `UploadQueue` is built on this.
#[wasm_bindgen]
pub struct UploadGroup {
    slots: Slots,
}

#[wasm_bindgen]
impl UploadGroup {
    /// `maxInFlight`: slice requests in flight across all the group's uploads, 1 ..= 64.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(js_name = maxInFlight)] max_in_flight: JsValue,
    ) -> Result<UploadGroup, JsValue> {
        match max_in_flight.as_f64() {
            Some(n) if n.fract() == 0.0 && (1.0..=64.0).contains(&n) => Ok(UploadGroup {
                slots: Slots::new(n as usize),
            }),
            _ => Err(js_sys::RangeError::new("maxInFlight must be an integer from 1 to 64").into()),
        }
    }

    /// A new `Upload` (same arguments as its constructor) whose slice requests count
    /// against this group's limit.
    pub fn upload(
        &self,
        #[wasm_bindgen(unchecked_param_type = "UploadSource")] source: JsValue,
        #[wasm_bindgen(unchecked_param_type = "UploadOptions")] options: JsValue,
    ) -> Result<Upload, JsValue> {
        Upload::with_control(&source, &options, Control::with_slots(self.slots.clone()))
    }

    /// Slice requests of the group's uploads in flight now.
    #[wasm_bindgen(getter, js_name = inFlight)]
    pub fn in_flight(&self) -> u32 {
        self.slots.in_use() as u32
    }

    /// The group's limit.
    #[wasm_bindgen(getter, js_name = maxInFlight)]
    pub fn max_in_flight(&self) -> u32 {
        self.slots.limit() as u32
    }
}

/// Forwards engine events to the JS callbacks.
struct JsEvents {
    on_progress: Option<Function>,
    on_slice: Option<Function>,
    location: Rc<RefCell<Option<String>>>,
    /// Where to remember the upload, for resuming after a reload.
    remember: Option<(ResumeKey, web_sys::Blob)>,
}

fn call(callback: &Function, argument: &JsValue) {
    if let Err(error) = callback.call1(&JsValue::NULL, argument) {
        // A throwing callback must not break the upload; show it where developers look.
        web_sys::console::error_2(&"chunkwise: a callback threw".into(), &error);
    }
}

impl Events for JsEvents {
    fn created(&self, location: &str, chunk_size_bytes: u64) {
        *self.location.borrow_mut() = Some(location.to_string());
        if let Some((key, blob)) = &self.remember {
            key.remember(location, blob, chunk_size_bytes);
        }
    }

    fn progress(&self, progress: &Progress) {
        if let Some(callback) = &self.on_progress {
            call(callback, &interop::progress_to_js(progress));
        }
    }

    fn slice(&self, index: u64, state: SliceState, attempt: u32) {
        if let Some(callback) = &self.on_slice {
            call(
                callback,
                &interop::slice_event_to_js(index, state.as_str(), attempt),
            );
        }
    }
}

fn busy() -> UploadError {
    UploadError {
        code: ErrorCode::Busy,
        status: None,
        message: "another tab or worker of this site is uploading this file to this endpoint now; \
                  start() again once it has ended (its upload is then resumed), or pass \
                  resume: false to send a second, separate copy"
            .into(),
    }
}

fn aborted() -> UploadError {
    UploadError {
        code: ErrorCode::Aborted,
        status: None,
        message: "the upload was aborted".into(),
    }
}

/// Resolves when `signal` aborts.
fn abort_future(signal: Option<&AbortSignal>) -> impl std::future::Future<Output = ()> {
    let promise = signal.map(|signal| {
        Promise::new(&mut |resolve, _reject| {
            let _ = signal.add_event_listener_with_callback("abort", &resolve);
        })
    });
    async move {
        match promise {
            Some(promise) => drop(JsFuture::from(promise).await),
            None => future::pending::<()>().await,
        }
    }
}

impl Inner {
    async fn run(&self) -> Result<JsValue, JsValue> {
        if self.started.replace(true) {
            let error =
                js_sys::Error::new("start() was already called on this Upload; create a new one");
            error.set_name("UploadError");
            let _ = js_sys::Reflect::set(&error, &"code".into(), &"invalid_state".into());
            return Err(error.into());
        }
        let parsed = &self.parsed;
        if parsed.signal.as_ref().is_some_and(AbortSignal::aborted) {
            return Err(interop::error_to_js(&aborted()));
        }
        let started_ms = js_sys::Date::now();
        let Some(source) = self.source.borrow_mut().take() else {
            return Err(interop::error_to_js(&UploadError::protocol(
                "the source is gone",
            )));
        };
        let blob = match &source {
            SourceValue::Blob(blob) => Some(blob.clone()),
            SourceValue::Stream(_) => None,
        };
        let resume_key = match (&blob, parsed.resume) {
            (Some(blob), true) => ResumeKey::new(blob, &parsed.endpoint, parsed.tus)
                .await
                .ok(),
            _ => None,
        };
        // One upload of a file to an endpoint at a time, across tabs and workers: held
        // until this function returns.
        let _lock = match &resume_key {
            Some(key) => match key.lock().await {
                Some(lock) => Some(lock),
                None => return Err(interop::error_to_js(&busy())),
            },
            None => None,
        };
        let remembered = match (&parsed.resume_from, &resume_key) {
            (Some(_), _) | (None, None) => None,
            (None, Some(key)) => key.remembered().await,
        };
        let start = match (&parsed.resume_from, &remembered) {
            (Some(location), _) | (None, Some(location)) => Start::Resume(location.clone()),
            (None, None) => Start::New(Some(parsed.metadata.clone())),
        };
        let (endpoint, headers) = (parsed.endpoint.clone(), parsed.headers.clone());
        let transport = match &parsed.s3 {
            Some(calls) => HttpTransport::s3(calls),
            None if parsed.tus => {
                let chunk_size_bytes = parsed.options.get().chunk_size_bytes;
                HttpTransport::tus(endpoint, headers, chunk_size_bytes, parsed.chunk_size_given)
            }
            None => HttpTransport::new(endpoint, headers),
        };

        let mut outcome = self
            .attempt(&source, start, &transport, &resume_key, &blob)
            .await;
        if let (Err(error), Some(_)) = (&outcome, &remembered) {
            // The remembered upload is gone from the server (expired or deleted), or the
            // app's listParts refused it (completed or aborted): forget it and start over,
            // once.
            let gone = error.status == Some(404) || error.code == ErrorCode::S3Callback;
            if gone && self.location.borrow().is_none() {
                if let Some(key) = &resume_key {
                    key.forget().await;
                }
                let start = Start::New(Some(parsed.metadata.clone()));
                outcome = self
                    .attempt(&source, start, &transport, &resume_key, &blob)
                    .await;
            }
        }
        match outcome {
            Ok(mut outcome) => {
                if let Some(key) = &resume_key {
                    key.forget().await;
                }
                if let Some(location) = transport.completed_location() {
                    outcome.location = location;
                }
                Ok(interop::outcome_to_js(
                    &outcome,
                    js_sys::Date::now() - started_ms,
                ))
            }
            Err(error) => {
                if error.code == ErrorCode::Aborted {
                    let location = self.location.borrow().clone();
                    if let Some(location) = location {
                        // Best effort: an unreachable server expires the upload later.
                        let _ = transport.delete(&location).await;
                    }
                    if let Some(key) = &resume_key {
                        key.forget().await;
                    }
                }
                Err(interop::error_to_js(&error))
            }
        }
    }

    /// One run of the engine over a fresh reader of `source`, raced against the signal.
    async fn attempt(
        &self,
        source: &SourceValue,
        start: Start,
        transport: &HttpTransport,
        resume_key: &Option<ResumeKey>,
        blob: &Option<web_sys::Blob>,
    ) -> Result<chunkwise_core::engine::Outcome, UploadError> {
        let parsed = &self.parsed;
        let options = parsed.options.get();
        let wanted = options.digest == DigestAlgorithm::Sha256;
        // Slices are hashed only for a receiver that checks them (a tus server may not).
        let digest = wanted
            && transport
                .checks_slices(options.stall_timeout_ms as f64)
                .await;
        let unhashed;
        let engine_options = if digest == wanted {
            &parsed.options
        } else {
            unhashed = parsed.options.without_digest();
            &unhashed
        };
        let source = match source {
            SourceValue::Blob(blob) => Source::Blob(BlobSource::new(
                blob.clone(),
                options.chunk_size_bytes,
                digest,
            )),
            SourceValue::Stream(stream) => {
                let source =
                    StreamSource::new(stream, options.size_bytes, options.chunk_size_bytes, digest)
                        .map_err(|e| UploadError {
                            code: ErrorCode::SourceRead,
                            status: None,
                            message: format!(
                                "the stream cannot be read: {}",
                                interop::describe_js_error(&e)
                            ),
                        })?;
                Source::Stream(source)
            }
        };
        let events = JsEvents {
            on_progress: parsed.on_progress.clone(),
            on_slice: parsed.on_slice.clone(),
            location: self.location.clone(),
            remember: resume_key.clone().zip(blob.clone()),
        };
        let runtime = BrowserRuntime;
        let engine = Engine {
            options: engine_options,
            source,
            transport,
            runtime: &runtime,
            events: &events,
            control: &self.control,
        };
        let run = pin!(engine.run(start));
        let abort = pin!(abort_future(parsed.signal.as_ref()));
        match future::select(run, abort).await {
            Either::Left((outcome, _)) => outcome,
            // Dropping the engine here aborts every request it had in flight.
            Either::Right(((), _)) => Err(aborted()),
        }
    }
}

/// A free-list allocator instead of the default dlmalloc: the wasm allocates little (no slice
/// bytes ever enter it), and dlmalloc is several KB of every app's download.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
// SAFETY: this wasm has no threads (no atomics target feature), so nothing allocates
// concurrently.
static ALLOCATOR: lol_alloc::AssumeSingleThreaded<lol_alloc::FreeListAllocator> =
    unsafe { lol_alloc::AssumeSingleThreaded::new(lol_alloc::FreeListAllocator::new()) };

/// Traps the module, as a panic does in the size build. Test builds only (`--features
/// trap-test`, `scripts/build pkg-trap`): tests/e2e/trap.test.mjs checks that every pending
/// and later call then rejects with code "crashed" instead of hanging.
#[cfg(all(feature = "trap-test", target_arch = "wasm32"))]
#[wasm_bindgen(js_name = trapForTest)]
pub fn trap_for_test() {
    core::arch::wasm32::unreachable()
}
