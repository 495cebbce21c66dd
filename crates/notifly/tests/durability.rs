//! An event the API acknowledged is delivered even if the server is killed
//! with SIGKILL mid-delivery: drives the real binary, kills it while writes,
//! deliveries and retries are in flight, restarts it, and checks that every
//! acknowledged event reached the receiver (duplicates allowed, and counted).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Default)]
struct Seen {
    /// Contact id (from `contact.created` payloads) → times delivered successfully.
    delivered: HashMap<String, u32>,
}

async fn receive(
    State(seen): State<Arc<Mutex<Seen>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let event: Value = serde_json::from_slice(&body).unwrap();
    let attempt: u32 = headers["x-notifly-attempt"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let id = event["payload"]["id"].as_str().unwrap().to_owned();
    // Keep deliveries in flight for a moment, and fail the first attempt of
    // about a third of them so that some are mid-retry at the kill.
    tokio::time::sleep(Duration::from_millis(5)).await;
    if attempt == 1 && id.as_bytes()[0].is_multiple_of(3) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    *seen.lock().unwrap().delivered.entry(id).or_default() += 1;
    StatusCode::OK
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(db: &str, dir: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_notifly"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            db,
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "--allow-private-urls",
            "--retry-schedule",
            "0s,100ms,200ms,400ms,800ms,1s,2s,2s,2s,2s",
        ])
        .args(["--delivery-timeout", "2s"])
        .env("NOTIFLY_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("server at {base} did not become ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("notifly.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_notifly"))
        .args([
            "accounts",
            "create",
            "--name",
            "durable",
            "--json",
            "--database",
            &db,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let account: Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = account["api_key"].as_str().unwrap().to_owned();

    let seen = Arc::new(Mutex::new(Seen::default()));
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_url = format!("http://{}/hook", receiver.local_addr().unwrap());
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(receiver, app).await.unwrap() });

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = serve(&db, dir.path(), port);
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;
    let auth = format!("Bearer {key}");
    let r = client
        .post(format!("{base}/v1/webhooks"))
        .header("authorization", &auth)
        .json(&json!({"name": "durable", "url": receiver_url, "events": ["contact.created"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Writers run until the kill; only 201s count as acknowledged.
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, base, auth, acked, stop) = (
            client.clone(),
            base.clone(),
            auth.clone(),
            acked.clone(),
            stop.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let body = json!({"username": format!("w{w}n{n}"), "phone_number": "+1 555 0100"});
                let sent = client
                    .post(format!("{base}/v1/contacts"))
                    .header("authorization", &auth)
                    .json(&body)
                    .send()
                    .await;
                if let Ok(r) = sent
                    && r.status() == 201
                    && let Ok(v) = r.json::<Value>().await
                {
                    acked
                        .lock()
                        .unwrap()
                        .insert(v["id"].as_str().unwrap().to_owned());
                }
            }
        }));
    }
    // Kill once a good number of writes are acknowledged and deliveries are flowing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().clone();
    let delivered_at_kill = seen.lock().unwrap().delivered.len();
    assert!(
        acked.len() >= 300,
        "only {} writes acknowledged before the kill",
        acked.len()
    );
    assert!(
        delivered_at_kill < acked.len(),
        "the kill should land while deliveries are outstanding ({delivered_at_kill} of {} delivered)",
        acked.len()
    );

    let mut server = serve(&db, dir.path(), port);
    wait_ready(&client, &base).await;
    // In-flight work of the killed process waits for its leases to expire
    // (timeout + 5 s), so allow comfortably more than that.
    let deadline = Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let missing: Vec<String> = {
            let seen = seen.lock().unwrap();
            acked
                .iter()
                .filter(|id| !seen.delivered.contains_key(*id))
                .cloned()
                .collect()
        };
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(
        missing.is_empty(),
        "{} acknowledged events never delivered, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let seen = seen.lock().unwrap();
    let duplicates: u32 = seen.delivered.values().map(|n| n - 1).sum();
    println!(
        "acknowledged {}, delivered {} distinct ({} of them before the kill), duplicate successful deliveries {}",
        acked.len(),
        seen.delivered.len(),
        delivered_at_kill,
        duplicates
    );
}
