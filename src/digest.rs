//! SHA-256 over JS bytes through a small fixed scratch buffer.
//!
//! Slice bytes stay in JS `Uint8Array`s: copying a whole slice into wasm linear memory
//! would grow it for good (it never shrinks), so bytes are hashed 64 KiB at a time.

use std::cell::RefCell;

use js_sys::Uint8Array;
use sha2::{Digest, Sha256};

/// Bytes copied into wasm memory at a time.
pub const SCRATCH_BYTES: u32 = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES as usize]);
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
