//! The event log, the outbox's all-or-nothing commit, concurrent writes of
//! one account, and idempotency keys.

use super::*;

conformance!(
    idempotency_keys,
    outbox_rollback_and_commit,
    events_log,
    events_log_in_order_of_commit,
    concurrent_writes_of_one_account,
);

async fn idempotency_keys(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    let first = idempotent(201, r#"{"id":"WAz8eIbvDR60rouK"}"#);
    let mut tx = begin(&store).await;
    assert_eq!(tx.idempotent_response(&a, "key-1").await.unwrap(), None);
    tx.insert_idempotent_response(&a, "key-1", &first)
        .await
        .unwrap();
    assert_eq!(
        tx.idempotent_response(&a, "key-1").await.unwrap().as_ref(),
        Some(&first)
    );
    commit(tx).await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.idempotent_response(&a, "key-1")
            .await
            .unwrap()
            .as_ref(),
        Some(&first)
    );
    assert_eq!(conn.idempotent_response(&a, "key-2").await.unwrap(), None);
    assert_eq!(conn.idempotent_response(&b, "key-1").await.unwrap(), None);
    drop(conn);

    // The same key again, in a later write: a conflict, and the first stays.
    let mut tx = begin(&store).await;
    assert_conflict(
        tx.insert_idempotent_response(&a, "key-1", &idempotent(409, "{}"))
            .await,
        "idempotency key",
    );
    drop(tx);
    // Twice in one write: the same.
    let mut tx = begin(&store).await;
    tx.insert_idempotent_response(&a, "key-2", &first)
        .await
        .unwrap();
    assert_conflict(
        tx.insert_idempotent_response(&a, "key-2", &first).await,
        "idempotency key",
    );
    drop(tx);
    // Keys are per account.
    let theirs = idempotent(200, "[]");
    let mut tx = begin(&store).await;
    tx.insert_idempotent_response(&b, "key-1", &theirs)
        .await
        .unwrap();
    commit(tx).await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.idempotent_response(&a, "key-1")
            .await
            .unwrap()
            .as_ref(),
        Some(&first)
    );
    assert_eq!(conn.idempotent_response(&a, "key-2").await.unwrap(), None);
    assert_eq!(
        conn.idempotent_response(&b, "key-1")
            .await
            .unwrap()
            .as_ref(),
        Some(&theirs)
    );
}

async fn outbox_rollback_and_commit(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let ep = add_endpoint(&store, &a, "all", &["*"], true).await;

    // Dropped without commit: neither the change nor its event nor a delivery.
    let kevin = contact("kevin");
    let created = event("contact.created");
    let mut tx = begin(&store).await;
    tx.insert_contact(&a, &kevin).await.unwrap();
    assert_eq!(tx.insert_event(&a, &created).await.unwrap(), 1);
    // The transaction sees its own writes.
    assert!(tx.contact(&a, &kevin.id).await.unwrap().is_some());
    assert_eq!(
        tx.event(&a, &created.id).await.unwrap().as_ref(),
        Some(&created)
    );
    assert_eq!(
        tx.latest_event_id(&a).await.unwrap(),
        Some(created.id.clone())
    );
    assert_eq!(
        tx.list_deliveries(&a, &ep.id, None, &page(10))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    drop(tx);
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.contact(&a, &kevin.id).await.unwrap(), None);
    assert_eq!(conn.event(&a, &created.id).await.unwrap(), None);
    assert_eq!(conn.latest_event_id(&a).await.unwrap(), None);
    assert!(
        conn.list_events(&a, None, &page(10))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    drop(conn);
    assert!(deliveries(&store, &a, &ep.id).await.is_empty());
    assert!(claim(&store, &claim_all("node-a:1")).await.is_empty());

    // A write that fails half-way and is dropped keeps nothing either.
    let mut tx = begin(&store).await;
    tx.insert_contact(&a, &kevin).await.unwrap();
    tx.insert_event(&a, &created).await.unwrap();
    assert_conflict(tx.insert_contact(&a, &contact("kevin")).await, "username");
    drop(tx);
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.contact(&a, &kevin.id).await.unwrap(), None);
    assert_eq!(conn.event(&a, &created.id).await.unwrap(), None);
    drop(conn);
    assert!(deliveries(&store, &a, &ep.id).await.is_empty());

    // Committed: the change, its event and its delivery, all at once.
    let mut tx = begin(&store).await;
    tx.insert_contact(&a, &kevin).await.unwrap();
    tx.insert_event(&a, &created).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.contact(&a, &kevin.id).await.unwrap().as_ref(),
        Some(&kevin)
    );
    assert_eq!(
        conn.event(&a, &created.id).await.unwrap().as_ref(),
        Some(&created)
    );
    drop(conn);
    let ds = deliveries(&store, &a, &ep.id).await;
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].event_id, created.id);

    // The next write after a rollback is unaffected by it.
    let marv = contact("marv");
    let mut tx = begin(&store).await;
    tx.insert_contact(&a, &marv).await.unwrap();
    drop(tx);
    let harry = contact("harry");
    let mut tx = begin(&store).await;
    tx.insert_contact(&a, &harry).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.contact(&a, &marv.id).await.unwrap(), None);
    assert!(conn.contact(&a, &harry.id).await.unwrap().is_some());
}

