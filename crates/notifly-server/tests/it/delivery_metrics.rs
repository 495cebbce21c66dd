//! `/metrics`, parsed as Prometheus parses it, after real traffic: attempt
//! counts by result, the latency histogram, the queue gauges, the delivery
//! lag and the disabled-endpoint gauge after real deliveries, checked
//! against what the API says happened; and the HTTP requests (by route
//! template, method and status class) and database writes that API calls
//! caused.

use std::time::Duration;

use crate::common;
use crate::common::delivery_helpers as helpers;
use crate::common::receiver;
use crate::common::scrape;
use helpers::{DEADLINE, deliveries, wait_deliveries, wait_webhook, webhook};
use openmetrics_parser::PrometheusType;
use receiver::{Behavior, Receiver};
use scrape::{Scrape, assert_well_formed};

const ATTEMPTS: &str = "notifly_delivery_attempts_total";
const SUCCESS: &[(&str, &str)] = &[("result", "success")];
const FAILURE: &[(&str, &str)] = &[("result", "failure")];
const LATENCY: &str = "notifly_delivery_attempt_duration_seconds";
const DEPTH: &str = "notifly_delivery_queue_depth";
const DUE: &str = "notifly_delivery_queue_due";
const IN_FLIGHT: &str = "notifly_delivery_in_flight";
const DISABLED: &str = "notifly_endpoints_disabled";
const LAG: &str = "notifly_delivery_lag_seconds";
const REQUESTS: &str = "notifly_http_requests_total";
const REQUEST_DURATION: &str = "notifly_http_request_duration_seconds";
const REQUESTS_IN_FLIGHT: &str = "notifly_http_requests_in_flight";
const WRITES: &str = "notifly_db_write_duration_seconds";
const COMMITS: &str = "notifly_db_commit_duration_seconds";
const GROUP_SIZE: &str = "notifly_db_commit_group_size";
const ACQUIRE_WAIT: &str = "notifly_db_acquire_wait_seconds";

