//! Object storage behind one seam: multipart uploads in a bucket of an S3-compatible store.
//!
//! [`Multipart`] is everything chunkwise asks of a store; the HTTP layer ([`super::bucket`])
//! only sees it. [`S3`] implements it with `aws-sdk-s3`: SigV4 signing and presigning,
//! `ListParts` with explicit part numbers, SHA-256 part checksums.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::store::error::{ErrorKind, StoreError};
use crate::store::SignedRequest;

/// One part the store holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// 1-based, as S3 numbers them: slice `i` is part `i + 1`.
    pub number: u32,
    /// Bytes.
    pub size: u64,
    /// The store's ETag, needed to complete.
    pub etag: String,
    /// The SHA-256 the store checked the part against, when it was sent with one.
    pub sha256: Option<[u8; 32]>,
}

/// An object the store holds.
#[derive(Clone, Debug)]
pub struct Head {
    /// Its size in bytes.
    pub size: u64,
    /// Its user metadata (`x-amz-meta-*`).
    pub metadata: BTreeMap<String, String>,
    /// For an object assembled from parts with SHA-256 checksums, the store's composite
    /// checksum: SHA-256 over the parts' SHA-256s, which is chunkwise's `slicesSha256`
    /// (lowercase hex). `None` when the store keeps none.
    pub slices_sha256: Option<String>,
}

/// What chunkwise needs from an object store.
pub trait Multipart: Send + Sync + 'static {
    /// Starts a multipart upload of `key` whose parts carry SHA-256 checksums; returns its
    /// upload id.
    fn create(
        &self,
        key: &str,
        metadata: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;
    /// Presigns the `PUT` of part `number` with its SHA-256, which the store checks.
    fn sign_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        sha256: &[u8; 32],
        len: u64,
        expires: Duration,
    ) -> impl Future<Output = Result<SignedRequest, StoreError>> + Send;
    /// Stores part `number` from `body` (`len` bytes), checked by the store against its
    /// SHA-256: a mismatch is `400 digest_mismatch`.
    fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        sha256: &[u8; 32],
        len: u64,
        body: ByteStream,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every part the store holds, in order; `None` when there is no such upload (it was
    /// completed or aborted).
    fn parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> impl Future<Output = Result<Option<Vec<Part>>, StoreError>> + Send;
    /// Completes the upload from `parts`.
    fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[Part],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Aborts the upload; its parts are deleted.
    fn abort(
        &self,
        key: &str,
        upload_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Deletes the object at `key`, if there is one.
    fn delete_object(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Stores an empty object (a multipart upload cannot have zero parts).
    fn put_empty(
        &self,
        key: &str,
        metadata: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The object at `key`, if there is one.
    fn head(&self, key: &str) -> impl Future<Output = Result<Option<Head>, StoreError>> + Send;
}

/// Where the bucket is and how to reach it.
#[derive(Clone, Debug)]
pub struct S3Config {
    /// The store's endpoint, e.g. `http://127.0.0.1:3900` or `https://s3.eu-west-1.amazonaws.com`.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// The region the store expects in signatures.
    pub region: String,
    /// Prepended to every object key.
    pub prefix: String,
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
}

/// A bucket of an S3-compatible store.
#[derive(Clone, Debug)]
pub struct S3 {
    client: aws_sdk_s3::Client,
    bucket: String,
    endpoint: String,
}

impl S3 {
    /// A client for `config`, path-style (`endpoint/bucket/key`), which every
    /// S3-compatible store answers.
    pub fn new(config: &S3Config) -> Self {
        let credentials = Credentials::new(
            &config.access_key_id,
            &config.secret_access_key,
            None,
            None,
            "chunkwise-server",
        );
        let sdk = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&config.endpoint)
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(true)
            // Checksums are chosen explicitly (SHA-256 per part), not added by the SDK.
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        S3 {
            client: aws_sdk_s3::Client::from_conf(sdk),
            bucket: config.bucket.clone(),
            endpoint: config.endpoint.clone(),
        }
    }

    /// Checks at start that the bucket exists and the credentials may use it, so that a
    /// wrong setting fails there, in words, and not on the first upload.
    pub async fn check(&self) -> Result<(), String> {
        let head = self.client.head_bucket().bucket(&self.bucket).send().await;
        let Err(error) = head else {
            return Ok(());
        };
        if error.raw_response().is_none() {
            return Err(self.explain(&error, "reaching the bucket").message);
        }
        // A HEAD answer has no body to say why; a listing's error does (a wrong region,
        // for one, is only named there).
        match self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .max_keys(1)
            .send()
            .await
        {
            Ok(_) => Err(self.explain(&error, "reaching the bucket").message),
            Err(listing) => Err(self.explain(&listing, "listing the bucket").message),
        }
    }

    /// An API error for a failed store request: the store's refusal is a 502 naming what
    /// to fix; a store that cannot be reached is a 503.
    fn explain<E>(&self, error: &SdkError<E, HttpResponse>, doing: &str) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let bucket = &self.bucket;
        let endpoint = &self.endpoint;
        match error {
            SdkError::ServiceError(service) => {
                let code = service.err().code().unwrap_or("unknown");
                let detail = service.err().message().unwrap_or("");
                let hint = match code {
                    "NoSuchBucket" | "NotFound" => format!(": there is no bucket {bucket:?} at {endpoint}"),
                    "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "Forbidden" => {
                        ": check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and that this key may use the bucket".to_string()
                    }
                    "AuthorizationHeaderMalformed" | "InvalidRegion" => {
                        ": check --s3-region, which the store's signatures must name (Garage's is in its s3_region setting, \"garage\" in its examples)".to_string()
                    }
                    _ => String::new(),
                };
                tracing::warn!(code, detail, doing, "the store refused");
                StoreError::new(
                    ErrorKind::Upstream,
                    "store_refused",
                    format!(
                        "the object store refused {doing} ({code}{}){hint}",
                        if detail.is_empty() {
                            String::new()
                        } else {
                            format!(": {detail}")
                        }
                    ),
                )
            }
            other => {
                let raw = other.raw_response().map(|r| r.status().as_u16());
                match raw {
                    Some(404) => StoreError::new(
                        ErrorKind::Upstream,
                        "store_refused",
                        format!("the object store answered 404 while {doing}: is there a bucket {bucket:?} at {endpoint}?"),
                    ),
                    Some(403) => StoreError::new(
                        ErrorKind::Upstream,
                        "store_refused",
                        format!("the object store answered 403 while {doing}: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and that this key may use bucket {bucket:?}"),
                    ),
                    _ => {
                        tracing::warn!(error = %aws_sdk_s3::error::DisplayErrorContext(other), doing, "the store is unreachable");
                        StoreError::new(
                            ErrorKind::Unavailable,
                            "store_unavailable",
                            format!("the object store at {endpoint} could not be reached while {doing}"),
                        )
                    }
                }
            }
        }
    }
}

