//! Signing: the signature headers of a delivery, computed the one way both
//! the Notifly server and your tests use.
//!
//! Use [`sign_request`] in your own tests to make requests exactly as Notifly
//! signs them, and check that your endpoint accepts them (and refuses them
//! once tampered with).

use crate::signature::{
    HEADER_NOTIFLY_SIGNATURE, HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE,
    HEADER_WEBHOOK_TIMESTAMP, StandardSecret, sign_hex,
};

/// The two signature header values of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignatureHeaders {
    /// The `x-notifly-signature` value: lowercase hex HMAC-SHA256 of the body.
    pub notifly: String,
    /// The `webhook-signature` value: one `v1,<base64>` entry per secret,
    /// space-separated; `None` if no secret is a `whsec_` secret, in which
    /// case the header is left out.
    pub standard: Option<String>,
}

/// Computes the signature headers of a delivery of `body` with event id
/// `webhook_id` at `timestamp` (Unix seconds).
///
/// `secret` is the endpoint's current secret; `previous` is the secret it
/// replaced while a rotation's overlap window is open (and `None` after). In
/// the window the previous secret signs `x-notifly-signature`, so a consumer
/// that has not switched yet keeps verifying, and `webhook-signature` carries
/// one entry for each secret, the current one first.
///
/// ```
/// use notifly_webhooks::{Webhook, sign::signature_headers};
///
/// let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// let new = "whsec_bm90aWZseSBuZXcgc2VjcmV0IGZvciB0ZXN0cyE=";
/// let body = br#"{"id":"a056V7R7NmNRjl70","type":"contact.created","payload":{}}"#;
/// let h = signature_headers(new, Some(old), "a056V7R7NmNRjl70", 1_700_000_000, body);
/// assert_eq!(h.standard.as_deref().map(|s| s.split(' ').count()), Some(2));
///
/// // A consumer still on the old secret verifies both headers.
/// let webhook = Webhook::new(old)?;
/// assert!(webhook.verify_notifly_signature(body, Some(&h.notifly)).is_ok());
/// # Ok::<(), notifly_webhooks::InvalidSecret>(())
/// ```
pub fn signature_headers(
    secret: &str,
    previous: Option<&str>,
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> SignatureHeaders {
    let entries: Vec<String> = std::iter::once(secret)
        .chain(previous)
        .filter_map(|s| StandardSecret::parse(s).ok())
        .map(|key| key.sign(webhook_id, timestamp, body))
        .collect();
    SignatureHeaders {
        notifly: sign_hex(previous.unwrap_or(secret), body),
        standard: (!entries.is_empty()).then(|| entries.join(" ")),
    }
}

/// The headers Notifly sends with a delivery that it signs with `secret`, as
/// `(name, value)` pairs: `content-type`, `webhook-id`, `webhook-timestamp`,
/// `webhook-signature` and `x-notifly-signature`.
///
/// `event_id` should be the `id` in `body`; `timestamp` is Unix seconds
/// (use the current time, or [`Webhook::verify`](crate::Webhook::verify)
/// will find it stale). Notifly also sends `user-agent`,
/// `x-notifly-event-type`, `x-notifly-attempt` and `x-notifly-delivery-id`,
/// which no check relies on.
///
/// ```
/// use std::time::{SystemTime, UNIX_EPOCH};
/// use notifly_webhooks::{Webhook, sign::sign_request};
///
/// let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// let body = br#"{"id":"a056V7R7NmNRjl70","type":"group.deleted","payload":{
///     "id":"k2WgV1uJmTZTbsLX","name":"Family","created_at":692233200}}"#;
/// let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
///
/// let request = sign_request(secret, "a056V7R7NmNRjl70", now, body)
///     .into_iter()
///     .fold(http::Request::builder().method("POST").uri("/webhooks"), |r, (k, v)| {
///         r.header(k, v)
///     })
///     .body(body.to_vec())?;
///
/// let event = Webhook::new(secret)?.verify(request.headers(), request.body())?;
/// assert_eq!(event.event_type(), "group.deleted");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn sign_request(
    secret: &str,
    event_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let signatures = signature_headers(secret, None, event_id, timestamp, body);
    let mut headers = vec![
        ("content-type", "application/json".to_owned()),
        (HEADER_WEBHOOK_ID, event_id.to_owned()),
        (HEADER_WEBHOOK_TIMESTAMP, timestamp.to_string()),
    ];
    if let Some(standard) = signatures.standard {
        headers.push((HEADER_WEBHOOK_SIGNATURE, standard));
    }
    headers.push((HEADER_NOTIFLY_SIGNATURE, signatures.notifly));
    headers
}
