//! The upload state machine: create, send slices through a bounded window, complete.
//!
//! The engine never touches the network, the clock or the file itself: a
//! [`SliceSource`] reads slices in order, a [`Transport`] sends them, and a [`Runtime`]
//! tells the time, sleeps and draws random numbers. The browser adapters live in the
//! `chunkwise` crate; tests drive the engine with fakes.
//!
//! Backpressure: at most `maxInFlight` slice requests are outstanding, and at most one
//! more slice is read ahead while every slot is busy, so a source never holds more than
//! `maxInFlight + 1` slices at once.
#![allow(async_fn_in_trait)]

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures_util::future::{self, Either};
use futures_util::stream::{self, FuturesUnordered, StreamExt};

use crate::config::{DigestAlgorithm, Valid, MAX_CHUNK_SIZE_BYTES, MIN_CHUNK_SIZE_BYTES};
use crate::geometry::Geometry;
use crate::progress::{Progress, Tracker};
use crate::protocol::{Complete, Completed, CreateUpload, Created, SlicesDigest, Status};
use crate::ranges::IndexSet;
use crate::retry::{Decision, Failure, RetryPolicy, RetryState};
use crate::slots::{Acquire, Slot, Slots};
use crate::stall::StallWatch;

/// Time, sleep and randomness, injected.
pub trait Runtime {
    /// Milliseconds on a monotonic clock.
    fn now_ms(&self) -> f64;
    /// Resolves after `ms` milliseconds.
    fn sleep(&self, ms: f64) -> impl Future<Output = ()>;
    /// Uniform in `[0, 1)`.
    fn random(&self) -> f64;
}

/// One slice read from the source.
#[derive(Clone, Debug)]
pub struct SliceData<B> {
    /// Its index.
    pub index: u64,
    /// Its length in bytes.
    pub len: u64,
    /// What the transport sends (a Blob slice or a buffer, in the browser).
    pub body: B,
    /// Its SHA-256, when digests are on.
    pub sha256: Option<[u8; 32]>,
}

/// What reading the next slice gave.
#[derive(Debug)]
pub enum Read<B> {
    /// The next slice, in order.
    Slice(SliceData<B>),
    /// The source is exhausted.
    End {
        /// Total bytes read.
        size_bytes: u64,
    },
}

/// Reading the source failed.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    /// The underlying read failed (file removed or changed, stream errored).
    #[error("reading the source failed: {0}")]
    Read(String),
    /// The source gave a different number of bytes than announced.
    #[error("the source gave {actual} bytes but its size was given as {expected}")]
    SizeMismatch {
        /// The announced size.
        expected: u64,
        /// At least this many bytes were read.
        actual: u64,
    },
}

/// Reads slices in order, hashing as it goes.
pub trait SliceSource {
    /// What a slice's bytes travel as.
    type Body: Clone;
    /// The total size, when known before reading.
    fn size_bytes(&self) -> Option<u64>;
    /// The slice size.
    fn chunk_size_bytes(&self) -> u64;
    /// Changes the slice size; called only before the first read (to resume an upload
    /// sliced differently).
    fn set_chunk_size(&mut self, chunk_size_bytes: u64);
    /// Reads the next slice in order, or reports the end.
    async fn next(&mut self) -> Result<Read<Self::Body>, SourceError>;
}

/// A request failed.
#[derive(Clone, Debug, PartialEq)]
pub struct TransportError {
    /// Why, for retrying.
    pub failure: Failure,
    /// The server's error code, when it sent one.
    pub code: Option<String>,
    /// For people.
    pub message: String,
}

/// The upload once created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedUpload {
    /// Absolute URL of the upload.
    pub location: String,
    /// The server's answer.
    pub created: Created,
}

/// Called with the number of a request body's bytes that have left so far.
pub type SentBytes<'a> = Rc<dyn Fn(u64) + 'a>;

