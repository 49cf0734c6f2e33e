//! Durable upload state on disk.
//!
//! Layout under the data directory (every name chosen by the server):
//! - `uploads/{id}/meta.json`: chunk size, size (once known), metadata.
//! - `uploads/{id}/data`: the bytes, written at their offsets (sparse until filled).
//! - `uploads/{id}/journal`: one record per received slice ([`journal`]), appended only
//!   after the slice's bytes were flushed with `fdatasync`. A record torn by a crash is
//!   ignored, so a slice is reported as received only if its bytes are on disk.
//! - `uploads/{id}/completed.json`: written once the whole-file digest is known; the move
//!   below is then redone after a crash.
//! - `files/{id}` and `files/{id}.json`: completed uploads.

mod backend;
pub mod journal;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chunkwise_core::geometry::Geometry;
use chunkwise_core::protocol::{self, Completed, SlicesDigest, Status};
use chunkwise_core::ranges::IndexSet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::error::{ErrorKind, StoreError};
use crate::store::{is_valid_id, new_id, UploadInfo};

/// Free bytes an unprivileged user may fill on the file system holding `path` (a create
/// larger than that is refused; the metrics show it for `--data-dir`).
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Server-wide limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest upload.
    pub max_upload_size_bytes: u64,
    /// Largest slice.
    pub max_chunk_size_bytes: u64,
    /// Incomplete uploads untouched for this long are removed.
    pub expire_after: Duration,
    /// Unfinished uploads kept at once; past it, creates are refused (`503`).
    pub max_unfinished_uploads: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_upload_size_bytes: 64 << 30,
            max_chunk_size_bytes: 256 << 20,
            expire_after: Duration::from_secs(24 * 3600),
            max_unfinished_uploads: 10_000,
        }
    }
}

/// What `meta.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    chunk_size: u64,
    size: Option<u64>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// What `files/{id}.json` and `uploads/{id}/completed.json` hold.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FinalMeta {
    id: String,
    chunk_size: u64,
    size: u64,
    sha256: String,
    #[serde(default)]
    slices_sha256: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

impl FinalMeta {
    /// What `complete` answered for it.
    fn completion(&self) -> Completed {
        Completed {
            id: self.id.clone(),
            size: self.size,
            sha256: Some(self.sha256.clone()),
            slices_sha256: self.slices_sha256.clone(),
        }
    }
}

/// Mutable state of one upload, behind its lock.
#[derive(Debug)]
struct State {
    size: Option<u64>,
    received: IndexSet,
    bytes_received: u64,
    /// A received slice shorter than the chunk size: the last one.
    short_tail: Option<(u64, u64)>,
    journal_len: u64,
    /// Length and SHA-256 (when it came with `Content-Digest`) of every received slice.
    slices: HashMap<u64, (u64, Option<[u8; 32]>)>,
    completed: Option<Completed>,
}

/// The whole-file SHA-256 and the [`SlicesDigest`], computed in the background over the
/// received slices from the start of the file up to the first gap, so that `complete`
/// has little or nothing left to hash. Not persisted: after a restart it starts over.
#[derive(Debug, Default)]
struct Frontier {
    file: Sha256,
    slices: SlicesDigest,
    /// The first slice not hashed yet.
    next: u64,
}

/// Slices hashed per blocking task in the background.
const FRONTIER_BATCH: usize = 16;

/// One upload.
#[derive(Debug)]
pub struct Upload {
    id: String,
    dir: PathBuf,
    chunk_size: u64,
    metadata: BTreeMap<String, String>,
    state: tokio::sync::Mutex<State>,
    /// Locked before `state` whenever both are held.
    frontier: Arc<tokio::sync::Mutex<Frontier>>,
    /// Slices being written, each with its writer's lock and turn.
    slice_slots: Mutex<HashMap<u64, SliceSlot>>,
    /// `complete` calls under way: while any is, slices are refused.
    completing: AtomicU64,
    last_activity_ms: AtomicU64,
    deleted: AtomicBool,
}

/// One slice's writers: the lock the one writing holds, and a turn counter each new
/// attempt bumps, which tells the attempt before it (writing, or waiting for the lock) to
/// give up. A connection that died without a word never holds a slice against its retry.
#[derive(Debug)]
struct SliceSlot {
    lock: Arc<tokio::sync::Mutex<()>>,
    turn: tokio::sync::watch::Sender<u64>,
}

/// One attempt's claim on a slice (see [`Upload::claim_slice`]).
#[derive(Debug)]
pub struct SliceClaim {
    index: u64,
    lock: Arc<tokio::sync::Mutex<()>>,
    turn: tokio::sync::watch::Receiver<u64>,
}

