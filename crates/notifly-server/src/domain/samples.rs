//! Realistic sample payloads, one per resource kind: what a test event carries.

use notifly_webhooks::ResourceKind;
use serde_json::{Value, json};

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
