use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The guide's signature header: lowercase hex HMAC-SHA256 of the body.
pub const HEADER_NOTIFLY_SIGNATURE: &str = "x-notifly-signature";
/// Standard Webhooks: the event id, stable across retries (the dedup key).
pub const HEADER_WEBHOOK_ID: &str = "webhook-id";
/// Standard Webhooks: Unix seconds at which this attempt was signed.
pub const HEADER_WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// Standard Webhooks: space-separated `v1,<base64>` signatures.
pub const HEADER_WEBHOOK_SIGNATURE: &str = "webhook-signature";

const SECRET_PREFIX: &str = "whsec_";

fn hmac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

/// HMAC-SHA256 of `message` keyed with `key`.
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = hmac(key);
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The `x-notifly-signature` value for `body`: lowercase hex of
/// HMAC-SHA256(key = the secret string's UTF-8 bytes, message = the body).
///
/// This is exactly what the guide's Node snippet computes:
/// `crypto.createHmac('sha256', secret).update(payload).digest('hex')`.
pub fn sign_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac(secret.as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Checks an `x-notifly-signature` header value against `body`, in constant time.
///
/// Surrounding whitespace is ignored and upper-case hex is accepted.
pub fn verify_hex(secret: &str, body: &[u8], header: &str) -> Result<(), VerifyError> {
    let given = hex::decode(header.trim()).map_err(|_| VerifyError::Malformed)?;
    let mut mac = hmac(secret.as_bytes());
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given).map_err(|_| VerifyError::NoMatch)
}

/// Why a signature did not verify. It never carries the expected signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// A required header was absent.
    MissingHeader(&'static str),
    /// The header was present but not in the expected format.
    Malformed,
    /// The timestamp is further from now than the tolerance allows.
    StaleTimestamp,
    /// No signature matched any of the secrets.
    NoMatch,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::MissingHeader(h) => write!(f, "missing header `{h}`"),
            VerifyError::Malformed => f.write_str("malformed signature header"),
            VerifyError::StaleTimestamp => f.write_str("timestamp outside the tolerance window"),
            VerifyError::NoMatch => f.write_str("no signature matched"),
        }
    }
}

impl std::error::Error for VerifyError {}

/// A `whsec_…` secret, decoded for Standard Webhooks signing.
///
/// Its `Debug` output is redacted.
#[derive(Clone)]
pub struct StandardSecret {
    key: Vec<u8>,
}

/// The error for a string that is not a `whsec_<base64>` secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSecret;

impl fmt::Display for InvalidSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("secret must be `whsec_` followed by base64")
    }
}

impl std::error::Error for InvalidSecret {}

impl fmt::Debug for StandardSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StandardSecret(<redacted>)")
    }
}

impl StandardSecret {
    /// Decodes a secret as the dashboard shows it (`whsec_<base64>`).
    pub fn parse(secret: &str) -> Result<Self, InvalidSecret> {
        let b64 = secret.strip_prefix(SECRET_PREFIX).ok_or(InvalidSecret)?;
        let key = BASE64.decode(b64).map_err(|_| InvalidSecret)?;
        if key.is_empty() {
            return Err(InvalidSecret);
        }
        Ok(StandardSecret { key })
    }

    /// Encodes raw key bytes as `whsec_<base64>`.
    pub fn encode(key: &[u8]) -> String {
        format!("{SECRET_PREFIX}{}", BASE64.encode(key))
    }

    fn mac(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = hmac(&self.key);
        mac.update(webhook_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The raw HMAC of one Standard Webhooks message.
    pub(crate) fn digest(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        self.mac(webhook_id, timestamp, body)
            .finalize()
            .into_bytes()
            .into()
    }

    /// One `v1,<base64>` entry of the `webhook-signature` header.
    pub fn sign(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
        let sig = self
            .mac(webhook_id, timestamp, body)
            .finalize()
            .into_bytes();
        format!("v1,{}", BASE64.encode(sig))
    }

    /// Checks a Standard Webhooks request: the timestamp must be within
    /// `tolerance_secs` of `now` and at least one `v1,` entry of `signature_header`
    /// must match. Comparisons are constant-time.
    pub fn verify(
        &self,
        webhook_id: &str,
        timestamp: i64,
        signature_header: &str,
        body: &[u8],
        now: i64,
        tolerance_secs: i64,
    ) -> Result<(), VerifyError> {
        // `abs_diff` cannot overflow, whatever timestamp a request carries.
        if now.abs_diff(timestamp) > tolerance_secs.unsigned_abs() {
            return Err(VerifyError::StaleTimestamp);
        }
        let expected = self
            .mac(webhook_id, timestamp, body)
            .finalize()
            .into_bytes();
        let mut any_v1 = false;
        for entry in signature_header.split_whitespace() {
            let Some(b64) = entry.strip_prefix("v1,") else {
                continue;
            };
            any_v1 = true;
            if let Ok(given) = BASE64.decode(b64)
                && bool::from(given.as_slice().ct_eq(expected.as_slice()))
            {
                return Ok(());
            }
        }
        if any_v1 {
            Err(VerifyError::NoMatch)
        } else {
            Err(VerifyError::Malformed)
        }
    }
}
