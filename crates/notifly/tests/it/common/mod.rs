//! What the tests that drive the real `notifly` binary share: ports, waiting
//! for readiness, and a receiver that counts what it is delivered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `{base}/readyz` until it answers 2xx; fails the test after 30 s.
pub async fn wait_ready(client: &reqwest::Client, base: &str) {
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

/// What the receiver has seen.
#[derive(Default)]
pub struct Seen {
    /// Contact id (from `contact.created` payloads) → times delivered successfully.
    pub delivered: HashMap<String, u32>,
    /// Requests being handled right now, and the most there ever were.
    in_flight: usize,
    pub max_in_flight: usize,
    /// When each request (any attempt) arrived.
    pub arrivals: Vec<std::time::Instant>,
}

impl Seen {
    /// Ids of `acked` never delivered.
    pub fn missing<'a>(&self, acked: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        acked
            .into_iter()
            .filter(|id| !self.delivered.contains_key(*id))
            .cloned()
            .collect()
    }

    /// Successful deliveries beyond the first, over all events.
    pub fn duplicates(&self) -> u32 {
        self.delivered.values().map(|n| n - 1).sum()
    }
}

/// Counts requests in flight for as long as it lives.
struct InFlight(Arc<Mutex<Seen>>);

impl InFlight {
    fn enter(seen: &Arc<Mutex<Seen>>) -> InFlight {
        let mut s = seen.lock().unwrap();
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        InFlight(seen.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().unwrap().in_flight -= 1;
    }
}

/// The receiver's state: what it saw, and how long it takes to answer.
#[derive(Clone)]
struct Receiving {
    seen: Arc<Mutex<Seen>>,
    delay: Duration,
}

async fn receive(
    State(Receiving { seen, delay }): State<Receiving>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let _in_flight = InFlight::enter(&seen);
    seen.lock()
        .unwrap()
        .arrivals
        .push(std::time::Instant::now());
    let event: Value = serde_json::from_slice(&body).unwrap();
    let attempt: u32 = headers["x-notifly-attempt"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let id = event["payload"]["id"].as_str().unwrap().to_owned();
    // Keep deliveries in flight for a moment, and fail the first attempt of
    // about a third of them so that some are mid-retry at a fault.
    tokio::time::sleep(delay).await;
    if attempt == 1 && id.as_bytes()[0].is_multiple_of(3) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    *seen.lock().unwrap().delivered.entry(id).or_default() += 1;
    StatusCode::OK
}

/// Starts the receiver on a random port; returns its `/hook` URL. It takes
/// `delay` to answer each request.
pub async fn receiver(delay: Duration) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(Receiving {
            seen: seen.clone(),
            delay,
        });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// Waits until every id in `acked` was delivered or `deadline` passes;
/// returns those still missing.
pub async fn wait_delivered(
    seen: &Arc<Mutex<Seen>>,
    acked: &std::collections::HashSet<String>,
    deadline: Duration,
) -> Vec<String> {
    let end = Instant::now() + deadline;
    loop {
        let missing = seen.lock().unwrap().missing(acked);
        if missing.is_empty() || Instant::now() > end {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates an account through the binary; returns its API key.
pub fn create_account(database: &str, name: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_notifly"))
        .args(["accounts", "create", "--name", name, "--json", "--database"])
        .arg(database)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let account: Value = serde_json::from_slice(&out.stdout).unwrap();
    account["api_key"].as_str().unwrap().to_owned()
}

/// A request with the account's `Authorization`, answered with JSON.
pub async fn call(rb: reqwest::RequestBuilder, auth: &str) -> (u16, Value) {
    let r = rb.header("authorization", auth).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Writes `n` contacts, spread over the servers at `bases` in turn; returns
/// their ids.
pub async fn write_contacts(
    client: &reqwest::Client,
    bases: &[&str],
    auth: &str,
    n: usize,
) -> std::collections::HashSet<String> {
    let mut written = std::collections::HashSet::new();
    for i in 0..n {
        let body = serde_json::json!({"username": format!("r{i}"), "phone_number": "+1 555 0100"});
        let (status, c) = call(
            client
                .post(format!("{}/v1/contacts", bases[i % bases.len()]))
                .json(&body),
            auth,
        )
        .await;
        assert_eq!(status, 201, "{c}");
        written.insert(c["id"].as_str().unwrap().to_owned());
    }
    written
}

/// Registers a webhook for `contact.created` at `url` and starts a replay
/// of the whole log to it (through the server at `base`), checking that it
/// counts `total` events; returns the webhook's id and the replay's path.
pub async fn replay_everything(
    client: &reqwest::Client,
    base: &str,
    auth: &str,
    url: &str,
    total: usize,
) -> (String, String) {
    let body = serde_json::json!({"name": "late", "url": url, "events": ["contact.created"]});
    let (status, hook) = call(client.post(format!("{base}/v1/webhooks")).json(&body), auth).await;
    assert_eq!(status, 201, "{hook}");
    let hook = hook["id"].as_str().unwrap().to_owned();
    let (status, replay) = call(
        client
            .post(format!("{base}/v1/webhooks/{hook}/replay"))
            .json(&serde_json::json!({"since": 0})),
        auth,
    )
    .await;
    assert_eq!(status, 202, "{replay}");
    assert_eq!(replay["total"], total, "{replay}");
    let path = format!(
        "/v1/webhooks/{hook}/replays/{}",
        replay["id"].as_str().unwrap()
    );
    (hook, path)
}
