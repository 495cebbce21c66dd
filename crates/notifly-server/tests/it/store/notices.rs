//! Operational events at the store: the write-back notes what it did to
//! endpoints (disabled, circuit opened or closed) and deliveries (retries
//! exhausted) in its own transaction; `take_notices` hands each out once;
//! an operational event goes only to endpoints that name its type, never
//! to `"*"` ones nor to the endpoint it is about.

use super::*;

conformance!(
    write_backs_note_what_they_did,
    notices_are_taken_once_in_order,
    operational_events_go_to_named_subscribers_only,
);

const TYPES: [&str; 4] = [
    "webhook.disabled",
    "webhook.circuit_opened",
    "webhook.circuit_closed",
    "delivery.exhausted",
];

/// The notices owed, as `(endpoint, type, delivery)`, taken.
async fn take_all(store: &Arc<dyn Store>) -> Vec<(String, String, Option<String>)> {
    let mut tx = begin(store).await;
    let taken = tx.take_notices(100, &TYPES).await.unwrap();
    commit(tx).await;
    taken
        .into_iter()
        .map(|n| (n.endpoint_id, n.event_type, n.delivery_id))
        .collect()
}

async fn write_backs_note_what_they_did(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let gone = add_endpoint(&store, &a, "gone", &["*"], true).await;
    let flaky = add_endpoint(&store, &a, "flaky", &["*"], true).await;
    let fine = add_endpoint(&store, &a, "fine", &["*"], true).await;
    emit_event(&store, &a, &event("contact.created")).await;
    let claimed = claim(&store, &claim_all("node-a:1")).await;
    let of = |e: &EndpointRecord| claimed.iter().find(|c| c.endpoint_id == e.id).unwrap();
    assert!(!store.read().await.unwrap().has_notices().await.unwrap());

    // A 410 disables `gone` (and ends its delivery, which is not told
    // apart); two failures in a row open `flaky`'s circuit
    // and the second is its last attempt; `fine` succeeds: nothing to say.
    let mut gone_result = result_of(of(&gone), "node-a:1", Some(410), NextStep::Failed);
    gone_result.disable = Some("the endpoint answered 410 Gone".to_owned());
    let circuit = EndpointPolicy {
        disable_after_secs: 86_400,
        circuit_failures: 2,
    };
    let first = result_of(
        of(&flaky),
        "node-a:1",
        Some(500),
        NextStep::Retry {
            at_ms: ids::now_ms(),
            schedule_pos: 1,
        },
    );
    let noted = store
        .record_attempts(
            &[
                gone_result,
                first,
                result_of(of(&fine), "node-a:1", Some(200), NextStep::Succeeded),
            ],
            &circuit,
        )
        .await
        .unwrap();
    assert_eq!(
        noted, 1,
        "gone's disabling (its delivery's end is part of it)"
    );
    assert!(store.read().await.unwrap().has_notices().await.unwrap());
    let mut tx = begin(&store).await;
    let taken = tx.take_notices(100, &TYPES).await.unwrap();
    commit(tx).await;
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].endpoint_id, gone.id);
    assert_eq!(taken[0].event_type, "webhook.disabled");
    // With the state the change left it at.
    let state: serde_json::Value =
        serde_json::from_str(taken[0].state.as_deref().unwrap()).unwrap();
    assert_eq!(state["enabled"], false);
    assert_eq!(state["disabled_reason"], "the endpoint answered 410 Gone");

    // The second failure opens the circuit and ends the delivery.
    let retry = claim(&store, &claim_all("node-a:2")).await;
    assert_eq!(retry.len(), 1);
    let noted = store
        .record_attempts(
            &[result_of(
                &retry[0],
                "node-a:2",
                Some(500),
                NextStep::Failed,
            )],
            &circuit,
        )
        .await
        .unwrap();
    assert_eq!(noted, 2);
    let mut taken = take_all(&store).await;
    taken.sort();
    assert_eq!(
        taken,
        [
            (
                flaky.id.clone(),
                "delivery.exhausted".to_owned(),
                Some(retry[0].delivery_id.clone())
            ),
            (flaky.id.clone(), "webhook.circuit_opened".to_owned(), None),
        ]
    );

    // A probe that succeeds closes it: noted once, whichever write-back
    // path writes it.
    emit_event(&store, &a, &event("contact.updated")).await;
    let deadline = Instant::now() + DEADLINE;
    let probe = loop {
        let got = claim(&store, &claim_all("node-a:3")).await;
        if let Some(p) = got.into_iter().find(|c| c.endpoint_id == flaky.id) {
            break p;
        }
        assert!(Instant::now() < deadline, "no probe of the open circuit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let noted = store
        .record_attempts(
            &[result_of(
                &probe,
                "node-a:3",
                Some(200),
                NextStep::Succeeded,
            )],
            &circuit,
        )
        .await
        .unwrap();
    assert_eq!(noted, 1);
    assert_eq!(
        take_all(&store).await,
        [(flaky.id.clone(), "webhook.circuit_closed".to_owned(), None)]
    );
    assert!(!store.read().await.unwrap().has_notices().await.unwrap());
}

async fn notices_are_taken_once_in_order(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let mut gone = Vec::new();
    for n in 0..3 {
        gone.push(add_endpoint(&store, &a, &format!("gone-{n}"), &["*"], true).await);
    }
    emit_event(&store, &a, &event("contact.created")).await;
    let claimed = claim(&store, &claim_all("node-a:1")).await;
    // One write-back per endpoint, so their notices are in this order.
    for e in &gone {
        let c = claimed.iter().find(|c| c.endpoint_id == e.id).unwrap();
        let mut r = result_of(c, "node-a:1", Some(410), NextStep::Failed);
        r.disable = Some("the endpoint answered 410 Gone".to_owned());
        store.record_attempts(&[r], &POLICY).await.unwrap();
    }
    // A type this node does not know stays owed.
    let mut tx = begin(&store).await;
    assert!(
        tx.take_notices(2, &["webhook.enabled"])
            .await
            .unwrap()
            .is_empty()
    );
    commit(tx).await;
    // Taken in part; a take rolled back (dropped) leaves them owed.
    let mut tx = begin(&store).await;
    assert_eq!(tx.take_notices(2, &TYPES).await.unwrap().len(), 2);
    drop(tx);
    // (On PostgreSQL the dropped transactions' rollback, and with it their
    // hold on taking notices, may lag a moment: a publisher looks again.)
    let deadline = Instant::now() + DEADLINE;
    let first = loop {
        let mut tx = begin(&store).await;
        let first = tx.take_notices(2, &TYPES).await.unwrap();
        commit(tx).await;
        if !first.is_empty() || Instant::now() > deadline {
            break first;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(first[0].seq < first[1].seq);
    let rest = take_all(&store).await;
    let all: Vec<(String, String)> = first
        .into_iter()
        .map(|n| (n.endpoint_id, n.event_type))
        .chain(rest.into_iter().map(|n| (n.0, n.1)))
        .collect();
    // Three disablings, each once, in the order they were written.
    assert_eq!(all.len(), 3, "{all:?}");
    let disabled: Vec<&str> = all
        .iter()
        .filter(|(_, t)| t == "webhook.disabled")
        .map(|(e, _)| e.as_str())
        .collect();
    let expected: Vec<&str> = gone.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(disabled, expected);
    assert!(take_all(&store).await.is_empty());
}

async fn operational_events_go_to_named_subscribers_only(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    let subject = add_endpoint(&store, &a, "subject", &["*", "webhook.disabled"], true).await;
    let named = add_endpoint(&store, &a, "named", &["webhook.disabled"], true).await;
    let star = add_endpoint(&store, &a, "star", &["*"], true).await;
    let other_type = add_endpoint(&store, &a, "other", &["delivery.exhausted"], true).await;
    let off = add_endpoint(&store, &a, "off", &["webhook.disabled"], false).await;
    let elsewhere = add_endpoint(&store, &b, "elsewhere", &["webhook.disabled"], true).await;
    let e = about("webhook.disabled", ids::now(), &subject.id);
    let mut tx = begin(&store).await;
    let made = tx
        .insert_operational_event(&a, &e, &subject.id)
        .await
        .unwrap();
    commit(tx).await;
    assert_eq!(made, 1);
    assert_eq!(deliveries(&store, &a, &named.id).await.len(), 1);
    for e in [&subject, &star, &other_type, &off] {
        assert!(deliveries(&store, &a, &e.id).await.is_empty(), "{}", e.name);
    }
    assert!(deliveries(&store, &b, &elsewhere.id).await.is_empty());
    // It is in the account's log.
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.event(&a, &e.id).await.unwrap().unwrap().event_type,
        "webhook.disabled"
    );
    assert_eq!(conn.event(&b, &e.id).await.unwrap(), None);
}
