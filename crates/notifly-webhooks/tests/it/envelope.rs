//! Property tests of the wire contract: envelopes survive a serialize → parse
//! round trip, and signatures verify exactly the bytes they were made over.

use notifly_webhooks::{AnyEventType, Envelope, StandardSecret, VerifyError, sign_hex, verify_hex};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// An event id: 16 base62 characters.
fn event_id() -> impl Strategy<Value = String> {
    "[0-9A-Za-z]{16}"
}

fn event_type() -> impl Strategy<Value = AnyEventType> {
    prop::sample::select(AnyEventType::ALL.to_vec())
}

/// Any JSON scalar but a fractional number: what Notifly's payloads hold.
fn scalar() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ]
    .boxed()
}

/// A finite floating-point number.
fn float() -> BoxedStrategy<Value> {
    any::<f64>()
        .prop_filter("JSON numbers are finite", |f| f.is_finite())
        .prop_map(Value::from)
        .boxed()
}

/// Any JSON value built from `leaf`, nested a few levels deep.
fn json_value(leaf: BoxedStrategy<Value>) -> impl Strategy<Value = Value> {
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object, as every payload is.
fn payload(leaf: BoxedStrategy<Value>) -> impl Strategy<Value = Value> {
    prop::collection::btree_map(any::<String>(), json_value(leaf), 0..12)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}

fn check_round_trip(
    id: String,
    event_type: AnyEventType,
    payload: Value,
) -> Result<(), TestCaseError> {
    let envelope = Envelope {
        id,
        event_type,
        payload,
    };
    let bytes = serde_json::to_vec(&envelope).unwrap();
    let parsed = Envelope::from_slice(&bytes).unwrap();
    prop_assert_eq!(&parsed, &envelope);
    // The wire shape: exactly id, type and payload, with the type's name.
    let raw: Value = serde_json::from_slice(&bytes).unwrap();
    let obj = raw.as_object().unwrap();
    prop_assert_eq!(obj.len(), 3);
    prop_assert_eq!(&obj["id"], &Value::from(envelope.id.clone()));
    prop_assert_eq!(&obj["type"], &Value::from(event_type.as_str()));
    prop_assert_eq!(&obj["payload"], &envelope.payload);
    // Serializing the parsed envelope gives the same bytes.
    prop_assert_eq!(serde_json::to_vec(&parsed).unwrap(), bytes);
    Ok(())
}

proptest! {
    #[test]
    fn envelope_round_trips(
        id in event_id(),
        event_type in event_type(),
        payload in payload(scalar()),
    ) {
        check_round_trip(id, event_type, payload)?;
    }

    /// A consumer parsing a body gets back exactly the numbers that were sent,
    /// fractional ones included.
    #[test]
    fn envelope_round_trips_with_floats(
        id in event_id(),
        event_type in event_type(),
        payload in payload(prop_oneof![scalar(), float()].boxed()),
    ) {
        check_round_trip(id, event_type, payload)?;
    }

    #[test]
    fn hex_signatures_verify_only_the_signed_bytes(
        secret in any::<String>(),
        body in prop::collection::vec(any::<u8>(), 1..512),
        index in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let signature = sign_hex(&secret, &body);
        prop_assert_eq!(signature.len(), 64);
        prop_assert!(signature.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        prop_assert_eq!(verify_hex(&secret, &body, &signature), Ok(()));
        prop_assert_eq!(verify_hex(&secret, &body, &signature.to_uppercase()), Ok(()));
        prop_assert_eq!(verify_hex(&secret, &body, &format!(" {signature}\n")), Ok(()));

        let mut tampered = body.clone();
        let i = index.index(tampered.len());
        tampered[i] ^= flip;
        prop_assert_eq!(verify_hex(&secret, &tampered, &signature), Err(VerifyError::NoMatch));
        let mut longer = body.clone();
        longer.push(0);
        prop_assert_eq!(verify_hex(&secret, &longer, &signature), Err(VerifyError::NoMatch));
        let mut other_secret = secret.clone();
        other_secret.push('x');
        prop_assert_eq!(verify_hex(&other_secret, &body, &signature), Err(VerifyError::NoMatch));
    }

    #[test]
    fn standard_signatures_verify_only_the_signed_bytes(
        key in prop::collection::vec(any::<u8>(), 1..64),
        id in event_id(),
        timestamp in 0i64..4_000_000_000,
        body in prop::collection::vec(any::<u8>(), 1..512),
        index in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let encoded = StandardSecret::encode(&key);
        prop_assert!(encoded.starts_with("whsec_"));
        let secret = StandardSecret::parse(&encoded).unwrap();
        let signature = secret.sign(&id, timestamp, &body);
        prop_assert!(signature.starts_with("v1,"));
        prop_assert_eq!(secret.verify(&id, timestamp, &signature, &body, timestamp, 300), Ok(()));
        // Among other signatures (as during a secret rotation).
        let other = StandardSecret::parse(&StandardSecret::encode(b"another key")).unwrap();
        let both = format!("{} {signature}", other.sign(&id, timestamp, &body));
        prop_assert_eq!(secret.verify(&id, timestamp, &both, &body, timestamp + 299, 300), Ok(()));

        let mut tampered = body.clone();
        let i = index.index(tampered.len());
        tampered[i] ^= flip;
        prop_assert_eq!(
            secret.verify(&id, timestamp, &signature, &tampered, timestamp, 300),
            Err(VerifyError::NoMatch)
        );
        let mut other_id = id.clone();
        other_id.push('x');
        prop_assert_eq!(
            secret.verify(&other_id, timestamp, &signature, &body, timestamp, 300),
            Err(VerifyError::NoMatch)
        );
        prop_assert_eq!(
            secret.verify(&id, timestamp + 1, &signature, &body, timestamp, 300),
            Err(VerifyError::NoMatch)
        );
        prop_assert_eq!(
            secret.verify(&id, timestamp, &signature, &body, timestamp + 301, 300),
            Err(VerifyError::StaleTimestamp)
        );
        prop_assert_eq!(
            secret.verify(&id, timestamp, &signature, &body, timestamp - 301, 300),
            Err(VerifyError::StaleTimestamp)
        );
    }
}
