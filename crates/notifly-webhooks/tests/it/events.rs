//! Typed parsing of every event type, with payloads shaped like the server's
//! samples (`notifly-server/src/domain/samples.rs`) in `tests/data/payloads/`.

use notifly_webhooks::{
    Attachment, Contact, Conversation, Event, EventType, Group, Message, ResourceKind, WebhookEvent,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn fixture(kind: ResourceKind) -> Value {
    let raw = match kind {
        ResourceKind::Contact => include_str!("../data/payloads/contact.json"),
        ResourceKind::Conversation => include_str!("../data/payloads/conversation.json"),
        ResourceKind::Message => include_str!("../data/payloads/message.json"),
        ResourceKind::Group => include_str!("../data/payloads/group.json"),
        ResourceKind::Attachment => include_str!("../data/payloads/attachment.json"),
    };
    serde_json::from_str(raw).unwrap()
}

fn envelope(event_type: &str, payload: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"id": "a056V7R7NmNRjl70", "type": event_type, "payload": payload}))
        .unwrap()
}

fn check_contact(c: &Contact) {
    assert_eq!(c.id, "WAz8eIbvDR60rouK");
    assert_eq!(c.username, "KevinMcCallister");
    assert_eq!(c.phone_number, "1-800-759-3000");
    assert_eq!(
        c.avatar_url.as_deref(),
        Some("https://assets.notifly.chat/avatars/kevin.jpg")
    );
    assert_eq!(c.display_name.as_deref(), Some("Kevin McCallister"));
    assert_eq!(c.conversation_id.as_deref(), Some("xgQQXg3hrtjh7AvZ"));
    assert_eq!(c.last_active_at, Some(1_700_000_000));
    assert_eq!(c.created_at, 1_699_913_660);
}

fn check_conversation(c: &Conversation) {
    assert_eq!(c.id, "xgQQXg3hrtjh7AvZ");
    assert_eq!(c.contact_id.as_deref(), Some("WAz8eIbvDR60rouK"));
    assert_eq!(c.group_id, None);
    assert_eq!(c.pinned_message_id, None);
    assert!(!c.is_pinned && !c.is_muted);
    assert_eq!(c.last_active_at, Some(1_700_000_000));
    assert_eq!(c.last_opened_at, Some(1_700_000_030));
    assert_eq!(c.created_at, 1_699_913_660);
    assert_eq!(c.archived_at, None);
}

fn check_attachment(a: &Attachment) {
    assert_eq!(a.id, "Jq0PpU8Yd2bV7mXn");
    assert_eq!(a.message_id, "SIuAFUNKdSYHZF2w");
    assert_eq!(a.filename, "itinerary.pdf");
    assert_eq!(
        a.file_url,
        "http://127.0.0.1:8080/v1/attachments/Jq0PpU8Yd2bV7mXn/content"
    );
    assert_eq!(a.file_type, "application/pdf");
    assert_eq!(a.file_size, 48_213);
    assert_eq!(a.created_at, 1_700_000_060);
}

fn check_message(m: &Message) {
    assert_eq!(m.id, "SIuAFUNKdSYHZF2w");
    assert_eq!(m.conversation_id, "xgQQXg3hrtjh7AvZ");
    check_contact(m.contact.as_ref().unwrap());
    assert_eq!(
        m.message,
        "I’m traveling with my dad. He’s at a meeting. I hate meetings."
    );
    assert_eq!(m.reactions.len(), 1);
    assert_eq!(m.reactions[0].contact_id, "WAz8eIbvDR60rouK");
    assert_eq!(m.reactions[0].emoji, "👍");
    assert_eq!(m.reactions[0].created_at, 1_700_000_010);
    assert_eq!(m.attachments.len(), 1);
    check_attachment(&m.attachments[0]);
    assert_eq!(m.read_at, None);
    assert_eq!((m.created_at, m.updated_at), (1_700_000_060, 1_700_000_060));
}

