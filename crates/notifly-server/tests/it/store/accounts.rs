//! Accounts, their API keys, and dashboard sessions.

use super::*;

conformance!(
    accounts,
    api_keys_are_added_capped_touched_and_revoked_but_never_the_last,
    dashboard_sessions,
    dashboard_sessions_expire_and_are_capped,
    dashboard_sessions_are_isolated,
);

async fn accounts(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.account_count().await.unwrap(), 0);
    drop(conn);

    let acme = Account {
        id: ids::new_id(),
        name: "acme".to_owned(),
        created_at: ids::now(),
    };
    let key = ids::new_api_key();
    let acme_key = key_row(&acme.id, "first key");
    let mut tx = begin(&store).await;
    assert_eq!(tx.account_count().await.unwrap(), 0);
    tx.insert_account(&acme, &acme_key, &ids::hash_api_key(&key))
        .await
        .unwrap();
    assert_eq!(
        tx.account_count().await.unwrap(),
        1,
        "a write sees its own insert"
    );
    commit(tx).await;
    new_account(&store, "globex").await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.account_count().await.unwrap(), 2);
    let (found, found_key) = conn
        .api_key_by_hash(&ids::hash_api_key(&key))
        .await
        .unwrap()
        .expect("the account of its key");
    assert_eq!(
        (found.id, found.name, found.created_at),
        (acme.id.clone(), acme.name.clone(), acme.created_at)
    );
    assert_eq!(found_key, acme_key);
    assert!(
        conn.api_key_by_hash(&ids::hash_api_key(&ids::new_api_key()))
            .await
            .unwrap()
            .is_none()
    );
    // The key itself is not its hash.
    assert!(conn.api_key_by_hash(&key).await.unwrap().is_none());
    drop(conn);

    // A key hash names one account.
    let mut tx = begin(&store).await;
    let other = Account {
        id: ids::new_id(),
        name: "initech".to_owned(),
        created_at: ids::now(),
    };
    assert!(
        tx.insert_account(&other, &key_row(&other.id, "k"), &ids::hash_api_key(&key))
            .await
            .is_err(),
        "a second account with the same key hash"
    );
    drop(tx);
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.account_count().await.unwrap(),
        2,
        "nothing of the failed insert"
    );
}

async fn api_keys_are_added_capped_touched_and_revoked_but_never_the_last(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    let mut conn = store.read().await.unwrap();
    let first = conn.api_keys(&a).await.unwrap();
    assert_eq!(first.len(), 1);
    drop(conn);

    // Added up to the cap, listed oldest first.
    let mut second = key_row(&a, "second");
    second.created_at = first[0].created_at + 1;
    let second_hash = ids::hash_api_key(&ids::new_api_key());
    let mut tx = begin(&store).await;
    tx.insert_api_key(&second, &second_hash, 2).await.unwrap();
    commit(tx).await;
    let mut tx = begin(&store).await;
    let third = key_row(&a, "third");
    assert!(matches!(
        tx.insert_api_key(&third, &ids::hash_api_key(&ids::new_api_key()), 2)
            .await,
        Err(StoreError::Conflict(_))
    ));
    drop(tx);
    let mut conn = store.read().await.unwrap();
    let listed = conn.api_keys(&a).await.unwrap();
    assert_eq!(
        ids_of(&listed, |k| &k.id),
        [first[0].id.clone(), second.id.clone()]
    );
    assert_eq!(conn.api_keys(&b).await.unwrap().len(), 1);
    drop(conn);

    // A use is recorded.
    let mut tx = begin(&store).await;
    tx.touch_api_key(&second.id, 1_795_700_000).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    let (_, touched) = conn.api_key_by_hash(&second_hash).await.unwrap().unwrap();
    assert_eq!(touched.last_used_at, Some(1_795_700_000));
    drop(conn);

    // Sessions opened with each key.
    let now = ids::now();
    let mut with_second = session_row(&a, "s-second", now, now + 3600);
    with_second.key_id = Some(second.id.clone());
    let mut with_first = session_row(&a, "s-first", now, now + 3600);
    with_first.key_id = Some(first[0].id.clone());
    add_session(&store, &with_second).await;
    add_session(&store, &with_first).await;
    assert_eq!(
        read_session(&store, "s-second", now).await.unwrap().key_id,
        Some(second.id.clone())
    );

    // Another account's key, or an unknown one: not found.
    let theirs = conn_keys(&store, &b).await[0].id.clone();
    let mut tx = begin(&store).await;
    assert_eq!(
        tx.revoke_api_key(&a, &theirs).await.unwrap(),
        KeyRevocation::NotFound
    );
    assert_eq!(
        tx.revoke_api_key(&a, "ZZZZZZZZZZZZZZZZ").await.unwrap(),
        KeyRevocation::NotFound
    );
    // Revoked: gone with its sessions, the other's kept.
    assert_eq!(
        tx.revoke_api_key(&a, &second.id).await.unwrap(),
        KeyRevocation::Revoked
    );
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert!(conn.api_key_by_hash(&second_hash).await.unwrap().is_none());
    drop(conn);
    assert_eq!(read_session(&store, "s-second", now).await, None);
    assert!(read_session(&store, "s-first", now).await.is_some());
    // A session written for the revoked key afterwards (a login that
    // checked the key just before) is not live either.
    let mut late = session_row(&a, "s-late", now, now + 3600);
    late.key_id = Some(second.id.clone());
    add_session(&store, &late).await;
    assert_eq!(read_session(&store, "s-late", now).await, None);
    // The last one stays.
    let mut tx = begin(&store).await;
    assert_eq!(
        tx.revoke_api_key(&a, &first[0].id).await.unwrap(),
        KeyRevocation::Last
    );
    drop(tx);
    assert_eq!(conn_keys(&store, &a).await.len(), 1);
    assert_eq!(conn_keys(&store, &b).await.len(), 1);
}

