//! Verifying webhook requests: [`Webhook`] and [`WebhookError`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{HeaderMap, StatusCode};
use subtle::{Choice, ConstantTimeEq};

use crate::WebhookEvent;
use crate::asymmetric::{PublicKey, V1A, is_public_key, is_signing_key};
use crate::signature::{
    HEADER_NOTIFLY_SIGNATURE, HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE,
    HEADER_WEBHOOK_TIMESTAMP, InvalidSecret, StandardSecret, hmac_sha256,
};

/// How far `webhook-timestamp` may be from the receiver's clock by default:
/// five minutes, either way.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Verifies webhook requests with one endpoint's secret(s).
///
/// Build it once, from the `whsec_…` secret exactly as the dashboard shows it
/// (or, for an endpoint that signs with Ed25519, its `whpk_…` public key),
/// and share it: cloning is cheap. Its `Debug` output hides the secrets.
///
/// ```
/// use notifly_webhooks::{Event, Webhook, sign};
///
/// let webhook = Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
///
/// // What Notifly sends (here made with the test signer):
/// let body = br#"{"id":"a056V7R7NmNRjl70","type":"contact.deleted","payload":{
///     "id":"WAz8eIbvDR60rouK","username":"KevinMcCallister",
///     "phone_number":"1-800-759-3000","created_at":692233200}}"#;
/// let now = std::time::SystemTime::now();
/// let timestamp = now.duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
/// let mut headers = http::HeaderMap::new();
/// for (name, value) in sign::sign_request(
///     "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "a056V7R7NmNRjl70", timestamp, body,
/// ) {
///     headers.insert(name, value.parse()?);
/// }
///
/// let event = webhook.verify(&headers, body)?;
/// if let Event::ContactDeleted(contact) = &event.event {
///     assert_eq!(contact.username, "KevinMcCallister");
/// }
///
/// // Any change to the body is refused.
/// let err = webhook.verify(&headers, b"{}").unwrap_err();
/// assert_eq!(err.to_string(), "no `webhook-signature` signature matched the webhook secret");
/// assert_eq!(err.status_code(), http::StatusCode::UNAUTHORIZED);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Webhook {
    secrets: Arc<[Secret]>,
    tolerance: Duration,
    require_standard: bool,
}

/// One key the verifier accepts.
enum Secret {
    /// A `whsec_…` secret, in both of its uses.
    Symmetric {
        /// The whole `whsec_…` string: the `x-notifly-signature` key.
        text: Box<str>,
        /// The decoded bytes after `whsec_`: the Standard Webhooks key.
        standard: StandardSecret,
    },
    /// A `whpk_…` public key: verifies `v1a` entries only.
    Public(PublicKey),
}

impl Secret {
    fn parse(text: &str) -> Result<Self, InvalidSecret> {
        if is_public_key(text) {
            return PublicKey::parse(text).map(Secret::Public);
        }
        if is_signing_key(text) {
            // A private key in a verifier is a mistake worth naming: give
            // receivers the public key.
            return Err(InvalidSecret);
        }
        Ok(Secret::Symmetric {
            standard: StandardSecret::parse(text)?,
            text: text.into(),
        })
    }
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("tolerance", &self.tolerance)
            .field("require_standard", &self.require_standard)
            .finish()
    }
}

impl Webhook {
    /// A verifier for one secret, given as the dashboard shows it
    /// (`whsec_<base64>`), or for one Ed25519 public key (`whpk_<base64>`).
    ///
    /// With a public key, only `v1a` entries of `webhook-signature` verify
    /// (an `ed25519` endpoint sends them), and [`verify`](Self::verify)
    /// requires that header even if `whsec_` secrets are given too. Give a
    /// verifier the public key alone to accept nothing a holder of the
    /// secret could sign.
    ///
    /// ```
    /// use notifly_webhooks::{Webhook, sign::SigningKey};
    ///
    /// // Notifly keeps the private key; the dashboard shows the public one.
    /// let private = SigningKey::from_seed(&[42; 32]);
    /// let webhook = Webhook::new(&private.public_key().encode())?;
    ///
    /// let body = br#"{"id":"a056V7R7NmNRjl70","type":"contact.deleted","payload":{
    ///     "id":"WAz8eIbvDR60rouK","username":"KevinMcCallister",
    ///     "phone_number":"1-800-759-3000","created_at":692233200}}"#;
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("webhook-id", "a056V7R7NmNRjl70".parse()?);
    /// headers.insert("webhook-timestamp", "1700000000".parse()?);
    /// let signature = private.sign("a056V7R7NmNRjl70", 1_700_000_000, body);
    /// headers.insert("webhook-signature", signature.parse()?);
    ///
    /// let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    /// assert!(webhook.verify_at(&headers, body, at).is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// Fails if `secret` is in neither form (a `whsk_` private key is
    /// refused: verify with the public key); it is taken exactly as given,
    /// so trim a secret read from a file first.
    pub fn new(secret: &str) -> Result<Self, InvalidSecret> {
        Self::with_secrets([secret])
    }