impl SliceClaim {
    /// Resolves when a newer attempt at the same slice (or `complete`) took over.
    pub async fn superseded(&mut self) {
        if self.turn.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Waits for the attempt before this one to let go of the slice; fails if this one
    /// is superseded first.
    pub async fn acquire(&mut self) -> Result<tokio::sync::OwnedMutexGuard<()>, StoreError> {
        let lock = self.lock.clone();
        tokio::select! {
            biased;
            () = self.superseded() => Err(superseded(self.index)),
            guard = lock.lock_owned() => Ok(guard),
        }
    }

    /// The slice's index.
    pub fn index(&self) -> u64 {
        self.index
    }
}

/// The answer to an attempt a newer one took over from (its client had given up on it).
pub fn superseded(index: u64) -> StoreError {
    StoreError::conflict(
        "slice_superseded",
        format!("a newer request for slice {index} took over from this one"),
    )
}

/// Counts a `complete` under way until dropped.
struct Completing<'a>(&'a AtomicU64);

impl Drop for Completing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// All uploads: the unfinished ones in memory, the completed ones on disk (read when asked
/// for, so that memory does not grow with the number of completed uploads).
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    limits: Limits,
    uploads: Mutex<HashMap<String, Arc<Upload>>>,
    /// Uploads created (or reloaded) and not yet completed, deleted or expired.
    unfinished: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The received slices from `from` up to the first gap, at most `limit` of them.
fn contiguous(
    state: &State,
    from: u64,
    end: u64,
    limit: usize,
) -> Vec<(u64, u64, Option<[u8; 32]>)> {
    (from..end)
        .map_while(|index| {
            state
                .slices
                .get(&index)
                .map(|&(len, sha)| (index, len, sha))
        })
        .take(limit)
        .collect()
}

/// Forgets every received slice from `count` on.
fn forget_slices_from(state: &mut State, count: u64) {
    state.received = IndexSet::from_ranges(
        state
            .received
            .ranges()
            .filter(|r| r.start < count)
            .map(|r| [r.start, r.end.min(count)]),
    );
    state.slices.retain(|&index, _| index < count);
    state.bytes_received = state.slices.values().map(|&(len, _)| len).sum();
    if state.short_tail.is_some_and(|(index, _)| index >= count) {
        state.short_tail = None;
    }
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    context: &'static str,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(StoreError::io(context, &error)),
        Err(join) => {
            tracing::error!(%join, context, "blocking task failed");
            Err(StoreError::new(
                ErrorKind::Internal,
                "internal",
                format!("the server failed while {context}"),
            ))
        }
    }
}

/// The byte range a slice PUT must fill, decided before the body is read.
#[derive(Clone, Copy, Debug)]
pub struct SliceTarget {
    /// Byte offset of the slice.
    pub offset: u64,
    /// Exact length when known; otherwise the slice may be 1..=chunk_size bytes.
    pub exact_len: Option<u64>,
    /// Upper bound on the length.
    pub max_len: u64,
}

/// Bytes gathered before one positional write.
const WRITE_BATCH_BYTES: usize = 1 << 20;

/// Writes one slice at its offset: body frames are gathered without copying into batches
/// of about 1 MiB, each written with `pwrite` on the blocking pool while the next batch
/// arrives (one write in flight, so memory stays at about two batches per request).
pub struct SliceWriter {
    file: Arc<std::fs::File>,
    offset: u64,
    batch: Vec<bytes::Bytes>,
    batch_len: usize,
    in_flight: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl SliceWriter {
    /// Queues `bytes` after everything written so far.
    pub async fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StoreError> {
        self.batch_len += bytes.len();
        self.batch.push(bytes);
        if self.batch_len >= WRITE_BATCH_BYTES {
            self.flush_batch().await?;
        }
        Ok(())
    }

    async fn wait_in_flight(&mut self) -> Result<(), StoreError> {
        if let Some(write) = self.in_flight.take() {
            match write.await {
                Ok(result) => result.map_err(|e| StoreError::io("writing a slice", &e))?,
                Err(join) => {
                    tracing::error!(%join, "write task failed");
                    return Err(StoreError::new(
                        ErrorKind::Internal,
                        "internal",
                        "writing a slice failed",
                    ));
                }
            }
        }
        Ok(())
    }

    async fn flush_batch(&mut self) -> Result<(), StoreError> {
        self.wait_in_flight().await?;
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let file = self.file.clone();
        let mut offset = self.offset;
        self.offset += self.batch_len as u64;
        self.batch_len = 0;
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt as _;
            for bytes in batch {
                file.write_all_at(&bytes, offset)?;
                offset += bytes.len() as u64;
            }
            Ok(())
        }));
        Ok(())
    }

    /// Waits for the write in flight, if any, so that no byte of an abandoned attempt
    /// lands after the next attempt's.
    pub async fn abandon(mut self) {
        let _ = self.wait_in_flight().await;
    }

    /// Writes what is left and flushes the file's data to disk (`fdatasync`).
    pub async fn finish(mut self) -> Result<(), StoreError> {
        self.flush_batch().await?;
        self.wait_in_flight().await?;
        let file = self.file.clone();
        blocking("flushing a slice to disk", move || file.sync_data()).await
    }
}

