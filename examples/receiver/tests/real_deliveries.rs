//! The example app receives real, signed deliveries from a real server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use notifly_example_receiver::{Handled, app, work};
use notifly_webhooks::Webhook;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_handles_real_deliveries() {
    // A Notifly server on a temporary database.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("notifly.db").display());
    let store = notifly_server::open_store(&url).await.unwrap();
    let account = notifly_server::domain::accounts::create(store.as_ref(), "example")
        .await
        .unwrap();
    store.close().await;
    let config = notifly_server::Config {
        database_url: url,
        data_dir: dir.path().join("data"),
        allow_private_urls: true,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(notifly_server::run(
        config,
        listener,
        std::future::pending(),
    ));
    let client = reqwest::Client::new();
    let api = |path: &str| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(&account.api_key)
    };

    // The example app, on its own port, with the webhook's secret.
    let app_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_url = format!(
        "http://{}/webhooks/notifly",
        app_listener.local_addr().unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let hook: Value = loop {
        if let Ok(r) = api("/v1/webhooks")
            .json(&json!({"name": "example", "url": app_url, "events": ["*"]}))
            .send()
            .await
            && r.status() == 201
        {
            break r.json().await.unwrap();
        }
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (router, events) = app(Webhook::new(hook["secret"].as_str().unwrap()).unwrap());
    let handled = Handled::default();
    tokio::spawn(work(events, handled.clone()));
    tokio::spawn(async move { axum::serve(app_listener, router).await.unwrap() });

    let contact: Value = api("/v1/contacts")
        .json(&json!({"username": "kevin", "phone_number": "1-800-759-3000"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected = format!("new contact {} (kevin)", contact["id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !handled.lock().unwrap().contains(&expected) {
        assert!(
            Instant::now() < deadline,
            "the example never handled {expected}: {:?}",
            handled.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A request that is not from Notifly never reaches the worker.
    let forged = client
        .post(&app_url)
        .header("content-type", "application/json")
        .header("x-notifly-signature", "00".repeat(32))
        .body(r#"{"id":"forged0000000000","type":"contact.deleted","payload":{"id":"x"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    assert!(
        handled
            .lock()
            .unwrap()
            .iter()
            .all(|l| !l.contains("forged"))
    );
}
