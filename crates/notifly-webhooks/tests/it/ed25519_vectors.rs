//! Checks Ed25519 (`v1a`) signing and verifying against
//! `shared/vectors/ed25519.json`, computed independently of this code (Python's
//! `cryptography`, checked with Node's `crypto`). A copy lives in `tests/data/`
//! so the crate builds and tests on its own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use notifly_webhooks::{
    EndpointKeys, PublicKey, SigningKey, Webhook, WebhookError, endpoint_signature_headers,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct File {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    signing_key: String,
    public_key: String,
    webhook_id: String,
    webhook_timestamp: i64,
    body_base64: String,
    webhook_signature: String,
}

fn vectors() -> Vec<Vector> {
    let file: File = serde_json::from_str(include_str!("../data/ed25519.json")).unwrap();
    assert!(!file.vectors.is_empty());
    file.vectors
}

/// The Standard Webhooks check alone (the vectors' bodies are not all
/// complete events, so `verify`'s parse is not the point here).
fn check(
    webhook: &Webhook,
    id: &str,
    timestamp: i64,
    signature: &str,
    body: &[u8],
    at: SystemTime,
) -> Result<(), WebhookError> {
    webhook.verify_standard(
        body,
        Some(id),
        Some(&timestamp.to_string()),
        Some(signature),
        at,
    )
}

#[test]
fn signing_reproduces_the_vectors_exactly() {
    for v in vectors() {
        let body = BASE64.decode(&v.body_base64).unwrap();
        let key = SigningKey::parse(&v.signing_key).unwrap();
        assert_eq!(key.encode(), v.signing_key);
        assert_eq!(key.public_key().encode(), v.public_key);
        assert_eq!(
            key.sign(&v.webhook_id, v.webhook_timestamp, &body),
            v.webhook_signature
        );
        // The one signing path the server uses gives the same entry.
        let h = endpoint_signature_headers(
            EndpointKeys {
                secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                signing_key: Some(&v.signing_key),
            },
            None,
            &v.webhook_id,
            v.webhook_timestamp,
            &body,
        );
        assert_eq!(h.standard.as_deref(), Some(v.webhook_signature.as_str()));
    }
}

#[test]
fn verifying_accepts_the_vectors_and_nothing_else() {
    for v in vectors() {
        let body = BASE64.decode(&v.body_base64).unwrap();
        assert!(PublicKey::parse(&v.public_key).is_ok());
        let webhook = Webhook::new(&v.public_key).unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(v.webhook_timestamp as u64 + 5);
        let (id, ts, sig) = (
            v.webhook_id.as_str(),
            v.webhook_timestamp,
            v.webhook_signature.as_str(),
        );
        assert!(check(&webhook, id, ts, sig, &body, at).is_ok());

        // Another body, id or timestamp: no match.
        let mut tampered = body.clone();
        tampered.insert(1, b' ');
        assert!(matches!(
            check(&webhook, id, ts, sig, &tampered, at),
            Err(WebhookError::NoMatch { .. })
        ));
        assert!(check(&webhook, "x", ts, sig, &body, at).is_err());
        assert!(check(&webhook, id, ts + 1, sig, &body, at).is_err());

        // A signature with one bit flipped: no match.
        let mut raw = BASE64.decode(sig.strip_prefix("v1a,").unwrap()).unwrap();
        raw[10] ^= 1;
        let flipped = format!("v1a,{}", BASE64.encode(&raw));
        assert!(check(&webhook, id, ts, &flipped, &body, at).is_err());

        // Stale: outside the five-minute tolerance.
        let late = UNIX_EPOCH + Duration::from_secs(ts as u64 + 301);
        assert!(matches!(
            check(&webhook, id, ts, sig, &body, late),
            Err(WebhookError::StaleTimestamp { .. })
        ));

        // During a rotation a header carries two entries; either key verifies.
        let other = SigningKey::from_seed(&[5; 32]);
        let both = format!("{} {sig}", other.sign(id, ts, &body));
        assert!(check(&webhook, id, ts, &both, &body, at).is_ok());
        let other_only = Webhook::new(&other.public_key().encode()).unwrap();
        assert!(check(&other_only, id, ts, &both, &body, at).is_ok());
    }
}

#[test]
fn a_public_key_verifier_needs_the_standard_headers() {
    let v = &vectors()[0];
    let body = BASE64.decode(&v.body_base64).unwrap();
    let webhook = Webhook::new(&v.public_key).unwrap();
    let mut only_notifly = http::HeaderMap::new();
    only_notifly.insert(
        "x-notifly-signature",
        "00".repeat(32).parse::<http::HeaderValue>().unwrap(),
    );
    assert!(matches!(
        webhook.verify(&only_notifly, &body),
        Err(WebhookError::MissingHeader("webhook-signature"))
    ));
    // An HMAC (`v1`) entry is no use to a public key.
    let v1_only = format!("v1,{}", BASE64.encode([0u8; 32]));
    let at = UNIX_EPOCH + Duration::from_secs(v.webhook_timestamp as u64);
    assert!(matches!(
        check(
            &webhook,
            &v.webhook_id,
            v.webhook_timestamp,
            &v1_only,
            &body,
            at
        ),
        Err(WebhookError::NoMatch { .. })
    ));
}

#[test]
fn a_verifier_with_a_public_key_cannot_be_downgraded_to_the_hmac_header() {
    let v = &vectors()[0];
    let body = BASE64.decode(&v.body_base64).unwrap();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let both = Webhook::with_secrets([v.public_key.as_str(), secret]).unwrap();
    // A request signed with the secret alone, without `webhook-signature`.
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "x-notifly-signature",
        notifly_webhooks::sign_hex(secret, &body).parse().unwrap(),
    );
    assert!(matches!(
        both.verify(&headers, &body),
        Err(WebhookError::MissingHeader("webhook-signature"))
    ));
}
