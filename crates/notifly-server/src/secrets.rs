//! What an endpoint signs with, and how it is kept at rest.
//!
//! Every endpoint has a `whsec_` secret (it signs `x-notifly-signature`, and
//! `webhook-signature`'s `v1` entry under `hmac-sha256`); an `ed25519`
//! endpoint also has a `whsk_` private key (its `v1a` entry). Both travel as
//! one text, `whsec_… whsk_…` ([`KeySet`]), which the database holds only
//! sealed by the [`Keyring`]: XChaCha20-Poly1305 under the operator's
//! encryption key, bound to the endpoint's id.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use notifly_webhooks::{EndpointKeys, SigningKey, StandardSecret};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::{Store, StoredKeys};

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

/// What sealed text starts with: the format's version. Anything else in a
/// secret column is plaintext from before sealing, sealed at start-up.
const SEALED_PREFIX: &str = "nfsealed1:";
/// Bytes of an XChaCha20-Poly1305 nonce.
const NONCE_LEN: usize = 24;

/// The encryption keys secrets are sealed under: the first seals, every one
/// opens (so that a key can be rotated: list the new one first, the old
/// one after it, until every row is sealed again). Its `Debug` output shows
/// only the keys' ids.
pub struct Keyring {
    keys: Vec<Key>,
}

struct Key {
    /// The first 8 hex digits of the key's SHA-256: names the key that
    /// sealed a row without revealing anything of it.
    id: String,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("ids", &self.ids()).finish()
    }
}

/// Why a stored secret could not be opened. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Sealed under a key that is not configured.
    #[error(
        "sealed with encryption key {key_id}, which is not among this server's keys ({configured}); start it with that key (encryption_key / NOTIFLY_ENCRYPTION_KEY)"
    )]
    UnknownKey { key_id: String, configured: String },
    /// The key is right by its id but the text does not authenticate: the
    /// row was altered, or belongs to another endpoint.
    #[error(
        "the sealed text does not authenticate with encryption key {key_id}: it was altered or copied from another row"
    )]
    Corrupt { key_id: String },
    /// Not sealed text at all.
    #[error("malformed sealed text")]
    Malformed,
}

/// What sealing state a stored text is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sealing {
    /// Plaintext, from before secrets were sealed.
    Plain,
    /// Sealed under the first (sealing) key.
    Current,
    /// Sealed under another configured key: to be sealed again.
    Older,
    /// Sealed under a key this server does not have.
    Unknown(String),
}

impl Keyring {
    /// Parses a comma-separated list of keys, each base64 of 32 bytes (as
    /// [`Keyring::generate_key`] makes them); the first one seals. Errors
    /// name the position of a bad key, never its text.
    pub fn parse(list: &str) -> anyhow::Result<Keyring> {
        let mut keys: Vec<Key> = Vec::new();
        for (i, text) in list.split(',').map(str::trim).enumerate() {
            let n = i + 1;
            let bytes = BASE64.decode(text).map_err(|_| {
                anyhow::anyhow!("encryption_key: key {n} is not base64 (a key is 32 random bytes in base64, e.g. from `openssl rand -base64 32`)")
            })?;
            let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
                anyhow::anyhow!("encryption_key: key {n} is not 32 bytes (a key is 32 random bytes in base64, e.g. from `openssl rand -base64 32`)")
            })?;
            let id = hex::encode(&Sha256::digest(bytes)[..4]);
            if keys.iter().any(|k| k.id == id) {
                anyhow::bail!("encryption_key: key {n} is listed twice");
            }
            keys.push(Key {
                id,
                cipher: XChaCha20Poly1305::new(&bytes.into()),
            });
        }
        Ok(Keyring { keys })
    }

    /// A new random key, base64: what `encryption_key` takes.
    pub fn generate_key() -> String {
        BASE64.encode(random_32())
    }

    /// The keys' ids, the sealing one first.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    fn sealing_key(&self) -> &Key {
        // `parse` made at least one (an empty list fails to decode).
        &self.keys[0]
    }

    /// Seals `plain` for the endpoint `endpoint_id` under the first key:
    /// `nfsealed1:<key id>:<base64 of nonce and ciphertext>`. The id is
    /// authenticated data, so the text opens only for that endpoint.
    pub fn seal(&self, endpoint_id: &str, plain: &str) -> String {
        let key = self.sealing_key();
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: endpoint_id.as_bytes(),
                },
            )
            // Encryption fails only for messages of gigabytes.
            .unwrap_or_else(|_| unreachable!("a secret is a few hundred bytes"));
        let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        format!("{SEALED_PREFIX}{}:{}", key.id, BASE64.encode(bytes))
    }

    /// The sealing state of a stored text.
    pub fn sealing(&self, stored: &str) -> Sealing {
        let Some(rest) = stored.strip_prefix(SEALED_PREFIX) else {
            return Sealing::Plain;
        };
        let id = rest.split(':').next().unwrap_or("");
        match self.keys.iter().position(|k| k.id == id) {
            Some(0) => Sealing::Current,
            Some(_) => Sealing::Older,
            None => Sealing::Unknown(id.to_owned()),
        }
    }

    /// Opens what [`Keyring::seal`] made for `endpoint_id`, with whichever
    /// configured key sealed it.
    pub fn open(&self, endpoint_id: &str, stored: &str) -> Result<String, SealError> {
        let rest = stored
            .strip_prefix(SEALED_PREFIX)
            .ok_or(SealError::Malformed)?;
        let (id, b64) = rest.split_once(':').ok_or(SealError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey {
                key_id: id.to_owned(),
                configured: self.ids().join(", "),
            })?;
        let bytes = BASE64.decode(b64).map_err(|_| SealError::Malformed)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let corrupt = || SealError::Corrupt {
            key_id: id.to_owned(),
        };
        let plain = key
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: endpoint_id.as_bytes(),
                },
            )
            .map_err(|_| corrupt())?;
        String::from_utf8(plain).map_err(|_| corrupt())
    }
}

