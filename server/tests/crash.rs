//! The real binary killed with SIGKILL mid-upload, then started again on the same data.

mod support;

use support::spawn;

use chunkwise_core::protocol;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[tokio::test]
async fn kill_9_mid_upload_loses_no_acknowledged_slice() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let chunk = 256 * 1024;
    let bytes: Vec<u8> = (0..chunk * 12 + 99).map(|i| (i * 31 % 251) as u8).collect();
    let (mut server, base) = spawn(dir.path(), &[]);
    let response = client
        .post(format!("{base}/uploads"))
        .body(json!({"chunkSize": chunk, "size": bytes.len()}).to_string())
        .send()
        .await
        .unwrap();
    let location = format!("/{}", response.headers()["location"].to_str().unwrap());
    let count = bytes.len().div_ceil(chunk);
    let put = |base: String, i: usize| {
        let part = bytes[i * chunk..((i + 1) * chunk).min(bytes.len())].to_vec();
        let request = client
            .put(format!("{base}{location}/slices/{i}"))
            .header(
                "content-digest",
                protocol::content_digest(&Sha256::digest(&part).into()),
            )
            .body(part);
        async move { request.send().await.map(|r| r.status().as_u16()) }
    };
    let mut acknowledged = Vec::new();
    for i in (0..count).step_by(2) {
        assert_eq!(put(base.clone(), i).await.unwrap(), 204);
        acknowledged.push(i);
    }
    server.kill().unwrap();
    server.wait().unwrap();

    let (mut server, base) = spawn(dir.path(), &[]);
    let status: Value = client
        .get(format!("{base}{location}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or_else(|_| panic!("status is not JSON"));
    let received: Vec<u64> = status["received"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r[0].as_u64().unwrap()..r[1].as_u64().unwrap())
        .collect();
    assert_eq!(
        received,
        acknowledged.iter().map(|&i| i as u64).collect::<Vec<_>>()
    );
    for i in (1..count).step_by(2) {
        assert_eq!(put(base.clone(), i).await.unwrap(), 204);
    }
    let done: Value = client
        .post(format!("{base}{location}/complete"))
        .body(json!({"sha256": protocol::hex(&Sha256::digest(&bytes))}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done["sha256"], protocol::hex(&Sha256::digest(&bytes)));
    let id = done["id"].as_str().unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("files").join(id)).unwrap(),
        bytes
    );
    server.kill().unwrap();
    server.wait().unwrap();
}