async fn conn_keys(store: &Arc<dyn Store>, account: &str) -> Vec<ApiKeyRecord> {
    let mut conn = store.read().await.unwrap();
    conn.api_keys(account).await.unwrap()
}

/// A session row as the domain writes it at login: `last_seen_at` at
/// `seen`, expiring at `expires_at`.
fn session_row(account: &str, token_hash: &str, seen: i64, expires_at: i64) -> DashboardSession {
    DashboardSession {
        token_hash: token_hash.to_owned(),
        account_id: account.to_owned(),
        account_name: String::new(),
        csrf: format!("csrf-of-{token_hash}"),
        created_at: seen,
        last_seen_at: seen,
        expires_at,
        key_id: None,
        flash_kind: None,
        flash_message: None,
    }
}

async fn add_session(store: &Arc<dyn Store>, s: &DashboardSession) {
    let mut tx = begin(store).await;
    tx.insert_dashboard_session(&s.account_id, s).await.unwrap();
    commit(tx).await;
}

async fn read_session(
    store: &Arc<dyn Store>,
    token_hash: &str,
    now: i64,
) -> Option<DashboardSession> {
    let mut conn = store.read().await.unwrap();
    conn.dashboard_session(token_hash, now).await.unwrap()
}

fn flash(kind: &str, message: &str) -> SessionFlash {
    SessionFlash {
        kind: kind.to_owned(),
        message: message.to_owned(),
    }
}