/// The HTTP side of the protocol (see `docs/protocol.md`).
pub trait Transport {
    /// What a slice's bytes travel as.
    type Body;
    /// Whether `put_slice` reports its bytes as they leave. When it does, a slice request
    /// is stalled only when its bytes stop moving; when not, it has a deadline.
    fn reports_upload_progress(&self) -> bool {
        true
    }
    /// `POST /uploads`.
    async fn create(&self, request: &CreateUpload) -> Result<CreatedUpload, TransportError>;
    /// Sends one slice, calling `sent` with the body bytes that have left so far (and
    /// on any other sign of life, such as the answer's headers).
    async fn put_slice(
        &self,
        location: &str,
        slice: &SliceData<Self::Body>,
        sent: SentBytes<'_>,
    ) -> Result<(), TransportError>;
    /// `POST {location}/complete`.
    async fn complete(
        &self,
        location: &str,
        request: &Complete,
    ) -> Result<Completed, TransportError>;
    /// `GET {location}`.
    async fn status(&self, location: &str) -> Result<Status, TransportError>;
    /// `DELETE {location}`.
    async fn delete(&self, location: &str) -> Result<(), TransportError>;
}

/// The state of one slice, for observers such as the demo's slice map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SliceState {
    /// Being read (and hashed).
    Reading,
    /// Its request is in flight.
    Sending,
    /// It failed and waits to be tried again.
    Retrying,
    /// The server acknowledged it.
    Done,
}

impl SliceState {
    /// The name used in JS.
    pub fn as_str(self) -> &'static str {
        match self {
            SliceState::Reading => "reading",
            SliceState::Sending => "sending",
            SliceState::Retrying => "retrying",
            SliceState::Done => "done",
        }
    }
}

/// Callbacks out of the engine.
pub trait Events {
    /// The upload exists on the server, sliced in `chunk_size_bytes`.
    fn created(&self, _location: &str, _chunk_size_bytes: u64) {}
    /// Progress changed (throttled).
    fn progress(&self, _progress: &Progress) {}
    /// A slice changed state; `attempt` counts from 1.
    fn slice(&self, _index: u64, _state: SliceState, _attempt: u32) {}
}

/// No callbacks.
impl Events for () {}

/// Why an upload failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// No HTTP answer, retries exhausted.
    Network,
    /// The server answered with an error status.
    HttpStatus,
    /// A digest did not match.
    DigestMismatch,
    /// The upload was aborted.
    Aborted,
    /// The source could not be read.
    SourceRead,
    /// The source's length differs from the size given.
    SizeMismatch,
    /// A request stalled, retries exhausted.
    Stalled,
    /// The server's answer broke the protocol.
    Protocol,
    /// One of the app's `s3` callbacks threw, rejected or answered in a wrong shape.
    S3Callback,
    /// Another tab or worker is uploading the same file to the same endpoint now.
    Busy,
}

impl ErrorCode {
    /// The `code` property in JS.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Network => "network",
            ErrorCode::HttpStatus => "http_status",
            ErrorCode::DigestMismatch => "digest_mismatch",
            ErrorCode::Aborted => "aborted",
            ErrorCode::SourceRead => "source_read",
            ErrorCode::SizeMismatch => "size_mismatch",
            ErrorCode::Stalled => "stalled",
            ErrorCode::Protocol => "protocol",
            ErrorCode::S3Callback => "s3_callback",
            ErrorCode::Busy => "busy",
        }
    }
}

/// An upload failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UploadError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// The HTTP status, when there was one.
    pub status: Option<u16>,
    /// For people; the server's message when it sent one.
    pub message: String,
}

