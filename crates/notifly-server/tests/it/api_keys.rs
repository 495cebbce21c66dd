//! API key management: keys are created (shown once), listed (never the
//! key), used (last use recorded) and revoked (refused within a second; the
//! last one kept); bad input is refused naming the field, changing nothing.

use std::time::Duration;

use crate::common;
use crate::common::{Client, TestServer, assert_invalid};
use notifly_server::domain::accounts::{KEY_CACHE_TTL, MAX_KEYS_PER_ACCOUNT};
use serde_json::{Value, json};

async fn keys(c: &Client) -> Vec<Value> {
    let (status, body) = c.get("/v1/api-keys").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["has_more"], false);
    body["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_key_is_shown_once_listed_without_it_used_and_revoked() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let first = keys(&c).await;
    assert_eq!(first.len(), 1, "{first:?}");

    let (status, created) = c.post("/v1/api-keys", json!({"name": "CI deploys"})).await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("nfly_sk_"), "{created}");
    assert_eq!(created["prefix"], &key[..12]);
    assert_eq!(created["name"], "CI deploys");
    assert_eq!(created["last_used_at"], Value::Null);
    let id = created["id"].as_str().unwrap().to_owned();

    // Listed, oldest first, without any key.
    let listed = keys(&c).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["id"], id.as_str());
    assert!(listed.iter().all(|k| k.get("key").is_none()), "{listed:?}");
    let (_, raw) = c.get("/v1/api-keys").await;
    assert!(!raw.to_string().contains(&key));

    // The new key works, and its use is recorded.
    let other = server.with_key(&key);
    let (status, _) = other.get("/v1/contacts").await;
    assert_eq!(status, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listed = keys(&c).await;
        let used = listed.iter().find(|k| k["id"] == id.as_str()).unwrap();
        if used["last_used_at"].is_i64() {
            assert!(
                used["last_used_at"].as_i64().unwrap() >= created["created_at"].as_i64().unwrap()
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "last_used_at never set"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Revoked (with the key itself: a key may revoke itself while another
    // remains), it is refused once the key cache's second is up.
    let (status, revoked) = other.delete(&format!("/v1/api-keys/{id}")).await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["id"], id.as_str());
    assert!(revoked.get("key").is_none());
    tokio::time::sleep(KEY_CACHE_TTL + Duration::from_millis(100)).await;
    let (status, body) = other.get("/v1/contacts").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(keys(&c).await.len(), 1);

    // Again, or an unknown id: 404.
    for unknown in [id.as_str(), common::UNKNOWN_ID] {
        let (status, body) = c.delete(&format!("/v1/api-keys/{unknown}")).await;
        assert_eq!(status, 404, "{body}");
    }
}

#[tokio::test]
async fn the_last_key_cannot_be_revoked() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let only = keys(&c).await;
    let id = only[0]["id"].as_str().unwrap();
    let (status, body) = c.delete(&format!("/v1/api-keys/{id}")).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("last key"),
        "{body}"
    );
    let (status, _) = c.get("/v1/contacts").await;
    assert_eq!(status, 200);

    // Another account's key is not this account's to revoke.
    let other = server.account("globex").await;
    let theirs = keys(&other).await[0]["id"].as_str().unwrap().to_owned();
    c.post("/v1/api-keys", json!({"name": "second"})).await;
    let (status, _) = c.delete(&format!("/v1/api-keys/{theirs}")).await;
    assert_eq!(status, 404);
    assert_eq!(keys(&other).await.len(), 1);
}

#[tokio::test]
async fn bad_names_are_refused_naming_the_field_and_create_nothing() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    for body in [
        json!({"name": ""}),
        json!({"name": "x".repeat(129)}),
        json!({"name": 5}),
        json!({"name": null}),
        json!({}),
        json!({"name": "ok", "scope": "all"}),
        json!({"name": "a\u{0000}b"}),
    ] {
        let (status, got) = c.post("/v1/api-keys", body.clone()).await;
        assert_invalid(&(status, got.clone()), 422);
        let message = got["message"].as_str().unwrap();
        assert!(
            message.contains("name") || message.contains("scope") || message.contains("NUL"),
            "{body}: {got}"
        );
    }
    assert_eq!(keys(&c).await.len(), 1);
}

#[tokio::test]
async fn a_replayed_creation_answers_without_the_key_and_creates_one() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let body = json!({"name": "once"});
    let (status, first) = c.post_idem("/v1/api-keys", "k-1", body.clone()).await;
    assert_eq!(status, 201, "{first}");
    assert!(first["key"].is_string());
    let (status, again) = c.post_idem("/v1/api-keys", "k-1", body).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert!(
        again.get("key").is_none(),
        "the key is stored nowhere: {again}"
    );
    assert_eq!(keys(&c).await.len(), 2);
}

#[tokio::test]
async fn an_account_holds_at_most_a_hundred_keys() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    for n in 1..MAX_KEYS_PER_ACCOUNT {
        let (status, body) = c
            .post("/v1/api-keys", json!({"name": format!("k{n}")}))
            .await;
        assert_eq!(status, 201, "{n}: {body}");
    }
    let (status, body) = c
        .post("/v1/api-keys", json!({"name": "one too many"}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(keys(&c).await.len(), MAX_KEYS_PER_ACCOUNT as usize);
}
