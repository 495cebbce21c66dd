//! `Notifly::webhook_health`, what the dashboard's list and chart show: real
//! attempts against a real receiver, counted per time bucket by the store's
//! SQL (SQLite, or PostgreSQL with `NOTIFLY_TEST_POSTGRES_URL`).

use crate::common::delivery_helpers as helpers;
use crate::common::receiver;
use helpers::{now, wait_deliveries, webhook};
use notifly_server::domain::{DomainError, Notifly};
use receiver::{Behavior, Receiver};
use serde_json::json;

#[tokio::test]
async fn health_counts_an_endpoints_attempts_by_time_bucket() {
    let server = helpers::server(|_| {}).await;
    let api = server.account("acme").await;
    let other = server.account("other").await;
    let receiver = Receiver::start().await;
    let keyring = std::sync::Arc::new(server.config.keyring().unwrap());
    let notifly = Notifly::new(
        server.store.clone(),
        &server.base,
        server.data_dir(),
        true,
        keyring,
    );
    let hook = webhook(&api, "h", &receiver.url("/ok"), &["*"]).await;

    // Nothing yet: no rate, never attempted, but every bucket is there.
    let h = notifly
        .webhook_health(&api.account_id, &hook.id, 24 * 3600, 24)
        .await
        .unwrap();
    assert_eq!(h.buckets.len(), 24);
    assert_eq!(h.attempts, 0);
    assert_eq!(h.success_rate(), None);
    assert_eq!(h.last_attempt_at, None);

    // Two successes, then one delivery that fails all 3 of its attempts.
    for t in ["message.created", "group.created"] {
        let (status, _) = api
            .post(
                &format!("/v1/webhooks/{}/test", hook.id),
                json!({"type": t}),
            )
            .await;
        assert_eq!(status, 202);
    }
    wait_deliveries(&api, &hook.id, 2, "succeeded").await;
    receiver.set_default(Behavior::Status(500));
    api.post(
        &format!("/v1/webhooks/{}/test", hook.id),
        json!({"type": "contact.created"}),
    )
    .await;
    wait_deliveries(&api, &hook.id, 1, "failed").await;

    let h = notifly
        .webhook_health(&api.account_id, &hook.id, 24 * 3600, 24)
        .await
        .unwrap();
    assert_eq!((h.attempts, h.succeeded), (5, 2));
    assert_eq!(h.success_rate(), Some(0.4));
    assert!(h.avg_duration_ms().is_some());
    let last = h.last_attempt_at.expect("attempted");
    assert!((now() - last).abs() <= 5, "last attempt {last}");
    // All of it happened in the newest bucket.
    let newest = h.buckets.last().unwrap();
    assert_eq!((newest.attempts, newest.succeeded), (5, 2));
    assert!(h.buckets[..23].iter().all(|b| b.attempts == 0));
    assert!(
        h.buckets
            .windows(2)
            .all(|w| w[1].start - w[0].start == 3600)
    );
    assert!(newest.max_duration_ms >= newest.avg_duration_ms);

    // One bucket for the whole window, as the list uses it.
    let one = notifly
        .webhook_health(&api.account_id, &hook.id, 24 * 3600, 1)
        .await
        .unwrap();
    assert_eq!((one.attempts, one.succeeded), (5, 2));

    // Another account's webhook is not found; bad windows are refused.
    assert!(matches!(
        notifly
            .webhook_health(&other.account_id, &hook.id, 3600, 1)
            .await,
        Err(DomainError::NotFound { .. })
    ));
    for (window, buckets) in [(0, 1), (3600, 0), (3600, 10_000), (365 * 86_400, 1)] {
        assert!(matches!(
            notifly
                .webhook_health(&api.account_id, &hook.id, window, buckets)
                .await,
            Err(DomainError::BadRequest(_))
        ));
    }
}
