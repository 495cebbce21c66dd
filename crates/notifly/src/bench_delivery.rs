//! `notifly bench delivery`: the dispatcher measured against a real receiver.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

use crate::bench::{Database, Server, ms, percentile};

/// What the receiver saw.
#[derive(Default)]
struct Received {
    count: AtomicU64,
    /// Payload id → first arrival, per receiving path.
    arrivals: Mutex<HashMap<(String, String), Instant>>,
    last: Mutex<Option<Instant>>,
    /// `/gate/{name}` holds every request until this is `true`.
    gate: tokio::sync::watch::Sender<bool>,
}

impl Received {
    /// Waits until `expected` requests have arrived, or `within` has passed;
    /// returns how many did and when the last one came.
    async fn wait_for(&self, expected: u64, within: Duration) -> (u64, Option<Instant>) {
        let deadline = Instant::now() + within;
        while self.count.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let last = self.last.lock().ok().and_then(|l| *l);
        (self.count.load(Ordering::Relaxed), last)
    }
}

async fn fast(State(r): State<Arc<Received>>, Path(path): Path<String>, body: Bytes) -> StatusCode {
    let now = Instant::now();
    if let Ok(v) = serde_json::from_slice::<Value>(&body)
        && let Some(id) = v["payload"]["id"].as_str()
    {
        r.arrivals
            .lock()
            .map(|mut a| {
                a.entry((path, id.to_owned())).or_insert(now);
            })
            .ok();
    }
    r.count.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut last) = r.last.lock() {
        *last = Some(now);
    }
    StatusCode::OK
}

/// Holds the request until the gate opens, then answers like `fast`.
async fn gated(State(r): State<Arc<Received>>, path: Path<String>, body: Bytes) -> StatusCode {
    let mut open = r.gate.subscribe();
    let _ = open.wait_for(|open| *open).await;
    fast(State(r), path, body).await
}

async fn hang() -> StatusCode {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    StatusCode::OK
}