fn check_group(g: &Group) {
    assert_eq!(g.id, "k2WgV1uJmTZTbsLX");
    assert_eq!(g.name, "McCallister family");
    assert_eq!(g.description.as_deref(), Some("Paris trip planning"));
    assert_eq!(g.avatar_url, None);
    assert_eq!(g.conversation_id, None);
    assert_eq!(g.contacts.len(), 1);
    check_contact(&g.contacts[0]);
    assert_eq!(g.created_at, 1_700_000_060);
    assert_eq!(g.archived_at, None);
}

/// Checks that `event` is the variant for `t` and its payload is the fixture.
fn check_typed(t: EventType, event: &Event) {
    use Event::*;
    match (t.as_str(), event) {
        ("contact.created", ContactCreated(c))
        | ("contact.updated", ContactUpdated(c))
        | ("contact.deleted", ContactDeleted(c)) => check_contact(c),
        ("conversation.created", ConversationCreated(c))
        | ("conversation.updated", ConversationUpdated(c))
        | ("conversation.deleted", ConversationDeleted(c)) => check_conversation(c),
        ("message.created", MessageCreated(m))
        | ("message.updated", MessageUpdated(m))
        | ("message.deleted", MessageDeleted(m)) => check_message(m),
        ("group.created", GroupCreated(g))
        | ("group.updated", GroupUpdated(g))
        | ("group.deleted", GroupDeleted(g)) => check_group(g),
        ("attachment.created", AttachmentCreated(a))
        | ("attachment.updated", AttachmentUpdated(a))
        | ("attachment.deleted", AttachmentDeleted(a)) => check_attachment(a),
        _ => panic!("{t} parsed as {event:?}"),
    }
}

#[test]
fn every_event_type_parses_into_its_typed_variant() {
    for t in EventType::ALL {
        let payload = fixture(t.resource());
        let body = envelope(t.as_str(), payload.clone());
        let parsed = WebhookEvent::parse(&body).unwrap();
        assert_eq!(parsed.id, "a056V7R7NmNRjl70");
        assert_eq!(parsed.event_type(), t.as_str());
        assert_eq!(parsed.event.known_type(), Some(t));
        assert_eq!(
            parsed.event.resource_id(),
            payload["id"].as_str(),
            "{t}: resource id"
        );
        check_typed(t, &parsed.event);

        // Serializing gives back the same envelope, field for field.
        let again: Value = serde_json::to_value(&parsed).unwrap();
        assert_eq!(
            again,
            serde_json::from_slice::<Value>(&body).unwrap(),
            "{t}"
        );
        assert_eq!(
            WebhookEvent::parse(&serde_json::to_vec(&parsed).unwrap()).unwrap(),
            parsed
        );
    }
}

/// Adds a field to every object, however deep.
fn add_unknown_fields(v: &mut Value, extra: &Value) {
    match v {
        Value::Object(map) => {
            for child in map.values_mut() {
                add_unknown_fields(child, extra);
            }
            map.insert("added_in_a_later_version".into(), extra.clone());
        }
        Value::Array(items) => items.iter_mut().for_each(|i| add_unknown_fields(i, extra)),
        _ => {}
    }
}

#[test]
fn unknown_extra_fields_are_ignored_everywhere() {
    for t in EventType::ALL {
        let mut payload = fixture(t.resource());
        add_unknown_fields(&mut payload, &json!({"nested": [1, 2.5, null, "x"]}));
        let mut body: Value = serde_json::from_slice(&envelope(t.as_str(), payload)).unwrap();
        body["delivered_via"] = json!("a future envelope field");
        let parsed = WebhookEvent::parse(&serde_json::to_vec(&body).unwrap()).unwrap();
        check_typed(t, &parsed.event);
    }
}

