//! A full file system under the SQLite database: writes answer 503 with
//! `Retry-After` and say the storage is full, nothing of them is kept,
//! reads go on, `/healthz` and `/metrics` show it, and writes resume once
//! space is freed.
//!
//! The database lives on a tmpfs of its own, filled by a file; mounting one
//! needs root, so the test is ignored unless asked for (CI runs it, as root,
//! in its `--include-ignored` pass).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Client, Reply, TestServer, id_of};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "notifly-test"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount a tmpfs at {} (the test needs root): {status}",
            at.display()
        );
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a file still open (a failed test's server) must not keep
        // the mount.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes to `path` until the file system has no room left.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0x5a_u8; 64 * 1024];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("fill the file system: {e}"),
        }
    }
    // What is left of the last block, a byte at a time.
    while let Ok(1) = file.write(b"z") {}
}

async fn post_message(c: &Client, conversation: &str, text: &str) -> Reply {
    c.send_raw(
        c.request(Method::POST, "/v1/messages")
            .json(&json!({"conversation_id": conversation, "message": text})),
    )
    .await
}

async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = reqwest::get(server.url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("read /metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} is not in /metrics:\n{text}"))
        .parse()
        .expect("a number")
}

async fn healthz(server: &TestServer) -> Value {
    let res = reqwest::get(server.url("/healthz"))
        .await
        .expect("GET /healthz");
    assert_eq!(res.status().as_u16(), 200, "/healthz answers while full");
    res.json().await.expect("/healthz is JSON")
}

#[tokio::test]
#[ignore = "mounts a tmpfs: needs root (CI runs it in its --include-ignored pass)"]
async fn a_full_disk_refuses_writes_with_503_until_space_is_freed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _tmpfs = Tmpfs::mount(dir.path(), "8m");
    let db_path = dir.path().join("notifly.db");
    let server = TestServer::start_with(|c| {
        c.database_url = format!("sqlite://{}", db_path.display());
        c.data_dir = dir.path().join("data");
    })
    .await;
    let c = server.account("acme").await;
    let contact = c.contact("kevin").await;
    let (status, conversation) = c
        .post("/v1/conversations", json!({"contact_id": id_of(&contact)}))
        .await;
    assert_eq!(status, 201, "{conversation}");
    let conversation = id_of(&conversation).to_owned();
    assert_eq!(healthz(&server).await["status"], "ok");
    assert_eq!(metric(&server, "notifly_storage_full").await, 0.0);

    fill(&dir.path().join("filler"));
    // SQLite may still have room in pages it holds; each message (and its
    // event) takes 20 KB more.
    let text = "x".repeat(9_990);
    let mut refused = None;
    for i in 0..2_000 {
        let reply = post_message(&c, &conversation, &format!("{i} {text}")).await;
        if reply.status != 201 {
            refused = Some((i, reply));
            break;
        }
    }
    let (i, reply) = refused.expect("a write refused within 40 MB on an 8 MB file system");
    assert_eq!(reply.status, 503, "{}", reply.json());
    assert_eq!(reply.header("retry-after").as_deref(), Some("30"));
    let body = reply.json();
    assert_eq!(body["type"], "api_error", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("storage is full"), "{message}");

    // Nothing of the refused write was kept, and reads go on.
    let messages = c
        .list_all(&format!("/v1/messages?conversation_id={conversation}"))
        .await;
    assert_eq!(messages.len(), i, "the messages acknowledged, and no more");
    let prefix = format!("{i} ");
    assert!(
        messages.iter().all(|m| !m["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&prefix)),
        "the refused message was not kept"
    );

    // The operator's view: health, metrics.
    let health = healthz(&server).await;
    assert_eq!(health["status"], "storage_full", "{health}");
    let location = health["storage_full"]["location"]
        .as_str()
        .unwrap_or_default();
    assert!(
        location.contains(&db_path.display().to_string()),
        "{health}"
    );
    assert!(
        health["storage_full"]["since"].as_i64().is_some(),
        "{health}"
    );
    assert_eq!(metric(&server, "notifly_storage_full").await, 1.0);
    assert!(metric(&server, "notifly_storage_full_refusals_total").await >= 1.0);

    // Space freed: the same write goes through, and the state clears.
    std::fs::remove_file(dir.path().join("filler")).expect("remove the filler");
    let reply = post_message(&c, &conversation, &format!("{i} {text}")).await;
    assert_eq!(reply.status, 201, "{}", reply.json());
    let health = healthz(&server).await;
    assert_eq!(health["status"], "ok", "{health}");
    assert!(health.get("storage_full").is_none(), "{health}");
    assert_eq!(metric(&server, "notifly_storage_full").await, 0.0);
    assert_eq!(
        c.list_all(&format!("/v1/messages?conversation_id={conversation}"))
            .await
            .len(),
        i + 1
    );
    server.stop().await;
}
