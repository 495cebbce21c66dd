//! Endpoints: their records, signing keys, health and circuit breaker.

use super::*;

conformance!(
    endpoints,
    endpoint_keys_are_read_in_pages_and_replaced_only_if_unchanged,
    circuit_breaker,
    endpoint_health,
);

async fn endpoints(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    let mut ep = endpoint("orders", &["contact.created", "message.created"]);
    ep.description = Some("the order service".to_owned());
    ep.previous_secret = Some(format!("whsec_{}", ids::new_id()));
    ep.previous_secret_expires_at = Some(ids::now() + 86_400);
    ep.headers = Some("nfsealed1:headers".to_owned());
    let all = add_endpoint(&store, &a, "all", &["*"], true).await;
    let mut tx = begin(&store).await;
    tx.insert_endpoint(&a, &ep).await.unwrap();
    commit(tx).await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.endpoint(&a, &ep.id).await.unwrap().as_ref(), Some(&ep));
    assert_eq!(
        conn.endpoint(&a, &all.id).await.unwrap().as_ref(),
        Some(&all)
    );
    drop(conn);

    // Names are unique per account, on insert and on update.
    let mut tx = begin(&store).await;
    assert_conflict(
        tx.insert_endpoint(&a, &endpoint("orders", &["*"])).await,
        "endpoint name",
    );
    drop(tx);
    let mut tx = begin(&store).await;
    let mut renamed = all.clone();
    renamed.name = "orders".to_owned();
    assert_conflict(tx.update_endpoint(&a, &renamed).await, "endpoint name");
    drop(tx);
    add_endpoint(&store, &b, "orders", &["*"], true).await;

    // Update every mutable field.
    ep.name = "orders-v2".to_owned();
    ep.url = "https://hooks.example.com/v2".to_owned();
    ep.description = None;
    ep.events = Json(vec!["group.created".to_owned()]);
    ep.enabled = false;
    ep.disabled_reason = Some("the endpoint answered 410 Gone".to_owned());
    ep.secret = format!("whsec_{}", ids::new_id());
    ep.previous_secret = None;
    ep.previous_secret_expires_at = None;
    ep.failing_since = Some(ids::now() - 60);
    ep.signature_scheme = "ed25519".to_owned();
    ep.headers = None;
    ep.updated_at = ids::now() + 1;
    let mut tx = begin(&store).await;
    tx.update_endpoint(&a, &ep).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.endpoint(&a, &ep.id).await.unwrap().as_ref(), Some(&ep));
    drop(conn);

    let mut tx = begin(&store).await;
    tx.delete_endpoint(&a, &all.id).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.endpoint(&a, &all.id).await.unwrap(), None);
    let listed = conn.list_endpoints(&a, &page(10)).await.unwrap();
    assert_eq!(ids_of(&listed.items, |e| &e.id), [ep.id.clone()]);
    drop(conn);
    // The name is free again.
    add_endpoint(&store, &a, "all", &["*"], true).await;
}

