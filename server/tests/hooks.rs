//! Hooks against a real receiver on a socket: pre-create allows, refuses and rewrites;
//! post-finish and post-terminate arrive signed, and post-finish survives a hook that is
//! down and a `kill -9` of the server.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chunkwise_core::protocol;
use chunkwise_server::hooks::{signature, HookConfig, Hooks};
use chunkwise_server::{app, AppState, Limits, Site, Store};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

mod support;

use support::spawn;

const SECRET: &str = "whsec_test";

/// What the receiver answers.
#[derive(Clone, Debug)]
enum Answer {
    Allow,
    /// Allows uploads, but every other event gets 503.
    AllowButEventsDown,
    Refuse(u16, &'static str),
    /// Refuses an upload whose size is known and over this many bytes, as a per-user quota
    /// would; one without a size passes.
    RefuseSizeOver(u64),
    Rewrite(Value),
    Down,
    Slow(Duration),
}

#[derive(Clone)]
struct Receiver {
    answer: Arc<Mutex<Answer>>,
    /// Every event that arrived with a valid signature, in order.
    events: Arc<Mutex<Vec<Value>>>,
    bad_signatures: Arc<Mutex<u32>>,
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let answer = r.answer.lock().unwrap().clone();
    if let Answer::Down = answer {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let given = headers
        .get("chunkwise-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let t: u64 = given
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    if given != signature(SECRET, t, body.as_bytes()) {
        *r.bad_signatures.lock().unwrap() += 1;
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let event: Value = serde_json::from_str(&body).unwrap();
    let blocking = event["type"] == "pre-create" || event["type"] == "pre-finish";
    let size = event["upload"]["size"].as_u64();
    r.events.lock().unwrap().push(event);
    if !blocking {
        if let Answer::AllowButEventsDown = answer {
            r.events.lock().unwrap().pop();
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        return StatusCode::NO_CONTENT.into_response();
    }
    match answer {
        Answer::Allow | Answer::AllowButEventsDown => StatusCode::OK.into_response(),
        Answer::Refuse(status, message) => (
            StatusCode::from_u16(status).unwrap(),
            axum::Json(json!({"error": {"message": message}})),
        )
            .into_response(),
        Answer::RefuseSizeOver(limit) if size.is_some_and(|s| s > limit) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            axum::Json(json!({"error": {"message": format!("over the {limit}-byte quota")}})),
        )
            .into_response(),
        Answer::RefuseSizeOver(_) => StatusCode::OK.into_response(),
        Answer::Rewrite(metadata) => axum::Json(json!({"metadata": metadata})).into_response(),
        Answer::Slow(wait) => {
            tokio::time::sleep(wait).await;
            StatusCode::OK.into_response()
        }
        Answer::Down => unreachable!(),
    }
}

impl Receiver {
    async fn start(answer: Answer) -> (Self, String) {
        let receiver = Receiver {
            answer: Arc::new(Mutex::new(answer)),
            events: Arc::default(),
            bad_signatures: Arc::default(),
        };
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (receiver, url)
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn events_of(&self, kind: &str) -> Vec<Value> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|e| e["type"] == kind)
            .cloned()
            .collect()
    }

    async fn wait_for(&self, kind: &str, count: usize) -> Vec<Value> {
        for _ in 0..300 {
            let events = self.events_of(kind);
            if events.len() >= count {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{count} {kind} event(s) never arrived: {:?}",
            self.events.lock().unwrap()
        );
    }
}

/// The server through `app()` with a hook, on a real socket.
async fn server(dir: &std::path::Path, hook_url: &str, timeout: Duration) -> String {
    let store = Arc::new(
        Store::open(
            dir,
            Limits {
                max_upload_size_bytes: 1 << 30,
                max_chunk_size_bytes: 1 << 24,
                expire_after: Duration::from_secs(3600),
                ..Limits::default()
            },
        )
        .unwrap(),
    );
    let hooks = Hooks::start(
        HookConfig {
            url: HookConfig::parse_url(hook_url).unwrap(),
            secret: Some(SECRET.into()),
            timeout,
            forward_headers: vec!["x-user".parse().unwrap()],
            pre_finish: true,
        },
        dir,
        store.completed_ids().await,
        |id: String| {
            let store = store.clone();
            async move { store.completed_record(&id).await }
        },
    )
    .await
    .unwrap();
    let router = app(
        AppState {
            backend: store,
            token: None,
            hooks: Some(hooks),
            metrics: Default::default(),
        },
        &Site::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap()
    });
    base
}

async fn create(base: &str, metadata: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/uploads"))
        .header("authorization", "Bearer user-7")
        .header("cookie", "session=abc")
        .header("x-user", "7")
        .header("x-other", "not forwarded")
        .body(json!({"chunkSize": 1024, "size": 3000, "metadata": metadata}).to_string())
        .send()
        .await
        .unwrap()
}

/// Sends `bytes` to the upload at `location` in 1024-byte slices, each stored.
async fn send_slices(client: &reqwest::Client, base: &str, location: &str, bytes: &[u8]) {
    for (i, part) in bytes.chunks(1024).enumerate() {
        let response = client
            .put(format!("{base}{location}"))
            .header(protocol::SLICE_INDEX, i.to_string())
            .body(part.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }
}

/// Sends all three slices and completes; returns the completion answer.
async fn upload_rest(base: &str, location: &str, bytes: &[u8]) -> Value {
    let client = reqwest::Client::new();
    send_slices(&client, base, location, bytes).await;
    let response = client
        .post(format!("{base}{location}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn uploads_on_disk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("uploads")).map_or(0, |d| d.count())
}

#[tokio::test]
async fn a_refused_pre_create_reaches_the_client_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, url) = Receiver::start(Answer::Refuse(403, "user 7 is over quota")).await;
    let base = server(dir.path(), &url, Duration::from_secs(5)).await;
    let response = create(&base, json!({"name": "a.bin"})).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "refused_by_hook");
    assert_eq!(body["error"]["message"], "user 7 is over quota");
    assert_eq!(uploads_on_disk(dir.path()), 0);
    let event = &receiver.events_of("pre-create")[0];
    assert_eq!(
        event["upload"],
        json!({"size": 3000, "chunkSize": 1024, "metadata": {"name": "a.bin"}})
    );
    assert_eq!(
        event["request"]["headers"],
        json!({"authorization": "Bearer user-7", "cookie": "session=abc", "x-user": "7"})
    );
    assert!(event["request"]["remoteAddr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(*receiver.bad_signatures.lock().unwrap(), 0);
}

#[tokio::test]
async fn a_hook_that_is_down_slow_or_failing_means_503_and_no_upload() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, url) = Receiver::start(Answer::Down).await;
    let base = server(dir.path(), &url, Duration::from_millis(300)).await;
    for answer in [
        Answer::Down,
        Answer::Slow(Duration::from_secs(2)),
        Answer::Refuse(500, "boom"),
    ] {
        receiver.set(answer.clone());
        let response = create(&base, json!({})).await;
        assert_eq!(response.status(), 503, "{answer:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "hook_unavailable", "{answer:?}");
    }
    // Nothing listens here at all.
    let closed = server(
        dir.path(),
        "http://127.0.0.1:9/hook",
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(create(&closed, json!({})).await.status(), 503);
    assert_eq!(uploads_on_disk(dir.path()), 0);
}

#[tokio::test]
async fn rewritten_metadata_is_stored_and_post_finish_arrives_signed() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, url) =
        Receiver::start(Answer::Rewrite(json!({"owner": "7", "name": "a.bin"}))).await;
    let base = server(dir.path(), &url, Duration::from_secs(5)).await;
    let response = create(&base, json!({"name": "a.bin", "owner": "someone else"})).await;
    assert_eq!(response.status(), 201);
    let location = format!("/{}", response.headers()["location"].to_str().unwrap());
    let status: Value = reqwest::get(format!("{base}{location}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["metadata"], json!({"owner": "7", "name": "a.bin"}));

    let bytes: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
    let completed = upload_rest(&base, &location, &bytes).await;
    let finished = receiver.wait_for("post-finish", 1).await;
    let upload = &finished[0]["upload"];
    assert_eq!(upload["sha256"], protocol::hex(&Sha256::digest(&bytes)));
    assert_eq!(upload["sha256"], completed["sha256"]);
    assert_eq!(upload["size"], 3000);
    assert_eq!(upload["chunkSize"], 1024);
    assert_eq!(upload["metadata"], json!({"owner": "7", "name": "a.bin"}));
    assert_eq!(upload["location"], location);
    assert_eq!(
        finished[0]["eventId"],
        format!("post-finish-{}", completed["id"].as_str().unwrap())
    );

    // Deleting it tells the hook too.
    let deleted = reqwest::Client::new()
        .delete(format!("{base}{location}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let terminated = receiver.wait_for("post-terminate", 1).await;
    assert_eq!(terminated[0]["reason"], "deleted");
    assert_eq!(terminated[0]["upload"]["id"], completed["id"]);
    assert_eq!(*receiver.bad_signatures.lock().unwrap(), 0);
    assert_eq!(
        receiver.events_of("post-finish").len(),
        1,
        "delivered once when the hook is up"
    );
}

fn spawn_hooked(data_dir: &std::path::Path, hook_url: &str) -> (support::Running, String) {
    spawn(data_dir, &["--hook-url", hook_url, "--hook-secret", SECRET])
}

#[tokio::test]
async fn post_finish_survives_a_hook_outage_and_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, url) = Receiver::start(Answer::Allow).await;
    let (mut server, base) = spawn_hooked(dir.path(), &url);
    let response = create(&base, json!({"name": "crash.bin"})).await;
    assert_eq!(response.status(), 201);
    let location = format!("/{}", response.headers()["location"].to_str().unwrap());
    // The hook goes down before complete: complete still answers, from the outbox.
    receiver.set(Answer::Down);
    let bytes: Vec<u8> = (0..3000u32).map(|i| (i * 13 % 256) as u8).collect();
    let completed = upload_rest(&base, &location, &bytes).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.events_of("post-finish").is_empty());
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();

    receiver.set(Answer::Allow);
    let (mut server, _) = spawn_hooked(dir.path(), &url);
    let finished = receiver.wait_for("post-finish", 1).await;
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(finished[0]["upload"]["id"], completed["id"]);
    assert_eq!(
        finished[0]["upload"]["sha256"],
        protocol::hex(&Sha256::digest(&bytes))
    );
    assert_eq!(*receiver.bad_signatures.lock().unwrap(), 0);
}

#[test]
fn a_hook_url_that_does_not_parse_is_refused_at_start() {
    for bad in ["not a url", "ftp://example.test/hook"] {
        let output = Command::new(env!("CARGO_BIN_EXE_chunkwise-server"))
            .args(["--listen", "127.0.0.1:0", "--hook-url", bad])
            .output()
            .unwrap();
        assert!(!output.status.success(), "{bad}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("--hook-url"),
            "{bad}"
        );
    }
}

/// Creates, sends and completes a 3000-byte upload; returns its id.
async fn complete_one(base: &str, seed: u32) -> String {
    let response = create(base, json!({"name": "r.bin"})).await;
    assert_eq!(response.status(), 201);
    let location = format!("/{}", response.headers()["location"].to_str().unwrap());
    let bytes: Vec<u8> = (0..3000u32).map(|i| (i * seed % 256) as u8).collect();
    let completed = upload_rest(base, &location, &bytes).await;
    completed["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_post_finish_lost_in_a_crash_before_it_was_stored_is_queued_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, url) = Receiver::start(Answer::Down).await;
    // Completed before hooks were turned on: never announced, not even later.
    let (mut plain, base) = spawn(dir.path(), &[]);
    let old = complete_one(&base, 3).await;
    plain.kill().unwrap();
    plain.wait().unwrap();

    receiver.set(Answer::AllowButEventsDown);
    let (mut server, base) = spawn_hooked(dir.path(), &url);
    let id = complete_one(&base, 5).await;
    server.kill().unwrap();
    server.wait().unwrap();
    // As if the server had died after completing but before storing the event.
    let hooks = dir.path().join("hooks");
    std::fs::remove_file(hooks.join("outbox").join(format!("post-finish-{id}.json"))).unwrap();
    std::fs::remove_file(hooks.join("finished").join(&id)).unwrap();

    receiver.set(Answer::Allow);
    let (mut server, _) = spawn_hooked(dir.path(), &url);
    let finished = receiver.wait_for("post-finish", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill().unwrap();
    server.wait().unwrap();
    let ids: Vec<&str> = finished
        .iter()
        .map(|e| e["upload"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id.as_str()], "only the lost one, not {old}");
    assert_eq!(receiver.events_of("post-finish").len(), 1);
}

#[tokio::test]
async fn an_expired_upload_is_announced_and_oversized_metadata_never_reaches_the_hook() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, url) = Receiver::start(Answer::Allow).await;
    let (_server, base) = spawn(
        dir.path(),
        &[
            "--hook-url",
            &url,
            "--hook-secret",
            SECRET,
            "--expire-after",
            "1s",
        ],
    );
    // 40 values of 1 KiB: within the metadata limits, but too much for a 64 KiB event.
    let big: serde_json::Map<String, Value> = (0..40)
        .map(|i| (format!("k{i}"), json!("x".repeat(1024))))
        .collect();
    let response = create(&base, Value::Object(big)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_metadata");
    assert!(receiver.events_of("pre-create").is_empty());

    let response = create(&base, json!({"name": "abandoned.bin"})).await;
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"].clone();
    let terminated = receiver.wait_for("post-terminate", 1).await;
    assert_eq!(terminated[0]["reason"], "expired");
    assert_eq!(terminated[0]["upload"]["id"], id);
    assert_eq!(
        terminated[0]["upload"]["metadata"],
        json!({"name": "abandoned.bin"})
    );
}

#[tokio::test]
async fn a_header_sent_twice_gives_the_hook_the_line_the_proxy_appended() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, url) = Receiver::start(Answer::Refuse(403, "no")).await;
    let base = server(dir.path(), &url, Duration::from_secs(5)).await;
    // The client's own X-User first, then the one a proxy in front appended.
    let response = reqwest::Client::new()
        .post(format!("{base}/uploads"))
        .header("x-user", "666")
        .header("cookie", "theme=dark")
        .header("cookie", "session=abc")
        .header("x-user", "7")
        .body(json!({"chunkSize": 1024, "size": 3000}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let event = &receiver.events_of("pre-create")[0];
    assert_eq!(
        event["request"]["headers"],
        json!({"cookie": "theme=dark; session=abc", "x-user": "7"})
    );
}

/// Creates an upload without a size, sends `bytes` in 1024-byte slices, and completes it
/// with its size; returns the completion's status and body.
async fn upload_deferred(base: &str, bytes: &[u8]) -> (String, u16, Value) {
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{base}/uploads"))
        .header("authorization", "Bearer user-7")
        .body(json!({"chunkSize": 1024}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "a deferred size passes pre-create");
    let location = format!("/{}", created.headers()["location"].to_str().unwrap());
    send_slices(&client, base, &location, bytes).await;
    let response = client
        .post(format!("{base}{location}"))
        .header("authorization", "Bearer user-7")
        .body(json!({"size": bytes.len()}).to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (location, status, response.json().await.unwrap())
}

#[tokio::test]
async fn pre_finish_judges_a_deferred_size_once_known_and_a_refusal_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, url) = Receiver::start(Answer::RefuseSizeOver(2048)).await;
    let base = server(dir.path(), &url, Duration::from_secs(5)).await;
    // Within the quota: asked again, allowed, completed.
    let (_, status, done) = upload_deferred(&base, &[7u8; 2000]).await;
    assert_eq!(status, 200, "{done}");
    let asked = receiver.events_of("pre-finish");
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0]["upload"]["size"], 2000);
    assert_eq!(asked[0]["upload"]["id"], done["id"]);
    assert_eq!(
        asked[0]["request"]["headers"]["authorization"],
        "Bearer user-7"
    );
    // Over it: refused with the hook's words, and the upload is gone.
    let (location, status, refused) = upload_deferred(&base, &[8u8; 3000]).await;
    assert_eq!(status, 413, "{refused}");
    assert_eq!(refused["error"]["code"], "refused_by_hook");
    assert_eq!(refused["error"]["message"], "over the 2048-byte quota");
    let gone = reqwest::get(format!("{base}{location}")).await.unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(uploads_on_disk(dir.path()), 0);
    assert_eq!(receiver.events_of("pre-finish").len(), 2);
    // A repeated complete of the first is not asked again.
    let again = reqwest::Client::new()
        .post(format!("{base}/uploads/{}", done["id"].as_str().unwrap()))
        .body(json!({"size": 2000}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(receiver.events_of("pre-finish").len(), 2);
}
