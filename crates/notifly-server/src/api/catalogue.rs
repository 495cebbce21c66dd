//! The event catalogue in the OpenAPI document: OpenAPI 3.1's top-level
//! `webhooks` object holds one `post` per event type, the request Notifly
//! sends to an endpoint, so that a client generated from `/openapi.json`
//! gets a type for what arrives at its endpoint.
//!
//! Each event type has a schema in `components` (`ContactCreatedEvent`…):
//! the envelope `{id, type, payload}` with `type` fixed to its name and the
//! payload's schema taken from the Rust type the server serializes for it
//! (by its `ToSchema` name, so a renamed type cannot leave a dangling
//! reference). `WebhookEvent` is their union, discriminated by `type`.
//! Each operation also lists the headers of a delivery (the names the
//! sender writes) and an example body, the one `docs/events.md` shows.

use std::borrow::Cow;

use notifly_webhooks::{
    AnyEventType, Envelope, HEADER_NOTIFLY_SIGNATURE, HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE,
    HEADER_WEBHOOK_TIMESTAMP, OperationalEventType, ResourceKind,
};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::dispatch::USER_AGENT_VALUE;
use crate::domain::groups::Group;
use crate::domain::messages::Message;
use crate::domain::notices::ExhaustedDelivery;
use crate::domain::samples;
use crate::domain::validate;
use crate::domain::webhooks::Webhook;
use crate::store::{Attachment, Contact, Conversation};

/// The union of every event's envelope, in `components/schemas`.
pub const UNION: &str = "WebhookEvent";

/// The tag of the `webhooks` operations.
pub const TAG: &str = "event-types";

/// The id and public URL the examples use, as in `docs/events.md`.
pub const EXAMPLE_EVENT_ID: &str = "a056V7R7NmNRjl70";
pub const EXAMPLE_PUBLIC_URL: &str = "https://notifly.example.com";

/// The `components/schemas` name of the payload an event of type `t`
/// carries: the REST representation of its resource, the webhook for
/// `webhook.*`, the delivery with its last attempt for `delivery.exhausted`.
pub fn payload_schema(t: AnyEventType) -> Cow<'static, str> {
    match t {
        AnyEventType::Resource(t) => match t.resource() {
            ResourceKind::Contact => Contact::name(),
            ResourceKind::Conversation => Conversation::name(),
            ResourceKind::Message => Message::name(),
            ResourceKind::Group => Group::name(),
            ResourceKind::Attachment => Attachment::name(),
        },
        AnyEventType::Operational(OperationalEventType::DeliveryExhausted) => {
            ExhaustedDelivery::name()
        }
        AnyEventType::Operational(_) => Webhook::name(),
    }
}

/// The `components/schemas` name of the whole body of an event of type
/// `t`: `contact.created` → `ContactCreatedEvent`.
pub fn envelope_schema(t: AnyEventType) -> String {
    let mut name = String::new();
    for word in t.as_str().split(['.', '_']) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            name.extend(first.to_uppercase());
            name.push_str(chars.as_str());
        }
    }
    name.push_str("Event");
    name
}

/// The example body of an event of type `t`, with fixed ids and times
/// (`docs/events.md`, the dashboard's and the document's examples).
pub fn example(t: AnyEventType) -> Envelope {
    Envelope {
        id: EXAMPLE_EVENT_ID.to_owned(),
        event_type: t,
        payload: samples::any_example(t, EXAMPLE_PUBLIC_URL),
    }
}

/// Adds the `webhooks` object, the envelopes' schemas and their union to
/// the JSON form of the document (utoipa 5 has no `webhooks` field).
pub(super) fn add_webhooks(doc: &mut Value) {
    let mut webhooks = Map::new();
    let mut mapping = Map::new();
    let schemas = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut);
    let Some(schemas) = schemas else {
        return;
    };
    for t in AnyEventType::ALL {
        let name = envelope_schema(t);
        let reference = format!("#/components/schemas/{name}");
        schemas.insert(name.clone(), envelope(t));
        mapping.insert(t.as_str().to_owned(), Value::String(reference.clone()));
        webhooks.insert(
            t.as_str().to_owned(),
            json!({ "post": operation(t, &reference) }),
        );
    }
    let variants: Vec<Value> = mapping
        .values()
        .map(|reference| json!({ "$ref": reference }))
        .collect();
    schemas.insert(
        UNION.to_owned(),
        json!({
            "description": "Any event Notifly delivers: the body of every webhook request. \
                            `type` tells which one; a type added later reaches only \
                            webhooks that subscribe to it (or to `*`, for resource events), \
                            so treat an unknown `type` as something to ignore, not an error.",
            "oneOf": variants,
            "discriminator": { "propertyName": "type", "mapping": mapping },
        }),
    );
    if let Some(doc) = doc.as_object_mut() {
        doc.insert("webhooks".to_owned(), Value::Object(webhooks));
    }
}

