//! The resources an event's `payload` can be, exactly as the REST API returns
//! them.
//!
//! Every struct ignores fields it does not know, so a field the server adds
//! later does not break parsing, and is `#[non_exhaustive]`, so this crate can
//! add that field without breaking your code. Fields the server may send as
//! `null` are `Option`s and may also be absent; lists may be absent (empty).
//! IDs are 16-character base62 strings; timestamps are integer Unix seconds.

use serde::{Deserialize, Serialize};

/// A contact: someone the account exchanges messages with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Contact {
    /// The contact's id, e.g. `WAz8eIbvDR60rouK`.
    pub id: String,
    /// The username, e.g. `KevinMcCallister`.
    pub username: String,
    /// The phone number, e.g. `1-800-759-3000`.
    pub phone_number: String,
    /// The avatar image's URL.
    #[serde(default)]
    pub avatar_url: Option<String>,
    /// The name to show, if set.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The one-to-one conversation with this contact, once one exists.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// When the contact was last active.
    #[serde(default)]
    pub last_active_at: Option<i64>,
    /// When the contact was created.
    pub created_at: i64,
}

/// A conversation with one contact or with a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Conversation {
    /// The conversation's id.
    pub id: String,
    /// The contact, for a one-to-one conversation.
    #[serde(default)]
    pub contact_id: Option<String>,
    /// The group, for a group conversation.
    #[serde(default)]
    pub group_id: Option<String>,
    /// The pinned message, if any.
    #[serde(default)]
    pub pinned_message_id: Option<String>,
    /// Whether the conversation is pinned.
    pub is_pinned: bool,
    /// Whether the conversation is muted.
    pub is_muted: bool,
    /// When the last message was exchanged.
    #[serde(default)]
    pub last_active_at: Option<i64>,
    /// When the conversation was last opened.
    #[serde(default)]
    pub last_opened_at: Option<i64>,
    /// When the conversation was created.
    pub created_at: i64,
    /// When the conversation was archived; `None` if it is not.
    #[serde(default)]
    pub archived_at: Option<i64>,
}

/// A reaction to a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Reaction {
    /// The reacting contact.
    pub contact_id: String,
    /// The reaction itself, usually one emoji, e.g. `👍`.
    pub emoji: String,
    /// When the reaction was made.
    pub created_at: i64,
}

/// A file attached to a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Attachment {
    /// The attachment's id.
    pub id: String,
    /// The message it is attached to.
    pub message_id: String,
    /// The file's name, e.g. `itinerary.pdf`.
    pub filename: String,
    /// Where the bytes are served (fetching them requires the API key).
    pub file_url: String,
    /// The media type given at upload, e.g. `application/pdf`.
    pub file_type: String,
    /// The size in bytes.
    pub file_size: i64,
    /// When the attachment was uploaded.
    pub created_at: i64,
}

/// A message in a conversation, with its sender, reactions and attachments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Message {
    /// The message's id, e.g. `SIuAFUNKdSYHZF2w`.
    pub id: String,
    /// The conversation it belongs to.
    pub conversation_id: String,
    /// The sender; `None` for a message sent by the account itself.
    #[serde(default)]
    pub contact: Option<Contact>,
    /// The text.
    pub message: String,
    /// The reactions, oldest first.
    #[serde(default)]
    pub reactions: Vec<Reaction>,
    /// The attached files.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// When the message was read, if it was.
    #[serde(default)]
    pub read_at: Option<i64>,
    /// When the message was created.
    pub created_at: i64,
    /// When the message was last changed.
    pub updated_at: i64,
}

/// A group of contacts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Group {
    /// The group's id.
    pub id: String,
    /// The group's name, e.g. `Family`.
    pub name: String,
    /// A description, if set.
    #[serde(default)]
    pub description: Option<String>,
    /// The avatar image's URL.
    #[serde(default)]
    pub avatar_url: Option<String>,
    /// The group's conversation, once one exists.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// The member contacts, in the order they were given.
    #[serde(default)]
    pub contacts: Vec<Contact>,
    /// When the group was created.
    pub created_at: i64,
    /// When the group was archived; `None` if it is not.
    #[serde(default)]
    pub archived_at: Option<i64>,
}

/// A webhook as the REST API returns it: the payload of the `webhook.*`
/// operational events. Custom header values are masked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WebhookEndpoint {
    /// The webhook's id.
    pub id: String,
    /// Its name, e.g. `Order sync`.
    pub name: String,
    /// Where deliveries go.
    pub url: String,
    /// A description, if set.
    #[serde(default)]
    pub description: Option<String>,
    /// Subscribed event types, or `["*"]` for every resource event.
    #[serde(default)]
    pub events: Vec<String>,
    /// Whether deliveries are sent to it.
    pub enabled: bool,
    /// Why it is disabled, when it is.
    #[serde(default)]
    pub disabled_reason: Option<String>,
    /// `hmac-sha256` or `ed25519`.
    #[serde(default)]
    pub signature_scheme: Option<String>,
    /// Its circuit breaker: `closed`, `open` or `half_open`.
    #[serde(default)]
    pub circuit: Option<String>,
    /// When the circuit last changed.
    #[serde(default)]
    pub circuit_since: Option<i64>,
    /// Most deliveries started per second, if limited.
    #[serde(default)]
    pub rate_limit: Option<i64>,
    /// `none` or `per_resource`.
    #[serde(default)]
    pub ordering: Option<String>,
    /// Custom header names, values masked.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Its content filter, if any.
    #[serde(default)]
    pub filter: Option<serde_json::Value>,
    /// When the webhook was created.
    pub created_at: i64,
    /// When it was last changed.
    pub updated_at: i64,
}

/// The last attempt of an exhausted delivery.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LastAttempt {
    /// The attempt's id.
    pub id: String,
    /// Its number, 1 for the first.
    pub attempt: i64,
    /// When it started.
    pub started_at: i64,
    /// How long it took, in milliseconds.
    pub duration_ms: i64,
    /// The HTTP status the endpoint answered, if it answered.
    #[serde(default)]
    pub status_code: Option<i64>,
    /// Why no response came, or why it was not accepted.
    #[serde(default)]
    pub error: Option<String>,
}

/// A delivery that failed its last retry: the payload of
/// `delivery.exhausted`. The whole attempt log is at
/// `GET /v1/deliveries/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExhaustedDelivery {
    /// The delivery's id.
    pub id: String,
    /// The webhook it was for.
    pub webhook_id: String,
    /// The event it carried (its `webhook-id`).
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// `failed`.
    pub status: String,
    /// How many attempts were made.
    pub attempts: i64,
    /// When the last attempt started.
    #[serde(default)]
    pub last_attempt_at: Option<i64>,
    /// The HTTP status of the last attempt, if it got a response.
    #[serde(default)]
    pub last_status_code: Option<i64>,
    /// The last attempt.
    #[serde(default)]
    pub last_attempt: Option<LastAttempt>,
    /// When the delivery was created.
    pub created_at: i64,
    /// When it was last changed.
    pub updated_at: i64,
}
