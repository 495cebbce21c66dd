//! Field rules shared by the resources. Messages name the field so that a
//! person can act on them.

use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Deserializer};
use utoipa::openapi::Object;
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};

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

/// The characters no text field takes, as a character-class range: the C0
/// and C1 control characters except tab and line feed (so NUL among them).
/// A macro so that patterns can be `concat!`ed from it at compile time.
macro_rules! controls {
    () => {
        r"\x00-\x08\x0B-\x1F\x7F-\x9F"
    };
}

/// A string field's rule, stated once: [`Text::check`] enforces it and
/// [`Text::schema`] states it in the OpenAPI document, so a client that
/// validates against the document and the server agree.
///
/// The pattern is written in the subset that Rust's `regex`, ECMA-262 (what
/// JSON Schema specifies) and Python's `re` read alike: character classes,
/// `\xHH` escapes, `\s`, groups and counted repetition.
#[derive(Debug)]
pub struct Text {
    /// Fewest characters (Unicode scalar values, as JSON Schema counts).
    pub min_chars: usize,
    /// Most characters.
    pub max_chars: usize,
    /// What the whole value must match.
    pub pattern: &'static str,
    /// The rule as people read it, in refusals and in the document.
    pub rule: &'static str,
    regex: OnceLock<Regex>,
}

impl Text {
    const fn new(
        min_chars: usize,
        max_chars: usize,
        pattern: &'static str,
        rule: &'static str,
    ) -> Self {
        Text {
            min_chars,
            max_chars,
            pattern,
            rule,
            regex: OnceLock::new(),
        }
    }

    /// Text that must not be blank: at least one character that is not
    /// whitespace, no control characters but tab and line feed.
    const fn required(max_chars: usize) -> Self {
        Text::new(
            1,
            max_chars,
            concat!(
                "^[^",
                controls!(),
                "]*[^\\s",
                controls!(),
                "][^",
                controls!(),
                "]*$"
            ),
            "not blank, without control characters other than tab and line feed",
        )
    }

    /// Text that may be empty, without control characters but tab and line feed.
    const fn optional(max_chars: usize) -> Self {
        Text::new(
            0,
            max_chars,
            concat!("^[^", controls!(), "]*$"),
            "without control characters other than tab and line feed",
        )
    }

    fn regex(&self) -> &Regex {
        self.regex.get_or_init(|| {
            #[allow(clippy::expect_used)] // a unit test compiles every pattern
            Regex::new(self.pattern).expect("a rule's pattern compiles")
        })
    }

    /// Whether `value` follows the rule.
    pub fn accepts(&self, value: &str) -> bool {
        let len = value.chars().count();
        (self.min_chars..=self.max_chars).contains(&len) && self.regex().is_match(value)
    }

    /// `value` if it follows the rule; otherwise a refusal that names `field`
    /// and says what is wrong.
    pub fn check(&self, field: &str, value: &str) -> DomainResult<String> {
        if self.accepts(value) {
            return Ok(value.to_owned());
        }
        let len = value.chars().count();
        let message = if len > self.max_chars {
            format!(
                "{field} is {len} characters long; the limit is {}",
                self.max_chars
            )
        } else if value
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            format!("{field} must not contain control characters")
        } else if value.trim().is_empty() {
            format!("{field} must not be empty")
        } else {
            format!(
                "{field} `{}` is not valid: use {}",
                ids::printable(value),
                self.rule
            )
        };
        Err(DomainError::Invalid(message))
    }

    /// The rule as an OpenAPI string schema.
    pub fn schema(&self) -> Object {
        self.builder(SchemaType::Type(Type::String)).build()
    }

    /// The rule as an OpenAPI schema that also takes `null` (an optional
    /// field that `null` clears or leaves unset).
    pub fn nullable_schema(&self) -> Object {
        self.builder(SchemaType::from_iter([Type::String, Type::Null]))
            .build()
    }

    fn builder(&self, schema_type: SchemaType) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(schema_type)
            .min_length((self.min_chars > 0).then_some(self.min_chars))
            .max_length(Some(self.max_chars))
            .pattern(Some(self.pattern))
            .description(Some(if self.min_chars == self.max_chars {
                format!("Exactly {} characters: {}.", self.max_chars, self.rule)
            } else {
                format!("{} characters at most; {}.", self.max_chars, self.rule)
            }))
    }
}

/// A name (of a group, a webhook, an account): 1 to 128 characters.
pub static NAME: Text = Text::required(128);

/// A display name: may be empty, at most 128 characters.
pub static DISPLAY_NAME: Text = Text::optional(128);

/// A free-text description: may be empty, at most 1024 characters.
pub static DESCRIPTION: Text = Text::optional(1024);