impl Keyring {
    /// An endpoint's keys sealed for the database.
    pub fn seal_keys(&self, endpoint_id: &str, keys: &KeySet) -> String {
        self.seal(endpoint_id, &keys.encode())
    }

    /// An endpoint's keys from what the database holds: sealed text, or
    /// plaintext from before sealing (which start-up seals; a node of an
    /// older version may still write it during a rolling upgrade).
    pub fn open_keys(&self, endpoint_id: &str, stored: &str) -> Result<KeySet, SealError> {
        match self.sealing(stored) {
            Sealing::Plain => Ok(KeySet::decode(stored)),
            _ => self.open(endpoint_id, stored).map(|t| KeySet::decode(&t)),
        }
    }
}

impl Keyring {
    /// An endpoint's custom headers sealed for the database: a JSON array
    /// of `[name, value]` pairs, bound to the endpoint's id and to this use,
    /// so that the text cannot stand in for its keys; `None` for none.
    pub fn seal_headers(&self, endpoint_id: &str, headers: &[(String, String)]) -> Option<String> {
        if headers.is_empty() {
            return None;
        }
        let json = serde_json::to_string(headers)
            .unwrap_or_else(|_| unreachable!("pairs of strings serialize"));
        Some(self.seal(&headers_aad(endpoint_id), &json))
    }

    /// An endpoint's custom headers from what [`Keyring::seal_headers`] stored.
    pub fn open_headers(
        &self,
        endpoint_id: &str,
        stored: Option<&str>,
    ) -> Result<Vec<(String, String)>, SealError> {
        let Some(stored) = stored else {
            return Ok(Vec::new());
        };
        let json = self.open(&headers_aad(endpoint_id), stored)?;
        serde_json::from_str(&json).map_err(|_| SealError::Malformed)
    }
}

/// What custom headers are bound to: the endpoint, and their use.
fn headers_aad(endpoint_id: &str) -> String {
    format!("{endpoint_id}/headers")
}

/// Endpoints read per statement while sealing.
const SEAL_BATCH: u32 = 500;

/// What [`seal_stored`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    /// Endpoints whose plaintext keys it sealed.
    pub plaintext: u64,
    /// Endpoints whose keys it sealed again under the first key.
    pub resealed: u64,
    /// Endpoints left sealed under an older key (when not resealing).
    pub older: u64,
}

/// Goes through every endpoint's stored keys: seals plaintext ones, checks
/// that every sealed one opens (so that a wrong or missing key stops the
/// start-up instead of signing garbage), and, if `reseal`, seals again
/// those sealed under an older key. A row that changes meanwhile (a
/// rotation) is read again. Fails on the first row that does not open.
pub async fn seal_stored(
    store: &dyn Store,
    keyring: &Keyring,
    reseal: bool,
) -> anyhow::Result<Sealed> {
    let mut done = Sealed::default();
    let mut after = String::new();
    let mut retries = 0;
    'pages: loop {
        let page = store.endpoint_keys(&after, SEAL_BATCH).await?;
        let Some(last) = page.last() else {
            return Ok(done);
        };
        let last = last.endpoint_id.clone();
        for row in page {
            let id = &row.endpoint_id;
            let mut states = vec![keyring.sealing(&row.secret)];
            states.extend(row.previous_secret.iter().map(|p| keyring.sealing(p)));
            let mut plain = false;
            let mut older = false;
            for (state, stored) in states
                .iter()
                .zip(std::iter::once(&row.secret).chain(&row.previous_secret))
            {
                match state {
                    Sealing::Plain => plain = true,
                    Sealing::Current | Sealing::Older | Sealing::Unknown(_) => {
                        keyring.open(id, stored).map_err(|e| {
                            anyhow::anyhow!(
                                "cannot open the signing secret of webhook endpoint {id}: {e}"
                            )
                        })?;
                        older |= *state == Sealing::Older;
                    }
                }
            }
            // Custom headers were sealed from the start: never plaintext.
            let headers = keyring
                .open_headers(id, row.headers.as_deref())
                .map_err(|e| {
                    anyhow::anyhow!("cannot open the custom headers of webhook endpoint {id}: {e}")
                })?;
            older |= row
                .headers
                .as_deref()
                .is_some_and(|h| keyring.sealing(h) == Sealing::Older);
            if !(plain || (older && reseal)) {
                done.older += u64::from(older);
                continue;
            }
            let reseal_one = |stored: &str| -> anyhow::Result<String> {
                Ok(keyring.seal_keys(id, &keyring.open_keys(id, stored)?))
            };
            let sealed = StoredKeys {
                endpoint_id: id.clone(),
                secret: reseal_one(&row.secret)?,
                previous_secret: row.previous_secret.as_deref().map(reseal_one).transpose()?,
                headers: keyring.seal_headers(id, &headers),
            };
            if store.replace_endpoint_keys(&row, &sealed).await? {
                retries = 0;
                if plain {
                    done.plaintext += 1;
                } else {
                    done.resealed += 1;
                }
            } else {
                // Changed since it was read (rotated, or sealed by another
                // node): read this page again from this row.
                retries += 1;
                anyhow::ensure!(
                    retries < 100,
                    "the keys of webhook endpoint {id} kept changing while they were being sealed"
                );
                continue 'pages;
            }
            after.clone_from(id);
        }
        after = last;
    }
}

