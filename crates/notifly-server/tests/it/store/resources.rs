//! Resources: insert, read back, update, delete, uniqueness (contacts,
//! conversations, messages, groups, attachments).

use super::*;

conformance!(
    contacts,
    conversations,
    messages,
    messages_referring,
    groups,
    attachments
);

async fn contacts(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    let mut kevin = add_contact(&store, &a, "kevin").await;
    let marv = add_contact(&store, &a, "marv").await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.contact(&a, &kevin.id).await.unwrap().as_ref(),
        Some(&kevin)
    );
    assert_eq!(conn.contact(&a, "ZZZZZZZZZZZZZZZZ").await.unwrap(), None);
    let mut both = conn
        .contacts_by_ids(
            &a,
            &[marv.id.clone(), kevin.id.clone(), "ZZZZZZZZZZZZZZZZ".into()],
        )
        .await
        .unwrap();
    both.sort_by(|x, y| x.username.cmp(&y.username));
    assert_eq!(both, [kevin.clone(), marv.clone()]);
    assert!(conn.contacts_by_ids(&a, &[]).await.unwrap().is_empty());
    assert!(!conn.contact_has_messages(&a, &kevin.id).await.unwrap());
    drop(conn);

    // Update every mutable field.
    kevin.username = "kevin.mccallister".to_owned();
    kevin.phone_number = "+1 555 0100".to_owned();
    kevin.avatar_url = Some("https://example.com/kevin.png".to_owned());
    kevin.display_name = Some("Kevin McCallister".to_owned());
    kevin.last_active_at = Some(ids::now());
    let mut tx = begin(&store).await;
    tx.update_contact(&a, &kevin).await.unwrap();
    assert_eq!(
        tx.contact(&a, &kevin.id).await.unwrap().as_ref(),
        Some(&kevin)
    );
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.contact(&a, &kevin.id).await.unwrap().as_ref(),
        Some(&kevin)
    );
    drop(conn);

    // Usernames are unique per account, on insert and on update; a failed
    // write keeps nothing of its transaction.
    let harry = contact("harry");
    let mut tx = begin(&store).await;
    tx.insert_contact(&a, &harry).await.unwrap();
    assert_conflict(tx.insert_contact(&a, &contact("marv")).await, "username");
    drop(tx);
    let mut tx = begin(&store).await;
    let mut renamed = marv.clone();
    renamed.username = kevin.username.clone();
    assert_conflict(tx.update_contact(&a, &renamed).await, "username");
    drop(tx);
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.contact(&a, &harry.id).await.unwrap(), None);
    assert_eq!(
        conn.contact(&a, &marv.id).await.unwrap().as_ref(),
        Some(&marv)
    );
    drop(conn);
    // Another account may use the same username.
    add_contact(&store, &b, "marv").await;

    // A conversation id is set on the contact once one exists.
    let conv = conversation_with_contact(&marv.id);
    let mut with_conv = marv.clone();
    with_conv.conversation_id = Some(conv.id.clone());
    let mut tx = begin(&store).await;
    tx.insert_conversation(&a, &conv).await.unwrap();
    tx.update_contact(&a, &with_conv).await.unwrap();
    tx.insert_message(&a, &message(&conv.id, Some(&marv.id), "Hi Kevin"))
        .await
        .unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.contact(&a, &marv.id).await.unwrap().as_ref(),
        Some(&with_conv)
    );
    assert!(conn.contact_has_messages(&a, &marv.id).await.unwrap());
    assert!(!conn.contact_has_messages(&a, &kevin.id).await.unwrap());
    drop(conn);

    // Delete.
    let mut tx = begin(&store).await;
    tx.delete_contact(&a, &kevin.id).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.contact(&a, &kevin.id).await.unwrap(), None);
    let listed = conn.list_contacts(&a, &page(10)).await.unwrap();
    assert_eq!(
        ids_of(&listed.items, |c| &c.id),
        std::slice::from_ref(&marv.id)
    );
    drop(conn);
    // The username is free again.
    add_contact(&store, &a, "kevin.mccallister").await;
}