/// A receiver on a random local port: `/fast/{name}` answers 200 at once,
/// `/gate/{name}` once the gate is open, `/hang` never.
async fn receiver() -> anyhow::Result<(String, Arc<Received>)> {
    let received = Arc::new(Received::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = Router::new()
        .route("/fast/{name}", post(fast))
        .route("/gate/{name}", post(gated))
        .route("/hang", post(hang))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((base, received))
}

/// The API of every node and account; writes are spread over both.
struct Api {
    client: reqwest::Client,
    urls: Vec<String>,
    auths: Vec<String>,
    /// Per account: the conversation every message goes to, and its
    /// contact, who sends them.
    threads: Vec<(String, String)>,
}

/// A message's text: 200 bytes, as in the issues' measurements.
const TEXT: &str = "Your order has shipped and is on its way. Track it from your account \
    page, or reply to this message if anything looks wrong with the delivery address. \
    Thanks for shopping with us - see you again soon!";
const _: () = assert!(TEXT.len() == 200);

impl Api {
    /// The API of `server`, with a contact and a conversation with it in
    /// every account.
    async fn prepare(server: &Server) -> anyhow::Result<Api> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?;
        let auths: Vec<String> = server
            .api_keys
            .iter()
            .map(|k| format!("Bearer {k}"))
            .collect();
        let mut threads = Vec::new();
        for auth in &auths {
            let post = |path: &str, body: Value| {
                client
                    .post(format!("{}{path}", server.urls[0]))
                    .header("authorization", auth)
                    .json(&body)
                    .send()
            };
            let contact: Value = post(
                "/v1/contacts",
                json!({"username": "customer", "phone_number": "+1 555 0100"}),
            )
            .await?
            .error_for_status()
            .context("creating the sender")?
            .json()
            .await?;
            let contact = contact["id"].as_str().context("no contact id")?.to_owned();
            let conversation: Value = post("/v1/conversations", json!({"contact_id": contact}))
                .await?
                .error_for_status()
                .context("creating the conversation")?
                .json()
                .await?;
            let conversation = conversation["id"]
                .as_str()
                .context("no conversation id")?
                .to_owned();
            threads.push((conversation, contact));
        }
        Ok(Api {
            client,
            urls: server.urls.clone(),
            auths,
            threads,
        })
    }

    /// Registers the webhook in every account, for new messages, with the
    /// cluster's content filter.
    async fn webhook(&self, cluster: &Cluster<'_>, name: &str, url: &str) -> anyhow::Result<()> {
        for auth in &self.auths {
            self.client
                .post(format!("{}/v1/webhooks", self.urls[0]))
                .header("authorization", auth)
                .json(
                    &json!({"name": name, "url": url, "events": ["message.created"],
                              "filter": cluster.filter}),
                )
                .send()
                .await?
                .error_for_status()
                .context("creating a webhook")?;
        }
        Ok(())
    }

    /// Sends a message; returns its id and when the API acknowledged it.
    async fn message(&self, n: u64) -> Option<(String, Instant)> {
        self.timed_message(n)
            .await
            .map(|(id, _, acked)| (id, acked))
    }

    /// Sends a message (`POST /v1/messages`, what integrators send most);
    /// returns its id, when the request was sent and when the API
    /// acknowledged it.
    async fn timed_message(&self, n: u64) -> Option<(String, Instant, Instant)> {
        let account = (n as usize / self.urls.len()) % self.auths.len();
        let (conversation, contact) = &self.threads[account];
        let sent = Instant::now();
        let r = self
            .client
            .post(format!(
                "{}/v1/messages",
                self.urls[n as usize % self.urls.len()]
            ))
            .header("authorization", &self.auths[account])
            .json(&json!({
                "conversation_id": conversation,
                "contact_id": contact,
                "message": TEXT,
            }))
            .send()
            .await
            .ok()?;
        let acked = Instant::now();
        if r.status() != 201 {
            return None;
        }
        let v: Value = r.json().await.ok()?;
        Some((v["id"].as_str()?.to_owned(), sent, acked))
    }

    /// Attempts started on every node, as (handed off by the write that
    /// made the delivery, claimed from the queue).
    async fn starts(&self) -> (u64, u64) {
        let mut starts = (0, 0);
        for url in &self.urls {
            let Some(text) = self.metrics(url).await else {
                continue;
            };
            for line in text.lines() {
                let count = |prefix: &str| {
                    line.strip_prefix(prefix)
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .map_or(0, |v| v as u64)
                };
                starts.0 += count("notifly_delivery_starts_total{path=\"hand_off\"} ");
                starts.1 += count("notifly_delivery_starts_total{path=\"claim\"} ");
            }
        }
        starts
    }

    async fn metrics(&self, url: &str) -> Option<String> {
        self.client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    async fn queue_depth(&self) -> Option<u64> {
        let text = self.metrics(&self.urls[0]).await?;
        text.lines()
            .find_map(|l| l.strip_prefix("notifly_delivery_queue_depth "))
            .and_then(|v| v.trim().parse().ok())
    }
}

pub(crate) async fn run(
    cluster: &Cluster<'_>,
    seconds: u64,
    rate: u64,
    pending: u64,
    backlog: u64,
) -> anyhow::Result<()> {
    println!(
        "notifly bench delivery ({}, {} node(s), {} account(s); receiver and load in this process)",
        cluster.database.describe(),
        cluster.nodes,
        cluster.accounts
    );
    if let Some(filter) = cluster.filter {
        println!("every webhook has the content filter {filter}");
    }
    // 0 endpoints: ingest only (each write still appends its event).
    for endpoints in [0, 1, 10] {
        throughput(cluster, endpoints, seconds).await?;
    }
    let alone = latency(cluster, rate, seconds, false).await?;
    let beside_hang = latency(cluster, rate, seconds, true).await?;
    println!(
        "(c) healthy endpoint p99 beside a hanging one: {:.2} ms vs {:.2} ms alone ({:.2}x)",
        beside_hang,
        alone,
        beside_hang / alone
    );
    if pending > 0 {
        memory(cluster, pending).await?;
    }
    if backlog > 0 {
        drain(cluster, backlog).await?;
    }
    Ok(())
}

/// What each run starts.
pub(crate) struct Cluster<'a> {
    pub(crate) database: &'a Database,
    pub(crate) nodes: usize,
    pub(crate) accounts: usize,
    /// The content filter every webhook gets, if any.
    pub(crate) filter: Option<&'a serde_json::Value>,
}

impl Cluster<'_> {
    async fn start(&self, extra: &[&str]) -> anyhow::Result<Server> {
        Server::start_nodes(self.database, self.nodes, self.accounts, extra).await
    }
}

