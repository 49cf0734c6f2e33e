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

/// The SHA-256 of one slice's bytes, feeding the same bytes to `file_hash`.
pub async fn slice_and_file(
    bytes: &Uint8Array,
    file_hash: &mut Sha256,
) -> Result<[u8; 32], SourceError> {
    let native = SUBTLE.with(|subtle| {
        subtle
            .as_ref()
            .map(|s| s.digest_with_str_and_buffer_source("SHA-256", bytes))
    });
    match native {
        Some(Ok(promise)) => {
            update(&mut [file_hash], bytes);
            let digest = JsFuture::from(promise)
                .await
                .map_err(|e| SourceError::Read(describe_js_error(&e)))?;
            let mut out = [0u8; 32];
            Uint8Array::new(&digest).copy_to(&mut out);
            Ok(out)
        }
        _ => {
            let mut slice_hash = Sha256::new();
            update(&mut [&mut slice_hash, file_hash], bytes);
            Ok(slice_hash.finalize().into())
        }
    }
}