async fn conversations(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let kevin = add_contact(&store, &a, "kevin").await;
    let family = group("family");
    let mut with_kevin = conversation_with_contact(&kevin.id);
    with_kevin.last_active_at = Some(ids::now());
    let mut with_family = conversation_with_group(&family.id);
    let mut tx = begin(&store).await;
    tx.insert_group(&a, &family).await.unwrap();
    tx.insert_conversation(&a, &with_kevin).await.unwrap();
    tx.insert_conversation(&a, &with_family).await.unwrap();
    commit(tx).await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.conversation(&a, &with_kevin.id)
            .await
            .unwrap()
            .as_ref(),
        Some(&with_kevin)
    );
    assert_eq!(
        conn.conversation(&a, &with_family.id)
            .await
            .unwrap()
            .as_ref(),
        Some(&with_family)
    );
    drop(conn);

    // One conversation per contact and per group.
    let mut tx = begin(&store).await;
    assert_conflict(
        tx.insert_conversation(&a, &conversation_with_contact(&kevin.id))
            .await,
        "conversation participant",
    );
    drop(tx);
    let mut tx = begin(&store).await;
    assert_conflict(
        tx.insert_conversation(&a, &conversation_with_group(&family.id))
            .await,
        "conversation participant",
    );
    drop(tx);

    // Update every mutable field.
    let pinned = add_message(&store, &a, &with_family.id, "pin me").await;
    with_family.pinned_message_id = Some(pinned.id.clone());
    with_family.is_pinned = true;
    with_family.is_muted = true;
    with_family.last_active_at = Some(ids::now());
    with_family.last_opened_at = Some(ids::now());
    with_family.archived_at = Some(ids::now());
    let mut tx = begin(&store).await;
    tx.update_conversation(&a, &with_family).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.conversation(&a, &with_family.id)
            .await
            .unwrap()
            .as_ref(),
        Some(&with_family)
    );
    drop(conn);

    // Delete (the domain deletes its messages first).
    let mut tx = begin(&store).await;
    tx.delete_message(&a, &pinned.id).await.unwrap();
    tx.delete_conversation(&a, &with_family.id).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.conversation(&a, &with_family.id).await.unwrap(), None);
    let listed = conn
        .list_conversations(&a, &ConversationFilter::default(), &page(10))
        .await
        .unwrap();
    assert_eq!(ids_of(&listed.items, |c| &c.id), [with_kevin.id.clone()]);
    drop(conn);
    // The group may have a conversation again.
    let mut tx = begin(&store).await;
    tx.insert_conversation(&a, &conversation_with_group(&family.id))
        .await
        .unwrap();
    commit(tx).await;
}

async fn messages(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let conv = add_conversation(&store, &a, "kevin").await;
    let kevin = conv.contact_id.clone().unwrap();
    let mut m = message(&conv.id, Some(&kevin), "Keep the change, ya filthy animal");
    let mine = message(&conv.id, None, "Merry Christmas");
    let mut tx = begin(&store).await;
    tx.insert_message(&a, &m).await.unwrap();
    tx.insert_message(&a, &mine).await.unwrap();
    commit(tx).await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.message(&a, &m.id).await.unwrap().as_ref(), Some(&m));
    assert_eq!(
        conn.message(&a, &mine.id).await.unwrap().as_ref(),
        Some(&mine)
    );
    assert_eq!(
        conn.messages_in_conversation(&a, &conv.id).await.unwrap(),
        [m.clone(), mine.clone()],
        "oldest first"
    );
    drop(conn);

    // Update: text, reactions (JSON), read_at, updated_at.
    m.message = "Keep the change".to_owned();
    m.reactions = Json(vec![
        Reaction {
            contact_id: kevin.clone(),
            emoji: "👍".to_owned(),
            created_at: ids::now(),
        },
        Reaction {
            contact_id: kevin.clone(),
            emoji: "🎄".to_owned(),
            created_at: ids::now(),
        },
    ]);
    m.read_at = Some(ids::now());
    m.updated_at = ids::now() + 1;
    let mut tx = begin(&store).await;
    tx.update_message(&a, &m).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.message(&a, &m.id).await.unwrap().as_ref(), Some(&m));
    drop(conn);

    // A message's conversation and sender are checked by
    // `insert_message_referring` (below), not by the plain insert: on
    // PostgreSQL no foreign key checks them again (migration 0019).

    let mut tx = begin(&store).await;
    tx.delete_message(&a, &m.id).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.message(&a, &m.id).await.unwrap(), None);
    assert_eq!(
        conn.messages_in_conversation(&a, &conv.id).await.unwrap(),
        [mine]
    );
    assert!(!conn.contact_has_messages(&a, &kevin).await.unwrap());
}

