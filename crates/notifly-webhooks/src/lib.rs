//! The Notifly webhook wire contract.
//!
//! Every webhook Notifly sends is an HTTP `POST` whose body is an [`Envelope`]:
//!
//! ```json
//! {"id": "a056V7R7NmNRjl70", "type": "conversation.updated", "payload": {"id": "WAz8eIbvDR60rouK"}}
//! ```
//!
//! and whose `x-notifly-signature` header is the lowercase hex HMAC-SHA256 of the
//! exact body bytes, keyed with the endpoint's secret string. This crate is used by
//! the Notifly server to sign deliveries and by consumers to verify them, so the two
//! can never drift.
//!
//! ```
//! use notifly_webhooks::{sign_hex, verify_hex};
//!
//! let secret = "whsec_/V1upJakDvi3tyHP7KhVqwMuWawN3UlB";
//! let body = br#"{"id":"a056V7R7NmNRjl70","type":"contact.created","payload":{}}"#;
//! let header = sign_hex(secret, body);
//! assert!(verify_hex(secret, body, &header).is_ok());
//! ```

mod event_type;
mod signature;

use serde::{Deserialize, Serialize};

pub use event_type::{Action, EventType, ParseEventTypeError, ResourceKind};
pub use signature::{
    HEADER_NOTIFLY_SIGNATURE, HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE,
    HEADER_WEBHOOK_TIMESTAMP, InvalidSecret, StandardSecret, VerifyError, sign_hex, verify_hex,
};

/// The body of every webhook request: `{"id", "type", "payload"}`.
///
/// `payload` is the resource exactly as the REST API returns it; for a
/// `*.deleted` event it is the resource as it was just before deletion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<P = serde_json::Value> {
    /// The event id: a 16-character base62 string, stable across retries.
    pub id: String,
    /// What happened, e.g. `message.updated`.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The resource the event is about.
    pub payload: P,
}

impl Envelope<serde_json::Value> {
    /// Parses a webhook body. Use this after verifying the signature over the
    /// same bytes.
    pub fn from_slice(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}
