//! On PostgreSQL an API request never waits without bound: a write stuck
//! behind its account's lock (held here by another session, as a stuck
//! transaction on another node would) fails with 503 and `Retry-After`, and
//! the next write after the lock is released succeeds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{POSTGRES_ENV, TestServer};
use serde_json::json;
use sqlx::Connection;

/// The advisory-lock namespace of account locks (see `store/postgres.rs`).
const NS_ACCOUNT: i32 = 0x4E46_0001;

#[tokio::test]
#[ignore = "needs PostgreSQL: run with NOTIFLY_TEST_POSTGRES_URL set and --include-ignored"]
async fn a_write_stuck_behind_its_account_lock_fails_with_503() {
    assert!(
        std::env::var(POSTGRES_ENV).is_ok_and(|v| !v.is_empty()),
        "{POSTGRES_ENV} is not set: this test needs PostgreSQL"
    );
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let mut holder = sqlx::PgConnection::connect(&server.config.database_url)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))")
        .bind(NS_ACCOUNT)
        .bind(&c.account_id)
        .execute(&mut holder)
        .await
        .unwrap();

    // Without a lock timeout this request would wait as long as the lock is
    // held, which is until after it answers: the client would time out.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let stuck = http
        .post(server.url("/v1/contacts"))
        .bearer_auth(c.key.as_deref().unwrap())
        .json(&json!({"username": "ada", "phone_number": "+1 555 0100"}))
        .send()
        .await
        .expect("an answer, not a client timeout");
    assert_eq!(stuck.status(), 503);
    assert_eq!(stuck.headers()["retry-after"], "1");
    let body: serde_json::Value = stuck.json().await.unwrap();
    assert_eq!(body["type"], "api_error", "{body}");
    assert_eq!(server.count_for("contacts", &c.account_id).await, 0);

    sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
        .bind(NS_ACCOUNT)
        .bind(&c.account_id)
        .execute(&mut holder)
        .await
        .unwrap();
    let (status, body) = c
        .post(
            "/v1/contacts",
            json!({"username": "ada", "phone_number": "+1 555 0100"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}
