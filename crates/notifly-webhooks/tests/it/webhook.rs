//! The `Webhook` verifier against the shared signer: what is signed verifies,
//! with any secret and during rotations; any change to the body, the
//! timestamp or the signature is refused with a precise error.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{HeaderMap, HeaderValue, StatusCode};
use notifly_webhooks::sign::sign_request;
use notifly_webhooks::{
    Event, HEADER_NOTIFLY_SIGNATURE, HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE,
    HEADER_WEBHOOK_TIMESTAMP, InvalidSecret, StandardSecret, Webhook, WebhookError, sign_hex,
    signature_headers,
};
use proptest::prelude::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER: &str = "whsec_bm90aWZseSBuZXcgc2VjcmV0IGZvciB0ZXN0cyE=";
const TS: i64 = 1_700_000_000;
const BODY: &[u8] = br#"{"id":"a056V7R7NmNRjl70","type":"contact.created","payload":{"id":"WAz8eIbvDR60rouK","username":"KevinMcCallister","phone_number":"1-800-759-3000","created_at":692233200}}"#;

fn at(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// A `whsec_` secret from any key bytes.
fn secret() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<u8>(), 1..64).prop_map(|k| StandardSecret::encode(&k))
}

fn event_id() -> impl Strategy<Value = String> {
    "[0-9A-Za-z]{16}"
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..512)
}

