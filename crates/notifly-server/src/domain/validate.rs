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

/// A phone number: digits with the usual separators, an optional leading `+`,
/// 3 to 20 digits.
pub fn phone_number(value: &str) -> DomainResult<String> {
    text("phone_number", value, 32)?;
    let body = value.strip_prefix('+').unwrap_or(value);
    let digits = body.chars().filter(char::is_ascii_digit).count();
    let shape_ok = body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'));
    if !shape_ok || !(3..=20).contains(&digits) {
        return Err(DomainError::Invalid(format!(
            "phone_number `{}` is not a phone number: use digits with optional `+`, spaces, `-`, `.` or parentheses",
            ids::printable(value)
        )));
    }
    Ok(value.to_owned())
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