/// (a) Events at full API speed (32 writers, closed loop) for `seconds`,
/// fanned out to `endpoints`; deliveries per second from the first
/// acknowledgement to the last arrival. With no endpoint, the API alone:
/// acknowledgements per second and their latency.
async fn throughput(cluster: &Cluster<'_>, endpoints: usize, seconds: u64) -> anyhow::Result<()> {
    let server = cluster.start(&["--allow-private-urls"]).await?;
    let api = Arc::new(Api::prepare(&server).await?);
    let (base, received) = receiver().await?;
    for i in 0..endpoints {
        api.webhook(cluster, &format!("ep{i}"), &format!("{base}/fast/{i}"))
            .await?;
    }
    let cost = server.db_cost().await;
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let next = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (api, next, acked) = (api.clone(), next.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if let Some(ack) = api.timed_message(n).await {
                    acked.fetch_add(1, Ordering::Relaxed);
                    mine.push(ack);
                }
            }
            mine
        }));
    }
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await?);
    }
    let produced = Instant::now();
    let cores = cpu_before
        .zip(server.cpu_seconds())
        .map(|(before, after)| (after - before) / produced.duration_since(started).as_secs_f64());
    let mut ack_latency: Vec<Duration> = acks.iter().map(|(_, sent, at)| *at - *sent).collect();
    ack_latency.sort_unstable();
    let acks_per_s =
        acked.load(Ordering::Relaxed) as f64 / produced.duration_since(started).as_secs_f64();
    if endpoints == 0 {
        println!(
            "(i) ingest only: {} writes acknowledged in {seconds} s ({acks_per_s:.0}/s), latency p50 {:.2} ms, p99 {:.2} ms; server used {:.2} cores, peak RSS {:.1} MiB",
            acked.load(Ordering::Relaxed),
            ms(percentile(&ack_latency, 0.50)),
            ms(percentile(&ack_latency, 0.99)),
            cores.unwrap_or(f64::NAN),
            server.peak_rss_mib().unwrap_or(f64::NAN)
        );
        println!(
            "{}",
            cost.report(&server, acked.load(Ordering::Relaxed)).await
        );
        return server.stop().await;
    }
    let expected = acked.load(Ordering::Relaxed) * endpoints as u64;
    let backlog = api.queue_depth().await.unwrap_or(0);
    let (got, last) = received.wait_for(expected, Duration::from_secs(300)).await;
    let last = last.unwrap_or(produced);
    let elapsed = last.duration_since(started).as_secs_f64();
    println!(
        "(a) {endpoints:>2} endpoint(s): {} events acknowledged in {seconds} s ({acks_per_s:.0}/s, p50 {:.2} ms, p99 {:.2} ms), {got}/{expected} deliveries in {:.1} s = {:.0} deliveries/s (backlog when load stopped: {backlog})",
        acked.load(Ordering::Relaxed),
        ms(percentile(&ack_latency, 0.50)),
        ms(percentile(&ack_latency, 0.99)),
        elapsed,
        got as f64 / elapsed
    );
    // End-to-end (API acknowledgement -> first arrival) over every delivery.
    let arrivals = received
        .arrivals
        .lock()
        .map(|a| a.clone())
        .unwrap_or_default();
    let mut lat: Vec<Duration> = Vec::with_capacity(acks.len() * endpoints);
    for (id, _, at) in &acks {
        for i in 0..endpoints {
            if let Some(arrived) = arrivals.get(&(i.to_string(), id.clone())) {
                lat.push(arrived.saturating_duration_since(*at));
            }
        }
    }
    lat.sort_unstable();
    println!(
        "(a) {endpoints:>2} endpoint(s): e2e ack->receiver over {} deliveries: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; server used {:.2} cores under load, peak RSS {:.1} MiB",
        lat.len(),
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
        cores.unwrap_or(f64::NAN),
        server.peak_rss_mib().unwrap_or(f64::NAN)
    );
    let (handed_off, claimed) = api.starts().await;
    println!(
        "    attempts started: {handed_off} handed off by the write that made the delivery, {claimed} claimed ({:.0} % handed off)",
        100.0 * handed_off as f64 / (handed_off + claimed).max(1) as f64
    );
    // The last results' write-back, which is part of what a delivery costs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!("{}", cost.report(&server, got).await);
    server.stop().await
}

