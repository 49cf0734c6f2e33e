//! The local disk behind the [`Backend`] seam: each slice streams to the upload's file at
//! its offset (see [`super`]).

use chunkwise_core::protocol::{Completed, Status, Transfer};
use futures_util::StreamExt as _;
use sha2::{Digest, Sha256};

use super::{superseded, SliceClaim, SliceTarget, SliceWriter, Store, Upload};
use crate::store::error::{ErrorKind, StoreError};
use crate::store::{
    Backend, BodyError, CreatedUpload, Finish, IncomingSlice, NewUpload, SliceBody, UploadInfo,
};

impl Upload {
    /// What hooks and logs know of it.
    pub fn info(&self) -> UploadInfo {
        UploadInfo {
            id: self.id().to_string(),
            chunk_size: self.chunk_size(),
            metadata: self.metadata().clone(),
            object: None,
        }
    }
}

impl Backend for Store {
    fn transfer(&self) -> Transfer {
        Transfer::Server
    }

    fn unfinished_uploads(&self) -> Option<u64> {
        Some(self.unfinished())
    }

    async fn create(&self, upload: NewUpload) -> Result<CreatedUpload, StoreError> {
        let limits = self.limits();
        if upload.chunk_size > limits.max_chunk_size_bytes {
            return Err(StoreError::new(
                ErrorKind::TooLarge,
                "chunk_size_too_large",
                format!(
                    "chunkSize {} exceeds the server's limit of {} bytes",
                    upload.chunk_size, limits.max_chunk_size_bytes
                ),
            ));
        }
        if let Some(size) = upload
            .size
            .filter(|&size| size > limits.max_upload_size_bytes)
        {
            return Err(StoreError::upload_too_large(
                size,
                limits.max_upload_size_bytes,
            ));
        }
        let created = Store::create(self, upload.chunk_size, upload.size, upload.metadata).await?;
        Ok(CreatedUpload {
            id: created.id().to_string(),
            chunk_size: created.chunk_size(),
        })
    }

    async fn status(&self, id: &str) -> Result<Status, StoreError> {
        self.get(id).await?.status().await
    }

    async fn put_slice(&self, id: &str, slice: IncomingSlice) -> Result<(), StoreError> {
        let upload = self.get(id).await?;
        let index = slice.index;
        // The newest attempt at a slice wins: one before it (its client gave up, maybe on a
        // connection that died without a word) is told to stop, and its bytes never count.
        let mut claim = upload.claim_slice(index);
        let result = async {
            let _guard = claim.acquire().await?;
            let (target, already_received) = upload
                .target(index, self.limits().max_upload_size_bytes)
                .await?;
            check_declared_len(index, &target, slice.declared_len)?;
            let len = if already_received {
                // Idempotent re-send: check it, but never touch bytes already acknowledged.
                receive(&target, slice.body, slice.digest, None, &mut claim).await?
            } else {
                let file = self.open_for_slice(&upload, target.offset).await?;
                receive(&target, slice.body, slice.digest, Some(file), &mut claim).await?
            };
            upload.mark_received(index, len, slice.digest).await
        }
        .await;
        upload.release_slice(claim);
        if result.is_ok() {
            upload.hash_ahead();
        }
        result
    }

    async fn complete(
        &self,
        id: &str,
        finish: Finish,
    ) -> Result<(Completed, UploadInfo), StoreError> {
        let upload = self.get(id).await?;
        let completed = Store::complete(
            self,
            &upload,
            finish.size,
            finish.sha256,
            finish.slices_sha256,
        )
        .await?;
        Ok((completed, upload.info()))
    }

    async fn delete(&self, id: &str) -> Result<UploadInfo, StoreError> {
        let upload = self.get(id).await?;
        Store::delete(self, &upload).await?;
        Ok(upload.info())
    }
}

