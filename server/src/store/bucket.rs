//! Uploads kept in an S3-compatible bucket, behind the [`Backend`] seam, in one of two
//! modes.
//!
//! **Direct** (`--s3-bucket`): the browser sends slices straight to the store; this server
//! only signs. **Through** (`--store s3://bucket/prefix`): slices stream through this
//! server, which passes each to the store as a part with the client's `Content-Digest` as
//! its SHA-256 checksum, so the store checks it; everything else is the same.
//!
//! `POST /uploads` starts a multipart upload whose parts carry SHA-256 checksums. For each
//! slice the browser asks `POST /uploads/{id}/sign` with the slice's SHA-256 and gets a
//! presigned `PUT` of that part, valid for minutes, signed just in time (so no URL can
//! expire in a queue); the store checks the checksum and refuses a corrupted part.
//! `GET /uploads/{id}` lists the parts the store holds (resuming), `POST /uploads/{id}`
//! checks every part's size and SHA-256 against the client's digest of all slices and
//! completes, `DELETE` aborts. The store, not this server, is the source of truth, and the
//! upload id is a signed token naming the multipart upload, so any number of instances
//! with the same credentials serve one upload, and one may be killed mid-upload.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chunkwise_core::protocol::{self, Completed, SlicesDigest, Status, Transfer, VERSION};

use crate::store::error::{ErrorKind, StoreError};
use crate::store::s3::{Multipart, Part};
use crate::store::token::{self, Token};
use crate::store::{
    Backend, CreatedUpload, Finish, IncomingSlice, NewUpload, SignedRequest, UploadInfo,
};

/// S3's limits on multipart uploads.
const MAX_PARTS: u64 = 10_000;
const MAX_PART_SIZE: u64 = 5 << 30;
/// How long a presigned part URL lives. It is signed when the slice is about to go, so
/// this only has to cover one slice on a slow link.
const SIGNED_FOR: Duration = Duration::from_secs(60 * 60);
/// User metadata S3 keeps is at most 2 KiB; chunkwise's goes in one entry, as JSON.
const MAX_METADATA_JSON_BYTES: usize = 1536;

/// Uploads in a bucket.
pub struct Bucket<M> {
    /// The store.
    pub store: M,
    /// The bucket's name, for the hooks' events.
    pub bucket: String,
    /// Prepended to each upload id to make its object key.
    pub prefix: String,
    /// Signs upload tokens; the same for every instance that shares the store.
    pub token_key: [u8; 32],
    /// The smallest part the store accepts (all but the last); S3's is 5 MiB.
    pub min_part_size: u64,
    /// Largest upload, in bytes (deferred sizes included: no slice may reach past it).
    pub max_upload_size: u64,
    /// Largest slice, in bytes.
    pub max_chunk_size: u64,
    /// Slices pass through this server (scale-out mode) instead of going straight to the
    /// store.
    pub through: bool,
}

impl<M> Bucket<M> {
    fn seal(&self, token: &Token) -> String {
        token::seal(&self.token_key, token)
    }

    fn open(&self, text: &str) -> Result<Token, StoreError> {
        token::open(&self.token_key, text).ok_or_else(|| {
            StoreError::new(
                ErrorKind::NotFound,
                "upload_not_found",
                "no such upload: the id is not one this server (or another sharing its store) gave out",
            )
        })
    }

    fn key(&self, token: &Token) -> String {
        format!("{}{}", self.prefix, token.id)
    }
}

/// The length of slice `index`, when the size is known.
fn slice_len(token: &Token, index: u64) -> Option<u64> {
    let size = token.size?;
    let start = index.checked_mul(token.chunk_size)?;
    (start < size).then(|| (size - start).min(token.chunk_size))
}

