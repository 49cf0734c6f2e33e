//! The real server on a real socket, driven over HTTP.

mod support;

use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::sync::Arc;
use std::time::Duration;

use chunkwise_core::protocol::{self, Completed, Status};
use chunkwise_server::{app, AppState, Limits, Site, Store};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::{random_bytes, sha_hex};

const MIB: u64 = 1024 * 1024;

struct Server {
    base: String,
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
    client: reqwest::Client,
}

fn limits() -> Limits {
    Limits {
        max_upload_size_bytes: 64 << 30,
        max_chunk_size_bytes: 256 * MIB,
        expire_after: Duration::from_secs(3600),
        ..Limits::default()
    }
}

impl Server {
    async fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), None, limits()).await
    }

    async fn start_in(dir: tempfile::TempDir, token: Option<&str>, limits: Limits) -> Self {
        Self::start_with(dir, token, limits, &Site::default()).await
    }

    async fn start_with(
        dir: tempfile::TempDir,
        token: Option<&str>,
        limits: Limits,
        site: &Site,
    ) -> Self {
        let store = Arc::new(Store::open(dir.path(), limits).unwrap());
        let router = app(
            AppState {
                backend: store,
                token: token.map(Arc::from),
                hooks: None,
                metrics: Arc::default(),
            },
            site,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Server {
            base,
            dir,
            task,
            client: reqwest::Client::new(),
        }
    }

    /// Stops the server and starts a new one on the same data directory.
    async fn restart(self) -> Self {
        self.task.abort();
        let _ = self.task.await;
        Self::start_in(self.dir, None, limits()).await
    }

    async fn create(&self, body: Value) -> (StatusCode, Value, Option<String>) {
        let response = self
            .client
            .post(format!("{}/uploads", self.base))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status();
        // Resolved against the request's URL, as browsers do; the path, as the tests
        // prepend the base.
        let location = response.headers().get("location").map(|v| {
            response
                .url()
                .join(v.to_str().unwrap())
                .unwrap()
                .path()
                .to_string()
        });
        (status, json_of(response).await, location)
    }

    async fn put(
        &self,
        location: &str,
        index: &str,
        bytes: Vec<u8>,
        digest: bool,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .put(format!("{}{location}/slices/{index}", self.base));
        if digest {
            request = request.header(
                "content-digest",
                protocol::content_digest(&Sha256::digest(&bytes).into()),
            );
        }
        let response = request.body(bytes).send().await.unwrap();
        (response.status(), json_of(response).await)
    }

    async fn status(&self, location: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{location}", self.base))
            .send()
            .await
            .unwrap();
        (response.status(), json_of(response).await)
    }

    async fn complete(&self, location: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{location}/complete", self.base))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (response.status(), json_of(response).await)
    }

    fn stored(&self, id: &str) -> Vec<u8> {
        std::fs::read(self.file_path(id)).unwrap()
    }

    /// `files/{name}` under the data directory.
    fn file_path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join("files").join(name)
    }

    /// The directory of an incomplete upload, from its creation answer.
    fn upload_dir(&self, created: &Value) -> std::path::PathBuf {
        self.dir
            .path()
            .join("uploads")
            .join(created["id"].as_str().unwrap())
    }
}

async fn json_of(response: reqwest::Response) -> Value {
    let bytes = response.bytes().await.unwrap();
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
}

/// The protocol's slicesSha256: SHA-256 over every slice's SHA-256, in order.
fn slices_hex(bytes: &[u8], chunk: usize) -> String {
    let mut digest = protocol::SlicesDigest::new();
    for part in bytes.chunks(chunk) {
        digest.push(&Sha256::digest(part).into());
    }
    digest.finish()
}

fn slice(bytes: &[u8], chunk: usize, index: usize) -> Vec<u8> {
    bytes[index * chunk..((index + 1) * chunk).min(bytes.len())].to_vec()
}

