//! Pause and resume, the stall watchdog, and resuming uploads, in a real browser against
//! the real server with injected faults.
#![cfg(target_arch = "wasm32")]

mod common;

use chunkwise::Upload;
use common::*;
use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const CHUNK: f64 = 256.0 * 1024.0;

#[wasm_bindgen(inline_js = r#"
// Stands in for a Blob whose first `stalls` streams never give a byte, as a read of
// Chromium's blob stream once did; later streams read `blob`.
export function stallingBlob(blob, stalls) {
  const fake = {
    calls: 0,
    size: blob.size,
    stream() {
      fake.calls += 1;
      if (fake.calls > stalls) return blob.stream();
      // A byte stream where the engine has them (WebKitGTK 2.50 has not: a default one).
      const pull = () => new Promise(() => {});
      try { return new ReadableStream({ type: "bytes", pull }); } catch { return new ReadableStream({ pull }); }
    },
  };
  return fake;
}

// Makes WebCrypto's next `stalls` digests never answer; returns a counter of digests asked.
export function stallDigests(stalls) {
  const subtle = crypto.subtle;
  const real = subtle.digest;
  const counter = { calls: 0 };
  subtle.digest = function (...args) {
    counter.calls += 1;
    if (counter.calls > stalls) delete subtle.digest;
    return counter.calls <= stalls ? new Promise(() => {}) : real.apply(subtle, args);
  };
  return counter;
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = stallingBlob)]
    fn stalling_blob(blob: &web_sys::Blob, stalls: u32) -> JsValue;
    #[wasm_bindgen(js_name = stallDigests)]
    fn stall_digests(stalls: u32) -> JsValue;
}

#[wasm_bindgen(module = "/src/js/browser.js")]
extern "C" {
    /// The library's slice reader, with a short stall limit.
    #[wasm_bindgen(js_name = readSlice)]
    fn read_slice(blob: &JsValue, buffer: &js_sys::ArrayBuffer, stall_ms: f64) -> js_sys::Promise;
}

async fn sleep_ms(ms: u32) {
    gloo_timers::future::TimeoutFuture::new(ms).await;
}

fn with_key(key: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut options = json!({"endpoint": endpoint(), "chunkSize": CHUNK, "headers": {"x-chunkwise-fault-key": key}});
    options
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    options
}

/// Uploads `file` one slice at a time with slice `slice` refused for good (400), so that it
/// stops part way and stays remembered; returns its location.
async fn fail_at_slice(key: &str, file: &web_sys::Blob, slice: u32) -> String {
    set_faults(key, json!([{"slice": slice, "status": 400, "times": 1}])).await;
    let upload = Upload::new(
        file.clone().into(),
        options(with_key(key, json!({"maxInFlight": 1})), &[]),
    )
    .unwrap();
    let error = JsFuture::from(upload.start()).await.unwrap_err();
    assert_eq!(number(&error, "status"), 400.0);
    upload.location().unwrap()
}

#[wasm_bindgen_test]
async fn no_request_starts_while_paused() {
    let key = unique_key("pause");
    set_faults(&key, json!([{"delayMs": 150, "times": 1000}])).await;
    let blob = pattern_blob(12.0 * CHUNK, 31);
    let upload = Upload::new(
        blob.clone().into(),
        options(with_key(&key, json!({"maxInFlight": 2})), &[]),
    )
    .unwrap();
    let promise = JsFuture::from(upload.start());
    let (result, ()) = futures_util::future::join(promise, async {
        sleep_ms(400).await;
        upload.pause();
        assert!(upload.paused());
        let at_pause = number(&fault_stats(&key).await, "puts");
        sleep_ms(1500).await;
        let stats = fault_stats(&key).await;
        assert_eq!(
            number(&stats, "puts"),
            at_pause,
            "a request started while paused"
        );
        assert_eq!(
            number(&stats, "inFlight"),
            0.0,
            "in-flight requests finished"
        );
        upload.resume();
        assert!(!upload.paused());
    })
    .await;
    let result = result.unwrap();
    assert_uploaded(&result, &blob).await;
    assert_eq!(
        number(&fault_stats(&key).await, "puts"),
        12.0,
        "nothing sent twice"
    );
}

