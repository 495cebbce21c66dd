//! The circuit breaker, against a real receiver: a run of failed attempts
//! opens an endpoint's circuit, after which only probes are sent (the first
//! within 5 s) while its other deliveries wait with their retries intact; a
//! successful probe closes it and the held work flows; a new URL closes it
//! at once. Other endpoints are not held back meanwhile.

use std::time::Duration;

use crate::common::delivery_helpers as helpers;
use crate::common::receiver;
use crate::common::{Client, TestServer};
use helpers::{DEADLINE, get_ok, wait_deliveries, webhook};
use receiver::{Behavior, Receiver};
use serde_json::{Value, json};

/// The production default.
const FAILURES: u32 = 5;

async fn server() -> TestServer {
    helpers::server(|c| {
        c.circuit_failures = FAILURES;
        // Retries come fast, so that the run of failures is quick.
        c.retry_schedule = "0s,50ms,50ms,50ms,50ms,50ms,50ms,50ms,50ms,50ms".to_owned();
        c.poll_interval = "50ms".to_owned();
    })
    .await
}

async fn circuit(c: &Client, id: &str) -> Value {
    get_ok(c, &format!("/v1/webhooks/{id}")).await
}

/// Waits until the webhook's circuit is `state`.
async fn wait_circuit(c: &Client, id: &str, state: &str, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let w = circuit(c, id).await;
        if w["circuit"] == state {
            return w;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the circuit is not {state}: {w}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_failures_opens_the_circuit_and_a_good_probe_closes_it() {
    let receiver = Receiver::start().await;
    receiver.set("/down", Behavior::Status(500));
    let server = server().await;
    let c = server.account("acme").await;
    let down = webhook(&c, "down", &receiver.url("/down"), &["*"]).await;
    let up = webhook(&c, "up", &receiver.url("/up"), &["*"]).await;
    assert_eq!(circuit(&c, &down.id).await["circuit"], "closed");
    assert_eq!(circuit(&c, &down.id).await["circuit_since"], Value::Null);

    // One event fails FAILURES times in a row: the circuit opens.
    c.contact("first").await;
    let opened = wait_circuit(&c, &down.id, "open", DEADLINE).await;
    assert!(opened["circuit_since"].is_i64(), "{opened}");
    let tried = receiver.count_to("/down");
    assert_eq!(tried, FAILURES as usize, "attempts before it opened");

    // While open: new events wait, unattempted; the other endpoint gets
    // them at once.
    for n in 0..3 {
        c.contact(&format!("held-{n}")).await;
    }
    receiver.wait_for_path("/up", 4, DEADLINE).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(receiver.count_to("/down"), tried, "attempts while open");
    let held = wait_deliveries(&c, &down.id, 4, "pending").await;
    for d in held.iter().filter(|d| d["attempts"] == 0) {
        assert_eq!(d["status"], "pending");
    }
    let metrics = helpers::metrics(&server).await;
    assert!(
        metrics.contains(&format!(
            "notifly_endpoint_circuit{{endpoint=\"{}\",state=\"open\"}} 1",
            down.id
        )),
        "{metrics}"
    );
    assert!(helpers::sample_of(&metrics, "notifly_deliveries_held_by_open_circuits") >= 1.0);

    // The endpoint recovers: the next probe (within 5 s of opening)
    // succeeds, the circuit closes and everything held is delivered, with
    // its retries intact.
    receiver.set("/down", Behavior::Ok);
    wait_circuit(&c, &down.id, "closed", Duration::from_secs(15)).await;
    let delivered = wait_deliveries(&c, &down.id, 4, "succeeded").await;
    assert_eq!(delivered.len(), 4);
    let metrics = helpers::metrics(&server).await;
    assert!(!metrics.contains(&down.id), "{metrics}");
    assert_eq!(
        wait_deliveries(&c, &up.id, 4, "succeeded").await.len(),
        4,
        "the healthy endpoint got everything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_probe_opens_it_again_and_a_new_url_closes_it_at_once() {
    let receiver = Receiver::start().await;
    receiver.set("/down", Behavior::Status(503));
    let server = server().await;
    let c = server.account("acme").await;
    let down = webhook(&c, "down", &receiver.url("/down"), &["*"]).await;
    c.contact("first").await;
    wait_circuit(&c, &down.id, "open", DEADLINE).await;
    let before = receiver.count_to("/down");

    // The probe (one request) fails: open again, no burst of attempts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while receiver.count_to("/down") == before {
        assert!(tokio::time::Instant::now() < deadline, "no probe was sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reopened = wait_circuit(&c, &down.id, "open", DEADLINE).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.count_to("/down"),
        before + 1,
        "one probe: {reopened}"
    );

    // A new URL: closed at once, and the held delivery goes there.
    let (status, body) = c
        .put(
            &format!("/v1/webhooks/{}", down.id),
            json!({"url": receiver.url("/elsewhere")}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["circuit"], "closed", "{body}");
    receiver.wait_for_path("/elsewhere", 1, DEADLINE).await;
    wait_deliveries(&c, &down.id, 1, "succeeded").await;
}