fn assert_error(status: StatusCode, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status.as_u16(), expected_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// Uploads `bytes` with every slice sent concurrently, in reverse order.
async fn upload_all(server: &Server, bytes: &[u8], chunk: usize, size_known: bool) -> Completed {
    let body = if size_known {
        json!({"chunkSize": chunk, "size": bytes.len()})
    } else {
        json!({"chunkSize": chunk})
    };
    let (status, created, location) = server.create(body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let location = location.unwrap();
    assert_eq!(
        location,
        format!("/uploads/{}", created["id"].as_str().unwrap())
    );
    let count = bytes.len().div_ceil(chunk);
    let puts = (0..count).rev().map(|i| {
        let location = location.clone();
        let part = slice(bytes, chunk, i);
        async move {
            server
                .put(&location, &i.to_string(), part, i % 2 == 0)
                .await
        }
    });
    for (status, body) in futures_util::future::join_all(puts).await {
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    let (status, body) = server
        .complete(
            &location,
            json!({"size": bytes.len(), "sha256": sha_hex(bytes), "slicesSha256": slices_hex(bytes, chunk)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let completed: Completed = serde_json::from_value(body).unwrap();
    // Odd slices came without Content-Digest: the server hashed those itself.
    assert_eq!(
        completed.slices_sha256.as_deref(),
        Some(slices_hex(bytes, chunk).as_str())
    );
    completed
}

#[tokio::test]
async fn concurrent_out_of_order_slices_arrive_byte_identical() {
    let server = Server::start().await;
    let bytes = random_bytes(5 * MIB as usize + 12345, 1);
    let completed = upload_all(&server, &bytes, 256 * 1024, true).await;
    assert_eq!(completed.size, bytes.len() as u64);
    assert_eq!(completed.sha256, Some(sha_hex(&bytes)));
    assert_eq!(sha_hex(&server.stored(&completed.id)), sha_hex(&bytes));
    let (_, status) = server.status(&format!("/uploads/{}", completed.id)).await;
    assert_eq!(status["complete"], true);
    assert_eq!(status["bytesReceived"], bytes.len() as u64);
}

#[tokio::test]
async fn boundary_sizes_round_trip() {
    let server = Server::start().await;
    let chunk = 1000;
    for len in [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk, 3 * chunk + 1] {
        let bytes = random_bytes(len, len as u64);
        for size_known in [true, false] {
            let completed = upload_all(&server, &bytes, chunk, size_known).await;
            assert_eq!(
                server.stored(&completed.id),
                bytes,
                "len {len}, size known {size_known}"
            );
        }
    }
}

#[tokio::test]
async fn deferred_size_is_fixed_by_the_short_last_slice() {
    let server = Server::start().await;
    let (_, created, location) = server.create(json!({"chunkSize": 4})).await;
    assert_eq!(created["size"], Value::Null);
    let location = location.unwrap();
    assert_eq!(
        server.put(&location, "2", b"ij".to_vec(), false).await.0,
        StatusCode::NO_CONTENT
    );
    let (_, status) = server.status(&location).await;
    assert_eq!(status["size"], 10);
    // Past the end that the short slice fixed.
    assert_error_pair(
        server.put(&location, "3", b"abcd".to_vec(), false).await,
        400,
        "index_out_of_range",
    );
    assert_error_pair(
        server.complete(&location, json!({"size": 12})).await,
        400,
        "size_mismatch",
    );
    server.put(&location, "0", b"abcd".to_vec(), false).await;
    server.put(&location, "1", b"efgh".to_vec(), false).await;
    let (status, body) = server.complete(&location, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        server.stored(created["id"].as_str().unwrap()),
        b"abcdefghij"
    );
}

fn assert_error_pair((status, body): (StatusCode, Value), expected_status: u16, code: &str) {
    assert_error(status, &body, expected_status, code);
}

#[tokio::test]
async fn complete_checks_the_slices_digest() {
    let server = Server::start().await;
    let bytes = random_bytes(5 * 1000 + 1, 11);
    let (_, created, location) = server
        .create(json!({"chunkSize": 1000, "size": bytes.len()}))
        .await;
    let location = location.unwrap();
    for i in 0..6 {
        let (status, body) = server
            .put(&location, &i.to_string(), slice(&bytes, 1000, i), i != 2)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    assert_error_pair(
        server
            .complete(&location, json!({"slicesSha256": "not hex"}))
            .await,
        400,
        "invalid_slices_sha256",
    );
    // The digest of other slices (one byte differs): refused, and nothing is lost.
    let mut other = bytes.clone();
    other[2500] ^= 1;
    let wrong = json!({"slicesSha256": slices_hex(&other, 1000)});
    assert_error_pair(
        server.complete(&location, wrong.clone()).await,
        400,
        "digest_mismatch",
    );
    let (_, status) = server.status(&location).await;
    assert_eq!(status["complete"], false);
    assert_eq!(status["bytesReceived"], bytes.len());
    let right = json!({"slicesSha256": slices_hex(&bytes, 1000)});
    let (code, body) = server.complete(&location, right.clone()).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["slicesSha256"], right["slicesSha256"]);
    assert_eq!(body["sha256"], sha_hex(&bytes));
    assert_eq!(server.stored(created["id"].as_str().unwrap()), bytes);
    // Completing again answers the same, and still checks.
    assert_eq!(server.complete(&location, right).await.1, body);
    assert_error_pair(
        server.complete(&location, wrong).await,
        400,
        "digest_mismatch",
    );
}

#[tokio::test]
async fn received_slices_survive_a_restart() {
    let server = Server::start().await;
    let bytes = random_bytes(10 * 1024, 7);
    let (_, created, location) = server
        .create(json!({"chunkSize": 1024, "size": bytes.len(), "metadata": {"name": "a.bin"}}))
        .await;
    let location = location.unwrap();
    for i in [0, 3, 4, 9] {
        assert_eq!(
            server
                .put(&location, &i.to_string(), slice(&bytes, 1024, i), true)
                .await
                .0,
            StatusCode::NO_CONTENT
        );
    }
    let server = server.restart().await;
    let (status, body) = server.status(&location).await;
    assert_eq!(status, StatusCode::OK);
    let status: Status = serde_json::from_value(body).unwrap();
    assert_eq!(status.received, vec![[0, 1], [3, 5], [9, 10]]);
    assert_eq!(status.bytes_received, 4 * 1024);
    for i in [1, 2, 5, 6, 7, 8] {
        assert_eq!(
            server
                .put(&location, &i.to_string(), slice(&bytes, 1024, i), true)
                .await
                .0,
            StatusCode::NO_CONTENT
        );
    }
    let (status, body) = server
        .complete(
            &location,
            json!({"sha256": sha_hex(&bytes), "slicesSha256": slices_hex(&bytes, 1024)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(server.stored(created["id"].as_str().unwrap()), bytes);
    // A completed upload is still known after another restart.
    let server = server.restart().await;
    let (_, body) = server.status(&location).await;
    assert_eq!(body["complete"], true);
    let meta: Value = serde_json::from_slice(
        &std::fs::read(server.file_path(&format!("{}.json", created["id"].as_str().unwrap())))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(meta["metadata"]["name"], "a.bin");
}

#[tokio::test]
async fn a_torn_journal_record_is_ignored() {
    let server = Server::start().await;
    let (_, created, location) = server.create(json!({"chunkSize": 4, "size": 8})).await;
    let location = location.unwrap();
    server.put(&location, "0", b"abcd".to_vec(), false).await;
    let journal = server.upload_dir(&created).join("journal");
    // A crash in the middle of appending the record for slice 1.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap()
        .write_all(&[1, 0, 0, 0, 0])
        .unwrap();
    let server = server.restart().await;
    let (_, body) = server.status(&location).await;
    assert_eq!(body["received"], json!([[0, 1]]));
    server.put(&location, "1", b"efgh".to_vec(), false).await;
    let server = server.restart().await;
    let (_, body) = server.status(&location).await;
    assert_eq!(body["received"], json!([[0, 2]]));
    assert_eq!(
        server.complete(&location, json!({})).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_input_gets_a_json_error_and_changes_nothing() {
    let server = Server::start().await;
    let (_, created, location) = server.create(json!({"chunkSize": 4, "size": 10})).await;
    let location = location.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(
        server.put(&location, "0", b"abcd".to_vec(), true).await.0,
        StatusCode::NO_CONTENT
    );

    // Creation.
    assert_error_pair(
        server.create(json!({"chunkSize": 0})).await.drop_location(),
        400,
        "invalid_chunk_size",
    );
    assert_error_pair(
        server
            .create(json!({"chunkSize": 257 * MIB}))
            .await
            .drop_location(),
        413,
        "chunk_size_too_large",
    );
    assert_error_pair(
        server
            .create(json!({"chunkSize": 4, "size": 65u64 << 30}))
            .await
            .drop_location(),
        413,
        "upload_too_large",
    );
    assert_error_pair(
        server
            .create(json!({"chunkSize": -4}))
            .await
            .drop_location(),
        400,
        "invalid_json",
    );
    assert_error_pair(
        server
            .create(json!({"chunkSize": 4.5}))
            .await
            .drop_location(),
        400,
        "invalid_json",
    );
    let overflow = server
        .client
        .post(format!("{}/uploads", server.base))
        .body(r#"{"chunkSize":18446744073709551616}"#)
        .send()
        .await
        .unwrap();
    assert_error_pair(
        (overflow.status(), json_of(overflow).await),
        400,
        "invalid_json",
    );
    assert_error_pair(
        server
            .create(json!({"chunkSize": 4, "metadata": {"a": 1}}))
            .await
            .drop_location(),
        400,
        "invalid_json",
    );
    assert_error_pair(
        server
            .create(json!({"chunkSize": 4, "metadata": {"a\u{0}": "x"}}))
            .await
            .drop_location(),
        400,
        "invalid_metadata",
    );
    let huge = server
        .client
        .post(format!("{}/uploads", server.base))
        .body(vec![b' '; 100_000])
        .send()
        .await
        .unwrap();
    assert_error_pair((huge.status(), json_of(huge).await), 413, "body_too_large");

    // Ids and paths.
    assert_error_pair(
        server.status("/uploads/AAAAAAAAAAAAAAAAAAAAAA").await,
        404,
        "upload_not_found",
    );
    for bad in [
        "/uploads/short",
        "/uploads/..%2F..%2Fetc",
        "/uploads/%2e%2e",
        "/uploads/AAAAAAAAAAAAAAAAAAAA%00A",
        "/uploads/AAAAAAAAAAAAAAAAAAAA..",
    ] {
        // Raw, so that no client normalises the dot segments away first.
        assert_error_pair(raw_request(&server, "GET", bad).await, 400, "invalid_id");
        assert_error_pair(
            raw_request(&server, "PUT", &format!("{bad}/slices/0")).await,
            400,
            "invalid_id",
        );
    }
    assert_error_pair(
        raw_request(&server, "PUT", &format!("{location}/slices/%2e%2e")).await,
        400,
        "invalid_index",
    );
    assert_error_pair(
        raw_request(&server, "PUT", &format!("{location}/slices/..")).await,
        400,
        "invalid_index",
    );
    for (index, code) in [
        ("-1", "invalid_index"),
        ("18446744073709551616", "invalid_index"),
        ("3", "index_out_of_range"),
        ("4611686018427387904", "index_out_of_range"),
    ] {
        assert_error_pair(
            server.put(&location, index, b"abcd".to_vec(), false).await,
            400,
            code,
        );
    }
    assert_error_pair(
        server.status(&format!("{location}/slices/0/x")).await,
        404,
        "not_found",
    );

    // Bodies that do not fit the slice.
    assert_error_pair(
        server.put(&location, "1", b"efghX".to_vec(), false).await,
        400,
        "length_mismatch",
    );
    assert_error_pair(
        server.put(&location, "1", b"efg".to_vec(), false).await,
        400,
        "length_mismatch",
    );
    assert_error_pair(
        server.put(&location, "1", Vec::new(), false).await,
        400,
        "length_mismatch",
    );
    let bad_digest = server
        .client
        .put(format!("{}{location}/slices/1", server.base))
        .header(
            "content-digest",
            protocol::content_digest(&Sha256::digest(b"xxxx").into()),
        )
        .body(b"efgh".to_vec())
        .send()
        .await
        .unwrap();
    assert_error_pair(
        (bad_digest.status(), json_of(bad_digest).await),
        400,
        "digest_mismatch",
    );
    let garbled = server
        .client
        .put(format!("{}{location}/slices/1", server.base))
        .header("content-digest", "sha-256=nope")
        .body(b"efgh".to_vec())
        .send()
        .await
        .unwrap();
    assert_error_pair(
        (garbled.status(), json_of(garbled).await),
        400,
        "invalid_digest_header",
    );
    // A re-send of a received slice with other bytes is refused by its digest and
    // never overwrites what was acknowledged.
    let (status, body) = server.put(&location, "0", b"ZZZZ".to_vec(), true).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // Nothing above was recorded.
    let (_, body) = server.status(&location).await;
    assert_eq!(body["received"], json!([[0, 1]]));
    assert_error_pair(
        server.complete(&location, json!({})).await,
        409,
        "missing_slices",
    );
    assert_error_pair(
        server.complete(&location, json!({"sha256": "abc"})).await,
        400,
        "invalid_sha256",
    );
    server.put(&location, "1", b"efgh".to_vec(), true).await;
    server.put(&location, "2", b"ij".to_vec(), true).await;
    assert_error_pair(
        server
            .complete(&location, json!({"sha256": sha_hex(b"abcdefghiX")}))
            .await,
        400,
        "digest_mismatch",
    );
    assert_error_pair(
        server.complete(&location, json!({"size": 11})).await,
        400,
        "size_mismatch",
    );
    let (status, body) = server
        .complete(&location, json!({"sha256": sha_hex(b"abcdefghij")}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(server.stored(&id), b"abcdefghij");
    // Completing again is idempotent; sending more is refused.
    assert_eq!(
        server.complete(&location, json!({})).await.1["sha256"],
        sha_hex(b"abcdefghij")
    );
    assert_error_pair(
        server.put(&location, "1", b"efgh".to_vec(), false).await,
        409,
        "upload_complete",
    );
    assert_eq!(server.stored(&id), b"abcdefghij");

    // Only server-chosen names exist under the data directory.
    let names: Vec<String> = std::fs::read_dir(server.dir.path().join("files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.starts_with(&id)), "{names:?}");
}

trait DropLocation {
    fn drop_location(self) -> (StatusCode, Value);
}

impl DropLocation for (StatusCode, Value, Option<String>) {
    fn drop_location(self) -> (StatusCode, Value) {
        (self.0, self.1)
    }
}

#[tokio::test]
async fn a_body_cut_off_mid_stream_is_not_recorded() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let server = Server::start().await;
    let (_, _, location) = server
        .create(json!({"chunkSize": 1024, "size": 2048}))
        .await;
    let location = location.unwrap();
    let mut tcp = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head =
        format!("PUT {location}/slices/0 HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&[7u8; 300]).await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, body) = server.status(&location).await;
    assert_eq!(body["received"], json!([]));
    assert_eq!(body["bytesReceived"], 0);
    assert_eq!(
        server.put(&location, "0", vec![1u8; 1024], true).await.0,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn concurrent_puts_of_one_slice_keep_the_good_bytes() {
    let server = Server::start().await;
    let bytes = random_bytes(2 * MIB as usize, 3);
    let (_, created, location) = server
        .create(json!({"chunkSize": MIB, "size": bytes.len()}))
        .await;
    let location = location.unwrap();
    let good = slice(&bytes, MIB as usize, 0);
    let mut bad = good.clone();
    bad[100] ^= 1;
    let bad_digest = protocol::content_digest(&Sha256::digest(&good).into());
    let bad_put = {
        let request = server
            .client
            .put(format!("{}{location}/slices/0", server.base))
            .header("content-digest", bad_digest);
        async move { request.body(bad).send().await.unwrap().status() }
    };
    let (a, b, c, bad_status) = tokio::join!(
        server.put(&location, "0", good.clone(), true),
        server.put(&location, "0", good.clone(), true),
        server.put(&location, "0", good.clone(), false),
        bad_put,
    );
    // The newest attempt at a slice takes over; those before it are answered 409
    // `slice_superseded` (their clients gave up on them). None of the bad bytes count.
    for (status, body) in [a, b, c] {
        assert!(
            status == StatusCode::NO_CONTENT
                || (status == StatusCode::CONFLICT && body["error"]["code"] == "slice_superseded"),
            "{status} {body}"
        );
    }
    assert!(
        [StatusCode::BAD_REQUEST, StatusCode::CONFLICT].contains(&bad_status),
        "{bad_status}"
    );
    for i in [0, 1] {
        assert_eq!(
            server
                .put(
                    &location,
                    &i.to_string(),
                    slice(&bytes, MIB as usize, i),
                    true
                )
                .await
                .0,
            StatusCode::NO_CONTENT
        );
    }
    assert_eq!(
        server
            .complete(&location, json!({"sha256": sha_hex(&bytes)}))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(server.stored(created["id"].as_str().unwrap()), bytes);
}

#[tokio::test]
async fn a_token_guards_every_upload_request() {
    let server = Server::start_in(tempfile::tempdir().unwrap(), Some("s3cret"), limits()).await;
    let (status, body, _) = server.create(json!({"chunkSize": 4})).await;
    assert_error(status, &body, 401, "unauthorized");
    let response = server
        .client
        .post(format!("{}/uploads", server.base))
        .header("authorization", "Bearer wrong")
        .body(json!({"chunkSize": 4}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let response = server
        .client
        .post(format!("{}/uploads", server.base))
        .header("authorization", "Bearer s3cret")
        .body(json!({"chunkSize": 4, "size": 1}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = format!("/{}", response.headers()["location"].to_str().unwrap());
    assert_error_pair(
        server.put(&location, "0", b"a".to_vec(), false).await,
        401,
        "unauthorized",
    );
    assert_error_pair(server.status(&location).await, 401, "unauthorized");
    let health = server
        .client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_full_disk_answers_507_and_the_upload_resumes() {
    let server = Server::start().await;
    let bytes = random_bytes(8192, 11);
    let (_, created, location) = server
        .create(json!({"chunkSize": 4096, "size": 8192}))
        .await;
    let location = location.unwrap();
    let data = server.upload_dir(&created).join("data");
    let saved = data.with_extension("saved");
    // Every write to /dev/full fails with ENOSPC, exactly as a full file system does.
    std::fs::rename(&data, &saved).unwrap();
    std::os::unix::fs::symlink("/dev/full", &data).unwrap();
    assert_error_pair(
        server
            .put(&location, "0", slice(&bytes, 4096, 0), true)
            .await,
        507,
        "insufficient_storage",
    );
    let (_, body) = server.status(&location).await;
    assert_eq!(body["received"], json!([]));
    std::fs::remove_file(&data).unwrap();
    std::fs::rename(&saved, &data).unwrap();
    for i in ["1", "0"] {
        let index: usize = i.parse().unwrap();
        assert_eq!(
            server
                .put(&location, i, slice(&bytes, 4096, index), true)
                .await
                .0,
            StatusCode::NO_CONTENT
        );
    }
    assert_eq!(
        server
            .complete(&location, json!({"sha256": sha_hex(&bytes)}))
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn delete_removes_the_data() {
    let server = Server::start().await;
    let (_, created, location) = server.create(json!({"chunkSize": 4, "size": 8})).await;
    let location = location.unwrap();
    server.put(&location, "0", b"abcd".to_vec(), false).await;
    let dir = server.upload_dir(&created);
    assert!(dir.exists());
    let response = server
        .client
        .delete(format!("{}{location}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(!dir.exists());
    assert_error_pair(server.status(&location).await, 404, "upload_not_found");
    assert_error_pair(
        server.put(&location, "1", b"efgh".to_vec(), false).await,
        404,
        "upload_not_found",
    );
}

#[tokio::test]
async fn abandoned_uploads_expire() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        expire_after: Duration::from_millis(200),
        ..limits()
    };
    let store = Store::open(dir.path(), limits).unwrap();
    let stale = store.create(4, Some(8), BTreeMap::new()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = store.create(4, Some(8), BTreeMap::new()).await.unwrap();
    assert_eq!(store.expire().await.len(), 1);
    assert!(store.get(stale.id()).await.is_err());
    assert!(store.get(fresh.id()).await.is_ok());
    assert!(!dir.path().join("uploads").join(stale.id()).exists());
}

/// Slices whose offsets lie past 2^32 bytes, from a sparse source file.
#[tokio::test]
async fn uploads_across_the_4_gib_boundary() {
    let server = Server::start().await;
    let chunk = 64 * MIB;
    let size = (4u64 << 30) + 3 * MIB + 5;
    let mut source = tempfile::tempfile().unwrap();
    source.set_len(size).unwrap();
    // Mark bytes on both sides of 2^32 so that misplaced offsets change the digest.
    for offset in [0, (4u64 << 30) - 3, (4u64 << 30) + 17, size - 1] {
        source.seek(SeekFrom::Start(offset)).unwrap();
        source
            .write_all(&offset.to_le_bytes()[..1.max((size - offset).min(8) as usize)])
            .unwrap();
    }
    let (_, created, location) = server
        .create(json!({"chunkSize": chunk, "size": size}))
        .await;
    let location = location.unwrap();
    let count = size.div_ceil(chunk);
    assert!(count > (1 << 32) / chunk);
    let mut file_hash = Sha256::new();
    let mut buf = vec![0u8; chunk as usize];
    source.seek(SeekFrom::Start(0)).unwrap();
    for index in 0..count {
        let len = chunk.min(size - index * chunk) as usize;
        source.read_exact(&mut buf[..len]).unwrap();
        file_hash.update(&buf[..len]);
        let (status, body) = server
            .put(&location, &index.to_string(), buf[..len].to_vec(), true)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "slice {index}: {body}");
    }
    let expected = protocol::hex(&file_hash.finalize());
    let (status, body) = server
        .complete(&location, json!({"sha256": expected}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["size"], size);
    let stored = server.file_path(created["id"].as_str().unwrap());
    assert_eq!(std::fs::metadata(&stored).unwrap().len(), size);
    let mut file = std::fs::File::open(&stored).unwrap();
    let mut marker = [0u8; 8];
    file.seek(SeekFrom::Start((4u64 << 30) + 17)).unwrap();
    file.read_exact(&mut marker).unwrap();
    assert_eq!(marker, ((4u64 << 30) + 17).to_le_bytes());
}

/// Sends a request exactly as written, with an empty body.
async fn raw_request(server: &Server, method: &str, path: &str) -> (StatusCode, Value) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8(answer).unwrap();
    let status: u16 = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    (
        StatusCode::from_u16(status).unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn v2_sends_every_slice_to_the_upload_url_and_completes_there() {
    let server = Server::start().await;
    let chunk = 256 * 1024;
    let bytes = random_bytes(3 * chunk + 1, 7);
    let (status, created, location) = server
        .create(json!({"chunkSize": chunk, "size": bytes.len()}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["protocol"], protocol::VERSION);
    let url = format!("{}{}", server.base, location.unwrap());
    for index in (0..4).rev() {
        let part = slice(&bytes, chunk, index);
        let response = server
            .client
            .put(&url)
            .header(protocol::SLICE_INDEX, index.to_string())
            .header(
                "content-digest",
                protocol::content_digest(&Sha256::digest(&part).into()),
            )
            .body(part)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    let status: Status = serde_json::from_value(
        server
            .client
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (status.received, status.protocol),
        (vec![[0, 4]], protocol::VERSION)
    );
    let response = server
        .client
        .post(&url)
        .body(json!({"slicesSha256": slices_hex(&bytes, chunk)}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let completed: Completed = response.json().await.unwrap();
    assert_eq!(completed.sha256, Some(sha_hex(&bytes)));
    assert_eq!(server.stored(&completed.id), bytes);
}

#[tokio::test]
async fn v2_slice_index_errors_are_json_and_store_nothing() {
    let server = Server::start().await;
    let (_, _, location) = server
        .create(json!({"chunkSize": 1024, "size": 2048}))
        .await;
    let url = format!("{}{}", server.base, location.clone().unwrap());
    for (header, code) in [
        (None, "missing_slice_index"),
        (Some("-1"), "invalid_index"),
        (Some("one"), "invalid_index"),
        (Some("2"), "index_out_of_range"),
    ] {
        let mut request = server.client.put(&url).body(vec![7u8; 1024]);
        if let Some(value) = header {
            request = request.header(protocol::SLICE_INDEX, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        assert_error(status, &json_of(response).await, 400, code);
    }
    let (_, status) = server.status(&location.unwrap()).await;
    assert_eq!(status["received"], json!([]));
}

#[tokio::test]
async fn a_preflight_is_cached_for_two_hours_and_allows_what_the_client_sends() {
    let site = Site {
        allowed_origins: vec!["http://page.test".into()],
        ..Site::default()
    };
    let server = Server::start_with(tempfile::tempdir().unwrap(), None, limits(), &site).await;
    let (_, _, location) = server.create(json!({"chunkSize": 1024})).await;
    let response = server
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}{}", server.base, location.unwrap()),
        )
        .header("origin", "http://page.test")
        .header("access-control-request-method", "PUT")
        .header(
            "access-control-request-headers",
            "content-digest,chunkwise-slice,authorization",
        )
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
            .unwrap_or_default()
    };
    assert_eq!(header("access-control-max-age"), "7200");
    assert_eq!(header("access-control-allow-origin"), "http://page.test");
    assert!(header("access-control-allow-methods").contains("put"));
    assert!(header("access-control-allow-headers").contains("chunkwise-slice"));
    let exposed = server
        .client
        .post(format!("{}/uploads", server.base))
        .header("origin", "http://page.test")
        .body(json!({"chunkSize": 1024}).to_string())
        .send()
        .await
        .unwrap();
    let exposed = exposed
        .headers()
        .get("access-control-expose-headers")
        .unwrap()
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("location") && exposed.contains("retry-after"),
        "{exposed}"
    );
}

/// A proxy that mounts the API under a prefix and strips it (`/api/uploads` →
/// `/uploads`) must get an upload URL under the same prefix: `Location` is relative to the
/// request's URL, whatever prefix the browser used.
#[tokio::test]
async fn location_resolves_under_any_mount_point() {
    let server = Server::start().await;
    let response = server
        .client
        .post(format!("{}/uploads", server.base))
        .body(json!({"chunkSize": 4, "size": 4}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let id = json_of(response).await["id"].as_str().unwrap().to_string();
    for (endpoint, upload) in [
        ("https://app.example/uploads", "/uploads/"),
        ("https://app.example/api/uploads", "/api/uploads/"),
        ("https://app.example/a/b/uploads", "/a/b/uploads/"),
    ] {
        let resolved = reqwest::Url::parse(endpoint)
            .unwrap()
            .join(&location)
            .unwrap();
        assert_eq!(resolved.path(), format!("{upload}{id}"), "{endpoint}");
    }
}

/// Every answer carries a request id: the proxy's, when it sent one, else a new one.
#[tokio::test]
async fn request_ids_are_kept_or_made() {
    let server = Server::start().await;
    let url = format!("{}/healthz", server.base);
    let answer = server
        .client
        .get(&url)
        .header("x-request-id", "from-the-proxy-1")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["x-request-id"], "from-the-proxy-1");
    let first = server.client.get(&url).send().await.unwrap();
    let second = server.client.get(&url).send().await.unwrap();
    let (first, second) = (
        first.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string(),
        second.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string(),
    );
    assert_eq!(first.len(), 36, "{first}");
    assert_ne!(first, second);
}
