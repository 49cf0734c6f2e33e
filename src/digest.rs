//! SHA-256 of slices and of the whole file, without copying slices into wasm memory.
//!
//! The whole-file digest must see every byte in order, so it runs in wasm (sha2), fed
//! through a fixed 64 KiB scratch buffer: wasm linear memory never shrinks, so a whole
//! slice must never be copied into it. A slice's own digest goes to WebCrypto when the
//! context has it (secure contexts: https and localhost), which copies the bytes when
//! called and hashes them natively on another thread while wasm hashes the same bytes
//! for the whole file; elsewhere the slice is hashed in wasm too.

use std::cell::RefCell;

use chunkwise_core::engine::SourceError;
use js_sys::{Reflect, Uint8Array};
use sha2::{Digest, Sha256};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::SubtleCrypto;

use crate::interop::describe_js_error;

/// Bytes copied into wasm memory at a time.
pub const SCRATCH_BYTES: u32 = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES as usize]);
    static SUBTLE: Option<SubtleCrypto> = find_subtle();
}

fn find_subtle() -> Option<SubtleCrypto> {
    let crypto = Reflect::get(&js_sys::global(), &"crypto".into()).ok()?;
    Reflect::get(&crypto, &"subtle".into())
        .ok()?
        .dyn_into::<SubtleCrypto>()
        .ok()
}

/// Feeds `bytes` to every hasher in `hashers`, in order.
pub fn update(hashers: &mut [&mut Sha256], bytes: &Uint8Array) {
    if hashers.is_empty() {
        return;
    }
    let len = bytes.length();
    SCRATCH.with_borrow_mut(|scratch| {
        let mut offset = 0;
        while offset < len {
            let n = (len - offset).min(SCRATCH_BYTES);
            let part = &mut scratch[..n as usize];
            bytes.subarray(offset, offset + n).copy_to(part);
            for hasher in hashers.iter_mut() {
                hasher.update(&*part);
            }
            offset += n;
        }
    });
}

/// Whether WebCrypto can hash slices here.
pub fn native_available() -> bool {
    SUBTLE.with(Option::is_some)
}

/// The SHA-256 of `bytes` by WebCrypto, which copies them at once and hashes natively on
/// another thread (only where [`native_available`]).
pub async fn native_sha256(bytes: &Uint8Array) -> Result<[u8; 32], SourceError> {
    let read_error = |e: wasm_bindgen::JsValue| SourceError::Read(describe_js_error(&e));
    let promise = SUBTLE
        .with(|subtle| {
            subtle
                .as_ref()
                .map(|s| s.digest_with_str_and_buffer_source("SHA-256", bytes))
        })
        .ok_or_else(|| SourceError::Read("WebCrypto is not available".into()))?
        .map_err(read_error)?;
    let digest = JsFuture::from(promise).await.map_err(read_error)?;
    let mut out = [0u8; 32];
    Uint8Array::new(&digest).copy_to(&mut out);
    Ok(out)
}

/// Hashes one slice as its chunks arrive: every chunk goes into the whole-file hash at
/// once (so hashing overlaps the browser's reading of the next chunk); the slice's own
/// digest comes from WebCrypto over the assembled slice where it exists, else from a
/// second wasm hash.
pub struct SliceHasher {
    slice_hash: Option<Sha256>,
}

impl SliceHasher {
    /// A hasher for the next slice.
    pub fn new() -> Self {
        Self {
            slice_hash: (!native_available()).then(Sha256::new),
        }
    }

    /// Whether the caller must assemble the slice's bytes for [`Self::finish`].
    pub fn needs_bytes(&self) -> bool {
        self.slice_hash.is_none()
    }

    /// Feeds one chunk, in order.
    pub fn update(&mut self, file_hash: &mut Sha256, chunk: &Uint8Array) {
        match self.slice_hash.as_mut() {
            Some(slice_hash) => update(&mut [slice_hash, file_hash], chunk),
            None => update(&mut [file_hash], chunk),
        }
    }

    /// The slice's digest; `bytes` are the assembled slice when [`Self::needs_bytes`].
    pub async fn finish(self, bytes: &Uint8Array) -> Result<[u8; 32], SourceError> {
        match self.slice_hash {
            Some(slice_hash) => Ok(slice_hash.finalize().into()),
            None => native_sha256(bytes).await,
        }
    }
}

impl Default for SliceHasher {
    fn default() -> Self {
        Self::new()
    }
}
