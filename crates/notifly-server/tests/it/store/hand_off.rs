//! The hand-off of new deliveries. On SQLite one process serves the database
//! and its slots are in memory; on PostgreSQL an endpoint's slots are rows
//! of the database, which writes and claims of every node take.

use super::*;

/// A delivery created by a write is leased in that write and handed to the
/// dispatcher once durable, without a claim; a rolled-back write hands off
/// nothing and frees its slot; full slots leave deliveries to claims; and a
/// handed-off delivery that was never sent (the process died between the
/// commit and the send) is claimed again as soon as the next process starts.
#[tokio::test]
async fn sqlite_hand_off_sends_new_deliveries_without_a_claim_and_loses_none() {
    use notifly_server::store::HandOff;

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("notifly.db").display());
    let store = notifly_server::open_store(&url).await.unwrap();
    store.start_serving().await.unwrap();
    // Two slots per endpoint, three in all.
    let hand_off = Arc::new(HandOff::new("node-a", 60_000, 2, 1, 3));
    assert!(store.hand_off(hand_off.clone()).await);
    let account = new_account(&store, "acme").await;
    let ep = add_endpoint(&store, &account, "main", &["*"], true).await;

    // Nothing is handed off before the commit is durable.
    let e = event("contact.created");
    let mut tx = begin(&store).await;
    assert_eq!(tx.insert_event(&account, &e).await.unwrap(), 1);
    assert!(
        !tx.claimable_work(),
        "a handed-off delivery needs no claim, so the dispatcher need not wake"
    );
    let early = tokio::time::timeout(Duration::from_millis(50), hand_off.next()).await;
    assert!(early.is_err(), "handed off before the commit");
    commit(tx).await;
    let ready = tokio::time::timeout(Duration::from_secs(5), hand_off.next())
        .await
        .expect("the delivery is handed off after the commit");
    assert_eq!(ready.len(), 1);
    let (c, body) = &ready[0];
    assert_eq!(c.endpoint_id, ep.id);
    assert_eq!(c.event_id, e.id);
    assert_eq!(c.account_id, account);
    assert_eq!((c.attempt, c.schedule_pos), (1, 0));
    assert_eq!(
        (c.url.as_str(), c.secret.as_str()),
        (ep.url.as_str(), ep.secret.as_str())
    );
    assert_eq!(body.as_ref(), e.body.as_bytes());
    assert_eq!(
        hand_off.free(),
        2,
        "its slot is taken until the attempt ends"
    );
    // It is leased, so a claim does not take it a second time.
    assert!(claim(&store, &claim_all("node-a:1")).await.is_empty());

    // A write rolled back hands off nothing and gives its slot back.
    let mut tx = begin(&store).await;
    tx.insert_event(&account, &event("contact.created"))
        .await
        .unwrap();
    assert_eq!(hand_off.free(), 1);
    drop(tx);
    assert_eq!(hand_off.free(), 2);

    // With the endpoint's two slots taken, the next delivery is left to a claim.
    emit_event(&store, &account, &event("contact.created")).await;
    let second = tokio::time::timeout(Duration::from_secs(5), hand_off.next())
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    let mut tx = begin(&store).await;
    tx.insert_event(&account, &event("contact.created"))
        .await
        .unwrap();
    assert!(
        tx.claimable_work(),
        "a delivery left unleased must be claimed"
    );
    commit(tx).await;
    assert_eq!(deliveries(&store, &account, &ep.id).await.len(), 3);
    let dispatcher_claim = |n: u32| claim_request(&format!("node-a:{n}"), 2, 100, 60_000);
    assert!(
        claim(&store, &dispatcher_claim(2)).await.is_empty(),
        "claims keep to the slots the hand-offs took"
    );
    // The first attempt ends and is recorded: its slot goes to the waiting one.
    store
        .record_attempts(
            &[result_of(c, "node-a:h", Some(200), NextStep::Succeeded)],
            &policy(3600),
        )
        .await
        .unwrap();
    hand_off.release(&ep.id);
    let claimed = claim(&store, &dispatcher_claim(3)).await;
    assert_eq!(
        claimed.len(),
        1,
        "a freed slot goes to the waiting delivery"
    );
    assert_eq!(hand_off.free(), 1, "the claim took its slot");

    // The process dies before sending the other two: the next one to serve
    // the database hands their leases back at once, and claims them.
    drop(store);
    let store = notifly_server::open_store(&url).await.unwrap();
    assert_eq!(store.start_serving().await.unwrap(), 2);
    let again = claim(&store, &claim_all("node-b:0")).await;
    let expected = vec![
        second[0].0.delivery_id.clone(),
        claimed[0].delivery_id.clone(),
    ];
    assert_eq!(claimed_ids(&again), sorted(expected));
    let first = delivery(&store, &account, &c.delivery_id).await;
    assert_eq!(first.status, "succeeded");
}

