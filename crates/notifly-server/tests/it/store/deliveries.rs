//! Deliveries: the outbox's fan-out, attempts written back, retries and
//! recovery, deleting an endpoint, and the queue's figures.

use super::*;

conformance!(
    outbox_fan_out,
    content_filters_at_fan_out,
    endpoints_made_after_events_that_went_nowhere,
    attempts_move_deliveries_on,
    retry_and_recover,
    deleting_an_endpoint_cancels_its_work,
    next_due_and_queue_stats,
);

/// An endpoint with a content filter gets a delivery only of the events
/// that pass it; the others' fan-out is unchanged; a filter that does not
/// parse passes nothing; a disabled filtered endpoint gets nothing.
async fn content_filters_at_fan_out(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let plain = add_endpoint(&store, &a, "plain", &["*"], true).await;
    let mut only_r1 = endpoint("only-r1", &["contact.created"]);
    only_r1.filter = Some(json!({"payload": {"id": {"$in": ["r1", "r3"]}}}).to_string());
    let mut not_r1 = endpoint("not-r1", &["*"]);
    not_r1.filter = Some(json!({"$not": {"payload": {"id": "r1"}}}).to_string());
    let mut broken = endpoint("broken", &["*"]);
    broken.filter = Some("{not json".to_owned());
    let mut off = endpoint("off", &["*"]);
    off.filter = Some(json!({"payload": {"id": {"$exists": true}}}).to_string());
    off.enabled = false;
    for ep in [&only_r1, &not_r1, &broken, &off] {
        let mut tx = begin(&store).await;
        tx.insert_endpoint(&a, ep).await.unwrap();
        commit(tx).await;
    }
    let r1 = about("contact.created", ids::now(), "r1");
    let r2 = about("contact.created", ids::now(), "r2");
    let r3 = about("contact.updated", ids::now(), "r3");
    assert_eq!(emit_event(&store, &a, &r1).await, 2, "plain, only-r1");
    assert_eq!(emit_event(&store, &a, &r2).await, 2, "plain, not-r1");
    assert_eq!(
        emit_event(&store, &a, &r3).await,
        2,
        "plain, not-r1 (only-r1 is not subscribed)"
    );
    let events_of = |ds: Vec<DeliveryRecord>| sorted(ds.into_iter().map(|d| d.event_id).collect());
    assert_eq!(
        events_of(deliveries(&store, &a, &plain.id).await),
        sorted(vec![r1.id.clone(), r2.id.clone(), r3.id.clone()])
    );
    assert_eq!(
        events_of(deliveries(&store, &a, &only_r1.id).await),
        vec![r1.id.clone()]
    );
    assert_eq!(
        events_of(deliveries(&store, &a, &not_r1.id).await),
        sorted(vec![r2.id.clone(), r3.id.clone()])
    );
    assert!(deliveries(&store, &a, &broken.id).await.is_empty());
    assert!(deliveries(&store, &a, &off.id).await.is_empty());
    // Every delivery made is claimable, filtered or not.
    let claimed = claim(&store, &claim_all("node-a:1")).await;
    assert_eq!(claimed.len(), 6);
}

