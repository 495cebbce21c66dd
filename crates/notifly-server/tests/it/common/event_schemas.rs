//! Checks webhook bodies against the event schemas of an OpenAPI document
//! (its `webhooks`, see the server's `api/catalogue.rs`), made strict:
//! besides types, formats and required fields, an object may hold no
//! property its schema does not describe. Shared by the server's tests and
//! (through `#[path]`) the CLI's, which use different parts of it.
#![allow(dead_code)]

use std::collections::BTreeSet;

use jsonschema::{Draft, Validator};
use serde_json::{Value, json};

/// The event schemas of an OpenAPI document, made strict.
pub struct EventSchemas {
    by_type: Vec<(String, Validator)>,
}

impl EventSchemas {
    /// The schemas of the document the server serves, built once.
    pub fn served() -> &'static EventSchemas {
        static SERVED: std::sync::OnceLock<EventSchemas> = std::sync::OnceLock::new();
        SERVED.get_or_init(|| EventSchemas::of(&notifly_server::api::openapi()))
    }

    /// The schemas of `doc`'s `webhooks`, one validator per event type.
    pub fn of(doc: &Value) -> EventSchemas {
        let webhooks = doc["webhooks"]
            .as_object()
            .expect("the document has webhooks");
        let mut components = doc["components"].clone();
        let in_all_of = referenced_from_all_of(&components);
        if let Some(schemas) = components["schemas"].as_object_mut() {
            for (name, schema) in schemas.iter_mut() {
                strict(schema, in_all_of.contains(name));
            }
        }
        let by_type = webhooks
            .iter()
            .map(|(event_type, item)| {
                let schema = &item["post"]["requestBody"]["content"]["application/json"]["schema"];
                let root = json!({ "$ref": schema["$ref"], "components": components });
                let validator = jsonschema::options()
                    .with_draft(Draft::Draft202012)
                    .build(&root)
                    .unwrap_or_else(|e| panic!("{event_type}'s schema does not compile: {e}"));
                (event_type.clone(), validator)
            })
            .collect();
        EventSchemas { by_type }
    }

    /// The event types the document describes.
    pub fn types(&self) -> BTreeSet<&str> {
        self.by_type.iter().map(|(t, _)| t.as_str()).collect()
    }

    /// Checks a whole webhook body against the schema of its `type`.
    pub fn check(&self, body: &Value) -> Result<(), String> {
        let event_type = body["type"].as_str().ok_or("the body has no `type`")?;
        let (_, validator) = self
            .by_type
            .iter()
            .find(|(t, _)| t == event_type)
            .ok_or_else(|| format!("`{event_type}` is not in the document's webhooks"))?;
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("at `{}`: {e}", e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("{event_type}: {}\nin {body:#}", errors.join("; ")))
        }
    }
}

/// The component schemas some `allOf` refers to: making them strict on
/// their own would refuse the properties their siblings add.
fn referenced_from_all_of(components: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(o) => {
                for part in o
                    .get("allOf")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(r) = part["$ref"].as_str() {
                        out.insert(r.rsplit('/').next().unwrap_or_default().to_owned());
                    }
                }
                o.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(components, &mut out);
    out
}

/// Refuses unknown properties in every object schema under `schema` that
/// does not say what to do with them, except the parts of an `allOf` (the
/// object holding the `allOf` refuses what none of its parts evaluated).
fn strict(schema: &mut Value, part_of_all_of: bool) {
    let Value::Object(o) = schema else {
        if let Value::Array(a) = schema {
            a.iter_mut().for_each(|v| strict(v, false));
        }
        return;
    };
    let describes_properties = o.contains_key("properties") || o.contains_key("allOf");
    if describes_properties
        && !part_of_all_of
        && !o.contains_key("additionalProperties")
        && !o.contains_key("unevaluatedProperties")
    {
        o.insert("unevaluatedProperties".to_owned(), Value::Bool(false));
    }
    for (key, v) in o.iter_mut() {
        match (key.as_str(), v) {
            ("allOf", Value::Array(parts)) => parts.iter_mut().for_each(|p| strict(p, true)),
            // Property names and examples are not schemas.
            ("example" | "examples" | "required" | "enum" | "const", _) => {}
            ("properties", Value::Object(props)) => {
                props.values_mut().for_each(|p| strict(p, false));
            }
            (_, v) => strict(v, false),
        }
    }
}