impl S3 {
    /// UploadPart of part `number`, `len` bytes, with its SHA-256 for the store to check:
    /// presigned for the browser (direct mode) or sent from here (scale-out mode).
    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        sha256: &[u8; 32],
        len: u64,
    ) -> aws_sdk_s3::operation::upload_part::builders::UploadPartFluentBuilder {
        self.client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number as i32)
            .content_length(len as i64)
            .checksum_sha256(BASE64.encode(sha256))
    }
}

fn decode_sha256(b64: Option<&str>) -> Option<[u8; 32]> {
    let bytes = BASE64.decode(b64?).ok()?;
    bytes.try_into().ok()
}

impl Multipart for S3 {
    async fn create(
        &self,
        key: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<String, StoreError> {
        let mut request = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256);
        for (name, value) in metadata {
            request = request.metadata(name, value);
        }
        let created = request
            .send()
            .await
            .map_err(|e| self.explain(&e, "starting a multipart upload"))?;
        created.upload_id().map(str::to_string).ok_or_else(|| {
            StoreError::new(
                ErrorKind::Upstream,
                "store_refused",
                "the object store started a multipart upload without an id",
            )
        })
    }

    async fn sign_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        sha256: &[u8; 32],
        len: u64,
        expires: Duration,
    ) -> Result<SignedRequest, StoreError> {
        let config = PresigningConfig::expires_in(expires).map_err(|e| {
            StoreError::new(
                ErrorKind::Internal,
                "sign_failed",
                format!("cannot presign: {e}"),
            )
        })?;
        let presigned = self
            .upload_part(key, upload_id, number, sha256, len)
            .presigned(config)
            .await
            .map_err(|e| self.explain(&e, "presigning a part"))?;
        Ok(SignedRequest {
            method: presigned.method().to_string(),
            url: presigned.uri().to_string(),
            headers: presigned
                .headers()
                // The browser sets these itself and refuses to be told.
                .filter(|(name, _)| {
                    !name.eq_ignore_ascii_case("content-length")
                        && !name.eq_ignore_ascii_case("host")
                })
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        })
    }

    async fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        sha256: &[u8; 32],
        len: u64,
        body: ByteStream,
    ) -> Result<(), StoreError> {
        let sent = self
            .upload_part(key, upload_id, number, sha256, len)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e))
                if matches!(
                    e.err().code(),
                    Some("BadDigest" | "InvalidDigest" | "XAmzContentSHA256Mismatch")
                ) =>
            {
                Err(StoreError::invalid(
                    "digest_mismatch",
                    format!("slice {}'s bytes do not match their Content-Digest: corrupted on the way; send it again", number - 1),
                ))
            }
            Err(e) => Err(self.explain(&e, "storing a part")),
        }
    }

    async fn parts(&self, key: &str, upload_id: &str) -> Result<Option<Vec<Part>>, StoreError> {
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.clone())
                .send()
                .await;
            let page = match page {
                Ok(page) => page,
                Err(SdkError::ServiceError(e)) if e.err().code() == Some("NoSuchUpload") => {
                    return Ok(None)
                }
                Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                    return Ok(None)
                }
                Err(e) => return Err(self.explain(&e, "listing the parts")),
            };
            for part in page.parts() {
                parts.push(Part {
                    number: part.part_number().unwrap_or(0).max(0) as u32,
                    size: part.size().unwrap_or(0).max(0) as u64,
                    etag: part.e_tag().unwrap_or_default().to_string(),
                    sha256: decode_sha256(part.checksum_sha256()),
                });
            }
            if page.is_truncated() == Some(true) {
                marker = page.next_part_number_marker().map(str::to_string);
                if marker.is_some() {
                    continue;
                }
            }
            break;
        }
        parts.sort_by_key(|p| p.number);
        Ok(Some(parts))
    }

    async fn complete(&self, key: &str, upload_id: &str, parts: &[Part]) -> Result<(), StoreError> {
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.number as i32)
                            .e_tag(&p.etag)
                            .set_checksum_sha256(p.sha256.map(|d| BASE64.encode(d)))
                            .build()
                    })
                    .collect(),
            ))
            .build();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(completed)
            .send()
            .await
            .map_err(|e| self.explain(&e, "completing the multipart upload"))?;
        Ok(())
    }

    async fn abort(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().code() == Some("NoSuchUpload") => Ok(()),
            Err(e) => Err(self.explain(&e, "aborting the multipart upload")),
        }
    }

    async fn delete_object(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.explain(&e, "deleting the object"))?;
        Ok(())
    }

    async fn put_empty(
        &self,
        key: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let mut request = self.client.put_object().bucket(&self.bucket).key(key);
        for (name, value) in metadata {
            request = request.metadata(name, value);
        }
        request
            .send()
            .await
            .map_err(|e| self.explain(&e, "storing an empty object"))?;
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<Option<Head>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
        {
            Ok(head) => Ok(Some(Head {
                size: head.content_length().unwrap_or(0).max(0) as u64,
                slices_sha256: head.checksum_sha256().and_then(composite_sha256),
                metadata: head
                    .metadata()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            })),
            Err(SdkError::ServiceError(e))
                if e.err().code() == Some("NotFound") || e.raw().status().as_u16() == 404 =>
            {
                Ok(None)
            }
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(self.explain(&e, "looking up the object")),
        }
    }
}

/// A slice's body as the SDK's `ByteStream`, streamed: chunks go from the client's
/// connection to the store's as they arrive, through a channel of four, so a slice is never
/// held whole in memory.
pub fn stream_body(mut body: crate::store::SliceBody) -> ByteStream {
    use futures_util::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(std::io::Error::other);
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
    });
    ByteStream::from_body_1_x(ChannelBody(rx))
}

/// An HTTP body fed by a channel (`Send + Sync`, as the SDK needs; axum's body is not `Sync`).
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(http_body::Frame::data)))
    }
}

/// The digest in a composite SHA-256 checksum (`BASE64-PARTS`), as lowercase hex.
fn composite_sha256(checksum: &str) -> Option<String> {
    use base64::Engine as _;
    let (digest, parts) = checksum.split_once('-')?;
    parts.parse::<u64>().ok()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(digest)
        .ok()?;
    let digest: [u8; 32] = bytes.try_into().ok()?;
    Some(chunkwise_core::protocol::hex(&digest))
}