async fn endpoint_keys_are_read_in_pages_and_replaced_only_if_unchanged(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    let account_of = |n: usize| if n.is_multiple_of(2) { &a } else { &b };
    let mut made = Vec::new();
    for n in 0..5 {
        let account = account_of(n);
        let mut ep = endpoint(&format!("e{n}"), &["*"]);
        if n == 3 {
            ep.previous_secret = Some("nfsealed1:previous".to_owned());
        }
        if n == 1 {
            ep.headers = Some("nfsealed1:headers".to_owned());
        }
        let mut tx = begin(&store).await;
        tx.insert_endpoint(account, &ep).await.unwrap();
        commit(tx).await;
        made.push((account.clone(), ep));
    }
    made.sort_by(|x, y| x.1.id.cmp(&y.1.id));

    // Every account's, in id order, in pages.
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = store.endpoint_keys(&after, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = last.endpoint_id.clone();
        seen.extend(page);
    }
    let want: Vec<StoredKeys> = made
        .iter()
        .map(|(_, e)| StoredKeys {
            endpoint_id: e.id.clone(),
            secret: e.secret.clone(),
            previous_secret: e.previous_secret.clone(),
            headers: e.headers.clone(),
        })
        .collect();
    assert_eq!(seen, want);

    // Replaced only while unchanged, with or without a previous secret.
    for before in &want {
        let after = StoredKeys {
            endpoint_id: before.endpoint_id.clone(),
            secret: format!("nfsealed1:{}", ids::new_id()),
            previous_secret: before
                .previous_secret
                .as_ref()
                .map(|_| "nfsealed1:p".to_owned()),
            headers: before.headers.as_ref().map(|_| "nfsealed1:h".to_owned()),
        };
        assert!(store.replace_endpoint_keys(before, &after).await.unwrap());
        assert!(!store.replace_endpoint_keys(before, &after).await.unwrap());
        let mut stale = before.clone();
        stale.previous_secret = Some("other".to_owned());
        assert!(!store.replace_endpoint_keys(&stale, &after).await.unwrap());
        let mut stale = before.clone();
        stale.headers = Some("other".to_owned());
        assert!(!store.replace_endpoint_keys(&stale, &after).await.unwrap());
    }
    let now = store.endpoint_keys("", 10).await.unwrap();
    assert!(now.iter().all(|k| k.secret.starts_with("nfsealed1:")));
    assert_eq!(
        now.iter()
            .filter_map(|k| k.headers.as_deref())
            .collect::<Vec<_>>(),
        ["nfsealed1:h"],
        "custom headers replaced with the keys"
    );
    // The rest of each endpoint is untouched.
    let mut conn = store.read().await.unwrap();
    for (account, ep) in &made {
        let found = conn.endpoint(account, &ep.id).await.unwrap().unwrap();
        assert_eq!((&found.name, &found.url), (&ep.name, &ep.url));
    }
}