#[wasm_bindgen_test]
async fn a_stalled_slice_is_aborted_by_the_watchdog_and_retried() {
    let key = unique_key("stall");
    // Slice 1's first request gets no answer for 20 s.
    set_faults(&key, json!([{"slice": 1, "delayMs": 20000, "times": 1}])).await;
    let blob = pattern_blob(4.0 * CHUNK, 32);
    let slices = slice_recorder();
    let started = js_sys::Date::now();
    let result = run(
        &blob,
        options(
            with_key(&key, json!({"stallTimeoutMs": 1000})),
            &[("onSlice", &callback(&slices, "onSlice"))],
        ),
    )
    .await
    .unwrap();
    let elapsed = js_sys::Date::now() - started;
    assert_uploaded(&result, &blob).await;
    assert!(
        elapsed < 10_000.0,
        "took {elapsed} ms: the stalled request was waited out"
    );
    assert_eq!(
        number(&fault_stats(&key).await, "puts"),
        5.0,
        "4 slices + 1 retry"
    );
    let events = js_sys::Array::from(&prop(&slices, "events"));
    let retried: Vec<f64> = events
        .iter()
        .filter(|e| string(e, "state") == "retrying")
        .map(|e| number(&e, "index"))
        .collect();
    assert_eq!(retried, vec![1.0]);
}

#[wasm_bindgen_test]
async fn resume_from_sends_only_the_missing_slices() {
    let key = unique_key("resume-from");
    // Slice 5 is refused for good the first time, so the first upload fails part way.
    set_faults(&key, json!([{"slice": 5, "status": 409, "times": 1}])).await;
    let blob = pattern_blob(8.0 * CHUNK + 99.0, 33);
    let first = Upload::new(
        blob.clone().into(),
        options(
            with_key(&key, json!({"maxInFlight": 1, "resume": false})),
            &[],
        ),
    )
    .unwrap();
    let error = JsFuture::from(first.start()).await.unwrap_err();
    assert_eq!(number(&error, "status"), 409.0);
    let location = first.location().unwrap();
    let sent_before = number(&fault_stats(&key).await, "puts");

    let second_key = unique_key("resume-from-2");
    set_faults(&second_key, json!([])).await;
    let result = run(
        &blob,
        options(
            with_key(
                &second_key,
                json!({"resumeFrom": location.clone(), "chunkSize": 4.0 * CHUNK}),
            ),
            &[],
        ),
    )
    .await
    .unwrap();
    assert_uploaded(&result, &blob).await;
    assert_eq!(string(&result, "location"), location);
    assert_eq!(
        number(&result, "resumedSlices"),
        5.0,
        "slices 0-4 were already there"
    );
    assert_eq!(
        number(&fault_stats(&second_key).await, "puts"),
        4.0,
        "only slices 5-8 were sent"
    );
    assert_eq!(sent_before, 6.0);
}

#[wasm_bindgen_test]
async fn the_same_file_resumes_from_indexeddb_and_find_previous_lists_it() {
    let key = unique_key("remembered");
    let file = pattern_file(6.0 * CHUNK, 34, "remembered.bin");
    let location = fail_at_slice(&key, &file, 3).await;

    let previous = JsFuture::from(Upload::find_previous(file.clone().into()))
        .await
        .unwrap();
    let previous = js_sys::Array::from(&previous);
    assert_eq!(previous.length(), 1);
    assert_eq!(string(&previous.get(0), "location"), location);
    assert_eq!(number(&previous.get(0), "bytesReceived"), 3.0 * CHUNK);

    // A new Upload of the same file, as after a reload: it continues where the first stopped.
    let result = run(&file, options(with_key(&key, json!({})), &[]))
        .await
        .unwrap();
    assert_uploaded(&result, &file).await;
    assert_eq!(string(&result, "location"), location);
    assert_eq!(number(&result, "resumedSlices"), 3.0);
    assert_eq!(
        number(&fault_stats(&key).await, "puts"),
        4.0 + 3.0,
        "3 + the refused one, then 3 more"
    );
    let previous = JsFuture::from(Upload::find_previous(file.clone().into()))
        .await
        .unwrap();
    assert_eq!(
        js_sys::Array::from(&previous).length(),
        0,
        "forgotten once complete"
    );
}

#[wasm_bindgen_test]
async fn a_remembered_upload_the_server_lost_starts_over() {
    let key = unique_key("lost");
    let file = pattern_file(3.0 * CHUNK, 35, "lost.bin");
    let location = fail_at_slice(&key, &file, 1).await;
    assert_eq!(http_delete(&location).await, 204);

    let result = run(&file, options(with_key(&key, json!({})), &[]))
        .await
        .unwrap();
    assert_uploaded(&result, &file).await;
    assert_ne!(string(&result, "location"), location);
    assert_eq!(number(&result, "resumedSlices"), 0.0);
}