/// This server's node id, as `/healthz` tells it.
async fn node_of(server: &common::TestServer) -> String {
    let health: serde_json::Value = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("GET /healthz")
        .json()
        .await
        .expect("a health body");
    health["node"].as_str().expect("a node id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_attempts_latency_queue_and_disabled_endpoints() {
    let rx = Receiver::start().await;
    rx.set("/ok", Behavior::Ok);
    rx.set("/fail", Behavior::Status(500));
    rx.set("/gone", Behavior::Gone);
    rx.set(
        "/parked",
        Behavior::RetryAfter {
            status: 429,
            seconds: 3600,
        },
    );
    rx.set("/slow", Behavior::Hang(Duration::from_secs(120)));
    let server = helpers::server(|c| {
        c.retry_schedule = "0s,100ms".to_owned();
        // The slow endpoint holds its one slot for the whole test.
        c.delivery_timeout = "60s".to_owned();
        c.endpoint_concurrency = 1;
    })
    .await;
    let c = server.account("acme").await;

    let node = node_of(&server).await;
    let before = Scrape::of(&server).await;
    assert_eq!(
        before.value_of(ATTEMPTS, SUCCESS),
        0.0,
        "successes at start"
    );
    assert_eq!(before.value_of(ATTEMPTS, FAILURE), 0.0, "failures at start");
    assert_eq!(before.type_of(LATENCY), Some(PrometheusType::Histogram));
    assert_eq!(before.count(LATENCY, &[]), 0, "attempts timed at start");
    for gauge in [DEPTH, DUE, IN_FLIGHT, DISABLED] {
        assert_eq!(before.value_of(gauge, &[]), 0.0, "{gauge} at start");
    }
    assert_eq!(
        before.value_of(LAG, &[("node", &node)]),
        0.0,
        "no lag with nothing due"
    );

    let ok = webhook(&c, "ok", &rx.url("/ok"), &["*"]).await;
    let fail = webhook(&c, "fail", &rx.url("/fail"), &["contact.created"]).await;
    let gone = webhook(&c, "gone", &rx.url("/gone"), &["group.created"]).await;
    let parked = webhook(&c, "parked", &rx.url("/parked"), &["contact.created"]).await;
    let slow = webhook(&c, "slow", &rx.url("/slow"), &["contact.created"]).await;

    c.contact("one").await;
    c.contact("two").await;
    c.group("crew", &[]).await;
    // The resource events (`ok`'s `"*"`): operational ones about `gone`
    // and `fail` join the log as they happen.
    let events = c
        .events()
        .await
        .iter()
        .filter(|e| {
            e["type"]
                .as_str()
                .is_some_and(|t| t.parse::<notifly_webhooks::EventType>().is_ok())
        })
        .count();
    assert_eq!(events, 3);

    // Wait for the steady state the figures describe.
    wait_deliveries(&c, &ok.id, events, "succeeded").await;
    wait_deliveries(&c, &fail.id, 2, "failed").await;
    wait_deliveries(&c, &gone.id, 1, "failed").await;
    wait_webhook(&c, &gone.id, "disabled", |w| w["enabled"] == false).await;
    // The parked endpoint's 429 pauses it for an hour: its first delivery
    // waits for its retry, its second for the pause, unattempted.
    rx.wait_for_path("/parked", 1, DEADLINE).await;
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let parked_now = deliveries(&c, &parked.id, Some("pending")).await;
        let mut attempts: Vec<i64> = parked_now
            .iter()
            .map(|d| d["attempts"].as_i64().unwrap())
            .collect();
        attempts.sort_unstable();
        if attempts == [0, 1] {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "parked deliveries: {parked_now:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rx.wait_for_path("/slow", 1, DEADLINE).await;
    assert_eq!(deliveries(&c, &slow.id, Some("pending")).await.len(), 2);

    let after = Scrape::of(&server).await;
    let text = &after.text;
    // Attempts: one success per event to `ok`; failures: 2 × 2 to `fail`,
    // 1 to `gone`, 1 to `parked` (the slow one has not ended yet).
    assert_eq!(rx.count_to("/parked"), 1);
    assert_eq!(after.value_of(ATTEMPTS, SUCCESS), events as f64, "{text}");
    assert_eq!(after.value_of(ATTEMPTS, FAILURE), 6.0, "{text}");
    let latency = after.histogram(LATENCY, &[]);
    assert_eq!(latency.count, Some(events as u64 + 6), "{text}");
    assert_well_formed(LATENCY, latency);
    // Every attempt took some time, however fast loopback is.
    let sum = latency.sum.expect("a _sum").as_f64();
    assert!(sum > 0.0, "the attempts took 0 s in all: {text}");
    if let Some(v) = after.value("notifly_deliveries_total", &[("outcome", "failed")]) {
        assert_eq!(v, 3.0, "two to `fail`, one to `gone`: {text}");
    }

    // The queue: two parked (one not due for an hour, one due and held by
    // the pause) and two for the slow endpoint (one in flight, one due and
    // waiting for its slot).
    assert_eq!(after.value_of(DEPTH, &[]), 4.0, "{text}");
    let due = after.value_of(DUE, &[]);
    assert!((1.0..=3.0).contains(&due), "due: {due}\n{text}");
    assert_eq!(after.value_of(IN_FLIGHT, &[]), 1.0, "{text}");
    assert_eq!(
        after.value_of(DISABLED, &[]),
        1.0,
        "the 410 endpoint: {text}"
    );
    // Deliveries due since before the waits above, unleased (the slow
    // endpoint's second, waiting for its slot; the parked one held by the
    // pause): the queue is behind.
    let lag = after.value_of(LAG, &[("node", &node)]);
    assert!(lag > 0.0, "lag: {lag}\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_http_requests_database_writes_and_lag() {
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let node = node_of(&server).await;
    let before = Scrape::of(&server).await;

    // A 201, a 200 and a 404 on contacts; the 404 is counted under the
    // route template, not the path it was asked for.
    let contact = c.contact("one").await;
    let id = common::id_of(&contact).to_owned();
    let path = format!("/v1/contacts/{id}");
    assert_eq!(c.get(&path).await.0, 200);
    assert_eq!(c.delete(&path).await.0, 200);
    assert_eq!(c.get(&path).await.0, 404);
    // No route at all, and a method no route has.
    assert_eq!(c.get(&format!("/v1/nothing-here/{id}")).await.0, 404);
    let brew = reqwest::Method::from_bytes(b"BREW").unwrap();
    let (status, _) = c.send(c.request(brew, "/v1/contacts")).await;
    assert_eq!(status, 405);
    // A dashboard page is counted too.
    let login = server
        .http
        .get(server.url("/dashboard/login"))
        .send()
        .await
        .expect("GET /dashboard/login");
    assert_eq!(login.status().as_u16(), 200);

    let after = Scrape::of(&server).await;
    let text = &after.text;
    let requests = |route: &str, method: &str, class: &str| {
        after.total(
            REQUESTS,
            &[
                ("route", route),
                ("method", method),
                ("status_class", class),
            ],
        ) - before.total(
            REQUESTS,
            &[
                ("route", route),
                ("method", method),
                ("status_class", class),
            ],
        )
    };
    assert_eq!(requests("/v1/contacts", "POST", "2xx"), 1.0, "{text}");
    assert_eq!(requests("/v1/contacts/{id}", "GET", "2xx"), 1.0, "{text}");
    assert_eq!(
        requests("/v1/contacts/{id}", "DELETE", "2xx"),
        1.0,
        "{text}"
    );
    assert_eq!(requests("/v1/contacts/{id}", "GET", "4xx"), 1.0, "{text}");
    assert_eq!(requests("unmatched", "GET", "4xx"), 1.0, "{text}");
    assert_eq!(requests("/v1/contacts", "other", "4xx"), 1.0, "{text}");
    assert_eq!(requests("/dashboard/login", "GET", "2xx"), 1.0, "{text}");
    // The first scrape, seen by the second.
    assert!(requests("/metrics", "GET", "2xx") >= 1.0, "{text}");
    // No path reaches a label: only templates.
    assert!(
        after.samples(REQUESTS, &[]).iter().all(|s| s
            .get_labelset()
            .unwrap()
            .iter()
            .all(|(_, v)| !v.contains(&id))),
        "a raw path in a label: {text}"
    );

    // Every answered request was timed, by route template and method.
    let duration = after.histogram(
        REQUEST_DURATION,
        &[("route", "/v1/contacts/{id}"), ("method", "GET")],
    );
    assert_eq!(duration.count, Some(2), "{text}");
    assert_well_formed(REQUEST_DURATION, duration);
    assert_eq!(
        after.count(
            REQUEST_DURATION,
            &[("route", "unmatched"), ("method", "GET")]
        ),
        1,
        "{text}"
    );
    // This scrape is in flight while it is rendered.
    assert!(after.value_of(REQUESTS_IN_FLIGHT, &[]) >= 1.0, "{text}");

    // The database: the create and the delete were write transactions,
    // each committed before its answer (background work may add more).
    let writes = after.count(WRITES, &[]) - before.count(WRITES, &[]);
    assert!(writes >= 2, "{writes} writes timed: {text}");
    assert_well_formed(WRITES, after.histogram(WRITES, &[]));
    let commits = after.count(COMMITS, &[]) - before.count(COMMITS, &[]);
    assert!(commits >= 1, "{commits} commits timed: {text}");
    let groups = after.count(GROUP_SIZE, &[]) - before.count(GROUP_SIZE, &[]);
    assert!(groups >= 1, "{groups} commit groups: {text}");
    // Every write timed was in a group (whose size was observed first).
    let grouped_writes = after
        .histogram(GROUP_SIZE, &[])
        .sum
        .expect("a _sum")
        .as_f64();
    assert!(
        grouped_writes >= after.count(WRITES, &[]) as f64,
        "{grouped_writes} writes in groups: {text}"
    );
    let on_postgres = server.config.database_url.starts_with("postgres");
    let writer_pool = if on_postgres { "api" } else { "writer" };
    assert!(
        after.count(ACQUIRE_WAIT, &[("pool", writer_pool)]) >= 2,
        "waits for the {writer_pool} pool: {text}"
    );

    // Nothing is due: no lag, reported for this node.
    assert_eq!(after.value_of(LAG, &[("node", &node)]), 0.0, "{text}");
}
