//! What an endpoint signs with: its keys, generated and written as one text.
//!
//! Every endpoint has a `whsec_` secret (it signs `x-notifly-signature`, and
//! `webhook-signature`'s `v1` entry under `hmac-sha256`); an `ed25519`
//! endpoint also has a `whsk_` private key (its `v1a` entry). Both travel as
//! one text, `whsec_… whsk_…`, in the endpoint's `secret` (and, during a
//! rotation's overlap window, `previous_secret`).

use notifly_webhooks::{EndpointKeys, SigningKey, StandardSecret};
use rand::RngCore;

/// An endpoint's signing keys.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySet {
    /// `whsec_…`.
    pub secret: String,
    /// `whsk_…`, for an `ed25519` endpoint.
    pub signing_key: Option<String>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySet(<redacted>)")
    }
}

/// 32 bytes from the operating system's generator (through `rand`'s
/// thread-local CSPRNG, seeded from it).
fn random_32() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// A new `whsec_` secret: 32 random bytes, base64.
pub fn new_secret() -> String {
    StandardSecret::encode(&random_32())
}

impl KeySet {
    /// New keys: a fresh secret, and a fresh key pair if `ed25519`.
    pub fn generate(ed25519: bool) -> KeySet {
        KeySet {
            secret: new_secret(),
            signing_key: ed25519.then(|| SigningKey::from_seed(&random_32()).encode()),
        }
    }

    /// Reads the text [`encode`](Self::encode) writes. A text without a
    /// space is a secret alone (every endpoint before Ed25519 keys).
    pub fn decode(text: &str) -> KeySet {
        match text.split_once(' ') {
            Some((secret, key)) => KeySet {
                secret: secret.to_owned(),
                signing_key: Some(key.to_owned()),
            },
            None => KeySet {
                secret: text.to_owned(),
                signing_key: None,
            },
        }
    }

    /// `whsec_…`, or `whsec_… whsk_…`.
    pub fn encode(&self) -> String {
        match &self.signing_key {
            Some(key) => format!("{} {key}", self.secret),
            None => self.secret.clone(),
        }
    }

    /// These keys with a key pair added (`ed25519`) or dropped (not): the
    /// secret stays, so `x-notifly-signature` verifies as before.
    pub fn with_scheme(&self, ed25519: bool) -> KeySet {
        KeySet {
            secret: self.secret.clone(),
            signing_key: match (&self.signing_key, ed25519) {
                (Some(key), true) => Some(key.clone()),
                (None, true) => Some(SigningKey::from_seed(&random_32()).encode()),
                (_, false) => None,
            },
        }
    }

    /// The `whpk_` public key of the private key, if there is one (and it
    /// is valid).
    pub fn public_key(&self) -> Option<String> {
        let key = SigningKey::parse(self.signing_key.as_deref()?).ok()?;
        Some(key.public_key().encode())
    }

    /// The keys as the signer takes them.
    pub fn as_keys(&self) -> EndpointKeys<'_> {
        EndpointKeys {
            secret: &self.secret,
            signing_key: self.signing_key.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_sets_round_trip_through_their_text() {
        for ed25519 in [false, true] {
            let keys = KeySet::generate(ed25519);
            assert!(keys.secret.starts_with("whsec_"));
            assert!(StandardSecret::parse(&keys.secret).is_ok());
            assert_eq!(keys.signing_key.is_some(), ed25519);
            assert_eq!(KeySet::decode(&keys.encode()), keys);
            assert_eq!(keys.public_key().is_some(), ed25519);
        }
        assert_ne!(KeySet::generate(true), KeySet::generate(true));
    }

    #[test]
    fn changing_the_scheme_keeps_the_secret() {
        let hmac = KeySet::generate(false);
        let ed = hmac.with_scheme(true);
        assert_eq!(ed.secret, hmac.secret);
        assert!(ed.public_key().is_some());
        assert_eq!(ed.with_scheme(true), ed);
        assert_eq!(ed.with_scheme(false), hmac);
    }
}