/// A new message checks what it refers to, and writes nothing if that
/// fails: its conversation and sender are the account's, and the sender
/// takes part in the conversation (its contact, or a member of its group).
async fn messages_referring(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    let conv = add_conversation(&store, &a, "kevin").await;
    let kevin_id = conv.contact_id.clone().unwrap();
    let kevin = store
        .read()
        .await
        .unwrap()
        .contact(&a, &kevin_id)
        .await
        .unwrap();
    let marv = add_contact(&store, &a, "marv").await;
    let theirs = add_conversation(&store, &b, "harry").await;
    let harry_id = theirs.contact_id.clone().unwrap();
    let family = group("family");
    let family_conv = conversation_with_group(&family.id);
    let mut tx = begin(&store).await;
    tx.insert_group(&a, &family).await.unwrap();
    tx.set_group_members(&family.id, std::slice::from_ref(&marv.id))
        .await
        .unwrap();
    tx.insert_conversation(&a, &family_conv).await.unwrap();
    commit(tx).await;

    let refused = [
        (
            message("ZZZZZZZZZZZZZZZZ", None, "no such conversation"),
            NewMessage::NoConversation,
        ),
        (
            message(&theirs.id, None, "another account's conversation"),
            NewMessage::NoConversation,
        ),
        (
            message(&conv.id, Some("ZZZZZZZZZZZZZZZZ"), "no such sender"),
            NewMessage::NoSender,
        ),
        (
            message(&conv.id, Some(&harry_id), "another account's sender"),
            NewMessage::NoSender,
        ),
        (
            message(&conv.id, Some(&marv.id), "not this conversation's contact"),
            NewMessage::NotParticipant,
        ),
        (
            message(&family_conv.id, Some(&kevin_id), "not in the group"),
            NewMessage::NotParticipant,
        ),
    ];
    for (m, why) in &refused {
        let mut tx = begin(&store).await;
        assert_eq!(
            tx.insert_message_referring(&a, m).await.unwrap(),
            *why,
            "{}",
            m.message
        );
        commit(tx).await;
        let mut conn = store.read().await.unwrap();
        assert_eq!(
            conn.message(&a, &m.id).await.unwrap(),
            None,
            "{}",
            m.message
        );
    }

    let from_kevin = message(&conv.id, Some(&kevin_id), "Keep the change");
    let from_marv = message(&family_conv.id, Some(&marv.id), "Kevin!");
    let unsigned = message(&conv.id, None, "Merry Christmas");
    let mut tx = begin(&store).await;
    assert_eq!(
        tx.insert_message_referring(&a, &from_kevin).await.unwrap(),
        NewMessage::Inserted {
            sender: kevin.clone()
        }
    );
    assert_eq!(
        tx.insert_message_referring(&a, &from_marv).await.unwrap(),
        NewMessage::Inserted {
            sender: Some(marv.clone())
        }
    );
    assert_eq!(
        tx.insert_message_referring(&a, &unsigned).await.unwrap(),
        NewMessage::Inserted { sender: None }
    );
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    for m in [&from_kevin, &from_marv, &unsigned] {
        assert_eq!(conn.message(&a, &m.id).await.unwrap().as_ref(), Some(m));
    }
}