#[wasm_bindgen_test]
async fn server_errors_on_many_slices_still_end_byte_identical() {
    let key = unique_key("flaky");
    let rules: Vec<serde_json::Value> = (0..20)
        .filter(|i| i % 3 == 0)
        .map(|i| {
            let status = [500, 503, 502, 429][i % 4];
            json!({"slice": i, "status": status, "times": 1})
        })
        .collect();
    set_faults(&key, json!(rules)).await;
    let blob = pattern_blob(20.0 * CHUNK, 36);
    let result = run(
        &blob,
        options(with_key(&key, json!({"maxInFlight": 4})), &[]),
    )
    .await
    .unwrap();
    assert_uploaded(&result, &blob).await;
    assert_eq!(number(&fault_stats(&key).await, "injected"), 7.0);
}

#[wasm_bindgen_test]
fn resume_options_are_checked() {
    let blob: JsValue = pattern_blob(10.0, 1).into();
    let stream: JsValue = irregular_stream(&pattern_blob(10.0, 1)).into();
    for (source, opts, error_type, name) in [
        (
            &blob,
            json!({"endpoint": endpoint(), "resume": "yes"}),
            "TypeError",
            "resume",
        ),
        (
            &blob,
            json!({"endpoint": endpoint(), "resumeFrom": 5}),
            "TypeError",
            "resumeFrom",
        ),
        (
            &stream,
            json!({"endpoint": endpoint(), "resumeFrom": "AAAAAAAAAAAAAAAAAAAAAA"}),
            "TypeError",
            "resumeFrom",
        ),
        (
            &blob,
            json!({"endpoint": endpoint(), "stallTimeoutMs": 10}),
            "RangeError",
            "stallTimeoutMs",
        ),
        (
            &blob,
            json!({"endpoint": endpoint(), "offlineTimeoutMs": -1}),
            "RangeError",
            "offlineTimeoutMs",
        ),
    ] {
        let error = Upload::new(source.clone(), options(opts.clone(), &[]))
            .err()
            .unwrap();
        assert_eq!(string(&error, "name"), error_type, "{opts}");
        assert!(
            string(&error, "message").contains(name),
            "{}",
            string(&error, "message")
        );
    }
}

/// Reads `blob` (`len` bytes) with the library's slice reader; returns the length read and
/// the slice's SHA-256 in hex.
async fn read_and_hash(blob: &JsValue, len: u32, stall_ms: f64) -> (f64, String) {
    let buffer = js_sys::ArrayBuffer::new(len);
    let result = JsFuture::from(read_slice(blob, &buffer, stall_ms))
        .await
        .unwrap();
    let digest = JsFuture::from(js_sys::Promise::from(prop(&result, "digest")))
        .await
        .unwrap();
    let hex = js_sys::Uint8Array::new(&digest)
        .to_vec()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (number(&result, "length"), hex)
}

#[wasm_bindgen_test]
async fn a_slice_read_that_stalls_is_read_again_from_a_fresh_stream() {
    let blob = pattern_blob(300_000.0, 7);
    let fake = stalling_blob(&blob, 2);
    let (length, hex) = read_and_hash(&fake, 300_000, 200.0).await;
    assert_eq!(length, 300_000.0);
    assert_eq!(number(&fake, "calls"), 3.0);
    assert_eq!(hex, sha256_hex(&blob).await);
}

#[wasm_bindgen_test]
async fn a_slice_read_that_keeps_stalling_fails_with_a_clear_error() {
    let blob = pattern_blob(1000.0, 8);
    let fake = stalling_blob(&blob, 10);
    let buffer = js_sys::ArrayBuffer::new(1000);
    let error = JsFuture::from(read_slice(&fake, &buffer, 100.0))
        .await
        .unwrap_err();
    let message = string(&error, "message");
    assert!(
        message.contains("made no progress for 0.1 s, 3 times in a row"),
        "{message}"
    );
    assert_eq!(number(&fake, "calls"), 3.0);
}

#[wasm_bindgen_test]
async fn a_digest_that_never_answers_is_asked_again_from_a_fresh_read() {
    let blob = pattern_blob(300_000.0, 9);
    let digests = stall_digests(1);
    let (length, hex) = read_and_hash(&blob, 300_000, 200.0).await;
    assert_eq!(length, 300_000.0);
    assert_eq!(number(&digests, "calls"), 2.0);
    assert_eq!(hex, sha256_hex(&blob).await);
}
