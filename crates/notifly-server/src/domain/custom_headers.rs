//! Custom headers: what a webhook adds to every delivery and test event to
//! it (an `Authorization` its receiver expects, a tenant id). Values are
//! often credentials, so they are kept sealed like the signing secret (see
//! [`crate::secrets::Keyring::seal_headers`]), answered masked, and never
//! logged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{DomainError, DomainResult};
use crate::ids;

/// Most custom headers a webhook may have.
pub const MAX_HEADERS: usize = 20;
/// Most bytes of names and values, all together.
pub const MAX_BYTES: usize = 8 * 1024;

/// Names Notifly sets itself on every delivery (compared without case).
pub const RESERVED: [&str; 9] = [
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];
/// Every name starting with this is Notifly's own.
pub const RESERVED_PREFIX: &str = "x-notifly-";

/// What a masked value starts with. It is not ASCII, so no real header
/// value can be mistaken for a mask.
const MASK: &str = "••••••••";
/// Values at least this long show their last four characters after the mask.
const SHOW_TAIL_FROM: usize = 16;

/// What a webhook shows in place of custom headers this server cannot open
/// (sealed with an encryption key it does not have). Not a valid header
/// name, so writing it back is refused instead of removing the headers.
pub const UNREADABLE: &str =
    "(unreadable: sealed with an encryption key this server does not have)";

/// Is `value` a mask (as this module shows values), not a real value?
pub fn is_masked(value: &str) -> bool {
    value.starts_with(MASK)
}

/// Custom headers as a client sends them: name to value. Its `Debug`
/// output shows only the names.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct CustomHeaders(pub BTreeMap<String, String>);

impl std::fmt::Debug for CustomHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// A value as the API, the dashboard and the attempt log show it: the mask,
/// and for a long value its last four characters, so that a person can
/// tell which token is set without seeing it.
pub fn mask(value: &str) -> String {
    let chars = value.chars().count();
    if chars < SHOW_TAIL_FROM {
        return MASK.to_owned();
    }
    let tail: String = value.chars().skip(chars - 4).collect();
    format!("{MASK}{tail}")
}

/// Names and values with every value masked.
pub fn masked(headers: &[(String, String)]) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(name, value)| (name.clone(), mask(value)))
        .collect()
}

/// Is `name` one Notifly sets itself?
pub fn is_reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED.contains(&lower.as_str()) || lower.starts_with(RESERVED_PREFIX)
}

/// A name HTTP takes: one or more token characters (RFC 9110).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A value HTTP takes as it is: visible ASCII, with spaces and tabs only
/// between visible characters (HTTP drops them at either end; no line
/// breaks, no control characters).
fn is_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        && value.trim_matches([' ', '\t']) == value
}

/// Checks custom headers and puts them in the order they are stored and
/// sent (by name, without case). A value that is exactly the mask shown for
/// a header of the same name in `current` keeps that header's value, so
/// that what was read can be written back unchanged.
pub fn check(
    given: CustomHeaders,
    current: &[(String, String)],
) -> DomainResult<Vec<(String, String)>> {
    let invalid = |m: String| Err(DomainError::Invalid(format!("headers: {m}")));
    if given.0.len() > MAX_HEADERS {
        return invalid(format!(
            "at most {MAX_HEADERS} custom headers; got {}",
            given.0.len()
        ));
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(given.0.len());
    for (name, value) in given.0 {
        let shown = ids::printable(&name);
        if !is_token(&name) {
            return invalid(format!(
                "`{shown}` is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)"
            ));
        }
        if is_reserved(&name) {
            return invalid(format!(
                "`{shown}` is reserved: Notifly sets it on every delivery (reserved: {}, and every name starting with {RESERVED_PREFIX})",
                RESERVED.join(", ")
            ));
        }
        if let Some((other, _)) = out.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            return invalid(format!(
                "`{}` and `{shown}` are the same header (names are case-insensitive); give it once",
                ids::printable(other)
            ));
        }
        let value = match current
            .iter()
            .find(|(n, v)| n.eq_ignore_ascii_case(&name) && mask(v) == value)
        {
            Some((_, kept)) => kept.clone(),
            None if value.starts_with(MASK) => {
                return invalid(format!(
                    "the value of `{shown}` is a masked value, and no header of that name has it; send the real value"
                ));
            }
            None if !is_value(&value) => {
                return invalid(format!(
                    "the value of `{shown}` is not a valid HTTP header value (visible ASCII, with spaces and tabs only between visible characters; no line breaks)"
                ));
            }
            None => value,
        };
        out.push((name, value));
    }
    let bytes: usize = out.iter().map(|(n, v)| n.len() + v.len()).sum();
    if bytes > MAX_BYTES {
        return invalid(format!(
            "{bytes} bytes of names and values in all; at most {MAX_BYTES} (8 KiB)"
        ));
    }
    out.sort_by_key(|(n, _)| n.to_ascii_lowercase());
    Ok(out)
}

/// The OpenAPI schema of `headers` in `POST /v1/webhooks`.
pub fn create_schema() -> utoipa::openapi::schema::Schema {
    request_schema(false)
}

/// The same in `PUT /v1/webhooks/{id}`, where `null` removes them all.
pub fn update_schema() -> utoipa::openapi::schema::Schema {
    request_schema(true)
}

