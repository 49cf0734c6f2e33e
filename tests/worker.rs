//! The library inside a dedicated Web Worker (no window, no DOM) against the real server.
#![cfg(target_arch = "wasm32")]

mod common;

use common::*;
use serde_json::json;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

const CHUNK: f64 = 256.0 * 1024.0;

#[wasm_bindgen_test]
async fn a_blob_uploads_from_a_worker() {
    let blob = pattern_blob(3.0 * CHUNK + 1.0, 21);
    let result = run(
        &blob,
        options(
            json!({"endpoint": endpoint(), "chunkSize": CHUNK, "maxInFlight": 2}),
            &[],
        ),
    )
    .await
    .unwrap();
    assert_uploaded(&result, &blob).await;
    assert_eq!(number(&result, "slices"), 4.0);
}

#[wasm_bindgen_test]
async fn a_stream_uploads_from_a_worker() {
    let blob = pattern_blob(2.0 * CHUNK + 77.0, 22);
    let result = run(
        &irregular_stream(&blob),
        options(json!({"endpoint": endpoint(), "chunkSize": CHUNK}), &[]),
    )
    .await
    .unwrap();
    assert_uploaded(&result, &blob).await;
}

#[wasm_bindgen_test]
async fn a_retry_works_from_a_worker() {
    let key = unique_key("worker-retry");
    set_faults(&key, json!([{"slice": 0, "status": 502, "times": 1}])).await;
    let blob = pattern_blob(CHUNK + 5.0, 23);
    let result = run(
        &blob,
        options(json!({"endpoint": endpoint(), "chunkSize": CHUNK, "headers": {"x-chunkwise-fault-key": key}}), &[]),
    )
    .await
    .unwrap();
    assert_uploaded(&result, &blob).await;
    assert_eq!(number(&fault_stats(&key).await, "injected"), 1.0);
}

#[wasm_bindgen_test]
async fn a_file_resumes_from_indexeddb_inside_a_worker() {
    use chunkwise::Upload;
    use wasm_bindgen_futures::JsFuture;

    let key = unique_key("worker-resume");
    set_faults(&key, json!([{"slice": 2, "status": 400, "times": 1}])).await;
    let file = pattern_file(4.0 * CHUNK, 24, "worker-resume.bin");
    let with_key = json!({"endpoint": endpoint(), "chunkSize": CHUNK, "maxInFlight": 1, "headers": {"x-chunkwise-fault-key": key}});
    let first = Upload::new(file.clone().into(), options(with_key.clone(), &[])).unwrap();
    JsFuture::from(first.start()).await.unwrap_err();
    let previous = js_sys::Array::from(
        &JsFuture::from(Upload::find_previous(file.clone().into()))
            .await
            .unwrap(),
    );
    assert_eq!(previous.length(), 1);
    let result = run(&file, options(with_key, &[])).await.unwrap();
    assert_uploaded(&result, &file).await;
    assert_eq!(string(&result, "location"), first.location().unwrap());
    assert_eq!(number(&result, "resumedSlices"), 2.0);
}
