//! Ed25519 keys for Standard Webhooks' asymmetric signatures (`v1a`).
//!
//! An endpoint whose `signature_scheme` is `ed25519` signs the Standard
//! Webhooks message `{webhook-id}.{webhook-timestamp}.{body}` with its own
//! private key; receivers verify with the public key alone, so nobody who
//! can verify can also sign. Keys travel as text: `whsk_` + base64 of the
//! 32-byte private key (the seed), `whpk_` + base64 of the 32-byte public key.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Signer;

use crate::signature::InvalidSecret;

const SIGNING_KEY_PREFIX: &str = "whsk_";
const PUBLIC_KEY_PREFIX: &str = "whpk_";
/// The version tag of an Ed25519 entry in `webhook-signature`.
pub(crate) const V1A: &str = "v1a,";

/// An Ed25519 private key (`whsk_…`): signs `v1a` entries.
///
/// Its `Debug` output is redacted.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

/// An Ed25519 public key (`whpk_…`): verifies `v1a` entries.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.encode())
    }
}

/// 32 bytes after `prefix`, base64-encoded.
fn decode_32(text: &str, prefix: &str) -> Result<[u8; 32], InvalidSecret> {
    let b64 = text.strip_prefix(prefix).ok_or(InvalidSecret)?;
    let bytes = BASE64.decode(b64).map_err(|_| InvalidSecret)?;
    <[u8; 32]>::try_from(bytes).map_err(|_| InvalidSecret)
}

impl SigningKey {
    /// Decodes `whsk_<base64 of 32 bytes>`.
    pub fn parse(text: &str) -> Result<Self, InvalidSecret> {
        Ok(Self::from_seed(&decode_32(text, SIGNING_KEY_PREFIX)?))
    }

    /// The key whose 32-byte seed is `seed`. Pick the seed with a
    /// cryptographically secure random generator.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// `whsk_<base64>`: the form [`parse`](Self::parse) reads.
    pub fn encode(&self) -> String {
        format!("{SIGNING_KEY_PREFIX}{}", BASE64.encode(self.0.to_bytes()))
    }

    /// The public key that verifies this key's signatures.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// One `v1a,<base64>` entry of the `webhook-signature` header: the
    /// signature of `{webhook_id}.{timestamp}.{body}`.
    pub fn sign(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
        let message = message(webhook_id, timestamp, body);
        let signature = self.0.sign(&message);
        format!("{V1A}{}", BASE64.encode(signature.to_bytes()))
    }
}

impl PublicKey {
    /// Decodes `whpk_<base64 of 32 bytes>`; fails if the bytes are not a
    /// point of the curve.
    pub fn parse(text: &str) -> Result<Self, InvalidSecret> {
        let bytes = decode_32(text, PUBLIC_KEY_PREFIX)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| InvalidSecret)
    }

    /// `whpk_<base64>`: the form [`parse`](Self::parse) reads, and the one
    /// `GET /v1/webhooks/{id}/secret` returns as `public_key`.
    pub fn encode(&self) -> String {
        format!("{PUBLIC_KEY_PREFIX}{}", BASE64.encode(self.0.as_bytes()))
    }

    /// Whether `signature` (64 raw bytes) signs `{webhook_id}.{timestamp}.{body}`.
    /// Uses strict verification (no malleable signatures, no small-order keys).
    pub(crate) fn verifies(
        &self,
        webhook_id: &str,
        timestamp: i64,
        body: &[u8],
        signature: &[u8; 64],
    ) -> bool {
        let message = message(webhook_id, timestamp, body);
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        self.0.verify_strict(&message, &signature).is_ok()
    }
}

/// The Standard Webhooks message: `{webhook_id}.{timestamp}.{body}`.
fn message(webhook_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let timestamp = timestamp.to_string();
    let mut message = Vec::with_capacity(webhook_id.len() + timestamp.len() + body.len() + 2);
    message.extend_from_slice(webhook_id.as_bytes());
    message.push(b'.');
    message.extend_from_slice(timestamp.as_bytes());
    message.push(b'.');
    message.extend_from_slice(body);
    message
}

/// Whether `text` looks like a `whsk_` signing key (not whether it is valid).
pub(crate) fn is_signing_key(text: &str) -> bool {
    text.starts_with(SIGNING_KEY_PREFIX)
}

/// Whether `text` looks like a `whpk_` public key (not whether it is valid).
pub(crate) fn is_public_key(text: &str) -> bool {
    text.starts_with(PUBLIC_KEY_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_refuse_other_shapes() {
        let key = SigningKey::from_seed(&[7; 32]);
        let again = SigningKey::parse(&key.encode()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let public = PublicKey::parse(&key.public_key().encode()).unwrap();
        assert_eq!(public, key.public_key());
        for bad in [
            "",
            "whsk_",
            "whsk_AAAA",
            "whpk_AAAA",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ] {
            assert!(SigningKey::parse(bad).is_err(), "{bad}");
            assert!(PublicKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_signature_verifies_only_its_own_message() {
        let key = SigningKey::from_seed(&[9; 32]);
        let entry = key.sign("msg_1", 1_700_000_000, b"{}");
        let raw = BASE64.decode(entry.strip_prefix(V1A).unwrap()).unwrap();
        let raw: [u8; 64] = raw.try_into().unwrap();
        let public = key.public_key();
        assert!(public.verifies("msg_1", 1_700_000_000, b"{}", &raw));
        assert!(!public.verifies("msg_2", 1_700_000_000, b"{}", &raw));
        assert!(!public.verifies("msg_1", 1_700_000_001, b"{}", &raw));
        assert!(!public.verifies("msg_1", 1_700_000_000, b"{ }", &raw));
        let other = SigningKey::from_seed(&[10; 32]).public_key();
        assert!(!other.verifies("msg_1", 1_700_000_000, b"{}", &raw));
    }

    #[test]
    fn debug_hides_the_private_key() {
        let key = SigningKey::from_seed(&[1; 32]);
        assert_eq!(format!("{key:?}"), "SigningKey(<redacted>)");
    }
}
