//! Realistic sample payloads, one per resource kind and per operational
//! event type: what a test event carries.

use notifly_webhooks::{AnyEventType, OperationalEventType, ResourceKind};
use serde_json::{Value, json};

use super::deliveries::Delivery;
use super::notices::{ExhaustedDelivery, LastAttempt};
use super::webhooks::{Circuit, Ordering, SignatureScheme, Webhook};
use crate::ids;

/// A sample of `kind` exactly in the shape the REST API returns it, with
/// fresh ids and current times: what a test event carries.
pub fn payload(kind: ResourceKind, public_url: &str) -> Value {
    build(kind, public_url, &mut |_| ids::new_id(), ids::now())
}

/// The same sample with fixed ids and times, for documentation that must not
/// change from one build to the next.
pub fn example(kind: ResourceKind, public_url: &str) -> Value {
    const IDS: [&str; 6] = [
        "WAz8eIbvDR60rouK",
        "xgQQXg3hrtjh7AvZ",
        "SIuAFUNKdSYHZF2w",
        "Ka9dF0q1ZzPmW3nB",
        "gR7uQm2LpX0sVb4E",
        "Tq4nH8cYw1JkD6fZ",
    ];
    build(kind, public_url, &mut |n| IDS[n].to_owned(), 705_103_200)
}

/// Builds a sample; `id(n)` gives the n-th id it needs.
fn build(
    kind: ResourceKind,
    public_url: &str,
    id: &mut dyn FnMut(usize) -> String,
    now: i64,
) -> Value {
    let contact = json!({
        "id": id(0),
        "username": "KevinMcCallister",
        "phone_number": "1-800-759-3000",
        "avatar_url": "https://assets.notifly.chat/avatars/kevin.jpg",
        "display_name": "Kevin McCallister",
        "conversation_id": id(1),
        "last_active_at": now - 60,
        "created_at": now - 86_400,
    });
    let message_id = id(2);
    let attachment_id = id(3);
    let attachment = json!({
        "id": attachment_id,
        "message_id": message_id,
        "filename": "itinerary.pdf",
        "file_url": format!("{public_url}/v1/attachments/{attachment_id}/content"),
        "file_type": "application/pdf",
        "file_size": 48_213,
        "created_at": now,
    });
    match kind {
        ResourceKind::Contact => contact,
        ResourceKind::Conversation => json!({
            "id": contact["conversation_id"],
            "contact_id": contact["id"],
            "group_id": null,
            "pinned_message_id": null,
            "is_pinned": false,
            "is_muted": false,
            "last_active_at": now - 60,
            "last_opened_at": now - 30,
            "created_at": now - 86_400,
            "archived_at": null,
        }),
        ResourceKind::Message => json!({
            "id": message_id,
            "conversation_id": contact["conversation_id"],
            "contact": contact,
            "message": "I’m traveling with my dad. He’s at a meeting. I hate meetings.",
            "reactions": [],
            "attachments": [attachment],
            "read_at": null,
            "created_at": now,
            "updated_at": now,
        }),
        ResourceKind::Group => json!({
            "id": id(4),
            "name": "McCallister family",
            "description": "Paris trip planning",
            "avatar_url": null,
            "conversation_id": null,
            "contacts": [contact],
            "created_at": now,
            "archived_at": null,
        }),
        ResourceKind::Attachment => attachment,
    }
}

/// A sample payload of any event type, with fresh ids and current times.
pub fn any_payload(t: AnyEventType, public_url: &str) -> Value {
    match t {
        AnyEventType::Resource(t) => payload(t.resource(), public_url),
        AnyEventType::Operational(t) => {
            build_operational(t, public_url, &mut |_| ids::new_id(), ids::now())
        }
    }
}

/// The same sample with fixed ids and times (see [`example`]).
pub fn any_example(t: AnyEventType, public_url: &str) -> Value {
    match t {
        AnyEventType::Resource(t) => example(t.resource(), public_url),
        AnyEventType::Operational(t) => build_operational(
            t,
            public_url,
            &mut |n| {
                [
                    "Hn3kQ9vLs2XcB7tA",
                    "Zr5pW1mJd8YuE4gN",
                    "Qm8sV2nYc5TjR1aD",
                    "Lf6tR0bKq3NwS9hC",
                ][n]
                    .to_owned()
            },
            705_103_200,
        ),
    }
}

/// An operational event's payload, built from the types the API answers
/// with, so it has their exact shape.
fn build_operational(
    t: OperationalEventType,
    _public_url: &str,
    id: &mut dyn FnMut(usize) -> String,
    now: i64,
) -> Value {
    let webhook_id = id(0);
    let (enabled, disabled_reason, circuit) = match t {
        OperationalEventType::WebhookDisabled => (
            false,
            Some("the endpoint answered 410 Gone".to_owned()),
            Circuit::Closed,
        ),
        OperationalEventType::WebhookCircuitOpened => (true, None, Circuit::Open),
        _ => (true, None, Circuit::Closed),
    };
    if t == OperationalEventType::DeliveryExhausted {
        let delivery = ExhaustedDelivery {
            delivery: Delivery {
                id: id(1),
                webhook_id,
                event_id: id(2),
                event_type: "message.created".to_owned(),
                status: "failed".to_owned(),
                attempts: 9,
                next_attempt_at: None,
                last_attempt_at: Some(now),
                last_status_code: Some(503),
                created_at: now - 4 * 86_400,
                updated_at: now,
            },
            last_attempt: Some(LastAttempt {
                id: id(3),
                attempt: 9,
                started_at: now,
                duration_ms: 212,
                status_code: Some(503),
                error: Some("the endpoint answered HTTP 503".to_owned()),
            }),
        };
        return serde_json::to_value(delivery).unwrap_or_default();
    }
    let webhook = Webhook {
        id: webhook_id,
        name: "Order sync".to_owned(),
        url: "https://example.com/webhooks/notifly".to_owned(),
        description: None,
        events: vec!["message.created".to_owned(), "message.updated".to_owned()],
        enabled,
        disabled_reason,
        secret: None,
        signature_scheme: SignatureScheme::HmacSha256,
        public_key: None,
        circuit,
        circuit_since: Some(now),
        rate_limit: None,
        ordering: Ordering::None,
        headers: [("Authorization".to_owned(), "••••••••9a7d".to_owned())].into(),
        filter: None,
        created_at: now - 30 * 86_400,
        updated_at: now,
    };
    serde_json::to_value(webhook).unwrap_or_default()
}