/// An account whose events went to no endpoint (PostgreSQL then writes
/// them alone, without the fan-out's plan) still fans out to an endpoint
/// made later, filtered or not, from its next event on; the deliveries are
/// claimable.
async fn endpoints_made_after_events_that_went_nowhere(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    for _ in 0..2 {
        assert_eq!(emit_event(&store, &a, &event("contact.created")).await, 0);
    }
    let late = add_endpoint(&store, &a, "late", &["contact.created"], true).await;
    let mut picky = endpoint("picky", &["*"]);
    picky.filter = Some(json!({"payload": {"id": "r2"}}).to_string());
    let mut tx = begin(&store).await;
    tx.insert_endpoint(&a, &picky).await.unwrap();
    commit(tx).await;
    let r1 = about("contact.created", ids::now(), "r1");
    let r2 = about("contact.created", ids::now(), "r2");
    let r3 = about("contact.created", ids::now(), "r3");
    assert_eq!(emit_event(&store, &a, &r1).await, 1, "late");
    assert_eq!(emit_event(&store, &a, &r2).await, 2, "late, picky");
    assert_eq!(emit_event(&store, &a, &r3).await, 1, "late");
    let events_of = |ds: Vec<DeliveryRecord>| sorted(ds.into_iter().map(|d| d.event_id).collect());
    assert_eq!(
        events_of(deliveries(&store, &a, &late.id).await),
        sorted(vec![r1.id.clone(), r2.id.clone(), r3.id.clone()])
    );
    assert_eq!(
        events_of(deliveries(&store, &a, &picky.id).await),
        vec![r2.id.clone()]
    );
    assert_eq!(claim(&store, &claim_all("node-a:1")).await.len(), 4);

    // An account whose only endpoint, made later, has a filter.
    let b = new_account(&store, "globex").await;
    assert_eq!(emit_event(&store, &b, &event("contact.created")).await, 0);
    let mut theirs = endpoint("picky-too", &["*"]);
    theirs.filter = picky.filter.clone();
    let mut tx = begin(&store).await;
    tx.insert_endpoint(&b, &theirs).await.unwrap();
    commit(tx).await;
    // The first event after it (written alone on PostgreSQL) passes the
    // filter; later ones go through the full fan-out.
    for _ in 0..2 {
        let hit = about("contact.created", ids::now(), "r2");
        let miss = about("contact.created", ids::now(), "r1");
        assert_eq!(emit_event(&store, &b, &hit).await, 1);
        assert_eq!(emit_event(&store, &b, &miss).await, 0);
    }
    assert_eq!(deliveries(&store, &b, &theirs.id).await.len(), 2);
}

async fn outbox_fan_out(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    let contacts_ep = add_endpoint(
        &store,
        &a,
        "contacts",
        &["contact.created", "contact.deleted"],
        true,
    )
    .await;
    let all = add_endpoint(&store, &a, "all", &["*"], true).await;
    let mut disabled = add_endpoint(&store, &a, "disabled", &["*"], false).await;
    let groups_ep = add_endpoint(&store, &a, "groups", &["group.created"], true).await;
    let theirs = add_endpoint(&store, &b, "theirs", &["*"], true).await;

    let e = event("contact.created");
    assert_eq!(emit_event(&store, &a, &e).await, 2);
    for (ep, n) in [
        (&contacts_ep, 1),
        (&all, 1),
        (&disabled, 0),
        (&groups_ep, 0),
    ] {
        let ds = deliveries(&store, &a, &ep.id).await;
        assert_eq!(ds.len(), n, "deliveries to {}", ep.name);
        for d in ds {
            assert_eq!(d.event_id, e.id);
            assert_eq!(d.event_type, "contact.created");
            assert_eq!(d.status, "pending");
            assert_eq!(d.attempts, 0);
            assert!(
                d.next_attempt_ms.is_some_and(|t| t <= ids::now_ms()),
                "due now: {d:?}"
            );
            assert_eq!(d.last_attempt_at, None);
            assert_eq!(d.last_status_code, None);
            assert_eq!(d.created_at, e.created_at);
        }
    }
    assert!(deliveries(&store, &b, &theirs.id).await.is_empty());

    assert_eq!(emit_event(&store, &a, &event("group.created")).await, 2);
    assert_eq!(emit_event(&store, &a, &event("message.created")).await, 1);
    assert_eq!(deliveries(&store, &a, &groups_ep.id).await.len(), 1);
    assert_eq!(deliveries(&store, &a, &all.id).await.len(), 3);

    // A changed subscription and a re-enabled endpoint apply to later events.
    let mut narrowed = contacts_ep.clone();
    narrowed.events = Json(vec!["message.created".to_owned()]);
    disabled.enabled = true;
    disabled.disabled_reason = None;
    disabled.events = Json(vec!["contact.created".to_owned()]);
    let mut tx = begin(&store).await;
    tx.update_endpoint(&a, &narrowed).await.unwrap();
    tx.update_endpoint(&a, &disabled).await.unwrap();
    commit(tx).await;
    assert_eq!(
        emit_event(&store, &a, &event("contact.created")).await,
        2,
        "all + re-enabled"
    );
    assert_eq!(deliveries(&store, &a, &contacts_ep.id).await.len(), 1);
    assert_eq!(deliveries(&store, &a, &disabled.id).await.len(), 1);
    assert_eq!(
        emit_event(&store, &a, &event("message.created")).await,
        2,
        "all + narrowed"
    );

    // A test event goes to its one endpoint, subscribed or not, even disabled.
    let mut off = groups_ep.clone();
    off.enabled = false;
    let mut tx = begin(&store).await;
    tx.update_endpoint(&a, &off).await.unwrap();
    commit(tx).await;
    let before_all = deliveries(&store, &a, &all.id).await.len();
    let test = event("webhook.test");
    let mut tx = begin(&store).await;
    let id = tx
        .insert_event_for_endpoint(&a, &test, &groups_ep.id)
        .await
        .unwrap();
    commit(tx).await;
    let d = delivery(&store, &a, &id).await;
    assert_eq!(
        (
            d.endpoint_id.as_str(),
            d.event_id.as_str(),
            d.status.as_str()
        ),
        (groups_ep.id.as_str(), test.id.as_str(), "pending")
    );
    assert_eq!(deliveries(&store, &a, &groups_ep.id).await.len(), 2);
    assert_eq!(deliveries(&store, &a, &all.id).await.len(), before_all);
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.delivered_event(&a, &test.id).await.unwrap().as_ref(),
        Some(&test),
        "its delivery finds it"
    );
    // It is no part of the account's log, nor a position in it.
    assert_eq!(conn.event(&a, &test.id).await.unwrap(), None);
    let listed = conn.list_events(&a, None, &page(100)).await.unwrap();
    assert!(
        listed.items.iter().all(|e| e.id != test.id),
        "the log lists no test event"
    );
    let streamed = conn.events_after(&a, None, 1000).await.unwrap();
    assert!(streamed.iter().all(|e| e.id != test.id));
    assert_ne!(
        conn.latest_event_id(&a).await.unwrap().as_deref(),
        Some(test.id.as_str())
    );
    assert!(matches!(
        conn.events_after(&a, Some(&test.id), 10).await,
        Err(StoreError::UnknownCursor)
    ));
    drop(conn);

    // A test event to an endpoint that does not exist writes nothing.
    let ghost = event("webhook.test");
    let mut tx = begin(&store).await;
    assert!(
        tx.insert_event_for_endpoint(&a, &ghost, "ZZZZZZZZZZZZZZZZ")
            .await
            .is_err(),
        "a test event to no endpoint"
    );
    drop(tx);
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.event(&a, &ghost.id).await.unwrap(), None);
    drop(conn);
    assert!(deliveries(&store, &b, &theirs.id).await.is_empty());
}

