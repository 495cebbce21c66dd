//! Content filters: which events a webhook receives, beyond their types.
//!
//! A filter is a JSON match-by-example object, matched against the event
//! envelope `{"id", "type", "payload"}` after the event-type check:
//! `{"payload": {"conversation_id": "abc"}}` passes only events whose
//! `payload.conversation_id` is `"abc"`. In an object, each key is either a
//! field, whose value is matched against that field (an object goes one
//! level down, anything else must be equal), or an operator on the value
//! there: `$eq`, `$ne`, `$in`, `$exists`, `$gt`, `$gte`, `$lt`, `$lte` (on
//! numbers), and `$or`, `$and`, `$not` (on other conditions). Every key of
//! an object must hold. A value compared with a scalar, or with each item
//! of `$in`, also matches when it is an array holding it.
//!
//! A filter is checked when it is saved ([`Filter::parse`] names the bad
//! operator or path) and evaluated at fan-out, in memory, without I/O.

use serde_json::{Map, Value};

/// Most bytes of a filter, as compact JSON.
pub const MAX_BYTES: usize = 4096;
/// Deepest nesting of objects and arrays in a filter.
pub const MAX_DEPTH: usize = 10;

/// The fields of an event envelope, which a filter's top level names.
const ENVELOPE: [&str; 3] = ["id", "type", "payload"];

/// The operators, as the API spells them.
pub const OPERATORS: [&str; 11] = [
    "$eq", "$ne", "$in", "$exists", "$gt", "$gte", "$lt", "$lte", "$or", "$and", "$not",
];

/// A checked filter, ready to match events.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter(Condition);

#[derive(Debug, Clone, PartialEq)]
enum Condition {
    /// Every one holds.
    All(Vec<Condition>),
    /// At least one holds.
    Any(Vec<Condition>),
    Not(Box<Condition>),
    /// The value's field of this name (missing unless the value is an
    /// object that has it) meets the condition.
    Field(String, Box<Condition>),
    Eq(Value),
    In(Vec<Value>),
    Exists(bool),
    Compare(Comparison, serde_json::Number),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Comparison {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Filter {
    /// Checks a filter as a client sent it. The error names the bad
    /// operator, operand or path (`payload.conversation_id`), for a 422.
    pub fn parse(value: &Value) -> Result<Filter, String> {
        let bytes = serde_json::to_string(value).map_or(usize::MAX, |s| s.len());
        if bytes > MAX_BYTES {
            return Err(format!(
                "{bytes} bytes; at most {MAX_BYTES} (as compact JSON)"
            ));
        }
        match value {
            Value::Object(map) => Ok(Filter(object(map, "", 1, Rules::Saving)?)),
            _ => Err(
                "must be a JSON object, like {\"payload\": {\"conversation_id\": \"…\"}}".into(),
            ),
        }
    }

    /// Parses a stored filter (which [`Filter::parse`] checked when saved,
    /// so its size is not measured again, and the rules added since are not
    /// applied: a filter saved before them keeps its meaning).
    pub fn from_stored(text: &str) -> Result<Filter, String> {
        match serde_json::from_str(text).map_err(|e| e.to_string())? {
            Value::Object(map) => Ok(Filter(object(&map, "", 1, Rules::Stored)?)),
            _ => Err("a stored filter is not a JSON object".into()),
        }
    }

    /// Does the event envelope pass?
    pub fn matches(&self, envelope: &Value) -> bool {
        self.0.holds(Some(envelope))
    }
}

/// Where a condition applies, for messages: `payload.id`, or "the top".
fn at(path: &str) -> String {
    if path.is_empty() {
        "at the top".to_owned()
    } else {
        format!("at `{}`", crate::ids::printable(path))
    }
}

/// Which rules a filter is read under.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rules {
    /// Being saved: every rule.
    Saving,
    /// Read back: only what its meaning needs.
    Stored,
}

fn object(
    map: &Map<String, Value>,
    path: &str,
    depth: usize,
    rules: Rules,
) -> Result<Condition, String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "nested more than {MAX_DEPTH} levels deep {}",
            at(path)
        ));
    }
    let saving = rules == Rules::Saving;
    if saving && map.is_empty() && !path.is_empty() {
        return Err(format!(
            "an empty object {} asks nothing of the field; use {{\"$exists\": true}} to ask for it, or {{\"$eq\": {{}}}} for an empty object",
            at(path)
        ));
    }
    let mut all = Vec::with_capacity(map.len());
    for (key, operand) in map {
        if saving && path.is_empty() && !key.starts_with('$') && !ENVELOPE.contains(&key.as_str()) {
            return Err(format!(
                "`{}` is not a field of an event, which has only {}; the resource's fields are under `payload`, as in {{\"payload\": {{\"{}\": …}}}}",
                crate::ids::printable(key),
                ENVELOPE.join(", "),
                crate::ids::printable(key)
            ));
        }
        all.push(if key.starts_with('$') {
            operator(key, operand, path, depth, rules)?
        } else {
            let inner = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            let condition = match operand {
                Value::Object(m) => object(m, &inner, depth + 1, rules)?,
                other => {
                    bounded(other, &inner, depth + 1)?;
                    Condition::Eq(other.clone())
                }
            };
            Condition::Field(key.clone(), Box::new(condition))
        });
    }
    Ok(match all.len() {
        1 => all.pop().unwrap_or(Condition::All(Vec::new())),
        _ => Condition::All(all),
    })
}