impl UploadError {
    fn from_transport(error: TransportError, what: &str) -> Self {
        let (code, status) = match error.failure {
            Failure::Network | Failure::Blocked => (ErrorCode::Network, None),
            Failure::Stalled => (ErrorCode::Stalled, None),
            Failure::Corrupted { status } => (ErrorCode::DigestMismatch, Some(status)),
            Failure::Resync { status } => (ErrorCode::HttpStatus, Some(status)),
            Failure::Status { status, .. } if error.code.as_deref() == Some("digest_mismatch") => {
                (ErrorCode::DigestMismatch, Some(status))
            }
            // The app's own code failed: no HTTP status of a server to report.
            Failure::Status { .. } if error.code.as_deref() == Some("s3_callback") => {
                (ErrorCode::S3Callback, None)
            }
            Failure::Status { status, .. } => (ErrorCode::HttpStatus, Some(status)),
        };
        Self {
            code,
            status,
            message: format!("{what}: {}", error.message),
        }
    }

    /// An error for an engine-level protocol violation.
    pub fn protocol(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::Protocol,
            status: None,
            message: message.into(),
        }
    }
}

impl From<SourceError> for UploadError {
    fn from(error: SourceError) -> Self {
        let code = match error {
            SourceError::Read(_) => ErrorCode::SourceRead,
            SourceError::SizeMismatch { .. } => ErrorCode::SizeMismatch,
        };
        Self {
            code,
            status: None,
            message: error.to_string(),
        }
    }
}

/// A finished upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The upload's id.
    pub id: String,
    /// Absolute URL of the upload.
    pub location: String,
    /// Total bytes.
    pub size_bytes: u64,
    /// Number of slices.
    pub slices: u64,
    /// The slice size used: the one asked for, unless the server chose another (an
    /// object store's part limit) or the upload resumed with its own.
    pub chunk_size_bytes: u64,
    /// Slices the server already had when this run resumed, and were not sent again.
    pub resumed_slices: u64,
    /// SHA-256 the server computed over the stored bytes (hex).
    pub sha256: String,
    /// Whether the server confirmed that it holds exactly the slices read here: their
    /// [`SlicesDigest`] matched (digests on, and a server that checks it).
    pub verified: bool,
}

/// Pauses and resumes a running upload from outside the engine.
///
/// While paused, no request starts (neither a new slice nor a retry) and nothing is read;
/// requests already in flight finish.
#[derive(Debug, Default)]
pub struct Control {
    paused: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
    slots: Option<Slots>,
}

impl Control {
    /// A control whose slice requests also each hold one of `slots`, a limit shared with
    /// other uploads (a queue's).
    pub fn with_slots(slots: Slots) -> Self {
        Control {
            slots: Some(slots),
            ..Control::default()
        }
    }

    /// Stops starting requests.
    pub fn pause(&self) {
        self.paused.set(true);
    }

    /// Starts requests again.
    pub fn resume(&self) {
        self.paused.set(false);
        for waker in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Whether the upload is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.get()
    }

    /// Resolves once the upload is not paused.
    pub fn running(&self) -> Running<'_> {
        Running(self)
    }
}

/// The future of [`Control::running`].
#[derive(Debug)]
pub struct Running<'a>(&'a Control);

impl Future for Running<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.0.paused.get() {
            return Poll::Ready(());
        }
        let mut wakers = self.0.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// How an upload begins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Create a new upload on the server, with this metadata.
    New(Option<BTreeMap<String, String>>),
    /// Continue the upload at this absolute URL: ask the server once what it holds and
    /// send only the rest.
    Resume(String),
}

/// Runs one upload to the end.
pub struct Engine<'a, S, T, R, E> {
    /// Validated options.
    pub options: &'a Valid,
    /// The bytes.
    pub source: S,
    /// The network.
    pub transport: &'a T,
    /// The clock.
    pub runtime: &'a R,
    /// Observers.
    pub events: &'a E,
    /// Pause and resume.
    pub control: &'a Control,
}

/// What every request of one upload shares.
struct Requests<'a, R, E> {
    runtime: &'a R,
    events: &'a E,
    control: &'a Control,
    policy: RetryPolicy,
    stall_timeout_ms: f64,
    offline_timeout_ms: f64,
}

