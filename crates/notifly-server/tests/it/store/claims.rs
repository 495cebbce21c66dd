//! The dispatcher's queue: claims, leases, in-flight and rate limits, and
//! per-resource ordering.

use super::*;

conformance!(
    claims_lease_due_work,
    claims_carry_the_trace_their_event_was_written_in,
    claim_limits,
    expired_leases_are_claimed_again,
    retries_outlive_late_results,
    release_leases_of_one_node,
    rate_limits_pace_claims,
    throttled_endpoints_wait,
    per_resource_ordering,
);

/// An event's `traceparent` (the span of the request that wrote it, while
/// traces are exported) comes back with each claimed delivery of it, so the
/// attempt continues that trace on whichever node claims it.
async fn claims_carry_the_trace_their_event_was_written_in(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    add_endpoint(&store, &a, "all", &["*"], true).await;
    let traced = EventRecord {
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
        ..event("contact.created")
    };
    let untraced = event("contact.updated");
    emit_event(&store, &a, &traced).await;
    emit_event(&store, &a, &untraced).await;
    let claimed = claim(&store, &claim_all("node-a:1")).await;
    assert_eq!(claimed.len(), 2);
    for c in &claimed {
        let expected = if c.event_id == traced.id {
            &traced.traceparent
        } else {
            &untraced.traceparent
        };
        assert_eq!(&c.traceparent, expected, "{}", c.event_type);
    }
}

async fn claims_lease_due_work(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let mut ep = endpoint("all", &["*"]);
    ep.previous_secret = Some(format!("whsec_{}", ids::new_id()));
    ep.previous_secret_expires_at = Some(ids::now() + 3600);
    ep.headers = Some("nfsealed1:headers".to_owned());
    let mut tx = begin(&store).await;
    tx.insert_endpoint(&a, &ep).await.unwrap();
    commit(tx).await;
    let sent = emit_events(&store, &a, "contact.created", 3).await;

    let claimed = claim(&store, &claim_all("node-a:1")).await;
    assert_eq!(claimed.len(), 3);
    let ds = deliveries(&store, &a, &ep.id).await;
    assert_eq!(claimed_ids(&claimed), sorted(ids_of(&ds, |d| &d.id)));
    for c in &claimed {
        let e = sent
            .iter()
            .find(|e| e.id == c.event_id)
            .expect("a claimed event");
        assert_eq!(c.account_id, a);
        assert_eq!(c.endpoint_id, ep.id);
        assert_eq!(c.event_type, "contact.created");
        assert_eq!(c.attempt, 1);
        assert_eq!(c.schedule_pos, 0);
        assert_eq!(c.url, ep.url);
        assert_eq!(c.secret, ep.secret);
        assert_eq!(c.previous_secret, ep.previous_secret);
        assert_eq!(c.previous_secret_expires_at, ep.previous_secret_expires_at);
        assert_eq!(c.headers, ep.headers, "its custom headers, as stored");
        assert_eq!(c.body, e.body, "the event's exact bytes");
    }
    // Leased work is not claimed again, by this node or another.
    assert!(claim(&store, &claim_all("node-a:2")).await.is_empty());
    assert!(claim(&store, &claim_all("node-b:1")).await.is_empty());
    // A claim does not change what the API shows of a delivery.
    for d in deliveries(&store, &a, &ep.id).await {
        assert_eq!((d.status.as_str(), d.attempts), ("pending", 0));
    }
    // New work is claimable beside the leased.
    let more = emit_events(&store, &a, "contact.created", 1).await;
    let claimed = claim(&store, &claim_all("node-b:1")).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event_id, more[0].id);

    // Nothing is claimed for a disabled endpoint or before it is due.
    let b = new_account(&store, "globex").await;
    let mut off = add_endpoint(&store, &b, "off", &["*"], true).await;
    let later = add_endpoint(&store, &b, "later", &["*"], true).await;
    assert_eq!(emit_event(&store, &b, &event("group.created")).await, 2);
    off.enabled = false;
    off.disabled_reason = Some("disabled by hand".to_owned());
    let mut tx = begin(&store).await;
    tx.update_endpoint(&b, &off).await.unwrap();
    commit(tx).await;
    let claimed = claim(&store, &claim_all("node-a:3")).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].endpoint_id, later.id);
    store
        .record_attempts(
            &[result_of(
                &claimed[0],
                "node-a:3",
                Some(503),
                NextStep::Retry {
                    at_ms: ids::now_ms() + 3_600_000,
                    schedule_pos: 1,
                },
            )],
            &POLICY,
        )
        .await
        .unwrap();
    assert!(claim(&store, &claim_all("node-a:4")).await.is_empty());
}

