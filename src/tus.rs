//! tus 1.0 (<https://tus.io/protocols/resumable-upload>), to the tus servers and services
//! people already run. `TusSession` (a [`Session`] in `src/js/browser.js`) answers the
//! requests [`crate::http::HttpTransport`] makes in direct mode with tus's: create is
//! `POST` (creation, creation-defer-length), status is `HEAD`, complete checks the offset
//! (and gives a deferred length), delete is `DELETE` (termination), and signing a slice
//! says how to `PATCH` it: at which offset, with which headers, and how many of its bytes
//! the server already holds. The engine sends one slice at a time, in order, as the
//! protocol asks; after a failure the session asks the server with `HEAD` where it stands.

use js_sys::{Array, Promise};
use wasm_bindgen::prelude::*;

use crate::s3::Session;

#[wasm_bindgen(module = "/src/js/browser.js")]
extern "C" {
    #[wasm_bindgen(js_name = tusSession)]
    fn tus_session(endpoint: &str, headers: Array, chunk_size: f64, given: bool) -> Session;
    /// Resolves with whether the server checks each `PATCH`'s SHA-256 (`OPTIONS`: the
    /// checksum extension with sha256); false when it cannot be asked within `ms`.
    #[wasm_bindgen(method)]
    pub fn discover(this: &Session, ms: f64) -> Promise;
}

impl Session {
    /// A session with the tus server at `endpoint`; `headers` go on every request.
    pub fn tus(
        endpoint: &str,
        headers: &[(String, String)],
        chunk_size_bytes: u64,
        given: bool,
    ) -> Self {
        let pairs = Array::new();
        for (name, value) in headers {
            pairs.push(&name.into());
            pairs.push(&value.into());
        }
        tus_session(endpoint, pairs, chunk_size_bytes as f64, given)
    }
}

/// Whether `key` can be a key of `Upload-Metadata`: the protocol separates pairs with
/// commas and a key from its value with a space.
pub fn is_metadata_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}