/// A username: letters, digits, `_`, `.` and `-`, 1 to 64 of them. Beyond
/// ASCII any character but whitespace and controls counts as a letter (a
/// Unicode-aware `\w` reads differently in each regex dialect).
pub static USERNAME: Text = Text::new(
    1,
    64,
    concat!(r"^[^\s\x20-\x2C/:-@\[-\^\x60{-\x7E", controls!(), r"]+$"),
    "letters, digits, `_`, `.` and `-`: no spaces or other ASCII punctuation",
);

/// The phone number rule, as people read it (in error messages and docs).
pub const PHONE_NUMBER_RULE: &str = "3 to 20 digits, with an optional leading `+` and spaces, `-`, `.` or parentheses between them; at most 32 characters";

/// A phone number: [`PHONE_NUMBER_RULE`].
pub static PHONE_NUMBER: Text = Text::new(
    3,
    32,
    r"^\+?[ ().\-]*([0-9][ ().\-]*){3,20}$",
    PHONE_NUMBER_RULE,
);

/// An absolute `http(s)` URL without credentials, whose host is a DNS name
/// (its last label not numeric) or a dotted IPv4 address, with an optional
/// port up to 65535; at most 2048 characters.
pub static URL: Text = Text::new(
    8,
    2048,
    concat!(
        r"^https?://",
        r"(([A-Za-z0-9_\-]+\.)*[A-Za-z_][A-Za-z0-9_\-]*\.?",
        r"|((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]))",
        r"(:([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?",
        r"([/?#][^\s",
        controls!(),
        r"]*)?$"
    ),
    "an absolute http:// or https:// URL without credentials, whose host is a name or an IPv4 address",
);

/// An id: [`ids::ID_LEN`] ASCII letters and digits.
pub static ID: Text = Text::new(
    16,
    16,
    r"^[A-Za-z0-9]{16}$",
    "an id: 16 ASCII letters and digits",
);

/// An `Idempotency-Key` header: printable ASCII without spaces.
pub static IDEMPOTENCY_KEY: Text = Text::new(
    1,
    255,
    r"^[\x21-\x7E]+$",
    "1 to 255 printable ASCII characters without spaces",
);

/// A message's text.
pub static MESSAGE: Text = Text::required(super::messages::MAX_TEXT);

/// A reaction's emoji.
pub static EMOJI: Text = Text::required(16);

/// An attachment's file name: no path, and not only dots (`.`, `..`).
pub static FILENAME: Text = Text::new(
    1,
    255,
    concat!(
        r"^[^/\\",
        controls!(),
        r"]*[^\s/\\.",
        controls!(),
        r"][^/\\",
        controls!(),
        r"]*$"
    ),
    "a file name without `/` or `\\`, with a character other than a dot or whitespace",
);

/// An optional free-text description.
pub fn description(value: Option<&str>) -> DomainResult<Option<String>> {
    value
        .map(|v| DESCRIPTION.check("description", v))
        .transpose()
}

/// A username: [`USERNAME`].
pub fn username(value: &str) -> DomainResult<String> {
    USERNAME.check("username", value)
}

/// A phone number: [`PHONE_NUMBER`].
pub fn phone_number(value: &str) -> DomainResult<String> {
    PHONE_NUMBER.check("phone_number", value)
}

/// An `http(s)` URL: [`URL`].
pub fn url(field: &str, value: &str) -> DomainResult<String> {
    URL.check(field, value)
}

/// An integer field's rule, stated once like [`Text`].
#[derive(Debug, Clone, Copy)]
pub struct Int {
    pub min: i64,
    pub max: Option<i64>,
}

impl Int {
    /// `value` if within the bounds; otherwise a refusal naming `field`.
    pub fn check(&self, field: &str, value: i64) -> DomainResult<i64> {
        if value >= self.min && self.max.is_none_or(|max| value <= max) {
            return Ok(value);
        }
        Err(DomainError::Invalid(match self.max {
            Some(max) => format!("{field} must be an integer from {} to {max}", self.min),
            None => format!("{field} must be an integer of at least {}", self.min),
        }))
    }

    /// The rule as an OpenAPI integer schema.
    pub fn schema(&self) -> Object {
        self.builder(SchemaType::Type(Type::Integer)).build()
    }

    /// The rule as an OpenAPI schema that also takes `null`.
    pub fn nullable_schema(&self) -> Object {
        self.builder(SchemaType::from_iter([Type::Integer, Type::Null]))
            .build()
    }

    fn builder(&self, schema_type: SchemaType) -> ObjectBuilder {
        use utoipa::openapi::schema::{KnownFormat, SchemaFormat};
        ObjectBuilder::new()
            .schema_type(schema_type)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(self.min))
            .maximum(self.max)
    }
}