async fn events_log(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.latest_event_id(&a).await.unwrap(), None);
    assert!(conn.events_after(&a, None, 10).await.unwrap().is_empty());
    drop(conn);

    let types = [
        "contact.created",
        "conversation.created",
        "contact.updated",
        "message.created",
        "contact.created",
    ];
    let mut log = Vec::new();
    for t in types {
        let e = event(t);
        let mut tx = begin(&store).await;
        tx.insert_event(&a, &e).await.unwrap();
        commit(tx).await;
        log.push(e);
    }

    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.event(&a, &log[2].id).await.unwrap().as_ref(),
        Some(&log[2])
    );
    assert_eq!(
        conn.latest_event_id(&a).await.unwrap(),
        Some(log[4].id.clone())
    );
    assert_eq!(
        conn.events_after(&a, None, 10).await.unwrap(),
        log,
        "oldest first"
    );
    assert_eq!(conn.events_after(&a, None, 2).await.unwrap(), log[..2]);
    assert_eq!(
        conn.events_after(&a, Some(&log[1].id), 2).await.unwrap(),
        log[2..4]
    );
    assert!(
        conn.events_after(&a, Some(&log[4].id), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_unknown_cursor(
        conn.events_after(&a, Some("ZZZZZZZZZZZZZZZZ"), 10).await,
        "events_after",
    );

    let created = conn
        .list_events(&a, Some("contact.created"), &page(10))
        .await
        .unwrap();
    assert_eq!(
        created.items,
        [log[4].clone(), log[0].clone()],
        "newest first"
    );
    let none = conn
        .list_events(&a, Some("group.deleted"), &page(10))
        .await
        .unwrap();
    assert!(none.items.is_empty() && !none.has_more);
    let all = conn.list_events(&a, None, &page(10)).await.unwrap();
    let mut newest_first = log.clone();
    newest_first.reverse();
    assert_eq!(all.items, newest_first);
    drop(conn);

    // Several events in one write keep their order.
    let (x, y) = (event("group.created"), event("group.updated"));
    let mut tx = begin(&store).await;
    tx.insert_event(&a, &x).await.unwrap();
    tx.insert_event(&a, &y).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.events_after(&a, Some(&log[4].id), 10).await.unwrap(),
        [x, y.clone()]
    );
    assert_eq!(conn.latest_event_id(&a).await.unwrap(), Some(y.id));
}

