//! `/metrics` after real deliveries: attempt counts by result, the latency
//! histogram, the queue gauges and the disabled-endpoint gauge, checked
//! against what the API says happened.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/delivery_helpers.rs"]
mod helpers;
#[path = "common/receiver.rs"]
mod receiver;

use std::time::Duration;

use helpers::{
    DEADLINE, deliveries, metrics, sample, sample_of, wait_deliveries, wait_webhook, webhook,
};
use receiver::{Behavior, Receiver};

const SUCCESS: &str = r#"notifly_delivery_attempts_total{result="success"}"#;
const FAILURE: &str = r#"notifly_delivery_attempts_total{result="failure"}"#;
const LATENCY_COUNT: &str = "notifly_delivery_attempt_duration_seconds_count";
const LATENCY_SUM: &str = "notifly_delivery_attempt_duration_seconds_sum";
const LATENCY_INF: &str = r#"notifly_delivery_attempt_duration_seconds_bucket{le="+Inf"}"#;
const DEPTH: &str = "notifly_delivery_queue_depth";
const DUE: &str = "notifly_delivery_queue_due";
const IN_FLIGHT: &str = "notifly_delivery_in_flight";
const DISABLED: &str = "notifly_endpoints_disabled";

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

    let before = metrics(&server).await;
    for series in [
        SUCCESS,
        FAILURE,
        LATENCY_COUNT,
        DEPTH,
        DUE,
        IN_FLIGHT,
        DISABLED,
    ] {
        assert_eq!(sample_of(&before, series), 0.0, "{series} at start");
    }
    assert!(before.contains("# TYPE notifly_delivery_attempt_duration_seconds histogram"));

    let ok = webhook(&c, "ok", &rx.url("/ok"), &["*"]).await;
    let fail = webhook(&c, "fail", &rx.url("/fail"), &["contact.created"]).await;
    let gone = webhook(&c, "gone", &rx.url("/gone"), &["group.created"]).await;
    let parked = webhook(&c, "parked", &rx.url("/parked"), &["contact.created"]).await;
    let slow = webhook(&c, "slow", &rx.url("/slow"), &["contact.created"]).await;

    c.contact("one").await;
    c.contact("two").await;
    c.group("crew", &[]).await;
    let events = c.events().await.len();

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

    let text = metrics(&server).await;
    // Attempts: one success per event to `ok`; failures: 2 × 2 to `fail`,
    // 1 to `gone`, 1 to `parked` (the slow one has not ended yet).
    assert_eq!(rx.count_to("/parked"), 1);
    assert_eq!(sample_of(&text, SUCCESS), events as f64, "{text}");
    assert_eq!(sample_of(&text, FAILURE), 6.0, "{text}");
    let count = sample_of(&text, LATENCY_COUNT);
    assert_eq!(count, events as f64 + 6.0, "{text}");
    assert_eq!(sample_of(&text, LATENCY_INF), count, "{text}");
    // Every attempt took some time, however fast loopback is.
    assert!(
        sample_of(&text, LATENCY_SUM) > 0.0,
        "{count} attempts took 0 s in all: {text}"
    );
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("notifly_delivery_attempt_duration_seconds_bucket{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert!(buckets.len() > 2, "{text}");
    assert!(
        buckets.windows(2).all(|w| w[0] <= w[1]),
        "histogram buckets are cumulative: {buckets:?}"
    );
    if let Some(v) = sample(&text, r#"notifly_deliveries_total{outcome="failed"}"#) {
        assert_eq!(v, 3.0, "two to `fail`, one to `gone`: {text}");
    }

    // The queue: two parked (one not due for an hour, one due and held by
    // the pause) and two for the slow endpoint (one in flight, one due and
    // waiting for its slot).
    assert_eq!(sample_of(&text, DEPTH), 4.0, "{text}");
    let due = sample_of(&text, DUE);
    assert!((1.0..=3.0).contains(&due), "due: {due}\n{text}");
    assert_eq!(sample_of(&text, IN_FLIGHT), 1.0, "{text}");
    assert_eq!(sample_of(&text, DISABLED), 1.0, "the 410 endpoint: {text}");
}
