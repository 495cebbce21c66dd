//! Data past retention is purged; what is still in flight is not.

use std::time::{Duration, Instant};

use crate::common::delivery_helpers as helpers;
use crate::common::id_of;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use helpers::webhook;
use serde_json::json;

#[tokio::test]
async fn old_finished_work_is_purged_and_pending_work_is_kept() {
    let server = helpers::server(|c| {
        c.retention = "1s".to_owned();
        c.purge_interval = "100ms".to_owned();
        c.retry_schedule = "0s,1h".to_owned();
    })
    .await;
    let c = server.account("acme").await;

    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ok_url = format!("http://{}/hook", receiver.local_addr().unwrap());
    let app = Router::new().route("/hook", post(|| async { StatusCode::OK }));
    tokio::spawn(async move { axum::serve(receiver, app).await.unwrap() });
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let ok = webhook(&c, "ok", &ok_url, &["contact.created"]).await;
    webhook(
        &c,
        "down",
        &format!("http://{closed}/hook"),
        &["group.created"],
    )
    .await;

    let (status, _) = c
        .post_idem(
            "/v1/contacts",
            "keep-me",
            json!({"username": "kevin", "phone_number": "1-800-759-3000"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, group) = c.post("/v1/groups", json!({"name": "family"})).await;
    assert_eq!(status, 201);

    // Once the contact's delivery has succeeded and a second has passed, its
    // event, delivery and attempt go; the group's delivery is still waiting
    // for a retry an hour away, so it and its event stay.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let delivered = helpers::deliveries(&c, &ok.id, Some("succeeded"))
            .await
            .len();
        let events = server.count("events").await;
        if delivered == 0 && events == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not purged: {events} events left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.count("deliveries").await, 1);
    let log = c.events().await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["type"], "group.created");
    assert_eq!(log[0]["payload"]["id"].as_str(), Some(id_of(&group)));
    assert!(
        server.count("attempts").await >= 1,
        "the pending delivery keeps its attempt"
    );
    // Idempotency keys live for a day, whatever the retention.
    assert_eq!(server.count("idempotency_keys").await, 1);
}