/// The slicing of an upload of `size` bytes asked in slices of `chunk`: `chunk` itself, or
/// larger slices when `chunk` would need more parts than the store takes. A slice smaller
/// than the store's smallest part is refused, unless it is the only one.
fn plan_chunk(chunk: u64, size: Option<u64>, min_part_size: u64) -> Result<u64, StoreError> {
    let one_slice = size.is_some_and(|size| size <= chunk);
    if (chunk < min_part_size && !one_slice) || chunk > MAX_PART_SIZE {
        return Err(StoreError::invalid(
            "chunk_size_refused",
            format!(
                "chunkSize {chunk} is not one the object store accepts: its parts must be from {min_part_size} ({} MiB) to {MAX_PART_SIZE} bytes; use e.g. chunkSize: 8388608",
                min_part_size >> 20
            ),
        ));
    }
    let Some(size) = size.filter(|&size| size.div_ceil(chunk) > MAX_PARTS) else {
        return Ok(chunk);
    };
    // Whole MiB, so that the slices stay aligned to what readers and disks like.
    let larger = size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20);
    if larger > MAX_PART_SIZE.min(chunkwise_core::config::MAX_CHUNK_SIZE_BYTES) {
        return Err(StoreError::upload_too_large(
            size,
            MAX_PARTS * MAX_PART_SIZE.min(chunkwise_core::config::MAX_CHUNK_SIZE_BYTES),
        ));
    }
    Ok(larger)
}

/// Refuses a slice past the store's part limit, past the end, or of the wrong length.
fn check_slice(
    token: &Token,
    index: u64,
    len: u64,
    max_upload_size: u64,
) -> Result<(), StoreError> {
    // An upload of deferred size is bounded too: no slice reaches past the limit.
    let end = index.saturating_mul(token.chunk_size).saturating_add(len);
    if token.size.is_none() && end > max_upload_size {
        return Err(StoreError::new(
            ErrorKind::TooLarge,
            "upload_too_large",
            format!("slice {index} ends at byte {end}, past the server's limit of {max_upload_size} bytes"),
        ));
    }
    if index >= MAX_PARTS {
        return Err(StoreError::invalid(
            "too_many_slices",
            format!("a store upload has at most {MAX_PARTS} parts; use a larger chunkSize"),
        ));
    }
    let expected = match token.size {
        Some(_) => slice_len(token, index).ok_or_else(|| {
            StoreError::invalid(
                "slice_out_of_range",
                format!("slice {index} is past the end of the upload"),
            )
        })?,
        None => token.chunk_size,
    };
    let wrong = match token.size {
        Some(_) => len != expected,
        None => len > expected || len == 0,
    };
    if wrong {
        return Err(StoreError::invalid(
            "wrong_slice_size",
            format!("slice {index} must be {expected} bytes, not {len}"),
        ));
    }
    Ok(())
}

