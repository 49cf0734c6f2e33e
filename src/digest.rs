//! SHA-256 of slices, without copying slices into wasm memory.
//!
//! WebCrypto hashes a slice where the context has it (secure contexts: https and
//! localhost): it copies the bytes when called and hashes them natively on another
//! thread, with the CPU's SHA instructions where there are some. Elsewhere the slice is
//! hashed in wasm (sha2), fed through a fixed 64 KiB scratch buffer: wasm linear memory
//! never shrinks, so a whole slice must never be copied into it.
//!
//! The file as a whole is covered by the list of its slices' digests (see
//! [`chunkwise_core::protocol::SlicesDigest`]), which the server checks at `complete`.

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

/// The SHA-256 of `bytes`, hashed in wasm through the scratch buffer.
pub fn wasm_sha256(bytes: &Uint8Array) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let len = bytes.length();
    SCRATCH.with_borrow_mut(|scratch| {
        let mut offset = 0;
        while offset < len {
            let n = (len - offset).min(SCRATCH_BYTES);
            let part = &mut scratch[..n as usize];
            bytes.subarray(offset, offset + n).copy_to(part);
            hasher.update(&*part);
            offset += n;
        }
    });
    hasher.finalize().into()
}

/// The SHA-256 of `bytes`: by WebCrypto where it exists, else in wasm.
pub async fn slice_sha256(bytes: &Uint8Array) -> Result<[u8; 32], SourceError> {
    let read_error = |e: wasm_bindgen::JsValue| SourceError::Read(describe_js_error(&e));
    let Some(promise) = SUBTLE.with(|subtle| {
        subtle
            .as_ref()
            .map(|s| s.digest_with_str_and_buffer_source("SHA-256", bytes))
    }) else {
        return Ok(wasm_sha256(bytes));
    };
    let digest = JsFuture::from(promise.map_err(read_error)?)
        .await
        .map_err(read_error)?;
    Ok(webcrypto_digest(&digest))
}

/// The 32 bytes of a WebCrypto SHA-256 result (an ArrayBuffer).
pub fn webcrypto_digest(digest: &wasm_bindgen::JsValue) -> [u8; 32] {
    let mut out = [0u8; 32];
    Uint8Array::new(digest).copy_to(&mut out);
    out
}
