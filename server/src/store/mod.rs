//! Where uploads are kept, behind one seam.
//!
//! [`crate::app`] speaks the protocol, checks what every store shares (JSON, metadata,
//! the bearer token, hooks) and calls a [`Backend`] for the rest. Two implement it: the
//! local disk ([`disk::Store`]) and an S3-compatible bucket ([`bucket::Bucket`], whose
//! slices either pass through this server or go straight to the store, through
//! [`s3::S3`]). The HTTP layer never learns which one it talks to, and a store never
//! speaks HTTP: it answers a [`StoreError`], which the HTTP layer maps to a status in one
//! place ([`crate::error`]).

pub mod bucket;
pub mod disk;
pub mod error;
pub mod s3;
pub mod token;

pub use disk::{Limits, Store};
pub use error::{ErrorKind, StoreError, StoreResult};

use std::collections::BTreeMap;
use std::future::Future;

use std::pin::Pin;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use chunkwise_core::protocol::{Completed, Status, Transfer};
use futures_util::Stream;
use serde::Serialize;

/// Characters in an upload id this server hands out (16 random bytes, base64url).
const ID_LEN: usize = 22;

/// Whether `id` has the shape of an id this server hands out.
pub fn is_valid_id(id: &str) -> bool {
    id.len() == ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A new upload id: 128 random bits.
pub(crate) fn new_id() -> StoreResult<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| {
        tracing::error!(error = %e, "no randomness");
        StoreError::internal("internal", "the server could not draw a random id")
    })?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// An upload to create, already checked by the HTTP layer (metadata, and the hook).
#[derive(Clone, Debug)]
pub struct NewUpload {
    /// The slice size the client asked for; a backend may choose a larger one.
    pub chunk_size: u64,
    /// The total size, when known.
    pub size: Option<u64>,
    /// Metadata to keep beside the upload.
    pub metadata: BTreeMap<String, String>,
}

/// What a backend made of [`NewUpload`].
#[derive(Clone, Debug)]
pub struct CreatedUpload {
    /// The upload's id, as it goes in its URL.
    pub id: String,
    /// The slicing the client must use.
    pub chunk_size: u64,
}

/// What hooks and logs know of an upload.
#[derive(Clone, Debug, Default)]
pub struct UploadInfo {
    /// The upload's id.
    pub id: String,
    /// Its slice size.
    pub chunk_size: u64,
    /// Its metadata, where the backend can still read it.
    pub metadata: BTreeMap<String, String>,
    /// Where the bytes are kept when not on this server's disk: `s3://bucket/key`.
    pub object: Option<String>,
}

/// One slice arriving at `PUT /uploads/{id}`, its body not yet read.
pub struct IncomingSlice {
    /// The slice's index.
    pub index: u64,
    /// `Content-Length`, when sent.
    pub declared_len: Option<u64>,
    /// `Content-Digest` (SHA-256), when sent.
    pub digest: Option<[u8; 32]>,
    /// The bytes, streamed as they arrive.
    pub body: SliceBody,
}

/// A slice's bytes as they arrive from the client.
pub type SliceBody = Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + Send>>;

/// Why a slice's body stopped before its end.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// No byte arrived for longer than the server waits.
    #[error("no byte of the body arrived for too long")]
    TimedOut,
    /// Bytes kept arriving, but slower than the server's least rate.
    #[error("{0}")]
    TooSlow(String),
    /// The client's connection failed or closed mid-body.
    #[error("the body was cut off: {0}")]
    Cut(String),
}

/// `POST /uploads/{id}`, parsed.
#[derive(Clone, Debug, Default)]
pub struct Finish {
    /// The total size; required when it was deferred at creation.
    pub size: Option<u64>,
    /// The client's SHA-256 of the whole file.
    pub sha256: Option<[u8; 32]>,
    /// The client's digest of all its slices' SHA-256s.
    pub slices_sha256: Option<[u8; 32]>,
}

/// A request the browser sends itself, signed by the store's credentials.
#[derive(Clone, Debug, Serialize)]
pub struct SignedRequest {
    /// `PUT`.
    pub method: String,
    /// The presigned URL.
    pub url: String,
    /// Headers the signature covers; the browser must send exactly these.
    pub headers: BTreeMap<String, String>,
}

/// Where uploads are kept.
pub trait Backend: Send + Sync + 'static {
    /// Where slices go: to this server, or straight to the store.
    fn transfer(&self) -> Transfer;

    /// Creates an upload.
    fn create(&self, upload: NewUpload) -> impl Future<Output = StoreResult<CreatedUpload>> + Send;

    /// What the upload holds.
    fn status(&self, id: &str) -> impl Future<Output = StoreResult<Status>> + Send;

    /// Receives one slice. The HTTP layer calls it only when [`Backend::transfer`] is
    /// [`Transfer::Server`].
    fn put_slice(
        &self,
        id: &str,
        slice: IncomingSlice,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Signs the request that sends slice `index` (`len` bytes, this SHA-256) straight to
    /// the store. The HTTP layer calls it only when [`Backend::transfer`] is
    /// [`Transfer::Direct`].
    fn sign_slice(
        &self,
        _id: &str,
        _index: u64,
        _len: u64,
        _sha256: Option<[u8; 32]>,
    ) -> impl Future<Output = StoreResult<SignedRequest>> + Send {
        std::future::ready(Err(StoreError::new(
            ErrorKind::Unsupported,
            "not_signed",
            "this store receives slices itself; it signs none",
        )))
    }

    /// Completes the upload once every slice is held and checked. Repeating it answers
    /// the same.
    fn complete(
        &self,
        id: &str,
        finish: Finish,
    ) -> impl Future<Output = StoreResult<(Completed, UploadInfo)>> + Send;

    /// How many uploads are unfinished, when the store can say without asking anyone
    /// (for the metrics).
    fn unfinished_uploads(&self) -> Option<u64> {
        None
    }

    /// Removes the upload and every byte of it, complete or not.
    fn delete(&self, id: &str) -> impl Future<Output = StoreResult<UploadInfo>> + Send;
}