/// Two nodes on one PostgreSQL database, an endpoint limited to 2 in flight.
/// Each node's writes lease their new deliveries and hand them to their own
/// dispatcher while the endpoint has a free slot; the limit holds across
/// the nodes and across hand-offs and claims; a rolled-back write frees its
/// slot; a recorded result frees it for the deliveries waiting; and a node
/// that stops hands its slots back with its leases.
#[tokio::test]
#[ignore = "needs PostgreSQL: run with NOTIFLY_TEST_POSTGRES_URL set and --include-ignored"]
async fn postgres_hand_off_keeps_an_endpoints_limit_across_nodes() {
    use notifly_server::store::HandOff;

    let db = Db::postgres().await;
    let a = db.store.clone();
    let b = notifly_server::open_store(&db.url).await.unwrap();
    let to_a = Arc::new(HandOff::new("node-a", 60_000, 2, 1, 100));
    let to_b = Arc::new(HandOff::new("node-b", 60_000, 2, 1, 100));
    assert!(a.hand_off(to_a.clone()).await);
    assert!(b.hand_off(to_b.clone()).await);
    let account = new_account(&a, "acme").await;
    let ep = add_endpoint(&a, &account, "main", &["*"], true).await;
    let next = |h: &Arc<HandOff>| {
        let h = h.clone();
        async move { tokio::time::timeout(Duration::from_millis(200), h.next()).await }
    };

    // Node A's write takes one slot and hands its delivery to A, once
    // committed, with no claim.
    let e = event("contact.created");
    let mut tx = begin(&a).await;
    assert_eq!(tx.insert_event(&account, &e).await.unwrap(), 1);
    assert!(!tx.claimable_work(), "a handed-off delivery needs no claim");
    assert!(next(&to_a).await.is_err(), "handed off before the commit");
    commit(tx).await;
    let ready = next(&to_a).await.expect("handed off after the commit");
    let (on_a, body) = &ready[0];
    assert_eq!(
        (
            on_a.endpoint_id.as_str(),
            on_a.event_id.as_str(),
            on_a.attempt
        ),
        (ep.id.as_str(), e.id.as_str(), 1)
    );
    assert_eq!(
        (on_a.url.as_str(), on_a.secret.as_str()),
        (ep.url.as_str(), ep.secret.as_str())
    );
    assert_eq!(body.as_ref(), e.body.as_bytes());
    assert_eq!(
        to_a.free(),
        99,
        "its slot here is taken until the attempt ends"
    );

    // A write on node B that is rolled back gives its slot back, here and
    // in the database.
    let mut tx = begin(&b).await;
    tx.insert_event(&account, &event("contact.created"))
        .await
        .unwrap();
    assert_eq!(to_b.free(), 99);
    drop(tx);
    assert_eq!(to_b.free(), 100);

    // B's next write takes the endpoint's second slot; the one after finds
    // none (A holds the other) and waits for a claim.
    emit_event(&b, &account, &event("contact.created")).await;
    let ready = next(&to_b).await.expect("the freed slot is taken again");
    let on_b = ready[0].0.clone();
    let mut tx = begin(&b).await;
    tx.insert_event(&account, &event("contact.created"))
        .await
        .unwrap();
    assert!(
        tx.claimable_work(),
        "a delivery left unleased must be claimed"
    );
    commit(tx).await;
    assert!(next(&to_b).await.is_err(), "over the limit: not handed off");
    assert_eq!(deliveries(&a, &account, &ep.id).await.len(), 3);
    for (store, owner) in [(&a, "node-a:1"), (&b, "node-b:1")] {
        assert!(
            claim(store, &claim_request(owner, 2, 100, 60_000))
                .await
                .is_empty(),
            "{owner}: two in flight across the nodes, the limit"
        );
    }

    // A's attempt is recorded: its slot is free, and B's claim takes the
    // delivery that waited.
    a.record_attempts(
        &[result_of(on_a, "node-a:h", Some(200), NextStep::Succeeded)],
        &policy(3600),
    )
    .await
    .unwrap();
    to_a.release(&ep.id);
    let claimed = claim(&b, &claim_request("node-b:2", 2, 100, 60_000)).await;
    assert_eq!(
        claimed.len(),
        1,
        "the freed slot goes to the waiting delivery"
    );
    assert!(
        claim(&a, &claim_request("node-a:2", 2, 100, 60_000))
            .await
            .is_empty()
    );

    // Node B stops without sending either: it hands back their leases and
    // slots, and node A takes both at once.
    assert_eq!(b.release_leases("node-b").await.unwrap(), 2);
    let again = claim(&a, &claim_request("node-a:3", 2, 100, 60_000)).await;
    assert_eq!(
        claimed_ids(&again),
        sorted(vec![on_b.delivery_id, claimed[0].delivery_id.clone()])
    );
    b.close().await;
    a.close().await;
}
