//! Verify, parse and sign [Notifly](https://github.com/notifly/notifly)
//! webhooks.
//!
//! Every webhook Notifly sends is an HTTP `POST` whose body is an event:
//!
//! ```json
//! {"id": "a056V7R7NmNRjl70", "type": "conversation.updated", "payload": {"id": "WAz8eIbvDR60rouK", "...": "..."}}
//! ```
//!
//! signed twice:
//!
//! - `x-notifly-signature`: the lowercase hex HMAC-SHA256 of the exact body
//!   bytes, keyed with the endpoint's secret string (`whsec_…`) exactly as the
//!   dashboard shows it;
//! - the [Standard Webhooks](https://www.standardwebhooks.com/) headers
//!   `webhook-id` (the event id), `webhook-timestamp` (Unix seconds) and
//!   `webhook-signature` (space-separated `v1,<base64>` entries, one per live
//!   secret), which also let you refuse replayed requests.
//!
//! This crate checks those signatures ([`Webhook`]), parses the body into a
//! typed [`Event`] with one variant per event type ([`WebhookEvent`]), and
//! signs requests for your tests ([`sign`]). The Notifly server signs with the
//! same code, so the two cannot drift.
//!
//! ```
//! use notifly_webhooks::{Event, Webhook, WebhookError};
//!
//! fn handle(webhook: &Webhook, headers: &http::HeaderMap, body: &[u8]) -> Result<(), WebhookError> {
//!     // Verify the exact bytes received, then use the typed event.
//!     let event = webhook.verify(headers, body)?;
//!     match event.event {
//!         Event::MessageCreated(message) => println!("{}: {}", event.id, message.message),
//!         Event::ContactUpdated(contact) => println!("{} changed", contact.username),
//!         // New event types arrive as `Event::Unknown` until this crate knows them.
//!         other => println!("ignoring {}", other.event_type()),
//!     }
//!     Ok(())
//! }
//!
//! let webhook = Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! let unsigned = handle(&webhook, &http::HeaderMap::new(), b"{}").unwrap_err();
//! assert_eq!(unsigned.status_code(), http::StatusCode::BAD_REQUEST);
//! # Ok::<(), notifly_webhooks::InvalidSecret>(())
//! ```
//!
//! [`http::HeaderMap`] is the header type of axum, hyper, reqwest and most of
//! the Rust HTTP ecosystem.
//!
//! A failed check is a [`WebhookError`] whose message says what was wrong
//! (which header is missing or malformed, a stale timestamp, no matching
//! signature, an invalid body) without revealing the expected signature, and
//! whose [`status_code`](WebhookError::status_code) is the status to answer
//! with.
//!
//! # Secret rotation
//!
//! When you rotate an endpoint's secret, Notifly keeps signing with the old
//! one too for an overlap window. Give [`Webhook::with_secrets`] both secrets
//! during the window and every delivery verifies throughout.
//!
//! # Features
//!
//! - `axum`: the [`VerifiedEvent`] extractor, which yields a verified event or
//!   answers `400`/`401`. It enables no axum features of its own.
//!
//! # Lower-level functions
//!
//! [`sign_hex`], [`verify_hex`] and [`StandardSecret`] sign and check one
//! scheme with one secret; [`Envelope`] is the body with an untyped (or any)
//! payload.
//!
//! ```
//! use notifly_webhooks::{sign_hex, verify_hex};
//!
//! let secret = "whsec_/V1upJakDvi3tyHP7KhVqwMuWawN3UlB";
//! let body = br#"{"id":"a056V7R7NmNRjl70","type":"contact.created","payload":{}}"#;
//! let header = sign_hex(secret, body);
//! assert!(verify_hex(secret, body, &header).is_ok());
//! ```

#![cfg_attr(feature = "axum", doc = "[`VerifiedEvent`]: crate::VerifiedEvent")]
#![cfg_attr(
    not(feature = "axum"),
    doc = "[`VerifiedEvent`]: https://docs.rs/notifly-webhooks/latest/notifly_webhooks/struct.VerifiedEvent.html"
)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod asymmetric;
mod event;
mod event_type;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod extract;
mod operational;
pub mod resources;
pub mod sign;
mod signature;
mod webhook;

use serde::{Deserialize, Serialize};

pub use event::{Event, WebhookEvent};
pub use event_type::{Action, EventType, ParseEventTypeError, ResourceKind};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use extract::{VerifiedEvent, WebhookRejection};
pub use operational::{AnyEventType, OperationalEventType};
pub use resources::{
    Attachment, Contact, Conversation, ExhaustedDelivery, Group, LastAttempt, Message, Reaction,
    WebhookEndpoint,
};
pub use sign::{
    EndpointKeys, PublicKey, SignatureHeaders, SigningKey, endpoint_signature_headers,
    signature_headers,
};
pub use signature::{
    HEADER_NOTIFLY_SIGNATURE, HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE,
    HEADER_WEBHOOK_TIMESTAMP, InvalidSecret, StandardSecret, VerifyError, sign_hex, verify_hex,
};
pub use webhook::{DEFAULT_TOLERANCE, Webhook, WebhookError};

/// The body of every webhook request: `{"id", "type", "payload"}`.
///
/// `payload` is the resource exactly as the REST API returns it; for a
/// `*.deleted` event it is the resource as it was just before deletion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<P = serde_json::Value> {
    /// The event id: a 16-character base62 string, stable across retries.
    pub id: String,
    /// What happened, e.g. `message.updated` (or an operational event
    /// type, such as `webhook.disabled`).
    #[serde(rename = "type")]
    pub event_type: AnyEventType,
    /// The resource the event is about (for an operational event, the
    /// webhook or the delivery).
    pub payload: P,
}

impl Envelope<serde_json::Value> {
    /// Parses a webhook body. Use this after verifying the signature over the
    /// same bytes.
    pub fn from_slice(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The integrators' guide, `docs/receiving-webhooks.md`, whose Rust code is
/// compiled and run as a doctest so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/receiving-webhooks.md")]
pub struct ReceivingWebhooksGuide;
