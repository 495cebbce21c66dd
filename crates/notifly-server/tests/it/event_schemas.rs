//! Every event body the server sends matches its schema in the OpenAPI
//! document's `webhooks` (see `api/catalogue.rs`): the examples and the
//! samples that test events carry, arbitrary resources of every kind, and
//! real deliveries of every event type to a real receiver.
//!
//! The check is strict (see `common/event_schemas.rs`): an object may hold
//! no property its schema does not describe, so a field the server starts
//! sending cannot go undocumented.

use std::collections::BTreeSet;
use std::time::Duration;

use notifly_server::api::catalogue;
use notifly_server::domain::groups::Group;
use notifly_server::domain::messages::Message;
use notifly_server::domain::samples;
use notifly_server::store::{Attachment, Contact, Conversation, Reaction};
use notifly_webhooks::{Action, AnyEventType, Envelope, EventType, ResourceKind};
use proptest::prelude::*;
use serde::Serialize;
use serde_json::{Value, json};

use crate::common::delivery_helpers::{DEADLINE, server, webhook};
use crate::common::event_schemas::EventSchemas;
use crate::common::receiver::Receiver;
use crate::common::{Client, id_of};

/// The catalogue's example body of type `t`, as JSON.
fn example(t: AnyEventType) -> Value {
    serde_json::to_value(catalogue::example(t)).unwrap()
}

fn envelope<P: Serialize>(t: impl Into<AnyEventType>, payload: &P) -> Value {
    serde_json::to_value(Envelope {
        id: "a056V7R7NmNRjl70".to_owned(),
        event_type: t.into(),
        payload,
    })
    .unwrap()
}

#[test]
fn every_event_type_has_a_schema_and_its_examples_match_it() {
    let schemas = EventSchemas::served();
    let all: BTreeSet<&str> = AnyEventType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(schemas.types(), all);
    for t in AnyEventType::ALL {
        schemas.check(&example(t)).unwrap();
        let fresh = samples::any_payload(t, "http://127.0.0.1:8080");
        schemas.check(&envelope(t, &fresh)).unwrap();
    }
}

#[test]
fn the_check_refuses_what_the_schema_does_not_describe() {
    let schemas = EventSchemas::served();
    let t = EventType::new(ResourceKind::Message, Action::Created);
    let good = example(t.into());
    let changed = |edit: &dyn Fn(&mut Value)| {
        let mut body = good.clone();
        edit(&mut body);
        schemas.check(&body)
    };
    assert!(changed(&|_| {}).is_ok());
    assert!(changed(&|b| b["payload"]["surprise"] = json!(1)).is_err());
    assert!(changed(&|b| b["payload"]["contact"]["surprise"] = json!(1)).is_err());
    assert!(changed(&|b| b["payload"]["created_at"] = json!("yesterday")).is_err());
    assert!(
        changed(&|b| b["payload"]
            .as_object_mut()
            .unwrap()
            .remove("id")
            .map(drop)
            .unwrap())
        .is_err()
    );
    assert!(changed(&|b| b["type"] = json!("contact.created")).is_err());
    assert!(changed(&|b| b["payload"]["attachments"] = json!([{"id": "x"}])).is_err());
    // The union of the whole operational payload: the delivery's fields
    // come from one part of an `allOf`, `last_attempt` from the other.
    let exhausted = example(AnyEventType::ALL[18]);
    assert_eq!(exhausted["type"], "delivery.exhausted");
    let mut extra = exhausted.clone();
    extra["payload"]["surprise"] = json!(true);
    assert!(schemas.check(&exhausted).is_ok());
    assert!(schemas.check(&extra).is_err());
}

// Arbitrary resources, as the server serializes them into payloads.

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[A-Za-z0-9]{16}"]
}

fn contact() -> impl Strategy<Value = Contact> {
    (
        text(),
        (text(), text()),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(any::<i64>()),
        any::<i64>(),
    )
        .prop_map(
            |(
                id,
                (username, phone_number),
                avatar_url,
                display_name,
                conversation_id,
                last_active_at,
                created_at,
            )| {
                Contact {
                    id,
                    username,
                    phone_number,
                    avatar_url,
                    display_name,
                    conversation_id,
                    last_active_at,
                    created_at,
                }
            },
        )
}

