//! Isolation between accounts.

use super::*;

conformance!(isolation_between_accounts);

async fn isolation_between_accounts(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;

    // One of everything in account A.
    let conv = add_conversation(&store, &a, "kevin").await;
    let kevin = conv.contact_id.clone().unwrap();
    let m = message(&conv.id, Some(&kevin), "hello");
    let g = group("family");
    let att = attachment(&m.id, "a.txt");
    let ep = endpoint("all", &["*"]);
    let e = event("message.created");
    let mut tx = begin(&store).await;
    tx.insert_message(&a, &m).await.unwrap();
    tx.insert_group(&a, &g).await.unwrap();
    tx.set_group_members(&g.id, std::slice::from_ref(&kevin))
        .await
        .unwrap();
    tx.insert_attachment(&a, &att).await.unwrap();
    tx.insert_endpoint(&a, &ep).await.unwrap();
    assert_eq!(tx.insert_event(&a, &e).await.unwrap(), 1);
    tx.insert_idempotent_response(&a, "key", &idempotent(201, "{}"))
        .await
        .unwrap();
    commit(tx).await;
    let claimed = claim(&store, &claim_all("node-a:1")).await;
    assert_eq!(claimed.len(), 1);
    let d = claimed[0].delivery_id.clone();
    store
        .record_attempts(
            &[result_of(
                &claimed[0],
                "node-a:1",
                Some(500),
                NextStep::Failed,
            )],
            &POLICY,
        )
        .await
        .unwrap();

    // Account B sees none of it.
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.contact(&b, &kevin).await.unwrap(), None);
    assert!(
        conn.contacts_by_ids(&b, std::slice::from_ref(&kevin))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!conn.contact_has_messages(&b, &kevin).await.unwrap());
    assert_eq!(conn.conversation(&b, &conv.id).await.unwrap(), None);
    assert_eq!(conn.message(&b, &m.id).await.unwrap(), None);
    assert!(
        conn.messages_in_conversation(&b, &conv.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(conn.group(&b, &g.id).await.unwrap(), None);
    assert!(
        conn.groups_with_member(&b, &kevin)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(conn.attachment(&b, &att.id).await.unwrap(), None);
    assert!(
        conn.attachments_of_message(&b, &m.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(conn.event(&b, &e.id).await.unwrap(), None);
    assert!(conn.events_after(&b, None, 100).await.unwrap().is_empty());
    assert_unknown_cursor(
        conn.events_after(&b, Some(&e.id), 100).await,
        "events_after",
    );
    assert_eq!(conn.latest_event_id(&b).await.unwrap(), None);
    assert_eq!(conn.idempotent_response(&b, "key").await.unwrap(), None);
    assert_eq!(conn.endpoint(&b, &ep.id).await.unwrap(), None);
    assert_eq!(conn.delivery(&b, &d).await.unwrap(), None);
    assert!(conn.attempts(&b, &d).await.unwrap().is_empty());
    let lists = [
        conn.list_contacts(&b, &page(100))
            .await
            .unwrap()
            .items
            .len(),
        conn.list_conversations(&b, &ConversationFilter::default(), &page(100))
            .await
            .unwrap()
            .items
            .len(),
        conn.list_messages(&b, None, &page(100))
            .await
            .unwrap()
            .items
            .len(),
        conn.list_messages(&b, Some(&conv.id), &page(100))
            .await
            .unwrap()
            .items
            .len(),
        conn.list_groups(&b, &page(100)).await.unwrap().items.len(),
        conn.list_attachments(&b, None, &page(100))
            .await
            .unwrap()
            .items
            .len(),
        conn.list_attachments(&b, Some(&m.id), &page(100))
            .await
            .unwrap()
            .items
            .len(),
        conn.list_events(&b, None, &page(100))
            .await
            .unwrap()
            .items
            .len(),
        conn.list_endpoints(&b, &page(100))
            .await
            .unwrap()
            .items
            .len(),
        conn.list_deliveries(&b, &ep.id, None, &page(100))
            .await
            .unwrap()
            .items
            .len(),
    ];
    assert_eq!(lists, [0; 10], "account B's lists");
    // A sees its own (the same reads, as a control).
    assert!(conn.contact(&a, &kevin).await.unwrap().is_some());
    assert_eq!(conn.attempts(&a, &d).await.unwrap().len(), 1);
    drop(conn);

    // Writes through account B change nothing of A's rows, including the
    // rows keyed by a parent's id alone (an endpoint's subscription, a
    // group's members).
    let mut renamed = conn_contact(&store, &a, &kevin).await;
    renamed.username = "hijacked".to_owned();
    let mut tx = begin(&store).await;
    tx.update_contact(&b, &renamed).await.unwrap();
    let mut moved = conv.clone();
    moved.is_muted = true;
    tx.update_conversation(&b, &moved).await.unwrap();
    let mut edited = m.clone();
    edited.message = "hijacked".to_owned();
    tx.update_message(&b, &edited).await.unwrap();
    let mut g2 = g.clone();
    g2.name = "hijacked".to_owned();
    tx.update_group(&b, &g2).await.unwrap();
    let mut att2 = att.clone();
    att2.filename = "hijacked".to_owned();
    tx.update_attachment(&b, &att2).await.unwrap();
    let mut ep2 = ep.clone();
    ep2.url = "https://evil.example.com/".to_owned();
    ep2.events = Json(vec!["group.deleted".to_owned()]);
    tx.update_endpoint(&b, &ep2).await.unwrap();
    tx.delete_group(&b, &g.id).await.unwrap();
    assert!(!tx.retry_delivery(&b, &d, ids::now_ms()).await.unwrap());
    assert_eq!(
        tx.recover_deliveries(&b, &ep.id, 0, ids::now_ms())
            .await
            .unwrap(),
        0
    );
    tx.delete_attachment(&b, &att.id).await.unwrap();
    tx.delete_endpoint(&b, &ep.id).await.unwrap();
    commit(tx).await;
    let mut tx = begin(&store).await;
    tx.delete_message(&b, &m.id).await.unwrap();
    commit(tx).await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.contact(&a, &kevin).await.unwrap().unwrap().username,
        "kevin"
    );
    assert_eq!(
        conn.conversation(&a, &conv.id).await.unwrap().as_ref(),
        Some(&conv)
    );
    assert_eq!(conn.message(&a, &m.id).await.unwrap().as_ref(), Some(&m));
    assert_eq!(conn.group(&a, &g.id).await.unwrap().as_ref(), Some(&g));
    assert_eq!(
        conn.attachment(&a, &att.id).await.unwrap().as_ref(),
        Some(&att)
    );
    assert_eq!(
        conn.endpoint(&a, &ep.id).await.unwrap().unwrap().url,
        ep.url
    );
    assert_eq!(
        conn.group_members(&g.id).await.unwrap(),
        vec![kevin.clone()]
    );
    drop(conn);
    // A's endpoint is still subscribed to everything.
    let mut tx = begin(&store).await;
    assert_eq!(
        tx.insert_event(&a, &event("message.created"))
            .await
            .unwrap(),
        1
    );
    drop(tx);
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.delivery(&a, &d).await.unwrap().unwrap().status,
        "failed"
    );
    drop(conn);

    // A's endpoint can be the target of neither B's events nor B's test events.
    let mut tx = begin(&store).await;
    assert_eq!(
        tx.insert_event(&b, &event("message.created"))
            .await
            .unwrap(),
        0
    );
    commit(tx).await;
    let mut tx = begin(&store).await;
    assert!(
        tx.insert_event_for_endpoint(&b, &event("webhook.test"), &ep.id)
            .await
            .is_err(),
        "a test event of B to A's endpoint"
    );
    drop(tx);
    assert_eq!(deliveries(&store, &a, &ep.id).await.len(), 1);
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.events_after(&b, None, 100).await.unwrap().len(), 1);
}
