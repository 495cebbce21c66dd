//! Field rules shared by the resources. Messages name the field so that a
//! person can act on them.

use serde::{Deserialize, Deserializer};

use super::{DomainError, DomainResult};
use crate::ids;

/// Deserializes a field that may be absent (outer `None`), `null` (inner
/// `None`) or a value: what partial updates need to tell "leave" from "clear".
pub fn double_option<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// A required text field: trimmed must be non-empty, at most `max` characters,
/// no control characters.
pub fn text(field: &str, value: &str, max: usize) -> DomainResult<String> {
    if value.trim().is_empty() {
        return Err(DomainError::Invalid(format!("{field} must not be empty")));
    }
    optional_text(field, value, max)
}

/// An optional text field: may be empty, at most `max` characters.
pub fn optional_text(field: &str, value: &str, max: usize) -> DomainResult<String> {
    let len = value.chars().count();
    if len > max {
        return Err(DomainError::Invalid(format!(
            "{field} is {len} characters long; the limit is {max}"
        )));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(DomainError::Invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(value.to_owned())
}

/// An optional free-text description, at most 1024 characters.
pub fn description(value: Option<&str>) -> DomainResult<Option<String>> {
    value
        .map(|v| optional_text("description", v, 1024))
        .transpose()
}

/// A username: 1 to 64 characters of letters, digits, `_`, `.` and `-`.
pub fn username(value: &str) -> DomainResult<String> {
    text("username", value, 64)?;
    if !value
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(DomainError::Invalid(
            "username may contain only letters, digits, `_`, `.` and `-`".into(),
        ));
    }
    Ok(value.to_owned())
}

/// The phone number rule, as people read it (in error messages and docs).
pub const PHONE_NUMBER_RULE: &str = "3 to 20 digits, with an optional leading `+` and spaces, `-`, `.` or parentheses between them; at most 32 characters";

/// The phone number rule as a regular expression, for the OpenAPI document.
/// It accepts exactly what [`phone_number`] accepts (with the 32-character
/// limit as `maxLength`).
pub const PHONE_NUMBER_PATTERN: &str = r"^\+?[ ().\-]*([0-9][ ().\-]*){3,20}$";

/// A phone number: [`PHONE_NUMBER_RULE`].
pub fn phone_number(value: &str) -> DomainResult<String> {
    let invalid = || {
        DomainError::Invalid(format!(
            "phone_number `{}` is not a phone number: use {PHONE_NUMBER_RULE}",
            ids::printable(value)
        ))
    };
    text("phone_number", value, 32)?;
    let body = value.strip_prefix('+').unwrap_or(value);
    let digits = body.chars().filter(char::is_ascii_digit).count();
    let shape_ok = body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'));
    if !shape_ok || !(3..=20).contains(&digits) {
        return Err(invalid());
    }
    Ok(value.to_owned())
}

/// The OpenAPI schema of a phone number field, built from the same rule
/// that [`phone_number`] checks (an update may leave the field out, but not
/// set it to `null`, so both bodies share it).
pub fn phone_number_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(3))
        .max_length(Some(32))
        .pattern(Some(PHONE_NUMBER_PATTERN))
        .description(Some(format!("A phone number: {PHONE_NUMBER_RULE}.")))
        .examples(["1-800-759-3000"])
        .build()
}

/// An `http(s)` URL with a host, at most 2048 characters.
pub fn url(field: &str, value: &str) -> DomainResult<String> {
    text(field, value, 2048)?;
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    let ok = rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty() && !host.contains('@')
    }) && !value.chars().any(char::is_whitespace);
    if !ok {
        return Err(DomainError::Invalid(format!(
            "{field} must be an absolute http:// or https:// URL without credentials"
        )));
    }
    Ok(value.to_owned())
}

/// A Unix-seconds timestamp: not negative.
pub fn timestamp(field: &str, value: i64) -> DomainResult<i64> {
    if value < 0 {
        return Err(DomainError::Invalid(format!(
            "{field} must be Unix seconds (a non-negative integer)"
        )));
    }
    Ok(value)
}

/// An id that must name a row of `kind`; a malformed one cannot.
pub fn reference(field: &str, kind: &str, value: &str) -> DomainResult<String> {
    if !ids::is_id(value) {
        return Err(DomainError::Invalid(format!(
            "{field}: no {kind} with id `{}`",
            ids::printable(value)
        )));
    }
    Ok(value.to_owned())
}

/// The error for a reference whose row is missing (or in another account).
pub fn missing(field: &str, kind: &str, value: &str) -> DomainError {
    DomainError::Invalid(format!(
        "{field}: no {kind} with id `{}`",
        ids::printable(value)
    ))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_refused_phone_number_is_told_the_rule() {
        for bad in ["1", "12", "call me", "+", "123456789012345678901", "12a3"] {
            let Err(DomainError::Invalid(message)) = phone_number(bad) else {
                panic!("`{bad}` was accepted");
            };
            assert!(message.contains("3 to 20 digits"), "{message}");
        }
        for good in [
            "123",
            "+1 (800) 759-3000",
            "1.800.759.3000",
            "12345678901234567890",
        ] {
            assert_eq!(phone_number(good).ok().as_deref(), Some(good));
        }
    }

    proptest! {
        /// What the document's pattern (and its 32-character limit) calls
        /// valid, the server accepts.
        #[test]
        fn the_documented_pattern_is_accepted(
            value in proptest::string::string_regex(
                // Runs of separators bounded, so most samples fit in 32
                // characters; otherwise the pattern exactly.
                &PHONE_NUMBER_PATTERN
                    .trim_start_matches('^')
                    .trim_end_matches('$')
                    .replace("]*", "]{0,1}")
            ).expect("the pattern compiles")
        ) {
            prop_assume!(value.chars().count() <= 32 && !value.trim().is_empty());
            prop_assert_eq!(phone_number(&value).ok(), Some(value.clone()));
        }
    }
}