async fn attempts_move_deliveries_on(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let ep = add_endpoint(&store, &a, "all", &["*"], true).await;
    emit_events(&store, &a, "contact.created", 3).await;
    let claimed = claim(&store, &claim_all("node-a:1")).await;
    assert_eq!(claimed.len(), 3);
    let (ok, retry, failed) = (&claimed[0], &claimed[1], &claimed[2]);

    let retry_at = ids::now_ms() + 200;
    let results = [
        result_of(ok, "node-a:1", Some(200), NextStep::Succeeded),
        result_of(
            retry,
            "node-a:1",
            None,
            NextStep::Retry {
                at_ms: retry_at,
                schedule_pos: 1,
            },
        ),
        result_of(failed, "node-a:1", Some(500), NextStep::Failed),
    ];
    store.record_attempts(&results, &POLICY).await.unwrap();

    let expect = [
        (ok, "succeeded", None, Some(200)),
        (retry, "pending", Some(retry_at), None),
        (failed, "failed", None, Some(500)),
    ];
    let mut conn = store.read().await.unwrap();
    for ((c, status, next, code), r) in expect.iter().zip(&results) {
        let d = conn.delivery(&a, &c.delivery_id).await.unwrap().unwrap();
        assert_eq!(d.status, *status, "{}", c.delivery_id);
        assert_eq!(d.attempts, 1);
        assert_eq!(d.next_attempt_ms, *next);
        assert_eq!(d.last_status_code, *code);
        assert_eq!(d.last_attempt_at, Some(r.attempt.started_at_ms / 1000));
        assert_eq!(d.endpoint_id, ep.id);
        assert_eq!(
            conn.attempts(&a, &c.delivery_id).await.unwrap(),
            std::slice::from_ref(&r.attempt)
        );
    }
    drop(conn);

    // The retry is due at its time, as attempt 2 at its schedule position.
    let deadline = Instant::now() + DEADLINE;
    let again = loop {
        let got = claim(&store, &claim_all("node-a:2")).await;
        if !got.is_empty() {
            break got;
        }
        assert!(Instant::now() < deadline, "the retry never came due");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(ids::now_ms() >= retry_at);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery_id, retry.delivery_id);
    assert_eq!((again[0].attempt, again[0].schedule_pos), (2, 1));
    let second = result_of(&again[0], "node-a:2", Some(204), NextStep::Succeeded);
    store
        .record_attempts(std::slice::from_ref(&second), &POLICY)
        .await
        .unwrap();
    let d = delivery(&store, &a, &retry.delivery_id).await;
    assert_eq!(
        (d.status.as_str(), d.attempts, d.next_attempt_ms),
        ("succeeded", 2, None)
    );
    let mut conn = store.read().await.unwrap();
    let log = conn.attempts(&a, &retry.delivery_id).await.unwrap();
    assert_eq!(
        log,
        [results[1].attempt.clone(), second.attempt],
        "oldest first"
    );
    drop(conn);

    // A finished delivery is not moved by a result that arrives for it again.
    store
        .record_attempts(
            &[result_of(ok, "node-a:1", Some(500), NextStep::Failed)],
            &POLICY,
        )
        .await
        .unwrap();
    assert_eq!(
        delivery(&store, &a, &ok.delivery_id).await.status,
        "succeeded"
    );
    assert!(claim(&store, &claim_all("node-a:3")).await.is_empty());
}

