//! An event the API acknowledged is delivered even if the server is killed
//! with SIGKILL mid-delivery: drives the real binary, kills it while writes,
//! deliveries and retries are in flight, restarts it, and checks that every
//! acknowledged event reached the receiver (duplicates allowed, and counted),
//! without waiting for the killed process's leases to expire.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{
    call, create_account, free_port, receiver, replay_everything, wait_delivered, wait_ready,
    write_contacts,
};
use serde_json::{Value, json};

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
        // Leases last 2 × timeout + 10 s = 130 s: far longer than the test
        // waits after the restart, so everything the killed process had in
        // flight must be taken back at start, not left to expire.
        .args(["--delivery-timeout", "60s"])
        .env("NOTIFLY_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("notifly.db").display());
    let key = create_account(&db, "durable");
    // Slow enough (16 in flight, 25 ms each: at most ~640/s) that deliveries
    // fall behind 8 writers, so the kill lands with some outstanding.
    let (receiver_url, seen) = receiver(Duration::from_millis(25)).await;

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
    // Counted at the kill: the receiver's requests still in flight finish
    // (and count) after it, although the server never hears their answers.
    let delivered_at_kill = seen.lock().unwrap().delivered.len();
    server.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().clone();
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

    let restarted = Instant::now();
    let mut server = serve(&db, dir.path(), port);
    wait_ready(&client, &base).await;
    // The restarted server is the database's only one, so it takes back the
    // killed process's leases at start and sends that work at once: well
    // within this deadline, which is shorter than the leases.
    let missing = wait_delivered(&seen, &acked, Duration::from_secs(60)).await;
    let recovered_in = restarted.elapsed();
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(
        missing.is_empty(),
        "{} acknowledged events never delivered, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let seen = seen.lock().unwrap();
    let duplicates = seen.duplicates();
    println!(
        "acknowledged {}, delivered {} distinct ({} of them before the kill), duplicate successful deliveries {}, all delivered {:.1} s after the restart began",
        acked.len(),
        seen.delivered.len(),
        delivered_at_kill,
        duplicates,
        recovered_in.as_secs_f64()
    );
}

/// A replay killed with SIGKILL half-way resumes after the restart where its
/// last committed step left it: every event of the window reaches the
/// receiver, the replay completes with `sent == total`, it made exactly one
/// delivery per event, and only attempts in flight at the kill may arrive
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_resumes_after_kill_9() {
    const EVENTS: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("notifly.db").display());
    let key = create_account(&db, "replayed");
    // Slow enough (16 in flight, 25 ms each: at most ~640/s) that deliveries
    // fall behind 8 writers, so the kill lands with some outstanding.
    let (receiver_url, seen) = receiver(Duration::from_millis(25)).await;

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = serve(&db, dir.path(), port);
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;
    let auth = format!("Bearer {key}");
    let written = write_contacts(&client, &[&base], &auth, EVENTS).await;
    // A webhook made after them, and a replay of them all.
    let (hook, path) = replay_everything(&client, &base, &auth, &receiver_url, EVENTS).await;
    let replay_url = format!("{base}{path}");

    // Kill it half-way.
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().delivered.len() < EVENTS / 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    let delivered_at_kill = seen.lock().unwrap().delivered.len();
    assert!(
        delivered_at_kill < EVENTS,
        "the kill should land mid-replay ({delivered_at_kill} of {EVENTS} delivered)"
    );

    let mut server = serve(&db, dir.path(), port);
    wait_ready(&client, &base).await;
    let missing = wait_delivered(&seen, &written, Duration::from_secs(60)).await;
    let mut status = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        status = call(client.get(&replay_url), &auth).await.1;
        if status["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One delivery per event: the replay repeated no step.
    let mut deliveries = 0;
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/webhooks/{hook}/deliveries?limit=100");
        if let Some(a) = &after {
            url.push_str(&format!("&starting_after={a}"));
        }
        let page = call(client.get(&url), &auth).await.1;
        let data = page["data"].as_array().unwrap();
        deliveries += data.len();
        if page["has_more"] != true {
            break;
        }
        after = data.last().map(|d| d["id"].as_str().unwrap().to_owned());
    }
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(
        missing.is_empty(),
        "{} replayed events never delivered, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(status["sent"], EVENTS, "{status}");
    assert_eq!(deliveries, EVENTS, "one delivery per replayed event");
    let duplicates = seen.lock().unwrap().duplicates();
    // The attempts in flight at the kill (at most the webhook's 16) are
    // the only ones sent again.
    assert!(duplicates <= 16, "{duplicates} events arrived twice");
    println!(
        "replayed {EVENTS}: {delivered_at_kill} delivered before the kill, {duplicates} twice"
    );
}