/// An integer as JSON may spell it: `5`, or `5.0` (JSON Schema's `integer`
/// takes both, so clients generated from the document may send either).
struct Whole(i64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Whole;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Whole, E> {
                Ok(Whole(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Whole, E> {
                i64::try_from(v)
                    .map(Whole)
                    .map_err(|_| E::custom("integer out of range"))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Whole, E> {
                // 2^63 is exact in f64; anything below it with no fraction fits.
                if v.fract() == 0.0
                    && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&v)
                {
                    #[allow(clippy::cast_possible_truncation)]
                    Ok(Whole(v as i64))
                } else {
                    Err(E::invalid_type(serde::de::Unexpected::Float(v), &self))
                }
            }
        }
        de.deserialize_any(Visitor)
    }
}

/// Deserializes a required integer field that may be spelled `5.0`.
pub fn whole<'de, D: Deserializer<'de>>(de: D) -> Result<i64, D::Error> {
    Whole::deserialize(de).map(|w| w.0)
}

/// Deserializes an optional integer field (`null` or absent: `None`).
pub fn whole_option<'de, D: Deserializer<'de>>(de: D) -> Result<Option<i64>, D::Error> {
    Option::<Whole>::deserialize(de).map(|o| o.map(|w| w.0))
}

/// [`double_option`] for an integer field that may be spelled `5.0`.
pub fn whole_double_option<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<Option<Option<i64>>, D::Error> {
    Option::<Whole>::deserialize(de).map(|o| Some(o.map(|w| w.0)))
}

/// Unix seconds: a non-negative integer.
pub static TIMESTAMP: Int = Int { min: 0, max: None };

/// A Unix-seconds timestamp: not negative.
pub fn timestamp(field: &str, value: i64) -> DomainResult<i64> {
    TIMESTAMP.check(field, value).map_err(|_| {
        DomainError::Invalid(format!(
            "{field} must be Unix seconds (a non-negative integer)"
        ))
    })
}

/// Functions that `#[schema(schema_with = ...)]` and
/// `#[param(schema_with = ...)]` name (they take a path to a function), each
/// the schema of one of the rules above.
pub mod schema {
    use utoipa::openapi::Object;

    use super::*;

    pub fn name() -> Object {
        NAME.schema()
    }
    pub fn display_name() -> Object {
        DISPLAY_NAME.nullable_schema()
    }
    pub fn description() -> Object {
        DESCRIPTION.nullable_schema()
    }
    pub fn username() -> Object {
        USERNAME.schema()
    }
    pub fn phone_number() -> Object {
        let mut o = PHONE_NUMBER.schema();
        o.examples = vec!["1-800-759-3000".into()];
        o
    }
    pub fn url() -> Object {
        URL.schema()
    }
    pub fn url_nullable() -> Object {
        URL.nullable_schema()
    }
    pub fn id() -> Object {
        ID.schema()
    }
    pub fn id_nullable() -> Object {
        ID.nullable_schema()
    }
    pub fn message() -> Object {
        MESSAGE.schema()
    }
    pub fn emoji() -> Object {
        EMOJI.schema()
    }
    pub fn filename() -> Object {
        FILENAME.schema()
    }
    pub fn timestamp() -> Object {
        TIMESTAMP.nullable_schema()
    }
    pub fn timestamp_required() -> Object {
        TIMESTAMP.schema()
    }
    /// One of the event types.
    pub fn event_type() -> Object {
        use notifly_webhooks::AnyEventType;
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(AnyEventType::ALL.map(AnyEventType::as_str)))
            .examples(["message.created"])
            .build()
    }
    /// One of `values`.
    pub fn one_of(values: &[&str]) -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(values.iter().copied()))
            .build()
    }
    /// A boolean that an update may leave out but not set to `null`.
    pub fn boolean() -> Object {
        ObjectBuilder::new().schema_type(Type::Boolean).build()
    }
    /// A list of distinct ids, at most `max`.
    pub fn ids(max: usize) -> utoipa::openapi::schema::Array {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(ID.schema())
            .max_items(Some(max))
            .unique_items(true)
            .build()
    }
}

