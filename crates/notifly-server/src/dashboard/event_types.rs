//! The event catalogue: every event type a webhook can subscribe to, with
//! its description, the fields of its payload and a sample body.
//!
//! The fields are read from the OpenAPI document's schemas (the ones
//! `/openapi.json` serves, see `api/catalogue.rs`), so the page, the
//! document and the server's payloads cannot disagree; the samples are the
//! ones test events carry, with fixed ids.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;
use notifly_webhooks::{AnyEventType, EventType, OperationalEventType, ResourceKind};
use serde_json::Value;

use super::render;
use super::session::Current;
use super::view::Chrome;
use crate::api::catalogue;

/// How deep nested objects are unfolded (`payload.contact.id` is 2).
const MAX_DEPTH: usize = 3;

/// Event types that carry the same payload, shown together.
struct Section {
    /// The anchor: the resource or payload name, lowercase.
    anchor: String,
    title: String,
    intro: &'static str,
    types: Vec<TypeRow>,
    fields: Vec<Field>,
    /// One sample body, pretty-printed.
    sample: String,
    /// The type the sample is of.
    sample_type: &'static str,
}

struct TypeRow {
    name: &'static str,
    description: &'static str,
}

/// One field of a payload.
#[derive(Debug, PartialEq)]
struct Field {
    /// `payload.contact.id`, `payload.attachments[].filename`.
    path: String,
    /// `string`, `integer or null`, `Contact or null`, `array of Attachment`.
    kind: String,
    /// Absent from some payloads (`null` fields are always present).
    optional: bool,
    description: String,
}

#[derive(Template)]
#[template(path = "dashboard/event_types.html")]
struct Page<'a> {
    chrome: Chrome,
    sections: &'a [Section],
}

pub async fn page(current: Current) -> Response {
    static SECTIONS: OnceLock<Vec<Section>> = OnceLock::new();
    let sections = SECTIONS.get_or_init(|| sections(&crate::api::openapi()));
    render(
        StatusCode::OK,
        &Page {
            chrome: Chrome::of(&current, "event-types"),
            sections,
        },
    )
}

/// The page's sections: one per resource, then the webhook's and the
/// delivery's operational events.
fn sections(doc: &Value) -> Vec<Section> {
    let schemas = &doc["components"]["schemas"];
    let section = |title: String, intro: &'static str, types: Vec<AnyEventType>| {
        let first = types[0];
        let mut fields = Vec::new();
        let payload = catalogue::payload_schema(first);
        unfold(
            schemas,
            &serde_json::json!({ "$ref": format!("#/components/schemas/{payload}") }),
            "payload",
            1,
            &mut BTreeSet::new(),
            &mut fields,
        );
        Section {
            anchor: title.to_lowercase(),
            title,
            intro,
            types: types
                .iter()
                .map(|t| TypeRow {
                    name: t.as_str(),
                    description: t.description(),
                })
                .collect(),
            fields,
            sample: serde_json::to_string_pretty(&catalogue::example(first)).unwrap_or_default(),
            sample_type: first.as_str(),
        }
    };
    let mut out: Vec<Section> = ResourceKind::ALL
        .into_iter()
        .map(|kind| {
            let types = EventType::ALL
                .into_iter()
                .filter(|t| t.resource() == kind)
                .map(AnyEventType::from)
                .collect();
            let mut title = kind.as_str().to_owned();
            if let Some(first) = title.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            section(
                title,
                "The payload is the resource exactly as the REST API returns it; for a deletion, as it was just before.",
                types,
            )
        })
        .collect();
    let (webhook, delivery): (Vec<_>, Vec<_>) = OperationalEventType::ALL
        .into_iter()
        .map(AnyEventType::from)
        .partition(|t| *t != AnyEventType::Operational(OperationalEventType::DeliveryExhausted));
    out.push(section(
        "Webhook".to_owned(),
        "Operational: sent only to webhooks that name the type (not included in “All resource events”), never to the webhook it is about. The payload is the webhook as the API shows it, custom header values masked.",
        webhook,
    ));
    out.push(section(
        "Delivery".to_owned(),
        "Operational, like the webhook events. The payload is the delivery as the API shows it, with its last attempt instead of the whole log.",
        delivery,
    ));
    out
}

/// Appends the fields of `schema` under `path` to `out`, unfolding nested
/// objects (through `$ref`, `oneOf` with `null`, arrays and `allOf`) down to
/// [`MAX_DEPTH`]; `seen` holds the references being unfolded, so that a
/// recursive schema stops.
fn unfold(
    schemas: &Value,
    schema: &Value,
    path: &str,
    depth: usize,
    seen: &mut BTreeSet<String>,
    out: &mut Vec<Field>,
) {
    let (schema, reference) = resolve(schemas, schema);
    if let Some(name) = &reference
        && !seen.insert(name.clone())
    {
        return;
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        unfold(schemas, part, path, depth, seen, out);
    }
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        let field_path = format!("{path}.{name}");
        let (kind, inner) = describe(schemas, property);
        out.push(Field {
            path: field_path.clone(),
            kind,
            optional: !required.contains(&name.as_str()),
            description: description(schemas, property),
        });
        if let Some((inner, suffix)) = inner
            && depth < MAX_DEPTH
        {
            unfold(
                schemas,
                inner,
                &format!("{field_path}{suffix}"),
                depth + 1,
                seen,
                out,
            );
        }
    }
    if let Some(name) = reference {
        seen.remove(&name);
    }
}

