//! The engine driven by a fake transport and source: no network, no clock.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};

use super::*;
use crate::config::Options;
use crate::protocol;

/// Pends `n` times, waking itself each time, so other futures get to run in between.
struct YieldTimes(u32);

impl Future for YieldTimes {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 == 0 {
            return Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

struct FakeRuntime {
    now_ms: Cell<f64>,
    slept_ms: RefCell<Vec<f64>>,
}

impl FakeRuntime {
    fn new() -> Self {
        Self {
            now_ms: Cell::new(0.0),
            slept_ms: RefCell::new(Vec::new()),
        }
    }
}

impl Runtime for FakeRuntime {
    fn now_ms(&self) -> f64 {
        self.now_ms.set(self.now_ms.get() + 1.0);
        self.now_ms.get()
    }
    async fn sleep(&self, ms: f64) {
        self.slept_ms.borrow_mut().push(ms);
        // Longer sleeps let more of everything else run: one turn per 10 ms.
        YieldTimes((ms / 10.0).ceil() as u32 + 1).await;
        self.now_ms.set(self.now_ms.get() + ms);
    }
    fn random(&self) -> f64 {
        0.5
    }
}

/// Reads a byte vector in fixed slices, like the browser's Blob source.
struct VecSource {
    bytes: Vec<u8>,
    chunk: u64,
    next: u64,
    announce_size: bool,
    live_bodies: std::rc::Rc<Cell<usize>>,
    max_live_bodies: std::rc::Rc<Cell<usize>>,
}

/// A slice body that counts how many exist at once.
struct Body {
    bytes: Vec<u8>,
    live: std::rc::Rc<Cell<usize>>,
}

impl Clone for Body {
    fn clone(&self) -> Self {
        self.live.set(self.live.get() + 1);
        Body {
            bytes: self.bytes.clone(),
            live: self.live.clone(),
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.live.set(self.live.get() - 1);
    }
}

impl VecSource {
    fn new(bytes: Vec<u8>, chunk: u64) -> Self {
        Self {
            bytes,
            chunk,
            next: 0,
            announce_size: true,
            live_bodies: Default::default(),
            max_live_bodies: Default::default(),
        }
    }
}

impl SliceSource for VecSource {
    type Body = std::rc::Rc<Body>;
    fn size_bytes(&self) -> Option<u64> {
        self.announce_size.then_some(self.bytes.len() as u64)
    }
    fn chunk_size_bytes(&self) -> u64 {
        self.chunk
    }
    fn set_chunk_size(&mut self, chunk_size_bytes: u64) {
        assert_eq!(self.next, 0, "set_chunk_size after reading");
        self.chunk = chunk_size_bytes;
    }
    async fn next(&mut self) -> Result<Read<Self::Body>, SourceError> {
        YieldTimes(2).await;
        let start = self.next * self.chunk;
        if start >= self.bytes.len() as u64 {
            return Ok(Read::End {
                size_bytes: self.bytes.len() as u64,
            });
        }
        let end = (start + self.chunk).min(self.bytes.len() as u64);
        let bytes = self.bytes[start as usize..end as usize].to_vec();
        let index = self.next;
        self.next += 1;
        self.live_bodies.set(self.live_bodies.get() + 1);
        self.max_live_bodies
            .set(self.max_live_bodies.get().max(self.live_bodies.get()));
        let sha256 = Some(Sha256::digest(&bytes).into());
        Ok(Read::Slice(SliceData {
            index,
            len: bytes.len() as u64,
            body: std::rc::Rc::new(Body {
                bytes,
                live: self.live_bodies.clone(),
            }),
            sha256,
        }))
    }
}

/// An in-memory server: stores slices at their offsets, checks digests, can fail on cue.
#[derive(Default)]
struct FakeServer {
    chunk: Cell<u64>,
    /// The slice size create answers with, instead of the one asked for.
    chooses_chunk: Cell<Option<u64>>,
    stored: RefCell<BTreeMap<u64, Vec<u8>>>,
    in_flight: Cell<usize>,
    max_in_flight: Cell<usize>,
    puts: Cell<usize>,
    /// index -> failures still to inject, with the status to answer.
    failures: RefCell<HashMap<u64, (u32, Failure)>>,
    deleted: Cell<bool>,
    metadata: RefCell<Option<BTreeMap<String, String>>>,
    /// Slices whose first attempt never answers.
    hang_once: RefCell<Vec<u64>>,
    /// Slices whose first attempt sends every byte, then never answers.
    silent_once: RefCell<Vec<u64>>,
    /// Index of each PUT, in the order they started.
    started: RefCell<Vec<u64>>,
    /// Slice requests in flight across servers: (now, most at once).
    shared: Option<Rc<(Cell<usize>, Cell<usize>)>>,
}

fn fail(failure: Failure) -> TransportError {
    TransportError {
        failure,
        code: Some("injected".into()),
        message: "injected failure".into(),
    }
}

impl Transport for FakeServer {
    type Body = std::rc::Rc<Body>;
    async fn create(&self, request: &CreateUpload) -> Result<CreatedUpload, TransportError> {
        let chunk = self.chooses_chunk.get().unwrap_or(request.chunk_size);
        self.chunk.set(chunk);
        *self.metadata.borrow_mut() = request.metadata.clone();
        Ok(CreatedUpload {
            location: "http://test/uploads/abc".into(),
            created: Created {
                id: "abc".into(),
                chunk_size: chunk,
                size: request.size,
                protocol: protocol::VERSION,
                transfer: protocol::Transfer::Server,
            },
        })
    }
    async fn put_slice(
        &self,
        location: &str,
        slice: &SliceData<Self::Body>,
        sent: SentBytes<'_>,
    ) -> Result<(), TransportError> {
        assert_eq!(location, "http://test/uploads/abc");
        self.puts.set(self.puts.get() + 1);
        self.started.borrow_mut().push(slice.index);
        let hang = {
            let mut hang_once = self.hang_once.borrow_mut();
            let found = hang_once.iter().position(|&i| i == slice.index);
            found.map(|at| hang_once.remove(at)).is_some()
        };
        if hang {
            futures_util::future::pending::<()>().await;
        }
        let silent = {
            let mut silent_once = self.silent_once.borrow_mut();
            let found = silent_once.iter().position(|&i| i == slice.index);
            found.map(|at| silent_once.remove(at)).is_some()
        };
        if silent {
            // Its first byte leaves after the stall watch has started waiting for it.
            YieldTimes(2).await;
            sent(slice.len / 2);
            YieldTimes(2).await;
            sent(slice.len);
            futures_util::future::pending::<()>().await;
        }
        self.in_flight.set(self.in_flight.get() + 1);
        self.max_in_flight
            .set(self.max_in_flight.get().max(self.in_flight.get()));
        if let Some((now, most)) = self.shared.as_deref() {
            now.set(now.get() + 1);
            most.set(most.get().max(now.get()));
        }
        // Later slices finish sooner, so acknowledgements arrive out of order; half of the
        // body leaves first, the rest just before the answer.
        sent(0);
        YieldTimes(2).await;
        sent(slice.len / 2);
        YieldTimes(1 + (7 - (slice.index % 7) as u32) * 2).await;
        sent(slice.len);
        self.in_flight.set(self.in_flight.get() - 1);
        if let Some((now, _)) = self.shared.as_deref() {
            now.set(now.get() - 1);
        }
        if let Some((left, failure)) = self.failures.borrow_mut().get_mut(&slice.index) {
            if *left > 0 {
                *left -= 1;
                return Err(fail(*failure));
            }
        }
        assert_eq!(slice.body.bytes.len() as u64, slice.len);
        let digest: [u8; 32] = Sha256::digest(&slice.body.bytes).into();
        if slice.sha256.is_some_and(|d| d != digest) {
            return Err(TransportError {
                failure: Failure::Status {
                    status: 400,
                    retry_after_ms: None,
                },
                code: Some("digest_mismatch".into()),
                message: "digest mismatch".into(),
            });
        }
        self.stored
            .borrow_mut()
            .insert(slice.index * self.chunk.get(), slice.body.bytes.clone());
        Ok(())
    }
    async fn complete(
        &self,
        _location: &str,
        request: &Complete,
    ) -> Result<Completed, TransportError> {
        let bytes = self.assembled();
        assert_eq!(Some(bytes.len() as u64), request.size);
        let mut slices = SlicesDigest::new();
        for stored in self.stored.borrow().values() {
            slices.push(&Sha256::digest(stored).into());
        }
        let slices_sha256 = slices.finish();
        if request
            .slices_sha256
            .as_ref()
            .is_some_and(|theirs| *theirs != slices_sha256)
        {
            return Err(TransportError {
                failure: Failure::Status {
                    status: 400,
                    retry_after_ms: None,
                },
                code: Some("digest_mismatch".into()),
                message: "the slices differ".into(),
            });
        }
        Ok(Completed {
            id: "abc".into(),
            size: bytes.len() as u64,
            sha256: Some(protocol::hex(&Sha256::digest(&bytes))),
            slices_sha256: Some(slices_sha256),
        })
    }
    async fn status(&self, _location: &str) -> Result<Status, TransportError> {
        let stored = self.stored.borrow();
        let chunk = self.chunk.get();
        Ok(Status {
            id: "abc".into(),
            chunk_size: chunk,
            size: None,
            received: stored
                .keys()
                .map(|&offset| [offset / chunk, offset / chunk + 1])
                .collect(),
            bytes_received: stored.values().map(|b| b.len() as u64).sum(),
            complete: false,
            protocol: protocol::VERSION,
            transfer: protocol::Transfer::Server,
            metadata: BTreeMap::new(),
        })
    }
    async fn delete(&self, _location: &str) -> Result<(), TransportError> {
        self.deleted.set(true);
        Ok(())
    }
}

impl FakeServer {
    fn assembled(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (offset, bytes) in self.stored.borrow().iter() {
            assert_eq!(*offset, out.len() as u64, "hole or overlap at {offset}");
            out.extend_from_slice(bytes);
        }
        out
    }
}

#[derive(Default)]
struct Recorder {
    progress: RefCell<Vec<Progress>>,
    states: RefCell<Vec<(u64, SliceState, u32)>>,
}

impl Events for Recorder {
    fn progress(&self, progress: &Progress) {
        self.progress.borrow_mut().push(progress.clone());
    }
    fn slice(&self, index: u64, state: SliceState, attempt: u32) {
        self.states.borrow_mut().push((index, state, attempt));
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

fn options(chunk: u64, max_in_flight: u32) -> Valid {
    Options {
        chunk_size_bytes: chunk,
        max_in_flight,
        ..Options::default()
    }
    .validate()
    .unwrap()
}

fn upload(
    bytes: Vec<u8>,
    chunk: u64,
    max_in_flight: u32,
    server: &FakeServer,
) -> (Result<Outcome, UploadError>, Recorder) {
    let options = options(chunk, max_in_flight);
    let runtime = FakeRuntime::new();
    let events = Recorder::default();
    let source = VecSource::new(bytes, chunk);
    let max_live = source.max_live_bodies.clone();
    let engine = Engine {
        options: &options,
        source,
        transport: server,
        runtime: &runtime,
        events: &events,
        control: &Control::default(),
    };
    let result = futures_executor::block_on(engine.run(Start::New(None)));
    assert!(
        max_live.get() <= max_in_flight as usize + 1,
        "{} slice bodies alive at once with maxInFlight {max_in_flight}",
        max_live.get()
    );
    (result, events)
}

/// Resumes the upload at the fake server's one location, 2 slices in flight.
fn resume(bytes: Vec<u8>, chunk: u64, server: &FakeServer) -> Result<Outcome, UploadError> {
    let options = options(chunk, 2);
    let runtime = FakeRuntime::new();
    let engine = Engine {
        options: &options,
        source: VecSource::new(bytes, chunk),
        transport: server,
        runtime: &runtime,
        events: &(),
        control: &Control::default(),
    };
    futures_executor::block_on(engine.run(Start::Resume("http://test/uploads/abc".into())))
}

const CHUNK: u64 = 256 * 1024;

#[test]
fn every_boundary_size_arrives_byte_identical() {
    let c = CHUNK as usize;
    for len in [0, 1, c - 1, c, c + 1, 3 * c, 3 * c + 1, 10 * c + 12345] {
        let server = FakeServer::default();
        let bytes = pattern(len);
        let (result, events) = upload(bytes.clone(), CHUNK, 3, &server);
        let outcome = result.unwrap_or_else(|e| panic!("len {len}: {e}"));
        assert_eq!(server.assembled(), bytes, "len {len}");
        assert_eq!(outcome.size_bytes, len as u64);
        assert_eq!(outcome.slices, (len as u64).div_ceil(CHUNK));
        assert_eq!(outcome.sha256, protocol::hex(&Sha256::digest(&bytes)));
        assert!(outcome.verified);
        let last = events.progress.borrow().last().cloned().unwrap();
        assert_eq!(last.bytes_sent, len as u64);
        assert_eq!(last.slices_done, outcome.slices);
    }
}

#[test]
fn the_server_may_choose_larger_slices() {
    let bytes = pattern(5 * CHUNK as usize + 7);
    let server = FakeServer::default();
    server.chooses_chunk.set(Some(2 * CHUNK));
    let outcome = upload(bytes.clone(), CHUNK, 2, &server).0.unwrap();
    assert_eq!(server.assembled(), bytes);
    assert_eq!(outcome.chunk_size_bytes, 2 * CHUNK);
    assert_eq!(outcome.slices, 3);

    let server = FakeServer::default();
    server.chooses_chunk.set(Some(1000));
    let error = upload(bytes, CHUNK, 2, &server).0.unwrap_err();
    assert_eq!(error.code, ErrorCode::Protocol);
    assert!(
        error.message.contains("chunkSize 1000"),
        "{}",
        error.message
    );
}

#[test]
fn in_flight_never_exceeds_the_bound_and_reaches_it() {
    for max in [1, 2, 4, 8] {
        let server = FakeServer::default();
        let (result, _) = upload(pattern(20 * CHUNK as usize), CHUNK, max, &server);
        result.unwrap();
        assert_eq!(
            server.max_in_flight.get(),
            max as usize,
            "maxInFlight {max}"
        );
        assert_eq!(server.puts.get(), 20);
    }
}

#[test]
fn retryable_failures_are_retried_with_backoff() {
    let server = FakeServer::default();
    server.failures.borrow_mut().insert(
        2,
        (
            2,
            Failure::Status {
                status: 503,
                retry_after_ms: None,
            },
        ),
    );
    server
        .failures
        .borrow_mut()
        .insert(5, (1, Failure::Network));
    let bytes = pattern(8 * CHUNK as usize);
    let (result, events) = upload(bytes.clone(), CHUNK, 4, &server);
    result.unwrap();
    assert_eq!(server.assembled(), bytes);
    assert_eq!(server.puts.get(), 8 + 3);
    let retried: Vec<_> = events
        .states
        .borrow()
        .iter()
        .filter(|s| s.1 == SliceState::Retrying)
        .cloned()
        .collect();
    assert_eq!(retried.len(), 3);
    assert!(retried.contains(&(2, SliceState::Retrying, 2)));
}

#[test]
fn client_errors_fail_at_once_with_the_server_message() {
    let server = FakeServer::default();
    server.failures.borrow_mut().insert(
        1,
        (
            1,
            Failure::Status {
                status: 409,
                retry_after_ms: None,
            },
        ),
    );
    let (result, _) = upload(pattern(4 * CHUNK as usize), CHUNK, 2, &server);
    let err = result.unwrap_err();
    assert_eq!(err.code, ErrorCode::HttpStatus);
    assert_eq!(err.status, Some(409));
    assert_eq!(err.message, "sending slice 1: injected failure");
}

#[test]
fn retry_budget_runs_out() {
    let server = FakeServer::default();
    server.failures.borrow_mut().insert(
        0,
        (
            100,
            Failure::Status {
                status: 502,
                retry_after_ms: None,
            },
        ),
    );
    let (result, _) = upload(pattern(2 * CHUNK as usize), CHUNK, 2, &server);
    let err = result.unwrap_err();
    assert_eq!(err.code, ErrorCode::HttpStatus);
    assert_eq!(err.status, Some(502));
    assert_eq!(
        server.puts.get() - 1,
        5 + 1,
        "first attempt + 5 retries of slice 0, plus slice 1 once"
    );
}

#[test]
fn network_errors_are_waited_out_and_do_not_spend_the_budget() {
    let server = FakeServer::default();
    // 30 network failures in a row: far past the 5 retries, well within 10 minutes.
    server
        .failures
        .borrow_mut()
        .insert(1, (30, Failure::Network));
    let bytes = pattern(3 * CHUNK as usize);
    let (result, _) = upload(bytes.clone(), CHUNK, 2, &server);
    result.unwrap();
    assert_eq!(server.assembled(), bytes);

    // Offline for good: fails once the offline timeout has passed.
    let server = FakeServer::default();
    server
        .failures
        .borrow_mut()
        .insert(0, (u32::MAX, Failure::Network));
    let (result, _) = upload(pattern(CHUNK as usize), CHUNK, 1, &server);
    let err = result.unwrap_err();
    assert_eq!(err.code, ErrorCode::Network);
    assert!(server.puts.get() > 30, "{} attempts", server.puts.get());
}

#[test]
fn a_stalled_request_is_aborted_and_retried() {
    let server = FakeServer::default();
    server.hang_once.borrow_mut().extend([1, 3]);
    let bytes = pattern(5 * CHUNK as usize);
    let (result, events) = upload(bytes.clone(), CHUNK, 2, &server);
    result.unwrap();
    assert_eq!(server.assembled(), bytes);
    assert_eq!(server.puts.get(), 7);
    let mut retried: Vec<u64> = events
        .states
        .borrow()
        .iter()
        .filter(|s| s.1 == SliceState::Retrying)
        .map(|s| s.0)
        .collect();
    retried.sort_unstable();
    assert_eq!(retried, vec![1, 3]);
}

#[test]
fn a_request_that_sent_every_byte_and_hears_nothing_stalls_one_limit_after_its_last_byte() {
    // Not after the longer wait a request gets for its first byte (4x): a tus server whose
    // connection froze after taking the body kept an upload waiting 120 s instead of 30 s.
    let server = FakeServer::default();
    server.silent_once.borrow_mut().push(0);
    let bytes = pattern(2 * CHUNK as usize);
    let options = options(CHUNK, 1);
    let runtime = FakeRuntime::new();
    let engine = Engine {
        options: &options,
        source: VecSource::new(bytes.clone(), CHUNK),
        transport: &server,
        runtime: &runtime,
        events: &(),
        control: &Control::default(),
    };
    futures_executor::block_on(engine.run(Start::New(None))).unwrap();
    assert_eq!(server.assembled(), bytes);
    assert_eq!(server.puts.get(), 3);
    let stall_ms = Options::default().stall_timeout_ms as f64;
    let elapsed_ms = runtime.now_ms.get();
    assert!(
        elapsed_ms > stall_ms && elapsed_ms < 1.5 * stall_ms,
        "the upload took {elapsed_ms} ms with a stall limit of {stall_ms} ms"
    );
}

#[test]
fn no_request_starts_while_paused() {
    let server = FakeServer::default();
    let options = options(CHUNK, 3);
    let runtime = FakeRuntime::new();
    let control = Control::default();
    let bytes = pattern(12 * CHUNK as usize);
    let engine = Engine {
        options: &options,
        source: VecSource::new(bytes.clone(), CHUNK),
        transport: &server,
        runtime: &runtime,
        events: &(),
        control: &control,
    };
    let driver = async {
        while server.puts.get() < 4 {
            YieldTimes(1).await;
        }
        control.pause();
        let at_pause = server.puts.get();
        YieldTimes(2000).await;
        assert_eq!(
            server.puts.get(),
            at_pause,
            "a request started while paused"
        );
        assert_eq!(
            server.in_flight.get(),
            0,
            "in-flight requests finish while paused"
        );
        control.resume();
    };
    let (result, ()) = futures_executor::block_on(futures_util::future::join(
        engine.run(Start::New(None)),
        driver,
    ));
    result.unwrap();
    assert!(!control.is_paused());
    assert_eq!(server.assembled(), bytes);
    assert_eq!(server.puts.get(), 12);
}

#[test]
fn resume_sends_only_the_missing_slices_and_checks_every_slice() {
    let bytes = pattern(6 * CHUNK as usize + 10);
    let server = FakeServer::default();
    server.chunk.set(CHUNK);
    for i in [0u64, 2, 3] {
        let range = (i * CHUNK) as usize..((i + 1) * CHUNK) as usize;
        server
            .stored
            .borrow_mut()
            .insert(i * CHUNK, bytes[range].to_vec());
    }
    // Asked with another chunk size: the server's slicing wins.
    let outcome = resume(bytes.clone(), 2 * CHUNK, &server).unwrap();
    assert_eq!(server.assembled(), bytes);
    assert_eq!(server.puts.get(), 4, "slices 1, 4, 5 and 6");
    assert_eq!(outcome.resumed_slices, 3);
    assert_eq!(outcome.slices, 7);
    assert!(outcome.verified);
}

#[test]
fn resuming_onto_slices_of_a_changed_file_fails_with_digest_mismatch() {
    let bytes = pattern(4 * CHUNK as usize);
    let server = FakeServer::default();
    server.chunk.set(CHUNK);
    // The server holds slice 1 of an earlier version of the file: same size, other bytes.
    let mut earlier = bytes[CHUNK as usize..2 * CHUNK as usize].to_vec();
    earlier[7] ^= 0xff;
    server.stored.borrow_mut().insert(CHUNK, earlier);
    let error = resume(bytes, CHUNK, &server).unwrap_err();
    assert_eq!(error.code, ErrorCode::DigestMismatch, "{error:?}");
    assert_eq!(server.puts.get(), 3, "slice 1 counted as held, not re-sent");
}

#[test]
fn progress_is_monotonic_and_throttled() {
    let server = FakeServer::default();
    let (result, events) = upload(pattern(30 * CHUNK as usize), CHUNK, 4, &server);
    result.unwrap();
    let progress = events.progress.borrow();
    assert!(progress
        .windows(2)
        .all(|w| w[0].bytes_sent <= w[1].bytes_sent
            && w[0].bytes_acknowledged <= w[1].bytes_acknowledged));
    assert!(progress.iter().all(|p| p.in_flight <= 4));
    assert!(progress
        .iter()
        .all(|p| p.bytes_acknowledged <= p.bytes_sent));
    let last = progress.last().unwrap();
    assert_eq!(last.bytes_total, Some(30 * CHUNK));
    assert_eq!(
        (last.bytes_sent, last.bytes_acknowledged),
        (30 * CHUNK, 30 * CHUNK)
    );
}

#[test]
fn bytes_count_as_they_leave_before_any_slice_is_acknowledged() {
    let server = FakeServer::default();
    let (result, events) = upload(pattern(8 * CHUNK as usize), CHUNK, 4, &server);
    result.unwrap();
    let progress = events.progress.borrow();
    assert!(
        progress
            .iter()
            .any(|p| p.slices_done == 0 && p.bytes_sent > 0 && p.bytes_per_second > 0.0),
        "no report showed bytes leaving before the first acknowledgement"
    );
}

#[test]
fn a_failed_attempt_takes_its_bytes_off_the_bar() {
    let server = FakeServer::default();
    server.failures.borrow_mut().insert(
        1,
        (
            1,
            Failure::Status {
                status: 503,
                retry_after_ms: None,
            },
        ),
    );
    let bytes = pattern(3 * CHUNK as usize);
    let (result, events) = upload(bytes.clone(), CHUNK, 1, &server);
    result.unwrap();
    assert_eq!(server.assembled(), bytes);
    let progress = events.progress.borrow();
    assert!(progress.iter().all(|p| p.bytes_sent <= 3 * CHUNK));
    // Slice 0 is acknowledged and part of slice 1 sent, then slice 1's answer is a 503.
    let dropped = progress
        .windows(2)
        .any(|w| w[0].bytes_sent > CHUNK && w[1].bytes_sent == CHUNK && w[1].slices_done == 1);
    assert!(
        dropped,
        "{:?}",
        progress.iter().map(|p| p.bytes_sent).collect::<Vec<_>>()
    );
}

#[test]
fn unknown_size_is_fixed_at_the_end_and_metadata_is_sent() {
    let server = FakeServer::default();
    let options = options(CHUNK, 4);
    let runtime = FakeRuntime::new();
    let bytes = pattern(5 * CHUNK as usize + 3);
    let mut source = VecSource::new(bytes.clone(), CHUNK);
    source.announce_size = false;
    let engine = Engine {
        options: &options,
        source,
        transport: &server,
        runtime: &runtime,
        events: &(),
        control: &Control::default(),
    };
    let metadata = BTreeMap::from([("name".to_string(), "a.bin".to_string())]);
    let outcome =
        futures_executor::block_on(engine.run(Start::New(Some(metadata.clone())))).unwrap();
    assert_eq!(outcome.size_bytes, bytes.len() as u64);
    assert_eq!(server.assembled(), bytes);
    assert_eq!(server.metadata.borrow().as_ref(), Some(&metadata));
}

#[test]
fn the_first_slice_request_goes_alone_until_its_bytes_move() {
    let server = FakeServer::default();
    // Slice 0's first attempt never sends a byte: nothing else may start meanwhile.
    server.hang_once.borrow_mut().push(0);
    let bytes = pattern(6 * CHUNK as usize);
    let (result, _) = upload(bytes.clone(), CHUNK, 4, &server);
    result.unwrap();
    assert_eq!(server.assembled(), bytes);
    let started = server.started.borrow();
    assert_eq!(&started[..2], &[0, 0], "{started:?}");
    assert_eq!(server.max_in_flight.get(), 4);
}

#[test]
fn uploads_sharing_slots_stay_under_one_limit_and_a_small_file_is_not_starved() {
    let counter = Rc::new((Cell::new(0), Cell::new(0)));
    let servers = [FakeServer::default(), FakeServer::default()].map(|mut s| {
        s.shared = Some(counter.clone());
        s
    });
    let slots = Slots::new(3);
    let big = pattern(40 * CHUNK as usize);
    let small = pattern(2 * CHUNK as usize + 7);
    let options = options(CHUNK, 4);
    let runtime = FakeRuntime::new();
    let finished = RefCell::new(Vec::new());
    let run = |bytes: &Vec<u8>, server, name: &'static str| {
        let (options, runtime, finished, slots) = (&options, &runtime, &finished, &slots);
        let bytes = bytes.clone();
        async move {
            let control = Control::with_slots(slots.clone());
            let engine = Engine {
                options,
                source: VecSource::new(bytes, CHUNK),
                transport: server,
                runtime,
                events: &(),
                control: &control,
            };
            let outcome = engine.run(Start::New(None)).await;
            finished.borrow_mut().push(name);
            outcome
        }
    };
    let (a, b) = futures_executor::block_on(futures_util::future::join(
        run(&big, &servers[0], "big"),
        run(&small, &servers[1], "small"),
    ));
    a.unwrap();
    b.unwrap();
    assert_eq!(servers[0].assembled(), big);
    assert_eq!(servers[1].assembled(), small);
    assert_eq!(
        counter.1.get(),
        3,
        "the shared limit is reached and never passed"
    );
    assert!(servers[0].max_in_flight.get() <= 3);
    assert_eq!(
        *finished.borrow(),
        ["small", "big"],
        "the small file waited behind the big one"
    );
    assert_eq!(slots.in_use(), 0, "every slot is given back");
}