/// An id that must name a row of `kind`; a malformed one cannot.
pub fn reference(field: &str, kind: &str, value: &str) -> DomainResult<String> {
    if !ID.accepts(value) {
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

    /// Every rule, for the checks that hold for all of them.
    fn rules() -> [(&'static str, &'static Text); 11] {
        [
            ("NAME", &NAME),
            ("DISPLAY_NAME", &DISPLAY_NAME),
            ("DESCRIPTION", &DESCRIPTION),
            ("USERNAME", &USERNAME),
            ("PHONE_NUMBER", &PHONE_NUMBER),
            ("URL", &URL),
            ("ID", &ID),
            ("MESSAGE", &MESSAGE),
            ("EMOJI", &EMOJI),
            ("FILENAME", &FILENAME),
            ("IDEMPOTENCY_KEY", &IDEMPOTENCY_KEY),
        ]
    }

    #[test]
    fn every_pattern_compiles_and_refuses_nul() {
        for (name, rule) in rules() {
            assert!(Regex::new(rule.pattern).is_ok(), "{name}: {}", rule.pattern);
            assert!(!rule.accepts("a\u{0}b"), "{name} takes NUL");
            assert!(
                rule.pattern.starts_with('^') && rule.pattern.ends_with('$'),
                "{name} is anchored"
            );
        }
    }

    #[test]
    fn ids_follow_the_id_rule() {
        assert_eq!(ID.max_chars, ids::ID_LEN);
        assert_eq!(ID.min_chars, ids::ID_LEN);
        for _ in 0..100 {
            let id = ids::new_id();
            assert!(ID.accepts(&id) && ids::is_id(&id), "{id}");
        }
        for bad in ["", "short", "ZZZZZZZZZZZZZZZZZ", "ZZZZZZZZZZZZZZZ-"] {
            assert!(!ID.accepts(bad), "{bad}");
        }
    }

    #[test]
    fn text_rules_tell_blank_from_empty_and_controls() {
        assert!(NAME.accepts("Family") && NAME.accepts("two\tparts\nok"));
        for bad in ["", " ", "\n\t", "bell\u{7}", "c1\u{85}"] {
            assert!(!NAME.accepts(bad), "{bad:?}");
        }
        assert!(DESCRIPTION.accepts("") && DESCRIPTION.accepts("  "));
        assert!(!DESCRIPTION.accepts("cr\r"));
        let Err(DomainError::Invalid(m)) = NAME.check("name", "   ") else {
            panic!("blank accepted")
        };
        assert_eq!(m, "name must not be empty");
        let long = "x".repeat(129);
        let Err(DomainError::Invalid(m)) = NAME.check("name", &long) else {
            panic!("129 characters accepted")
        };
        assert_eq!(m, "name is 129 characters long; the limit is 128");
        // Characters, not bytes.
        assert!(NAME.accepts(&"é".repeat(128)));
    }

    #[test]
    fn urls_are_absolute_http_without_credentials() {
        for good in [
            "https://example.com",
            "http://a",
            "https://cdn.example.com:8443/a/b.png?size=64#top",
            "http://127.0.0.1:65535/",
            "https://example.com./x",
            "https://under_score.example",
        ] {
            assert!(URL.accepts(good), "{good}");
            assert!(reqwest::Url::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "example.com",
            "ftp://example.com",
            "https://user:pw@example.com/",
            "https://example.com/a b",
            "https:///path",
            "http://256.1.1.1/",
            "http://1.2.3.4.5/",
            "http://a:65536/",
            "HTTP://example.com",
            "http://example.com\\x",
        ] {
            assert!(!URL.accepts(bad), "{bad}");
        }
    }

    #[test]
    fn usernames_take_no_punctuation_but_underscore_dot_and_dash() {
        assert!(USERNAME.accepts("Kevin.McCallister_90-x"));
        assert!(USERNAME.accepts("zoë") && USERNAME.accepts("山田"));
        for bad in ["", "a b", "a/b", "a@b", "a+b", "a\u{a0}b", &"a".repeat(65)] {
            assert!(!USERNAME.accepts(bad), "{bad}");
        }
    }

    #[test]
    fn integer_rules_state_their_bounds() {
        assert!(TIMESTAMP.check("read_at", 0).is_ok());
        assert!(TIMESTAMP.check("read_at", -1).is_err());
        let rule = Int {
            min: 1,
            max: Some(3),
        };
        assert!(rule.check("n", 3).is_ok() && rule.check("n", 4).is_err());
        let schema = serde_json::to_value(rule.schema()).unwrap_or_default();
        assert_eq!(schema["minimum"], 1);
        assert_eq!(schema["maximum"], 3);
    }

    proptest! {
        /// Whatever the phone pattern matches within 32 characters, the
        /// server stores as given.
        #[test]
        fn the_phone_pattern_is_the_check(
            value in proptest::string::string_regex(
                // Runs of separators bounded, so most samples fit in 32
                // characters; otherwise the pattern exactly.
                &PHONE_NUMBER.pattern
                    .trim_start_matches('^')
                    .trim_end_matches('$')
                    .replace("]*", "]{0,1}")
            ).expect("the pattern compiles")
        ) {
            prop_assume!(value.chars().count() <= 32);
            prop_assert_eq!(phone_number(&value).ok(), Some(value.clone()));
        }
    }
}
