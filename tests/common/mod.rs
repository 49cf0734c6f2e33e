//! Helpers shared by the browser and worker tests: sources built in JS, an independent
//! SHA-256 (WebCrypto), and the test server's fault-injection endpoints.
#![allow(dead_code)]

use chunkwise::Upload;
use js_sys::{Function, Object, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen(inline_js = r#"
export function patternBytes(n, seed) {
  const a = new Uint8Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) { x = (Math.imul(x, 1664525) + 1013904223) >>> 0; a[i] = x >>> 24; }
  return a;
}
export function patternBlob(n, seed) { return new Blob([patternBytes(n, seed)]); }
export function patternFile(n, seed, name) { return new File([patternBytes(n, seed)], name); }
export async function sha256Hex(blob) {
  const d = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}
// A stream of the blob's bytes in irregular chunks (1 byte to ~300 KiB), never aligned to slices.
export function irregularStream(blob) {
  let offset = 0, turn = 0;
  const sizes = [1, 4093, 65536, 307201, 17, 131072, 99999];
  return new ReadableStream({
    async pull(controller) {
      if (offset >= blob.size) { controller.close(); return; }
      const n = sizes[turn++ % sizes.length];
      const part = new Uint8Array(await blob.slice(offset, offset + n).arrayBuffer());
      offset += part.length;
      controller.enqueue(part);
    },
  });
}
export async function setFaults(server, key, rules) {
  const r = await fetch(`${server}/_test/faults/${key}`, { method: "POST", body: JSON.stringify(rules) });
  if (r.status !== 204) throw new Error(`setting faults failed: ${r.status}`);
}
export async function faultStats(server, key) {
  return (await fetch(`${server}/_test/faults/${key}`)).json();
}
export async function httpStatus(url) { return (await fetch(url)).status; }
export async function httpDelete(url) { return (await fetch(url, { method: "DELETE" })).status; }
export function sliceRecorder() {
  const rec = { events: [], sending: new Set(), maxSending: 0 };
  rec.onSlice = (e) => {
    rec.events.push(e);
    if (e.state === "sending") rec.sending.add(e.index); else rec.sending.delete(e.index);
    rec.maxSending = Math.max(rec.maxSending, rec.sending.size);
  };
  return rec;
}
export function progressRecorder() {
  const rec = { events: [] };
  rec.onProgress = (p) => rec.events.push(p);
  return rec;
}
export function monotonic(events) {
  for (let i = 1; i < events.length; i++) if (events[i].bytesSent < events[i - 1].bytesSent) return false;
  return true;
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = patternBlob)]
    pub fn pattern_blob(len: f64, seed: u32) -> web_sys::Blob;
    #[wasm_bindgen(js_name = patternFile)]
    pub fn pattern_file(len: f64, seed: u32, name: &str) -> web_sys::Blob;
    #[wasm_bindgen(js_name = sha256Hex)]
    async fn sha256_hex_js(blob: &web_sys::Blob) -> JsValue;
    #[wasm_bindgen(js_name = irregularStream)]
    pub fn irregular_stream(blob: &web_sys::Blob) -> web_sys::ReadableStream;
    #[wasm_bindgen(js_name = setFaults)]
    async fn set_faults_js(server: &str, key: &str, rules: JsValue);
    #[wasm_bindgen(js_name = faultStats)]
    async fn fault_stats_js(server: &str, key: &str) -> JsValue;
    #[wasm_bindgen(js_name = httpStatus)]
    async fn http_status_js(url: &str) -> JsValue;
    #[wasm_bindgen(js_name = httpDelete)]
    async fn http_delete_js(url: &str) -> JsValue;
    #[wasm_bindgen(js_name = sliceRecorder)]
    pub fn slice_recorder() -> JsValue;
    #[wasm_bindgen(js_name = progressRecorder)]
    pub fn progress_recorder() -> JsValue;
    pub fn monotonic(events: &JsValue) -> bool;
}

/// The test server, as the test command started it.
pub fn server() -> &'static str {
    match option_env!("CHUNKWISE_TEST_SERVER") {
        Some(url) => url,
        None => panic!("CHUNKWISE_TEST_SERVER must be set at build time: run ./scripts/test"),
    }
}

/// The server's uploads endpoint.
pub fn endpoint() -> String {
    format!("{}/uploads", server())
}

/// SHA-256 by WebCrypto, independent of the library's own hashing.
pub async fn sha256_hex(blob: &web_sys::Blob) -> String {
    sha256_hex_js(blob).await.as_string().unwrap()
}

/// Options from JSON, plus JS values (callbacks, signals) set on top.
pub fn options(json: serde_json::Value, extra: &[(&str, &JsValue)]) -> JsValue {
    let object = js_sys::JSON::parse(&json.to_string()).unwrap();
    for (key, value) in extra {
        Reflect::set(&object, &(*key).into(), value).unwrap();
    }
    object
}

/// A property of a JS object.
pub fn prop(object: &JsValue, key: &str) -> JsValue {
    Reflect::get(object, &key.into()).unwrap()
}

/// A string property.
pub fn string(object: &JsValue, key: &str) -> String {
    prop(object, key)
        .as_string()
        .unwrap_or_else(|| panic!("{key} is not a string: {:?}", prop(object, key)))
}

/// A number property.
pub fn number(object: &JsValue, key: &str) -> f64 {
    prop(object, key)
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number: {:?}", prop(object, key)))
}

/// Runs an upload to the end.
pub async fn run(source: &JsValue, options: JsValue) -> Result<JsValue, JsValue> {
    let upload = Upload::new(source.clone(), options)?;
    JsFuture::from(upload.start()).await
}

/// Sets fault rules for `key`.
pub async fn set_faults(key: &str, rules: serde_json::Value) {
    set_faults_js(
        server(),
        key,
        js_sys::JSON::parse(&rules.to_string()).unwrap(),
    )
    .await;
}

/// What the server saw for `key`.
pub async fn fault_stats(key: &str) -> JsValue {
    fault_stats_js(server(), key).await
}

/// The HTTP status of a GET.
pub async fn http_status(url: &str) -> u16 {
    http_status_js(url).await.as_f64().unwrap() as u16
}

/// The HTTP status of a DELETE.
pub async fn http_delete(url: &str) -> u16 {
    http_delete_js(url).await.as_f64().unwrap() as u16
}

/// A fault key unique to this test run.
pub fn unique_key(name: &str) -> String {
    format!("{name}-{}", (js_sys::Math::random() * 1e12) as u64)
}

/// The callback a recorder exposes.
pub fn callback(recorder: &JsValue, name: &str) -> Function {
    prop(recorder, name).unchecked_into()
}

/// Asserts that a successful upload stored exactly `blob`'s bytes.
pub async fn assert_uploaded(result: &JsValue, blob: &web_sys::Blob) {
    let expected = sha256_hex(blob).await;
    assert_eq!(
        string(result, "sha256"),
        expected,
        "server's SHA-256 of the stored bytes"
    );
    assert_eq!(number(result, "size"), blob.size());
}

/// An empty object.
pub fn object() -> JsValue {
    Object::new().into()
}
