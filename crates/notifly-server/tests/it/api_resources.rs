//! CRUD for every resource, and the exact events each operation writes to the
//! account's log: their types in order, and each payload equal to the REST
//! representation at that moment (for `*.deleted`, the object as it was).

use crate::common::{Client, TestServer, UNKNOWN_ID, assert_invalid, id_of};
use serde_json::{Value, json};

/// Asserts that the events after `mark` are exactly `expected`, in order.
#[track_caller]
fn assert_events(got: &[(String, Value)], expected: &[(&str, &Value)]) {
    let got_types: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    let want_types: Vec<&str> = expected.iter().map(|(t, _)| *t).collect();
    assert_eq!(got_types, want_types, "event types");
    for (i, ((t, payload), (_, want))) in got.iter().zip(expected).enumerate() {
        assert_eq!(payload, *want, "payload of event #{i} ({t})");
    }
}

/// The events written since `mark`, checked against `expected`.
async fn expect_events(c: &Client, mark: usize, expected: &[(&str, &Value)]) {
    let got = c.events_since(mark).await;
    assert_events(&got, expected);
}

async fn get_ok(c: &Client, path: &str) -> Value {
    let (status, body) = c.get(path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

#[tokio::test]
async fn contacts_crud_and_events() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;

    let (status, created) = c
        .post(
            "/v1/contacts",
            json!({
                "username": "KevinMcCallister",
                "phone_number": "1-800-759-3000",
                "avatar_url": "https://example.com/kevin.png",
                "display_name": "Kevin",
            }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = id_of(&created).to_owned();
    assert_eq!(id.len(), 16);
    assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
    assert_eq!(created["username"], "KevinMcCallister");
    assert_eq!(created["phone_number"], "1-800-759-3000");
    assert_eq!(created["avatar_url"], "https://example.com/kevin.png");
    assert_eq!(created["display_name"], "Kevin");
    assert_eq!(created["conversation_id"], Value::Null);
    assert_eq!(created["last_active_at"], Value::Null);
    assert!(created["created_at"].as_i64().unwrap() > 1_600_000_000);
    expect_events(&c, 0, &[("contact.created", &created)]).await;

    let path = format!("/v1/contacts/{id}");
    assert_eq!(get_ok(&c, &path).await, created);
    let listed = c.list_all("/v1/contacts").await;
    assert_eq!(listed, vec![created.clone()]);

    // A partial update changes only what it names.
    let mark = c.event_count().await;
    let (status, updated) = c
        .put(
            &path,
            json!({"display_name": "Kevin M.", "last_active_at": 1_700_000_000}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    let mut expected = created.clone();
    expected["display_name"] = json!("Kevin M.");
    expected["last_active_at"] = json!(1_700_000_000);
    assert_eq!(updated, expected);
    assert_eq!(get_ok(&c, &path).await, updated);
    expect_events(&c, mark, &[("contact.updated", &updated)]).await;

    // A PUT that changes nothing emits nothing.
    let mark = c.event_count().await;
    for body in [
        json!({}),
        json!({"display_name": "Kevin M."}),
        json!({"username": "KevinMcCallister", "avatar_url": "https://example.com/kevin.png"}),
    ] {
        let (status, same) = c.put(&path, body).await;
        assert_eq!(status, 200, "{same}");
        assert_eq!(same, updated);
    }
    expect_events(&c, mark, &[]).await;

    // `null` clears an optional field.
    let (status, cleared) = c.put(&path, json!({"avatar_url": null})).await;
    assert_eq!(status, 200, "{cleared}");
    assert_eq!(cleared["avatar_url"], Value::Null);
    expect_events(&c, mark, &[("contact.updated", &cleared)]).await;

    // Usernames are unique within the account.
    let mark = c.event_count().await;
    let dup = c
        .post(
            "/v1/contacts",
            json!({"username": "KevinMcCallister", "phone_number": "123"}),
        )
        .await;
    assert_invalid(&dup, 409);
    let other = c.contact("Marv").await;
    let mark2 = c.event_count().await;
    let rename = c
        .put(
            &format!("/v1/contacts/{}", id_of(&other)),
            json!({"username": "KevinMcCallister"}),
        )
        .await;
    assert_invalid(&rename, 409);
    expect_events(&c, mark2, &[]).await;
    assert_eq!(mark2, mark + 1);

    // Delete answers the contact as it was and emits it.
    let (status, deleted) = c.delete(&path).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted, cleared);
    expect_events(&c, mark2, &[("contact.deleted", &cleared)]).await;
    assert_invalid(&c.get(&path).await, 404);
    assert_invalid(&c.delete(&path).await, 404);
    assert_invalid(&c.put(&path, json!({"display_name": "x"})).await, 404);
    assert_eq!(server.count("contacts").await, 1);
}

#[tokio::test]
async fn conversation_with_a_contact_and_its_cascades() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let contact = c.contact("buzz").await;
    let contact_path = format!("/v1/contacts/{}", id_of(&contact));

    let mark = c.event_count().await;
    let (status, conv) = c
        .post(
            "/v1/conversations",
            json!({"contact_id": id_of(&contact), "is_muted": true}),
        )
        .await;
    assert_eq!(status, 201, "{conv}");
    let conv_id = id_of(&conv).to_owned();
    let conv_path = format!("/v1/conversations/{conv_id}");
    assert_eq!(conv["contact_id"], json!(id_of(&contact)));
    assert_eq!(conv["group_id"], Value::Null);
    assert_eq!(conv["pinned_message_id"], Value::Null);
    assert_eq!(conv["is_pinned"], false);
    assert_eq!(conv["is_muted"], true);
    assert_eq!(conv["last_active_at"], Value::Null);
    assert_eq!(conv["last_opened_at"], Value::Null);
    assert_eq!(conv["archived_at"], Value::Null);
    assert_eq!(get_ok(&c, &conv_path).await, conv);
    // The contact now points at its conversation.
    let contact_now = get_ok(&c, &contact_path).await;
    assert_eq!(contact_now["conversation_id"], json!(conv_id));
    expect_events(
        &c,
        mark,
        &[
            ("conversation.created", &conv),
            ("contact.updated", &contact_now),
        ],
    )
    .await;

    // One conversation per contact; a contact with a conversation stays.
    let mark = c.event_count().await;
    assert_invalid(
        &c.post("/v1/conversations", json!({"contact_id": id_of(&contact)}))
            .await,
        409,
    );
    assert_invalid(&c.delete(&contact_path).await, 409);
    expect_events(&c, mark, &[]).await;
    assert_eq!(server.count("conversations").await, 1);
    assert_eq!(server.count("contacts").await, 1);

    // Updates.
    let (status, archived) = c
        .put(
            &conv_path,
            json!({"archived": true, "is_pinned": true, "last_opened_at": 1_700_000_100}),
        )
        .await;
    assert_eq!(status, 200, "{archived}");
    assert!(archived["archived_at"].as_i64().is_some(), "{archived}");
    assert_eq!(archived["is_pinned"], true);
    assert_eq!(archived["last_opened_at"], 1_700_000_100);
    assert_eq!(get_ok(&c, &conv_path).await, archived);
    expect_events(&c, mark, &[("conversation.updated", &archived)]).await;
    let mark = c.event_count().await;
    let (status, same) = c
        .put(&conv_path, json!({"archived": true, "is_muted": true}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(same, archived, "archiving again keeps archived_at");
    expect_events(&c, mark, &[]).await;
    let (status, unarchived) = c.put(&conv_path, json!({"archived": false})).await;
    assert_eq!(status, 200);
    assert_eq!(unarchived["archived_at"], Value::Null);
    expect_events(&c, mark, &[("conversation.updated", &unarchived)]).await;

    // Messages and an attachment inside it, and a pin.
    let m1 = c.message(&conv_id, "first").await;
    let m2 = c.message(&conv_id, "second").await;
    let att = c.attachment(id_of(&m1), "notes.txt").await;
    let (status, pinned) = c
        .put(&conv_path, json!({"pinned_message_id": id_of(&m2)}))
        .await;
    assert_eq!(status, 200, "{pinned}");
    assert_eq!(pinned["pinned_message_id"], json!(id_of(&m2)));
    let m1_now = get_ok(&c, &format!("/v1/messages/{}", id_of(&m1))).await;
    let m2_now = get_ok(&c, &format!("/v1/messages/{}", id_of(&m2))).await;
    assert_eq!(m1_now["attachments"], json!([att.clone()]));
    assert_eq!(server.attachment_files(), 1);

    // Deleting the conversation takes its messages and attachments with it.
    let mark = c.event_count().await;
    let (status, deleted) = c.delete(&conv_path).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted, pinned);
    let contact_after = get_ok(&c, &contact_path).await;
    assert_eq!(contact_after["conversation_id"], Value::Null);
    let mut expected_contact = contact_now.clone();
    expected_contact["conversation_id"] = Value::Null;
    assert_eq!(contact_after, expected_contact);
    expect_events(
        &c,
        mark,
        &[
            ("attachment.deleted", &att),
            ("message.deleted", &m1_now),
            ("message.deleted", &m2_now),
            ("contact.updated", &contact_after),
            ("conversation.deleted", &pinned),
        ],
    )
    .await;
    assert_invalid(&c.get(&conv_path).await, 404);
    assert_invalid(&c.get(&format!("/v1/messages/{}", id_of(&m1))).await, 404);
    assert_invalid(
        &c.get(&format!("/v1/attachments/{}", id_of(&att))).await,
        404,
    );
    assert_invalid(
        &c.get(&format!("/v1/attachments/{}/content", id_of(&att)))
            .await,
        404,
    );
    for table in ["conversations", "messages", "attachments"] {
        assert_eq!(server.count(table).await, 0, "{table}");
    }
    assert_eq!(
        server.attachment_files(),
        0,
        "the attachment's bytes are gone"
    );

    // Now the contact can go, and can get a new conversation before that.
    let again = c.conversation_with(id_of(&contact)).await;
    assert_ne!(id_of(&again), conv_id);
    let (status, _) = c
        .delete(&format!("/v1/conversations/{}", id_of(&again)))
        .await;
    assert_eq!(status, 200);
    let (status, gone) = c.delete(&contact_path).await;
    assert_eq!(status, 200, "{gone}");
}

#[tokio::test]
async fn conversation_create_needs_exactly_one_participant() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let contact = c.contact("a").await;
    let group = c.group("g", &[]).await;
    let before = server.counts().await;
    assert_invalid(&c.post("/v1/conversations", json!({})).await, 422);
    assert_invalid(
        &c.post(
            "/v1/conversations",
            json!({"contact_id": id_of(&contact), "group_id": id_of(&group)}),
        )
        .await,
        422,
    );
    assert_eq!(server.counts().await, before);
}

#[tokio::test]
async fn groups_crud_membership_and_conversation() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let a = c.contact("alice").await;
    let b = c.contact("bob").await;
    let d = c.contact("dave").await;

    let mark = c.event_count().await;
    let (status, group) = c
        .post(
            "/v1/groups",
            json!({
                "name": "Family",
                "description": "The McCallisters",
                "avatar_url": "http://example.com/family.png",
                "contacts": [id_of(&b), id_of(&a)],
            }),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let gid = id_of(&group).to_owned();
    let gpath = format!("/v1/groups/{gid}");
    assert_eq!(group["name"], "Family");
    assert_eq!(group["description"], "The McCallisters");
    assert_eq!(group["avatar_url"], "http://example.com/family.png");
    assert_eq!(group["conversation_id"], Value::Null);
    assert_eq!(group["archived_at"], Value::Null);
    assert_eq!(
        group["contacts"],
        json!([b.clone(), a.clone()]),
        "members embedded in the order given"
    );
    assert_eq!(get_ok(&c, &gpath).await, group);
    assert_eq!(c.list_all("/v1/groups").await, vec![group.clone()]);
    expect_events(&c, mark, &[("group.created", &group)]).await;

    // Updates: the member list is replaced; an identical PUT emits nothing.
    let mark = c.event_count().await;
    let (status, renamed) = c
        .put(
            &gpath,
            json!({"name": "Family (US)", "contacts": [id_of(&a), id_of(&d)]}),
        )
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["name"], "Family (US)");
    assert_eq!(renamed["contacts"], json!([a.clone(), d.clone()]));
    assert_eq!(get_ok(&c, &gpath).await, renamed);
    let (status, same) = c
        .put(
            &gpath,
            json!({"name": "Family (US)", "contacts": [id_of(&a), id_of(&d)]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(same, renamed);
    let (status, same) = c.put(&gpath, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(same, renamed);
    expect_events(&c, mark, &[("group.updated", &renamed)]).await;

    let mark = c.event_count().await;
    let (status, archived) = c
        .put(&gpath, json!({"archived": true, "description": null}))
        .await;
    assert_eq!(status, 200);
    assert!(archived["archived_at"].as_i64().is_some());
    assert_eq!(archived["description"], Value::Null);
    expect_events(&c, mark, &[("group.updated", &archived)]).await;

    // Deleting a member contact removes it from the group first.
    let mark = c.event_count().await;
    let (status, gone) = c.delete(&format!("/v1/contacts/{}", id_of(&d))).await;
    assert_eq!(status, 200, "{gone}");
    assert_eq!(gone, d);
    let without_d = get_ok(&c, &gpath).await;
    assert_eq!(without_d["contacts"], json!([a.clone()]));
    expect_events(
        &c,
        mark,
        &[("group.updated", &without_d), ("contact.deleted", &d)],
    )
    .await;

    // The group's conversation.
    let mark = c.event_count().await;
    let (status, conv) = c.post("/v1/conversations", json!({"group_id": gid})).await;
    assert_eq!(status, 201, "{conv}");
    assert_eq!(conv["group_id"], json!(gid));
    assert_eq!(conv["contact_id"], Value::Null);
    let group_now = get_ok(&c, &gpath).await;
    assert_eq!(group_now["conversation_id"], json!(id_of(&conv)));
    expect_events(
        &c,
        mark,
        &[
            ("conversation.created", &conv),
            ("group.updated", &group_now),
        ],
    )
    .await;
    assert_invalid(
        &c.post("/v1/conversations", json!({"group_id": gid})).await,
        409,
    );

    // Members can send; others cannot.
    let (status, from_a) = c
        .post(
            "/v1/messages",
            json!({"conversation_id": id_of(&conv), "message": "hi", "contact_id": id_of(&a)}),
        )
        .await;
    assert_eq!(status, 201, "{from_a}");
    assert_eq!(from_a["contact"], a);
    let before = server.counts().await;
    assert_invalid(
        &c.post(
            "/v1/messages",
            json!({"conversation_id": id_of(&conv), "message": "hi", "contact_id": id_of(&b)}),
        )
        .await,
        422,
    );
    assert_eq!(server.counts().await, before);
    // A contact who sent messages cannot be deleted.
    assert_invalid(&c.delete(&format!("/v1/contacts/{}", id_of(&a))).await, 409);
    assert_eq!(server.counts().await, before);

    // Deleting the group deletes its conversation and messages.
    let mark = c.event_count().await;
    let (status, deleted) = c.delete(&gpath).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted, group_now);
    expect_events(
        &c,
        mark,
        &[
            ("message.deleted", &from_a),
            ("conversation.deleted", &conv),
            ("group.deleted", &group_now),
        ],
    )
    .await;
    assert_invalid(&c.get(&gpath).await, 404);
    assert_invalid(
        &c.get(&format!("/v1/conversations/{}", id_of(&conv))).await,
        404,
    );
    for table in ["groups", "group_members", "conversations", "messages"] {
        assert_eq!(server.count(table).await, 0, "{table}");
    }
    // The contacts stay.
    assert_eq!(get_ok(&c, &format!("/v1/contacts/{}", id_of(&a))).await, a);
}

#[tokio::test]
async fn deleting_a_group_conversation_detaches_the_group() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let member = c.contact("alice").await;
    let group = c.group("family", &[id_of(&member)]).await;
    let gpath = format!("/v1/groups/{}", id_of(&group));
    let (status, conv) = c
        .post("/v1/conversations", json!({"group_id": id_of(&group)}))
        .await;
    assert_eq!(status, 201, "{conv}");
    let msg = c.message(id_of(&conv), "hello family").await;

    let mark = c.event_count().await;
    let (status, deleted) = c
        .delete(&format!("/v1/conversations/{}", id_of(&conv)))
        .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted, conv);
    let group_now = get_ok(&c, &gpath).await;
    assert_eq!(group_now["conversation_id"], Value::Null);
    assert_eq!(
        group_now, group,
        "the group is as it was before its conversation"
    );
    expect_events(
        &c,
        mark,
        &[
            ("message.deleted", &msg),
            ("group.updated", &group_now),
            ("conversation.deleted", &conv),
        ],
    )
    .await;
    // The group can start a new conversation.
    let (status, again) = c
        .post("/v1/conversations", json!({"group_id": id_of(&group)}))
        .await;
    assert_eq!(status, 201, "{again}");
}

#[tokio::test]
async fn messages_crud_reactions_and_pins() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let contact = c.contact("kevin").await;
    let conv = c.conversation_with(id_of(&contact)).await;
    let conv_id = id_of(&conv).to_owned();
    let contact = get_ok(&c, &format!("/v1/contacts/{}", id_of(&contact))).await;

    let mark = c.event_count().await;
    let (status, msg) = c
        .post(
            "/v1/messages",
            json!({
                "conversation_id": conv_id,
                "message": "I’m traveling with my dad.",
                "contact_id": id_of(&contact),
            }),
        )
        .await;
    assert_eq!(status, 201, "{msg}");
    let mid = id_of(&msg).to_owned();
    let mpath = format!("/v1/messages/{mid}");
    assert_eq!(msg["conversation_id"], json!(conv_id));
    assert_eq!(msg["contact"], contact, "the sender is embedded");
    assert_eq!(msg["message"], "I’m traveling with my dad.");
    assert_eq!(msg["reactions"], json!([]));
    assert_eq!(msg["attachments"], json!([]));
    assert_eq!(msg["read_at"], Value::Null);
    assert_eq!(msg["created_at"], msg["updated_at"]);
    assert_eq!(get_ok(&c, &mpath).await, msg);
    expect_events(&c, mark, &[("message.created", &msg)]).await;

    // What a message refers to is checked; a refused one writes nothing.
    let marv = c.contact("marv").await;
    let other = server.account("globex").await;
    let theirs = other.contact("harry").await;
    let mark = c.event_count().await;
    for (body, names) in [
        (
            json!({"conversation_id": "ZZZZZZZZZZZZZZZZ", "message": "hi"}),
            "conversation_id: no conversation",
        ),
        (
            json!({"conversation_id": conv_id, "message": "hi", "contact_id": "ZZZZZZZZZZZZZZZZ"}),
            "contact_id: no contact",
        ),
        (
            json!({"conversation_id": conv_id, "message": "hi", "contact_id": id_of(&theirs)}),
            "contact_id: no contact",
        ),
        (
            json!({"conversation_id": conv_id, "message": "hi", "contact_id": id_of(&marv)}),
            "is not a participant",
        ),
    ] {
        let got = c.post("/v1/messages", body.clone()).await;
        assert_invalid(&got, 422);
        let message = got.1["message"].as_str().unwrap();
        assert!(message.contains(names), "{body}: {message}");
    }
    assert_eq!(
        c.event_count().await,
        mark,
        "a refused message emits nothing"
    );
    let listed = c
        .list_all(&format!("/v1/messages?conversation_id={conv_id}"))
        .await;
    assert_eq!(
        listed.len(),
        1,
        "only the first message was written: {listed:?}"
    );

    // Sent by the account itself: no contact.
    let own = c.message(&conv_id, "from us").await;
    assert_eq!(own["contact"], Value::Null);

    // Update text, read_at and reactions.
    let mark = c.event_count().await;
    let (status, edited) = c
        .put(
            &mpath,
            json!({
                "message": "edited",
                "read_at": 1_700_000_000,
                "reactions": [{"contact_id": id_of(&contact), "emoji": "👍"}],
            }),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["message"], "edited");
    assert_eq!(edited["read_at"], 1_700_000_000);
    let reactions = edited["reactions"].as_array().unwrap();
    assert_eq!(reactions.len(), 1);
    assert_eq!(reactions[0]["contact_id"], json!(id_of(&contact)));
    assert_eq!(reactions[0]["emoji"], "👍");
    assert!(reactions[0]["created_at"].as_i64().is_some());
    assert!(edited["updated_at"].as_i64() >= msg["updated_at"].as_i64());
    assert_eq!(get_ok(&c, &mpath).await, edited);
    // The same values again change nothing (reactions keep their created_at).
    let (status, same) = c
        .put(
            &mpath,
            json!({
                "message": "edited",
                "reactions": [{"contact_id": id_of(&contact), "emoji": "👍"}],
            }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(same, edited);
    expect_events(&c, mark, &[("message.updated", &edited)]).await;

    let mark = c.event_count().await;
    let (status, cleared) = c
        .put(&mpath, json!({"reactions": null, "read_at": null}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(cleared["reactions"], json!([]));
    assert_eq!(cleared["read_at"], Value::Null);
    expect_events(&c, mark, &[("message.updated", &cleared)]).await;

    // Filter by conversation.
    let listed = c
        .list_all(&format!("/v1/messages?conversation_id={conv_id}"))
        .await;
    assert_eq!(listed, vec![own.clone(), cleared.clone()]);

    // Deleting a pinned message unpins it.
    let conv_path = format!("/v1/conversations/{conv_id}");
    let (status, pinned) = c.put(&conv_path, json!({"pinned_message_id": mid})).await;
    assert_eq!(status, 200, "{pinned}");
    let mark = c.event_count().await;
    let (status, deleted) = c.delete(&mpath).await;
    assert_eq!(status, 200);
    assert_eq!(deleted, cleared);
    let unpinned = get_ok(&c, &conv_path).await;
    assert_eq!(unpinned["pinned_message_id"], Value::Null);
    let mut expected = pinned.clone();
    expected["pinned_message_id"] = Value::Null;
    assert_eq!(unpinned, expected);
    expect_events(
        &c,
        mark,
        &[
            ("conversation.updated", &unpinned),
            ("message.deleted", &cleared),
        ],
    )
    .await;
    assert_invalid(&c.get(&mpath).await, 404);

    // An unpinned message's deletion emits only its own event.
    let mark = c.event_count().await;
    let (status, _) = c.delete(&format!("/v1/messages/{}", id_of(&own))).await;
    assert_eq!(status, 200);
    expect_events(&c, mark, &[("message.deleted", &own)]).await;
    assert_eq!(server.count("messages").await, 0);
}

#[tokio::test]
async fn attachments_upload_download_update_delete() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let conv = c.conversation("kevin").await;
    let msg = c.message(id_of(&conv), "see attached").await;
    let mid = id_of(&msg).to_owned();
    let png: Vec<u8> = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]
        .into_iter()
        .chain((0..=255u8).cycle().take(3000))
        .collect();

    let mark = c.event_count().await;
    let (status, att) = c.upload(&mid, "photo.png", "image/png", &png).await;
    assert_eq!(status, 201, "{att}");
    let aid = id_of(&att).to_owned();
    let apath = format!("/v1/attachments/{aid}");
    assert_eq!(att["message_id"], json!(mid));
    assert_eq!(att["filename"], "photo.png");
    assert_eq!(att["file_type"], "image/png");
    assert_eq!(att["file_size"], json!(png.len()));
    assert_eq!(
        att["file_url"],
        json!(server.url(&format!("/v1/attachments/{aid}/content")))
    );
    assert!(att["created_at"].as_i64().is_some());
    assert_eq!(get_ok(&c, &apath).await, att);
    let msg_now = get_ok(&c, &format!("/v1/messages/{mid}")).await;
    assert_eq!(msg_now["attachments"], json!([att.clone()]));
    expect_events(
        &c,
        mark,
        &[("attachment.created", &att), ("message.updated", &msg_now)],
    )
    .await;

    // The bytes come back at file_url, as a download with the right type.
    let reply = c
        .send_raw(
            c.http
                .get(att["file_url"].as_str().unwrap())
                .bearer_auth(c.key.as_deref().unwrap()),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.bytes, png);
    assert_eq!(reply.header("content-type").as_deref(), Some("image/png"));
    let disposition = reply.header("content-disposition").unwrap_or_default();
    assert!(
        disposition.starts_with("attachment"),
        "content-disposition: {disposition}"
    );
    assert!(disposition.contains("photo.png"), "{disposition}");
    // Without the key there is nothing.
    let anonymous = server.anonymous();
    assert_invalid(
        &anonymous
            .get(&format!("/v1/attachments/{aid}/content"))
            .await,
        401,
    );

    // Lists, with and without the message filter.
    let second = c.attachment(&mid, "notes.txt").await;
    assert_eq!(
        c.list_all(&format!("/v1/attachments?message_id={mid}"))
            .await,
        vec![second.clone(), att.clone()]
    );
    assert_eq!(
        c.list_all(&format!("/v1/attachments?message_id={UNKNOWN_ID}"))
            .await,
        Vec::<Value>::new()
    );

    // Rename: attachment.updated and message.updated.
    let mark = c.event_count().await;
    let (status, renamed) = c.put(&apath, json!({"filename": "kevin.png"})).await;
    assert_eq!(status, 200, "{renamed}");
    let mut expected = att.clone();
    expected["filename"] = json!("kevin.png");
    assert_eq!(renamed, expected);
    assert_eq!(get_ok(&c, &apath).await, renamed);
    let msg_now = get_ok(&c, &format!("/v1/messages/{mid}")).await;
    assert_eq!(
        msg_now["attachments"],
        json!([renamed.clone(), second.clone()])
    );
    let (status, same) = c.put(&apath, json!({"filename": "kevin.png"})).await;
    assert_eq!(status, 200);
    assert_eq!(same, renamed);
    let (status, same) = c.put(&apath, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(same, renamed);
    expect_events(
        &c,
        mark,
        &[
            ("attachment.updated", &renamed),
            ("message.updated", &msg_now),
        ],
    )
    .await;
    let reply = c
        .send_raw(c.request(reqwest::Method::GET, &format!("{apath}/content")))
        .await;
    assert!(
        reply
            .header("content-disposition")
            .unwrap_or_default()
            .contains("kevin.png")
    );

    // Delete: attachment.deleted and message.updated; the bytes go too.
    assert_eq!(server.attachment_files(), 2);
    let mark = c.event_count().await;
    let (status, deleted) = c.delete(&apath).await;
    assert_eq!(status, 200);
    assert_eq!(deleted, renamed);
    let msg_now = get_ok(&c, &format!("/v1/messages/{mid}")).await;
    assert_eq!(msg_now["attachments"], json!([second.clone()]));
    expect_events(
        &c,
        mark,
        &[
            ("attachment.deleted", &renamed),
            ("message.updated", &msg_now),
        ],
    )
    .await;
    assert_invalid(&c.get(&apath).await, 404);
    assert_invalid(&c.get(&format!("{apath}/content")).await, 404);
    assert_eq!(server.attachment_files(), 1);

    // Deleting the message deletes its remaining attachment first.
    let mark = c.event_count().await;
    let (status, _) = c.delete(&format!("/v1/messages/{mid}")).await;
    assert_eq!(status, 200);
    expect_events(
        &c,
        mark,
        &[
            ("attachment.deleted", &second),
            ("message.deleted", &msg_now),
        ],
    )
    .await;
    assert_eq!(server.count("attachments").await, 0);
    assert_eq!(server.attachment_files(), 0);
}

#[tokio::test]
async fn attachment_file_names_and_types_are_sanitised() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let conv = c.conversation("kevin").await;
    let msg = c.message(id_of(&conv), "files").await;

    // Only the last path segment of the name is kept.
    let (status, att) = c
        .upload(id_of(&msg), "../../etc/passwd.txt", "text/plain", b"x")
        .await;
    assert_eq!(status, 201, "{att}");
    assert_eq!(att["filename"], "passwd.txt");

    // Media type parameters are dropped; the download carries the stored type.
    let (status, att) = c
        .upload(
            id_of(&msg),
            "page.html",
            "Text/HTML; charset=utf-8",
            b"<script>alert(1)</script>",
        )
        .await;
    assert_eq!(status, 201, "{att}");
    assert_eq!(att["file_type"], "text/html");
    let reply = c
        .send_raw(c.request(
            reqwest::Method::GET,
            &format!("/v1/attachments/{}/content", id_of(&att)),
        ))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type").as_deref(), Some("text/html"));
    assert!(
        reply
            .header("content-disposition")
            .unwrap_or_default()
            .starts_with("attachment"),
        "HTML is served as a download, never inline"
    );
    assert_eq!(reply.bytes, b"<script>alert(1)</script>");

    // A file part without a content type is stored as application/octet-stream.
    let part = reqwest::multipart::Part::bytes(b"raw".to_vec()).file_name("blob.bin");
    let form = reqwest::multipart::Form::new()
        .text("message_id", id_of(&msg).to_owned())
        .part("file", part);
    let (status, att) = c
        .send(
            c.request(reqwest::Method::POST, "/v1/attachments")
                .multipart(form),
        )
        .await;
    assert_eq!(status, 201, "{att}");
    assert_eq!(att["file_type"], "application/octet-stream");
}

/// The attachment limit is its own: with the default 1 MiB JSON body limit, a
/// 1.5 MiB file within a 4 MiB attachment limit is accepted.
#[tokio::test]
async fn attachments_are_limited_by_the_attachment_limit_not_the_json_limit() {
    let server = TestServer::start_with(|config| {
        config.max_body_bytes = 1024 * 1024;
        config.max_attachment_bytes = 4 * 1024 * 1024;
    })
    .await;
    let c = server.account("acme").await;
    let conv = c.conversation("kevin").await;
    let msg = c.message(id_of(&conv), "big file").await;
    let data: Vec<u8> = (0..1536 * 1024).map(|i| (i % 251) as u8).collect();
    let (status, att) = c
        .upload(id_of(&msg), "big.bin", "application/octet-stream", &data)
        .await;
    assert_eq!(status, 201, "{att}");
    assert_eq!(att["file_size"], json!(data.len()));
    let reply = c
        .send_raw(c.request(
            reqwest::Method::GET,
            &format!("/v1/attachments/{}/content", id_of(&att)),
        ))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.bytes, data);
}

#[tokio::test]
async fn events_read_back_by_id_match_the_log() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let contact = c.contact("kevin").await;
    c.conversation_with(id_of(&contact)).await;
    let events = c.events().await;
    assert_eq!(events.len(), 3);
    let mut seen = std::collections::HashSet::new();
    for event in &events {
        let id = id_of(event);
        assert!(seen.insert(id.to_owned()), "duplicate event id {id}");
        assert_eq!(id.len(), 16);
        let keys: Vec<&str> = event
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in ["id", "type", "payload", "created_at"] {
            assert!(keys.contains(&key), "event lacks {key}: {event}");
        }
        assert_eq!(&get_ok(&c, &format!("/v1/events/{id}")).await, event);
    }
    assert_invalid(&c.get(&format!("/v1/events/{UNKNOWN_ID}")).await, 404);
}

#[tokio::test]
async fn server_stops_cleanly_on_shutdown() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    c.contact("kevin").await;
    server.stop().await;
}
