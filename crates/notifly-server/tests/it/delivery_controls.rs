//! Per-endpoint flow controls, against a real receiver: a rate limit paces
//! an endpoint's deliveries without failing them or using up their retries;
//! a receiver that answers 429 (or 502, 504) gets nothing more until its
//! `Retry-After` has passed; `per_resource` ordering sends the events about
//! one resource in the order they were written, each after the one before
//! it succeeded. Other endpoints are never held back by any of it.

use std::time::Duration;

use crate::common::delivery_helpers as helpers;
use crate::common::receiver;
use crate::common::{Client, id_of};
use helpers::{DEADLINE, get_ok, wait_deliveries, webhook};
use receiver::{Behavior, Receiver};
use serde_json::{Value, json};

/// Registers a webhook with extra fields and asserts that it was created.
async fn webhook_with(c: &Client, name: &str, url: &str, extra: Value) -> String {
    let mut body = json!({"name": name, "url": url, "events": ["*"]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, created) = c.post("/v1/webhooks", body).await;
    assert_eq!(status, 201, "create webhook {name}: {created}");
    id_of(&created).to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_paces_deliveries_without_failing_them() {
    let receiver = Receiver::start().await;
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let slow = webhook_with(&c, "slow", &receiver.url("/slow"), json!({"rate_limit": 4})).await;
    webhook(&c, "fast", &receiver.url("/fast"), &["*"]).await;
    assert_eq!(
        get_ok(&c, &format!("/v1/webhooks/{slow}")).await["rate_limit"],
        4
    );

    for n in 0..12 {
        c.contact(&format!("c{n}")).await;
    }
    // The unlimited endpoint is not held back.
    receiver.wait_for_path("/fast", 12, DEADLINE).await;
    let got = receiver.wait_for_path("/slow", 12, DEADLINE).await;
    // 4 a second: in any one second at most 4 and one more (the burst a
    // claim may take), so 12 take at least (12 - 1) / 4 s, less the burst.
    let at: Vec<_> = got.iter().map(|r| r.at).collect();
    for (i, t) in at.iter().enumerate() {
        let within = at[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
            .count();
        assert!(within <= 5, "{within} deliveries within one second");
    }
    let span = at[11].duration_since(at[0]);
    assert!(
        span >= Duration::from_millis(2_400),
        "12 deliveries in {span:?}"
    );
    // Each in one attempt: waiting used none of the retries.
    assert!(got.iter().all(|r| r.attempt() == 1));
    let done = wait_deliveries(&c, &slow, 12, "succeeded").await;
    assert!(done.iter().all(|d| d["attempts"] == 1), "{done:?}");

    // Removing the limit is `null`.
    let (status, w) = c
        .put(&format!("/v1/webhooks/{slow}"), json!({"rate_limit": null}))
        .await;
    assert_eq!((status, &w["rate_limit"]), (200, &Value::Null), "{w}");
}

/// Waits until one of the webhook's deliveries has a last answer of `status`.
async fn wait_webhook_answer(c: &Client, webhook_id: &str, status: i64) {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        let list = helpers::deliveries(c, webhook_id, None).await;
        if list.iter().any(|d| d["last_status_code"] == status) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "no {status} answer: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_answers_429_gets_nothing_until_retry_after() {
    let receiver = Receiver::start().await;
    receiver.script(
        "/busy",
        [Behavior::RetryAfter {
            status: 429,
            seconds: 2,
        }],
    );
    let server = helpers::server(|c| {
        c.retry_schedule = "0s,100ms,100ms".to_owned();
    })
    .await;
    let c = server.account("acme").await;
    let busy = webhook(&c, "busy", &receiver.url("/busy"), &["*"]).await;
    webhook(&c, "calm", &receiver.url("/calm"), &["*"]).await;
    c.contact("first").await;
    let first = receiver.wait_for_path("/busy", 1, DEADLINE).await;
    // Once the 429 is recorded (the pause starts with the answer: what is
    // already in flight goes on)…
    wait_webhook_answer(&c, &busy.id, 429).await;
    // …more events while it is paused: the other endpoint gets them at once.
    c.contact("second").await;
    c.contact("third").await;
    receiver.wait_for_path("/calm", 3, DEADLINE).await;
    let got = receiver.wait_for_path("/busy", 4, DEADLINE).await;
    let paused = got[1].at.duration_since(first[0].at);
    assert!(
        paused >= Duration::from_millis(1_900),
        "sent again {paused:?} after a 429 with Retry-After: 2"
    );
    let done = wait_deliveries(&c, &busy.id, 3, "succeeded").await;
    let mut attempts: Vec<i64> = done
        .iter()
        .map(|d| d["attempts"].as_i64().unwrap())
        .collect();
    attempts.sort_unstable();
    // The answered delivery was tried twice; the ones held by the pause once.
    assert_eq!(attempts, [1, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_resource_ordering_sends_each_resource_in_order() {
    let receiver = Receiver::start().await;
    // The first request fails: what follows about the same contact waits
    // for its retry to succeed.
    receiver.script("/ordered", [Behavior::Status(500)]);
    let server = helpers::server(|c| {
        c.retry_schedule = "0s,3s,3s".to_owned();
    })
    .await;
    let c = server.account("acme").await;
    let ordered = webhook_with(
        &c,
        "ordered",
        &receiver.url("/ordered"),
        json!({"ordering": "per_resource"}),
    )
    .await;
    assert_eq!(
        get_ok(&c, &format!("/v1/webhooks/{ordered}")).await["ordering"],
        "per_resource"
    );
    let x = c.contact("x").await;
    let x_id = id_of(&x).to_owned();
    for n in 0..3 {
        let (status, body) = c
            .put(
                &format!("/v1/contacts/{x_id}"),
                json!({"display_name": format!("X {n}")}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let y = c.contact("y").await;
    let y_id = id_of(&y).to_owned();
    let got = receiver.wait_for_path("/ordered", 6, DEADLINE).await;
    let seen: Vec<(String, String, String)> = got
        .iter()
        .map(|r| {
            let v = r.json();
            (
                v["payload"]["id"].as_str().unwrap().to_owned(),
                v["type"].as_str().unwrap().to_owned(),
                v["payload"]["display_name"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect();
    let of_x: Vec<(&str, &str)> = seen
        .iter()
        .filter(|s| s.0 == x_id)
        .map(|s| (s.1.as_str(), s.2.as_str()))
        .collect();
    // Its creation twice (the failure, then the retry), then each update
    // in the order written.
    assert_eq!(
        of_x,
        [
            ("contact.created", ""),
            ("contact.created", ""),
            ("contact.updated", "X 0"),
            ("contact.updated", "X 1"),
            ("contact.updated", "X 2"),
        ],
        "{seen:?}"
    );
    // The other contact did not wait for the retry.
    let y_at = seen.iter().position(|s| s.0 == y_id).unwrap();
    assert!(y_at < 2, "{seen:?}");
    // Unordered again: a plain update.
    let (status, w) = c
        .put(
            &format!("/v1/webhooks/{ordered}"),
            json!({"ordering": "none"}),
        )
        .await;
    assert_eq!((status, w["ordering"].as_str()), (200, Some("none")), "{w}");
}

#[tokio::test]
async fn bad_controls_are_refused_naming_the_field_and_change_nothing() {
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let url = "https://hooks.example.com/x";
    for (extra, field) in [
        (json!({"rate_limit": 0}), "rate_limit"),
        (json!({"rate_limit": -3}), "rate_limit"),
        (json!({"rate_limit": 10001}), "rate_limit"),
        (json!({"rate_limit": 2.5}), "rate_limit"),
        (json!({"rate_limit": "5"}), "rate_limit"),
        (json!({"ordering": "fifo"}), "ordering"),
        (json!({"ordering": 1}), "ordering"),
    ] {
        let mut body = json!({"name": "x", "url": url, "events": ["*"]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, refused) = c.post("/v1/webhooks", body).await;
        assert!((400..500).contains(&status), "{extra}: {status} {refused}");
        let message = refused["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{extra}: {refused}");
        assert!(refused["type"].is_string(), "{refused}");
    }
    let (_, list) = c.get("/v1/webhooks").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "nothing created");

    let id = webhook_with(&c, "x", url, json!({"rate_limit": 7})).await;
    for (change, field) in [
        (json!({"rate_limit": 0}), "rate_limit"),
        (json!({"rate_limit": 1.5}), "rate_limit"),
        (json!({"ordering": "fifo"}), "ordering"),
        (json!({"ordering": null}), "ordering"),
        (json!({"name": "renamed", "rate_limit": -1}), "rate_limit"),
    ] {
        let (status, refused) = c.put(&format!("/v1/webhooks/{id}"), change.clone()).await;
        assert!((400..500).contains(&status), "{change}: {status} {refused}");
        assert!(
            refused["message"]
                .as_str()
                .unwrap_or_default()
                .contains(field),
            "{change}: {refused}"
        );
    }
    let w = get_ok(&c, &format!("/v1/webhooks/{id}")).await;
    assert_eq!(
        (&w["name"], &w["rate_limit"], &w["ordering"]),
        (&json!("x"), &json!(7), &json!("none")),
        "{w}"
    );
}