impl Upload {
    fn new(
        id: String,
        dir: PathBuf,
        chunk_size: u64,
        metadata: BTreeMap<String, String>,
        state: State,
        last_activity_ms: u64,
    ) -> Self {
        Self {
            id,
            dir,
            chunk_size,
            metadata,
            state: tokio::sync::Mutex::new(state),
            frontier: Arc::default(),
            slice_slots: Mutex::default(),
            completing: AtomicU64::new(0),
            last_activity_ms: AtomicU64::new(last_activity_ms),
            deleted: AtomicBool::new(false),
        }
    }

    /// The upload's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The slice size.
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// The metadata it was created with.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    fn data_path(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn touch(&self) {
        self.last_activity_ms.store(now_ms(), Ordering::Relaxed);
    }

    fn ensure_live(&self) -> Result<(), StoreError> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(StoreError::upload_not_found(&self.id));
        }
        Ok(())
    }

    /// Claims slice `index` for a new attempt, telling any earlier attempt at it (writing,
    /// or waiting to) to give up: the newest attempt is the one its client waits for.
    pub fn claim_slice(&self, index: u64) -> SliceClaim {
        let mut slots = self.slice_slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.entry(index).or_insert_with(|| SliceSlot {
            lock: Arc::default(),
            turn: tokio::sync::watch::channel(0).0,
        });
        slot.turn.send_modify(|turn| *turn += 1);
        SliceClaim {
            index,
            lock: slot.lock.clone(),
            turn: slot.turn.subscribe(),
        }
    }

    /// Drops slice `index`'s slot once its last attempt is done.
    pub fn release_slice(&self, claim: SliceClaim) {
        let mut slots = self.slice_slots.lock().unwrap_or_else(|e| e.into_inner());
        // Two references: the slot's and the claim's. More means another attempt waits.
        if Arc::strong_count(&claim.lock) <= 2 {
            slots.remove(&claim.index);
        }
    }

    /// Tells every attempt at a slice to give up, and waits until none writes.
    async fn stop_slice_writers(&self) {
        let locks: Vec<_> = {
            let slots = self.slice_slots.lock().unwrap_or_else(|e| e.into_inner());
            slots
                .values()
                .map(|slot| {
                    slot.turn.send_modify(|turn| *turn += 1);
                    slot.lock.clone()
                })
                .collect()
        };
        for lock in locks {
            drop(lock.lock().await);
        }
    }

    /// Where slice `index` goes, given what is known of the size, and whether it is
    /// already held.
    pub async fn target(
        &self,
        index: u64,
        max_upload_size: u64,
    ) -> Result<(SliceTarget, bool), StoreError> {
        self.ensure_live()?;
        let state = self.state.lock().await;
        if state.completed.is_some() {
            return Err(StoreError::conflict(
                "upload_complete",
                "the upload is complete; it takes no more slices",
            ));
        }
        if self.completing.load(Ordering::Acquire) > 0 {
            return Err(StoreError::busy(
                "upload_completing",
                "the upload is being completed; it takes no slices meanwhile",
                1,
            ));
        }
        let geometry = Geometry::new(self.chunk_size, state.size)
            .map_err(|e| StoreError::invalid("invalid_chunk_size", e.to_string()))?;
        let range = geometry
            .slice_range(index)
            .map_err(|e| StoreError::invalid("index_out_of_range", e.to_string()))?;
        let limit = max_upload_size;
        if state.size.is_none() && range.start >= limit {
            return Err(StoreError::invalid(
                "index_out_of_range",
                format!(
                    "slice {index} starts at byte {} past the server's limit of {limit} bytes",
                    range.start
                ),
            ));
        }
        let target = match state.size {
            Some(_) => SliceTarget {
                offset: range.start,
                exact_len: Some(range.end - range.start),
                max_len: range.end - range.start,
            },
            None => SliceTarget {
                offset: range.start,
                exact_len: None,
                max_len: (range.end - range.start).min(limit - range.start),
            },
        };
        Ok((target, state.received.contains(index)))
    }

    /// Records slice `index` of `len` bytes (with the SHA-256 it was checked against) as
    /// received, once its bytes are durable.
    pub async fn mark_received(
        &self,
        index: u64,
        len: u64,
        sha256: Option<[u8; 32]>,
    ) -> Result<(), StoreError> {
        self.ensure_live()?;
        let mut state = self.state.lock().await;
        if state.received.contains(index) {
            return Ok(());
        }
        if state.completed.is_some() {
            return Err(StoreError::conflict(
                "upload_complete",
                "the upload is complete; it takes no more slices",
            ));
        }
        // The size may have become known while this slice was on its way (a short slice
        // fixed it): a slice past it, or of another length than its place, is refused,
        // so that what is recorded always fits the size and can be completed.
        if let Some(size) = state.size {
            let range = Geometry::new(self.chunk_size, Some(size))
                .and_then(|geometry| geometry.slice_range(index))
                .map_err(|_| {
                    StoreError::conflict(
                        "size_conflict",
                        format!("slice {index} lies past the upload's size of {size} bytes"),
                    )
                })?;
            if len != range.end - range.start {
                return Err(StoreError::invalid(
                    "length_mismatch",
                    format!(
                        "slice {index} has {len} bytes; the upload's size of {size} bytes gives it {}",
                        range.end - range.start
                    ),
                ));
            }
        }
        let mut new_size = None;
        if len < self.chunk_size {
            let implied = index * self.chunk_size + len;
            match state.size {
                Some(size) if size != implied => {
                    return Err(StoreError::invalid(
                        "length_mismatch",
                        format!("slice {index} has the wrong length"),
                    ));
                }
                Some(_) => {}
                None => new_size = Some(implied),
            }
        }
        let dir = self.dir.clone();
        let meta = Meta {
            chunk_size: self.chunk_size,
            size: new_size,
            metadata: self.metadata.clone(),
        };
        let journal_len = state.journal_len;
        blocking("recording a received slice", move || {
            if meta.size.is_some() {
                write_atomic(
                    &dir.join("meta.json"),
                    &serde_json::to_vec(&meta).map_err(std::io::Error::other)?,
                )?;
            }
            let mut journal_file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(dir.join("journal"))?;
            let record = journal::record(&journal::Entry { index, len, sha256 });
            let written = journal_file
                .write_all(&record)
                .and_then(|()| journal_file.sync_data());
            if written.is_err() {
                // Keep records aligned: drop whatever part of this one made it.
                let _ = journal_file.set_len(journal_len);
            }
            written
        })
        .await?;
        if let Some(size) = new_size {
            // The last slice: any slice past it (sent before the size was known) is no part
            // of the upload. On a restart, the journal's records past the size recorded in
            // meta.json are skipped the same way.
            forget_slices_from(&mut state, index + 1);
            state.size = Some(size);
            state.short_tail = Some((index, len));
        }
        state.journal_len += journal::RECORD_BYTES as u64;
        state.slices.insert(index, (len, sha256));
        state.received.insert(index);
        state.bytes_received += len;
        self.touch();
        Ok(())
    }

    /// Holds off hashing ahead until the returned guard is dropped (waiting for any under
    /// way): for tests that swap the data file underneath the store.
    #[doc(hidden)]
    pub async fn pause_hashing(&self) -> impl Sized + Send {
        self.frontier.clone().lock_owned().await
    }

    /// Hashes received slices ahead of `complete`, in the background, unless that is
    /// already under way.
    pub fn hash_ahead(self: &Arc<Self>) {
        let Ok(mut frontier) = self.frontier.clone().try_lock_owned() else {
            return;
        };
        let upload = self.clone();
        tokio::spawn(async move {
            while !upload.deleted.load(Ordering::Acquire) {
                let batch = {
                    let state = upload.state.lock().await;
                    if state.completed.is_some() {
                        break;
                    }
                    let end = state
                        .size
                        .map_or(u64::MAX, |size| size.div_ceil(upload.chunk_size));
                    contiguous(&state, frontier.next, end, FRONTIER_BATCH)
                };
                if batch.is_empty() {
                    break;
                }
                if let Err(error) = upload.hash_slices(&mut frontier, batch).await {
                    tracing::debug!(id = %upload.id, ?error, "hashing ahead stopped");
                    break;
                }
            }
        });
    }

    /// Hashes `slices` (index, length, SHA-256 when known; contiguous from
    /// `frontier.next`) from the data file into `frontier`. On failure the frontier starts
    /// over.
    async fn hash_slices(
        &self,
        frontier: &mut Frontier,
        slices: Vec<(u64, u64, Option<[u8; 32]>)>,
    ) -> Result<(), StoreError> {
        let path = self.data_path();
        let chunk_size = self.chunk_size;
        let mut hashed = std::mem::take(frontier);
        *frontier = blocking("hashing the upload", move || {
            use std::os::unix::fs::FileExt as _;
            let file = std::fs::File::open(&path)?;
            let mut buf = vec![0u8; 1 << 20];
            for (index, len, known) in slices {
                debug_assert_eq!(index, hashed.next);
                let mut slice_hash = known.is_none().then(Sha256::new);
                let mut offset = index * chunk_size;
                let end = offset + len;
                while offset < end {
                    let n = buf.len().min((end - offset) as usize);
                    file.read_exact_at(&mut buf[..n], offset)?;
                    hashed.file.update(&buf[..n]);
                    if let Some(h) = slice_hash.as_mut() {
                        h.update(&buf[..n]);
                    }
                    offset += n as u64;
                }
                let digest = match (known, slice_hash) {
                    (Some(known), _) => known,
                    (None, Some(h)) => h.finalize().into(),
                    (None, None) => unreachable!("a slice hasher exists when no digest is known"),
                };
                hashed.slices.push(&digest);
                hashed.next = index + 1;
            }
            Ok(hashed)
        })
        .await?;
        Ok(())
    }

    /// The status a resuming client asks for.
    pub async fn status(&self) -> Result<Status, StoreError> {
        self.ensure_live()?;
        let state = self.state.lock().await;
        Ok(self.status_of(&state))
    }

    fn status_of(&self, state: &State) -> Status {
        Status {
            id: self.id.clone(),
            chunk_size: self.chunk_size,
            size: state.size,
            received: state.received.ranges().map(|r| [r.start, r.end]).collect(),
            bytes_received: state.bytes_received,
            complete: state.completed.is_some(),
            protocol: chunkwise_core::protocol::VERSION,
            transfer: chunkwise_core::protocol::Transfer::Server,
            metadata: self.metadata.clone(),
        }
    }
}

