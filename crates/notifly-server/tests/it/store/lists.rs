//! Pagination and filters of the lists.

use super::*;

conformance!(pagination_of_every_list, filtered_lists);

async fn pagination_of_every_list(store: Arc<dyn Store>) {
    const N: usize = 5;
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    // Another account's rows are interleaved: they must never show up, and
    // their ids are not cursors here.
    let b_conv = add_conversation(&store, &b, "intruder").await;
    let b_contact = b_conv.contact_id.clone().unwrap();

    let mut contacts = Vec::new();
    let mut convs = Vec::new();
    for i in 0..N {
        let conv = add_conversation(&store, &a, &format!("contact{i}")).await;
        contacts.push(conv.contact_id.clone().unwrap());
        convs.push(conv.id.clone());
        add_contact(&store, &b, &format!("other{i}")).await;
    }
    let mut messages = Vec::new();
    for i in 0..N {
        messages.push(
            add_message(&store, &a, &convs[0], &format!("m{i}"))
                .await
                .id,
        );
        add_message(&store, &b, &b_conv.id, "other").await;
    }
    let mut groups = Vec::new();
    let mut attachments = Vec::new();
    for i in 0..N {
        let g = group(&format!("g{i}"));
        let att = attachment(&messages[0], &format!("f{i}.txt"));
        let mut tx = begin(&store).await;
        tx.insert_group(&a, &g).await.unwrap();
        tx.insert_attachment(&a, &att).await.unwrap();
        tx.insert_group(&b, &group("other")).await.unwrap();
        commit(tx).await;
        groups.push(g.id);
        attachments.push(att.id);
    }
    let mut endpoints = Vec::new();
    for i in 0..N {
        endpoints.push(
            add_endpoint(&store, &a, &format!("ep{i}"), &["*"], true)
                .await
                .id,
        );
        add_endpoint(&store, &b, &format!("ep{i}"), &["*"], true).await;
    }
    // Events after the endpoints, so each fans out to all five.
    for _ in 0..N {
        emit_event(&store, &a, &event("contact.updated")).await;
        emit_event(&store, &b, &event("contact.updated")).await;
    }
    let mut conn = store.read().await.unwrap();
    let events: Vec<String> = conn
        .events_after(&a, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    drop(conn);
    assert_eq!(events.len(), N);
    let b_event = {
        let mut conn = store.read().await.unwrap();
        conn.latest_event_id(&b).await.unwrap().unwrap()
    };
    // The deliveries of one endpoint, in the order of their events.
    let mut delivered = Vec::new();
    for d in deliveries(&store, &a, &endpoints[0])
        .await
        .into_iter()
        .rev()
    {
        delivered.push(d.id);
    }
    assert_eq!(delivered.len(), N);

    let newest_first = |ids: &[String]| ids.iter().rev().cloned().collect::<Vec<_>>();

    let s = &store;
    let acct = a.as_str();
    check_pages(
        "contacts",
        |p| async move { s.read().await?.list_contacts(acct, &p).await },
        |c| &c.id,
        &newest_first(&contacts),
        &[&b_contact, &convs[0]],
    )
    .await;
    check_pages(
        "conversations",
        |p| async move {
            s.read()
                .await?
                .list_conversations(acct, &ConversationFilter::default(), &p)
                .await
        },
        |c| &c.id,
        &newest_first(&convs),
        &[&b_conv.id, &contacts[0]],
    )
    .await;
    check_pages(
        "messages",
        |p| async move { s.read().await?.list_messages(acct, None, &p).await },
        |m| &m.id,
        &newest_first(&messages),
        &[&convs[0]],
    )
    .await;
    check_pages(
        "groups",
        |p| async move { s.read().await?.list_groups(acct, &p).await },
        |g| &g.id,
        &newest_first(&groups),
        &[&contacts[0]],
    )
    .await;
    check_pages(
        "attachments",
        |p| async move { s.read().await?.list_attachments(acct, None, &p).await },
        |a| &a.id,
        &newest_first(&attachments),
        &[&messages[0]],
    )
    .await;
    check_pages(
        "events",
        |p| async move { s.read().await?.list_events(acct, None, &p).await },
        |e| &e.id,
        &newest_first(&events),
        &[&b_event, &delivered[0]],
    )
    .await;
    check_pages(
        "endpoints",
        |p| async move { s.read().await?.list_endpoints(acct, &p).await },
        |e| &e.id,
        &newest_first(&endpoints),
        &[&events[0]],
    )
    .await;
    let ep0 = endpoints[0].as_str();
    check_pages(
        "deliveries",
        |p| async move { s.read().await?.list_deliveries(acct, ep0, None, &p).await },
        |d| &d.id,
        &newest_first(&delivered),
        &[&events[0]],
    )
    .await;
}

async fn filtered_lists(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let s = &store;
    let acct = a.as_str();

    // Conversations: muted, pinned, archived, group.
    let family = group("family");
    let mut tx = begin(&store).await;
    tx.insert_group(&a, &family).await.unwrap();
    commit(tx).await;
    let plain = add_conversation(&store, &a, "plain").await;
    let mut muted = add_conversation(&store, &a, "muted").await;
    let mut pinned = add_conversation(&store, &a, "pinned").await;
    let mut archived = add_conversation(&store, &a, "archived").await;
    let group_conv = conversation_with_group(&family.id);
    muted.is_muted = true;
    pinned.is_pinned = true;
    archived.archived_at = Some(ids::now());
    archived.is_muted = true;
    let mut tx = begin(&store).await;
    for c in [&muted, &pinned, &archived] {
        tx.update_conversation(&a, c).await.unwrap();
    }
    tx.insert_conversation(&a, &group_conv).await.unwrap();
    commit(tx).await;
    let cases: [(ConversationFilter, Vec<&str>); 8] = [
        (
            ConversationFilter::default(),
            vec![
                &group_conv.id,
                &archived.id,
                &pinned.id,
                &muted.id,
                &plain.id,
            ],
        ),
        (
            ConversationFilter {
                muted: Some(true),
                ..Default::default()
            },
            vec![&archived.id, &muted.id],
        ),
        (
            ConversationFilter {
                muted: Some(false),
                ..Default::default()
            },
            vec![&group_conv.id, &pinned.id, &plain.id],
        ),
        (
            ConversationFilter {
                pinned: Some(true),
                ..Default::default()
            },
            vec![&pinned.id],
        ),
        (
            ConversationFilter {
                archived: Some(true),
                ..Default::default()
            },
            vec![&archived.id],
        ),
        (
            ConversationFilter {
                archived: Some(false),
                muted: Some(true),
                ..Default::default()
            },
            vec![&muted.id],
        ),
        (
            ConversationFilter {
                group_id: Some(family.id.clone()),
                ..Default::default()
            },
            vec![&group_conv.id],
        ),
        (
            ConversationFilter {
                group_id: Some("ZZZZZZZZZZZZZZZZ".to_owned()),
                ..Default::default()
            },
            vec![],
        ),
    ];
    for (filter, expected) in cases {
        let expected: Vec<String> = expected.into_iter().map(str::to_owned).collect();
        let f = &filter;
        check_pages(
            &format!("conversations {filter:?}"),
            |p| async move { s.read().await?.list_conversations(acct, f, &p).await },
            |c| &c.id,
            &expected,
            &[],
        )
        .await;
    }
    // A cursor outside the filter still names a row of the list's kind: the
    // page starts from its position.
    let mut conn = store.read().await.unwrap();
    let muted_only = ConversationFilter {
        muted: Some(true),
        ..Default::default()
    };
    let got = conn
        .list_conversations(&a, &muted_only, &after(10, &pinned.id))
        .await
        .unwrap();
    assert_eq!(ids_of(&got.items, |c| &c.id), [muted.id.clone()]);
    drop(conn);

    // Messages by conversation; attachments by message.
    let mut in_plain = Vec::new();
    let mut in_muted = Vec::new();
    for i in 0..3 {
        in_plain.push(
            add_message(&store, &a, &plain.id, &format!("p{i}"))
                .await
                .id,
        );
        in_muted.push(
            add_message(&store, &a, &muted.id, &format!("m{i}"))
                .await
                .id,
        );
    }
    let mut of_first = Vec::new();
    let mut tx = begin(&store).await;
    for i in 0..3 {
        let att = attachment(&in_plain[0], &format!("a{i}.txt"));
        tx.insert_attachment(&a, &att).await.unwrap();
        of_first.push(att.id);
        tx.insert_attachment(&a, &attachment(&in_plain[1], "other.txt"))
            .await
            .unwrap();
    }
    commit(tx).await;
    let rev = |v: &[String]| v.iter().rev().cloned().collect::<Vec<_>>();
    let plain_id = plain.id.as_str();
    check_pages(
        "messages of a conversation",
        |p| async move {
            s.read()
                .await?
                .list_messages(acct, Some(plain_id), &p)
                .await
        },
        |m| &m.id,
        &rev(&in_plain),
        &[plain_id],
    )
    .await;
    let first_message = in_plain[0].as_str();
    check_pages(
        "attachments of a message",
        |p| async move {
            s.read()
                .await?
                .list_attachments(acct, Some(first_message), &p)
                .await
        },
        |a| &a.id,
        &rev(&of_first),
        &[first_message],
    )
    .await;
    let mut conn = store.read().await.unwrap();
    let none = conn
        .list_messages(&a, Some("ZZZZZZZZZZZZZZZZ"), &page(10))
        .await
        .unwrap();
    assert!(none.items.is_empty() && !none.has_more);
    let none = conn
        .list_attachments(&a, Some(&in_muted[0]), &page(10))
        .await
        .unwrap();
    assert!(none.items.is_empty() && !none.has_more);
    drop(conn);

    // Events by type.
    let mut created = Vec::new();
    for _ in 0..3 {
        let e = event("contact.created");
        emit_event(&store, &a, &e).await;
        created.push(e.id);
        emit_event(&store, &a, &event("contact.updated")).await;
    }
    check_pages(
        "events of a type",
        |p| async move {
            s.read()
                .await?
                .list_events(acct, Some("contact.created"), &p)
                .await
        },
        |e| &e.id,
        &rev(&created),
        &[],
    )
    .await;

    // Deliveries by status.
    let ep = add_endpoint(&store, &a, "all", &["*"], true).await;
    let sent = emit_events(&store, &a, "group.created", 4).await;
    let claimed = claim(&store, &claim_all("node-a:1")).await;
    assert_eq!(claimed.len(), 4);
    let mut by_event: Vec<&Claimed> = claimed.iter().collect();
    by_event.sort_by_key(|c| sent.iter().position(|e| e.id == c.event_id));
    let results = vec![
        result_of(by_event[0], "node-a:1", Some(200), NextStep::Succeeded),
        result_of(by_event[1], "node-a:1", Some(500), NextStep::Failed),
        result_of(by_event[2], "node-a:1", Some(200), NextStep::Succeeded),
    ];
    store.record_attempts(&results, &POLICY).await.unwrap();
    let ep_id = ep.id.as_str();
    for (status, expected) in [
        (
            "succeeded",
            vec![&by_event[2].delivery_id, &by_event[0].delivery_id],
        ),
        ("failed", vec![&by_event[1].delivery_id]),
        ("pending", vec![&by_event[3].delivery_id]),
        ("cancelled", vec![]),
    ] {
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        check_pages(
            &format!("{status} deliveries"),
            |p| async move {
                s.read()
                    .await?
                    .list_deliveries(acct, ep_id, Some(status), &p)
                    .await
            },
            |d| &d.id,
            &expected,
            &[],
        )
        .await;
    }
}