/// A literal's nesting, within [`MAX_DEPTH`].
fn bounded(value: &Value, path: &str, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "nested more than {MAX_DEPTH} levels deep {}",
            at(path)
        ));
    }
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| bounded(v, path, depth + 1)),
        Value::Object(map) => map.values().try_for_each(|v| bounded(v, path, depth + 1)),
        _ => Ok(()),
    }
}

fn operator(
    op: &str,
    operand: &Value,
    path: &str,
    depth: usize,
    rules: Rules,
) -> Result<Condition, String> {
    let wrong = |what: &str| Err(format!("`{op}` {} takes {what}", at(path)));
    let conditions = |items: &Value| -> Result<Vec<Condition>, String> {
        match items {
            Value::Array(items) if !items.is_empty() => items
                .iter()
                .map(|item| match item {
                    Value::Object(m) => object(m, path, depth + 1, rules),
                    _ => Err(format!("`{op}` {} takes a list of objects", at(path))),
                })
                .collect(),
            _ => Err(format!(
                "`{op}` {} takes a non-empty list of objects",
                at(path)
            )),
        }
    };
    let comparison = |c: Comparison| match operand {
        Value::Number(n) => Ok(Condition::Compare(c, n.clone())),
        _ => wrong("a number"),
    };
    match op {
        "$eq" | "$ne" => {
            bounded(operand, path, depth + 1)?;
            let eq = Condition::Eq(operand.clone());
            Ok(if op == "$eq" {
                eq
            } else {
                Condition::Not(Box::new(eq))
            })
        }
        "$in" => match operand {
            Value::Array(items) => {
                bounded(operand, path, depth + 1)?;
                Ok(Condition::In(items.clone()))
            }
            _ => wrong("a list of values"),
        },
        "$exists" => match operand {
            Value::Bool(b) => Ok(Condition::Exists(*b)),
            _ => wrong("true or false"),
        },
        "$gt" => comparison(Comparison::Gt),
        "$gte" => comparison(Comparison::Gte),
        "$lt" => comparison(Comparison::Lt),
        "$lte" => comparison(Comparison::Lte),
        "$or" => Ok(Condition::Any(conditions(operand)?)),
        "$and" => Ok(Condition::All(conditions(operand)?)),
        "$not" => match operand {
            Value::Object(m) => Ok(Condition::Not(Box::new(object(m, path, depth + 1, rules)?))),
            _ => wrong("an object"),
        },
        other => Err(format!(
            "unknown operator `{}` {}; the operators are {}",
            crate::ids::printable(other),
            at(path),
            OPERATORS.join(", ")
        )),
    }
}

