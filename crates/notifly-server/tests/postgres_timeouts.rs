//! On PostgreSQL an API request never waits without bound: a write stuck
//! behind a row lock (held here by another session, as a stuck transaction
//! on another node would) fails with 503 and `Retry-After`; the account's
//! other writes go on meanwhile (there is no per-account lock), and the same
//! write succeeds once the lock is released.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{POSTGRES_ENV, TestServer};
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
