//! On PostgreSQL an API request never waits without bound: a write stuck
//! behind a row lock (held here by another session, as a stuck transaction
//! on another node would) fails with 503 and `Retry-After`; the account's
//! other writes go on meanwhile (there is no per-account lock), and the same
//! write succeeds once the lock is released.

use std::time::Duration;

use crate::common::{POSTGRES_ENV, TestServer};
use serde_json::json;
use sqlx::{Connection, Executor};

#[tokio::test]
#[ignore = "needs PostgreSQL: run with NOTIFLY_TEST_POSTGRES_URL set and --include-ignored"]
async fn a_write_stuck_behind_a_row_lock_fails_with_503_and_others_go_on() {
    assert!(
        std::env::var(POSTGRES_ENV).is_ok_and(|v| !v.is_empty()),
        "{POSTGRES_ENV} is not set: this test needs PostgreSQL"
    );
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let (status, ada) = c
        .post(
            "/v1/contacts",
            json!({"username": "ada", "phone_number": "+1 555 0100"}),
        )
        .await;
    assert_eq!(status, 201, "{ada}");
    let ada_id = ada["id"].as_str().unwrap().to_owned();

    let mut holder = sqlx::PgConnection::connect(&server.config.database_url)
        .await
        .unwrap();
    holder.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT 1 FROM contacts WHERE id = $1 FOR UPDATE")
        .bind(&ada_id)
        .execute(&mut holder)
        .await
        .unwrap();

    // Without a lock timeout this request would wait as long as the lock is
    // held, which is until after it answers: the client would time out.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let update = |name: &'static str| {
        http.put(server.url(&format!("/v1/contacts/{ada_id}")))
            .bearer_auth(c.key.as_deref().unwrap())
            .json(&json!({ "display_name": name }))
    };
    let (stuck, other) = tokio::join!(update("Ada L.").send(), async {
        // Meanwhile the account's other writes are not held up.
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.post(
            "/v1/contacts",
            json!({"username": "grace", "phone_number": "+1 555 0101"}),
        )
        .await
    });
    let stuck = stuck.expect("an answer, not a client timeout");
    assert_eq!(other.0, 201, "{}", other.1);
    assert_eq!(stuck.status(), 503);
    assert_eq!(stuck.headers()["retry-after"], "1");
    let body: serde_json::Value = stuck.json().await.unwrap();
    assert_eq!(body["type"], "api_error", "{body}");
    let (_, now) = c.get(&format!("/v1/contacts/{ada_id}")).await;
    assert_eq!(
        now["display_name"],
        serde_json::Value::Null,
        "nothing written"
    );

    holder.execute("ROLLBACK").await.unwrap();
    let r = update("Ada L.").send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (_, now) = c.get(&format!("/v1/contacts/{ada_id}")).await;
    assert_eq!(now["display_name"], "Ada L.");
}