/// Seals again, in the background, what is sealed under an older key, and
/// says so in the log. Failures are logged: the rows still open with the
/// older key, and the next start tries again.
pub async fn reseal_in_background(
    store: std::sync::Arc<dyn Store>,
    keyring: std::sync::Arc<Keyring>,
) {
    match seal_stored(store.as_ref(), &keyring, true).await {
        Ok(done) => tracing::info!(
            endpoints = done.resealed,
            key = keyring.ids()[0],
            "sealed webhook secrets again under the first encryption key; the older keys can be removed from encryption_key"
        ),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "could not seal every webhook secret again under the first encryption key; the next start tries again")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(keys: &[&str]) -> Keyring {
        Keyring::parse(&keys.join(",")).unwrap()
    }

    #[test]
    fn sealed_text_opens_only_for_its_endpoint_and_keys() {
        let (a, b) = (Keyring::generate_key(), Keyring::generate_key());
        let ring = keyring(&[&a]);
        let plain = KeySet::generate(true).encode();
        let sealed = ring.seal("ep1", &plain);
        assert!(sealed.starts_with(SEALED_PREFIX));
        assert!(!sealed.contains("whsec_") && !sealed.contains("whsk_"));
        assert_ne!(sealed, ring.seal("ep1", &plain), "a fresh nonce each time");
        assert_eq!(ring.open("ep1", &sealed).unwrap(), plain);
        assert_eq!(ring.sealing(&sealed), Sealing::Current);
        // Another endpoint's row: refused.
        assert!(matches!(
            ring.open("ep2", &sealed),
            Err(SealError::Corrupt { .. })
        ));
        // Another key: refused by its id, naming both.
        let other = keyring(&[&b]);
        let err = other.open("ep1", &sealed).unwrap_err();
        assert!(matches!(err, SealError::UnknownKey { .. }));
        assert!(err.to_string().contains(ring.ids()[0]), "{err}");
        assert_eq!(
            other.sealing(&sealed),
            Sealing::Unknown(ring.ids()[0].to_owned())
        );
        // A changed byte: refused.
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 3;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(ring.open("ep1", &altered).is_err());
        // Rotation: the new key seals, the old one still opens.
        let rotated = keyring(&[&b, &a]);
        assert_eq!(rotated.sealing(&sealed), Sealing::Older);
        assert_eq!(rotated.open("ep1", &sealed).unwrap(), plain);
        let resealed = rotated.seal("ep1", &plain);
        assert_eq!(rotated.sealing(&resealed), Sealing::Current);
        assert_eq!(ring.sealing("whsec_abc"), Sealing::Plain);
        assert!(matches!(
            ring.open("ep1", "whsec_abc"),
            Err(SealError::Malformed)
        ));
    }

    #[test]
    fn bad_key_lists_are_refused_without_echoing_them() {
        let good = Keyring::generate_key();
        for (list, says) in [
            ("", "key 1 is not 32 bytes"),
            ("not base64!", "key 1 is not base64"),
            ("c2hvcnQ=", "key 1 is not 32 bytes"),
            (&format!("{good},{good}") as &str, "key 2 is listed twice"),
            (&format!("{good},") as &str, "key 2 is not 32 bytes"),
        ] {
            let err = Keyring::parse(list).unwrap_err().to_string();
            assert!(err.contains(says), "{list:?}: {err}");
            assert!(!err.contains(&good), "{err}");
        }
        let ring = keyring(&[&good, &Keyring::generate_key()]);
        assert_eq!(ring.ids().len(), 2);
        assert!(!format!("{ring:?}").contains(&good));
    }

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