/// The OpenAPI schema of a filter: its top level, whose fields are the
/// envelope's. Its size and depth bounds are stated in its description:
/// JSON Schema cannot bound either.
#[derive(Debug)]
pub struct WebhookFilter;

/// The OpenAPI schema of a condition below a filter's top level (a
/// component that refers to itself): any field, and never empty.
#[derive(Debug)]
pub struct WebhookFilterCondition;

/// A filter object's schema: the fields its keys may name (`None`: any),
/// and the component its nested conditions are.
fn condition_schema(
    fields: Option<&[&str]>,
    nested: &str,
    description: String,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{
        AdditionalProperties, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Ref, Schema, SchemaType,
        Type,
    };
    let itself = if fields.is_some() {
        "WebhookFilter"
    } else {
        "WebhookFilterCondition"
    };
    let any = || ObjectBuilder::new().schema_type(SchemaType::AnyValue);
    let number = || ObjectBuilder::new().schema_type(Type::Number);
    let conditions = || {
        ArrayBuilder::new()
            .items(Ref::from_schema_name(itself))
            .min_items(Some(1))
    };
    let operators = OPERATORS
        .iter()
        .map(|o| o.trim_start_matches('$'))
        .collect::<Vec<_>>()
        .join("|");
    let names = match fields {
        Some(fields) => format!("^(?:{}|\\$(?:{operators}))$", fields.join("|")),
        None => format!("^(?:[^$][\\s\\S]*|\\$(?:{operators}))?$"),
    };
    // A field's value: a literal to equal, or a nested condition.
    let field = || {
        Schema::AnyOf(
            AnyOfBuilder::new()
                .item(ObjectBuilder::new().schema_type(Type::String))
                .item(number())
                .item(ObjectBuilder::new().schema_type(Type::Boolean))
                .item(ObjectBuilder::new().schema_type(Type::Null))
                .item(ArrayBuilder::new().items(any()))
                .item(Ref::from_schema_name(nested))
                .build(),
        )
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(names)),
        ))
        .min_properties(fields.is_none().then_some(1))
        .property("$eq", any())
        .property("$ne", any())
        .property("$in", ArrayBuilder::new().items(any()))
        .property("$exists", ObjectBuilder::new().schema_type(Type::Boolean))
        .property("$gt", number())
        .property("$gte", number())
        .property("$lt", number())
        .property("$lte", number())
        .property("$or", conditions())
        .property("$and", conditions())
        .property("$not", Ref::from_schema_name(itself))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(field()))))
        .into()
}

impl utoipa::PartialSchema for WebhookFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let mut schema = condition_schema(
            Some(&ENVELOPE),
            "WebhookFilterCondition",
            format!(
                "A match-by-example object matched against the event envelope `{{id, type, payload}}`: \
                 `{{\"payload\": {{\"conversation_id\": \"abc\"}}}}` passes only events whose \
                 `payload.conversation_id` is `\"abc\"`. Each key is a field (an object goes one level \
                 down; anything else must be equal, or be held by an array there) or an operator on \
                 the value there: `$eq`, `$ne`, `$in`, `$exists`, `$gt`, `$gte`, `$lt`, `$lte` \
                 (numbers), `$or`, `$and`, `$not`. Every key must hold. At the top level the fields \
                 are the envelope's: `id`, `type`, `payload`. At most {MAX_BYTES} bytes as compact \
                 JSON and {MAX_DEPTH} levels deep."
            ),
        );
        if let utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(o)) = &mut schema {
            o.examples = vec![serde_json::json!({
                "payload": {"conversation_id": "abc", "attachments": {"$gt": 0}}
            })];
        }
        schema
    }
}

impl utoipa::ToSchema for WebhookFilter {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.push((
            WebhookFilterCondition::name().into_owned(),
            WebhookFilterCondition::schema(),
        ));
    }
}

impl utoipa::PartialSchema for WebhookFilterCondition {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        condition_schema(
            None,
            "WebhookFilterCondition",
            "A condition on one value of the event, below a filter's top level (see WebhookFilter): \
             fields of that value, and operators on it. Never empty: use `{\"$exists\": true}` to ask \
             for a field."
                .to_owned(),
        )
    }
}