async fn claim_limits(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let busy = add_endpoint(&store, &a, "busy", &["contact.created"], true).await;
    let quiet = add_endpoint(&store, &a, "quiet", &["group.created"], true).await;
    emit_events(&store, &a, "contact.created", 5).await;
    emit_events(&store, &a, "group.created", 2).await;

    // At most `per_endpoint` in flight per endpoint, counted across claims.
    let first = claim(&store, &claim_request("node-a:1", 2, 100, 60_000)).await;
    let per: Vec<usize> = [&busy, &quiet]
        .iter()
        .map(|ep| first.iter().filter(|c| c.endpoint_id == ep.id).count())
        .collect();
    assert_eq!(per, [2, 2]);
    assert!(
        claim(&store, &claim_request("node-b:1", 2, 100, 60_000))
            .await
            .is_empty()
    );
    let third = claim(&store, &claim_request("node-b:2", 3, 100, 60_000)).await;
    assert_eq!(third.len(), 1, "one more once the limit is 3");
    assert_eq!(third[0].endpoint_id, busy.id);

    // `max` caps one claim.
    let b = new_account(&store, "globex").await;
    let wide = add_endpoint(&store, &b, "wide", &["*"], true).await;
    emit_events(&store, &b, "message.created", 4).await;
    let got = claim(&store, &claim_request("node-c:1", 10, 3, 60_000)).await;
    assert_eq!(got.len(), 3);
    assert!(
        got.iter()
            .all(|c| c.endpoint_id == wide.id || c.endpoint_id == busy.id)
    );

    // Take the rest, so that only the endpoints below have work.
    claim(&store, &claim_all("node-c:2")).await;

    // A failing endpoint gets at most `per_failing_endpoint`, and healthy
    // endpoints are served first even when their work is younger.
    let c = new_account(&store, "initech").await;
    let mut down = endpoint("down", &["contact.deleted"]);
    down.failing_since = Some(ids::now() - 60);
    let mut tx = begin(&store).await;
    tx.insert_endpoint(&c, &down).await.unwrap();
    commit(tx).await;
    emit_events(&store, &c, "contact.deleted", 4).await;
    let up = add_endpoint(&store, &c, "up", &["group.deleted"], true).await;
    emit_events(&store, &c, "group.deleted", 2).await;
    let mut request = claim_request("node-d:1", 10, 2, 60_000);
    request.per_failing_endpoint = 1;
    let got = claim(&store, &request).await;
    assert_eq!(got.len(), 2);
    assert!(
        got.iter().all(|c| c.endpoint_id == up.id),
        "healthy first: {got:?}"
    );
    let got = claim(&store, &request).await;
    assert_eq!(got.len(), 1, "a failing endpoint's limit");
    assert_eq!(got[0].endpoint_id, down.id);
    assert!(claim(&store, &request).await.is_empty());
}