    /// A verifier that accepts a request signed with any of `secrets`.
    ///
    /// Use it while you rotate an endpoint's secret: give it the old and the
    /// new one, and every delivery verifies throughout the overlap window.
    ///
    /// ```
    /// use notifly_webhooks::Webhook;
    ///
    /// let webhook = Webhook::with_secrets([
    ///     "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", // old
    ///     "whsec_bm90aWZseSBuZXcgc2VjcmV0IGZvciB0ZXN0cyE=", // new
    /// ])?;
    /// # Ok::<(), notifly_webhooks::InvalidSecret>(())
    /// ```
    ///
    /// Fails if `secrets` is empty or any of them is neither a `whsec_`
    /// secret nor a `whpk_` public key.
    pub fn with_secrets<I>(secrets: I) -> Result<Self, InvalidSecret>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let secrets = secrets
            .into_iter()
            .map(|s| Secret::parse(s.as_ref()))
            .collect::<Result<Arc<[Secret]>, _>>()?;
        if secrets.is_empty() {
            return Err(InvalidSecret);
        }
        Ok(Webhook {
            secrets,
            tolerance: DEFAULT_TOLERANCE,
            require_standard: false,
        })
    }

    /// Sets how far `webhook-timestamp` may be from the receiver's clock, in
    /// either direction (default [`DEFAULT_TOLERANCE`], five minutes).
    /// Whole seconds count.
    #[must_use]
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Makes [`verify`](Self::verify) refuse requests without the Standard
    /// Webhooks headers instead of falling back to `x-notifly-signature`.
    ///
    /// `x-notifly-signature` signs the body alone, so a request captured once
    /// still verifies if it is replayed later with the `webhook-*` headers
    /// removed. Notifly always sends both; requiring the Standard Webhooks
    /// signature makes [`verify`](Self::verify) reject such replays by their
    /// timestamp. (Deduplicating on the event id also defeats them.)
    #[must_use]
    pub fn require_standard_signature(mut self) -> Self {
        self.require_standard = true;
        self
    }

    /// Checks an `x-notifly-signature` header value: the lowercase (or
    /// uppercase) hex HMAC-SHA256 of `body` with any of the secrets.
    /// Surrounding whitespace is ignored; comparisons are constant-time.
    ///
    /// `header` is `None` when the request had no such header.
    pub fn verify_notifly_signature(
        &self,
        body: &[u8],
        header: Option<&str>,
    ) -> Result<(), WebhookError> {
        let header = header.ok_or(WebhookError::MissingHeader(HEADER_NOTIFLY_SIGNATURE))?;
        let mut given = [0u8; 32];
        hex::decode_to_slice(header.trim(), &mut given).map_err(|_| {
            WebhookError::MalformedHeader {
                header: HEADER_NOTIFLY_SIGNATURE,
                reason: "expected 64 hexadecimal digits",
            }
        })?;
        let mut matched = Choice::from(0);
        for secret in self.secrets.iter() {
            if let Secret::Symmetric { text, .. } = secret {
                matched |= hmac_sha256(text.as_bytes(), body).ct_eq(&given);
            }
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(WebhookError::NoMatch {
                header: HEADER_NOTIFLY_SIGNATURE,
            })
        }
    }

    /// Checks the Standard Webhooks headers, given as their values (`None`
    /// for an absent header): `webhook-timestamp` must be within the
    /// tolerance of `now`, and one of the space-separated entries of
    /// `webhook-signature` must be the signature of
    /// `{webhook-id}.{webhook-timestamp}.{body}` with one of the secrets:
    /// `v1,<base64>` (HMAC-SHA256) with a `whsec_` secret, `v1a,<base64>`
    /// (Ed25519) with a `whpk_` public key. Entries of other versions are
    /// ignored; HMAC comparisons are constant-time.
    pub fn verify_standard(
        &self,
        body: &[u8],
        webhook_id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
        now: SystemTime,
    ) -> Result<(), WebhookError> {
        let signature = signature.ok_or(WebhookError::MissingHeader(HEADER_WEBHOOK_SIGNATURE))?;
        let webhook_id = webhook_id.ok_or(WebhookError::MissingHeader(HEADER_WEBHOOK_ID))?;
        let timestamp = timestamp.ok_or(WebhookError::MissingHeader(HEADER_WEBHOOK_TIMESTAMP))?;
        let timestamp = parse_timestamp(timestamp)?;
        let candidates = parse_signatures(signature)?;

        let now = unix_seconds(now);
        if now.abs_diff(timestamp) > self.tolerance.as_secs() {
            return Err(WebhookError::StaleTimestamp {
                timestamp,
                now,
                tolerance: Duration::from_secs(self.tolerance.as_secs()),
            });
        }

        let mut matched = Choice::from(0);
        for secret in self.secrets.iter() {
            match secret {
                Secret::Symmetric { standard, .. } => {
                    let expected = standard.digest(webhook_id, timestamp, body);
                    for candidate in &candidates.v1 {
                        matched |= expected.ct_eq(candidate);
                    }
                }
                Secret::Public(key) => {
                    for candidate in &candidates.v1a {
                        matched |= Choice::from(u8::from(
                            key.verifies(webhook_id, timestamp, body, candidate),
                        ));
                    }
                }
            }
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(WebhookError::NoMatch {
                header: HEADER_WEBHOOK_SIGNATURE,
            })
        }
    }

    /// Verifies a request and parses its body into a [`WebhookEvent`].
    ///
    /// If the request has a `webhook-signature` header, the Standard Webhooks
    /// signature must verify ([`verify_standard`](Self::verify_standard),
    /// against the system clock); otherwise `x-notifly-signature` must
    /// ([`verify_notifly_signature`](Self::verify_notifly_signature)), unless
    /// [`require_standard_signature`](Self::require_standard_signature) was
    /// set. Pass the body exactly as received, before any JSON parsing.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<WebhookEvent, WebhookError> {
        self.verify_at(headers, body, SystemTime::now())
    }

    /// [`verify`](Self::verify), with `now` as the current time.
    pub fn verify_at(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<WebhookEvent, WebhookError> {
        let standard = header(headers, HEADER_WEBHOOK_SIGNATURE)?;
        // With a public key, `webhook-signature` is required: falling back
        // to `x-notifly-signature` would let anyone holding the `whsec_`
        // secret pass, which is what the public key is meant to prevent.
        let public = self.secrets.iter().any(|s| matches!(s, Secret::Public(_)));
        if standard.is_some() || self.require_standard || public {
            self.verify_standard(
                body,
                header(headers, HEADER_WEBHOOK_ID)?,
                header(headers, HEADER_WEBHOOK_TIMESTAMP)?,
                standard,
                now,
            )?;
        } else {
            let notifly = header(headers, HEADER_NOTIFLY_SIGNATURE)?;
            if notifly.is_none() {
                return Err(WebhookError::MissingSignature);
            }
            self.verify_notifly_signature(body, notifly)?;
        }
        WebhookEvent::parse(body).map_err(WebhookError::InvalidBody)
    }
}