async fn groups(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let kevin = add_contact(&store, &a, "kevin").await;
    let buzz = add_contact(&store, &a, "buzz").await;
    let fuller = add_contact(&store, &a, "fuller").await;
    let mut family = group("family");
    let other = group("wet bandits");
    let mut tx = begin(&store).await;
    tx.insert_group(&a, &family).await.unwrap();
    tx.insert_group(&a, &other).await.unwrap();
    // Members keep the order they were given in.
    tx.set_group_members(
        &family.id,
        &[fuller.id.clone(), kevin.id.clone(), buzz.id.clone()],
    )
    .await
    .unwrap();
    tx.set_group_members(&other.id, std::slice::from_ref(&kevin.id))
        .await
        .unwrap();
    commit(tx).await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.group(&a, &family.id).await.unwrap().as_ref(),
        Some(&family)
    );
    assert_eq!(
        conn.group_members(&family.id).await.unwrap(),
        [fuller.id.clone(), kevin.id.clone(), buzz.id.clone()]
    );
    assert_eq!(
        conn.groups_with_member(&a, &kevin.id).await.unwrap(),
        [family.id.clone(), other.id.clone()]
    );
    assert_eq!(
        conn.groups_with_member(&a, &buzz.id).await.unwrap(),
        [family.id.clone()]
    );
    drop(conn);

    // Replacing the members; a contact is a member once.
    let mut tx = begin(&store).await;
    tx.set_group_members(&family.id, &[buzz.id.clone(), kevin.id.clone()])
        .await
        .unwrap();
    commit(tx).await;
    let mut tx = begin(&store).await;
    assert_conflict(
        tx.set_group_members(&family.id, &[buzz.id.clone(), buzz.id.clone()])
            .await,
        "group member",
    );
    drop(tx);
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.group_members(&family.id).await.unwrap(),
        [buzz.id.clone(), kevin.id.clone()]
    );
    assert!(
        conn.groups_with_member(&a, &fuller.id)
            .await
            .unwrap()
            .is_empty()
    );
    drop(conn);

    // Update every mutable field.
    family.name = "McCallisters".to_owned();
    family.description = None;
    family.avatar_url = Some("https://example.com/family.png".to_owned());
    family.conversation_id = Some(ids::new_id());
    family.archived_at = Some(ids::now());
    let mut tx = begin(&store).await;
    tx.update_group(&a, &family).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.group(&a, &family.id).await.unwrap().as_ref(),
        Some(&family)
    );
    drop(conn);

    // Deleting a group deletes its memberships.
    let mut tx = begin(&store).await;
    tx.delete_group(&a, &family.id).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.group(&a, &family.id).await.unwrap(), None);
    assert!(conn.group_members(&family.id).await.unwrap().is_empty());
    assert_eq!(
        conn.groups_with_member(&a, &kevin.id).await.unwrap(),
        std::slice::from_ref(&other.id)
    );
    drop(conn);
    // Its members can be deleted now (no membership refers to them).
    let mut tx = begin(&store).await;
    tx.delete_contact(&a, &buzz.id).await.unwrap();
    commit(tx).await;
}

async fn attachments(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let conv = add_conversation(&store, &a, "kevin").await;
    let m1 = add_message(&store, &a, &conv.id, "itinerary").await;
    let m2 = add_message(&store, &a, &conv.id, "photos").await;
    let mut pdf = attachment(&m1.id, "itinerary.pdf");
    let ticket = attachment(&m1.id, "ticket.pdf");
    let photo = attachment(&m2.id, "house.jpg");
    let mut tx = begin(&store).await;
    for att in [&pdf, &ticket, &photo] {
        tx.insert_attachment(&a, att).await.unwrap();
    }
    commit(tx).await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.attachment(&a, &pdf.id).await.unwrap().as_ref(),
        Some(&pdf)
    );
    assert_eq!(
        conn.attachments_of_message(&a, &m1.id).await.unwrap(),
        [pdf.clone(), ticket.clone()],
        "oldest first"
    );
    drop(conn);

    // Only the filename changes.
    pdf.filename = "itinerary-final.pdf".to_owned();
    let mut changed = pdf.clone();
    changed.file_type = "text/plain".to_owned();
    changed.file_size = 1;
    let mut tx = begin(&store).await;
    tx.update_attachment(&a, &changed).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.attachment(&a, &pdf.id).await.unwrap().as_ref(),
        Some(&pdf)
    );
    drop(conn);

    // An attachment needs its message.
    let mut tx = begin(&store).await;
    assert!(
        tx.insert_attachment(&a, &attachment("ZZZZZZZZZZZZZZZZ", "orphan.txt"))
            .await
            .is_err(),
        "an attachment of a message that does not exist"
    );
    drop(tx);

    let mut tx = begin(&store).await;
    tx.delete_attachment(&a, &ticket.id).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.attachment(&a, &ticket.id).await.unwrap(), None);
    assert_eq!(
        conn.attachments_of_message(&a, &m1.id).await.unwrap(),
        [pdf]
    );
    assert_eq!(
        conn.attachments_of_message(&a, &m2.id).await.unwrap(),
        [photo]
    );
}