/// Wakes the engine's loop from outside a poll (upload progress events).
#[derive(Debug, Default)]
struct Pulse {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Pulse {
    fn notify(&self) {
        self.fired.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Resolves at the next `notify` (or at once if one came since the last wait).
    fn wait(&self) -> impl Future<Output = ()> + '_ {
        future::poll_fn(move |cx| {
            if self.fired.replace(false) {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
    }
}

/// Progress shared by the engine's loop and the slice requests in flight.
struct Shared {
    tracker: RefCell<Tracker>,
    pulse: Pulse,
}

/// Which request, for messages, events and the retry rules.
struct Request<'a> {
    what: &'a str,
    /// The slice, for events and progress.
    slice: Option<u64>,
    /// Where the slice's bytes are counted as they leave; `None` for requests whose stall
    /// is a deadline.
    progress: Option<&'a Shared>,
    /// Wait out network errors (false only before the upload exists, so that a wrong
    /// endpoint fails fast).
    wait_offline: bool,
    /// Extra time the server may need to answer (hashing at `complete`).
    extra_timeout_ms: f64,
}

impl<R: Runtime, E: Events> Requests<'_, R, E> {
    /// Runs `make(sent)` until it succeeds or the retry rules give up. Each attempt waits
    /// while paused and is aborted (dropped) when it stalls (see [`StallWatch`]).
    async fn run<'s, O, Fut: Future<Output = Result<O, TransportError>>>(
        &'s self,
        request: Request<'s>,
        mut make: impl FnMut(SentBytes<'s>) -> Fut,
    ) -> Result<O, UploadError> {
        let offline = request.wait_offline.then_some(self.offline_timeout_ms);
        let mut state = RetryState::new(self.policy, offline);
        let runtime = self.runtime;
        loop {
            self.control.running().await;
            let attempt = state.attempt();
            if let (Some(index), true) = (request.slice, attempt > 1) {
                self.events.slice(index, SliceState::Sending, attempt);
            }
            let now_ms = runtime.now_ms();
            let watch = Rc::new(Cell::new(match request.progress {
                Some(_) => StallWatch::idle(now_ms, self.stall_timeout_ms),
                None => StallWatch::deadline(
                    now_ms,
                    self.stall_timeout_ms,
                    attempt,
                    request.extra_timeout_ms,
                ),
            }));
            let sent: SentBytes<'s> = {
                let (watch, counted) = (watch.clone(), request.progress.zip(request.slice));
                Rc::new(move |bytes| {
                    let now_ms = runtime.now_ms();
                    let mut w = watch.get();
                    w.progressed(now_ms);
                    watch.set(w);
                    if let Some((shared, index)) = counted {
                        shared.tracker.borrow_mut().sent(now_ms, index, bytes);
                        shared.pulse.notify();
                    }
                })
            };
            let outcome = {
                let call = pin!(make(sent));
                // Woken at least once per stall limit: a request's first byte ends the longer
                // wait for it, so a request that sent every byte and hears nothing back is
                // stalled one limit after its last byte, not when the first-byte wait ends.
                let stalled = pin!(async {
                    loop {
                        let left_ms = watch.get().remaining_ms(runtime.now_ms());
                        if left_ms <= 0.0 {
                            break;
                        }
                        runtime.sleep(left_ms.min(self.stall_timeout_ms)).await;
                    }
                });
                match future::select(call, stalled).await {
                    Either::Left((outcome, _)) => outcome,
                    Either::Right(((), _)) => Err(TransportError {
                        failure: Failure::Stalled,
                        code: None,
                        message: watch.get().describe(),
                    }),
                }
            };
            let error = match outcome {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if let Some((shared, index)) = request.progress.zip(request.slice) {
                shared.tracker.borrow_mut().restart(index);
                shared.pulse.notify();
            }
            match state.on_failure(runtime.now_ms(), &error.failure, runtime.random()) {
                Decision::GiveUp => return Err(UploadError::from_transport(error, request.what)),
                Decision::RetryAfterMs(ms) => {
                    if let Some(index) = request.slice {
                        self.events.slice(index, SliceState::Retrying, attempt);
                    }
                    runtime.sleep(ms).await;
                }
            }
        }
    }
}

impl<'a, B, S, T, R, E> Engine<'a, S, T, R, E>
where
    B: Clone,
    S: SliceSource<Body = B> + 'a,
    T: Transport<Body = B>,
    R: Runtime,
    E: Events,
{
    /// Creates (or resumes) the upload, sends every slice the server lacks, and completes it.
    pub async fn run(self, start: Start) -> Result<Outcome, UploadError> {
        let Engine {
            options,
            mut source,
            transport,
            runtime,
            events,
            control,
        } = self;
        let opts = options.get();
        let digests_on = opts.digest == DigestAlgorithm::Sha256;
        let requests = Requests {
            runtime,
            events,
            control,
            policy: RetryPolicy::with_retries(opts.retries),
            stall_timeout_ms: opts.stall_timeout_ms as f64,
            offline_timeout_ms: opts.offline_timeout_ms as f64,
        };

        let (location, already) = match start {
            Start::New(metadata) => {
                let request = CreateUpload {
                    chunk_size: opts.chunk_size_bytes,
                    size: source.size_bytes(),
                    metadata: metadata.filter(|m| !m.is_empty()),
                };
                let what = Request {
                    what: "creating the upload",
                    slice: None,
                    progress: None,
                    wait_offline: false,
                    extra_timeout_ms: 0.0,
                };
                let created = requests.run(what, |_| transport.create(&request)).await?;
                let chosen = created.created.chunk_size;
                if chosen != opts.chunk_size_bytes {
                    // A server may choose the slicing: an object store takes at most
                    // 10,000 parts, so a file too big for the asked size gets larger ones.
                    if !(MIN_CHUNK_SIZE_BYTES..=MAX_CHUNK_SIZE_BYTES).contains(&chosen) {
                        return Err(UploadError::protocol(format!(
                            "the server answered with chunkSize {chosen}, outside {MIN_CHUNK_SIZE_BYTES} ..= {MAX_CHUNK_SIZE_BYTES}"
                        )));
                    }
                    source.set_chunk_size(chosen);
                }
                (created.location, IndexSet::new())
            }
            Start::Resume(location) => {
                let what = Request {
                    what: "asking the server what it holds",
                    slice: None,
                    progress: None,
                    wait_offline: true,
                    extra_timeout_ms: 0.0,
                };
                let status = requests.run(what, |_| transport.status(&location)).await?;
                if status.chunk_size == 0 {
                    return Err(UploadError::protocol("the server reports chunkSize 0"));
                }
                if let (Some(theirs), Some(ours)) = (status.size, source.size_bytes()) {
                    if theirs != ours {
                        return Err(UploadError {
                            code: ErrorCode::SizeMismatch,
                            status: None,
                            message: format!(
                                "the upload to resume holds {theirs} bytes but this source has {ours}; is it the same file?"
                            ),
                        });
                    }
                }
                // The slicing is the server's, whatever chunkSize was asked for now.
                source.set_chunk_size(status.chunk_size);
                (
                    location,
                    IndexSet::from_ranges(status.received.iter().copied()),
                )
            }
        };
        events.created(&location, source.chunk_size_bytes());
        let geometry = Geometry::new(source.chunk_size_bytes(), source.size_bytes())
            .map_err(|e| UploadError::protocol(e.to_string()))?;

        let max_in_flight = opts.max_in_flight as usize;
        // With a shared limit, each slice request also holds one of its slots. The wait
        // for one is kept across turns of the loop so that its place in line holds.
        let slots = control.slots.as_ref();
        let mut acquiring: Option<Acquire> = None;
        let mut slot: Option<Slot> = None;
        let shared = Shared {
            tracker: RefCell::new(Tracker::new(
                runtime.now_ms(),
                geometry.size_bytes(),
                geometry.slice_count(),
            )),
            pulse: Pulse::default(),
        };
        let progress_ref = transport.reports_upload_progress().then_some(&shared);
        let mut reads = pin!(stream::unfold(Some(source), |source| async move {
            let mut source = source?;
            let read = source.next().await;
            let keep_going = matches!(read, Ok(Read::Slice(_)));
            Some((read, keep_going.then_some(source)))
        }));
        let mut in_flight = FuturesUnordered::new();
        let mut ready: Option<SliceData<B>> = None;
        let mut reading = false;
        let mut next_index = 0u64;
        let mut resumed_slices = 0u64;
        let mut end: Option<u64> = None;
        // Every slice's digest, resumed ones included, in order.
        let mut slices_digest = digests_on.then(SlicesDigest::new);
        let location_ref = location.as_str();
        let requests_ref = &requests;

        loop {
            let paused = control.is_paused();
            // The first slice request goes alone until its bytes move: on another origin
            // it waits for a CORS preflight, and requests started before that preflight is
            // answered (and cached) would each send their own.
            let window_open = progress_ref.is_none() || shared.tracker.borrow().has_moved();
            let room = if window_open { max_in_flight } else { 1 };
            let may_send = !paused && in_flight.len() < room && ready.is_some();
            if !may_send {
                // Paused or full: hold no slot and no place in line that others could use.
                acquiring = None;
                slot = None;
            }
            let slot_ready = slots.is_none() || slot.is_some();
            if may_send && !slot_ready && acquiring.is_none() {
                acquiring = slots.map(Slots::acquire);
            }
            if may_send && slot_ready {
                if let Some(slice) = ready.take() {
                    let slot = slot.take();
                    events.slice(slice.index, SliceState::Sending, 1);
                    in_flight.push(async move {
                        let _slot = slot;
                        let what = format!("sending slice {}", slice.index);
                        let request = Request {
                            what: &what,
                            slice: Some(slice.index),
                            progress: progress_ref,
                            wait_offline: true,
                            extra_timeout_ms: 0.0,
                        };
                        requests_ref
                            .run(request, |sent| {
                                transport.put_slice(location_ref, &slice, sent)
                            })
                            .await?;
                        Ok::<_, UploadError>((slice.index, slice.len))
                    });
                }
            }
            let emit = {
                let mut tracker = shared.tracker.borrow_mut();
                tracker.set_in_flight(in_flight.len() as u32);
                tracker.poll_emit(runtime.now_ms())
            };
            if let Some(p) = emit {
                events.progress(&p);
            }
            if end.is_some() && ready.is_none() && in_flight.is_empty() {
                break;
            }
            let want_read = ready.is_none() && end.is_none() && !paused;
            if want_read && !reading {
                reading = true;
                if geometry
                    .slice_count()
                    .is_none_or(|count| next_index < count)
                    && !already.contains(next_index)
                {
                    events.slice(next_index, SliceState::Reading, 1);
                }
            }

            let read_next = if want_read {
                Either::Left(reads.next())
            } else {
                Either::Right(future::pending())
            };
            let acked = if in_flight.is_empty() {
                Either::Right(future::pending())
            } else {
                Either::Left(in_flight.next())
            };
            let next_emit_in_ms = shared.tracker.borrow().next_emit_in_ms(runtime.now_ms());
            let flush = match next_emit_in_ms {
                Some(ms) => Either::Left(runtime.sleep(ms)),
                // Bytes leaving make a report due.
                None => Either::Right(shared.pulse.wait()),
            };
            let resumed = if paused {
                Either::Left(control.running())
            } else {
                Either::Right(future::pending())
            };
            let granted = match acquiring.as_mut() {
                Some(acquire) => Either::Left(acquire),
                None => Either::Right(future::pending()),
            };
            let (read_next, acked, flush, resumed) =
                (pin!(read_next), pin!(acked), pin!(flush), pin!(resumed));
            let work = future::select(read_next, acked);
            let wake = future::select(future::select(flush, resumed), granted);
            match future::select(work, wake).await {
                Either::Left((Either::Left((read, _)), _)) => {
                    reading = false;
                    match read {
                        Some(Ok(Read::Slice(slice))) => {
                            if slice.index != next_index {
                                return Err(UploadError::protocol(
                                    "the source read slices out of order",
                                ));
                            }
                            next_index += 1;
                            match (&mut slices_digest, &slice.sha256) {
                                (Some(digest), Some(sha256)) => digest.push(sha256),
                                (Some(_), None) => {
                                    return Err(UploadError::protocol(format!(
                                        "the source gave slice {} without its digest",
                                        slice.index
                                    )))
                                }
                                (None, _) => {}
                            }
                            if already.contains(slice.index) {
                                // Read only for its digest: the server has it.
                                resumed_slices += 1;
                                shared.tracker.borrow_mut().already_held(slice.len);
                                events.slice(slice.index, SliceState::Done, 0);
                            } else {
                                ready = Some(slice);
                            }
                        }
                        Some(Ok(Read::End { size_bytes })) => {
                            let total =
                                Geometry::new(geometry.chunk_size_bytes(), Some(size_bytes))
                                    .ok()
                                    .and_then(|g| g.slice_count())
                                    .unwrap_or(0);
                            shared.tracker.borrow_mut().set_total(size_bytes, total);
                            end = Some(size_bytes);
                        }
                        Some(Err(e)) => return Err(e.into()),
                        None => {
                            return Err(UploadError::protocol(
                                "the source ended without reporting its size",
                            ))
                        }
                    }
                }
                Either::Left((Either::Right((acked, _)), _)) => match acked {
                    Some(Ok((index, len))) => {
                        shared
                            .tracker
                            .borrow_mut()
                            .acknowledged(runtime.now_ms(), index, len);
                        events.slice(index, SliceState::Done, 1);
                    }
                    Some(Err(e)) => return Err(e),
                    None => {}
                },
                Either::Right((Either::Right((granted, _)), _)) => {
                    acquiring = None;
                    slot = Some(granted);
                }
                Either::Right(_) => {}
            }
        }
        drop(in_flight);

        let size_bytes = end.ok_or_else(|| UploadError::protocol("no end of source"))?;
        let slices_sha256 = slices_digest.map(SlicesDigest::finish);
        let complete = Complete {
            size: Some(size_bytes),
            sha256: None,
            slices_sha256: slices_sha256.clone(),
        };
        // The server hashes the whole file before it answers: allow it 20 MB/s.
        let what = Request {
            what: "completing the upload",
            slice: None,
            progress: None,
            wait_offline: true,
            extra_timeout_ms: size_bytes as f64 / 20_000.0,
        };
        let completed = requests
            .run(what, |_| transport.complete(location_ref, &complete))
            .await?;
        if let Some(p) = shared.tracker.borrow_mut().force_emit(runtime.now_ms()) {
            events.progress(&p);
        }
        if completed.size != size_bytes {
            return Err(UploadError::protocol(format!(
                "the server stored {} bytes but {} were sent",
                completed.size, size_bytes
            )));
        }
        let slices_done = shared.tracker.borrow().current().slices_done;
        let verified = match (&slices_sha256, &completed.slices_sha256) {
            (Some(ours), Some(theirs)) if !theirs.eq_ignore_ascii_case(ours) => {
                return Err(UploadError {
                    code: ErrorCode::DigestMismatch,
                    status: None,
                    message: format!(
                        "the server's slices have digest {theirs} but the slices read here have {ours}"
                    ),
                });
            }
            (Some(_), Some(_)) => true,
            _ => false,
        };
        Ok(Outcome {
            id: completed.id,
            location: location.clone(),
            size_bytes,
            slices: slices_done,
            chunk_size_bytes: geometry.chunk_size_bytes(),
            resumed_slices,
            sha256: completed.sha256.unwrap_or_default(),
            verified,
        })
    }
}

#[cfg(test)]
mod tests;