impl utoipa::ToSchema for WebhookFilterCondition {}

/// `actual` is `expected`, or an array holding it.
fn equal(actual: &Value, expected: &Value) -> bool {
    same(actual, expected)
        || (!expected.is_array()
            && actual
                .as_array()
                .is_some_and(|items| items.iter().any(|i| same(i, expected))))
}

/// How two numbers order: integers exactly (64-bit ids lose digits as
/// floats), anything with a float by value.
fn order(a: &serde_json::Number, b: &serde_json::Number) -> Option<std::cmp::Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    if !a.is_f64() && !b.is_f64() {
        // Integers, one negative and one beyond i64: the negative is less.
        return Some(if a.is_i64() {
            std::cmp::Ordering::Less
        } else {
            std::cmp::Ordering::Greater
        });
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

/// JSON equality, numbers by value (`1` and `1.0` are the same).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        // Integers exactly (64-bit ids lose digits as floats); a float
        // against anything by value.
        (Value::Number(x), Value::Number(y)) => match (x.is_f64(), y.is_f64()) {
            (false, false) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

impl Condition {
    /// Does the value (`None`: missing) meet the condition?
    fn holds(&self, value: Option<&Value>) -> bool {
        match self {
            Condition::All(all) => all.iter().all(|c| c.holds(value)),
            Condition::Any(any) => any.iter().any(|c| c.holds(value)),
            Condition::Not(c) => !c.holds(value),
            Condition::Field(name, c) => c.holds(value.and_then(|v| v.get(name.as_str()))),
            Condition::Eq(expected) => value.is_some_and(|v| equal(v, expected)),
            Condition::In(items) => value.is_some_and(|v| items.iter().any(|e| equal(v, e))),
            Condition::Exists(wanted) => value.is_some() == *wanted,
            Condition::Compare(c, n) => match value {
                Some(Value::Number(v)) => order(v, n).is_some_and(|o| match c {
                    Comparison::Gt => o.is_gt(),
                    Comparison::Gte => o.is_ge(),
                    Comparison::Lt => o.is_lt(),
                    Comparison::Lte => o.is_le(),
                }),
                _ => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        json!({"id": "e1", "type": "message.created", "payload": {
            "id": "m1", "conversation_id": "abc", "text": "hi", "attachments": 2,
            "tags": ["vip", "eu"], "sender": {"id": "c1", "name": "Ann"}, "edited_at": null}})
    }

    fn passes(filter: Value) -> bool {
        Filter::parse(&filter)
            .unwrap_or_else(|e| panic!("{filter}: {e}"))
            .matches(&event())
    }

    fn refusal(filter: Value) -> String {
        Filter::parse(&filter).unwrap_err()
    }

    #[test]
    fn match_by_example_and_every_operator() {
        assert!(passes(json!({"payload": {"conversation_id": "abc"}})));
        assert!(!passes(json!({"payload": {"conversation_id": "abd"}})));
        assert!(passes(
            json!({"type": "message.created", "payload": {"sender": {"id": "c1"}}})
        ));
        assert!(passes(json!({})));
        assert!(
            passes(json!({"payload": {"tags": "vip"}})),
            "an array holding it"
        );
        assert!(passes(json!({"payload": {"tags": ["vip", "eu"]}})));
        assert!(!passes(json!({"payload": {"tags": ["vip"]}})));
        assert!(passes(json!({"payload": {"text": {"$ne": "bye"}}})));
        assert!(passes(json!({"payload": {"missing": {"$ne": "x"}}})));
        assert!(passes(
            json!({"payload": {"conversation_id": {"$in": ["x", "abc"]}}})
        ));
        assert!(passes(json!({"payload": {"tags": {"$in": ["us", "eu"]}}})));
        assert!(!passes(
            json!({"payload": {"conversation_id": {"$in": []}}})
        ));
        assert!(passes(json!({"payload": {"edited_at": {"$exists": true}}})));
        assert!(passes(
            json!({"payload": {"deleted_at": {"$exists": false}}})
        ));
        assert!(passes(
            json!({"payload": {"attachments": {"$gt": 1, "$lte": 2}}})
        ));
        assert!(passes(
            json!({"payload": {"attachments": {"$gte": 2.0, "$lt": 2.5}}})
        ));
        assert!(
            !passes(json!({"payload": {"text": {"$gt": 0}}})),
            "not a number"
        );
        assert!(passes(json!({"payload": {"attachments": 2.0}})));
        assert!(passes(
            json!({"$or": [{"type": "contact.created"}, {"payload": {"text": "hi"}}]})
        ));
        assert!(!passes(
            json!({"$and": [{"type": "message.created"}, {"payload": {"text": "no"}}]})
        ));
        assert!(passes(
            json!({"payload": {"$not": {"sender": {"name": "Bob"}}}})
        ));
        assert!(!passes(
            json!({"$not": {"payload": {"sender": {"name": "Ann"}}}})
        ));
        assert!(passes(
            json!({"payload": {"sender": {"$eq": {"id": "c1", "name": "Ann"}}}})
        ));
    }

    #[test]
    fn numbers_compare_exactly_as_integers() {
        let big = json!({"payload": {"n": 9_007_199_254_740_993_u64}});
        let pass = |f: Value| Filter::parse(&f).unwrap().matches(&big);
        // 2^53 + 1 and 2^53 are the same as floats, not as integers.
        assert!(!pass(json!({"payload": {"n": 9_007_199_254_740_992_u64}})));
        assert!(pass(
            json!({"payload": {"n": {"$eq": 9_007_199_254_740_993_u64}}})
        ));
        assert!(pass(
            json!({"payload": {"n": {"$gt": 9_007_199_254_740_992_u64}}})
        ));
        assert!(!pass(
            json!({"payload": {"n": {"$lte": 9_007_199_254_740_992_u64}}})
        ));
        assert!(pass(json!({"payload": {"n": {"$gt": -1, "$lt": 1.0e300}}})));
        assert!(pass(
            json!({"payload": {"n": {"$gte": 9.007_199_254_740_992e15}}})
        ));
    }

    #[test]
    fn stored_filters_keep_their_meaning() {
        // Saved before the rules on empty objects and envelope fields.
        assert!(Filter::from_stored(r#"{"other": {}}"#).is_ok());
        assert!(Filter::from_stored(r#"{"payload": {"x": {}}}"#).is_ok());
        assert!(Filter::from_stored("[1]").is_err());
    }

    #[test]
    fn bad_filters_are_refused_naming_the_operator_or_path() {
        let m = refusal(json!({"payload": {"text": {"$regex": "h.*"}}}));
        assert!(
            m.contains("`$regex`") && m.contains("`payload.text`"),
            "{m}"
        );
        let m = refusal(json!({"payload": {"n": {"$gt": "5"}}}));
        assert!(m.contains("`$gt`") && m.contains("a number"), "{m}");
        assert!(refusal(json!({"$or": []})).contains("non-empty list"));
        assert!(refusal(json!({"$or": [1]})).contains("list of objects"));
        assert!(refusal(json!({"$in": "x"})).contains("list of values"));
        assert!(refusal(json!({"$exists": 1})).contains("true or false"));
        assert!(refusal(json!({"$not": []})).contains("an object"));
        assert!(refusal(json!(["x"])).contains("JSON object"));
        assert!(refusal(json!({"payload": {"sender": {}}})).contains("empty object"));
        let m = refusal(json!({"conversation_id": "abc"}));
        assert!(
            m.contains("not a field of an event") && m.contains("payload"),
            "{m}"
        );
        assert!(refusal(json!({"$or": [{"payload.id": "x"}]})).contains("not a field"));
        let mut deep = json!("x");
        for _ in 0..MAX_DEPTH {
            deep = json!({ "a": deep });
        }
        assert!(refusal(json!({ "payload": deep })).contains("levels deep"));
        let big = json!({"payload": {"text": "x".repeat(MAX_BYTES)}});
        assert!(refusal(big).contains("at most 4096"));
    }
}
