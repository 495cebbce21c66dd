//! Several `notifly serve` nodes on one PostgreSQL database, driven as real
//! processes: any node takes writes, every node delivers, a node killed with
//! SIGKILL loses nothing (its leases expire and the others retry its work),
//! per-endpoint in-flight limits and rate limits hold across nodes, and a PostgreSQL restart
//! under load costs 503s (never a hang, a 500 or a lost acknowledged event).
//!
//! These need PostgreSQL, so they are `#[ignore]`d by default: `.ci/run`
//! runs them with `NOTIFLY_TEST_POSTGRES_URL` (an admin URL through which a
//! scratch database is created) and, for the restart test,
//! `NOTIFLY_TEST_POSTGRES_RESTART` (a shell command that stops the server,
//! keeps it down for a few seconds, and starts it again).

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{
    call, create_account, free_port, receiver, replay_everything, wait_delivered, wait_ready,
    write_contacts,
};
use serde_json::{Value, json};
use sqlx::Connection;

/// The tests share one PostgreSQL server and one restarts it: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Per-endpoint concurrency given to every node.
const ENDPOINT_CONCURRENCY: usize = 16;
/// Attempt timeout given to every node; leases last 2 × this + 10 s.
const TIMEOUT_MS: i64 = 2_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: this test needs PostgreSQL (see the module docs)"),
    }
}

/// A database made for one test, dropped after it.
struct ScratchDb {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchDb {
    async fn create() -> ScratchDb {
        let admin_url = env("NOTIFLY_TEST_POSTGRES_URL");
        let name = format!(
            "notifly_multinode_{}",
            notifly_server::ids::new_id().to_lowercase()
        );
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .unwrap();
        let mut url = notifly_server::store::postgres::url_with_database(&admin_url, &name);
        url.push_str(if url.contains('?') { "&" } else { "?" });
        url.push_str("application_name=notifly-multinode");
        ScratchDb {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .execute(&mut admin)
                        .await
                        .map(|_| ())
                })
        })
        .join();
    }
}

/// One `notifly serve` process.
struct Node {
    child: Child,
    base: String,
    /// Its node id, as `/healthz` tells (filled in once it is ready).
    id: String,
    alive: AtomicBool,
}

impl Drop for Node {
    /// A failing test must not leave servers running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The cluster's encryption key: base64 of `notifly-test-key-32-bytes-long!!`.
const ENCRYPTION_KEY: &str = "bm90aWZseS10ZXN0LWtleS0zMi1ieXRlcy1sb25nISE=";

fn start_node(db: &str, dir: &std::path::Path, n: usize) -> Node {
    start_node_with(db, dir, n, &[])
}

/// [`start_node`] with more environment variables.
fn start_node_with(db: &str, dir: &std::path::Path, n: usize, vars: &[(&str, &str)]) -> Node {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_notifly"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--database", db])
        .arg("--data-dir")
        .arg(dir.join(format!("node{n}")))
        .args([
            "--allow-private-urls",
            "--retry-schedule",
            "0s,100ms,200ms,400ms,800ms,1s,2s,2s,2s,2s",
        ])
        .args(["--delivery-timeout", &format!("{TIMEOUT_MS}ms")])
        .args(["--endpoint-concurrency", &ENDPOINT_CONCURRENCY.to_string()])
        .env("NOTIFLY_LOG", "warn")
        // The nodes share one key, as a real cluster's must.
        .env("NOTIFLY_ENCRYPTION_KEY", ENCRYPTION_KEY)
        .envs(vars.iter().copied())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Node {
        child,
        base: format!("http://127.0.0.1:{port}"),
        id: String::new(),
        alive: AtomicBool::new(true),
    }
}

/// How the writes went.
#[derive(Default)]
struct Outcomes {
    /// Contact ids of writes answered 201.
    acked: HashSet<String>,
    /// Writes answered 503 (the database was unavailable).
    unavailable: usize,
    /// Anything else: other statuses, timeouts, refused connections to a
    /// live node.
    other: Vec<String>,
}