/// A header's value, `None` if absent.
fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, WebhookError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map_err(|_| WebhookError::MalformedHeader {
                header: name,
                reason: "not visible ASCII",
            })
        })
        .transpose()
}

fn parse_timestamp(value: &str) -> Result<i64, WebhookError> {
    let value = value.trim();
    let malformed = WebhookError::MalformedHeader {
        header: HEADER_WEBHOOK_TIMESTAMP,
        reason: "expected integer Unix seconds",
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed);
    }
    value.parse().map_err(|_| malformed)
}

/// The signatures of a `webhook-signature` header, by version.
#[derive(Debug, Default, PartialEq)]
struct Signatures {
    /// `v1,` entries: HMAC-SHA256, 32 bytes.
    v1: Vec<[u8; 32]>,
    /// `v1a,` entries: Ed25519, 64 bytes.
    v1a: Vec<[u8; 64]>,
}

/// The decoded `v1` and `v1a` signatures of a `webhook-signature` header.
/// Entries that are not a signature's length of base64 cannot match and are
/// left out; a header with no entry of either version is malformed.
fn parse_signatures(value: &str) -> Result<Signatures, WebhookError> {
    let mut any_known = false;
    let mut found = Signatures::default();
    for entry in value.split_ascii_whitespace() {
        if let Some(b64) = entry.strip_prefix(V1A) {
            any_known = true;
            if let Ok(bytes) = BASE64.decode(b64)
                && let Ok(signature) = <[u8; 64]>::try_from(bytes)
            {
                found.v1a.push(signature);
            }
        } else if let Some(b64) = entry.strip_prefix("v1,") {
            any_known = true;
            if let Ok(bytes) = BASE64.decode(b64)
                && let Ok(signature) = <[u8; 32]>::try_from(bytes)
            {
                found.v1.push(signature);
            }
        }
    }
    if any_known {
        Ok(found)
    } else {
        Err(WebhookError::MalformedHeader {
            header: HEADER_WEBHOOK_SIGNATURE,
            reason: "no `v1,<base64>` or `v1a,<base64>` entry",
        })
    }
}