/// A webhook's update and deletion are not starved by a steady stream of
/// events fanned out to it (each fan-out would otherwise hold it a moment,
/// one after another, for longer than the 5 s lock timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run with NOTIFLY_TEST_POSTGRES_URL set and --include-ignored"]
async fn a_webhook_changes_while_events_stream_to_it() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    assert!(
        std::env::var(POSTGRES_ENV).is_ok_and(|v| !v.is_empty()),
        "{POSTGRES_ENV} is not set: this test needs PostgreSQL"
    );
    let server = TestServer::start_with(|c| c.allow_private_urls = true).await;
    let c = Arc::new(server.account("acme").await);
    let (status, hook) = c
        .post(
            "/v1/webhooks",
            json!({"name": "busy", "url": "http://127.0.0.1:9/hook", "events": ["*"]}),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    let hook_id = hook["id"].as_str().unwrap().to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..16 {
        let (c, stop) = (c.clone(), stop.clone());
        writers.spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (status, body) = c
                    .post(
                        "/v1/contacts",
                        json!({"username": format!("w{w}n{n}"), "phone_number": "+1 555 0100"}),
                    )
                    .await;
                assert_eq!(status, 201, "{body}");
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..5 {
        let started = std::time::Instant::now();
        let (status, body) = c
            .put(
                &format!("/v1/webhooks/{hook_id}"),
                json!({ "description": format!("change {i}") }),
            )
            .await;
        assert_eq!(
            status,
            200,
            "update {i} after {:?}: {body}",
            started.elapsed()
        );
    }
    let (status, body) = c.delete(&format!("/v1/webhooks/{hook_id}")).await;
    assert!(status == 200 || status == 204, "delete: {status} {body}");
    stop.store(true, Ordering::Relaxed);
    while let Some(joined) = writers.join_next().await {
        joined.unwrap();
    }
    // Nothing is left pending to the deleted webhook.
    let pending: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM deliveries WHERE endpoint_id = $1 AND status = 'pending'",
    )
    .bind(&hook_id)
    .fetch_one(
        &mut sqlx::PgConnection::connect(&server.config.database_url)
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(pending, 0);
}

/// Writes that touch the same rows in opposite orders do not deadlock (a
/// deadlock would answer 503): two messages' reactions listing two contacts
/// each way round, and pinning messages while others are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run with NOTIFLY_TEST_POSTGRES_URL set and --include-ignored"]
async fn writes_in_opposite_orders_do_not_deadlock() {
    use std::sync::Arc;
    assert!(
        std::env::var(POSTGRES_ENV).is_ok_and(|v| !v.is_empty()),
        "{POSTGRES_ENV} is not set: this test needs PostgreSQL"
    );
    let server = TestServer::start().await;
    let c = Arc::new(server.account("acme").await);
    let id = |v: &serde_json::Value| v["id"].as_str().unwrap().to_owned();
    let (_, a) = c
        .post(
            "/v1/contacts",
            json!({"username": "a", "phone_number": "+1 555 0100"}),
        )
        .await;
    let (_, b) = c
        .post(
            "/v1/contacts",
            json!({"username": "b", "phone_number": "+1 555 0101"}),
        )
        .await;
    let (status, conv) = c
        .post("/v1/conversations", json!({"contact_id": id(&a)}))
        .await;
    assert_eq!(status, 201, "{conv}");
    let conv = id(&conv);
    let mut messages = Vec::new();
    for i in 0..24 {
        let (status, m) = c
            .post(
                "/v1/messages",
                json!({"conversation_id": conv, "message": format!("m{i}")}),
            )
            .await;
        assert_eq!(status, 201, "{m}");
        messages.push(id(&m));
    }
    let (a, b) = (id(&a), id(&b));
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..8 {
        let (c, m1, m2, a, b) = (
            c.clone(),
            messages[2 * round].clone(),
            messages[2 * round + 1].clone(),
            a.clone(),
            b.clone(),
        );
        tasks.spawn(async move {
            let react = |m: String, first: String, second: String| {
                let c = c.clone();
                async move {
                    c.put(
                        &format!("/v1/messages/{m}"),
                        json!({"reactions": [
                            {"contact_id": first, "emoji": "👍"},
                            {"contact_id": second, "emoji": "👍"}]}),
                    )
                    .await
                }
            };
            let (x, y) = tokio::join!(
                react(m1, a.clone(), b.clone()),
                react(m2, b.clone(), a.clone())
            );
            assert_eq!(x.0, 200, "{}", x.1);
            assert_eq!(y.0, 200, "{}", y.1);
        });
    }
    // Pin one message while deleting another, over and over.
    for round in 0..4 {
        let (c, conv, pin, gone) = (
            c.clone(),
            conv.clone(),
            messages[16 + 2 * round].clone(),
            messages[17 + 2 * round].clone(),
        );
        tasks.spawn(async move {
            let (conv_path, gone_path) = (
                format!("/v1/conversations/{conv}"),
                format!("/v1/messages/{gone}"),
            );
            let (p, d) = tokio::join!(
                c.put(&conv_path, json!({"pinned_message_id": pin})),
                c.delete(&gone_path)
            );
            assert_eq!(p.0, 200, "{}", p.1);
            assert!(d.0 == 200 || d.0 == 204, "{} {}", d.0, d.1);
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }
}
