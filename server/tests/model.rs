//! Model-based tests of the disk store: random sequences of create, slice (whole, cut,
//! corrupted, too long, duplicate, concurrent, past the end), complete, delete, expiry, a
//! full disk and restarts, run against the real store through the `Backend` seam and
//! checked after every step against a model that is plain data: what is stored equals what
//! was acknowledged, and a completed file never changes.
//!
//! `PROPTEST_CASES` sets the number of sequences (CI runs the default below).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chunkwise_core::protocol::{self, SlicesDigest};
use chunkwise_server::store::{BodyError, ErrorKind, Finish, IncomingSlice, NewUpload, SliceBody};
use chunkwise_server::{Backend, Limits, Store};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

/// What a client does.
#[derive(Clone, Debug)]
enum Op {
    /// Creates an upload of a file of `len` bytes, telling its size or not.
    Create {
        chunk: u64,
        len: u64,
        tell_size: bool,
    },
    /// Sends slice `index` of upload `upload` (both taken modulo what exists).
    Put { upload: usize, index: u64, how: How },
    /// Completes it, with the right digests or a wrong one.
    Complete { upload: usize, right: bool },
    /// Deletes it.
    Delete { upload: usize },
    /// Expiry runs with every unfinished upload stale.
    Expire,
    /// The server restarts.
    Restart,
}

/// How a slice is sent.
#[derive(Clone, Copy, Debug)]
enum How {
    /// Whole and right, with its digest.
    Whole,
    /// Whole and right, without a digest.
    WholeNoDigest,
    /// Cut off after `n` bytes (the connection died).
    Cut(u64),
    /// One byte flipped, with the digest of the right bytes.
    Corrupt,
    /// One byte more than it should be.
    TooLong,
    /// To a full disk.
    FullDisk,
    /// Twice at once: a cut attempt and a whole one.
    Racing,
}

fn op() -> impl Strategy<Value = Op> {
    let how = prop_oneof![
        6 => Just(How::Whole),
        1 => Just(How::WholeNoDigest),
        2 => (0u64..8).prop_map(How::Cut),
        1 => Just(How::Corrupt),
        1 => Just(How::TooLong),
        1 => Just(How::FullDisk),
        1 => Just(How::Racing),
    ];
    prop_oneof![
        2 => (prop_oneof![Just(1u64), Just(3), Just(4), Just(8)], 0u64..40, any::<bool>())
            .prop_map(|(chunk, len, tell_size)| Op::Create { chunk, len, tell_size }),
        12 => (0usize..4, 0u64..12, how).prop_map(|(upload, index, how)| Op::Put { upload, index, how }),
        3 => (0usize..4, prop::bool::weighted(0.8)).prop_map(|(upload, right)| Op::Complete { upload, right }),
        1 => (0usize..4).prop_map(|upload| Op::Delete { upload }),
        1 => Just(Op::Expire),
        1 => Just(Op::Restart),
    ]
}

/// One upload as the model knows it.
#[derive(Clone, Debug)]
struct Model {
    id: String,
    chunk: u64,
    /// The whole file the client holds.
    file: Vec<u8>,
    /// Whether the server was told the size at creation.
    told: bool,
    /// Slices the server acknowledged (204).
    acked: BTreeSet<u64>,
    /// Slices past the end of a deferred-size upload that the server took (before it knew
    /// the size); they are left out at `complete`.
    past_end: BTreeSet<u64>,
    /// Whether `complete` succeeded.
    completed: bool,
    /// Whether it was deleted or expired.
    gone: bool,
}

impl Model {
    fn count(&self) -> u64 {
        (self.file.len() as u64).div_ceil(self.chunk)
    }

    fn slice(&self, index: u64) -> Option<&[u8]> {
        let start = index.checked_mul(self.chunk)?;
        if start >= self.file.len() as u64 {
            return None;
        }
        let end = (start + self.chunk).min(self.file.len() as u64);
        Some(&self.file[start as usize..end as usize])
    }

    /// Whether the server knows the size: told at creation, or fixed by a short last
    /// slice it took.
    fn size_known(&self) -> bool {
        self.told
            || (self.file.len() as u64 % self.chunk != 0
                && self.acked.contains(&(self.count() - 1)))
    }
}

