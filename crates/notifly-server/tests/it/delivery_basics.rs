//! What a webhook consumer receives: the exact signed envelope and headers,
//! only the event types it subscribed to, nothing while disabled, nothing
//! after deletion, test events; and which endpoint registrations are refused
//! (bad URLs, bad event lists, duplicate names, private addresses).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common;
use crate::common::delivery_helpers as helpers;
use crate::common::receiver;
use crate::common::{TestServer, assert_invalid, id_of};
use helpers::{
    DEADLINE, deliveries, delivery, get_ok, header_in, now, set_enabled, wait_deliveries,
    wait_delivery, wait_delivery_until, webhook,
};
use notifly_webhooks::{StandardSecret, sign_hex, verify_hex};
use receiver::{Behavior, Receiver};
use reqwest::Method;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// The body the event `id` must be delivered with, built from the raw bytes
/// of `GET /v1/events/{id}`: `{"id":…,"type":…,"payload":…}` with the
/// payload byte for byte as the log returns it.
async fn expected_body(c: &common::Client, id: &str) -> Vec<u8> {
    let reply = c
        .send_raw(c.request(Method::GET, &format!("/v1/events/{id}")))
        .await;
    assert_eq!(reply.status, 200, "GET /v1/events/{id}: {:?}", reply.json());
    let fields: BTreeMap<&str, &RawValue> =
        serde_json::from_slice(&reply.bytes).expect("an event is a JSON object");
    format!(
        r#"{{"id":{},"type":{},"payload":{}}}"#,
        fields["id"].get(),
        fields["type"].get(),
        fields["payload"].get()
    )
    .into_bytes()
}

