//! Replays, against a real receiver: a webhook made after the events gets
//! every one its types and filter select, once each, with the events' own
//! ids, in log order; progress shows until `completed` with
//! `sent == total`; bad requests are refused; a replay can be cancelled.

use std::time::Duration;

use crate::common::delivery_helpers as helpers;
use crate::common::receiver;
use crate::common::{Client, UNKNOWN_ID, assert_invalid};
use helpers::{DEADLINE, get_ok, webhook};
use receiver::{Behavior, Receiver};
use serde_json::{Value, json};

/// Polls a replay until `status`.
async fn wait_replay(c: &Client, webhook: &str, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let r = get_ok(c, &format!("/v1/webhooks/{webhook}/replays/{id}")).await;
        if r["status"] == status {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replay not {status}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn replay(c: &Client, webhook: &str, body: Value) -> (u16, Value) {
    c.post(&format!("/v1/webhooks/{webhook}/replay"), body)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_made_after_30_events_gets_all_30_in_order() {
    let rx = Receiver::start().await;
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let start = helpers::now();
    let mut written = Vec::new();
    for n in 0..30 {
        written.push(
            c.contact(&format!("c{n}")).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Events of other types and of another account are not replayed.
    c.group("crew", &[]).await;
    let other = server.account("other").await;
    other.contact("stranger").await;
    let events: Vec<String> = c
        .events()
        .await
        .iter()
        .filter(|e| e["type"] == "contact.created")
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(events.len(), 30);

    let late = webhook(&c, "late", &rx.url("/late"), &["contact.created"]).await;
    let (status, r) = replay(&c, &late.id, json!({"since": start - 1})).await;
    assert_eq!(status, 202, "{r}");
    assert_eq!(r["webhook_id"], late.id.as_str());
    assert_eq!(r["total"], 30, "{r}");
    assert!(["queued", "running", "completed"].contains(&r["status"].as_str().unwrap()));
    let id = r["id"].as_str().unwrap();
    // An event written after the replay was made comes live, once: the
    // replay ends at the newest event when it was made.
    let after = c.contact("after").await;
    let done = wait_replay(&c, &late.id, id, "completed").await;
    assert_eq!(done["sent"], done["total"], "{done}");
    let got = rx.wait_for_path("/late", 31, DEADLINE).await;
    // Each event once, with its own id, and nothing else.
    let mut ids: Vec<String> = got
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(ids.len(), 31);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 31, "an event arrived twice");
    for r in &got {
        assert_eq!(r.json()["id"], r.header("webhook-id"));
        assert_eq!(r.json()["type"], "contact.created");
    }
    assert!(got.iter().any(|r| r.json()["payload"]["id"] == after["id"]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count_to("/late"), 31);
    // Each is a delivery like any other, made in log order (the API lists
    // them newest first).
    let deliveries = helpers::deliveries(&c, &late.id, Some("succeeded")).await;
    assert_eq!(deliveries.len(), 31);
    let made: Vec<String> = deliveries
        .iter()
        .rev()
        .map(|d| d["event_id"].as_str().unwrap().to_owned())
        .filter(|e| events.contains(e))
        .collect();
    assert_eq!(made, events, "replayed in log order");
    let payloads: Vec<Value> = got
        .iter()
        .map(|r| r.json()["payload"]["id"].clone())
        .collect();
    for id in &written {
        assert!(payloads.contains(&Value::from(id.as_str())), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_keeps_to_the_window_the_types_and_the_filter() {
    let rx = Receiver::start().await;
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let conversation = c.conversation("kevin").await;
    let conv = conversation["id"].as_str().unwrap();
    let other_conv = c.conversation("marv").await;
    for n in 0..3 {
        c.message(conv, &format!("kept {n}")).await;
        c.message(
            other_conv["id"].as_str().unwrap(),
            &format!("filtered out {n}"),
        )
        .await;
    }
    let (status, body) = c
        .post(
            "/v1/webhooks",
            json!({"name": "filtered", "url": rx.url("/f"), "events": ["message.created"],
                   "filter": {"payload": {"conversation_id": conv}}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let hook = body["id"].as_str().unwrap().to_owned();
    let (status, r) = replay(&c, &hook, json!({"since": 0})).await;
    assert_eq!(status, 202, "{r}");
    assert_eq!(r["total"], 3, "{r}");
    assert_eq!(r["since"], 0);
    wait_replay(&c, &hook, r["id"].as_str().unwrap(), "completed").await;
    let got = rx.wait_for_path("/f", 3, DEADLINE).await;
    for r in &got {
        assert_eq!(r.json()["payload"]["conversation_id"], conv);
    }

    // A window in the past that holds nothing: total 0, completed at once.
    let (status, r) = replay(&c, &hook, json!({"since": 1000, "until": 2000})).await;
    assert_eq!(status, 202, "{r}");
    assert_eq!(r["total"], 0);
    assert_eq!(r["until"], 2000);
    wait_replay(&c, &hook, r["id"].as_str().unwrap(), "completed").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count_to("/f"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_replays_are_refused_and_one_in_progress_can_be_cancelled() {
    let rx = Receiver::start().await;
    // A slow receiver keeps the replay in progress.
    rx.set("/slow", Behavior::Hang(Duration::from_millis(400)));
    let server = helpers::server(|c| c.delivery_timeout = "2s".to_owned()).await;
    let c = server.account("acme").await;
    for n in 0..80 {
        c.contact(&format!("c{n}")).await;
    }
    let hook = webhook(&c, "slow", &rx.url("/slow"), &["*"]).await;
    let now = helpers::now();
    for (body, status) in [
        (json!({"since": now + 3600}), 422),
        (json!({"since": now, "until": now - 10}), 422),
        (json!({"since": -1}), 422),
        (json!({"since": "yesterday"}), 422),
        (json!({}), 422),
        (json!({"since": 0, "extra": 1}), 422),
    ] {
        let got = replay(&c, &hook.id, body.clone()).await;
        assert_invalid(&got, status);
    }
    let got = replay(&c, UNKNOWN_ID, json!({"since": 0})).await;
    assert_invalid(&got, 404);

    let (status, r) = replay(&c, &hook.id, json!({"since": 0})).await;
    assert_eq!(status, 202, "{r}");
    assert_eq!(r["total"], 80);
    let id = r["id"].as_str().unwrap().to_owned();
    // One at a time per webhook.
    let got = replay(&c, &hook.id, json!({"since": 0})).await;
    assert_invalid(&got, 409);
    // Not found under another webhook, nor with an unknown id.
    let other = webhook(&c, "other", &rx.url("/other"), &["*"]).await;
    let (status, _) = c
        .get(&format!("/v1/webhooks/{}/replays/{id}", other.id))
        .await;
    assert_eq!(status, 404);
    let (status, _) = c
        .get(&format!("/v1/webhooks/{}/replays/{UNKNOWN_ID}", hook.id))
        .await;
    assert_eq!(status, 404);

    // The window keeps it from running ahead of the receiver.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let running = get_ok(&c, &format!("/v1/webhooks/{}/replays/{id}", hook.id)).await;
    assert!(running["sent"].as_i64().unwrap() < 80, "{running}");
    let (status, cancelled) = c
        .delete(&format!("/v1/webhooks/{}/replays/{id}", hook.id))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let sent = cancelled["sent"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = get_ok(&c, &format!("/v1/webhooks/{}/replays/{id}", hook.id)).await;
    assert_eq!(after["status"], "cancelled");
    assert_eq!(after["sent"], sent, "no more deliveries once cancelled");
    let got = c
        .delete(&format!("/v1/webhooks/{}/replays/{id}", hook.id))
        .await;
    assert_invalid(&got, 409);

    // A disabled webhook is not replayed to.
    helpers::set_enabled(&c, &other.id, false).await;
    let got = replay(&c, &other.id, json!({"since": 0})).await;
    assert_invalid(&got, 409);
}