async fn expired_leases_are_claimed_again(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let ep = add_endpoint(&store, &a, "all", &["*"], true).await;
    emit_events(&store, &a, "contact.created", 1).await;

    let first = claim(&store, &claim_request("node-a:1", 10, 10, 50)).await;
    assert_eq!(first.len(), 1);
    // Once the 50 ms lease has run out, another node takes the work.
    let deadline = Instant::now() + DEADLINE;
    let second = loop {
        let got = claim(&store, &claim_all("node-b:1")).await;
        if !got.is_empty() {
            break got;
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(claimed_ids(&second), claimed_ids(&first));
    assert_eq!(second[0].attempt, 1, "no attempt was recorded");

    // The first holder's late result is not applied; the current holder's is.
    let (late, d) = late_result(&store, &a, &first[0], "node-a:1", NextStep::Succeeded).await;
    assert_eq!(
        (d.status.as_str(), d.attempts),
        ("pending", 0),
        "a stale owner changes nothing"
    );
    assert!(
        claim(&store, &claim_all("node-c:1")).await.is_empty(),
        "still leased by node-b"
    );
    // The attempt itself was made, so it is logged.
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.attempts(&a, &d.id).await.unwrap(), [late.attempt]);
    drop(conn);

    store
        .record_attempts(
            &[result_of(
                &second[0],
                "node-b:1",
                Some(200),
                NextStep::Succeeded,
            )],
            &POLICY,
        )
        .await
        .unwrap();
    let d = delivery(&store, &a, &first[0].delivery_id).await;
    assert_eq!((d.status.as_str(), d.attempts), ("succeeded", 1));
    assert_eq!(deliveries(&store, &a, &ep.id).await.len(), 1);
}

/// A lease that ran out: its late result does not undo a retry by hand
/// made meanwhile.
async fn retries_outlive_late_results(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    add_endpoint(&store, &a, "all", &["*"], true).await;
    emit_events(&store, &a, "contact.created", 1).await;
    let first = claim(&store, &claim_request("node-a:1", 1, 1, 50)).await;
    assert_eq!(first.len(), 1);
    tokio::time::sleep(Duration::from_millis(120)).await;

    // Retried by hand once the lease has run out: the late failure that
    // arrives after it changes nothing.
    let mut tx = begin(&store).await;
    assert!(
        tx.retry_delivery(&a, &first[0].delivery_id, ids::now_ms())
            .await
            .unwrap()
    );
    commit(tx).await;
    let (_, d) = late_result(&store, &a, &first[0], "node-a:1", NextStep::Failed).await;
    assert_eq!(
        (d.status.as_str(), d.attempts),
        ("pending", 0),
        "the retry stands"
    );
}

/// Records the result of `claimed` from `owner`, whose lease has run out,
/// and reads its delivery back.
async fn late_result(
    store: &Arc<dyn Store>,
    account: &str,
    claimed: &Claimed,
    owner: &str,
    next: NextStep,
) -> (AttemptResult, DeliveryRecord) {
    let late = result_of(claimed, owner, Some(200), next);
    store
        .record_attempts(std::slice::from_ref(&late), &POLICY)
        .await
        .unwrap();
    (late, delivery(store, account, &claimed.delivery_id).await)
}

async fn release_leases_of_one_node(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let one = add_endpoint(&store, &a, "one", &["contact.created"], true).await;
    let two = add_endpoint(&store, &a, "two", &["group.created"], true).await;
    let three = add_endpoint(&store, &a, "three", &["message.created"], true).await;
    emit_events(&store, &a, "contact.created", 2).await;
    let by_a = claim(&store, &claim_all("node-a:1")).await;
    emit_events(&store, &a, "group.created", 1).await;
    let by_a_again = claim(&store, &claim_all("node-a:2")).await;
    emit_events(&store, &a, "message.created", 1).await;
    // A node whose name starts with the other's.
    let by_aa = claim(&store, &claim_all("node-aa:1")).await;
    assert_eq!((by_a.len(), by_a_again.len(), by_aa.len()), (2, 1, 1));
    assert_eq!(by_aa[0].endpoint_id, three.id);

    assert_eq!(store.release_leases("node-b").await.unwrap(), 0);
    // A node id is matched exactly: not by case, not as a pattern.
    assert_eq!(store.release_leases("NODE-A").await.unwrap(), 0);
    assert_eq!(store.release_leases("node_a").await.unwrap(), 0);
    assert_eq!(store.release_leases("node-%").await.unwrap(), 0);
    assert_eq!(
        store.release_leases("node-a").await.unwrap(),
        3,
        "both of node-a's claims"
    );
    let again = claim(&store, &claim_all("node-b:1")).await;
    let mut expected = claimed_ids(&by_a);
    expected.extend(claimed_ids(&by_a_again));
    assert_eq!(
        claimed_ids(&again),
        sorted(expected),
        "node-aa keeps its lease"
    );
    assert!(
        again
            .iter()
            .all(|c| c.endpoint_id == one.id || c.endpoint_id == two.id)
    );
    assert_eq!(store.release_leases("node-a").await.unwrap(), 0);

    // A released lease's late result no longer applies.
    store
        .record_attempts(
            &[result_of(
                &by_a_again[0],
                "node-a:2",
                Some(200),
                NextStep::Succeeded,
            )],
            &POLICY,
        )
        .await
        .unwrap();
    assert_eq!(
        delivery(&store, &a, &by_a_again[0].delivery_id)
            .await
            .status,
        "pending"
    );
    assert_eq!(store.release_leases("node-aa").await.unwrap(), 1);
    assert_eq!(store.release_leases("node-b").await.unwrap(), 3);
}

/// An endpoint changed by `change`, written through `update_endpoint`.
async fn change_endpoint(
    store: &Arc<dyn Store>,
    account: &str,
    ep: &EndpointRecord,
    change: impl FnOnce(&mut EndpointRecord),
) -> EndpointRecord {
    let mut after = ep.clone();
    change(&mut after);
    let mut tx = begin(store).await;
    tx.update_endpoint(account, &after).await.unwrap();
    commit(tx).await;
    after
}

async fn rate_limits_pace_claims(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let slow = add_endpoint(&store, &a, "slow", &["contact.created"], true).await;
    let slow = change_endpoint(&store, &a, &slow, |e| e.rate_limit = Some(5)).await;
    let fast = add_endpoint(&store, &a, "fast", &["contact.created"], true).await;
    assert_eq!(
        read_endpoint(&store, &a, &slow.id)
            .await
            .unwrap()
            .rate_limit,
        Some(5)
    );
    emit_events(&store, &a, "contact.created", 6).await;
    // 5 a second: one at a time, 200 ms apart; the other endpoint is not
    // held back.
    let started = Instant::now();
    let claimed = claim(&store, &claim_all("node-a:0")).await;
    let to = |endpoint: &str| claimed.iter().filter(|c| c.endpoint_id == endpoint).count();
    assert_eq!((to(&slow.id), to(&fast.id)), (1, 6));
    // Claims in the same interval get nothing more, whichever node asks.
    assert!(claim(&store, &claim_all("node-b:0")).await.is_empty());
    // Over the limit, deliveries wait: still pending, no attempt used.
    let waiting = deliveries(&store, &a, &slow.id).await;
    assert_eq!(waiting.len(), 6);
    assert!(
        waiting
            .iter()
            .all(|d| d.status == "pending" && d.attempts == 0)
    );
    // Claimed every 50 ms, the rest go one at a time: the k-th no sooner
    // than k intervals after the first, less the limiter's 100 ms of slack
    // (each measured from before its claim started to after it returned,
    // which brackets the claim's own clock).
    let mut spans = vec![(started, Instant::now())];
    while spans.len() < 6 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = Instant::now();
        let n = claim(&store, &claim_all("node-a:1")).await.len();
        assert!(n <= 1, "{n} claimed at once at 5 a second");
        if n == 1 {
            spans.push((before, Instant::now()));
        }
    }
    assert_eq!(spans.len(), 6, "every delivery is claimed in the end");
    let first = spans[0].0;
    for (k, (_, after)) in spans.iter().enumerate().skip(1) {
        let least = Duration::from_millis(200 * k as u64 - 100);
        assert!(
            after.duration_since(first) >= least,
            "the {k}th after {:?}",
            after.duration_since(first)
        );
    }
    // Without the limit, what waits goes at once.
    emit_events(&store, &a, "contact.created", 3).await;
    change_endpoint(&store, &a, &slow, |e| e.rate_limit = None).await;
    let claimed = claim(&store, &claim_all("node-a:2")).await;
    assert_eq!(
        claimed.iter().filter(|c| c.endpoint_id == slow.id).count(),
        3
    );
}

