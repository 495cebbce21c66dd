//! The delivery fast path, through a real server: new deliveries handed to
//! the dispatcher without a claim, and backpressure (both stores),
//! which slows writes to the pace of an endpoint that keeps up but never
//! for one that hangs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::delivery_helpers as helpers;
use crate::common::receiver;
use helpers::{deliveries, metrics, sample_of, wait_deliveries, webhook};
use receiver::{Behavior, Receiver};
use serde_json::json;

const HANDED_OFF: &str = r#"notifly_delivery_starts_total{path="hand_off"}"#;
const CLAIMED: &str = r#"notifly_delivery_starts_total{path="claim"}"#;

fn on_postgres(server: &common::TestServer) -> bool {
    server.config.database_url.starts_with("postgres")
}

/// On SQLite each new delivery is handed to the dispatcher by the write that
/// created it: none is claimed. On PostgreSQL, so is each that finds a free
/// slot of its endpoint in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_deliveries_are_sent_without_a_claim() {
    let rx = Receiver::start().await;
    rx.set("/ok", Behavior::Ok);
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let ok = webhook(&c, "ok", &rx.url("/ok"), &["contact.created"]).await;
    let before = metrics(&server).await;

    for i in 0..20 {
        c.contact(&format!("user{i}")).await;
    }
    wait_deliveries(&c, &ok.id, 20, "succeeded").await;
    assert_eq!(rx.count_to("/ok"), 20);

    let after = metrics(&server).await;
    let handed_off = sample_of(&after, HANDED_OFF) - sample_of(&before, HANDED_OFF);
    let claimed = sample_of(&after, CLAIMED) - sample_of(&before, CLAIMED);
    if on_postgres(&server) {
        // A delivery's slot is held in the database until its result is
        // written: the first 16 (the endpoint's limit) find one free, and
        // those after wait for a claim only if the results lag behind.
        assert_eq!(handed_off + claimed, 20.0);
        assert!(
            handed_off >= 16.0,
            "{handed_off} handed off, {claimed} claimed"
        );
    } else {
        assert_eq!(
            (handed_off, claimed),
            (20.0, 0.0),
            "every delivery handed off, none claimed"
        );
    }
}

/// Writers in a closed loop against an account with a fast endpoint and a
/// hanging one. The fast endpoint's backlog stays bounded (writes wait for
/// it, the backpressure), while the hanging endpoint builds its own queue
/// without holding anyone back: every write is acknowledged, promptly, and
/// the fast endpoint gets every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_bounds_a_fast_endpoints_backlog_and_a_hanging_one_holds_nobody_back() {
    const WRITERS: usize = 16;
    const WRITES: usize = 1200;
    const SLOTS: u32 = 4;

    let rx = Receiver::start().await;
    rx.set("/fast", Behavior::Ok);
    rx.set("/hang", Behavior::Hang(Duration::from_secs(120)));
    let server = helpers::server(|c| {
        c.endpoint_concurrency = SLOTS;
        c.delivery_timeout = "60s".to_owned();
    })
    .await;
    let c = Arc::new(server.account("acme").await);
    let fast = webhook(&c, "fast", &rx.url("/fast"), &["contact.created"]).await;
    let hang = webhook(&c, "hang", &rx.url("/hang"), &["contact.created"]).await;

    // Watch the fast endpoint's backlog (pending deliveries, in flight
    // included) while the writers run.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn({
        let (c, done, fast) = (c.clone(), done.clone(), fast.id.clone());
        async move {
            let mut most = 0;
            while !done.load(Ordering::Relaxed) {
                let (status, body) = c
                    .get(&format!(
                        "/v1/webhooks/{fast}/deliveries?status=pending&limit=100"
                    ))
                    .await;
                assert_eq!(status, 200, "{body}");
                let n = body["data"].as_array().unwrap().len();
                let n = if body["has_more"] == true { 101 } else { n };
                most = most.max(n);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            most
        }
    });

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let (c, next) = (c.clone(), next.clone());
        writers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= WRITES {
                    return;
                }
                let (status, body) = c
                    .post(
                        "/v1/contacts",
                        json!({"username": format!("user{n}"), "phone_number": "+1 555 0100"}),
                    )
                    .await;
                assert_eq!(status, 201, "{body}");
            }
        });
    }
    while let Some(joined) = writers.join_next().await {
        joined.unwrap();
    }
    let writing = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let most = watcher.await.unwrap();

    // Had a write waited for the hanging endpoint, each would have been held
    // for the longest pace (5 s): 1,200 writes by 16 writers, over 6 minutes.
    assert!(
        writing < Duration::from_secs(60),
        "the writes took {writing:?}: the hanging endpoint held the API back"
    );
    // Its slots, each write's one delivery and a round of the endpoint's
    // own queue, with room to spare: without backpressure it is the whole
    // difference between the API's rate and the endpoint's.
    assert!(
        most <= 100,
        "the fast endpoint's backlog reached {most} deliveries"
    );
    wait_deliveries(&c, &fast.id, WRITES, "succeeded").await;
    // The hanging endpoint holds its slots and queues the rest: nothing lost.
    let waiting = deliveries(&c, &hang.id, Some("pending")).await;
    assert_eq!(waiting.len(), WRITES);
    assert!(rx.count_to("/hang") <= SLOTS as usize);
}