async fn retry_and_recover(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let ep = add_endpoint(&store, &a, "all", &["*"], true).await;
    let other = add_endpoint(&store, &a, "other", &["group.created"], true).await;
    // Two old deliveries and two recent ones, all failed after a few tries;
    // one succeeded; one on another endpoint.
    let old = ids::now() - 1000;
    let old_events = [
        event_at("contact.created", old),
        event_at("contact.created", old),
    ];
    for e in &old_events {
        emit_event(&store, &a, e).await;
    }
    emit_events(&store, &a, "contact.updated", 3).await;
    emit_events(&store, &a, "group.created", 1).await;
    let claimed = claim(&store, &claim_all("node-a:1")).await;
    assert_eq!(claimed.len(), 7);
    let mut results = Vec::new();
    let mut succeeded = None;
    for c in &claimed {
        if succeeded.is_none() && c.event_type == "contact.updated" && c.endpoint_id == ep.id {
            succeeded = Some(c.delivery_id.clone());
            results.push(result_of(c, "node-a:1", Some(200), NextStep::Succeeded));
        } else {
            let mut r = result_of(c, "node-a:1", Some(500), NextStep::Failed);
            r.attempt.attempt = 8;
            results.push(r);
        }
    }
    let succeeded = succeeded.unwrap();
    store.record_attempts(&results, &POLICY).await.unwrap();

    // A manual retry: pending, due now, schedule restarted; attempts count on.
    let failed_one = claimed
        .iter()
        .find(|c| c.endpoint_id == ep.id && c.event_id == old_events[0].id)
        .unwrap();
    let now_ms = ids::now_ms();
    let mut tx = begin(&store).await;
    assert!(
        tx.retry_delivery(&a, &failed_one.delivery_id, now_ms)
            .await
            .unwrap()
    );
    assert!(
        !tx.retry_delivery(&a, "ZZZZZZZZZZZZZZZZ", now_ms)
            .await
            .unwrap()
    );
    commit(tx).await;
    let d = delivery(&store, &a, &failed_one.delivery_id).await;
    assert_eq!(
        (
            d.status.as_str(),
            d.next_attempt_ms,
            d.attempts,
            d.updated_at
        ),
        ("pending", Some(now_ms), 8, now_ms / 1000)
    );
    let got = claim(&store, &claim_all("node-a:2")).await;
    assert_eq!(
        claimed_ids(&got),
        std::slice::from_ref(&failed_one.delivery_id)
    );
    assert_eq!((got[0].attempt, got[0].schedule_pos), (9, 0));

    // Not while an attempt is in flight.
    let mut tx = begin(&store).await;
    assert!(
        !tx.retry_delivery(&a, &failed_one.delivery_id, ids::now_ms())
            .await
            .unwrap()
    );
    commit(tx).await;
    store
        .record_attempts(
            &[result_of(&got[0], "node-a:2", Some(500), NextStep::Failed)],
            &POLICY,
        )
        .await
        .unwrap();

    // Recovery: the endpoint's failed deliveries created since a time.
    let mut tx = begin(&store).await;
    let now_ms = ids::now_ms();
    let recovered = tx
        .recover_deliveries(&a, &ep.id, old + 1, now_ms)
        .await
        .unwrap();
    commit(tx).await;
    assert_eq!(
        recovered, 3,
        "the recent failed ones (not the succeeded, not the old)"
    );
    let mut pending = Vec::new();
    for d in deliveries(&store, &a, &ep.id).await {
        if d.created_at > old {
            let want = if d.id == succeeded {
                "succeeded"
            } else {
                "pending"
            };
            assert_eq!(d.status, want);
        } else {
            assert_eq!(d.status, "failed");
        }
        if d.status == "pending" {
            assert_eq!(d.next_attempt_ms, Some(now_ms));
            pending.push(d.id);
        }
    }
    assert_eq!(deliveries(&store, &a, &other.id).await[0].status, "failed");
    let got = claim(&store, &claim_all("node-a:3")).await;
    assert_eq!(claimed_ids(&got), sorted(pending));
    assert!(got.iter().all(|c| c.schedule_pos == 0));

    // Everything since the beginning (the in-flight ones are not failed).
    let mut tx = begin(&store).await;
    assert_eq!(
        tx.recover_deliveries(&a, &ep.id, 0, ids::now_ms())
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        tx.recover_deliveries(&a, &ep.id, 0, ids::now_ms())
            .await
            .unwrap(),
        0
    );
    commit(tx).await;
}

