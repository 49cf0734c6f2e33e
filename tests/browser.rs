//! The library in a real browser window against the real chunkwise-server.
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
const MIB: f64 = 1024.0 * 1024.0;

#[wasm_bindgen_test]
async fn boundary_sizes_arrive_byte_identical() {
    for (i, len) in [0.0, 1.0, CHUNK - 1.0, CHUNK, CHUNK + 1.0, 3.0 * CHUNK]
        .into_iter()
        .enumerate()
    {
        let blob = pattern_file(len, i as u32 + 1, "boundary.bin");
        let result = run(
            &blob,
            options(
                json!({"endpoint": endpoint(), "chunkSize": CHUNK, "maxInFlight": 3}),
                &[],
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("len {len}: {e:?}"));
        assert_uploaded(&result, &blob).await;
        assert_eq!(prop(&result, "verified").as_bool(), Some(true));
        assert_eq!(number(&result, "slices"), (len / CHUNK).ceil());
        assert!(string(&result, "location").starts_with(server()));
    }
}

#[wasm_bindgen_test]
async fn a_64_mib_file_with_default_options() {
    let blob = pattern_file(64.0 * MIB, 42, "big.bin");
    let progress = progress_recorder();
    let slices = slice_recorder();
    let result = run(
        &blob,
        options(
            json!({"endpoint": endpoint(), "metadata": {"name": "big.bin"}}),
            &[
                ("onProgress", &callback(&progress, "onProgress")),
                ("onSlice", &callback(&slices, "onSlice")),
            ],
        ),
    )
    .await
    .unwrap();
    assert_uploaded(&result, &blob).await;
    assert_eq!(number(&result, "slices"), 8.0);
    let events = prop(&progress, "events");
    assert!(monotonic(&events));
    let last = js_sys::Array::from(&events).pop();
    assert_eq!(number(&last, "bytesSent"), 64.0 * MIB);
    assert_eq!(number(&last, "slicesDone"), 8.0);
    assert_eq!(number(&last, "bytesTotal"), 64.0 * MIB);
    assert!(number(&slices, "maxSending") <= 4.0);
}

#[wasm_bindgen_test]
async fn a_stream_of_unknown_length_is_rechunked_exactly() {
    let blob = pattern_blob(3.0 * CHUNK + 12345.0, 7);
    let stream = irregular_stream(&blob);
    let result = run(
        &stream,
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
async fn a_stream_of_known_length_and_a_stream_that_lies() {
    let blob = pattern_blob(2.0 * CHUNK, 8);
    let result = run(
        &irregular_stream(&blob),
        options(
            json!({"endpoint": endpoint(), "chunkSize": CHUNK, "size": 2.0 * CHUNK}),
            &[],
        ),
    )
    .await
    .unwrap();
    assert_uploaded(&result, &blob).await;

    for claimed in [2.0 * CHUNK + 1.0, 2.0 * CHUNK - 1.0] {
        let error = run(
            &irregular_stream(&blob),
            options(
                json!({"endpoint": endpoint(), "chunkSize": CHUNK, "size": claimed}),
                &[],
            ),
        )
        .await
        .unwrap_err();
        assert_eq!(string(&error, "name"), "UploadError");
        assert_eq!(string(&error, "code"), "size_mismatch", "claimed {claimed}");
    }
}

#[wasm_bindgen_test]
async fn digest_none_still_uploads_byte_identical() {
    let blob = pattern_blob(5.0 * CHUNK + 3.0, 9);
    let result = run(
        &blob,
        options(
            json!({"endpoint": endpoint(), "chunkSize": CHUNK, "digest": "none"}),
            &[],
        ),
    )
    .await
    .unwrap();
    assert_uploaded(&result, &blob).await;
    assert_eq!(prop(&result, "verified").as_bool(), Some(false));
}

fn construct(source: &JsValue, options: JsValue) -> JsValue {
    match Upload::new(source.clone(), options) {
        Ok(_) => JsValue::NULL,
        Err(error) => error,
    }
}

#[wasm_bindgen_test]
fn invalid_options_throw_the_right_error() {
    let blob: JsValue = pattern_blob(10.0, 1).into();
    let e = endpoint();
    let not_a_function = JsValue::from_f64(5.0);
    let plain_object = object();
    let type_errors: Vec<(JsValue, JsValue, &str)> = vec![
        (
            JsValue::from_f64(3.0),
            options(json!({"endpoint": e}), &[]),
            "source",
        ),
        (
            JsValue::from_str("text"),
            options(json!({"endpoint": e}), &[]),
            "source",
        ),
        (blob.clone(), JsValue::UNDEFINED, "options"),
        (blob.clone(), options(json!({}), &[]), "endpoint"),
        (
            blob.clone(),
            options(json!({"endpoint": 7}), &[]),
            "endpoint",
        ),
        (
            blob.clone(),
            options(json!({"endpoint": "ftp://x/uploads"}), &[]),
            "endpoint",
        ),
        (
            blob.clone(),
            options(json!({"endpoint": e, "chunkSize": "8"}), &[]),
            "chunkSize",
        ),
        (
            blob.clone(),
            options(json!({"endpoint": e, "maxInFlight": null}), &[]),
            "maxInFlight",
        ),
        (
            blob.clone(),
            options(json!({"endpoint": e, "retries": true}), &[]),
            "retries",
        ),
        (
            blob.clone(),
            options(json!({"endpoint": e, "digest": 256}), &[]),
            "digest",
        ),
        (
            blob.clone(),
            options(json!({"endpoint": e, "metadata": {"a": 1}}), &[]),
            "metadata.a",
        ),
        (
            blob.clone(),
            options(json!({"endpoint": e, "metadata": "x"}), &[]),
            "metadata",
        ),
        (
            blob.clone(),
            options(json!({"endpoint": e, "headers": {"bad header": "x"}}), &[]),
            "headers",
        ),
        (
            blob.clone(),
            options(json!({"endpoint": e}), &[("onProgress", &not_a_function)]),
            "onProgress",
        ),
        (
            blob.clone(),
            options(json!({"endpoint": e}), &[("signal", &plain_object)]),
            "signal",
        ),
        (
            blob.clone(),
            options(json!({"endpoint": e, "chunksize": 262144}), &[]),
            "chunksize",
        ),
    ];
    for (source, opts, name) in type_errors {
        let error = construct(&source, opts);
        assert!(
            error.is_instance_of::<js_sys::TypeError>(),
            "{name}: {error:?}"
        );
        assert!(
            string(&error, "message").contains(name),
            "{name}: {}",
            string(&error, "message")
        );
    }
    let range_errors: Vec<(serde_json::Value, &str)> = vec![
        (json!({"endpoint": e, "chunkSize": 262143}), "chunkSize"),
        (json!({"endpoint": e, "chunkSize": 1073741825}), "chunkSize"),
        (json!({"endpoint": e, "chunkSize": 300000.5}), "chunkSize"),
        (json!({"endpoint": e, "chunkSize": -1}), "chunkSize"),
        (json!({"endpoint": e, "maxInFlight": 0}), "maxInFlight"),
        (json!({"endpoint": e, "maxInFlight": 33}), "maxInFlight"),
        (json!({"endpoint": e, "retries": 101}), "retries"),
        (json!({"endpoint": e, "digest": "md5"}), "digest"),
        (json!({"endpoint": e, "size": 11}), "size"),
    ];
    for (opts, name) in range_errors {
        let error = construct(&blob, options(opts.clone(), &[]));
        assert!(
            error.is_instance_of::<js_sys::RangeError>(),
            "{opts}: {error:?}"
        );
        assert!(
            string(&error, "message").contains(name),
            "{name}: {}",
            string(&error, "message")
        );
    }
    // The bounds themselves are allowed.
    for opts in [
        json!({"endpoint": e, "chunkSize": 262144, "maxInFlight": 1, "retries": 0}),
        json!({"endpoint": e, "chunkSize": 1073741824, "maxInFlight": 32, "retries": 100, "digest": "none"}),
        json!({"endpoint": "/uploads", "size": 10}),
    ] {
        assert!(
            construct(&blob, options(opts.clone(), &[])).is_null(),
            "{opts}"
        );
    }
}

#[wasm_bindgen_test]
async fn abort_mid_upload_cancels_and_deletes() {
    let key = unique_key("abort");
    // Slow every slice down so that the abort lands mid-upload.
    set_faults(&key, json!([{"delayMs": 300, "times": 1000}])).await;
    let blob = pattern_blob(20.0 * CHUNK, 10);
    let controller = web_sys::AbortController::new().unwrap();
    let upload = Upload::new(
        blob.into(),
        options(
            json!({"endpoint": endpoint(), "chunkSize": CHUNK, "maxInFlight": 2, "headers": {"x-chunkwise-fault-key": key}}),
            &[("signal", &controller.signal())],
        ),
    )
    .unwrap();
    let promise = upload.start();
    gloo_timers::future::TimeoutFuture::new(800).await;
    let location = upload.location().expect("created before the abort");
    controller.abort();
    let error = JsFuture::from(promise).await.unwrap_err();
    assert_eq!(string(&error, "name"), "AbortError");
    assert_eq!(string(&error, "code"), "aborted");
    assert_eq!(
        http_status(&location).await,
        404,
        "the server upload was deleted"
    );
    let stats = fault_stats(&key).await;
    assert!(
        number(&stats, "puts") < 20.0,
        "stopped sending: {} puts",
        number(&stats, "puts")
    );
}

#[wasm_bindgen_test]
async fn an_already_aborted_signal_rejects_at_once() {
    let controller = web_sys::AbortController::new().unwrap();
    controller.abort();
    let blob = pattern_blob(10.0, 1);
    let error = run(
        &blob,
        options(
            json!({"endpoint": endpoint()}),
            &[("signal", &controller.signal())],
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(string(&error, "name"), "AbortError");
}

#[wasm_bindgen_test]
async fn a_500_on_one_slice_is_retried_to_success() {
    let key = unique_key("retry");
    set_faults(
        &key,
        json!([{"slice": 2, "status": 500, "times": 1}, {"slice": 4, "status": 503, "times": 2}]),
    )
    .await;
    let blob = pattern_blob(6.0 * CHUNK, 11);
    let slices = slice_recorder();
    let result = run(
        &blob,
        options(
            json!({"endpoint": endpoint(), "chunkSize": CHUNK, "headers": {"x-chunkwise-fault-key": key}}),
            &[("onSlice", &callback(&slices, "onSlice"))],
        ),
    )
    .await
    .unwrap();
    assert_uploaded(&result, &blob).await;
    let stats = fault_stats(&key).await;
    assert_eq!(number(&stats, "injected"), 3.0);
    assert_eq!(number(&stats, "puts"), 9.0, "6 slices + 3 retries");
    let events = js_sys::Array::from(&prop(&slices, "events"));
    let retrying = events
        .iter()
        .filter(|e| string(e, "state") == "retrying")
        .count();
    assert_eq!(retrying, 3);
}

#[wasm_bindgen_test]
async fn a_client_error_fails_at_once_with_the_server_message() {
    let key = unique_key("conflict");
    set_faults(&key, json!([{"slice": 1, "status": 409, "times": 1}])).await;
    let blob = pattern_blob(3.0 * CHUNK, 12);
    let error = run(
        &blob,
        options(json!({"endpoint": endpoint(), "chunkSize": CHUNK, "headers": {"x-chunkwise-fault-key": key}}), &[]),
    )
    .await
    .unwrap_err();
    assert_eq!(string(&error, "name"), "UploadError");
    assert_eq!(string(&error, "code"), "http_status");
    assert_eq!(number(&error, "status"), 409.0);
    assert!(
        string(&error, "message").contains("fault injected on slice 1"),
        "{}",
        string(&error, "message")
    );
    assert!(error.is_instance_of::<js_sys::Error>());
}

#[wasm_bindgen_test]
async fn requests_in_flight_reach_but_never_exceed_the_bound() {
    for max in [1.0, 3.0] {
        let key = unique_key("window");
        set_faults(&key, json!([{"delayMs": 150, "times": 1000}])).await;
        let blob = pattern_blob(10.0 * CHUNK, 13);
        let slices = slice_recorder();
        let progress = progress_recorder();
        let result = run(
            &blob,
            options(
                json!({"endpoint": endpoint(), "chunkSize": CHUNK, "maxInFlight": max, "headers": {"x-chunkwise-fault-key": key}}),
                &[("onSlice", &callback(&slices, "onSlice")), ("onProgress", &callback(&progress, "onProgress"))],
            ),
        )
        .await
        .unwrap();
        assert_uploaded(&result, &blob).await;
        let stats = fault_stats(&key).await;
        assert_eq!(number(&stats, "maxInFlight"), max, "seen by the server");
        assert_eq!(number(&slices, "maxSending"), max, "seen by the client");
        let events = js_sys::Array::from(&prop(&progress, "events"));
        assert!(events.iter().all(|p| number(&p, "inFlight") <= max));
    }
}

#[wasm_bindgen_test]
async fn start_twice_is_refused() {
    let blob = pattern_blob(10.0, 1);
    let upload = Upload::new(
        blob.clone().into(),
        options(json!({"endpoint": endpoint()}), &[]),
    )
    .unwrap();
    let first = upload.start();
    let second = JsFuture::from(upload.start()).await.unwrap_err();
    assert_eq!(string(&second, "code"), "invalid_state");
    assert_uploaded(&JsFuture::from(first).await.unwrap(), &blob).await;
}

/// The sources alone, no server: every slice has the exact bytes and digest of its range.
#[wasm_bindgen_test]
async fn blob_and_stream_sources_give_exact_slices() {
    use chunkwise::source::{BlobSource, Source, StreamSource};
    use chunkwise_core::engine::{Read, SliceSource};
    use chunkwise_core::protocol::hex;

    let len = 3.0 * CHUNK + 1000.0;
    let blob = pattern_blob(len, 5);
    let stream_source =
        StreamSource::new(&irregular_stream(&blob), None, CHUNK as u64, true).unwrap();
    for mut source in [
        Source::Blob(BlobSource::new(blob.clone(), CHUNK as u64, true)),
        Source::Stream(stream_source),
    ] {
        let mut expected_index = 0;
        loop {
            match source.next().await.unwrap() {
                Read::Slice(slice) => {
                    assert_eq!(slice.index, expected_index);
                    let start = expected_index as f64 * CHUNK;
                    let range = blob
                        .slice_with_f64_and_f64(start, (start + CHUNK).min(len))
                        .unwrap();
                    assert_eq!(slice.len as f64, range.size());
                    let expected = sha256_hex(&range).await;
                    assert_eq!(
                        hex(&slice.sha256.unwrap()),
                        expected,
                        "slice {}",
                        slice.index
                    );
                    // The body itself carries exactly those bytes.
                    let body = js_sys::Array::of1(&slice.body.value);
                    let body = web_sys::Blob::new_with_u8_array_sequence(&body).unwrap();
                    assert_eq!(sha256_hex(&body).await, expected);
                    expected_index += 1;
                }
                Read::End { size_bytes } => {
                    assert_eq!(size_bytes as f64, len);
                    break;
                }
            }
        }
        assert_eq!(expected_index, 4);
    }
}
