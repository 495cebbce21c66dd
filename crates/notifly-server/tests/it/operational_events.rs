//! Operational events, against real receivers: what the delivery system
//! does to an account's webhooks (disabled by a 410, a circuit opened and
//! closed) and deliveries (retries exhausted) reaches the account's other
//! webhooks that subscribe to those types by name: never a `"*"` webhook,
//! never the webhook the event is about.

use std::time::Duration;

use crate::common::delivery_helpers as helpers;
use crate::common::event_schemas::EventSchemas;
use crate::common::receiver;
use crate::common::{Client, assert_invalid};
use helpers::{DEADLINE, Hook, get_ok, webhook};
use notifly_webhooks::{Event, StandardSecret, WebhookEvent};
use receiver::{Behavior, Receiver};
use serde_json::json;

const OPERATIONAL: [&str; 4] = [
    "webhook.disabled",
    "webhook.circuit_opened",
    "webhook.circuit_closed",
    "delivery.exhausted",
];

/// The types of the requests `path` got, in order.
fn types_to(rx: &Receiver, path: &str) -> Vec<String> {
    rx.requests_to(path)
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Waits for the first request to `path` of `event_type`, checks its
/// signature against `hook`'s secret and its body against its schema in
/// the OpenAPI document, and parses it with the crate.
async fn wait_event(rx: &Receiver, path: &str, hook: &Hook, event_type: &str) -> WebhookEvent {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(r) = rx
            .requests_to(path)
            .into_iter()
            .find(|r| r.json()["type"] == event_type)
        {
            StandardSecret::parse(&hook.secret)
                .unwrap()
                .verify(
                    r.header("webhook-id"),
                    r.header("webhook-timestamp").parse().unwrap(),
                    r.header("webhook-signature"),
                    &r.body,
                    helpers::now(),
                    300,
                )
                .expect("an operational event is signed like any other");
            if let Err(e) = EventSchemas::served().check(&r.json()) {
                panic!("a real {event_type} does not match its schema: {e}");
            }
            return WebhookEvent::parse(&r.body).expect("the crate parses it");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {event_type} at {path}; got {:?}",
            types_to(rx, path)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_yields_webhook_disabled_to_its_subscriber_and_nothing_to_a_star_webhook() {
    let rx = Receiver::start().await;
    rx.set("/gone", Behavior::Gone);
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let gone = webhook(&c, "gone", &rx.url("/gone"), &["*", "webhook.disabled"]).await;
    let ops = webhook(&c, "ops", &rx.url("/ops"), &["webhook.disabled"]).await;
    let all = webhook(&c, "all", &rx.url("/all"), &["*"]).await;
    // Another account's subscriber hears nothing of this one's webhooks.
    let other = server.account("other").await;
    webhook(&other, "ops", &rx.url("/other"), &OPERATIONAL).await;

    let contact = c.contact("gina").await;
    let event = wait_event(&rx, "/ops", &ops, "webhook.disabled").await;
    let Event::WebhookDisabled(w) = &event.event else {
        panic!("not typed as webhook.disabled: {event:?}");
    };
    assert_eq!(w.id, gone.id);
    assert!(!w.enabled);
    let reason = w.disabled_reason.as_deref().unwrap_or_default();
    assert!(reason.contains("410"), "the reason names the 410: {reason}");
    assert_eq!(w.name, "gone");

    // It is in the account's log, under its type, with the same body.
    let (status, listed) = c.get("/v1/events?type=webhook.disabled").await;
    assert_eq!(status, 200, "{listed}");
    let listed = listed["data"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], event.id.as_str());
    assert_eq!(listed[0]["payload"]["id"], gone.id.as_str());

    // The `"*"` webhook got the contact and nothing else; the disabled one
    // got nothing about itself; the other account nothing at all.
    rx.wait_for_path("/all", 1, DEADLINE).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(types_to(&rx, "/all"), ["contact.created"]);
    assert_eq!(
        rx.requests_to("/all")[0].json()["payload"]["id"],
        contact["id"]
    );
    assert_eq!(types_to(&rx, "/gone"), ["contact.created"]);
    assert_eq!(types_to(&rx, "/ops"), ["webhook.disabled"]);
    assert!(rx.requests_to("/other").is_empty());
    assert!(all.body["events"] == json!(["*"]));
}

/// A failing webhook's circuit opens at the third failure, which is also
/// its delivery's last attempt; once its receiver is back, a probe closes
/// the circuit. The watcher hears all three; the failing webhook, which
/// subscribes to the same types, hears none of them, being their subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuits_and_exhausted_deliveries_are_told_to_the_other_webhooks() {
    let rx = Receiver::start().await;
    rx.set("/flaky", Behavior::Status(500));
    let server = helpers::server(|c| c.circuit_failures = 3).await;
    let c = server.account("acme").await;
    let mut subscription = vec!["*"];
    subscription.extend(OPERATIONAL);
    let flaky = webhook(&c, "flaky", &rx.url("/flaky"), &subscription).await;
    let watcher = webhook(&c, "watcher", &rx.url("/watcher"), &OPERATIONAL).await;

    c.contact("first").await;
    let opened = wait_event(&rx, "/watcher", &watcher, "webhook.circuit_opened").await;
    let Event::WebhookCircuitOpened(w) = &opened.event else {
        panic!("{opened:?}");
    };
    assert_eq!(w.id, flaky.id);
    assert_eq!(w.circuit.as_deref(), Some("open"));

    let exhausted = wait_event(&rx, "/watcher", &watcher, "delivery.exhausted").await;
    let Event::DeliveryExhausted(d) = &exhausted.event else {
        panic!("{exhausted:?}");
    };
    assert_eq!(d.webhook_id, flaky.id);
    assert_eq!(d.status, "failed");
    assert_eq!(d.event_type, "contact.created");
    assert_eq!(d.attempts, 3);
    let last = d.last_attempt.as_ref().expect("the last attempt");
    assert_eq!(last.attempt, 3);
    assert_eq!(last.status_code, Some(500));
    let detail = get_ok(&c, &format!("/v1/deliveries/{}", d.id)).await;
    assert_eq!(detail["attempt_log"][2]["id"], last.id.as_str());

    // Back up: the next event is held by the open circuit until a probe
    // (within 5 s) succeeds and closes it.
    rx.set("/flaky", Behavior::Ok);
    c.contact("second").await;
    let closed = wait_event(&rx, "/watcher", &watcher, "webhook.circuit_closed").await;
    let Event::WebhookCircuitClosed(w) = &closed.event else {
        panic!("{closed:?}");
    };
    assert_eq!(w.id, flaky.id);
    assert_eq!(w.circuit.as_deref(), Some("closed"));

    tokio::time::sleep(Duration::from_millis(500)).await;
    // Each once (the first two, written together, may arrive in either
    // order: the watcher does not ask for ordering).
    let mut told = types_to(&rx, "/watcher");
    told[..2].sort();
    assert_eq!(
        told,
        [
            "delivery.exhausted",
            "webhook.circuit_opened",
            "webhook.circuit_closed"
        ]
    );
    // The subject of all three got only its resource events.
    let flaky_types = types_to(&rx, "/flaky");
    assert!(
        flaky_types.iter().all(|t| t == "contact.created"),
        "{flaky_types:?}"
    );
    let w = get_ok(&c, &format!("/v1/webhooks/{}", flaky.id)).await;
    assert_eq!(w["circuit"], "closed", "{w}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_subscriptions_are_checked_and_test_events_have_samples() {
    let rx = Receiver::start().await;
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let url = rx.url("/hook");
    // `*` must come first; it already has every resource event; no such
    // type.
    for events in [
        json!(["webhook.disabled", "*"]),
        json!(["*", "message.created"]),
        json!(["webhook.enabled"]),
    ] {
        let got = c
            .post(
                "/v1/webhooks",
                json!({"name": "x", "url": url, "events": events}),
            )
            .await;
        assert_invalid(&got, 422);
    }
    let hook = webhook(
        &c,
        "ops",
        &url,
        &["*", "webhook.disabled", "webhook.disabled"],
    )
    .await;
    assert_eq!(hook.body["events"], json!(["*", "webhook.disabled"]));

    // A test event of each operational type carries its sample, which the
    // crate parses as its typed variant.
    for (n, t) in OPERATIONAL.into_iter().enumerate() {
        let (status, body) = c
            .post(
                &format!("/v1/webhooks/{}/test", hook.id),
                json!({"type": t}),
            )
            .await;
        assert_eq!(status, 202, "{t}: {body}");
        let got = rx.wait_for_path("/hook", n + 1, DEADLINE).await;
        let event = WebhookEvent::parse(&got[n].body).unwrap();
        assert_eq!(event.event_type(), t);
        assert!(event.event.any_type().is_some(), "{t} parsed as unknown");
    }
    // Test events are not in the log.
    let (_, listed) = c.get("/v1/events?type=delivery.exhausted").await;
    assert_eq!(listed["data"], json!([]));
}

/// A delivery of a test event or of an operational event that fails its
/// last attempt is not told as `delivery.exhausted` (two failing webhooks
/// subscribed to each other's would tell each other forever); a 410 is
/// told as `webhook.disabled` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_test_and_operational_deliveries_and_410s_are_not_told() {
    let rx = Receiver::start().await;
    rx.set("/down", Behavior::Status(500));
    rx.set("/gone", Behavior::Gone);
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    webhook(&c, "watcher", &rx.url("/watcher"), &["delivery.exhausted"]).await;
    let down = webhook(&c, "down", &rx.url("/down"), &["webhook.disabled"]).await;
    webhook(&c, "gone", &rx.url("/gone"), &["*"]).await;
    let (status, body) = c
        .post(
            &format!("/v1/webhooks/{}/test", down.id),
            json!({"type": "contact.created"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    // `gone` is disabled: `down` gets (and fails) its webhook.disabled.
    c.contact("gina").await;
    let failed = helpers::wait_deliveries(&c, &down.id, 2, "failed").await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(rx.count_to("/down"), 6, "three attempts each");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        rx.requests_to("/watcher").is_empty(),
        "{:?}",
        types_to(&rx, "/watcher")
    );
    let (_, listed) = c.get("/v1/events?type=delivery.exhausted").await;
    assert_eq!(listed["data"], json!([]));
}

/// The event stream (what `notifly listen` reads) leaves operational
/// events out unless they are asked for by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_sends_operational_events_only_when_named() {
    let rx = Receiver::start().await;
    rx.set("/gone", Behavior::Gone);
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    webhook(&c, "gone", &rx.url("/gone"), &["*"]).await;
    let default = open_stream(&c, "").await;
    let named = open_stream(&c, "?types=webhook.disabled,contact.created").await;
    c.contact("gina").await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while c.get("/v1/events?type=webhook.disabled").await.1["data"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no webhook.disabled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stream_types(default).await, ["contact.created"]);
    assert_eq!(
        stream_types(named).await,
        ["contact.created", "webhook.disabled"]
    );
}

async fn open_stream(c: &Client, query: &str) -> reqwest::Response {
    let response = c
        .request(reqwest::Method::GET, &format!("/v1/events/stream{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

/// The types of the events a stream sends within the next second.
async fn stream_types(mut response: reqwest::Response) -> Vec<String> {
    let mut text = String::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(until, response.chunk()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("event:"))
        .map(|t| t.trim().to_owned())
        .collect()
}
