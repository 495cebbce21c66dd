//! Checks our signer and verifier against `shared/vectors/signatures.json`, which
//! was computed independently of this code. A copy lives in `tests/data/` so the
//! crate builds and tests on its own.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::time::{Duration, UNIX_EPOCH};

use notifly_webhooks::{
    StandardSecret, VerifyError, Webhook, WebhookError, sign_hex, signature_headers, verify_hex,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct File {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    secret: String,
    body_base64: String,
    x_notifly_signature: String,
    webhook_id: String,
    webhook_timestamp: i64,
    webhook_signature: String,
}

fn vectors() -> Vec<Vector> {
    let raw = include_str!("../data/signatures.json");
    let file: File = serde_json::from_str(raw).expect("vectors parse");
    assert!(!file.vectors.is_empty());
    file.vectors
}

#[test]
fn notifly_signature_matches_vectors() {
    for v in vectors() {
        let body = BASE64.decode(&v.body_base64).unwrap();
        assert_eq!(sign_hex(&v.secret, &body), v.x_notifly_signature);
        assert_eq!(verify_hex(&v.secret, &body, &v.x_notifly_signature), Ok(()));
        let mut tampered = body.clone();
        tampered.push(b' ');
        assert_eq!(
            verify_hex(&v.secret, &tampered, &v.x_notifly_signature),
            Err(VerifyError::NoMatch)
        );
    }
}

#[test]
fn standard_signature_matches_vectors() {
    for v in vectors() {
        let body = BASE64.decode(&v.body_base64).unwrap();
        let secret = StandardSecret::parse(&v.secret).unwrap();
        assert_eq!(
            secret.sign(&v.webhook_id, v.webhook_timestamp, &body),
            v.webhook_signature
        );
        let now = v.webhook_timestamp + 10;
        assert_eq!(
            secret.verify(
                &v.webhook_id,
                v.webhook_timestamp,
                &v.webhook_signature,
                &body,
                now,
                300
            ),
            Ok(())
        );
        assert_eq!(
            secret.verify(
                &v.webhook_id,
                v.webhook_timestamp,
                &v.webhook_signature,
                &body,
                now + 600,
                300
            ),
            Err(VerifyError::StaleTimestamp)
        );
    }
}

#[test]
fn webhook_verifier_and_shared_signer_match_vectors() {
    for v in vectors() {
        let body = BASE64.decode(&v.body_base64).unwrap();
        let signed = signature_headers(&v.secret, None, &v.webhook_id, v.webhook_timestamp, &body);
        assert_eq!(signed.notifly, v.x_notifly_signature);
        assert_eq!(
            signed.standard.as_deref(),
            Some(v.webhook_signature.as_str())
        );

        let webhook = Webhook::new(&v.secret).unwrap();
        webhook
            .verify_notifly_signature(&body, Some(&v.x_notifly_signature))
            .unwrap();
        let at = |secs: i64| UNIX_EPOCH + Duration::from_secs(secs.try_into().unwrap());
        let ts = v.webhook_timestamp.to_string();
        let standard = |now| {
            webhook.verify_standard(
                &body,
                Some(&v.webhook_id),
                Some(&ts),
                Some(&v.webhook_signature),
                now,
            )
        };
        standard(at(v.webhook_timestamp + 10)).unwrap();
        assert!(matches!(
            standard(at(v.webhook_timestamp + 600)),
            Err(WebhookError::StaleTimestamp { .. })
        ));
    }
}
