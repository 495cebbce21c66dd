//! Replays at the store: a replay is written and read back, its progress
//! moves only from the cursor it was read at (so two nodes cannot both take
//! one step), it ends once, and the replayer's look-ups (the event before a
//! time, an endpoint's pending deliveries, replays in progress) agree.

use super::*;

conformance!(
    replays_round_trip_and_move_on_only_from_where_they_were,
    the_replayers_look_ups,
);

fn replay_of(account: &str, endpoint: &str, since: i64, until: i64) -> ReplayRecord {
    ReplayRecord {
        id: ids::new_id(),
        account_id: account.to_owned(),
        endpoint_id: endpoint.to_owned(),
        since,
        until,
        status: "queued".to_owned(),
        total: 3,
        sent: 0,
        cursor: None,
        cursor_at: None,
        last_event: Some("evt-9".to_owned()),
        created_at: ids::now(),
        updated_at: ids::now(),
    }
}

async fn replays_round_trip_and_move_on_only_from_where_they_were(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    let ep = add_endpoint(&store, &a, "late", &["*"], true).await;
    let r = replay_of(&a, &ep.id, 100, 200);
    let mut tx = begin(&store).await;
    tx.insert_replay(&a, &r).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.replay(&a, &r.id).await.unwrap().as_ref(), Some(&r));
    assert_eq!(conn.replay(&b, &r.id).await.unwrap(), None);
    assert_eq!(
        conn.replays_of(&a, &ep.id, 10).await.unwrap(),
        std::slice::from_ref(&r)
    );
    assert!(conn.replays_of(&b, &ep.id, 10).await.unwrap().is_empty());
    drop(conn);

    // A step moves it from where it was read, once.
    let mut step = r.clone();
    step.status = "running".to_owned();
    step.sent = 2;
    step.cursor = Some("evt-2".to_owned());
    step.cursor_at = Some(150);
    let mut tx = begin(&store).await;
    assert!(tx.advance_replay(&a, &step, None).await.unwrap());
    commit(tx).await;
    let mut tx = begin(&store).await;
    assert!(
        !tx.advance_replay(&a, &step, None).await.unwrap(),
        "a second step from the same place"
    );
    assert!(!tx.advance_replay(&b, &step, Some("evt-2")).await.unwrap());
    drop(tx);
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.replay(&a, &r.id).await.unwrap().as_ref(), Some(&step));
    drop(conn);

    // It ends once; an ended one moves no more.
    let mut tx = begin(&store).await;
    assert!(tx.end_replay(&a, &r.id, "cancelled", 300).await.unwrap());
    assert!(!tx.end_replay(&a, &r.id, "failed", 301).await.unwrap());
    let mut more = step.clone();
    more.cursor = Some("evt-3".to_owned());
    assert!(!tx.advance_replay(&a, &more, Some("evt-2")).await.unwrap());
    commit(tx).await;
    let got = store
        .read()
        .await
        .unwrap()
        .replay(&a, &r.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.status.as_str(), got.updated_at, got.sent),
        ("cancelled", 300, 2)
    );
}

async fn the_replayers_look_ups(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let ep = add_endpoint(&store, &a, "late", &["*"], true).await;
    // The log: events at 100, 200 and 300 (a test event at 250 is not in it).
    let mut at = Vec::new();
    for t in [100, 200, 300] {
        let e = event_at("contact.created", t);
        emit_event(&store, &a, &e).await;
        at.push(e.id);
    }
    let mut tx = begin(&store).await;
    tx.insert_event_for_endpoint(&a, &event_at("contact.created", 250), &ep.id)
        .await
        .unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.event_before(&a, 100).await.unwrap(), None);
    assert_eq!(
        conn.event_before(&a, 101).await.unwrap().as_ref(),
        Some(&at[0])
    );
    assert_eq!(
        conn.event_before(&a, 300).await.unwrap().as_ref(),
        Some(&at[1])
    );
    assert_eq!(
        conn.event_before(&a, 10_000).await.unwrap().as_ref(),
        Some(&at[2])
    );
    // Three fanned-out deliveries and the test event's, all pending.
    assert_eq!(conn.pending_deliveries(&ep.id, 100).await.unwrap(), 4);
    assert_eq!(conn.pending_deliveries(&ep.id, 2).await.unwrap(), 2);
    drop(conn);

    // A replayed delivery is a delivery of the logged event, for a claim.
    let mut e = event_at("contact.created", 100);
    e.id = at[0].clone();
    let mut tx = begin(&store).await;
    let id = tx.insert_replayed_delivery(&a, &e, &ep.id).await.unwrap();
    assert!(tx.claimable_work());
    commit(tx).await;
    let d = delivery(&store, &a, &id).await;
    assert_eq!(
        (d.event_id.as_str(), d.status.as_str()),
        (at[0].as_str(), "pending")
    );

    // In progress: queued and running ones, least recently moved first.
    let mut older = replay_of(&a, &ep.id, 0, 1);
    older.updated_at = 10;
    let mut running = replay_of(&a, &ep.id, 0, 1);
    running.status = "running".to_owned();
    running.updated_at = 20;
    let mut done = replay_of(&a, &ep.id, 0, 1);
    done.status = "completed".to_owned();
    let mut tx = begin(&store).await;
    for r in [&running, &done, &older] {
        tx.insert_replay(&a, r).await.unwrap();
    }
    commit(tx).await;
    let active: Vec<String> = store
        .read()
        .await
        .unwrap()
        .active_replays(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(active, [older.id, running.id]);
}