struct World {
    root: PathBuf,
    store: Arc<Store>,
    uploads: Vec<Model>,
    seed: u8,
}

fn limits(expire_after: Duration) -> Limits {
    Limits {
        max_upload_size_bytes: 1 << 20,
        max_chunk_size_bytes: 1 << 10,
        expire_after,
        max_unfinished_uploads: 1000,
    }
}

fn body_of(bytes: Vec<u8>) -> SliceBody {
    Box::pin(futures_util::stream::iter([Ok(bytes::Bytes::from(bytes))]))
}

/// A body that yields `bytes`, then fails (the connection died).
fn cut_body(bytes: Vec<u8>) -> SliceBody {
    Box::pin(futures_util::stream::iter([
        Ok(bytes::Bytes::from(bytes)),
        Err(BodyError::Cut("connection reset".into())),
    ]))
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl World {
    fn live(&self, pick: usize) -> Option<usize> {
        let live: Vec<usize> = (0..self.uploads.len())
            .filter(|&i| !self.uploads[i].gone)
            .collect();
        (!live.is_empty()).then(|| live[pick % live.len()])
    }

    fn data_path(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id).join("data")
    }

    async fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Create {
                chunk,
                len,
                tell_size,
            } => {
                self.seed = self.seed.wrapping_add(1);
                let seed = self.seed;
                let file: Vec<u8> = (0..len)
                    .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                    .collect();
                let created = Backend::create(
                    &*self.store,
                    NewUpload {
                        chunk_size: chunk,
                        size: tell_size.then_some(len),
                        metadata: BTreeMap::new(),
                    },
                )
                .await;
                let created = created.map_err(|e| TestCaseError::fail(format!("create: {e}")))?;
                self.uploads.push(Model {
                    id: created.id,
                    chunk,
                    file,
                    told: tell_size,
                    acked: BTreeSet::new(),
                    past_end: BTreeSet::new(),
                    completed: false,
                    gone: false,
                });
            }
            Op::Put { upload, index, how } => {
                let Some(u) = self.live(upload) else {
                    return Ok(());
                };
                let model = self.uploads[u].clone();
                let count = model.count();
                // Mostly slices of the file; now and then one just past its end.
                let index = index % (count + 2);
                let right: Vec<u8> = match model.slice(index) {
                    Some(slice) => slice.to_vec(),
                    // Past the end: a whole slice of zeros (a client that read too far).
                    None => vec![0; model.chunk as usize],
                };
                let in_range = index < count;
                if matches!(how, How::TooLong)
                    && !model.size_known()
                    && (right.len() as u64) < model.chunk
                {
                    // A longer last slice of a stream of unknown length is a different
                    // file, not a bad slice: nothing to check.
                    return Ok(());
                }
                let put = |body: SliceBody, digest: Option<[u8; 32]>, len: Option<u64>| {
                    let store = self.store.clone();
                    let id = model.id.clone();
                    async move {
                        store
                            .put_slice(
                                &id,
                                IncomingSlice {
                                    index,
                                    declared_len: len,
                                    digest,
                                    body,
                                },
                            )
                            .await
                    }
                };
                let result = match how {
                    How::Whole => {
                        put(
                            body_of(right.clone()),
                            Some(sha(&right)),
                            Some(right.len() as u64),
                        )
                        .await
                    }
                    How::WholeNoDigest => put(body_of(right.clone()), None, None).await,
                    How::Cut(n) => {
                        let n = (n as usize).min(right.len().saturating_sub(1));
                        put(
                            cut_body(right[..n].to_vec()),
                            Some(sha(&right)),
                            Some(right.len() as u64),
                        )
                        .await
                    }
                    How::Corrupt => {
                        let mut bad = right.clone();
                        bad[0] ^= 0xff;
                        put(body_of(bad), Some(sha(&right)), Some(right.len() as u64)).await
                    }
                    How::TooLong => {
                        let mut long = right.clone();
                        long.push(1);
                        put(body_of(long), None, None).await
                    }
                    How::FullDisk => {
                        let data = self.data_path(&model.id);
                        let saved = data.with_extension("saved");
                        // Reading the data file meanwhile would read /dev/full's zeros.
                        let paused = match self.store.get(&model.id).await {
                            Ok(upload) => Some(upload.pause_hashing().await),
                            Err(_) => None,
                        };
                        let swapped = !model.completed
                            && std::fs::rename(&data, &saved).is_ok()
                            && std::os::unix::fs::symlink("/dev/full", &data).is_ok();
                        let result = put(
                            body_of(right.clone()),
                            Some(sha(&right)),
                            Some(right.len() as u64),
                        )
                        .await;
                        if swapped {
                            std::fs::remove_file(&data).unwrap();
                            std::fs::rename(&saved, &data).unwrap();
                            drop(paused);
                            // Written nowhere: the only acceptable answers are a full disk,
                            // or a slice already held (nothing written).
                            match &result {
                                Ok(()) => prop_assert!(
                                    model.acked.contains(&index) || model.past_end.contains(&index),
                                    "a slice written to a full disk was acknowledged"
                                ),
                                Err(e) => prop_assert!(
                                    [ErrorKind::Full, ErrorKind::Conflict, ErrorKind::Invalid]
                                        .contains(&e.kind),
                                    "{e}"
                                ),
                            }
                        }
                        result
                    }
                    How::Racing => {
                        let n = right.len() / 2;
                        let (a, b) = tokio::join!(
                            put(
                                cut_body(right[..n].to_vec()),
                                Some(sha(&right)),
                                Some(right.len() as u64)
                            ),
                            put(
                                body_of(right.clone()),
                                Some(sha(&right)),
                                Some(right.len() as u64)
                            ),
                        );
                        // A cut attempt is never stored.
                        if a.is_ok() {
                            prop_assert!(
                                model.acked.contains(&index) || model.past_end.contains(&index)
                            );
                        }
                        // The whole one may be superseded by the cut one only if it came
                        // first; either way, send it again, alone, as a client would.
                        match b {
                            Ok(()) => Ok(()),
                            Err(e) if e.code == "slice_superseded" => {
                                put(
                                    body_of(right.clone()),
                                    Some(sha(&right)),
                                    Some(right.len() as u64),
                                )
                                .await
                            }
                            Err(e) => Err(e),
                        }
                    }
                };
                let m = &mut self.uploads[u];
                match (&result, how) {
                    (Ok(()), How::Whole | How::WholeNoDigest | How::Racing) => {
                        if in_range {
                            m.acked.insert(index);
                            if (right.len() as u64) < m.chunk {
                                // The short last slice fixed the size: slices past it go.
                                m.past_end.clear();
                            }
                        } else {
                            prop_assert!(
                                !m.size_known(),
                                "slice {index} past a known size was taken"
                            );
                            m.past_end.insert(index);
                        }
                    }
                    (Ok(()), How::FullDisk) => {}
                    (Ok(()), _) => {
                        // A bad attempt at a slice already held is checked and refused, or
                        // (without a digest to check) ignored; never stored.
                        prop_assert!(
                            m.acked.contains(&index) || m.past_end.contains(&index),
                            "a bad attempt ({how:?}) at slice {index} was acknowledged"
                        );
                    }
                    (Err(e), How::Whole | How::WholeNoDigest | How::Racing) => {
                        // A right slice is refused only when it must be: the upload is
                        // complete, or the slice lies past a size the server knows.
                        let reason = m.completed || (!in_range && m.size_known());
                        prop_assert!(
                            reason,
                            "slice {index} of {count} ({how:?}) refused: {e}; {m:?}"
                        );
                    }
                    (Err(e), _) => {
                        prop_assert!(e.kind != ErrorKind::Internal, "{e}");
                    }
                }
            }
            Op::Complete { upload, right } => {
                let Some(u) = self.live(upload) else {
                    return Ok(());
                };
                let m = self.uploads[u].clone();
                let mut slices = SlicesDigest::new();
                for i in 0..m.count() {
                    slices.push(&sha(m.slice(i).unwrap_or_default()));
                }
                let slices_sha256 = protocol::parse_hex_sha256(&slices.finish()).unwrap();
                let mut sha256 = sha(&m.file);
                if !right {
                    sha256[0] ^= 1;
                }
                let result = Backend::complete(
                    &*self.store,
                    &m.id,
                    Finish {
                        size: Some(m.file.len() as u64),
                        sha256: Some(sha256),
                        slices_sha256: Some(slices_sha256),
                    },
                )
                .await;
                let all = (0..m.count()).all(|i| m.acked.contains(&i));
                match result {
                    Ok((done, _)) => {
                        prop_assert!(
                            right && all,
                            "completed with right={right}, all slices={all}: {m:?}"
                        );
                        prop_assert_eq!(done.size, m.file.len() as u64);
                        self.uploads[u].completed = true;
                    }
                    Err(e) => {
                        prop_assert!(
                            !right || !all || m.completed,
                            "complete refused with every slice held and the right digests: {e}; {m:?}"
                        );
                        if m.completed {
                            prop_assert!(!right, "a repeated complete was refused: {e}");
                        }
                    }
                }
            }
            Op::Delete { upload } => {
                let Some(u) = self.live(upload) else {
                    return Ok(());
                };
                let id = self.uploads[u].id.clone();
                Backend::delete(&*self.store, &id)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("delete: {e}")))?;
                self.uploads[u].gone = true;
            }
            Op::Expire => {
                self.store = Arc::new(Store::open(&self.root, limits(Duration::ZERO)).unwrap());
                tokio::time::sleep(Duration::from_millis(3)).await;
                let expired: BTreeSet<String> = self
                    .store
                    .expire()
                    .await
                    .iter()
                    .map(|u| u.id().to_string())
                    .collect();
                for m in &mut self.uploads {
                    if !m.gone && !m.completed {
                        prop_assert!(expired.contains(&m.id), "{} was not expired", m.id);
                        m.gone = true;
                    } else {
                        prop_assert!(
                            !expired.contains(&m.id),
                            "{} expired, complete or gone",
                            m.id
                        );
                    }
                }
                self.store =
                    Arc::new(Store::open(&self.root, limits(Duration::from_secs(3600))).unwrap());
            }
            Op::Restart => {
                self.store =
                    Arc::new(Store::open(&self.root, limits(Duration::from_secs(3600))).unwrap());
            }
        }
        self.check().await
    }

    /// The store agrees with the model.
    async fn check(&self) -> Result<(), TestCaseError> {
        for m in &self.uploads {
            let status = self.store.status(&m.id).await;
            if m.gone {
                prop_assert!(status.is_err(), "{} is gone but answers", m.id);
                prop_assert!(!self.root.join("files").join(&m.id).exists());
                continue;
            }
            let status =
                status.map_err(|e| TestCaseError::fail(format!("status of {}: {e}", m.id)))?;
            prop_assert_eq!(status.complete, m.completed);
            if m.completed {
                let stored = std::fs::read(self.root.join("files").join(&m.id)).unwrap();
                prop_assert_eq!(&stored, &m.file, "a completed file differs");
                continue;
            }
            let received: BTreeSet<u64> = status
                .received
                .iter()
                .flat_map(|&[start, end]| start..end)
                .collect();
            let expected: BTreeSet<u64> = m.acked.union(&m.past_end).copied().collect();
            prop_assert_eq!(&received, &expected, "received slices of {}", m.id);
            // What is held is what was sent, byte for byte.
            let data = std::fs::read(self.data_path(&m.id)).unwrap();
            for &i in &m.acked {
                let slice = m.slice(i).unwrap();
                let start = (i * m.chunk) as usize;
                prop_assert_eq!(
                    &data[start..start + slice.len()],
                    slice,
                    "slice {} of {}",
                    i,
                    m.id
                );
            }
        }
        Ok(())
    }
}

fn scratch() -> tempfile::TempDir {
    // fsync-heavy: in memory when the machine has it.
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES for a longer run.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_disk_store_keeps_what_it_acknowledged_and_never_changes_a_completed_file(
        ops in prop::collection::vec(op(), 1..40)
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = scratch();
        runtime.block_on(async {
            let mut world = World {
                root: dir.path().to_path_buf(),
                store: Arc::new(Store::open(dir.path(), limits(Duration::from_secs(3600))).unwrap()),
                uploads: Vec::new(),
                seed: 0,
            };
            for op in ops {
                world.step(op).await?;
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}