/// The schema of an event's body.
fn envelope(t: AnyEventType) -> Value {
    let mut id = serde_json::to_value(validate::ID.schema()).unwrap_or_else(|_| json!({}));
    if let Some(id) = id.as_object_mut() {
        id.insert(
            "description".to_owned(),
            "The event's id, also sent as `webhook-id`: the same on every attempt, \
             so deduplicate on it."
                .into(),
        );
    }
    json!({
        "type": "object",
        "description": format!("The body of a `{t}` delivery. {}", t.description()),
        "required": ["id", "type", "payload"],
        "properties": {
            "id": id,
            "type": {
                "type": "string",
                "const": t.as_str(),
                "description": "The event type.",
            },
            "payload": {
                "$ref": format!("#/components/schemas/{}", payload_schema(t)),
            },
        },
    })
}

/// The request Notifly sends for an event of type `t`, and what each
/// answer does.
fn operation(t: AnyEventType, reference: &str) -> Value {
    let header = |name: &str, description: &str, schema: Value| {
        json!({
            "name": name,
            "in": "header",
            "required": true,
            "description": description,
            "schema": schema,
        })
    };
    let string = json!({ "type": "string" });
    let payload = if t.is_operational() {
        "Operational events reach only the webhooks that name their type in `events` \
         (`*` does not include them), never the webhook they are about."
    } else {
        "The payload is the resource exactly as the REST API returns it (for \
         `*.deleted`, as it was just before the deletion)."
    };
    let mut traceparent = header(
        crate::telemetry::TRACEPARENT,
        "W3C trace context, sent while the server exports OpenTelemetry traces: \
         the trace of the request that wrote the event, and this attempt's span.",
        json!({ "type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$" }),
    );
    traceparent["required"] = false.into();
    json!({
        "operationId": format!("on_{}", t.as_str().replace('.', "_")),
        "tags": [TAG],
        // No API key: the receiver checks the signature headers instead.
        "security": [],
        "summary": t.description(),
        "description": format!(
            "Sent to each enabled webhook subscribed to `{t}`, signed. {payload} \
             A webhook's custom headers are sent too. Answer any 2xx within the delivery \
             timeout (15 seconds unless the server sets another); anything else is retried \
             (see docs/receiving-webhooks.md)."
        ),
        "parameters": [
            header(HEADER_WEBHOOK_ID, "The event's id (the body's `id`), the same on every attempt.", string.clone()),
            header(
                HEADER_WEBHOOK_TIMESTAMP,
                "Unix seconds at which this attempt was signed; refuse old ones (5 minutes is usual).",
                json!({ "type": "string", "pattern": "^[0-9]+$" }),
            ),
            header(
                HEADER_WEBHOOK_SIGNATURE,
                "Standard Webhooks signatures, space-separated: `v1,<base64>` (HMAC-SHA256 with \
                 the `whsec_` secret) or `v1a,<base64>` (Ed25519); two during a rotation.",
                string.clone(),
            ),
            header(
                HEADER_NOTIFLY_SIGNATURE,
                "Lowercase hex HMAC-SHA256 of the body with the `whsec_` secret (the previous \
                 one during a rotation's overlap window).",
                json!({ "type": "string", "pattern": "^[0-9a-f]{64}$" }),
            ),
            header("x-notifly-event-type", "The event type, as in the body.", json!({ "type": "string", "const": t.as_str() })),
            header(
                "x-notifly-attempt",
                "1 for the first attempt of this delivery.",
                json!({ "type": "string", "pattern": "^[1-9][0-9]*$" }),
            ),
            header("x-notifly-delivery-id", "This event's delivery to this webhook (`GET /v1/deliveries/{id}`).", string.clone()),
            header(
                "user-agent",
                "`Notifly-Webhooks/<version>`.",
                json!({ "type": "string", "example": USER_AGENT_VALUE }),
            ),
            traceparent,
        ],
        "requestBody": {
            "required": true,
            "content": {
                "application/json": {
                    "schema": { "$ref": reference },
                    "example": example(t),
                },
            },
        },
        "responses": {
            "2XX": { "description": "Received: the delivery succeeded. The body is ignored." },
            "410": { "description": "Gone: the webhook is disabled (`webhook.disabled` tells the account's other webhooks)." },
            "429": { "description": "Too many requests: nothing more is sent to this webhook for `Retry-After` (seconds or an HTTP date, up to an hour; 5 seconds without it), and the attempt is retried." },
            "default": { "description": "Any other answer, or none within the delivery timeout, is a failed attempt: retried on the schedule, then the delivery is `failed`." },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_schema_names_are_pascal_case_and_distinct() {
        let names: std::collections::BTreeSet<String> =
            AnyEventType::ALL.into_iter().map(envelope_schema).collect();
        assert_eq!(names.len(), AnyEventType::ALL.len());
        assert!(names.contains("ContactCreatedEvent"));
        assert!(names.contains("WebhookCircuitOpenedEvent"));
        assert!(names.contains("DeliveryExhaustedEvent"));
    }
}