/// Metadata as the store keeps it: one `chunkwise` entry of JSON, base64 (S3 metadata is
/// headers: ASCII, 2 KiB in all).
fn store_metadata(
    metadata: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, StoreError> {
    if metadata.is_empty() {
        return Ok(BTreeMap::new());
    }
    let json = serde_json::to_string(metadata).unwrap_or_default();
    if json.len() > MAX_METADATA_JSON_BYTES {
        return Err(StoreError::invalid(
            "invalid_metadata",
            format!("an object store keeps at most 2 KiB of metadata: at most {MAX_METADATA_JSON_BYTES} bytes of JSON; this takes {}", json.len()),
        ));
    }
    Ok(BTreeMap::from([(
        "chunkwise".to_string(),
        URL_SAFE_NO_PAD.encode(json),
    )]))
}

/// The metadata [`store_metadata`] kept, read back.
fn read_metadata(stored: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    stored
        .get("chunkwise")
        .and_then(|b64| URL_SAFE_NO_PAD.decode(b64).ok())
        .and_then(|json| serde_json::from_slice(&json).ok())
        .unwrap_or_default()
}

impl<M: Multipart> Bucket<M> {
    fn info(&self, id: &str, token: &Token, metadata: BTreeMap<String, String>) -> UploadInfo {
        UploadInfo {
            id: id.to_string(),
            chunk_size: token.chunk_size,
            metadata,
            object: Some(format!("s3://{}/{}", self.bucket, self.key(token))),
        }
    }

    fn status_of(
        &self,
        id: &str,
        token: &Token,
        size: Option<u64>,
        received: Vec<[u64; 2]>,
        bytes: u64,
        complete: bool,
    ) -> Status {
        Status {
            id: id.to_string(),
            chunk_size: token.chunk_size,
            size,
            received,
            bytes_received: bytes,
            complete,
            protocol: VERSION,
            transfer: self.transfer(),
            metadata: BTreeMap::new(),
        }
    }

    /// The parts of the upload's multipart upload; `None` when there is none (completed,
    /// aborted, or an empty file stored at create).
    async fn parts(&self, key: &str, token: &Token) -> Result<Option<Vec<Part>>, StoreError> {
        if token.upload_id.is_empty() {
            return Ok(None);
        }
        self.store.parts(key, &token.upload_id).await
    }
}

impl<M: Multipart> Backend for Bucket<M> {
    fn transfer(&self) -> Transfer {
        if self.through {
            Transfer::Server
        } else {
            Transfer::Direct
        }
    }

    async fn create(&self, upload: NewUpload) -> Result<CreatedUpload, StoreError> {
        if let Some(size) = upload.size.filter(|&size| size > self.max_upload_size) {
            return Err(StoreError::upload_too_large(size, self.max_upload_size));
        }
        let chunk_size = plan_chunk(upload.chunk_size, upload.size, self.min_part_size)?;
        if chunk_size > self.max_chunk_size {
            return Err(StoreError::new(
                ErrorKind::TooLarge,
                "chunk_size_too_large",
                format!(
                    "chunkSize {chunk_size} exceeds the server's limit of {} bytes",
                    self.max_chunk_size
                ),
            ));
        }
        let stored = store_metadata(&upload.metadata)?;
        let token = Token {
            id: crate::store::new_id()?,
            upload_id: String::new(),
            chunk_size,
            size: upload.size,
        };
        let key = self.key(&token);
        let upload_id = if upload.size == Some(0) {
            // A multipart upload cannot have zero parts, and its metadata cannot be read
            // back: an empty file is stored whole, with its metadata, at once.
            self.store.put_empty(&key, &stored).await?;
            String::new()
        } else {
            self.store.create(&key, &stored).await?
        };
        let token = Token { upload_id, ..token };
        Ok(CreatedUpload {
            id: self.seal(&token),
            chunk_size,
        })
    }

    /// `PUT /uploads/{id}` (scale-out mode): the body streams into the store as a part,
    /// checked there against the slice's digest.
    async fn put_slice(&self, id: &str, slice: IncomingSlice) -> Result<(), StoreError> {
        let token = self.open(id)?;
        let digest = slice.digest.ok_or_else(|| {
            StoreError::invalid(
                "digest_required",
                "uploads kept in an object store need each slice's Content-Digest (sha-256), which the store checks: use digest \"sha-256\"",
            )
        })?;
        let len = slice.declared_len.ok_or_else(|| {
            StoreError::new(
                ErrorKind::LengthRequired,
                "length_required",
                "a slice needs Content-Length",
            )
        })?;
        check_slice(&token, slice.index, len, self.max_upload_size)?;
        let body = crate::store::s3::stream_body(slice.body);
        self.store
            .put_part(
                &self.key(&token),
                &token.upload_id,
                (slice.index + 1) as u32,
                &digest,
                len,
                body,
            )
            .await
    }

    async fn sign_slice(
        &self,
        id: &str,
        index: u64,
        len: u64,
        sha256: Option<[u8; 32]>,
    ) -> Result<SignedRequest, StoreError> {
        let token = self.open(id)?;
        let Some(sha256) = sha256 else {
            return Err(StoreError::invalid(
                "digest_required",
                "uploads straight to the object store need each slice's SHA-256 (the store checks it): use digest \"sha-256\"",
            ));
        };
        check_slice(&token, index, len, self.max_upload_size)?;
        self.store
            .sign_part(
                &self.key(&token),
                &token.upload_id,
                (index + 1) as u32,
                &sha256,
                len,
                SIGNED_FOR,
            )
            .await
    }

    async fn status(&self, id: &str) -> Result<Status, StoreError> {
        let token = self.open(id)?;
        let key = self.key(&token);
        let Some(parts) = self.parts(&key, &token).await? else {
            // Completed, or aborted.
            return match self.store.head(&key).await? {
                Some(head) => {
                    Ok(self.status_of(id, &token, Some(head.size), Vec::new(), head.size, true))
                }
                None => Err(StoreError::upload_not_found(&token.id)),
            };
        };
        let mut received: Vec<[u64; 2]> = Vec::new();
        let mut bytes = 0;
        for part in parts.iter().filter(|p| p.number >= 1) {
            let index = u64::from(part.number - 1);
            if slice_len(&token, index).is_some_and(|len| len != part.size) {
                continue;
            }
            bytes += part.size;
            match received.last_mut() {
                Some(range) if range[1] == index => range[1] += 1,
                _ => received.push([index, index + 1]),
            }
        }
        Ok(self.status_of(id, &token, token.size, received, bytes, false))
    }

    async fn complete(
        &self,
        id: &str,
        finish: Finish,
    ) -> Result<(Completed, UploadInfo), StoreError> {
        let token = self.open(id)?;
        let key = self.key(&token);
        let size = match (token.size, finish.size) {
            (Some(ours), Some(theirs)) if ours != theirs => {
                return Err(StoreError::invalid(
                    "size_mismatch",
                    format!("the upload was created with size {ours}, not {theirs}"),
                ))
            }
            (Some(size), _) | (None, Some(size)) => size,
            (None, None) => {
                return Err(StoreError::invalid(
                    "size_required",
                    "complete needs the size of an upload created without one",
                ))
            }
        };
        if size > self.max_upload_size {
            return Err(StoreError::upload_too_large(size, self.max_upload_size));
        }
        let completed = |slices_sha256: Option<String>| Completed {
            id: id.to_string(),
            size,
            // The bytes never rested here: the store checked each part's SHA-256, and the
            // digest of all of them matched the client's. There is no whole-file hash.
            sha256: None,
            slices_sha256,
        };
        let theirs = finish.slices_sha256.map(|d| protocol::hex(&d));
        let Some(parts) = self.parts(&key, &token).await? else {
            // Completed already (a retried complete) or aborted. The answer is what the
            // store holds, never what this request claims.
            let Some(head) = self.store.head(&key).await? else {
                return Err(StoreError::upload_not_found(&token.id));
            };
            if head.size != size {
                return Err(StoreError::invalid(
                    "size_mismatch",
                    format!("the upload completed with size {}, not {size}", head.size),
                ));
            }
            let stored = match head.slices_sha256 {
                Some(stored) => Some(stored),
                None if size == 0 => Some(SlicesDigest::new().finish()),
                None => None,
            };
            match (&stored, &theirs) {
                (Some(stored), Some(theirs)) if !stored.eq_ignore_ascii_case(theirs) => {
                    return Err(StoreError::invalid(
                        "digest_mismatch",
                        "the slicesSha256 given differs from the stored slices'",
                    ));
                }
                (None, Some(_)) => {
                    return Err(StoreError::conflict(
                        "upload_complete",
                        "the upload is already complete, and the store keeps no checksum to check this slicesSha256 against; GET the upload for its state",
                    ));
                }
                _ => {}
            }
            return Ok((
                completed(stored),
                self.info(id, &token, read_metadata(&head.metadata)),
            ));
        };
        let sized = Token {
            size: Some(size),
            ..token.clone()
        };
        let count = size.div_ceil(token.chunk_size);
        let by_number: BTreeMap<u32, &Part> = parts.iter().map(|p| (p.number, p)).collect();
        let missing: Vec<u64> = (0..count)
            .filter(|&i| {
                by_number
                    .get(&((i + 1) as u32))
                    .is_none_or(|p| Some(p.size) != slice_len(&sized, i))
            })
            .take(10)
            .collect();
        if !missing.is_empty() {
            return Err(StoreError::conflict(
                "slices_missing",
                format!("the store lacks slices (or holds them with the wrong size): {missing:?}"),
            ));
        }
        // Every part was checked by the store against the SHA-256 it came with; the digest
        // of all of them must be the client's digest of what it read.
        let mut digest = SlicesDigest::new();
        let mut chosen = Vec::with_capacity(count as usize);
        for i in 0..count {
            let part = by_number[&((i + 1) as u32)];
            let Some(sha256) = part.sha256 else {
                return Err(StoreError::new(
                    ErrorKind::Upstream,
                    "store_refused",
                    format!("the store holds part {} without its SHA-256 checksum; this store does not check part checksums", i + 1),
                ));
            };
            digest.push(&sha256);
            chosen.push(part.clone());
        }
        let ours = digest.finish();
        if theirs
            .as_ref()
            .is_some_and(|theirs| !theirs.eq_ignore_ascii_case(&ours))
        {
            return Err(StoreError::invalid(
                "digest_mismatch",
                format!(
                    "the store's slices have digest {ours} but the client's have {}",
                    theirs.unwrap_or_default()
                ),
            ));
        }
        if count == 0 {
            // A multipart upload cannot have zero parts.
            self.store.abort(&key, &token.upload_id).await?;
            let metadata = BTreeMap::new();
            self.store.put_empty(&key, &metadata).await?;
        } else {
            self.store.complete(&key, &token.upload_id, &chosen).await?;
        }
        let head = self.store.head(&key).await?;
        if head.as_ref().map(|h| h.size) != Some(size) {
            return Err(StoreError::new(
                ErrorKind::Upstream,
                "store_refused",
                format!(
                    "the store completed the upload but holds {:?} bytes instead of {size}",
                    head.map(|h| h.size)
                ),
            ));
        }
        let metadata = head.map(|h| read_metadata(&h.metadata)).unwrap_or_default();
        tracing::info!(key, size, "object stored");
        Ok((completed(Some(ours)), self.info(id, &token, metadata)))
    }

    async fn delete(&self, id: &str) -> Result<UploadInfo, StoreError> {
        let token = self.open(id)?;
        let key = self.key(&token);
        if !token.upload_id.is_empty() {
            self.store.abort(&key, &token.upload_id).await?;
        }
        // Complete or not, the upload goes: the key is this upload's own.
        let metadata = match self.store.head(&key).await? {
            Some(head) => {
                self.store.delete_object(&key).await?;
                read_metadata(&head.metadata)
            }
            // S3 cannot list an unfinished upload's metadata, so the event carries none.
            None => BTreeMap::new(),
        };
        Ok(self.info(id, &token, metadata))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> Bucket<()> {
        Bucket {
            store: (),
            bucket: "b".into(),
            prefix: "p/".into(),
            token_key: token::key("secret", "b", "p/"),
            min_part_size: 5 << 20,
            max_upload_size: 1 << 40,
            max_chunk_size: 256 << 20,
            through: false,
        }
    }

    #[test]
    fn an_id_not_sealed_by_this_store_is_not_found() {
        let error = state().open("abc.def.1.u.xyz").unwrap_err();
        assert_eq!(error.kind, ErrorKind::NotFound);
        assert_eq!(error.code, "upload_not_found");
    }

    #[test]
    fn a_file_too_big_for_its_chunk_size_gets_larger_slices() {
        const MIB: u64 = 1 << 20;
        let min = 5 * MIB;
        assert_eq!(
            plan_chunk(8 * MIB, Some(80_000 * MIB), min).unwrap(),
            8 * MIB
        );
        // 10,001 slices of 8 MiB: the next whole MiB that fits in 10,000 parts.
        let size = 10_000 * 8 * MIB + 1;
        let chosen = plan_chunk(8 * MIB, Some(size), min).unwrap();
        assert_eq!(chosen, 9 * MIB);
        assert!(size.div_ceil(chosen) <= MAX_PARTS);
        assert_eq!(plan_chunk(8 * MIB, None, min).unwrap(), 8 * MIB);
        // Beyond 10,000 slices of the client's largest (1 GiB): refused, not truncated.
        let error = plan_chunk(8 * MIB, Some(10_000 * 1024 * MIB + 1), min).unwrap_err();
        assert_eq!(error.code, "upload_too_large");
    }

    #[test]
    fn a_small_chunk_size_is_refused_unless_there_is_one_slice() {
        const MIB: u64 = 1 << 20;
        let error = plan_chunk(MIB, Some(3 * MIB), 5 * MIB).unwrap_err();
        assert_eq!(error.code, "chunk_size_refused");
        assert!(error.message.contains("5242880"), "{}", error.message);
        assert!(plan_chunk(MIB, None, 5 * MIB).is_err());
        assert_eq!(plan_chunk(MIB, Some(MIB), 5 * MIB).unwrap(), MIB);
        assert_eq!(plan_chunk(MIB, Some(0), 5 * MIB).unwrap(), MIB);
    }

    #[test]
    fn slice_lengths() {
        let token = Token {
            id: String::new(),
            upload_id: String::new(),
            chunk_size: 10,
            size: Some(25),
        };
        assert_eq!(slice_len(&token, 0), Some(10));
        assert_eq!(slice_len(&token, 2), Some(5));
        assert_eq!(slice_len(&token, 3), None);
    }
}