fn headers(pairs: Vec<(&'static str, String)>) -> HeaderMap {
    pairs
        .into_iter()
        .map(|(k, v)| (k.parse().unwrap(), HeaderValue::from_str(&v).unwrap()))
        .collect()
}

/// Checks the Standard Webhooks signature of `body` at `now`.
fn standard(
    webhook: &Webhook,
    body: &[u8],
    id: &str,
    timestamp: i64,
    signature: Option<&str>,
    now: i64,
) -> Result<(), WebhookError> {
    webhook.verify_standard(
        body,
        Some(id),
        Some(&timestamp.to_string()),
        signature,
        at(now),
    )
}

fn is_no_match(r: &Result<(), WebhookError>, header: &str) -> bool {
    matches!(r, Err(WebhookError::NoMatch { header: h }) if *h == header)
}

proptest! {
    #[test]
    fn both_schemes_round_trip_with_any_secret(
        secret in secret(),
        id in event_id(),
        timestamp in 0i64..4_000_000_000,
        skew in -300i64..=300,
        body in body(),
    ) {
        let webhook = Webhook::new(&secret).unwrap();
        let signed = signature_headers(&secret, None, &id, timestamp, &body);
        prop_assert_eq!(&signed.notifly, &sign_hex(&secret, &body));
        prop_assert!(webhook.verify_notifly_signature(&body, Some(&signed.notifly)).is_ok());
        let padded = format!(" {}\n", signed.notifly.to_uppercase());
        prop_assert!(webhook.verify_notifly_signature(&body, Some(&padded)).is_ok());
        let standard_header = signed.standard.unwrap();
        prop_assert!(standard(&webhook, &body, &id, timestamp, Some(&standard_header), timestamp + skew).is_ok());
    }

    #[test]
    fn any_single_byte_change_of_the_body_fails(
        secret in secret(),
        id in event_id(),
        body in body(),
        index in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let webhook = Webhook::new(&secret).unwrap();
        let signed = signature_headers(&secret, None, &id, TS, &body);
        let mut tampered = body.clone();
        tampered[index.index(body.len())] ^= flip;
        let hex = webhook.verify_notifly_signature(&tampered, Some(&signed.notifly));
        prop_assert!(is_no_match(&hex, HEADER_NOTIFLY_SIGNATURE), "{:?}", hex);
        let std = standard(&webhook, &tampered, &id, TS, signed.standard.as_deref(), TS);
        prop_assert!(is_no_match(&std, HEADER_WEBHOOK_SIGNATURE), "{:?}", std);
        // Appending or dropping a byte fails too.
        let mut longer = body.clone();
        longer.push(b' ');
        prop_assert!(webhook.verify_notifly_signature(&longer, Some(&signed.notifly)).is_err());
        prop_assert!(standard(&webhook, &body[1..], &id, TS, signed.standard.as_deref(), TS).is_err());
    }

    #[test]
    fn a_changed_timestamp_or_id_fails(
        secret in secret(),
        id in event_id(),
        body in body(),
        delta in prop_oneof![-300i64..0, 1i64..=300],
    ) {
        let webhook = Webhook::new(&secret).unwrap();
        let signed = signature_headers(&secret, None, &id, TS, &body);
        let sig = signed.standard.as_deref();
        // Within the tolerance, but not the signed timestamp.
        let r = standard(&webhook, &body, &id, TS + delta, sig, TS);
        prop_assert!(is_no_match(&r, HEADER_WEBHOOK_SIGNATURE), "{:?}", r);
        let r = standard(&webhook, &body, &format!("{id}x"), TS, sig, TS);
        prop_assert!(is_no_match(&r, HEADER_WEBHOOK_SIGNATURE), "{:?}", r);
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_stale_either_way(
        secret in secret(),
        body in body(),
        tolerance in 0u64..3600,
        beyond in 1i64..100_000,
        future in any::<bool>(),
    ) {
        let webhook = Webhook::new(&secret).unwrap().tolerance(Duration::from_secs(tolerance));
        let signed = signature_headers(&secret, None, "a056V7R7NmNRjl70", TS, &body);
        let sig = signed.standard.as_deref();
        let offset = i64::try_from(tolerance).unwrap();
        let edge = if future { TS - offset } else { TS + offset };
        prop_assert!(standard(&webhook, &body, "a056V7R7NmNRjl70", TS, sig, edge).is_ok());
        let now = if future { TS - offset - beyond } else { TS + offset + beyond };
        let r = standard(&webhook, &body, "a056V7R7NmNRjl70", TS, sig, now);
        let stale = matches!(
            r,
            Err(WebhookError::StaleTimestamp { timestamp: TS, now: n, .. }) if n == now
        );
        prop_assert!(stale, "{:?}", r);
        let msg = r.unwrap_err().to_string();
        prop_assert!(msg.contains(if future { "in the future" } else { "in the past" }), "{}", msg);
    }

    #[test]
    fn a_changed_signature_fails(
        secret in secret(),
        body in body(),
        index in 0usize..32,
        flip in 1u8..=255,
    ) {
        let webhook = Webhook::new(&secret).unwrap();
        let signed = signature_headers(&secret, None, "a056V7R7NmNRjl70", TS, &body);

        let mut hex_bytes = hex::decode(&signed.notifly).unwrap();
        hex_bytes[index] ^= flip;
        let r = webhook.verify_notifly_signature(&body, Some(&hex::encode(&hex_bytes)));
        prop_assert!(is_no_match(&r, HEADER_NOTIFLY_SIGNATURE), "{:?}", r);

        let b64 = signed.standard.unwrap();
        let mut std_bytes = BASE64.decode(b64.strip_prefix("v1,").unwrap()).unwrap();
        std_bytes[index] ^= flip;
        let changed = format!("v1,{}", BASE64.encode(&std_bytes));
        let r = standard(&webhook, &body, "a056V7R7NmNRjl70", TS, Some(&changed), TS);
        prop_assert!(is_no_match(&r, HEADER_WEBHOOK_SIGNATURE), "{:?}", r);
    }

    /// During a rotation both secrets verify, in any order, whatever other
    /// secrets the consumer also accepts.
    #[test]
    fn rotation_verifies_with_either_secret(
        old in secret(),
        new in secret(),
        unrelated in prop::collection::vec(secret(), 0..3),
        id in event_id(),
        body in body(),
    ) {
        prop_assume!(old != new);
        let signed = signature_headers(&new, Some(&old), &id, TS, &body);
        let standard_header = signed.standard.clone().unwrap();
        prop_assert_eq!(standard_header.split(' ').count(), 2);
        // The previous secret signs x-notifly-signature during the window.
        prop_assert_eq!(&signed.notifly, &sign_hex(&old, &body));

        let mut both = unrelated.clone();
        both.push(new.clone());
        both.insert(0, old.clone());
        for secrets in [vec![old.clone(), new.clone()], vec![new.clone(), old.clone()], both] {
            let webhook = Webhook::with_secrets(&secrets).unwrap();
            prop_assert!(webhook.verify_notifly_signature(&body, Some(&signed.notifly)).is_ok());
            prop_assert!(standard(&webhook, &body, &id, TS, Some(&standard_header), TS).is_ok());
        }
        // A consumer still on the old secret verifies both headers.
        let old_only = Webhook::new(&old).unwrap();
        prop_assert!(old_only.verify_notifly_signature(&body, Some(&signed.notifly)).is_ok());
        prop_assert!(standard(&old_only, &body, &id, TS, Some(&standard_header), TS).is_ok());
        // One already on the new secret verifies the Standard Webhooks
        // signature, which `verify` prefers.
        let new_only = Webhook::new(&new).unwrap();
        prop_assert!(standard(&new_only, &body, &id, TS, Some(&standard_header), TS).is_ok());
        // A consumer with neither secret verifies nothing.
        if !unrelated.contains(&old) && !unrelated.contains(&new) && !unrelated.is_empty() {
            let neither = Webhook::with_secrets(&unrelated).unwrap();
            prop_assert!(neither.verify_notifly_signature(&body, Some(&signed.notifly)).is_err());
            prop_assert!(standard(&neither, &body, &id, TS, Some(&standard_header), TS).is_err());
        }
    }

    /// `verify` over real headers: what `sign_request` makes verifies and
    /// parses, at any time within the tolerance.
    #[test]
    fn signed_requests_verify_and_parse(
        secret in secret(),
        id in event_id(),
        skew in -300i64..=300,
    ) {
        let body = format!(
            r#"{{"id":"{id}","type":"attachment.created","payload":{{"id":"Jq0PpU8Yd2bV7mXn","message_id":"SIuAFUNKdSYHZF2w","filename":"itinerary.pdf","file_url":"u","file_type":"application/pdf","file_size":48213,"created_at":1}}}}"#
        );
        let map = headers(sign_request(&secret, &id, TS, body.as_bytes()));
        let event = Webhook::new(&secret).unwrap().verify_at(&map, body.as_bytes(), at(TS + skew)).unwrap();
        prop_assert_eq!(&event.id, &id);
        prop_assert!(matches!(event.event, Event::AttachmentCreated(ref a) if a.file_size == 48213));
    }
}

#[test]
fn sign_request_makes_exactly_the_headers_notifly_sends() {
    let pairs = sign_request(SECRET, "a056V7R7NmNRjl70", TS, BODY);
    let names: Vec<_> = pairs.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        names,
        [
            "content-type",
            HEADER_WEBHOOK_ID,
            HEADER_WEBHOOK_TIMESTAMP,
            HEADER_WEBHOOK_SIGNATURE,
            HEADER_NOTIFLY_SIGNATURE
        ]
    );
    let key = StandardSecret::parse(SECRET).unwrap();
    assert_eq!(
        pairs,
        [
            ("content-type", "application/json".to_owned()),
            (HEADER_WEBHOOK_ID, "a056V7R7NmNRjl70".to_owned()),
            (HEADER_WEBHOOK_TIMESTAMP, TS.to_string()),
            (
                HEADER_WEBHOOK_SIGNATURE,
                key.sign("a056V7R7NmNRjl70", TS, BODY)
            ),
            (HEADER_NOTIFLY_SIGNATURE, sign_hex(SECRET, BODY)),
        ]
    );
}

#[test]
fn signature_headers_skip_secrets_that_are_not_whsec() {
    let h = signature_headers("not-a-whsec-secret", None, "id", TS, BODY);
    assert_eq!(h.notifly, sign_hex("not-a-whsec-secret", BODY));
    assert_eq!(h.standard, None);
    assert!(
        !sign_request("not-a-whsec-secret", "id", TS, BODY)
            .iter()
            .any(|(k, _)| *k == HEADER_WEBHOOK_SIGNATURE)
    );
    // During a rotation away from such a secret, the new one still signs.
    let h = signature_headers(SECRET, Some("legacy"), "id", TS, BODY);
    assert_eq!(h.notifly, sign_hex("legacy", BODY));
    assert_eq!(
        h.standard,
        Some(StandardSecret::parse(SECRET).unwrap().sign("id", TS, BODY))
    );
}

#[test]
fn secrets_must_be_whsec_strings() {
    for bad in [
        "",
        "whsec_",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_not base64!",
        " whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
    ] {
        assert_eq!(Webhook::new(bad).unwrap_err(), InvalidSecret, "{bad:?}");
    }
    assert_eq!(
        Webhook::with_secrets(Vec::<String>::new()).unwrap_err(),
        InvalidSecret
    );
    assert_eq!(
        Webhook::with_secrets([SECRET, "oops"]).unwrap_err(),
        InvalidSecret
    );
    assert!(Webhook::with_secrets([SECRET, OTHER]).is_ok());
}

fn signed_headers() -> HeaderMap {
    headers(sign_request(SECRET, "a056V7R7NmNRjl70", TS, BODY))
}

fn verify(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<notifly_webhooks::WebhookEvent, WebhookError> {
    Webhook::new(SECRET)
        .unwrap()
        .verify_at(headers, body, at(TS))
}

#[test]
fn verify_prefers_the_standard_signature_and_falls_back_to_hex() {
    let event = verify(&signed_headers(), BODY).unwrap();
    assert_eq!(event.id, "a056V7R7NmNRjl70");
    assert_eq!(event.event_type(), "contact.created");

    // Standard signature present: it must verify, even if the hex one does.
    let mut h = signed_headers();
    h.insert(
        HEADER_WEBHOOK_SIGNATURE,
        HeaderValue::from_static("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    );
    let err = verify(&h, BODY).unwrap_err();
    assert!(matches!(
        err,
        WebhookError::NoMatch {
            header: HEADER_WEBHOOK_SIGNATURE
        }
    ));
    assert_eq!(err.status_code(), StatusCode::UNAUTHORIZED);

    // No Standard Webhooks headers: x-notifly-signature alone suffices...
    let mut h = signed_headers();
    for name in [
        HEADER_WEBHOOK_SIGNATURE,
        HEADER_WEBHOOK_ID,
        HEADER_WEBHOOK_TIMESTAMP,
    ] {
        h.remove(name);
    }
    // ...whatever the clock says (it has no timestamp).
    assert!(
        Webhook::new(SECRET)
            .unwrap()
            .verify_at(&h, BODY, at(0))
            .is_ok()
    );
    // ...unless the consumer requires the Standard Webhooks signature.
    let strict = Webhook::new(SECRET).unwrap().require_standard_signature();
    let err = strict.verify_at(&h, BODY, at(TS)).unwrap_err();
    assert!(matches!(
        err,
        WebhookError::MissingHeader(HEADER_WEBHOOK_SIGNATURE)
    ));
    assert!(strict.verify_at(&signed_headers(), BODY, at(TS)).is_ok());
}

#[test]
fn errors_say_precisely_what_was_wrong() {
    let case = |edit: &dyn Fn(&mut HeaderMap), body: &[u8]| {
        let mut h = signed_headers();
        edit(&mut h);
        let err = verify(&h, body).unwrap_err();
        (err.status_code(), err.to_string())
    };
    let bad_request = StatusCode::BAD_REQUEST;
    let unauthorized = StatusCode::UNAUTHORIZED;

    assert_eq!(
        case(&|h| h.clear(), BODY),
        (
            bad_request,
            "missing signature: expected a `webhook-signature` or `x-notifly-signature` header"
                .into()
        )
    );
    assert_eq!(
        case(
            &|h| {
                h.remove(HEADER_WEBHOOK_ID);
            },
            BODY
        ),
        (bad_request, "missing `webhook-id` header".into())
    );
    assert_eq!(
        case(
            &|h| {
                h.remove(HEADER_WEBHOOK_TIMESTAMP);
            },
            BODY
        ),
        (bad_request, "missing `webhook-timestamp` header".into())
    );
    assert_eq!(
        case(
            &|h| {
                h.insert(HEADER_WEBHOOK_TIMESTAMP, HeaderValue::from_static("soon"));
            },
            BODY
        ),
        (
            bad_request,
            "malformed `webhook-timestamp` header: expected integer Unix seconds".into()
        )
    );
    assert_eq!(
        case(
            &|h| {
                h.insert(HEADER_WEBHOOK_SIGNATURE, HeaderValue::from_static("v2,abc"));
            },
            BODY
        ),
        (
            bad_request,
            "malformed `webhook-signature` header: no `v1,<base64>` or `v1a,<base64>` entry".into()
        )
    );
    assert_eq!(
        case(
            &|h| {
                h.insert(
                    HEADER_WEBHOOK_SIGNATURE,
                    HeaderValue::from_bytes(b"v1,\xff").unwrap(),
                );
            },
            BODY
        ),
        (
            bad_request,
            "malformed `webhook-signature` header: not visible ASCII".into()
        )
    );
    assert_eq!(
        case(
            &|h| {
                h.remove(HEADER_WEBHOOK_SIGNATURE);
                h.insert(HEADER_NOTIFLY_SIGNATURE, HeaderValue::from_static("abc"));
            },
            BODY
        ),
        (
            bad_request,
            "malformed `x-notifly-signature` header: expected 64 hexadecimal digits".into()
        )
    );
    assert_eq!(
        case(
            &|h| {
                h.insert(HEADER_WEBHOOK_TIMESTAMP, HeaderValue::from(TS - 301));
            },
            BODY
        ),
        (
            unauthorized,
            "`webhook-timestamp` is 301 s in the past; at most 300 s is allowed".into()
        )
    );
    assert_eq!(
        case(&|_| {}, b"{}"),
        (
            unauthorized,
            "no `webhook-signature` signature matched the webhook secret".into()
        )
    );
    assert_eq!(
        case(
            &|h| {
                h.remove(HEADER_WEBHOOK_SIGNATURE);
            },
            b"{}"
        ),
        (
            unauthorized,
            "no `x-notifly-signature` signature matched the webhook secret".into()
        )
    );
}

#[test]
fn a_signed_body_that_is_not_an_event_is_a_bad_request() {
    for body in [
        &b"not json"[..],
        b"{}",
        br#"{"id":"x","type":"contact.created","payload":{}}"#,
    ] {
        let h = headers(sign_request(SECRET, "a056V7R7NmNRjl70", TS, body));
        let err = verify(&h, body).unwrap_err();
        assert!(matches!(err, WebhookError::InvalidBody(_)), "{err:?}");
        assert_eq!(err.status_code(), StatusCode::BAD_REQUEST);
        assert!(std::error::Error::source(&err).is_some());
        assert!(
            err.to_string().starts_with("invalid webhook body: "),
            "{err}"
        );
    }
}

#[test]
fn errors_never_contain_the_expected_signature() {
    let expected_hex = sign_hex(SECRET, b"tampered");
    let expected_std =
        StandardSecret::parse(SECRET)
            .unwrap()
            .sign("a056V7R7NmNRjl70", TS, b"tampered");
    let expected_b64 = expected_std.strip_prefix("v1,").unwrap();
    let mut h = signed_headers();
    let std_err = verify(&h, b"tampered").unwrap_err();
    h.remove(HEADER_WEBHOOK_SIGNATURE);
    let hex_err = verify(&h, b"tampered").unwrap_err();
    for err in [std_err, hex_err] {
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains(&expected_hex), "{text}");
            assert!(!text.contains(expected_b64), "{text}");
            assert!(!text.contains("MfKQ9r8G"), "{text}");
        }
    }
}

#[test]
fn several_v1_entries_and_other_versions_are_accepted() {
    let webhook = Webhook::new(SECRET).unwrap();
    let mine = StandardSecret::parse(SECRET)
        .unwrap()
        .sign("a056V7R7NmNRjl70", TS, BODY);
    let theirs = StandardSecret::parse(OTHER)
        .unwrap()
        .sign("a056V7R7NmNRjl70", TS, BODY);
    for header in [
        format!("{theirs} {mine}"),
        format!("v1a,c29tZXRoaW5nIGVsc2U= {mine}"),
        format!("  {mine}\t v2,zzz "),
        format!("v1,notbase64!! {mine}"),
    ] {
        assert!(
            standard(&webhook, BODY, "a056V7R7NmNRjl70", TS, Some(&header), TS).is_ok(),
            "{header}"
        );
    }
    assert!(is_no_match(
        &standard(&webhook, BODY, "a056V7R7NmNRjl70", TS, Some(&theirs), TS),
        HEADER_WEBHOOK_SIGNATURE
    ));
}

#[test]
fn the_default_tolerance_is_five_minutes() {
    let webhook = Webhook::new(SECRET).unwrap();
    let h = signed_headers();
    for ok in [TS - 300, TS, TS + 300] {
        assert!(webhook.verify_at(&h, BODY, at(ok)).is_ok(), "{ok}");
    }
    for stale in [TS - 301, TS + 301, 0, i64::from(i32::MAX) * 4] {
        assert!(
            matches!(
                webhook.verify_at(&h, BODY, at(stale)),
                Err(WebhookError::StaleTimestamp { .. })
            ),
            "{stale}"
        );
    }
    // An absurd timestamp is stale, not an overflow.
    let mut far = signed_headers();
    far.insert(
        HEADER_WEBHOOK_TIMESTAMP,
        HeaderValue::from_static("9223372036854775807"),
    );
    assert!(matches!(
        webhook.verify_at(&far, BODY, at(-5)),
        Err(WebhookError::StaleTimestamp { .. })
    ));
}