/// The log's guarantee with writers that overlap: a reader never passes an
/// event whose transaction is still to commit. Write `a` starts first and
/// commits last; write `b` starts after it and commits first (where the
/// store lets two writes overlap; SQLite's writes run one at a time, so `b`
/// waits for `a`). Until `a` commits, a reader sees neither; then both, in
/// the order the writes started, each once from any position already read.
async fn events_log_in_order_of_commit(store: Arc<dyn Store>) {
    let acct = new_account(&store, "acme").await;
    let earlier = event("contact.created");
    emit_event(&store, &acct, &earlier).await;

    let a = event("contact.created");
    let mut first = begin(&store).await;
    first.insert_event(&acct, &a).await.unwrap();

    let b = event("contact.updated");
    let second = tokio::spawn({
        let (store, acct, b) = (store.clone(), acct.clone(), b.clone());
        async move {
            let mut tx = begin(&store).await;
            tx.insert_event(&acct, &b).await.unwrap();
            commit(tx).await;
        }
    });
    // Where writes overlap, `b` is committed by now.
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while !second.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.events_after(&acct, None, 10).await.unwrap(),
        std::slice::from_ref(&earlier),
        "an event committed while an earlier write is in flight is not readable yet"
    );
    assert_eq!(
        conn.latest_event_id(&acct).await.unwrap().as_deref(),
        Some(earlier.id.as_str())
    );
    let listed = conn.list_events(&acct, None, &page(10)).await.unwrap();
    assert_eq!(listed.items, std::slice::from_ref(&earlier));
    drop(conn);

    commit(first).await;
    second.await.unwrap();
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.events_after(&acct, Some(&earlier.id), 10)
            .await
            .unwrap(),
        [a.clone(), b.clone()],
        "from the position already read: both, each once, in the order the writes started"
    );
    assert_eq!(
        conn.events_after(&acct, Some(&a.id), 10).await.unwrap(),
        std::slice::from_ref(&b)
    );
    assert_eq!(
        conn.latest_event_id(&acct).await.unwrap().as_deref(),
        Some(b.id.as_str())
    );
    let listed = conn.list_events(&acct, None, &page(10)).await.unwrap();
    assert_eq!(listed.items, [b.clone(), a.clone(), earlier.clone()]);
    let older = conn
        .list_events(&acct, None, &after(10, &b.id))
        .await
        .unwrap();
    assert_eq!(older.items, [a.clone(), earlier.clone()]);
    let newer = conn
        .list_events(&acct, None, &before(10, &earlier.id))
        .await
        .unwrap();
    assert_eq!(newer.items, [b, a]);
}

/// Many writes of one account at once (in parallel where the store allows
/// it): every write lands, each event is in the log once, and a read-modify-
/// write of one row loses no update.
async fn concurrent_writes_of_one_account(store: Arc<dyn Store>) {
    let acct = new_account(&store, "acme").await;
    add_endpoint(&store, &acct, "all", &["*"], true).await;
    let shared = add_contact(&store, &acct, "shared").await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (store, acct, shared_id) = (store.clone(), acct.clone(), shared.id.clone());
        tasks.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for i in 0..10 {
                let mut tx = begin(&store).await;
                let c = contact(&format!("w{w}-{i}"));
                tx.insert_contact(&acct, &c).await.unwrap();
                let e = event("contact.created");
                tx.insert_event(&acct, &e).await.unwrap();
                // A counter kept in a row every writer reads and rewrites.
                let mut row = tx.contact(&acct, &shared_id).await.unwrap().unwrap();
                row.last_active_at = Some(row.last_active_at.unwrap_or(0) + 1);
                tx.update_contact(&acct, &row).await.unwrap();
                commit(tx).await;
                written.push(e.id);
            }
            written
        }));
    }
    let mut written = std::collections::HashSet::new();
    for t in tasks {
        written.extend(t.await.unwrap());
    }
    let mut conn = store.read().await.unwrap();
    let mut read = Vec::new();
    let mut position: Option<String> = None;
    // A reader waits a bounded time for the transactions in flight to
    // settle (PostgreSQL's `settle`: other tests' databases share the
    // server's transactions), and past it leaves out what is not settled
    // yet: read on from the same position until all 80 are in, or time out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while read.len() < 80 && std::time::Instant::now() < deadline {
        let batch = conn
            .events_after(&acct, position.as_deref(), 7)
            .await
            .unwrap();
        let Some(last) = batch.last() else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        position = Some(last.id.clone());
        read.extend(batch.into_iter().map(|e| e.id));
    }
    let after_all = conn
        .events_after(&acct, position.as_deref(), 7)
        .await
        .unwrap();
    assert!(after_all.is_empty(), "nothing after the last event");
    assert_eq!(read.len(), 80, "every event once");
    assert_eq!(
        read.iter()
            .cloned()
            .collect::<std::collections::HashSet<_>>(),
        written
    );
    assert_eq!(
        conn_contact(&store, &acct, &shared.id).await.last_active_at,
        Some(80),
        "no update lost"
    );
    let mut newest_first = conn
        .list_events(&acct, None, &page(100))
        .await
        .unwrap()
        .items;
    newest_first.reverse();
    assert_eq!(
        newest_first.into_iter().map(|e| e.id).collect::<Vec<_>>(),
        read,
        "the list and the stream agree on the order"
    );
}