/// Writers spreading contact creations over the live nodes until `stop`.
fn spawn_writers(
    nodes: &Arc<Vec<Node>>,
    auth: &str,
    writers: usize,
    outcomes: &Arc<Mutex<Outcomes>>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    // A request that is not answered in this long counts as hung (the API
    // gives up on a database connection after 3 s).
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    (0..writers)
        .map(|w| {
            let (client, nodes, auth, outcomes, stop, next) = (
                client.clone(),
                nodes.clone(),
                auth.to_owned(),
                outcomes.clone(),
                stop.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let i = next.fetch_add(1, Ordering::Relaxed) % nodes.len();
                    let node = &nodes[i];
                    if !node.alive.load(Ordering::Relaxed) {
                        continue;
                    }
                    let body =
                        json!({"username": format!("w{w}n{n}"), "phone_number": "+1 555 0100"});
                    let sent = client
                        .post(format!("{}/v1/contacts", node.base))
                        .header("authorization", &auth)
                        .json(&body)
                        .send()
                        .await;
                    let mut o = match sent {
                        Ok(r) if r.status() == 201 => {
                            let v: Value = r.json().await.unwrap();
                            let id = v["id"].as_str().unwrap().to_owned();
                            outcomes.lock().unwrap().acked.insert(id);
                            continue;
                        }
                        Ok(r)
                            if r.status() == 503
                                && r.headers().get("retry-after").is_some_and(|v| v == "1") =>
                        {
                            outcomes.lock().unwrap().unavailable += 1;
                            // A client backs off before retrying.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                        Ok(r) => {
                            let status = r.status();
                            format!("node {i}: {status} {}", r.text().await.unwrap_or_default())
                        }
                        Err(e) => format!("node {i}: {e:?}"),
                    };
                    // A refused connection to a node that was just killed is
                    // the kill, not a failure.
                    if !node.alive.load(Ordering::Relaxed) {
                        continue;
                    }
                    o.truncate(300);
                    outcomes.lock().unwrap().other.push(o);
                }
            })
        })
        .collect()
}