impl Store {
    /// Opens (and creates) the data directory and reloads every upload found there.
    pub fn open(root: impl Into<PathBuf>, limits: Limits) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("uploads"))?;
        std::fs::create_dir_all(root.join("files"))?;
        let store = Self {
            root,
            limits,
            uploads: Mutex::new(HashMap::new()),
            unfinished: AtomicU64::new(0),
        };
        store.reload()?;
        Ok(store)
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn reload(&self) -> std::io::Result<()> {
        let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        for entry in std::fs::read_dir(self.root.join("uploads"))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_valid_id(&name) || !entry.file_type()?.is_dir() {
                continue;
            }
            match self.reload_upload(&name, &entry.path()) {
                Ok(Some(upload)) => {
                    uploads.insert(name, Arc::new(upload));
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(id = %name, %error, "skipping an upload that cannot be reloaded")
                }
            }
        }
        self.unfinished
            .store(uploads.len() as u64, Ordering::Release);
        tracing::info!(unfinished = uploads.len(), "reloaded uploads");
        Ok(())
    }

    fn completed_upload(&self, meta: FinalMeta) -> Upload {
        let received = IndexSet::from_ranges([[0, meta.size.div_ceil(meta.chunk_size)]]);
        let state = State {
            size: Some(meta.size),
            received,
            bytes_received: meta.size,
            short_tail: None,
            journal_len: 0,
            slices: HashMap::new(),
            completed: Some(meta.completion()),
        };
        let dir = self.root.join("uploads").join(&meta.id);
        Upload::new(
            meta.id,
            dir,
            meta.chunk_size,
            meta.metadata,
            state,
            now_ms(),
        )
    }

    fn reload_upload(&self, id: &str, dir: &Path) -> std::io::Result<Option<Upload>> {
        if let Ok(bytes) = std::fs::read(dir.join("completed.json")) {
            let meta: FinalMeta = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
            Self::finish_move(&self.root.join("files"), dir, &meta)?;
            return Ok(None);
        }
        let meta: Meta = serde_json::from_slice(&std::fs::read(dir.join("meta.json"))?)
            .map_err(std::io::Error::other)?;
        let mut records = Vec::new();
        match std::fs::File::open(dir.join("journal")) {
            Ok(mut file) => {
                file.read_to_end(&mut records)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let replayed = journal::replay(&records, meta.chunk_size, meta.size);
        if replayed.whole_len != records.len() {
            std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("journal"))?
                .set_len(replayed.whole_len as u64)?;
        }
        let mut state = State {
            size: meta.size,
            received: IndexSet::new(),
            bytes_received: 0,
            short_tail: None,
            journal_len: replayed.whole_len as u64,
            slices: HashMap::with_capacity(replayed.entries.len()),
            completed: None,
        };
        for entry in replayed.entries {
            state.received.insert(entry.index);
            state.slices.insert(entry.index, (entry.len, entry.sha256));
            state.bytes_received += entry.len;
            if entry.len < meta.chunk_size {
                state.short_tail = Some((entry.index, entry.len));
            }
        }
        let last_activity = std::fs::metadata(dir.join("meta.json"))
            .and_then(|m| m.modified())
            .ok()
            .into_iter()
            .chain(
                std::fs::metadata(dir.join("journal"))
                    .and_then(|m| m.modified())
                    .ok(),
            )
            .max()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or_else(now_ms, |d| d.as_millis() as u64);
        Ok(Some(Upload::new(
            id.to_string(),
            dir.to_path_buf(),
            meta.chunk_size,
            meta.metadata,
            state,
            last_activity,
        )))
    }

    /// Moves a completed upload's bytes to `files/`. Idempotent, so a crash midway is
    /// finished on the next start.
    fn finish_move(files: &Path, dir: &Path, meta: &FinalMeta) -> std::io::Result<()> {
        let data = dir.join("data");
        if data.exists() {
            std::fs::rename(&data, files.join(&meta.id))?;
        }
        write_atomic(
            &files.join(format!("{}.json", meta.id)),
            &serde_json::to_vec_pretty(meta).map_err(std::io::Error::other)?,
        )?;
        std::fs::remove_dir_all(dir)?;
        Ok(())
    }

    /// Where a completed upload's bytes are.
    pub fn file_path(&self, id: &str) -> PathBuf {
        self.root.join("files").join(id)
    }

    /// Finds an upload by id.
    pub async fn get(&self, id: &str) -> Result<Arc<Upload>, StoreError> {
        if !is_valid_id(id) {
            return Err(StoreError::invalid(
                "invalid_id",
                "an upload id is 22 characters of A-Z, a-z, 0-9, '-' and '_'",
            ));
        }
        if let Some(upload) = self
            .uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
        {
            return Ok(upload);
        }
        // A completed upload: its record is small, and read only when asked for.
        let path = self.root.join("files").join(format!("{id}.json"));
        match tokio::fs::read(&path).await {
            Ok(bytes) => match serde_json::from_slice::<FinalMeta>(&bytes) {
                Ok(meta) if meta.id == id => Ok(Arc::new(self.completed_upload(meta))),
                _ => Err(StoreError::io(
                    "reading a completed upload's record",
                    &std::io::Error::other(format!(
                        "{} is not a completed upload's record",
                        path.display()
                    )),
                )),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::upload_not_found(id))
            }
            Err(e) => Err(StoreError::io("reading a completed upload's record", &e)),
        }
    }

    /// Creates an upload.
    pub async fn create(
        &self,
        chunk_size: u64,
        size: Option<u64>,
        metadata: BTreeMap<String, String>,
    ) -> Result<Arc<Upload>, StoreError> {
        let max = self.limits.max_unfinished_uploads;
        if self.unfinished.fetch_add(1, Ordering::AcqRel) >= max {
            self.unfinished.fetch_sub(1, Ordering::AcqRel);
            return Err(StoreError::busy(
                "too_many_uploads",
                format!("the server holds {max} unfinished uploads, its limit; try again later"),
                60,
            ));
        }
        let created = self.create_counted(chunk_size, size, metadata).await;
        if created.is_err() {
            self.unfinished.fetch_sub(1, Ordering::AcqRel);
        }
        created
    }

    async fn create_counted(
        &self,
        chunk_size: u64,
        size: Option<u64>,
        metadata: BTreeMap<String, String>,
    ) -> Result<Arc<Upload>, StoreError> {
        if let Some(size) = size {
            let root = self.root.clone();
            let free = blocking("reading the free space", move || free_bytes(&root)).await?;
            if size > free {
                return Err(StoreError::new(
                    ErrorKind::Full,
                    "insufficient_storage",
                    format!("the upload's {size} bytes exceed the {free} bytes free on the server's disk"),
                ));
            }
        }
        let id = new_id()?;
        let dir = self.root.join("uploads").join(&id);
        let meta = Meta {
            chunk_size,
            size,
            metadata: metadata.clone(),
        };
        let dir_for_io = dir.clone();
        blocking("creating the upload", move || {
            std::fs::create_dir(&dir_for_io)?;
            let made = (|| {
                let data = std::fs::File::create(dir_for_io.join("data"))?;
                if let Some(size) = meta.size {
                    // Sparse: no disk is used until bytes arrive.
                    data.set_len(size)?;
                }
                write_atomic(
                    &dir_for_io.join("meta.json"),
                    &serde_json::to_vec(&meta).map_err(std::io::Error::other)?,
                )
            })();
            if made.is_err() {
                // A full disk (say) leaves nothing behind.
                let _ = std::fs::remove_dir_all(&dir_for_io);
            }
            made
        })
        .await?;
        let state = State {
            size,
            received: IndexSet::new(),
            bytes_received: 0,
            short_tail: None,
            journal_len: 0,
            slices: HashMap::new(),
            completed: None,
        };
        let upload = Arc::new(Upload::new(
            id.clone(),
            dir,
            chunk_size,
            metadata,
            state,
            now_ms(),
        ));
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, upload.clone());
        Ok(upload)
    }

    /// Opens the upload's data file for writing one slice at `offset`.
    pub async fn open_for_slice(
        &self,
        upload: &Upload,
        offset: u64,
    ) -> Result<SliceWriter, StoreError> {
        upload.ensure_live()?;
        upload.touch();
        let path = upload.data_path();
        let file = blocking("opening the upload's file", move || {
            std::fs::OpenOptions::new().write(true).open(path)
        })
        .await?;
        Ok(SliceWriter {
            file: Arc::new(file),
            offset,
            batch: Vec::new(),
            batch_len: 0,
            in_flight: None,
        })
    }

    /// Completes an upload: checks every slice, fixes the size, hashes the stored bytes,
    /// compares with the client's digest, and moves the file to its final place.
    pub async fn complete(
        &self,
        upload: &Arc<Upload>,
        size: Option<u64>,
        sha256: Option<[u8; 32]>,
        slices_sha256: Option<[u8; 32]>,
    ) -> Result<Completed, StoreError> {
        upload.ensure_live()?;
        // No slice is taken from here on, and every attempt still writing is told to stop
        // and waited for: once `complete` answers, no byte ever reaches the file again.
        upload.completing.fetch_add(1, Ordering::AcqRel);
        let _completing = Completing(&upload.completing);
        upload.stop_slice_writers().await;
        let mut frontier = upload.frontier.lock().await;
        let mut state = upload.state.lock().await;
        // Expiry or a delete may have come first.
        upload.ensure_live()?;
        if state.completed.is_none() {
            // An earlier `complete` verified the upload and recorded it, but could not
            // finish moving it (a full disk): finish that now, verifying nothing again.
            let dir = upload.dir.clone();
            let files = self.root.join("files");
            let recorded = blocking("finishing a completed upload", move || {
                let meta: FinalMeta = match std::fs::read(dir.join("completed.json")) {
                    Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                };
                Self::finish_move(&files, &dir, &meta)?;
                Ok(Some(meta))
            })
            .await?;
            if let Some(meta) = recorded {
                self.mark_completed(upload, &mut state, meta);
            }
        }
        if let Some(done) = &state.completed {
            if let Some(size) = size.filter(|&size| size != done.size) {
                return Err(StoreError::invalid(
                    "size_mismatch",
                    format!("the upload completed with size {}, not {size}", done.size),
                ));
            }
            if let Some(expected) = sha256 {
                if done.sha256.as_deref() != Some(protocol::hex(&expected).as_str()) {
                    return Err(StoreError::invalid(
                        "digest_mismatch",
                        "the SHA-256 given differs from the stored bytes'",
                    ));
                }
            }
            if let Some(expected) = slices_sha256 {
                if done.slices_sha256.as_deref() != Some(protocol::hex(&expected).as_str()) {
                    return Err(StoreError::invalid(
                        "digest_mismatch",
                        "the slicesSha256 given differs from the stored slices'",
                    ));
                }
            }
            return Ok(done.clone());
        }
        let size = match (state.size, size) {
            (Some(known), Some(given)) if known != given => {
                return Err(StoreError::invalid(
                    "size_mismatch",
                    format!("the upload's size is {known} bytes, not {given}"),
                ));
            }
            (Some(known), _) => known,
            (None, Some(given)) => given,
            (None, None) => {
                return Err(StoreError::invalid(
                    "size_required",
                    "the size was deferred at creation; give it as \"size\" to complete",
                ));
            }
        };
        if size > self.limits.max_upload_size_bytes {
            return Err(StoreError::new(
                ErrorKind::TooLarge,
                "upload_too_large",
                format!(
                    "size {size} exceeds the server's limit of {} bytes",
                    self.limits.max_upload_size_bytes
                ),
            ));
        }
        // Slices past the end (sent before a deferred size was known) are no part of the
        // upload: it completes with the slices that fit, their bytes cut off below.
        let count = size.div_ceil(upload.chunk_size);
        if state.size.is_none() && size % upload.chunk_size != 0 && state.short_tail.is_none() {
            // The last slice would be short, but only full-length slices were received.
            if state.received.contains(count - 1) {
                return Err(StoreError::conflict(
                    "size_conflict",
                    format!(
                        "size {size} makes slice {} short, but it was received full",
                        count - 1
                    ),
                ));
            }
        }
        let missing = state.received.missing(count);
        if !missing.is_empty() {
            let total: u64 = missing.iter().map(|r| r.end - r.start).sum();
            let named: Vec<String> = missing
                .iter()
                .take(10)
                .map(|r| {
                    if r.end - r.start == 1 {
                        r.start.to_string()
                    } else {
                        format!("{}..{}", r.start, r.end - 1)
                    }
                })
                .collect();
            return Err(StoreError::conflict(
                "missing_slices",
                format!(
                    "{total} of {count} slices are missing: {}{}",
                    named.join(", "),
                    if missing.len() > 10 { ", ..." } else { "" }
                ),
            ));
        }

        let data = upload.data_path();
        blocking("fixing the upload's size", move || {
            let file = std::fs::OpenOptions::new().write(true).open(&data)?;
            file.set_len(size)?;
            file.sync_all()
        })
        .await?;
        if frontier.next > count {
            // The background hashing went past the end (slices sent past a deferred size).
            *frontier = Frontier::default();
        }
        // Whatever the background hashing has not reached yet (usually the last slices).
        let rest = contiguous(&state, frontier.next, count, usize::MAX);
        upload.hash_slices(&mut frontier, rest).await?;
        if frontier.next != count {
            tracing::error!(id = %upload.id, hashed = frontier.next, count, "hashing stopped short");
            return Err(StoreError::new(
                ErrorKind::Internal,
                "internal",
                "hashing the upload stopped short",
            ));
        }
        let sha: [u8; 32] = frontier.file.clone().finalize().into();
        let stored_slices_sha256 = frontier.slices.clone().finish();
        if let Some(expected) = slices_sha256 {
            if protocol::hex(&expected) != stored_slices_sha256 {
                return Err(StoreError::invalid(
                    "digest_mismatch",
                    format!(
                        "the stored slices have slicesSha256 {stored_slices_sha256}, not {}; \
                         they are not the slices the client read (was the file changed?)",
                        protocol::hex(&expected)
                    ),
                ));
            }
        }
        if let Some(expected) = sha256 {
            if expected != sha {
                return Err(StoreError::invalid(
                    "digest_mismatch",
                    format!(
                        "the stored bytes have SHA-256 {}, not {}",
                        protocol::hex(&sha),
                        protocol::hex(&expected)
                    ),
                ));
            }
        }
        let meta = FinalMeta {
            id: upload.id.clone(),
            chunk_size: upload.chunk_size,
            size,
            sha256: protocol::hex(&sha),
            slices_sha256: Some(stored_slices_sha256),
            metadata: upload.metadata.clone(),
        };
        let dir = upload.dir.clone();
        let files = self.root.join("files");
        let meta_for_io = meta.clone();
        blocking("storing the completed upload", move || {
            // Recorded first, so that a crash or a full disk during the move is finished on
            // restart, or by the client's next `complete`.
            write_atomic(
                &dir.join("completed.json"),
                &serde_json::to_vec(&meta_for_io).map_err(std::io::Error::other)?,
            )?;
            Self::finish_move(&files, &dir, &meta_for_io)
        })
        .await?;
        Ok(self.mark_completed(upload, &mut state, meta))
    }

    /// Records in memory that `upload` completed as `meta` says: it no longer counts as
    /// unfinished, and leaves memory (later requests read its record from disk).
    fn mark_completed(&self, upload: &Upload, state: &mut State, meta: FinalMeta) -> Completed {
        let completed = meta.completion();
        state.size = Some(meta.size);
        state.slices = HashMap::new();
        state.completed = Some(completed.clone());
        upload.touch();
        self.forget(&upload.id);
        completed
    }

    /// Drops an upload from memory; once, it stops counting as unfinished.
    fn forget(&self, id: &str) {
        let removed = self
            .uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if removed.is_some() {
            self.unfinished.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Removes an upload and its bytes, complete or not.
    pub async fn delete(&self, upload: &Arc<Upload>) -> Result<(), StoreError> {
        upload.deleted.store(true, Ordering::Release);
        self.forget(&upload.id);
        let _state = upload.state.lock().await;
        let dir = upload.dir.clone();
        let file = self.file_path(&upload.id);
        let file_meta = self.root.join("files").join(format!("{}.json", upload.id));
        blocking("deleting the upload", move || {
            for path in [file, file_meta] {
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
        .await
    }

    /// The ids of completed uploads (`files/{id}.json`), without reading their records:
    /// a restart over many completed uploads holds their ids, not their metadata.
    pub async fn completed_ids(&self) -> Vec<String> {
        let files = self.root.join("files");
        blocking("listing completed uploads", move || {
            let mut ids = Vec::new();
            for entry in std::fs::read_dir(files)? {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_suffix(".json").filter(|id| is_valid_id(id)) {
                    ids.push(id.to_string());
                }
            }
            Ok(ids)
        })
        .await
        .unwrap_or_default()
    }

    /// A completed upload's record, read when asked for: what hooks know of it, and what
    /// `complete` answered.
    pub async fn completed_record(&self, id: &str) -> Option<(UploadInfo, Completed)> {
        if !is_valid_id(id) {
            return None;
        }
        let path = self.root.join("files").join(format!("{id}.json"));
        let meta = blocking("reading a completed upload", move || {
            serde_json::from_slice::<FinalMeta>(&std::fs::read(path)?)
                .map_err(std::io::Error::other)
        })
        .await
        .ok()?;
        let done = meta.completion();
        Some((self.completed_upload(meta).info(), done))
    }

    /// How many uploads are unfinished: created and not yet completed, deleted or expired.
    pub fn unfinished(&self) -> u64 {
        self.unfinished.load(Ordering::Acquire)
    }

    /// Removes incomplete uploads untouched for longer than `expire_after`, and returns
    /// them.
    pub async fn expire(&self) -> Vec<Arc<Upload>> {
        let cutoff = now_ms().saturating_sub(self.limits.expire_after.as_millis() as u64);
        let stale: Vec<Arc<Upload>> = {
            let uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
            uploads
                .values()
                .filter(|u| u.last_activity_ms.load(Ordering::Relaxed) < cutoff)
                .cloned()
                .collect()
        };
        let mut removed = Vec::new();
        for upload in stale {
            {
                // Decided under the upload's lock, which `complete` holds throughout: an
                // upload is either completed or expired, never completed and then deleted.
                let state = upload.state.lock().await;
                if state.completed.is_some()
                    || upload.completing.load(Ordering::Acquire) > 0
                    || upload.last_activity_ms.load(Ordering::Relaxed) >= cutoff
                {
                    continue;
                }
                upload.deleted.store(true, Ordering::Release);
            }
            match self.delete(&upload).await {
                Ok(()) => removed.push(upload),
                Err(error) => tracing::warn!(id = %upload.id, %error, "could not expire upload"),
            }
        }
        if !removed.is_empty() {
            tracing::info!(removed = removed.len(), "expired abandoned uploads");
        }
        removed
    }
}