fn conversation() -> impl Strategy<Value = Conversation> {
    (
        text(),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(text()),
        any::<(bool, bool)>(),
        proptest::option::of(any::<i64>()),
        proptest::option::of(any::<i64>()),
        any::<i64>(),
        proptest::option::of(any::<i64>()),
    )
        .prop_map(
            |(
                id,
                contact_id,
                group_id,
                pinned_message_id,
                (is_pinned, is_muted),
                last_active_at,
                last_opened_at,
                created_at,
                archived_at,
            )| {
                Conversation {
                    id,
                    contact_id,
                    group_id,
                    pinned_message_id,
                    is_pinned,
                    is_muted,
                    last_active_at,
                    last_opened_at,
                    created_at,
                    archived_at,
                }
            },
        )
}

fn attachment() -> impl Strategy<Value = Attachment> {
    (
        text(),
        text(),
        text(),
        text(),
        text(),
        any::<i64>(),
        any::<i64>(),
    )
        .prop_map(
            |(id, message_id, filename, file_url, file_type, file_size, created_at)| Attachment {
                id,
                message_id,
                filename,
                file_url,
                file_type,
                file_size,
                created_at,
            },
        )
}

fn message() -> impl Strategy<Value = Message> {
    let reaction =
        (text(), text(), any::<i64>()).prop_map(|(contact_id, emoji, created_at)| Reaction {
            contact_id,
            emoji,
            created_at,
        });
    (
        (text(), text(), text()),
        proptest::option::of(contact()),
        proptest::collection::vec(reaction, 0..3),
        proptest::collection::vec(attachment(), 0..3),
        proptest::option::of(any::<i64>()),
        any::<(i64, i64)>(),
    )
        .prop_map(
            |(
                (id, conversation_id, message),
                contact,
                reactions,
                attachments,
                read_at,
                (created_at, updated_at),
            )| {
                Message {
                    id,
                    conversation_id,
                    contact,
                    message,
                    reactions,
                    attachments,
                    read_at,
                    created_at,
                    updated_at,
                }
            },
        )
}

fn group() -> impl Strategy<Value = Group> {
    (
        (text(), text()),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::collection::vec(contact(), 0..3),
        any::<i64>(),
        proptest::option::of(any::<i64>()),
    )
        .prop_map(
            |(
                (id, name),
                description,
                avatar_url,
                conversation_id,
                contacts,
                created_at,
                archived_at,
            )| {
                Group {
                    id,
                    name,
                    description,
                    avatar_url,
                    conversation_id,
                    contacts,
                    created_at,
                    archived_at,
                }
            },
        )
}