/// Unix seconds; negative before 1970.
fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// Why a webhook request was refused.
///
/// Its message says precisely what was wrong and is safe to return to the
/// caller: it never contains a secret or an expected signature.
/// [`status_code`](Self::status_code) gives the HTTP status to answer with.
#[derive(Debug)]
#[non_exhaustive]
pub enum WebhookError {
    /// A header the check needs was absent: its name.
    MissingHeader(&'static str),
    /// The request had neither `webhook-signature` nor `x-notifly-signature`.
    MissingSignature,
    /// A header was present but not in the expected format.
    MalformedHeader {
        /// The header's name.
        header: &'static str,
        /// What was expected.
        reason: &'static str,
    },
    /// `webhook-timestamp` is further from the receiver's clock than the
    /// tolerance allows: an old request replayed, or a clock that is off.
    StaleTimestamp {
        /// The request's timestamp (Unix seconds).
        timestamp: i64,
        /// The receiver's clock (Unix seconds).
        now: i64,
        /// The tolerance, in whole seconds.
        tolerance: Duration,
    },
    /// The signature is well-formed but was not made over this request with
    /// any of the secrets.
    NoMatch {
        /// The header whose signature(s) did not match.
        header: &'static str,
    },
    /// The signature verified but the body is not a webhook event.
    InvalidBody(serde_json::Error),
}

impl WebhookError {
    /// The HTTP status to answer with: `401 Unauthorized` for a signature
    /// that did not match or a stale timestamp, `400 Bad Request` for
    /// missing or malformed headers and an invalid body.
    pub fn status_code(&self) -> StatusCode {
        match self {
            WebhookError::StaleTimestamp { .. } | WebhookError::NoMatch { .. } => {
                StatusCode::UNAUTHORIZED
            }
            WebhookError::MissingHeader(_)
            | WebhookError::MissingSignature
            | WebhookError::MalformedHeader { .. }
            | WebhookError::InvalidBody(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl fmt::Display for WebhookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebhookError::MissingHeader(h) => write!(f, "missing `{h}` header"),
            WebhookError::MissingSignature => write!(
                f,
                "missing signature: expected a `{HEADER_WEBHOOK_SIGNATURE}` or `{HEADER_NOTIFLY_SIGNATURE}` header"
            ),
            WebhookError::MalformedHeader { header, reason } => {
                write!(f, "malformed `{header}` header: {reason}")
            }
            WebhookError::StaleTimestamp {
                timestamp,
                now,
                tolerance,
            } => {
                let (by, direction) = if timestamp <= now {
                    (now.abs_diff(*timestamp), "in the past")
                } else {
                    (timestamp.abs_diff(*now), "in the future")
                };
                write!(
                    f,
                    "`{HEADER_WEBHOOK_TIMESTAMP}` is {by} s {direction}; at most {} s is allowed",
                    tolerance.as_secs()
                )
            }
            WebhookError::NoMatch { header } => {
                write!(f, "no `{header}` signature matched the webhook secret")
            }
            WebhookError::InvalidBody(e) => write!(f, "invalid webhook body: {e}"),
        }
    }
}

impl std::error::Error for WebhookError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WebhookError::InvalidBody(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_plain_integers() {
        assert_eq!(parse_timestamp(" 1700000000 ").unwrap(), 1_700_000_000);
        for bad in ["", "-5", "+5", "1.5", "1e9", "99999999999999999999", "abc"] {
            assert!(
                matches!(
                    parse_timestamp(bad),
                    Err(WebhookError::MalformedHeader {
                        header: HEADER_WEBHOOK_TIMESTAMP,
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn signature_entries_of_other_versions_are_ignored() {
        assert!(parse_signatures("v2,abc v1b,xyz").is_err());
        assert!(parse_signatures("").is_err());
        // An entry that cannot be a signature still makes the header
        // well-formed; it just cannot match.
        assert_eq!(
            parse_signatures("v1,!!! v2,x v1a,AAAA").unwrap(),
            Signatures::default()
        );
        let parsed = parse_signatures(&format!(
            "v1a,{} v1,{}",
            BASE64.encode([1; 64]),
            BASE64.encode([2; 32])
        ))
        .unwrap();
        assert_eq!(parsed.v1a, vec![[1; 64]]);
        assert_eq!(parsed.v1, vec![[2; 32]]);
    }

    #[test]
    fn a_private_key_is_refused_as_a_verifier_key() {
        let private = crate::sign::SigningKey::from_seed(&[3; 32]);
        assert!(Webhook::new(&private.encode()).is_err());
        assert!(Webhook::new(&private.public_key().encode()).is_ok());
    }

    #[test]
    fn unix_seconds_before_and_after_the_epoch() {
        assert_eq!(unix_seconds(UNIX_EPOCH + Duration::from_secs(5)), 5);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), -5);
    }

    #[test]
    fn debug_hides_secrets() {
        let w = Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let debug = format!("{w:?}");
        assert!(!debug.contains("MfKQ"), "{debug}");
        assert!(debug.contains("<1 redacted>"), "{debug}");
    }
}