async fn dashboard_sessions(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let now = ids::now();
    let row = session_row(&a, "hash-1", now - 100, now + 3600);
    add_session(&store, &row).await;

    // Read back by its hash, with the account's name.
    let got = read_session(&store, "hash-1", now)
        .await
        .expect("the session");
    assert_eq!(
        got,
        DashboardSession {
            account_name: "acme".to_owned(),
            ..row.clone()
        }
    );
    assert_eq!(read_session(&store, "hash-2", now).await, None);
    assert_eq!(read_session(&store, "HASH-1", now).await, None);
    // A write transaction reads it too.
    let mut tx = begin(&store).await;
    assert!(tx.dashboard_session("hash-1", now).await.unwrap().is_some());
    drop(tx);

    // Expiry: live strictly before `expires_at`.
    assert!(read_session(&store, "hash-1", now + 3599).await.is_some());
    assert_eq!(read_session(&store, "hash-1", now + 3600).await, None);

    // A touch moves `last_seen_at` and `expires_at`, nothing else.
    let mut tx = begin(&store).await;
    tx.touch_dashboard_session(&a, "hash-1", now, now + 7200)
        .await
        .unwrap();
    commit(tx).await;
    let got = read_session(&store, "hash-1", now + 3600)
        .await
        .expect("extended");
    assert_eq!(
        (got.created_at, got.last_seen_at, got.expires_at),
        (now - 100, now, now + 7200)
    );
    assert_eq!(got.csrf, row.csrf);
    assert_eq!((got.flash_kind, got.flash_message), (None, None));

    // Messages: none to take; one set is read and taken once.
    let mut tx = begin(&store).await;
    assert_eq!(
        tx.take_dashboard_session_flash(&a, "hash-1").await.unwrap(),
        None
    );
    tx.set_dashboard_session_flash(&a, "hash-1", &flash("ok", "Saved."))
        .await
        .unwrap();
    commit(tx).await;
    let got = read_session(&store, "hash-1", now).await.unwrap();
    assert_eq!(
        (got.flash_kind.as_deref(), got.flash_message.as_deref()),
        (Some("ok"), Some("Saved."))
    );
    // A second message replaces the first.
    let mut tx = begin(&store).await;
    tx.set_dashboard_session_flash(&a, "hash-1", &flash("error", "No <b>."))
        .await
        .unwrap();
    commit(tx).await;
    // A take that rolls back leaves the message.
    let mut tx = begin(&store).await;
    assert!(
        tx.take_dashboard_session_flash(&a, "hash-1")
            .await
            .unwrap()
            .is_some()
    );
    drop(tx);
    let mut tx = begin(&store).await;
    assert_eq!(
        tx.take_dashboard_session_flash(&a, "hash-1").await.unwrap(),
        Some(flash("error", "No <b>.")),
    );
    assert_eq!(
        tx.take_dashboard_session_flash(&a, "hash-1").await.unwrap(),
        None,
        "taken once"
    );
    commit(tx).await;
    let got = read_session(&store, "hash-1", now).await.unwrap();
    assert_eq!((got.flash_kind, got.flash_message), (None, None));
    assert_eq!(
        got.last_seen_at, now,
        "taking the message changes nothing else"
    );

    // One row per token hash.
    let mut tx = begin(&store).await;
    assert_conflict(
        tx.insert_dashboard_session(&a, &session_row(&a, "hash-1", now, now + 60))
            .await,
        "dashboard session",
    );
    drop(tx);

    // Deleting ends it; deleting again is harmless.
    let mut tx = begin(&store).await;
    tx.delete_dashboard_session(&a, "hash-1").await.unwrap();
    commit(tx).await;
    assert_eq!(read_session(&store, "hash-1", now).await, None);
    let mut tx = begin(&store).await;
    tx.delete_dashboard_session(&a, "hash-1").await.unwrap();
    tx.touch_dashboard_session(&a, "hash-1", now, now + 60)
        .await
        .unwrap();
    tx.set_dashboard_session_flash(&a, "hash-1", &flash("ok", "gone"))
        .await
        .unwrap();
    commit(tx).await;
    assert_eq!(
        read_session(&store, "hash-1", now).await,
        None,
        "writes to a deleted session bring nothing back"
    );
}