/// Every action of `kind` with `payload`.
fn check_every_action<P: Serialize>(schemas: &EventSchemas, kind: ResourceKind, payload: &P) {
    for action in Action::ALL {
        let body = envelope(EventType::new(kind, action), payload);
        if let Err(e) = schemas.check(&body) {
            panic!("{e}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_resource_the_server_serializes_matches_its_schema(
        contact in contact(),
        conversation in conversation(),
        message in message(),
        group in group(),
        attachment in attachment(),
    ) {
        let schemas = EventSchemas::served();
        check_every_action(schemas, ResourceKind::Contact, &contact);
        check_every_action(schemas, ResourceKind::Conversation, &conversation);
        check_every_action(schemas, ResourceKind::Message, &message);
        check_every_action(schemas, ResourceKind::Group, &group);
        check_every_action(schemas, ResourceKind::Attachment, &attachment);
    }
}

/// Makes every resource event type happen once through the API.
async fn every_resource_event(c: &Client) {
    let ok = |what: &str, (status, body): (u16, Value)| {
        assert!((200..300).contains(&status), "{what}: {status} {body}");
        body
    };
    let contact = c.contact("kevin").await;
    let contact_id = id_of(&contact).to_owned();
    let buzz = c.contact("buzz").await;
    ok(
        "update contact",
        c.put(
            &format!("/v1/contacts/{contact_id}"),
            json!({"display_name": "Kevin McCallister", "avatar_url": "https://assets.notifly.chat/k.jpg"}),
        )
        .await,
    );
    let conversation = c.conversation_with(&contact_id).await;
    let conversation_id = id_of(&conversation).to_owned();
    ok(
        "update conversation",
        c.put(
            &format!("/v1/conversations/{conversation_id}"),
            json!({"is_muted": true, "is_pinned": true}),
        )
        .await,
    );
    let message = ok(
        "create message",
        c.post(
            "/v1/messages",
            json!({"conversation_id": conversation_id, "contact_id": contact_id, "message": "Keep the change, ya filthy animal"}),
        )
        .await,
    );
    let message_id = id_of(&message).to_owned();
    let attachment = ok(
        "upload attachment",
        c.upload(&message_id, "itinerary.pdf", "application/pdf", b"%PDF-1.4")
            .await,
    );
    let attachment_id = id_of(&attachment).to_owned();
    ok(
        "update attachment",
        c.put(
            &format!("/v1/attachments/{attachment_id}"),
            json!({"filename": "trip.pdf"}),
        )
        .await,
    );
    ok(
        "update message",
        c.put(
            &format!("/v1/messages/{message_id}"),
            json!({"message": "Merry Christmas, ya filthy animal", "reactions": [{"contact_id": contact_id, "emoji": "🎄"}]}),
        )
        .await,
    );
    let group = c.group("Family", &[&contact_id, id_of(&buzz)]).await;
    let group_id = id_of(&group).to_owned();
    ok(
        "update group",
        c.put(
            &format!("/v1/groups/{group_id}"),
            json!({"description": "The McCallisters"}),
        )
        .await,
    );
    ok(
        "delete attachment",
        c.delete(&format!("/v1/attachments/{attachment_id}")).await,
    );
    ok(
        "delete message",
        c.delete(&format!("/v1/messages/{message_id}")).await,
    );
    ok(
        "delete group",
        c.delete(&format!("/v1/groups/{group_id}")).await,
    );
    ok(
        "delete conversation",
        c.delete(&format!("/v1/conversations/{conversation_id}"))
            .await,
    );
    ok(
        "delete contact",
        c.delete(&format!("/v1/contacts/{contact_id}")).await,
    );
}

#[tokio::test]
async fn every_delivery_matches_the_schema_of_its_type() {
    let receiver = Receiver::start().await;
    let server = server(|_| {}).await;
    let c = server.account("schemas").await;
    // The document as served, not as built in this process.
    let (status, doc) = server.anonymous().get("/openapi.json").await;
    assert_eq!(status, 200);
    let schemas = EventSchemas::of(&doc);

    let all: Vec<&str> = std::iter::once("*")
        .chain(
            AnyEventType::ALL
                .iter()
                .filter(|t| t.is_operational())
                .map(|t| t.as_str()),
        )
        .collect();
    let hook = webhook(&c, "everything", &receiver.url("/all"), &all).await;
    every_resource_event(&c).await;
    // And a test event of every type, with the samples they carry.
    for t in AnyEventType::ALL {
        let (status, body) = c
            .post(
                &format!("/v1/webhooks/{}/test", hook.id),
                json!({"type": t.as_str()}),
            )
            .await;
        assert_eq!(status, 202, "test {t}: {body}");
    }
    let events = c.events().await;
    let expected = events.len() + AnyEventType::ALL.len();
    let got = receiver.wait_for_path("/all", expected, DEADLINE).await;
    assert_eq!(got.len(), expected, "not every event was delivered");
    let mut seen = BTreeSet::new();
    for r in &got {
        let body = r.json();
        schemas.check(&body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.header("x-notifly-event-type"),
            body["type"].as_str().unwrap()
        );
        seen.insert(body["type"].as_str().unwrap().to_owned());
    }
    let resource_types: BTreeSet<String> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        resource_types.len(),
        EventType::ALL.len(),
        "the log lacks a type: {resource_types:?}"
    );
    assert_eq!(seen.len(), AnyEventType::ALL.len());
    // Nothing more arrives (a test event is sent once).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.count_to("/all"), expected);
}