/// (b)/(c) Acknowledgement-to-receiver latency at `rate` events/s to one
/// healthy endpoint, optionally beside an endpoint that never answers.
/// Returns the p99 in ms.
async fn latency(
    cluster: &Cluster<'_>,
    rate: u64,
    seconds: u64,
    with_hang: bool,
) -> anyhow::Result<f64> {
    let server = cluster
        .start(&["--allow-private-urls", "--delivery-timeout", "5s"])
        .await?;
    let api = Arc::new(Api::prepare(&server).await?);
    let (base, received) = receiver().await?;
    api.webhook(cluster, "healthy", &format!("{base}/fast/healthy"))
        .await?;
    if with_hang {
        api.webhook(cluster, "hanging", &format!("{base}/hang"))
            .await?;
    }
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let acks = Arc::new(Mutex::new(HashMap::new()));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        ticker.tick().await;
        let (api, acks) = (api.clone(), acks.clone());
        tasks.spawn(async move {
            if let Some((id, at)) = api.message(n).await
                && let Ok(mut a) = acks.lock()
            {
                a.insert(id, at);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let acks: HashMap<String, Instant> = acks.lock().map(|a| a.clone()).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = received
            .arrivals
            .lock()
            .map(|a| a.keys().filter(|(p, _)| p == "healthy").count())
            .unwrap_or(0);
        if done >= acks.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrivals = received
        .arrivals
        .lock()
        .map(|a| a.clone())
        .unwrap_or_default();
    let mut lat: Vec<Duration> = acks
        .iter()
        .filter_map(|(id, acked)| {
            arrivals
                .get(&("healthy".to_owned(), id.clone()))
                .map(|arrived| arrived.saturating_duration_since(*acked))
        })
        .collect();
    lat.sort_unstable();
    let p99 = ms(percentile(&lat, 0.99));
    println!(
        "({}) {rate} events/s for {seconds} s{}: {}/{} delivered, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        if with_hang { "c" } else { "b" },
        if with_hang {
            ", beside a hanging endpoint"
        } else {
            ""
        },
        lat.len(),
        acks.len(),
        ms(percentile(&lat, 0.50)),
        p99,
        ms(lat.last().copied().unwrap_or_default())
    );
    if !with_hang {
        println!(
            "    (latency is from the API's acknowledgement to the arrival; a delivery handed off at the commit often arrives before the acknowledgement reaches the client, which counts as 0.00 ms)"
        );
    }
    server.stop().await?;
    Ok(p99)
}

/// Sends messages `0..count` with 32 writers in a closed loop; returns how
/// many the API acknowledged.
async fn write_messages(api: &Arc<Api>, count: u64) -> anyhow::Result<u64> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (api, next) = (api.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = 0_u64;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return acked;
                }
                if api.message(n).await.is_some() {
                    acked += 1;
                }
            }
        }));
    }
    let mut acked = 0;
    for t in tasks {
        acked += t.await?;
    }
    Ok(acked)
}

/// Endpoints of the drain run.
const DRAIN_ENDPOINTS: u64 = 100;

/// (e) A backlog of `deliveries` over 100 endpoints, built while the
/// receiver holds every request (so the endpoints' slots fill and the rest
/// waits in the queue), then drained once it answers: deliveries per second
/// from opening the gate to the last arrival.
async fn drain(cluster: &Cluster<'_>, deliveries: u64) -> anyhow::Result<()> {
    let server = cluster
        .start(&["--allow-private-urls", "--delivery-timeout", "120s"])
        .await?;
    let api = Arc::new(Api::prepare(&server).await?);
    let (base, received) = receiver().await?;
    for i in 0..DRAIN_ENDPOINTS {
        api.webhook(cluster, &format!("ep{i}"), &format!("{base}/gate/{i}"))
            .await?;
    }
    let built = Instant::now();
    let acked = write_messages(&api, deliveries.div_ceil(DRAIN_ENDPOINTS)).await?;
    let expected = acked * DRAIN_ENDPOINTS;
    let depth = api.queue_depth().await.unwrap_or(0);
    let building = built.elapsed();
    let cpu_before = server.cpu_seconds();
    let opened = Instant::now();
    received.gate.send_replace(true);
    let (got, last) = received.wait_for(expected, Duration::from_secs(900)).await;
    let last = last.unwrap_or_else(Instant::now);
    let took = last.saturating_duration_since(opened).as_secs_f64();
    let cores = cpu_before
        .zip(server.cpu_seconds())
        .map(|(before, after)| (after - before) / opened.elapsed().as_secs_f64());
    println!(
        "(e) backlog of {depth} deliveries over {DRAIN_ENDPOINTS} endpoints (written in {:.1} s): {got}/{expected} delivered in {took:.1} s after the receiver opened = {:.0} deliveries/s; server used {:.2} cores",
        building.as_secs_f64(),
        got as f64 / took.max(f64::EPSILON),
        cores.unwrap_or(f64::NAN)
    );
    server.stop().await
}

/// (d) Peak server RSS with `pending` deliveries waiting for an endpoint that
/// refuses connections.
async fn memory(cluster: &Cluster<'_>, pending: u64) -> anyhow::Result<()> {
    let server = cluster.start(&["--allow-private-urls"]).await?;
    let api = Arc::new(Api::prepare(&server).await?);
    // A port nothing listens on: every attempt is refused, then waits to retry.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    api.webhook(cluster, "down", &format!("http://{closed}/hook"))
        .await?;
    let started = Instant::now();
    write_messages(&api, pending).await?;
    let depth = api.queue_depth().await.unwrap_or(0);
    println!(
        "(d) {pending} events to a down endpoint in {:.0} s: queue depth {depth}, server RSS {:.1} MiB, peak RSS {:.1} MiB",
        started.elapsed().as_secs_f64(),
        server.rss_mib().unwrap_or(f64::NAN),
        server.peak_rss_mib().unwrap_or(f64::NAN)
    );
    server.stop().await
}
