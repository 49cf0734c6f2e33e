//! Straight to S3 through the app's own backend: the `s3` option's five callbacks do the
//! store calls (the backend holds the credentials and signs). `S3Session` (a
//! [`Session`] in `src/js/browser.js`) answers the requests [`crate::http::HttpTransport`] makes in direct
//! mode by calling them, so everything else (the engine, each part's `PUT`, the store's
//! XML errors, retries, resume) is the direct mode chunkwise-server uploads use.

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use web_sys::RequestInit;

#[wasm_bindgen(module = "/src/js/browser.js")]
extern "C" {
    /// A server in the page (`S3Session` or `TusSession` in `src/js/browser.js`): it
    /// answers the transport's requests to chunkwise-server (create, status, sign,
    /// complete, delete) in the protocol's shapes, by talking to what is really there.
    #[derive(Debug)]
    pub type Session;
    /// Answers a request of the transport (its `Response`, as `fetch` would).
    #[wasm_bindgen(method)]
    pub fn fetch(this: &Session, url: &str, init: &RequestInit) -> Promise;
    #[wasm_bindgen(js_name = s3Session)]
    fn s3_session(calls: &Object) -> Session;
}

impl Session {
    /// A session over the `s3` option's `calls`, checked by [`parse_callbacks`].
    pub fn s3(calls: &Object) -> Self {
        s3_session(calls)
    }
}

/// Where the transport sends an `s3` upload's create request.
pub const S3_ENDPOINT: &str = "s3:";

/// The names of the `s3` option's callbacks.
pub const CALLBACKS: [&str; 5] = [
    "createMultipartUpload",
    "signPart",
    "listParts",
    "completeMultipartUpload",
    "abortMultipartUpload",
];

/// Whether `location` names an upload made with the `s3` option.
pub fn is_s3_location(location: &str) -> bool {
    location.starts_with(S3_ENDPOINT)
}

/// The `s3` option, checked: an object holding the five callbacks, each a function. The
/// error names what is wrong and the value found there.
pub fn parse_callbacks(value: &JsValue) -> Result<Object, (String, JsValue)> {
    if !value.is_object() || value.is_function() || js_sys::Array::is_array(value) {
        return Err((
            format!(
                "s3 must be an object of the callbacks {}",
                CALLBACKS.join(", ")
            ),
            value.clone(),
        ));
    }
    for name in CALLBACKS {
        let callback = Reflect::get(value, &name.into()).unwrap_or_default();
        if !callback.is_instance_of::<Function>() {
            return Err((format!("s3.{name} must be a function"), callback));
        }
    }
    Ok(value.clone().unchecked_into())
}