async fn throttled_endpoints_wait(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let busy = add_endpoint(&store, &a, "busy", &["contact.created"], true).await;
    let calm = add_endpoint(&store, &a, "calm", &["contact.created"], true).await;
    emit_events(&store, &a, "contact.created", 1).await;
    let claimed = claim(&store, &claim_all("node-a:0")).await;
    assert_eq!(claimed.len(), 2);
    emit_events(&store, &a, "contact.created", 1).await;
    // The busy endpoint answers 429 with `Retry-After: 60`.
    let first = claimed.iter().find(|c| c.endpoint_id == busy.id).unwrap();
    let until = ids::now_ms() + 60_000;
    let mut throttled = result_of(
        first,
        "node-a:0",
        Some(429),
        NextStep::Retry {
            at_ms: until,
            schedule_pos: 1,
        },
    );
    throttled.throttle_until_ms = Some(until);
    let other = claimed.iter().find(|c| c.endpoint_id == calm.id).unwrap();
    let done = result_of(other, "node-a:0", Some(200), NextStep::Succeeded);
    store
        .record_attempts(&[throttled, done], &POLICY)
        .await
        .unwrap();
    // Its new delivery, due now, waits for the pause; the other endpoint's
    // goes.
    let claimed = claim(&store, &claim_all("node-a:1")).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].endpoint_id, calm.id);
    let due = store.next_due_ms().await.unwrap();
    // The only work left is the busy endpoint's, due when its pause ends
    // (the calm endpoint's lease ends later).
    assert!(due.is_some_and(|d| d >= until - 1), "{due:?} < {until}");
    let new = deliveries(&store, &a, &busy.id).await;
    assert!(new.iter().any(|d| d.attempts == 0 && d.status == "pending"));
    // A shorter pause from a later answer does not cut it short.
    let mut earlier = result_of(&claimed[0], "node-a:1", Some(502), NextStep::Succeeded);
    earlier.endpoint_id = busy.id.clone();
    earlier.throttle_until_ms = Some(ids::now_ms() + 1_000);
    store.record_attempts(&[earlier], &POLICY).await.unwrap();
    assert!(claim(&store, &claim_all("node-a:2")).await.is_empty());
    let due = store.next_due_ms().await.unwrap();
    assert!(due.is_some_and(|d| d >= until - 1), "{due:?} < {until}");
}