#[test]
fn optional_fields_may_be_absent_or_null() {
    // The guide's own example: the contact has neither `display_name` nor
    // `conversation_id`.
    let guide = include_bytes!("../data/guide_message_updated.json");
    let event = WebhookEvent::parse(guide).unwrap();
    let Event::MessageUpdated(m) = &event.event else {
        panic!("{event:?}")
    };
    let contact = m.contact.as_ref().unwrap();
    assert_eq!(contact.display_name, None);
    assert_eq!(contact.conversation_id, None);
    assert_eq!(m.read_at, Some(705_103_200));

    // A message sent by the account itself has `contact: null`; lists and
    // nullable fields may be left out.
    let body = envelope(
        "message.created",
        json!({"id": "SIuAFUNKdSYHZF2w", "conversation_id": "xgQQXg3hrtjh7AvZ",
               "contact": null, "message": "hi", "created_at": 1, "updated_at": 1}),
    );
    let Event::MessageCreated(m) = WebhookEvent::parse(&body).unwrap().event else {
        panic!()
    };
    assert_eq!(m.contact, None);
    assert!(m.reactions.is_empty() && m.attachments.is_empty());
}

#[test]
fn a_known_type_with_a_wrong_payload_is_an_error() {
    for (t, payload) in [
        ("contact.created", json!({"id": "WAz8eIbvDR60rouK"})),
        ("message.updated", fixture(ResourceKind::Contact)),
        ("group.deleted", json!([])),
        ("attachment.created", json!({"id": 5})),
    ] {
        let err = WebhookEvent::parse(&envelope(t, payload)).unwrap_err();
        assert!(err.to_string().contains(&format!("`{t}` payload")), "{err}");
    }
    for body in [
        &br#"{"type":"contact.created","payload":{}}"#[..],
        br#"{"id":"a056V7R7NmNRjl70","payload":{}}"#,
        br#"{"id":"a056V7R7NmNRjl70","type":"contact.created"}"#,
        b"[]",
        b"",
    ] {
        assert!(WebhookEvent::parse(body).is_err());
    }
}

#[test]
fn an_unknown_event_type_parses_as_unknown() {
    let payload = json!({"id": "Zz9aKq1Bc2De3Fg4", "is_cool": true, "score": 0.5});
    let body = envelope("reaction.created", payload.clone());
    let event = WebhookEvent::parse(&body).unwrap();
    assert_eq!(event.event_type(), "reaction.created");
    assert_eq!(event.event.known_type(), None);
    assert_eq!(event.event.resource_id(), Some("Zz9aKq1Bc2De3Fg4"));
    assert_eq!(
        event.event,
        Event::Unknown {
            event_type: "reaction.created".into(),
            payload
        }
    );
    assert_eq!(
        serde_json::to_value(&event).unwrap(),
        serde_json::from_slice::<Value>(&body).unwrap()
    );
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Any type name that is not a known one, with any payload, parses as
    /// `Unknown` with the payload intact.
    #[test]
    fn any_unknown_type_parses_as_unknown(
        event_type in any::<String>(),
        payload in json_value(),
    ) {
        prop_assume!(event_type.parse::<notifly_webhooks::AnyEventType>().is_err());
        let event = WebhookEvent::parse(&envelope(&event_type, payload.clone())).unwrap();
        prop_assert_eq!(event.event_type(), event_type.as_str());
        prop_assert_eq!(event.event, Event::Unknown { event_type, payload });
    }

    /// Extra fields of any name and value are ignored, at any depth.
    #[test]
    fn any_extra_fields_are_ignored(
        index in 0usize..15,
        extra in json_value(),
        // No field of any resource starts with `x_`.
        name in "x_[a-z0-9_]{0,20}",
    ) {
        let t = EventType::ALL[index];
        let mut payload = fixture(t.resource());
        if let Value::Object(map) = &mut payload {
            map.insert(name.clone(), extra.clone());
            if let Some(Value::Object(contact)) = map.get_mut("contact") {
                contact.insert(name, extra);
            }
        }
        let event = WebhookEvent::parse(&envelope(t.as_str(), payload)).unwrap();
        check_typed(t, &event.event);
    }
}
