//! Content filters: a webhook with a `filter` receives only the events of
//! its types that pass it; a bad filter is refused with a 422 that names
//! the operator or path, writing nothing.

use crate::common::delivery_helpers as helpers;
use crate::common::receiver::Receiver;
use crate::common::{assert_invalid, id_of};
use helpers::{DEADLINE, get_ok};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_events_that_pass_the_filter_are_delivered() {
    let rx = Receiver::start().await;
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let watched = c.conversation("alice").await;
    let other = c.conversation("bob").await;
    let watched_id = id_of(&watched).to_owned();

    let filter = json!({"payload": {"conversation_id": watched_id}});
    let (status, hook) = c
        .post(
            "/v1/webhooks",
            json!({"name": "one conversation", "url": rx.url("/one"),
                   "events": ["message.created"], "filter": filter}),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    assert_eq!(hook["filter"], filter);
    let (status, all) = c
        .post(
            "/v1/webhooks",
            json!({"name": "every message", "url": rx.url("/all"), "events": ["message.created"]}),
        )
        .await;
    assert_eq!(status, 201, "{all}");
    assert_eq!(all["filter"], Value::Null);

    let kept = c.message(&watched_id, "for the watcher").await;
    c.message(id_of(&other), "not for the watcher").await;
    let kept_too = c.message(&watched_id, "again").await;
    let got = rx.wait_for_path("/all", 3, DEADLINE).await;
    assert_eq!(got.len(), 3);
    let got = rx.wait_for_path("/one", 2, DEADLINE).await;
    // In either order: the webhook does not ask for ordering (on
    // PostgreSQL the first goes through a claim, the second is handed off).
    let mut ids: Vec<String> = got
        .iter()
        .map(|r| r.json()["payload"]["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let mut expected = vec![id_of(&kept).to_owned(), id_of(&kept_too).to_owned()];
    expected.sort();
    assert_eq!(ids, expected);
    // It has no other delivery (each was made with its message's write).
    assert_eq!(helpers::deliveries(&c, id_of(&hook), None).await.len(), 2);

    // Operators, changed with PUT: now every other conversation.
    let (status, updated) = c
        .put(
            &format!("/v1/webhooks/{}", id_of(&hook)),
            json!({"filter": {"$or": [
                {"payload": {"conversation_id": {"$ne": watched_id}}},
                {"payload": {"message": {"$in": ["urgent"]}}}]}}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    c.message(&watched_id, "quiet").await;
    let urgent = c.message(&watched_id, "urgent").await;
    let elsewhere = c.message(id_of(&other), "elsewhere").await;
    rx.wait_for_path("/all", 6, DEADLINE).await;
    let got = rx.wait_for_path("/one", 4, DEADLINE).await;
    let mut ids: Vec<String> = got[2..]
        .iter()
        .map(|r| r.json()["payload"]["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let mut want = vec![id_of(&urgent).to_owned(), id_of(&elsewhere).to_owned()];
    want.sort();
    assert_eq!(ids, want);

    // `null` removes it: every message again.
    let (status, updated) = c
        .put(
            &format!("/v1/webhooks/{}", id_of(&hook)),
            json!({"filter": null}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["filter"], Value::Null);
    c.message(&watched_id, "quiet again").await;
    rx.wait_for_path("/one", 5, DEADLINE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_filters_are_refused_naming_the_operator_or_path() {
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let create = |filter: Value| json!({"name": "f", "url": "https://example.com/f", "events": ["*"], "filter": filter});
    let mut deep = json!("x");
    for _ in 0..12 {
        deep = json!({ "a": deep });
    }
    let cases = [
        (
            json!({"payload": {"text": {"$regex": "a.*"}}}),
            "`$regex` at `payload.text`",
        ),
        (
            json!({"payload": {"n": {"$gt": "5"}}}),
            "`$gt` at `payload.n` takes a number",
        ),
        (
            json!({"$or": []}),
            "`$or` at the top takes a non-empty list",
        ),
        (
            json!({"payload": {"id": {"$in": "x"}}}),
            "`$in` at `payload.id` takes a list",
        ),
        (
            json!({"$exists": "yes"}),
            "`$exists` at the top takes true or false",
        ),
        (json!(["payload"]), "must be a JSON object"),
        (json!("payload.id = 1"), "must be a JSON object"),
        (json!({ "payload": deep }), "levels deep"),
        (json!({"conversation_id": "abc"}), "not a field of an event"),
        (
            json!({"payload": {"sender": {}}}),
            "empty object at `payload.sender`",
        ),
        (
            json!({"payload": {"text": "x".repeat(5000)}}),
            "at most 4096",
        ),
    ];
    for (filter, needle) in cases {
        let got = c.post("/v1/webhooks", create(filter.clone())).await;
        assert_invalid(&got, 422);
        let message = got.1["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("filter: ") && message.contains(needle),
            "{filter}: `{needle}` not in {message}"
        );
    }
    assert_eq!(get_ok(&c, "/v1/webhooks").await["data"], json!([]));

    // `{}` passes everything: stored as no filter.
    let (status, hook) = c.post("/v1/webhooks", create(json!({}))).await;
    assert_eq!(status, 201, "{hook}");
    assert_eq!(hook["filter"], Value::Null);
    // A refused update changes nothing.
    let got = c
        .put(
            &format!("/v1/webhooks/{}", id_of(&hook)),
            json!({"name": "renamed", "filter": {"$nope": 1}}),
        )
        .await;
    assert_invalid(&got, 422);
    assert_eq!(
        get_ok(&c, &format!("/v1/webhooks/{}", id_of(&hook))).await["name"],
        "f"
    );
}