async fn deleting_an_endpoint_cancels_its_work(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let doomed = add_endpoint(&store, &a, "doomed", &["*"], true).await;
    let kept = add_endpoint(&store, &a, "kept", &["*"], true).await;
    emit_events(&store, &a, "contact.created", 1).await;
    let claimed = claim(&store, &claim_all("node-a:1")).await;
    let done = claimed.iter().find(|c| c.endpoint_id == doomed.id).unwrap();
    store
        .record_attempts(
            &[result_of(done, "node-a:1", Some(200), NextStep::Succeeded)],
            &POLICY,
        )
        .await
        .unwrap();
    emit_events(&store, &a, "contact.created", 1).await;
    let in_flight = claim(&store, &claim_request("node-a:2", 100, 1, 60_000)).await;
    assert_eq!(in_flight.len(), 1);
    emit_events(&store, &a, "contact.created", 1).await;

    let mut tx = begin(&store).await;
    tx.delete_endpoint(&a, &doomed.id).await.unwrap();
    commit(tx).await;
    assert_eq!(read_endpoint(&store, &a, &doomed.id).await, None);

    for d in deliveries(&store, &a, &doomed.id).await {
        if d.id == done.delivery_id {
            assert_eq!(d.status, "succeeded");
        } else {
            assert_eq!(
                (d.status.as_str(), d.next_attempt_ms),
                ("cancelled", None),
                "{d:?}"
            );
        }
    }
    // An attempt in flight when it was deleted does not revive its delivery.
    if in_flight[0].endpoint_id == doomed.id {
        store
            .record_attempts(
                &[result_of(
                    &in_flight[0],
                    "node-a:2",
                    Some(500),
                    NextStep::Retry {
                        at_ms: ids::now_ms(),
                        schedule_pos: 1,
                    },
                )],
                &POLICY,
            )
            .await
            .unwrap();
        assert_eq!(
            delivery(&store, &a, &in_flight[0].delivery_id).await.status,
            "cancelled"
        );
    }
    // Only the kept endpoint's work is claimable, and later events skip it.
    let got = claim(&store, &claim_all("node-a:3")).await;
    assert!(got.iter().all(|c| c.endpoint_id == kept.id), "{got:?}");
    assert_eq!(emit_event(&store, &a, &event("contact.created")).await, 1);
    let mut tx = begin(&store).await;
    assert!(
        tx.insert_event_for_endpoint(&a, &event("webhook.test"), &doomed.id)
            .await
            .is_err(),
        "a test event to a deleted endpoint"
    );
    drop(tx);
    let stats = store.queue_stats(ids::now_ms()).await.unwrap();
    let pending_kept = deliveries(&store, &a, &kept.id)
        .await
        .iter()
        .filter(|d| d.status == "pending")
        .count() as i64;
    assert_eq!(
        stats.pending, pending_kept,
        "no pending work left for the deleted endpoint"
    );
}