/// `failing continuously since <RFC 3339>`, as both stores write it.
fn rfc3339(unix: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

async fn circuit_breaker(store: Arc<dyn Store>) {
    let policy = EndpointPolicy {
        disable_after_secs: 86_400,
        circuit_failures: 3,
    };
    let a = new_account(&store, "acme").await;
    let down = add_endpoint(&store, &a, "down", &["contact.created"], true).await;
    emit_events(&store, &a, "contact.created", 2).await;
    let retry_now = || NextStep::Retry {
        at_ms: ids::now_ms() - 1,
        schedule_pos: 1,
    };

    // Failures in a row, below the threshold: closed, still claimed.
    let claimed = claim(&store, &claim_all("node-a:0")).await;
    assert_eq!(claimed.len(), 2);
    let results: Vec<AttemptResult> = claimed
        .iter()
        .map(|c| result_of(c, "node-a:0", Some(500), retry_now()))
        .collect();
    store.record_attempts(&results, &policy).await.unwrap();
    let ep = read_endpoint(&store, &a, &down.id).await.unwrap();
    assert_eq!((ep.circuit.as_str(), ep.circuit_since), ("closed", None));
    // The third failure in a row opens it: its deliveries are not claimed
    // (the first probe is 5 s off).
    let claimed = claim(&store, &claim_all("node-a:3")).await;
    let before = ids::now();
    store
        .record_attempts(
            &[result_of(&claimed[0], "node-a:3", Some(500), retry_now())],
            &policy,
        )
        .await
        .unwrap();
    store.release_leases("node-a").await.unwrap();
    let ep = read_endpoint(&store, &a, &down.id).await.unwrap();
    assert_eq!(ep.circuit, "open");
    assert!(ep.circuit_since.is_some_and(|t| t >= before), "{ep:?}");
    assert!(claim(&store, &claim_all("node-a:4")).await.is_empty());
    let stats = store.queue_stats(ids::now_ms()).await.unwrap();
    assert_eq!(stats.circuits, [(down.id.clone(), "open".to_owned())]);
    assert_eq!(stats.held_by_circuits, 2);

    // A result never sent says nothing; a success (an attempt that was in
    // flight when it opened) closes it.
    let mut unsent = result_of(&claimed[1], "node-a:3", None, retry_now());
    unsent.unsent = true;
    store.record_attempts(&[unsent], &policy).await.unwrap();
    assert_eq!(
        read_endpoint(&store, &a, &down.id).await.unwrap().circuit,
        "open"
    );
    // An update that closes it (a new URL) does so at once, and starts the
    // count over: one more failure does not open it again.
    let mut closed = read_endpoint(&store, &a, &down.id).await.unwrap();
    closed.circuit = "closed".to_owned();
    closed.circuit_since = Some(ids::now());
    let mut tx = begin(&store).await;
    tx.update_endpoint(&a, &closed).await.unwrap();
    commit(tx).await;
    let claimed = claim(&store, &claim_all("node-a:5")).await;
    assert_eq!(claimed.len(), 2);
    store
        .record_attempts(
            &[result_of(&claimed[0], "node-a:5", Some(500), retry_now())],
            &policy,
        )
        .await
        .unwrap();
    assert_eq!(
        read_endpoint(&store, &a, &down.id).await.unwrap().circuit,
        "closed"
    );
    store
        .record_attempts(
            &[result_of(
                &claimed[1],
                "node-a:5",
                Some(200),
                NextStep::Succeeded,
            )],
            &policy,
        )
        .await
        .unwrap();
    let ep = read_endpoint(&store, &a, &down.id).await.unwrap();
    assert_eq!(ep.circuit, "closed");
    assert!(
        store
            .queue_stats(ids::now_ms())
            .await
            .unwrap()
            .circuits
            .is_empty()
    );
}

async fn endpoint_health(store: Arc<dyn Store>) {
    assert_eq!(rfc3339(LONG_AGO), "2023-11-14T22:13:20Z");
    let a = new_account(&store, "acme").await;
    let flaky = add_endpoint(&store, &a, "flaky", &["contact.created"], true).await;
    let gone = add_endpoint(&store, &a, "gone", &["group.created"], true).await;
    let mut old = endpoint("old", &["message.created"]);
    old.failing_since = Some(LONG_AGO);
    let mut tx = begin(&store).await;
    tx.insert_endpoint(&a, &old).await.unwrap();
    commit(tx).await;
    emit_events(&store, &a, "contact.created", 2).await;
    emit_events(&store, &a, "group.created", 1).await;
    emit_events(&store, &a, "message.created", 1).await;
    let claimed = claim(&store, &claim_all("node-a:1")).await;
    assert_eq!(claimed.len(), 4);
    let of = |ep: &EndpointRecord| -> Vec<&Claimed> {
        claimed.iter().filter(|c| c.endpoint_id == ep.id).collect()
    };

    // A failure marks the start of a failing run; a success clears it.
    let before = ids::now();
    store
        .record_attempts(
            &[result_of(
                of(&flaky)[0],
                "node-a:1",
                Some(500),
                NextStep::Failed,
            )],
            &POLICY,
        )
        .await
        .unwrap();
    let ep = read_endpoint(&store, &a, &flaky.id).await.unwrap();
    assert!(
        ep.failing_since
            .is_some_and(|t| t >= before && t <= ids::now()),
        "{:?}",
        ep.failing_since
    );
    assert!(ep.enabled);
    store
        .record_attempts(
            &[result_of(
                of(&flaky)[1],
                "node-a:1",
                Some(200),
                NextStep::Succeeded,
            )],
            &POLICY,
        )
        .await
        .unwrap();
    assert_eq!(
        read_endpoint(&store, &a, &flaky.id)
            .await
            .unwrap()
            .failing_since,
        None
    );

    // `disable` disables at once with its reason (a 410).
    let mut gone_result = result_of(of(&gone)[0], "node-a:1", Some(410), NextStep::Failed);
    gone_result.disable = Some("the endpoint answered 410 Gone".to_owned());
    store
        .record_attempts(&[gone_result], &POLICY)
        .await
        .unwrap();
    let ep = read_endpoint(&store, &a, &gone.id).await.unwrap();
    assert!(!ep.enabled);
    assert_eq!(
        ep.disabled_reason.as_deref(),
        Some("the endpoint answered 410 Gone")
    );

    // Failing for longer than `disable_after` disables it, saying since when.
    store
        .record_attempts(
            &[result_of(
                of(&old)[0],
                "node-a:1",
                None,
                NextStep::Retry {
                    at_ms: ids::now_ms(),
                    schedule_pos: 1,
                },
            )],
            &policy(3600),
        )
        .await
        .unwrap();
    let ep = read_endpoint(&store, &a, &old.id).await.unwrap();
    assert!(!ep.enabled);
    assert_eq!(ep.failing_since, Some(LONG_AGO));
    assert_eq!(
        ep.disabled_reason,
        Some(format!("failing continuously since {}", rfc3339(LONG_AGO)))
    );
    // Its due retry waits while it is disabled.
    assert!(claim(&store, &claim_all("node-a:2")).await.is_empty());
    let stats = store.queue_stats(ids::now_ms()).await.unwrap();
    assert_eq!(stats.disabled_endpoints, 2);

    // One batch with several results per endpoint leaves each endpoint as
    // its results, taken in order, would: a success then a failure starts a
    // new run now; a failure then a success ends the run.
    let mut lapsed = endpoint("lapsed", &["conversation.created"]);
    lapsed.failing_since = Some(LONG_AGO);
    let mut tx = begin(&store).await;
    tx.insert_endpoint(&a, &lapsed).await.unwrap();
    commit(tx).await;
    emit_events(&store, &a, "contact.created", 2).await;
    emit_events(&store, &a, "conversation.created", 2).await;
    let claimed = claim(&store, &claim_all("node-a:3")).await;
    assert_eq!(claimed.len(), 4);
    let (flaky_work, lapsed_work): (Vec<&Claimed>, Vec<&Claimed>) =
        claimed.iter().partition(|c| c.endpoint_id == flaky.id);
    let retry = NextStep::Retry {
        at_ms: ids::now_ms() + 60_000,
        schedule_pos: 1,
    };
    let before = ids::now();
    let batch = [
        result_of(flaky_work[0], "node-a:3", Some(200), NextStep::Succeeded),
        result_of(lapsed_work[0], "node-a:3", Some(500), retry.clone()),
        result_of(flaky_work[1], "node-a:3", Some(500), retry),
        result_of(lapsed_work[1], "node-a:3", Some(200), NextStep::Succeeded),
    ];
    // Ten years: the long-failing endpoint is not disabled by this batch.
    store
        .record_attempts(&batch, &policy(10 * 365 * 86_400))
        .await
        .unwrap();
    let ep = read_endpoint(&store, &a, &flaky.id).await.unwrap();
    assert!(
        ep.failing_since.is_some_and(|t| t >= before),
        "a new run starts: {:?}",
        ep.failing_since
    );
    let ep = read_endpoint(&store, &a, &lapsed.id).await.unwrap();
    assert_eq!(ep.failing_since, None);
    assert!(ep.enabled);
    for (c, status) in [
        (flaky_work[0], "succeeded"),
        (flaky_work[1], "pending"),
        (lapsed_work[0], "pending"),
        (lapsed_work[1], "succeeded"),
    ] {
        let d = delivery(&store, &a, &c.delivery_id).await;
        assert_eq!(d.status, status, "{}", c.delivery_id);
        assert_eq!(d.attempts, 1);
        let mut conn = store.read().await.unwrap();
        assert_eq!(conn.attempts(&a, &c.delivery_id).await.unwrap().len(), 1);
    }
}
