//! The parts of the OpenAPI document that follow from rules the whole API
//! shares rather than from one handler: what an `{id}` and the pagination
//! parameters look like, the error statuses that the shared extractors and
//! the error mapping answer, and the links from each created resource to
//! the operations on it. Each is derived from the same constants and
//! extractors the server runs, so the document cannot drift from them.

use serde_json::{Value, json};
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr};

/// A string without the NUL character.
const NO_NUL: &str = r"^[^\x00]*$";

use super::extract::PAGE_LIMIT;
use crate::domain::deliveries::STATUSES;
use crate::domain::validate;

/// Completes a document built from the handlers' annotations, into the
/// JSON that `/openapi.json` serves.
pub fn complete(mut doc: OpenApi) -> Value {
    // Paths are relative to wherever the server is reached.
    doc.servers = Some(vec![utoipa::openapi::server::Server::new("/")]);
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, op) in operations(item) {
            // An operation without an API key says so: it is public on purpose.
            op.security.get_or_insert_with(Vec::new);
            describe_parameters(op);
            add_error_statuses(path, method, op);
        }
    }
    let mut doc = serde_json::to_value(&doc).unwrap_or_else(|_| json!({}));
    add_links(&mut doc);
    super::catalogue::add_webhooks(&mut doc);
    doc
}

/// The operations of a path item, with their methods.
fn operations(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
        ("patch", item.patch.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.map(|op| (method, op)))
}

/// Every `{id}` (and `{replay_id}`) is an id; every list's `limit`, `starting_after` and
/// `ending_before` are read by [`super::extract::page`]; `type` filters by
/// event type and `status` by delivery status.
fn describe_parameters(op: &mut Operation) {
    for p in op.parameters.iter_mut().flatten() {
        let schema = match (&p.parameter_in, p.name.as_str()) {
            (ParameterIn::Path, "id" | "replay_id") => validate::ID.schema(),
            (ParameterIn::Query, "starting_after" | "ending_before") => validate::ID.schema(),
            (ParameterIn::Header, "Idempotency-Key") => validate::IDEMPOTENCY_KEY.schema(),
            (ParameterIn::Query, "type") => validate::schema::event_type(),
            (ParameterIn::Query, "status") => validate::schema::one_of(&STATUSES),
            (ParameterIn::Query, "limit") => {
                let mut s = PAGE_LIMIT.schema();
                s.default = Some(super::extract::DEFAULT_PAGE_LIMIT.into());
                s
            }
            (ParameterIn::Query, _) => {
                // Free text in a query: every URL is refused with a NUL
                // (`%00`) in it (see `refuse_nul_in_url`).
                if let Some(RefOr::T(Schema::Object(o))) = p.schema.as_mut()
                    && o.pattern.is_none()
                    && matches!(&o.schema_type, SchemaType::Type(Type::String))
                {
                    o.pattern = Some(NO_NUL.to_owned());
                }
                continue;
            }
            _ => continue,
        };
        p.schema = Some(schema.into());
    }
}

/// The statuses every operation of a kind can answer, from the shared
/// parts that answer them: [`super::extract`] and [`super::error::ApiError`].
fn add_error_statuses(path: &str, method: &str, op: &mut Operation) {
    let mut statuses: Vec<(&str, &str)> = vec![(
        "400",
        "The request is malformed: a bad query parameter, malformed JSON, or a NUL (`%00`) in the URL.",
    )];
    if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
        statuses.push((
            "401",
            "No API key, or one that is revoked or unknown: send `Authorization: Bearer <api key>`.",
        ));
    }
    if path.contains("{id}") {
        statuses.push((
            "404",
            "No such resource in this account (ids of other accounts are not found either).",
        ));
    }
    if let Some(body) = &op.request_body {
        if body.content.contains_key("application/json") {
            statuses.push((
                "413",
                "The body is larger than the server's limit (`NOTIFLY_MAX_BODY_BYTES`).",
            ));
            statuses.push((
                "415",
                "The body is not sent as `content-type: application/json`.",
            ));
        }
        statuses.push((
            "422",
            "The body is well-formed but breaks a rule, names an id that does not exist, or reuses an `Idempotency-Key` with a different request: the message names the field.",
        ));
    }
    if op
        .parameters
        .iter()
        .flatten()
        .any(|p| p.name == "starting_after")
    {
        statuses.push((
            "422",
            "`starting_after` or `ending_before` names an id that does not exist (or is not in this list).",
        ));
    }
    if method == "post"
        && op
            .parameters
            .iter()
            .flatten()
            .any(|p| p.name == "Idempotency-Key")
    {
        statuses.push((
            "409",
            "A conflict with the account's data, such as a duplicate name.",
        ));
    }
    if path.starts_with("/v1/") {
        statuses.push((
            "503",
            "The database is unavailable, or the server's storage is full (the message says which); retry after `Retry-After` seconds, with the same `Idempotency-Key`.",
        ));
        statuses.push((
            "500",
            "An internal error; the request was not applied. The log holds the cause under the request's `x-request-id`.",
        ));
    }
    for (status, description) in statuses {
        let response = op
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| error_response(description));
        if let RefOr::T(r) = response
            && r.description.is_empty()
        {
            r.description = description.to_owned();
        }
    }
    // Every response says what it is, at least by the status's name.
    for (status, response) in op.responses.responses.iter_mut() {
        if let RefOr::T(r) = response
            && r.description.is_empty()
        {
            let reason = status
                .parse::<u16>()
                .ok()
                .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
                .and_then(|s| s.canonical_reason());
            r.description = reason.unwrap_or("Response").to_owned();
        }
    }
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

/// From each create (a `POST` answering 201 on a collection `P`) to every
/// operation on `P/{id}` and below: get, update, delete, and sub-resources
/// such as a webhook's deliveries, with `id` taken from the created body.
///
/// Written on the JSON form: utoipa 5 serializes its `Link` with
/// `operation_id` rather than OpenAPI's `operationId`.
fn add_links(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let operation_ids = |item: &Value| -> Vec<String> {
        ["get", "put", "post", "delete", "patch"]
            .iter()
            .filter_map(|m| item[*m]["operationId"].as_str().map(str::to_owned))
            .collect()
    };
    let mut targets: Vec<(String, Vec<String>)> = Vec::new();
    for collection in paths.keys() {
        let prefix = format!("{collection}/{{id}}");
        let ids: Vec<String> = paths
            .iter()
            .filter(|(path, _)| **path == prefix || path.starts_with(&format!("{prefix}/")))
            .flat_map(|(_, item)| operation_ids(item))
            .collect();
        if !ids.is_empty() {
            targets.push((collection.clone(), ids));
        }
    }
    for (collection, ids) in targets {
        let Some(created) = paths
            .get_mut(&collection)
            .and_then(|item| item.pointer_mut("/post/responses/201"))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        let links: serde_json::Map<String, Value> = ids
            .into_iter()
            .map(|id| {
                let link = json!({
                    "operationId": id,
                    "parameters": {"id": "$response.body#/id"},
                    "description": format!("`{id}` on the resource this created"),
                });
                (id, link)
            })
            .collect();
        created.insert("links".to_owned(), Value::Object(links));
    }
}