/// Three nodes and a receiver on a fresh database; returns them with the
/// account's `Authorization` header.
async fn cluster(db: &ScratchDb, dir: &std::path::Path) -> (Arc<Vec<Node>>, String) {
    let key = create_account(&db.url, "multinode");
    let mut nodes: Vec<Node> = (0..3).map(|n| start_node(&db.url, dir, n)).collect();
    let client = reqwest::Client::new();
    for node in &mut nodes {
        wait_ready(&client, &node.base).await;
        let health: Value = client
            .get(format!("{}/healthz", node.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        node.id = health["node"].as_str().unwrap().to_owned();
    }
    (Arc::new(nodes), format!("Bearer {key}"))
}

async fn register(nodes: &[Node], auth: &str, url: &str) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/webhooks", nodes[0].base))
        .header("authorization", auth)
        .json(&json!({"name": "multinode", "url": url, "events": ["contact.created"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// A node that holds delivery leases now (waiting until one does).
async fn holder_of_leases(conn: &mut sqlx::PgConnection, nodes: &[Node]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let owners: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT split_part(owner, ':', 1) FROM endpoint_slots WHERE until_ms > $1",
        )
        .bind(now_ms())
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        if let Some(i) = nodes.iter().position(|n| owners.contains(&n.id)) {
            return i;
        }
        assert!(Instant::now() < deadline, "no node holds a lease");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_acked(outcomes: &Arc<Mutex<Outcomes>>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while outcomes.lock().unwrap().acked.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} writes acknowledged",
            outcomes.lock().unwrap().acked.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Stops every node (dropping a node kills it).
fn kill_all(nodes: Arc<Vec<Node>>) {
    drop(Arc::try_unwrap(nodes).unwrap_or_else(|_| panic!("writers still hold the nodes")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set NOTIFLY_TEST_POSTGRES_URL and run with --include-ignored"]
async fn three_nodes_lose_nothing_when_one_is_killed() {
    let _serial = SERIAL.lock().await;
    let db = ScratchDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let (nodes, auth) = cluster(&db, dir.path()).await;
    // A slow receiver keeps all of the endpoint's slots busy, spread over
    // the nodes, so the killed node is holding leases when it dies.
    let (receiver_url, seen) = receiver(Duration::from_millis(100)).await;
    register(&nodes, &auth, &receiver_url).await;

    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&nodes, &auth, 12, &outcomes, &stop);
    wait_acked(&outcomes, 300).await;

    // SIGKILL, mid-run, a node that holds leases right now; the writers
    // move to the other two.
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let victim = holder_of_leases(&mut conn, &nodes).await;
    nodes[victim].alive.store(false, Ordering::Relaxed);
    Command::new("kill")
        .args(["-9", &nodes[victim].child.id().to_string()])
        .status()
        .unwrap();
    let acked_at_kill = outcomes.lock().unwrap().acked.len();
    let delivered_at_kill = seen.lock().unwrap().delivered.len();
    // The dead node's leases outlive it; the other nodes take the work over
    // once they expire.
    let orphaned: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM endpoint_slots s JOIN deliveries d ON d.id = s.delivery_id
         WHERE starts_with(s.owner, $1 || ':') AND s.until_ms > $2 AND d.status = 'pending'",
    )
    .bind(&nodes[victim].id)
    .bind(now_ms())
    .fetch_one(&mut conn)
    .await
    .unwrap();
    wait_acked(&outcomes, acked_at_kill + 300).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        orphaned > 0,
        "the killed node held no leases: nothing of its work was left to take over"
    );

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    assert!(
        outcomes.other.is_empty(),
        "writes to live nodes failed: {:?}",
        &outcomes.other[..outcomes.other.len().min(5)]
    );
    // The killed node's leases expire after 2 × 2 s + 10 s; allow more.
    let missing = wait_delivered(&seen, &outcomes.acked, Duration::from_secs(90)).await;
    kill_all(nodes);
    assert!(
        missing.is_empty(),
        "{} acknowledged events never delivered, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let seen = seen.lock().unwrap();
    assert!(
        seen.max_in_flight > 2,
        "the endpoint never had more than {} requests in flight: the limit was not exercised",
        seen.max_in_flight
    );
    assert!(
        seen.max_in_flight <= ENDPOINT_CONCURRENCY,
        "the endpoint had {} requests in flight at once across the nodes (limit {ENDPOINT_CONCURRENCY})",
        seen.max_in_flight
    );
    println!(
        "3 nodes, one killed: acknowledged {} ({acked_at_kill} before the kill), delivered {} distinct ({delivered_at_kill} before the kill), leases the killed node still held {orphaned}, duplicate successful deliveries {}, most in flight to the endpoint {}",
        outcomes.acked.len(),
        seen.delivered.len(),
        seen.duplicates(),
        seen.max_in_flight,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set NOTIFLY_TEST_POSTGRES_URL and NOTIFLY_TEST_POSTGRES_RESTART and run with --include-ignored"]
async fn a_postgres_restart_under_load_costs_503s_and_nothing_else() {
    let _serial = SERIAL.lock().await;
    let restart = env("NOTIFLY_TEST_POSTGRES_RESTART");
    let db = ScratchDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let (nodes, auth) = cluster(&db, dir.path()).await;
    let (receiver_url, seen) = receiver(Duration::from_millis(5)).await;
    register(&nodes, &auth, &receiver_url).await;

    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&nodes, &auth, 8, &outcomes, &stop);
    wait_acked(&outcomes, 200).await;

    let began = Instant::now();
    let restarted = tokio::task::spawn_blocking(move || {
        Command::new("sh").args(["-c", &restart]).status().unwrap()
    })
    .await
    .unwrap();
    assert!(restarted.success(), "the restart command failed");
    let outage = began.elapsed();
    // The nodes carry on: more writes are acknowledged after the restart.
    let acked_at_restart = outcomes.lock().unwrap().acked.len();
    wait_acked(&outcomes, acked_at_restart + 300).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    assert!(
        outcomes.other.is_empty(),
        "during the outage, writes failed other than with 503 + Retry-After: {:?}",
        &outcomes.other[..outcomes.other.len().min(5)]
    );
    assert!(
        outcomes.unavailable > 0,
        "no write was answered 503 during the outage ({:.1} s): the restart command must keep PostgreSQL down for longer than the 3 s connection wait",
        outage.as_secs_f64()
    );
    let missing = wait_delivered(&seen, &outcomes.acked, Duration::from_secs(90)).await;
    // Every node is still up and ready.
    let client = reqwest::Client::new();
    for node in nodes.iter() {
        wait_ready(&client, &node.base).await;
    }
    kill_all(nodes);
    assert!(
        missing.is_empty(),
        "{} acknowledged events never delivered, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let seen = seen.lock().unwrap();
    println!(
        "PostgreSQL restarted in {:.1} s under load: acknowledged {}, answered 503 {}, delivered {} distinct, duplicate successful deliveries {}",
        outage.as_secs_f64(),
        outcomes.acked.len(),
        outcomes.unavailable,
        seen.delivered.len(),
        seen.duplicates(),
    );
}

/// Reads an account's event stream (`/v1/events/stream` on one node) into
/// `ids`, in the order it arrives, until the test ends.
async fn follow_stream(base: &str, auth: &str, ids: Arc<Mutex<Vec<String>>>) {
    let mut r = reqwest::Client::new()
        .get(format!("{base}/v1/events/stream"))
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::spawn(async move {
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = r.chunk().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find('\n') {
                let line: String = buffer.drain(..=end).collect();
                if let Some(id) = line.trim_end().strip_prefix("id:") {
                    ids.lock().unwrap().push(id.trim().to_owned());
                }
            }
        }
    });
}

/// Every event of the account, oldest first, paged through `/v1/events`.
async fn event_log(base: &str, auth: &str) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut newest_first = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/events?limit=100");
        if let Some(c) = &cursor {
            url.push_str(&format!("&starting_after={c}"));
        }
        let page: Value = client
            .get(url)
            .header("authorization", auth)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = page["data"].as_array().unwrap();
        newest_first.extend(items.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        cursor = newest_first.last().cloned();
    }
    newest_first.reverse();
    newest_first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set NOTIFLY_TEST_POSTGRES_URL and run with --include-ignored"]
async fn one_account_written_on_three_nodes_streams_every_event_once_in_order() {
    let _serial = SERIAL.lock().await;
    let db = ScratchDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let (nodes, auth) = cluster(&db, dir.path()).await;
    // Streams on two nodes, opened before the writes: each must see every
    // event once, in the log's order, although the writes of the account
    // run in parallel on three nodes and commit out of order.
    let streams: Vec<Arc<Mutex<Vec<String>>>> = (0..2).map(|_| Arc::default()).collect();
    for (node, ids) in nodes.iter().zip(&streams) {
        follow_stream(&node.base, &auth, ids.clone()).await;
    }

    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&nodes, &auth, 24, &outcomes, &stop);
    wait_acked(&outcomes, 600).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let o = std::mem::take(&mut *outcomes.lock().unwrap());
    assert!(o.other.is_empty(), "failed writes: {:?}", o.other);
    assert_eq!(o.unavailable, 0, "no write was refused");

    let log = event_log(&nodes[2].base, &auth).await;
    assert_eq!(log.len(), o.acked.len(), "one event per acknowledged write");
    assert_eq!(
        log.iter().collect::<HashSet<_>>().len(),
        log.len(),
        "the log lists each event once"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    for ids in &streams {
        while ids.lock().unwrap().len() < log.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A moment for anything extra (a duplicate) to arrive.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            *ids.lock().unwrap(),
            log,
            "the stream has every event once, in the log's order"
        );
    }
    kill_all(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set NOTIFLY_TEST_POSTGRES_URL and run with --include-ignored"]
async fn a_rate_limit_holds_across_three_nodes() {
    let _serial = SERIAL.lock().await;
    let db = ScratchDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let (nodes, auth) = cluster(&db, dir.path()).await;
    let (receiver_url, seen) = receiver(Duration::from_millis(5)).await;
    const RATE: usize = 5;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/webhooks", nodes[1].base))
        .header("authorization", &auth)
        .json(&json!({"name": "paced", "url": receiver_url, "events": ["contact.created"], "rate_limit": RATE}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Writes on every node; their deliveries wait for whichever node's
    // claim the limiter lets through.
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&nodes, &auth, 3, &outcomes, &stop);
    wait_acked(&outcomes, 30).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    assert!(outcomes.other.is_empty(), "{:?}", outcomes.other);
    let missing = wait_delivered(&seen, &outcomes.acked, Duration::from_secs(60)).await;
    kill_all(nodes);
    assert!(missing.is_empty(), "{} never delivered", missing.len());
    let seen = seen.lock().unwrap();
    let at = &seen.arrivals;
    // Every attempt (a third of first attempts fail and are retried) counts:
    // in any one second at most the rate and its burst (a fifth, at least one).
    let burst = (RATE / 5).max(1);
    let mut most = 0;
    for (i, t) in at.iter().enumerate() {
        let within = at[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
            .count();
        most = most.max(within);
    }
    assert!(
        most <= RATE + burst,
        "{most} requests within one second to an endpoint limited to {RATE}/s"
    );
    let span = at[at.len() - 1].duration_since(at[0]);
    let floor = Duration::from_secs_f64((at.len() - 1 - burst) as f64 / RATE as f64);
    assert!(span >= floor, "{} requests in {span:?}", at.len());
    println!(
        "3 nodes, rate limit {RATE}/s: {} requests in {span:?}, at most {most} in one second",
        at.len()
    );
}

/// Progress as the API shows it on one node, while any node's replayer
/// advances it: `sent` only grows, the replay completes with
/// `sent == total`, every event arrives, and no step is taken twice (one
/// delivery per event), although the nodes take turns and one of them is
/// killed half-way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set NOTIFLY_TEST_POSTGRES_URL and run with --include-ignored"]
async fn a_replay_progresses_across_three_nodes_and_survives_one_killed() {
    const EVENTS: usize = 300;
    let _serial = SERIAL.lock().await;
    let db = ScratchDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let (nodes, auth) = cluster(&db, dir.path()).await;
    let (receiver_url, seen) = receiver(Duration::from_millis(5)).await;
    let client = reqwest::Client::new();
    let bases: Vec<&str> = nodes.iter().map(|n| n.base.as_str()).collect();
    let written = write_contacts(&client, &bases, &auth, EVENTS).await;
    // Made and started through node 1, watched through node 2.
    let (hook, path) =
        replay_everything(&client, &nodes[1].base, &auth, &receiver_url, EVENTS).await;

    // Watched on node 2; node 0 is killed once a quarter has arrived.
    let mut sent_seen = vec![0_i64];
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let r = call(client.get(format!("{}{path}", nodes[2].base)), &auth)
            .await
            .1;
        let sent = r["sent"].as_i64().unwrap();
        assert!(sent >= *sent_seen.last().unwrap(), "sent went back: {r}");
        if sent != *sent_seen.last().unwrap() {
            sent_seen.push(sent);
        }
        if r["status"] == "completed" {
            break r;
        }
        if !killed && seen.lock().unwrap().delivered.len() >= EVENTS / 4 {
            nodes[0].alive.store(false, Ordering::Relaxed);
            Command::new("kill")
                .args(["-9", &nodes[0].child.id().to_string()])
                .status()
                .unwrap();
            killed = true;
        }
        assert!(Instant::now() < deadline, "replay not completed: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(done["sent"], EVENTS, "{done}");
    // The dead node's leases expire after 2 × 2 s + 10 s; allow more.
    let missing = wait_delivered(&seen, &written, Duration::from_secs(60)).await;
    let deliveries: i64 = {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE endpoint_id = $1")
            .bind(&hook)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    kill_all(nodes);
    assert!(missing.is_empty(), "{} never delivered", missing.len());
    assert_eq!(deliveries, EVENTS as i64, "one delivery per replayed event");
    println!(
        "3 nodes, one killed: replayed {EVENTS}, progress seen at {} steps, {} duplicate successful deliveries",
        sent_seen.len(),
        seen.lock().unwrap().duplicates()
    );
}

/// A retry claimed by another node continues the trace of the request that
/// wrote its event: node A takes the write and fails its attempts (nothing
/// listens at the webhook's URL yet), stops, and node B delivers the next
/// retry once the receiver is up. B's attempt is a child of A's request
/// span, in the caller's trace, and the delivery carries that trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set NOTIFLY_TEST_POSTGRES_URL and run with --include-ignored"]
async fn a_retry_on_another_node_continues_the_trace_of_the_write() {
    let _serial = SERIAL.lock().await;
    let db = ScratchDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = format!("Bearer {}", create_account(&db.url, "traced"));
    let (otlp, spans) = crate::traces::collector().await;
    let otel = |service| {
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
            ("OTEL_SERVICE_NAME", service),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ]
    };
    let mut a = start_node_with(&db.url, dir.path(), 0, &otel("node-a"));
    let b = start_node_with(&db.url, dir.path(), 1, &otel("node-b"));
    let client = reqwest::Client::new();
    wait_ready(&client, &a.base).await;
    wait_ready(&client, &b.base).await;

    // Nothing listens there until A has stopped.
    let hook_port = free_port();
    let hook_url = format!("http://127.0.0.1:{hook_port}/hook");
    let (status, _) = call(
        client
            .post(format!("{}/v1/webhooks", a.base))
            .json(&json!({"name": "traced", "url": hook_url, "events": ["contact.created"]})),
        &auth,
    )
    .await;
    assert_eq!(status, 201);
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (status, _) = call(
        client
            .post(format!("{}/v1/contacts", a.base))
            .header(
                "traceparent",
                format!("00-{caller_trace}-00f067aa0ba902b7-01"),
            )
            .json(&json!({"username": "kevin", "phone_number": "+1 555 0100"})),
        &auth,
    )
    .await;
    assert_eq!(status, 201);

    let find = |f: &dyn Fn(&crate::traces::Got) -> bool| {
        spans.lock().unwrap().iter().find(|s| f(s)).cloned()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let request = loop {
        if let Some(s) =
            find(&|s| s.span.name == "POST /v1/contacts" && s.trace_id() == caller_trace)
        {
            break s;
        }
        assert!(Instant::now() < deadline, "no request span from node A");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(request.service, "node-a");
    // A failed attempt from A, then A stops (SIGTERM: it hands its leases
    // back and sends its last spans).
    let deadline = Instant::now() + Duration::from_secs(15);
    while find(&|s| s.service == "node-a" && s.span.name == "webhook attempt").is_none() {
        assert!(Instant::now() < deadline, "no attempt from node A");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &a.child.id().to_string()])
        .status();
    let _ = a.child.wait();
    a.alive.store(false, Ordering::Relaxed);

    let (_, traceparents) = crate::traces::hook_on(hook_port, false).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let on_b = loop {
        if let Some(s) = find(&|s| {
            s.service == "node-b"
                && s.span.name == "webhook attempt"
                && s.attribute("http.response.status_code").as_deref() == Some("200")
        }) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no successful attempt from node B"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(on_b.trace_id(), caller_trace);
    assert_eq!(
        on_b.parent_id(),
        request.span_id(),
        "a child of A's request span"
    );
    let received = traceparents.lock().unwrap().clone();
    assert!(
        received
            .iter()
            .any(|t| t.contains(caller_trace) && t.contains(&on_b.span_id())),
        "the delivery carries B's attempt in the caller's trace: {received:?}"
    );
    drop(b);
}
