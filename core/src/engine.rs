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

use std::cell::Cell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;

use futures_util::future::{self, Either};
use futures_util::stream::{self, FuturesUnordered, StreamExt};

use crate::config::{DigestAlgorithm, Valid};
use crate::geometry::Geometry;
use crate::progress::{Progress, Tracker};
use crate::protocol::{self, Complete, Completed, CreateUpload, Created};
use crate::retry::{Decision, Failure, RetryPolicy};

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
        /// SHA-256 of every byte, in order, when digests are on.
        sha256: Option<[u8; 32]>,
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

/// The HTTP side of protocol v1.
pub trait Transport {
    /// What a slice's bytes travel as.
    type Body;
    /// `POST /uploads`.
    async fn create(&self, request: &CreateUpload) -> Result<CreatedUpload, TransportError>;
    /// `PUT {location}/slices/{index}`.
    async fn put_slice(
        &self,
        location: &str,
        slice: &SliceData<Self::Body>,
    ) -> Result<(), TransportError>;
    /// `POST {location}/complete`.
    async fn complete(
        &self,
        location: &str,
        request: &Complete,
    ) -> Result<Completed, TransportError>;
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
    /// The upload exists on the server.
    fn created(&self, _location: &str) {}
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
            Failure::Network => (ErrorCode::Network, None),
            Failure::Stalled => (ErrorCode::Stalled, None),
            Failure::Status { status, .. } if error.code.as_deref() == Some("digest_mismatch") => {
                (ErrorCode::DigestMismatch, Some(status))
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
    /// SHA-256 the server computed over the stored bytes (hex).
    pub sha256: String,
    /// SHA-256 the client computed while reading (hex), when digests are on.
    pub local_sha256: Option<String>,
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
}

impl<'a, B, S, T, R, E> Engine<'a, S, T, R, E>
where
    B: Clone,
    S: SliceSource<Body = B> + 'a,
    T: Transport<Body = B>,
    R: Runtime,
    E: Events,
{
    /// Creates the upload (with `metadata`, if any), sends every slice, and completes it.
    pub async fn run(
        self,
        metadata: Option<BTreeMap<String, String>>,
    ) -> Result<Outcome, UploadError> {
        let Engine {
            options,
            source,
            transport,
            runtime,
            events,
        } = self;
        let policy = RetryPolicy::with_retries(options.get().retries);
        let geometry = Geometry::new(options.get().chunk_size_bytes, source.size_bytes())
            .map_err(|e| UploadError::protocol(e.to_string()))?;
        let request = CreateUpload {
            chunk_size: geometry.chunk_size_bytes(),
            size: geometry.size_bytes(),
            metadata: metadata.filter(|m| !m.is_empty()),
        };
        let max_in_flight = options.get().max_in_flight as usize;
        let digests_on = options.get().digest == DigestAlgorithm::Sha256;

        let created = with_retries(runtime, &policy, "creating the upload", || {
            transport.create(&request)
        })
        .await?;
        let location = created.location.clone();
        events.created(&location);
        if created.created.chunk_size != geometry.chunk_size_bytes() {
            return Err(UploadError::protocol(format!(
                "the server answered with chunkSize {} instead of {}",
                created.created.chunk_size,
                geometry.chunk_size_bytes()
            )));
        }

        let mut tracker = Tracker::new(
            runtime.now_ms(),
            geometry.size_bytes(),
            geometry.slice_count(),
        );
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
        let mut end: Option<(u64, Option<[u8; 32]>)> = None;
        let location_ref = location.as_str();
        let policy_ref = &policy;

        loop {
            if in_flight.len() < max_in_flight {
                if let Some(slice) = ready.take() {
                    events.slice(slice.index, SliceState::Sending, 1);
                    in_flight.push(send_slice(
                        transport,
                        runtime,
                        policy_ref,
                        events,
                        location_ref,
                        slice,
                    ));
                }
            }
            tracker.set_in_flight(in_flight.len() as u32);
            if let Some(p) = tracker.poll_emit(runtime.now_ms()) {
                events.progress(&p);
            }
            let want_read = ready.is_none() && end.is_none();
            if !want_read && ready.is_none() && in_flight.is_empty() {
                break;
            }
            if want_read && !reading {
                reading = true;
                if geometry
                    .slice_count()
                    .is_none_or(|count| next_index < count)
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
            let flush = match tracker.next_emit_in_ms(runtime.now_ms()) {
                Some(ms) => Either::Left(runtime.sleep(ms)),
                None => Either::Right(future::pending()),
            };
            match future::select(future::select(pin!(read_next), pin!(acked)), pin!(flush)).await {
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
                            ready = Some(slice);
                        }
                        Some(Ok(Read::End { size_bytes, sha256 })) => {
                            let total =
                                Geometry::new(geometry.chunk_size_bytes(), Some(size_bytes))
                                    .ok()
                                    .and_then(|g| g.slice_count())
                                    .unwrap_or(0);
                            tracker.set_total(size_bytes, total);
                            end = Some((size_bytes, sha256));
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
                        tracker.acknowledged(runtime.now_ms(), len);
                        events.slice(index, SliceState::Done, 1);
                    }
                    Some(Err(e)) => return Err(e),
                    None => {}
                },
                Either::Right(_) => {}
            }
        }

        let (size_bytes, local_sha) =
            end.ok_or_else(|| UploadError::protocol("no end of source"))?;
        let local_sha256 = local_sha.filter(|_| digests_on).map(|d| protocol::hex(&d));
        let complete = Complete {
            size: Some(size_bytes),
            sha256: local_sha256.clone(),
        };
        let completed = with_retries(runtime, &policy, "completing the upload", || {
            transport.complete(location_ref, &complete)
        })
        .await?;
        if let Some(p) = tracker.force_emit(runtime.now_ms()) {
            events.progress(&p);
        }
        if completed.size != size_bytes {
            return Err(UploadError::protocol(format!(
                "the server stored {} bytes but {} were sent",
                completed.size, size_bytes
            )));
        }
        if let Some(local) = &local_sha256 {
            if !completed.sha256.eq_ignore_ascii_case(local) {
                return Err(UploadError {
                    code: ErrorCode::DigestMismatch,
                    status: None,
                    message: format!(
                        "the server stored SHA-256 {} but the file has {local}",
                        completed.sha256
                    ),
                });
            }
        }
        drop(in_flight);
        Ok(Outcome {
            id: completed.id,
            location: location.clone(),
            size_bytes,
            slices: tracker.current().slices_done,
            sha256: completed.sha256,
            local_sha256,
        })
    }
}