async fn per_resource_ordering(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let ordered = add_endpoint(&store, &a, "ordered", &["contact.updated"], true).await;
    let ordered = change_endpoint(&store, &a, &ordered, |e| {
        e.ordering = "per_resource".to_owned();
    })
    .await;
    assert_eq!(
        read_endpoint(&store, &a, &ordered.id)
            .await
            .unwrap()
            .ordering,
        "per_resource"
    );
    let free = add_endpoint(&store, &a, "free", &["contact.updated"], true).await;
    let now = ids::now();
    let (r1, r2) = (ids::new_id(), ids::new_id());
    let mut events = Vec::new();
    for resource in [&r1, &r1, &r2, &r1] {
        let e = about("contact.updated", now, resource);
        emit_event(&store, &a, &e).await;
        events.push(e);
    }
    let of = |claimed: &[Claimed], endpoint: &str| -> Vec<String> {
        let mut ids: Vec<String> = claimed
            .iter()
            .filter(|c| c.endpoint_id == endpoint)
            .map(|c| c.event_id.clone())
            .collect();
        ids.sort();
        ids
    };
    let ids = |list: &[&EventRecord]| -> Vec<String> {
        let mut ids: Vec<String> = list.iter().map(|e| e.id.clone()).collect();
        ids.sort();
        ids
    };
    // The unordered endpoint gets all four at once; the ordered one the
    // first event of each resource.
    let claimed = claim(&store, &claim_all("node-a:0")).await;
    assert_eq!(of(&claimed, &free.id).len(), 4);
    assert_eq!(of(&claimed, &ordered.id), ids(&[&events[0], &events[2]]));
    let first = claimed
        .iter()
        .find(|c| c.event_id == events[0].id && c.endpoint_id == ordered.id)
        .unwrap();
    // While r1's first is in flight, or waits for a retry, r1's second waits.
    assert!(of(&claim(&store, &claim_all("node-a:1")).await, &ordered.id).is_empty());
    let retry = NextStep::Retry {
        at_ms: ids::now_ms() - 1,
        schedule_pos: 1,
    };
    store
        .record_attempts(&[result_of(first, "node-a:0", Some(500), retry)], &POLICY)
        .await
        .unwrap();
    let claimed = claim(&store, &claim_all("node-a:2")).await;
    assert_eq!(of(&claimed, &ordered.id), ids(&[&events[0]]));
    // Once it succeeds, the second goes; once that finally fails, the third.
    let retried = claimed
        .iter()
        .find(|c| c.endpoint_id == ordered.id)
        .unwrap();
    store
        .record_attempts(
            &[result_of(
                retried,
                "node-a:2",
                Some(200),
                NextStep::Succeeded,
            )],
            &POLICY,
        )
        .await
        .unwrap();
    let claimed = claim(&store, &claim_all("node-a:3")).await;
    assert_eq!(of(&claimed, &ordered.id), ids(&[&events[1]]));
    store
        .record_attempts(
            &[result_of(
                &claimed[0],
                "node-a:3",
                Some(500),
                NextStep::Failed,
            )],
            &POLICY,
        )
        .await
        .unwrap();
    let claimed = claim(&store, &claim_all("node-a:4")).await;
    assert_eq!(of(&claimed, &ordered.id), ids(&[&events[3]]));
}
