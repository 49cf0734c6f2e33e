//! The seam between the HTTP layer and where uploads are kept.
//!
//! [`crate::app`] speaks the protocol, checks what every store shares (JSON, metadata,
//! the bearer token, hooks) and calls a [`Backend`] for the rest. Two implement it: the
//! local disk ([`crate::store::Store`]) and an S3-compatible bucket
//! ([`crate::bucket::Bucket`], whose slices either pass through this server or go
//! straight to the store). The HTTP layer never learns which one it talks to.

use std::collections::BTreeMap;
use std::future::Future;

use axum::body::Body;
use axum::http::StatusCode;
use chunkwise_core::protocol::{Completed, Status, Transfer};
use serde::Serialize;

use crate::error::ApiError;

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
#[derive(Debug)]
pub struct IncomingSlice {
    /// The slice's index.
    pub index: u64,
    /// `Content-Length`, when sent.
    pub declared_len: Option<u64>,
    /// `Content-Digest` (SHA-256), when sent.
    pub digest: Option<[u8; 32]>,
    /// The bytes, streamed.
    pub body: Body,
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

/// Where uploads are kept. Every error is the answer to send.
pub trait Backend: Send + Sync + 'static {
    /// Where slices go: to this server, or straight to the store.
    fn transfer(&self) -> Transfer;

    /// Creates an upload.
    fn create(
        &self,
        upload: NewUpload,
    ) -> impl Future<Output = Result<CreatedUpload, ApiError>> + Send;

    /// What the upload holds.
    fn status(&self, id: &str) -> impl Future<Output = Result<Status, ApiError>> + Send;

    /// Receives one slice. The HTTP layer calls it only when [`Backend::transfer`] is
    /// [`Transfer::Server`].
    fn put_slice(
        &self,
        id: &str,
        slice: IncomingSlice,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Signs the request that sends slice `index` (`len` bytes, this SHA-256) straight to
    /// the store. The HTTP layer calls it only when [`Backend::transfer`] is
    /// [`Transfer::Direct`].
    fn sign_slice(
        &self,
        _id: &str,
        _index: u64,
        _len: u64,
        _sha256: Option<[u8; 32]>,
    ) -> impl Future<Output = Result<SignedRequest, ApiError>> + Send {
        std::future::ready(Err(wrong_transfer(Transfer::Server)))
    }

    /// Completes the upload once every slice is held and checked. Repeating it answers
    /// the same.
    fn complete(
        &self,
        id: &str,
        finish: Finish,
    ) -> impl Future<Output = Result<(Completed, UploadInfo), ApiError>> + Send;

    /// How many uploads are unfinished, when the store can say without asking anyone
    /// (for the metrics).
    fn unfinished_uploads(&self) -> Option<u64> {
        None
    }

    /// Removes the upload and every byte of it, complete or not.
    fn delete(&self, id: &str) -> impl Future<Output = Result<UploadInfo, ApiError>> + Send;
}

/// The answer to a request for the other [`Transfer`].
pub fn wrong_transfer(transfer: Transfer) -> ApiError {
    match transfer {
        Transfer::Server => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "slices go through this server: PUT /uploads/{id} with Chunkwise-Slice",
        ),
        Transfer::Direct => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "slices go straight to the object store: ask POST /uploads/{id}/sign for each",
        ),
    }
}