fn check_declared_len(
    index: u64,
    target: &SliceTarget,
    declared: Option<u64>,
) -> Result<(), StoreError> {
    let Some(declared) = declared else {
        return Ok(());
    };
    let ok = match target.exact_len {
        Some(exact) => declared == exact,
        None => (1..=target.max_len).contains(&declared),
    };
    if ok {
        return Ok(());
    }
    let expected = match target.exact_len {
        Some(exact) => format!("exactly {exact} bytes"),
        None => format!("1 to {} bytes", target.max_len),
    };
    Err(StoreError::invalid(
        "length_mismatch",
        format!("slice {index} must be {expected}; Content-Length is {declared}"),
    ))
}

/// Streams a slice body to `writer` (or nowhere), checking length and digest as it goes.
/// On any failure (a cut body, one idle too long, a newer attempt taking over) the write in
/// flight is waited for, so nothing of this attempt lands after the next one's bytes.
async fn receive(
    target: &SliceTarget,
    body: SliceBody,
    digest: Option<[u8; 32]>,
    mut writer: Option<SliceWriter>,
    claim: &mut SliceClaim,
) -> Result<u64, StoreError> {
    let received = receive_into(target, body, digest, writer.as_mut(), claim).await;
    match (received, writer) {
        (Ok(len), Some(writer)) => writer.finish().await.map(|()| len),
        (Ok(len), None) => Ok(len),
        (Err(error), Some(writer)) => {
            writer.abandon().await;
            Err(error)
        }
        (Err(error), None) => Err(error),
    }
}

async fn receive_into(
    target: &SliceTarget,
    mut body: SliceBody,
    digest: Option<[u8; 32]>,
    mut writer: Option<&mut SliceWriter>,
    claim: &mut SliceClaim,
) -> Result<u64, StoreError> {
    let index = claim.index();
    let mut hasher = digest.map(|_| Sha256::new());
    let mut received = 0u64;
    loop {
        let frame = tokio::select! {
            biased;
            () = claim.superseded() => return Err(superseded(index)),
            frame = body.next() => frame,
        };
        let Some(frame) = frame else { break };
        let bytes = frame.map_err(|e| body_error(received, e))?;
        received += bytes.len() as u64;
        if received > target.max_len {
            return Err(StoreError::invalid(
                "length_mismatch",
                format!("slice {index} is longer than its {} bytes", target.max_len),
            ));
        }
        if let Some(h) = hasher.as_mut() {
            h.update(&bytes);
        }
        if let Some(w) = writer.as_deref_mut() {
            w.write(bytes).await?;
        }
    }
    let expected_ok = match target.exact_len {
        Some(exact) => received == exact,
        None => received >= 1,
    };
    if !expected_ok {
        return Err(StoreError::invalid(
            "length_mismatch",
            format!(
                "slice {index} has {received} bytes; expected {}",
                target.exact_len.unwrap_or(target.max_len)
            ),
        ));
    }
    if let (Some(hasher), Some(expected)) = (hasher, digest) {
        let actual: [u8; 32] = hasher.finalize().into();
        if actual != expected {
            return Err(StoreError::invalid(
                "digest_mismatch",
                format!("slice {index}'s bytes do not match its Content-Digest"),
            ));
        }
    }
    Ok(received)
}

/// A body that stopped: idle past the server's limit, or cut off.
fn body_error(received: u64, error: BodyError) -> StoreError {
    match error {
        BodyError::TimedOut => StoreError::new(
            ErrorKind::TimedOut,
            "body_timeout",
            format!("no byte of the body arrived for too long; {received} bytes were read"),
        ),
        BodyError::TooSlow(why) => StoreError::new(
            ErrorKind::TimedOut,
            "body_too_slow",
            format!("{why}; {received} bytes were read"),
        ),
        BodyError::Cut(why) => StoreError::invalid(
            "body_incomplete",
            format!("the slice body was cut off after {received} bytes: {why}"),
        ),
    }
}