async fn next_due_and_queue_stats(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    assert_eq!(store.next_due_ms().await.unwrap(), None);
    let stats = store.queue_stats(ids::now_ms()).await.unwrap();
    assert_eq!(
        (
            stats.pending,
            stats.due,
            stats.in_flight,
            stats.disabled_endpoints
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(stats.oldest_due_ms, None, "nothing is due");

    let ep = add_endpoint(&store, &a, "all", &["*"], true).await;
    let start = ids::now_ms();
    emit_events(&store, &a, "contact.created", 3).await;
    let due = store.next_due_ms().await.unwrap().expect("due work");
    assert!(
        due >= start && due <= ids::now_ms(),
        "{due} not in [{start}, now]"
    );
    let stats = store.queue_stats(ids::now_ms()).await.unwrap();
    assert_eq!((stats.pending, stats.due, stats.in_flight), (3, 3, 0));
    let oldest = stats.oldest_due_ms.expect("due work");
    assert!(
        oldest >= start && oldest <= due,
        "the oldest due {oldest} is the first due {due} or earlier"
    );
    // Not yet due at an earlier time.
    let stats = store.queue_stats(start - 1).await.unwrap();
    assert_eq!((stats.pending, stats.due, stats.in_flight), (3, 0, 0));
    assert_eq!(stats.oldest_due_ms, None);

    // Leased: in flight, and next due when the lease runs out.
    let before_claim = ids::now_ms();
    let claimed = claim(&store, &claim_request("node-a:1", 10, 2, 60_000)).await;
    assert_eq!(claimed.len(), 2);
    let stats = store.queue_stats(ids::now_ms()).await.unwrap();
    assert_eq!((stats.pending, stats.due, stats.in_flight), (3, 1, 2));
    // The leased ones aside, the one left is the oldest due.
    assert!(stats.oldest_due_ms.is_some_and(|at| at >= oldest));
    // After the leases would have run out they count as due again.
    let stats = store.queue_stats(ids::now_ms() + 120_000).await.unwrap();
    assert_eq!((stats.pending, stats.due, stats.in_flight), (3, 3, 0));
    let rest = claim(&store, &claim_all("node-a:2")).await;
    assert_eq!(rest.len(), 1);
    let due = store.next_due_ms().await.unwrap().expect("a lease ends");
    assert!(
        due >= before_claim + 60_000 && due <= ids::now_ms() + 60_000,
        "the first lease's end, got {due}"
    );

    // Scheduled retries: the earliest.
    let later = ids::now_ms() + 3_600_000;
    let soon = ids::now_ms() + 600_000;
    let mut results = Vec::new();
    for (c, at) in claimed.iter().zip([later, soon]) {
        results.push(result_of(
            c,
            "node-a:1",
            Some(503),
            NextStep::Retry {
                at_ms: at,
                schedule_pos: 1,
            },
        ));
    }
    results.push(result_of(
        &rest[0],
        "node-a:2",
        Some(200),
        NextStep::Succeeded,
    ));
    store.record_attempts(&results, &POLICY).await.unwrap();
    assert_eq!(store.next_due_ms().await.unwrap(), Some(soon));
    let stats = store.queue_stats(ids::now_ms()).await.unwrap();
    assert_eq!((stats.pending, stats.due, stats.in_flight), (2, 0, 0));
    assert_eq!(stats.oldest_due_ms, None, "retries not due yet");
    let stats = store.queue_stats(soon).await.unwrap();
    assert_eq!(stats.due, 1);
    assert_eq!(stats.oldest_due_ms, Some(soon));

    // A disabled endpoint's work is not due; the endpoint is counted.
    let mut off = read_endpoint(&store, &a, &ep.id).await.unwrap();
    off.enabled = false;
    off.disabled_reason = Some("disabled by hand".to_owned());
    let mut tx = begin(&store).await;
    tx.update_endpoint(&a, &off).await.unwrap();
    commit(tx).await;
    assert_eq!(store.next_due_ms().await.unwrap(), None);
    let stats = store.queue_stats(ids::now_ms()).await.unwrap();
    assert_eq!((stats.pending, stats.disabled_endpoints), (2, 1));
    let stats = store.queue_stats(later).await.unwrap();
    assert_eq!(
        stats.oldest_due_ms, None,
        "a disabled endpoint's work is not behind"
    );
}