async fn send_slice<B, T: Transport<Body = B>, R: Runtime, E: Events>(
    transport: &T,
    runtime: &R,
    policy: &RetryPolicy,
    events: &E,
    location: &str,
    slice: SliceData<B>,
) -> Result<(u64, u64), UploadError> {
    let attempt = Cell::new(1u32);
    let what = format!("sending slice {}", slice.index);
    with_retries_observed(
        runtime,
        policy,
        &what,
        &attempt,
        events,
        slice.index,
        || transport.put_slice(location, &slice),
    )
    .await?;
    Ok((slice.index, slice.len))
}

async fn with_retries<R: Runtime, Fut: Future<Output = Result<O, TransportError>>, O>(
    runtime: &R,
    policy: &RetryPolicy,
    what: &str,
    attempt: impl FnMut() -> Fut,
) -> Result<O, UploadError> {
    with_retries_observed(runtime, policy, what, &Cell::new(1), &(), u64::MAX, attempt).await
}

async fn with_retries_observed<
    R: Runtime,
    E: Events,
    Fut: Future<Output = Result<O, TransportError>>,
    O,
>(
    runtime: &R,
    policy: &RetryPolicy,
    what: &str,
    attempt: &Cell<u32>,
    events: &E,
    index: u64,
    mut request: impl FnMut() -> Fut,
) -> Result<O, UploadError> {
    loop {
        match request().await {
            Ok(value) => return Ok(value),
            Err(error) => match policy.decide(attempt.get(), &error.failure, runtime.random()) {
                Decision::GiveUp => return Err(UploadError::from_transport(error, what)),
                Decision::RetryAfterMs(ms) => {
                    events.slice(index, SliceState::Retrying, attempt.get());
                    runtime.sleep(ms).await;
                    attempt.set(attempt.get() + 1);
                    events.slice(index, SliceState::Sending, attempt.get());
                }
            },
        }
    }
}

#[cfg(test)]
mod tests;