async fn dashboard_sessions_expire_and_are_capped(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    let now = ids::now();
    for (i, h) in ["old-1", "old-2", "old-3"].iter().enumerate() {
        add_session(&store, &session_row(&a, h, now - 9000, now - 10 + i as i64)).await;
    }
    add_session(&store, &session_row(&a, "at-now", now - 9000, now)).await;
    add_session(&store, &session_row(&b, "live", now - 10, now + 100)).await;
    for h in ["old-1", "old-2", "old-3", "at-now"] {
        assert_eq!(read_session(&store, h, now).await, None, "{h} has expired");
    }

    // Retention deletes what has expired, a bounded batch at a time, and
    // nothing else (no other row is old enough here).
    assert_eq!(purge_round(&store, 0, 0, now, 1).await, [1, 1, 1, 1, 0]);
    assert!(read_session(&store, "live", now).await.is_some());
    assert!(read_session(&store, "live", now + 99).await.is_some());
    // Re-inserting a purged hash works: the row is gone.
    add_session(&store, &session_row(&a, "old-1", now, now + 100)).await;
    assert!(read_session(&store, "old-1", now).await.is_some());

    // The cap: an account keeps its `keep` most recently used sessions.
    for (i, h) in ["a-1", "a-2", "a-3"].iter().enumerate() {
        let mut row = session_row(&a, h, now - 500, now + 1000);
        row.last_seen_at = now - 300 + i as i64 * 100;
        add_session(&store, &row).await;
    }
    // Most recently used: a-3 (now - 100), a-2 (now - 200), old-1 (now),
    // a-1 (now - 300).
    let mut tx = begin(&store).await;
    assert_eq!(tx.trim_dashboard_sessions(&a, 2).await.unwrap(), 2);
    assert_eq!(tx.trim_dashboard_sessions(&a, 2).await.unwrap(), 0);
    commit(tx).await;
    assert!(read_session(&store, "old-1", now).await.is_some());
    assert!(read_session(&store, "a-3", now).await.is_some());
    assert_eq!(read_session(&store, "a-2", now).await, None);
    assert_eq!(read_session(&store, "a-1", now).await, None);
    assert!(
        read_session(&store, "live", now).await.is_some(),
        "another account's sessions are not counted or trimmed"
    );
    let mut tx = begin(&store).await;
    assert_eq!(tx.trim_dashboard_sessions(&a, 0).await.unwrap(), 2);
    commit(tx).await;
    assert_eq!(read_session(&store, "old-1", now).await, None);
    assert!(read_session(&store, "live", now).await.is_some());
}

async fn dashboard_sessions_are_isolated(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    let now = ids::now();
    let sa = session_row(&a, "hash-a", now, now + 3600);
    let sb = session_row(&b, "hash-b", now, now + 3600);
    add_session(&store, &sa).await;
    add_session(&store, &sb).await;

    // Each hash reads its own session and account, never the other's.
    let got_a = read_session(&store, "hash-a", now).await.unwrap();
    let got_b = read_session(&store, "hash-b", now).await.unwrap();
    assert_eq!(
        (got_a.account_id.as_str(), got_a.account_name.as_str()),
        (a.as_str(), "acme")
    );
    assert_eq!(
        (got_b.account_id.as_str(), got_b.account_name.as_str()),
        (b.as_str(), "globex")
    );
    assert_eq!(got_a.csrf, sa.csrf);
    assert_eq!(got_b.csrf, sb.csrf);

    // Writes naming the other account change nothing.
    let mut tx = begin(&store).await;
    tx.touch_dashboard_session(&b, "hash-a", now + 5, now + 99_999)
        .await
        .unwrap();
    tx.set_dashboard_session_flash(&b, "hash-a", &flash("error", "theirs"))
        .await
        .unwrap();
    tx.delete_dashboard_session(&b, "hash-a").await.unwrap();
    commit(tx).await;
    assert_eq!(
        read_session(&store, "hash-a", now).await,
        Some(got_a.clone())
    );

    // A message left for one session is not another's to take.
    let mut tx = begin(&store).await;
    tx.set_dashboard_session_flash(&a, "hash-a", &flash("ok", "mine"))
        .await
        .unwrap();
    assert_eq!(
        tx.take_dashboard_session_flash(&b, "hash-a").await.unwrap(),
        None
    );
    assert_eq!(
        tx.take_dashboard_session_flash(&b, "hash-b").await.unwrap(),
        None
    );
    commit(tx).await;
    let got_b_after = read_session(&store, "hash-b", now).await.unwrap();
    assert_eq!(got_b_after, got_b);
    let mut tx = begin(&store).await;
    assert_eq!(
        tx.take_dashboard_session_flash(&a, "hash-a").await.unwrap(),
        Some(flash("ok", "mine"))
    );
    commit(tx).await;

    // Ending one session leaves the other.
    let mut tx = begin(&store).await;
    tx.delete_dashboard_session(&b, "hash-b").await.unwrap();
    commit(tx).await;
    assert_eq!(read_session(&store, "hash-b", now).await, None);
    assert!(read_session(&store, "hash-a", now).await.is_some());
}
