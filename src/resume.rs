//! Remembering unfinished uploads across reloads, keyed by a fingerprint of the file.
//!
//! The fingerprint is the file's name, size, `lastModified` and the SHA-256 of its first
//! MiB, so choosing the same file again (in a window or a worker) finds the upload it
//! started, and a different file with the same name does not.

use js_sys::{Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::Blob;

use crate::digest;

/// Bytes at the start of the file that go into its fingerprint.
const FINGERPRINT_HEAD_BYTES: f64 = 1024.0 * 1024.0;

#[wasm_bindgen(module = "/src/js/browser.js")]
extern "C" {
    #[wasm_bindgen(js_name = resumeGet)]
    fn resume_get(key: &str) -> Promise;
    #[wasm_bindgen(js_name = resumePut)]
    fn resume_put(key: &str, value: &JsValue) -> Promise;
    #[wasm_bindgen(js_name = resumeDelete)]
    fn resume_delete(key: &str) -> Promise;
    #[wasm_bindgen(js_name = resumeEntries)]
    fn resume_entries() -> Promise;
    #[wasm_bindgen(js_name = lockUpload)]
    fn lock_upload(key: &str) -> Promise;
}

/// The Web Lock on one file's upload to one endpoint, held across tabs and workers while
/// the upload runs; released when dropped (or by the browser when the tab goes away).
pub struct UploadLock(Option<js_sys::Function>);

impl Drop for UploadLock {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            let _ = release.call0(&JsValue::UNDEFINED);
        }
    }
}

/// What identifies one file's upload to one endpoint.
#[derive(Clone, Debug)]
pub struct ResumeKey {
    /// The store key: endpoint and fingerprint.
    pub key: String,
    /// The file's fingerprint alone.
    pub fingerprint: String,
    /// The endpoint.
    pub endpoint: String,
    /// The endpoint is a tus server.
    pub tus: bool,
}

fn string_prop(value: &JsValue, name: &str) -> Option<String> {
    Reflect::get(value, &name.into()).ok()?.as_string()
}

fn number_prop(value: &JsValue, name: &str) -> Option<f64> {
    Reflect::get(value, &name.into()).ok()?.as_f64()
}

/// The fingerprint of a Blob or File.
pub async fn fingerprint(blob: &Blob) -> Result<String, JsValue> {
    let name = string_prop(blob, "name").unwrap_or_default();
    let last_modified = number_prop(blob, "lastModified").unwrap_or(0.0);
    let head = blob.slice_with_f64_and_f64(0.0, blob.size().min(FINGERPRINT_HEAD_BYTES))?;
    let bytes = Uint8Array::new(&JsFuture::from(head.array_buffer()).await?);
    let head_sha = chunkwise_core::protocol::hex(&digest::wasm_sha256(&bytes));
    // Whole numbers print as before (Rust's float printing would cost ~20 KB of wasm).
    Ok(format!(
        "{name}\u{0}{}\u{0}{}\u{0}{head_sha}",
        blob.size() as u64,
        last_modified as u64
    ))
}

impl ResumeKey {
    /// The key for `blob` uploaded to `endpoint`.
    pub async fn new(blob: &Blob, endpoint: &str, tus: bool) -> Result<Self, JsValue> {
        let fingerprint = fingerprint(blob).await?;
        Ok(Self {
            key: format!("{endpoint}\n{fingerprint}"),
            fingerprint,
            endpoint: endpoint.to_string(),
            tus,
        })
    }

    /// The location remembered for this key.
    pub async fn remembered(&self) -> Option<String> {
        let value = JsFuture::from(resume_get(&self.key)).await.ok()?;
        string_prop(&value, "location")
    }

    /// Remembers `location`, in the background.
    pub fn remember(&self, location: &str, blob: &Blob, chunk_size_bytes: u64) {
        let value = Object::new();
        let set = |k: &str, v: JsValue| {
            let _ = Reflect::set(&value, &k.into(), &v);
        };
        set("location", location.into());
        set("endpoint", self.endpoint.as_str().into());
        set("fingerprint", self.fingerprint.as_str().into());
        set("name", string_prop(blob, "name").unwrap_or_default().into());
        set("size", blob.size().into());
        set("chunkSize", (chunk_size_bytes as f64).into());
        set("createdAt", js_sys::Date::now().into());
        if self.tus {
            set("protocol", "tus".into());
        }
        let promise = resume_put(&self.key, &value);
        wasm_bindgen_futures::spawn_local(async move {
            let _ = JsFuture::from(promise).await;
        });
    }

    /// Takes the lock on this upload, or `None` when another tab or worker of this site
    /// holds it now. Where the browser has no Web Locks (an insecure context), a lock that
    /// holds nothing: there is nothing to coordinate with.
    pub async fn lock(&self) -> Option<UploadLock> {
        match JsFuture::from(lock_upload(&self.key)).await {
            Ok(release) if release.is_null() => None,
            Ok(release) => Some(UploadLock(release.dyn_into().ok())),
            Err(_) => Some(UploadLock(None)),
        }
    }

    /// Forgets this key.
    pub async fn forget(&self) {
        let _ = JsFuture::from(resume_delete(&self.key)).await;
    }
}

/// Every remembered upload of a file with this fingerprint: `(store key, value)`.
pub async fn entries_for(fingerprint: &str) -> Vec<(String, JsValue)> {
    let Ok(entries) = JsFuture::from(resume_entries()).await else {
        return Vec::new();
    };
    js_sys::Array::from(&entries)
        .iter()
        .filter_map(|entry| {
            let key = string_prop(&entry, "key")?;
            let value = Reflect::get(&entry, &"value".into()).ok()?;
            (string_prop(&value, "fingerprint").as_deref() == Some(fingerprint))
                .then_some((key, value))
        })
        .collect()
}

/// Forgets a store key.
pub async fn forget_key(key: &str) {
    let _ = JsFuture::from(resume_delete(key)).await;
}