/// Follows a `$ref` into `components/schemas`, with the name it named.
fn resolve<'a>(schemas: &'a Value, schema: &'a Value) -> (&'a Value, Option<String>) {
    match schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        Some(name) => (&schemas[name], Some(name.to_owned())),
        None => (schema, None),
    }
}

/// A property's type for a reader, and the object schema to unfold under
/// it (with `[]` for an array's items).
fn describe<'a>(
    schemas: &'a Value,
    property: &'a Value,
) -> (String, Option<(&'a Value, &'static str)>) {
    // `oneOf: [{type: null}, X]`: X or null.
    if let Some(parts) = property["oneOf"].as_array() {
        let others: Vec<&Value> = parts.iter().filter(|p| p["type"] != "null").collect();
        if others.len() == 1 && parts.len() == 2 {
            let (kind, inner) = describe(schemas, others[0]);
            return (format!("{kind} or null"), inner);
        }
    }
    if let Some(name) = property["$ref"].as_str().and_then(|r| r.rsplit('/').next()) {
        let (target, _) = resolve(schemas, property);
        if let Some(values) = target["enum"].as_array() {
            return (one_of(values), None);
        }
        let unfold = target.get("properties").is_some() || target.get("allOf").is_some();
        return (name.to_owned(), unfold.then_some((property, "")));
    }
    let types: Vec<&str> = match &property["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let nullable = types.contains(&"null");
    let main = types
        .iter()
        .find(|t| **t != "null")
        .copied()
        .unwrap_or("any");
    let (kind, inner) = match main {
        "array" => {
            let (item, inner) = describe(schemas, &property["items"]);
            (format!("array of {item}"), inner.map(|(s, _)| (s, "[]")))
        }
        "object" if property["additionalProperties"].is_object() => {
            let (value, _) = describe(schemas, &property["additionalProperties"]);
            (format!("object of {value}"), None)
        }
        _ => match property["enum"].as_array() {
            Some(values) => (one_of(values), None),
            None => (main.to_owned(), None),
        },
    };
    if nullable {
        (format!("{kind} or null"), inner)
    } else {
        (kind, inner)
    }
}

fn one_of(values: &[Value]) -> String {
    let names: Vec<String> = values
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    format!("one of {}", names.join(", "))
}

/// A property's description, or that of the schema it refers to.
fn description(schemas: &Value, property: &Value) -> String {
    let own = property["description"].as_str().or_else(|| {
        property["oneOf"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|p| p["description"].as_str())
    });
    let text = own.or_else(|| resolve(schemas, property).0["description"].as_str());
    // The schemas' descriptions are Rust doc comments, wrapped at 80.
    text.unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_is_on_the_page_once() {
        let sections = sections(&crate::api::openapi());
        let names: Vec<&str> = sections
            .iter()
            .flat_map(|s| s.types.iter().map(|t| t.name))
            .collect();
        let all: Vec<&str> = AnyEventType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(names, all);
    }

    #[test]
    fn payload_fields_are_unfolded_with_their_types() {
        let sections = sections(&crate::api::openapi());
        let message = sections.iter().find(|s| s.anchor == "message").unwrap();
        let field = |path: &str| {
            message
                .fields
                .iter()
                .find(|f| f.path == path)
                .unwrap_or_else(|| panic!("no {path} in {:#?}", message.fields))
        };
        assert_eq!(field("payload.id").kind, "string");
        assert!(!field("payload.id").optional);
        assert_eq!(field("payload.contact").kind, "Contact or null");
        assert_eq!(field("payload.contact.username").kind, "string");
        assert_eq!(field("payload.attachments").kind, "array of Attachment");
        assert_eq!(field("payload.attachments[].file_size").kind, "integer");
        assert_eq!(field("payload.read_at").kind, "integer or null");
        assert!(field("payload.contact").description.contains("sender"));

        let webhook = sections.iter().find(|s| s.anchor == "webhook").unwrap();
        let circuit = webhook
            .fields
            .iter()
            .find(|f| f.path == "payload.circuit")
            .unwrap();
        assert!(circuit.kind.starts_with("one of "), "{circuit:?}");
        let delivery = sections.iter().find(|s| s.anchor == "delivery").unwrap();
        for path in [
            "payload.id",
            "payload.status",
            "payload.last_attempt.status_code",
        ] {
            assert!(
                delivery.fields.iter().any(|f| f.path == path),
                "no {path} in {:#?}",
                delivery.fields
            );
        }
    }
}