/// The OpenAPI schema of `headers` in a request: the rules [`check`]
/// applies to each header. (The total size and names that differ only in
/// case join several headers, which a schema cannot state.)
fn request_schema(nullable: bool) -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    // `^(?!reserved$)token+$`, reserved names spelled without case.
    let anycase = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
                } else if c == '-' {
                    "-".to_owned()
                } else {
                    c.to_string()
                }
            })
            .collect()
    };
    let reserved: Vec<String> = RESERVED
        .iter()
        .map(|r| format!("{}$", anycase(r)))
        .collect();
    let name_pattern = format!(
        "^(?!{}|{})[-!#$%&'*+.^_`|~0-9A-Za-z]+$",
        reserved.join("|"),
        anycase(RESERVED_PREFIX)
    );
    let schema_type = if nullable {
        SchemaType::from_iter([Type::Object, Type::Null])
    } else {
        SchemaType::Type(Type::Object)
    };
    ObjectBuilder::new()
        .schema_type(schema_type)
        .description(Some(format!(
            "Headers added to every delivery and test event, name to value, e.g. `Authorization`. At most {MAX_HEADERS}, and {MAX_BYTES} bytes of names and values in all. Reserved names (any case): {}, and every name starting with `{RESERVED_PREFIX}`. Values are kept encrypted and answered masked; sending a masked value back keeps the stored one.",
            RESERVED.map(|r| format!("`{r}`")).join(", ")
        )))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(name_pattern)),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                // A masked value (what reads show) is taken back too.
                .pattern(Some(format!(
                    "^(?:{MASK}[\\t\\x20-\\x7E]{{0,4}}|(?:[\\x21-\\x7E]+(?:[\\t\\x20]+[\\x21-\\x7E]+)*)?)$"
                ))),
        ))
        .max_properties(Some(MAX_HEADERS))
        .examples([serde_json::json!({"Authorization": "Bearer 8f2c1e0b9a7d", "X-Tenant": "t-1"})])
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(pairs: &[(&str, &str)]) -> CustomHeaders {
        CustomHeaders(
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn refusal(pairs: &[(&str, &str)]) -> String {
        check(given(pairs), &[]).unwrap_err().to_string()
    }

    #[test]
    fn reserved_and_invalid_names_are_refused_by_name() {
        for name in [
            "Host",
            "content-type",
            "Webhook-Signature",
            "X-Notifly-Anything",
        ] {
            assert!(refusal(&[(name, "v")]).contains(name), "{name}");
        }
        assert!(refusal(&[("bad name", "v")]).contains("not a valid HTTP header name"));
        assert!(refusal(&[("", "v")]).contains("not a valid HTTP header name"));
        assert!(refusal(&[("X-Ok", "line\r\nInjected: 1")]).contains("`X-Ok`"));
        assert!(refusal(&[("X-Ok", "caf\u{e9}")]).contains("not a valid HTTP header value"));
        assert!(refusal(&[("X-Ok", "padded ")]).contains("not a valid HTTP header value"));
        assert!(refusal(&[("X-Ok", "\tpadded")]).contains("not a valid HTTP header value"));
        assert!(check(given(&[("X-Ok", "a b\tc")]), &[]).is_ok());
        assert!(refusal(&[("X-A", "1"), ("x-a", "2")]).contains("the same header"));
    }

    #[test]
    fn counts_and_sizes_are_bounded() {
        let many: Vec<(String, String)> = (0..=MAX_HEADERS)
            .map(|i| (format!("X-H{i}"), "v".to_owned()))
            .collect();
        let many = CustomHeaders(many.into_iter().collect());
        assert!(
            check(many, &[])
                .unwrap_err()
                .to_string()
                .contains("at most 20")
        );
        let big = "v".repeat(MAX_BYTES);
        assert!(refusal(&[("X-Big", &big)]).contains("8 KiB"));
        let fits = "v".repeat(MAX_BYTES - "X-Big".len());
        assert!(check(given(&[("X-Big", &fits)]), &[]).is_ok());
    }

    #[test]
    fn a_masked_value_written_back_keeps_the_stored_one() {
        let token = "Bearer 0123456789abcdef";
        let current = vec![("Authorization".to_owned(), token.to_owned())];
        let shown = mask(token);
        assert_eq!(shown, "••••••••cdef");
        let kept = check(
            given(&[("authorization", &shown), ("X-Tenant", "t-1")]),
            &current,
        )
        .unwrap();
        assert_eq!(
            kept,
            vec![
                ("authorization".to_owned(), token.to_owned()),
                ("X-Tenant".to_owned(), "t-1".to_owned())
            ]
        );
        // A mask that matches no stored value is refused, never sent.
        assert!(refusal(&[("Authorization", &shown)]).contains("masked value"));
        assert_eq!(mask("short"), "••••••••");
    }

    #[test]
    fn the_schema_pattern_refuses_what_check_refuses() {
        let utoipa::openapi::schema::Schema::Object(o) = create_schema() else {
            panic!("an object schema");
        };
        let json = serde_json::to_value(o).unwrap();
        let pattern = json["propertyNames"]["pattern"].as_str().unwrap();
        assert!(pattern.contains("[Hh][Oo][Ss][Tt]$"), "{pattern}");
        assert!(
            pattern.contains("[Xx]-[Nn][Oo][Tt][Ii][Ff][Ll][Yy]-"),
            "{pattern}"
        );
    }
}
