//! Signing: the signature headers of a delivery, computed the one way both
//! the Notifly server and your tests use.
//!
//! Use [`sign_request`] in your own tests to make requests exactly as Notifly
//! signs them, and check that your endpoint accepts them (and refuses them
//! once tampered with).

use std::fmt;

pub use crate::asymmetric::{PublicKey, SigningKey};
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
    /// The `webhook-signature` value: one entry per key, space-separated
    /// (`v1,<base64>` for a `whsec_` secret, `v1a,<base64>` for a `whsk_`
    /// Ed25519 key); `None` if there is none, in which case the header is
    /// left out.
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
    endpoint_signature_headers(
        EndpointKeys::new(secret),
        previous.map(EndpointKeys::new),
        webhook_id,
        timestamp,
        body,
    )
}

/// What one endpoint signs with: its `whsec_` secret and, if its
/// `signature_scheme` is `ed25519`, its `whsk_` private key.
#[derive(Clone, Copy)]
pub struct EndpointKeys<'a> {
    /// The `whsec_` secret: `x-notifly-signature`, and the `v1` entry of
    /// `webhook-signature` when there is no `signing_key`.
    pub secret: &'a str,
    /// The `whsk_` key: with it, the `webhook-signature` entry is `v1a`.
    pub signing_key: Option<&'a str>,
}

impl fmt::Debug for EndpointKeys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EndpointKeys(<redacted>)")
    }
}

impl<'a> EndpointKeys<'a> {
    /// The keys of an `hmac-sha256` endpoint: its secret alone.
    pub fn new(secret: &'a str) -> Self {
        EndpointKeys {
            secret,
            signing_key: None,
        }
    }

    /// The `webhook-signature` entry of these keys, if they make one.
    fn entry(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
        match self.signing_key {
            Some(key) => SigningKey::parse(key)
                .ok()
                .map(|key| key.sign(webhook_id, timestamp, body)),
            None => StandardSecret::parse(self.secret)
                .ok()
                .map(|key| key.sign(webhook_id, timestamp, body)),
        }
    }
}

/// [`signature_headers`] for an endpoint with any signature scheme: the
/// `webhook-signature` entry of each key set is `v1a` (Ed25519) if it has a
/// signing key, `v1` (HMAC-SHA256) otherwise; `x-notifly-signature` is
/// always the HMAC of the body with the `whsec_` secret (the previous one
/// during a rotation's overlap window).
///
/// ```
/// use notifly_webhooks::Webhook;
/// use notifly_webhooks::sign::{EndpointKeys, SigningKey, endpoint_signature_headers};
///
/// let private = SigningKey::from_seed(&[42; 32]).encode();
/// let keys = EndpointKeys {
///     secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
///     signing_key: Some(&private),
/// };
/// let body = br#"{"id":"a056V7R7NmNRjl70","type":"contact.created","payload":{}}"#;
/// let h = endpoint_signature_headers(keys, None, "a056V7R7NmNRjl70", 1_700_000_000, body);
/// assert!(h.standard.as_deref().is_some_and(|s| s.starts_with("v1a,")));
/// assert!(Webhook::new(keys.secret)?.verify_notifly_signature(body, Some(&h.notifly)).is_ok());
/// # Ok::<(), notifly_webhooks::InvalidSecret>(())
/// ```
pub fn endpoint_signature_headers(
    current: EndpointKeys<'_>,
    previous: Option<EndpointKeys<'_>>,
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> SignatureHeaders {
    let entries: Vec<String> = std::iter::once(current)
        .chain(previous)
        .filter_map(|keys| keys.entry(webhook_id, timestamp, body))
        .collect();
    SignatureHeaders {
        notifly: sign_hex(previous.unwrap_or(current).secret, body),
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