/// Asserts everything a consumer checks on one delivery request.
#[track_caller]
fn assert_signed(r: &receiver::Received, secret: &str, event_type: &str, attempt: u32) {
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(
        r.header("user-agent"),
        format!("Notifly-Webhooks/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(r.header("x-notifly-event-type"), event_type);
    assert_eq!(r.attempt(), attempt, "x-notifly-attempt");

    let hex = r.header("x-notifly-signature");
    assert_eq!(hex, sign_hex(secret, &r.body), "x-notifly-signature");
    assert!(
        hex.len() == 64 && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
        "x-notifly-signature is lowercase hex: {hex}"
    );
    verify_hex(secret, &r.body, hex).expect("x-notifly-signature verifies");

    let id = r.header("webhook-id");
    let ts: i64 = r
        .header("webhook-timestamp")
        .parse()
        .expect("webhook-timestamp is Unix seconds");
    assert!(
        (now() - ts).abs() <= 10,
        "webhook-timestamp {ts} is not close to now ({})",
        now()
    );
    let sig = r.header("webhook-signature");
    assert!(
        sig.split(' ').all(|e| e.starts_with("v1,")),
        "webhook-signature entries: {sig}"
    );
    StandardSecret::parse(secret)
        .expect("the secret is whsec_…")
        .verify(id, ts, sig, &r.body, now(), 300)
        .expect("webhook-signature verifies with the endpoint secret");

    let body = r.json();
    assert_eq!(body["id"], id, "webhook-id is the event id");
    assert_eq!(body["type"], event_type);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_delivers_the_exact_signed_envelope() {
    let rx = Receiver::start().await;
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let hook = webhook(&c, "all", &rx.url("/hook"), &["*"]).await;
    assert!(hook.secret.starts_with("whsec_"), "{}", hook.body);
    assert_eq!(hook.body["enabled"], true);
    assert_eq!(hook.body["events"], json!(["*"]));

    let contact = c.contact("alice").await;
    let got = rx.wait_for(1, DEADLINE).await;
    let r = &got[0];
    assert_eq!(r.path, "/hook");
    assert_signed(r, &hook.secret, "contact.created", 1);

    // The body is exactly the logged event's {id, type, payload}, byte for byte.
    let event_id = r.event_id();
    let event = get_ok(&c, &format!("/v1/events/{event_id}")).await;
    assert_eq!(event["type"], "contact.created");
    let body = r.json();
    let keys: BTreeSet<&str> = body
        .as_object()
        .expect("the body is an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["id", "type", "payload"]), "{body}");
    assert_eq!(body["payload"], contact, "the payload is the REST resource");
    assert_eq!(body["payload"], event["payload"]);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        String::from_utf8_lossy(&expected_body(&c, &event_id).await),
        "the exact body bytes"
    );

    // The delivery records what was sent and how it went.
    let d = wait_delivery(&c, &r.delivery_id(), "succeeded").await;
    assert_eq!(d["webhook_id"], hook.id.as_str());
    assert_eq!(d["event_id"], event_id.as_str());
    assert_eq!(d["event_type"], "contact.created");
    assert_eq!(d["attempts"], 1);
    assert_eq!(d["last_status_code"], 200);
    let log = d["attempt_log"].as_array().expect("an attempt log");
    assert_eq!(log.len(), 1, "{d:#}");
    assert_eq!(log[0]["succeeded"], true);
    assert_eq!(log[0]["request"]["body"], *String::from_utf8_lossy(&r.body));
    assert_eq!(
        header_in(&log[0]["request"]["headers"], "x-notifly-signature"),
        Some(r.header("x-notifly-signature"))
    );
    assert_eq!(log[0]["response"]["status"], 200);
    assert_eq!(log[0]["response"]["body"], "ok");
    assert_eq!(rx.count(), 1, "one event, one request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_endpoint_gets_only_the_event_types_it_subscribed_to() {
    let rx = Receiver::start().await;
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let messages = webhook(&c, "messages", &rx.url("/messages"), &["message.created"]).await;
    let all = webhook(&c, "all", &rx.url("/all"), &["*"]).await;
    let deleted = webhook(
        &c,
        "deletions",
        &rx.url("/deleted"),
        &["contact.deleted", "group.deleted"],
    )
    .await;

    let conversation = c.conversation("bob").await;
    let conversation_id = id_of(&conversation);
    let first = c.message(conversation_id, "hello").await;
    let second = c.message(conversation_id, "again").await;
    let group = c.group("team", &[]).await;
    let (status, body) = c
        .put(
            &format!("/v1/messages/{}", id_of(&first)),
            json!({"message": "edited"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let events = c.events().await;
    let of_type = |t: &str| -> BTreeSet<String> {
        events
            .iter()
            .filter(|e| t == "*" || e["type"] == t)
            .map(|e| id_of(e).to_owned())
            .collect()
    };
    assert_eq!(of_type("message.created").len(), 2, "{events:#?}");
    assert!(
        events.len() > 4,
        "the writes produced several event types: {events:#?}"
    );

    // Deliveries are written with the event: each endpoint has exactly its own.
    let delivered_events = |list: Vec<Value>| -> BTreeSet<String> {
        list.iter()
            .map(|d| d["event_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all_done = wait_deliveries(&c, &all.id, events.len(), "succeeded").await;
    assert_eq!(delivered_events(all_done), of_type("*"));
    let messages_done = wait_deliveries(&c, &messages.id, 2, "succeeded").await;
    assert_eq!(delivered_events(messages_done), of_type("message.created"));
    assert_eq!(deliveries(&c, &messages.id, None).await.len(), 2);
    assert!(deliveries(&c, &deleted.id, None).await.is_empty());

    // And the receiver saw exactly that.
    let to_messages = rx.wait_for_path("/messages", 2, DEADLINE).await;
    assert_eq!(to_messages.len(), 2);
    for r in &to_messages {
        assert_signed(r, &messages.secret, "message.created", 1);
    }
    let payloads: Vec<Value> = to_messages
        .iter()
        .map(|r| r.json()["payload"].clone())
        .collect();
    assert!(payloads.contains(&first), "{payloads:#?}");
    assert!(payloads.contains(&second), "{payloads:#?}");
    let to_all = rx.wait_for_path("/all", events.len(), DEADLINE).await;
    let ids: BTreeSet<String> = to_all.iter().map(|r| r.event_id()).collect();
    assert_eq!(ids, of_type("*"), "every event once to `*`");
    assert_eq!(to_all.len(), events.len());
    for r in &to_all {
        let t = r.header("x-notifly-event-type").to_owned();
        assert_signed(r, &all.secret, &t, 1);
    }
    assert!(
        to_all
            .iter()
            .any(|r| r.json()["type"] == "group.created" && r.json()["payload"] == group)
    );
    assert_eq!(rx.count_to("/deleted"), 0);

    // A deletion reaches the endpoint that asked for deletions.
    let (status, body) = c.delete(&format!("/v1/groups/{}", id_of(&group))).await;
    assert_eq!(status, 200, "{body}");
    let got = rx.wait_for_path("/deleted", 1, DEADLINE).await;
    assert_signed(&got[0], &deleted.secret, "group.deleted", 1);
    assert_eq!(got[0].json()["payload"]["id"], id_of(&group));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_endpoint_gets_nothing_new_and_resumes_when_enabled() {
    let rx = Receiver::start().await;
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let hook = webhook(&c, "hook", &rx.url("/hook"), &["contact.created"]).await;

    // The first attempt is told to come back in a second: the delivery waits.
    rx.script(
        "/hook",
        [Behavior::RetryAfter {
            status: 503,
            seconds: 1,
        }],
    );
    c.contact("before").await;
    let first = rx.wait_for_path("/hook", 1, DEADLINE).await;
    let waiting = first[0].delivery_id();

    let disabled = set_enabled(&c, &hook.id, false).await;
    assert!(
        disabled["disabled_reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "a disabled endpoint says why: {disabled}"
    );
    // An event while disabled is not queued for the endpoint at all.
    c.contact("while-disabled").await;
    assert_eq!(deliveries(&c, &hook.id, None).await.len(), 1);

    // Once the waiting delivery is due (its next attempt time, in whole
    // seconds, is in the past), it still is not sent.
    wait_delivery_until(&c, &waiting, "due", |d| {
        d["attempts"] == 1 && d["next_attempt_at"].as_i64().is_some_and(|t| now() > t)
    })
    .await;
    // (A quiet spell of several poll intervals: nothing may arrive in it.)
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rx.count_to("/hook"), 1, "a disabled endpoint got a request");
    let d = delivery(&c, &waiting).await;
    assert_eq!(d["status"], "pending", "{d:#}");
    assert_eq!(d["attempts"], 1, "{d:#}");

    // Re-enabling sends the waiting delivery, and only it.
    let enabled = set_enabled(&c, &hook.id, true).await;
    assert_eq!(enabled["disabled_reason"], Value::Null, "{enabled}");
    let got = rx.wait_for_path("/hook", 2, DEADLINE).await;
    assert_eq!(got[1].event_id(), first[0].event_id());
    assert_signed(&got[1], &hook.secret, "contact.created", 2);
    let d = wait_delivery(&c, &waiting, "succeeded").await;
    assert_eq!(d["attempts"], 2);
    assert_eq!(deliveries(&c, &hook.id, None).await.len(), 1);

    // New events flow again.
    c.contact("after").await;
    let got = rx.wait_for_path("/hook", 3, DEADLINE).await;
    assert_eq!(got[2].json()["payload"]["username"], "after");
    assert_eq!(rx.count_to("/hook"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_endpoint_cancels_its_pending_deliveries() {
    let rx = Receiver::start().await;
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let hook = webhook(&c, "hook", &rx.url("/hook"), &["*"]).await;
    rx.set(
        "/hook",
        Behavior::RetryAfter {
            status: 503,
            seconds: 30,
        },
    );

    c.contact("carol").await;
    let got = rx.wait_for_path("/hook", 1, DEADLINE).await;
    let id = got[0].delivery_id();
    // The first attempt is recorded and the next one scheduled.
    let d = wait_delivery_until(&c, &id, "attempted once", |d| d["attempts"] == 1).await;
    assert_eq!(d["status"], "pending", "{d:#}");
    assert!(d["next_attempt_at"].as_i64().is_some(), "{d:#}");

    let (status, body) = c.delete(&format!("/v1/webhooks/{}", hook.id)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = c.get(&format!("/v1/webhooks/{}", hook.id)).await;
    assert_eq!(status, 404);

    let d = delivery(&c, &id).await;
    assert_eq!(d["status"], "cancelled", "{d:#}");
    assert_eq!(d["next_attempt_at"], Value::Null, "{d:#}");
    assert_eq!(d["attempt_log"].as_array().unwrap().len(), 1);
    // Retrying a delivery of a deleted endpoint is refused.
    let (status, body) = c
        .post(&format!("/v1/deliveries/{id}/retry"), json!({}))
        .await;
    assert!(
        (400..500).contains(&status),
        "retry of a cancelled delivery: {status} {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_event_reaches_only_that_endpoint() {
    let rx = Receiver::start().await;
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let a = webhook(&c, "a", &rx.url("/a"), &["*"]).await;
    let b = webhook(&c, "b", &rx.url("/b"), &["*"]).await;

    let (status, body) = c
        .post(
            &format!("/v1/webhooks/{}/test", a.id),
            json!({"type": "group.updated"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["webhook_id"], a.id.as_str());
    assert_eq!(body["event_type"], "group.updated");
    let id = id_of(&body).to_owned();

    let got = rx.wait_for_path("/a", 1, DEADLINE).await;
    assert_signed(&got[0], &a.secret, "group.updated", 1);
    assert_eq!(got[0].delivery_id(), id);
    let payload = &got[0].json()["payload"];
    assert!(
        payload["id"].as_str().is_some_and(|s| s.len() == 16),
        "{payload}"
    );
    assert!(payload["name"].is_string(), "a group payload: {payload}");
    let done = wait_delivery(&c, &id, "succeeded").await;
    assert_eq!(
        done["attempt_log"][0]["request"]["body"].as_str(),
        Some(String::from_utf8_lossy(&got[0].body).as_ref()),
        "the delivery shows the exact body sent: {done:#}"
    );
    assert!(deliveries(&c, &b.id, None).await.is_empty());
    assert_eq!(rx.count_to("/b"), 0);
    assert_eq!(rx.count(), 1);

    // A sample addressed to one endpoint is not part of the account's log:
    // other consumers (the event list, its stream, `notifly listen`) never
    // see it.
    let event_id = got[0].event_id();
    let (status, _) = c.get(&format!("/v1/events/{event_id}")).await;
    assert_eq!(status, 404, "GET /v1/events/{{test event}}");
    let (status, log) = c.get("/v1/events?limit=100").await;
    assert_eq!(status, 200);
    assert_eq!(log["data"], json!([]), "the log holds no test event: {log}");
    let (status, _) = c.get(&format!("/v1/events/stream?after={event_id}")).await;
    assert_eq!(status, 400, "a test event is no position in the stream");

    // Unknown types and unknown webhooks are refused.
    let (status, body) = c
        .post(
            &format!("/v1/webhooks/{}/test", a.id),
            json!({"type": "group.exploded"}),
        )
        .await;
    assert_invalid(&(status, body), 422);
    let (status, body) = c
        .post(
            &format!("/v1/webhooks/{}/test", common::UNKNOWN_ID),
            json!({"type": "group.updated"}),
        )
        .await;
    assert_invalid(&(status, body), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_registrations_are_refused_and_create_nothing() {
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let existing = webhook(&c, "taken", "https://example.com/hook", &["*"]).await;

    let long = format!("https://example.com/{}", "a".repeat(2100));
    let cases: Vec<(&str, Value, u16)> = vec![
        (
            "ftp URL",
            json!({"name": "n", "url": "ftp://example.com/hook", "events": ["*"]}),
            422,
        ),
        (
            "file URL",
            json!({"name": "n", "url": "file:///etc/passwd", "events": ["*"]}),
            422,
        ),
        (
            "no host",
            json!({"name": "n", "url": "http://", "events": ["*"]}),
            422,
        ),
        (
            "no host, port",
            json!({"name": "n", "url": "http://:8080/hook", "events": ["*"]}),
            422,
        ),
        (
            "not a URL",
            json!({"name": "n", "url": "example.com/hook", "events": ["*"]}),
            422,
        ),
        (
            "user and password",
            json!({"name": "n", "url": "https://user:pass@example.com/hook", "events": ["*"]}),
            422,
        ),
        (
            "user only",
            json!({"name": "n", "url": "https://user@example.com/hook", "events": ["*"]}),
            422,
        ),
        (
            "URL > 2048 characters",
            json!({"name": "n", "url": long, "events": ["*"]}),
            422,
        ),
        (
            "empty URL",
            json!({"name": "n", "url": "", "events": ["*"]}),
            422,
        ),
        (
            "unknown event type",
            json!({"name": "n", "url": "https://example.com/h", "events": ["message.sent"]}),
            422,
        ),
        (
            "unknown with known",
            json!({"name": "n", "url": "https://example.com/h", "events": ["message.created", "nope"]}),
            422,
        ),
        (
            "empty events",
            json!({"name": "n", "url": "https://example.com/h", "events": []}),
            422,
        ),
        (
            "* mixed with types",
            json!({"name": "n", "url": "https://example.com/h", "events": ["*", "message.created"]}),
            422,
        ),
        (
            "duplicate name",
            json!({"name": "taken", "url": "https://example.com/other", "events": ["*"]}),
            409,
        ),
    ];
    for (what, body, want) in cases {
        let (status, got) = c.post("/v1/webhooks", body.clone()).await;
        assert_eq!(status, want, "{what}: {body} -> {got}");
        common::assert_error_body(&got, "invalid_request");
    }
    // Requests that are not even the right shape are 4xx too.
    for body in [
        json!({"url": "https://example.com/h", "events": ["*"]}),
        json!({"name": "n", "events": ["*"]}),
        json!({"name": "n", "url": "https://example.com/h"}),
        json!({"name": "n", "url": "https://example.com/h", "events": "*"}),
        json!({"name": "n", "url": "https://example.com/h", "events": ["*"], "secret": "whsec_x"}),
    ] {
        let (status, got) = c.post("/v1/webhooks", body.clone()).await;
        assert!((400..500).contains(&status), "{body} -> {status} {got}");
        common::assert_error_body(&got, "invalid_request");
    }

    let listed = c.list_all("/v1/webhooks").await;
    assert_eq!(listed.len(), 1, "nothing was created: {listed:#?}");
    assert_eq!(server.count("endpoints").await, 1);

    // An update to a bad URL or bad events is refused and changes nothing.
    let path = format!("/v1/webhooks/{}", existing.id);
    for body in [
        json!({"url": "ftp://example.com/hook"}),
        json!({"url": "https://user:pw@example.com/"}),
        json!({"events": []}),
        json!({"events": ["*", "contact.created"]}),
    ] {
        let (status, got) = c.put(&path, body.clone()).await;
        assert_invalid(&(status, got), 422);
    }
    let after = get_ok(&c, &path).await;
    assert_eq!(after["url"], "https://example.com/hook");
    assert_eq!(after["events"], json!(["*"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_unless_allowed() {
    let rx = Receiver::start().await;
    // The default: private networks are not allowed.
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let port = rx.addr.port();
    let urls = [
        rx.url("/hook"),
        format!("http://127.0.0.1:{port}/hook"),
        "http://localhost/".to_owned(),
        format!("http://localhost:{port}/hook"),
        "http://LOCALHOST/".to_owned(),
        "http://app.localhost/".to_owned(),
        "http://[::1]/".to_owned(),
        format!("http://[::1]:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://172.16.0.1/".to_owned(),
        "http://192.168.1.1/".to_owned(),
        "http://[::ffff:127.0.0.1]/".to_owned(),
        "http://[::ffff:169.254.169.254]/".to_owned(),
        "http://[fd00:ec2::254]/".to_owned(),
        "http://0.0.0.0/".to_owned(),
        "http://127.1/".to_owned(),
        "http://2130706433/".to_owned(),
        "http://0x7f000001/".to_owned(),
    ];
    let mut private = 0;
    for url in &urls {
        let (status, body) = c
            .post(
                "/v1/webhooks",
                json!({"name": "internal", "url": url, "events": ["*"]}),
            )
            .await;
        assert_eq!(status, 422, "{url} -> {body}");
        common::assert_error_body(&body, "invalid_request");
        // A refused private address says what a developer runs, first.
        let message = body["message"].as_str().unwrap_or_default();
        if message.contains("is not allowed") {
            private += 1;
            assert!(message.contains("notifly serve --dev"), "{message}");
        }
    }
    assert!(private > 10, "{private} refusals named private addresses");
    assert!(c.list_all("/v1/webhooks").await.is_empty());

    // A public address is fine; moving it to a private one is not.
    let hook = webhook(
        &c,
        "public",
        "https://93.184.216.34/hook",
        &["group.deleted"],
    )
    .await;
    let (status, body) = c
        .put(
            &format!("/v1/webhooks/{}", hook.id),
            json!({"url": "http://127.0.0.1/"}),
        )
        .await;
    assert_invalid(&(status, body), 422);
    let after = get_ok(&c, &format!("/v1/webhooks/{}", hook.id)).await;
    assert_eq!(after["url"], "https://93.184.216.34/hook");
    assert_eq!(rx.count(), 0);

    // With allow_private_urls the same receiver URL is accepted.
    let dev = helpers::server(|_| {}).await;
    let c = dev.account("acme").await;
    webhook(&c, "local", &rx.url("/hook"), &["*"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_at_connect_time_too() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("shared.db").display());
    // Two servers, one database: they must share its encryption key.
    let key_of = || {
        Some(notifly_server::config::EncryptionKeys(
            common::TEST_ENCRYPTION_KEY.to_owned(),
        ))
    };

    // Registered while private networks were allowed...
    let dev = helpers::server(|c| {
        c.database_url = database_url.clone();
        c.encryption_key = key_of();
    })
    .await;
    let c = dev.account("acme").await;
    let by_ip = webhook(&c, "by-ip", &rx.url("/ip"), &["*"]).await;
    let by_name = webhook(
        &c,
        "by-name",
        &format!("http://localhost:{}/name", rx.addr.port()),
        &["*"],
    )
    .await;
    let key = c.key.clone().unwrap();
    dev.stop().await;

    // ...then the operator turns that off: nothing may reach the network.
    let server = TestServer::start_with(|c| {
        c.database_url = database_url.clone();
        c.encryption_key = key_of();
        c.retry_schedule = "0s".to_owned();
        c.delivery_timeout = "2s".to_owned();
        c.poll_interval = "50ms".to_owned();
    })
    .await;
    let c = server.with_key(&key);
    c.contact("olga").await;
    for hook in [&by_ip, &by_name] {
        let failed = wait_deliveries(&c, &hook.id, 1, "failed").await;
        let d = delivery(&c, failed[0]["id"].as_str().unwrap()).await;
        let attempt = &d["attempt_log"][0];
        assert_eq!(attempt["response"], Value::Null, "{d:#}");
        let error = attempt["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("private") || error.contains("public"),
            "the error says why: {d:#}"
        );
    }
    assert_eq!(rx.count(), 0, "a request reached a private address");
}
