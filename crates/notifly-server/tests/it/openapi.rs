//! The OpenAPI document at `/openapi.json` and the health probes.

use crate::common::TestServer;
use serde_json::Value;

/// Every route the API serves, with its methods.
const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/contacts", &["get", "post"]),
    ("/v1/contacts/{id}", &["get", "put", "delete"]),
    ("/v1/conversations", &["get", "post"]),
    ("/v1/conversations/{id}", &["get", "put", "delete"]),
    ("/v1/messages", &["get", "post"]),
    ("/v1/messages/{id}", &["get", "put", "delete"]),
    ("/v1/groups", &["get", "post"]),
    ("/v1/groups/{id}", &["get", "put", "delete"]),
    ("/v1/attachments", &["get", "post"]),
    ("/v1/attachments/{id}", &["get", "put", "delete"]),
    ("/v1/attachments/{id}/content", &["get"]),
    ("/v1/events", &["get"]),
    ("/v1/events/{id}", &["get"]),
    ("/healthz", &["get"]),
    ("/readyz", &["get"]),
];

const SCHEMAS: &[&str] = &[
    "Contact",
    "Conversation",
    "Message",
    "Group",
    "Attachment",
    "Event",
    "ErrorBody",
];

async fn document(server: &TestServer) -> Value {
    let reply = server
        .anonymous()
        .send_raw(server.http.get(server.url("/openapi.json")))
        .await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"),
        "{:?}",
        reply.header("content-type")
    );
    serde_json::from_slice(&reply.bytes).expect("/openapi.json is valid JSON")
}

#[tokio::test]
async fn the_document_lists_every_route_with_its_methods() {
    let server = TestServer::start().await;
    let doc = document(&server).await;
    assert!(
        doc["openapi"].as_str().unwrap_or("").starts_with("3."),
        "an OpenAPI 3 document"
    );
    assert!(doc["info"]["title"].as_str().is_some());
    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in ROUTES {
        let item = paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is not in the document"));
        for method in *methods {
            let op = item
                .get(*method)
                .unwrap_or_else(|| panic!("{method} {path} is not in the document"));
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} documents its responses"
            );
        }
        // No method is documented that the route does not serve.
        for key in item.as_object().unwrap().keys() {
            if [
                "get", "put", "post", "delete", "patch", "head", "options", "trace",
            ]
            .contains(&key.as_str())
            {
                assert!(
                    methods.contains(&key.as_str()),
                    "{key} {path} is documented but not expected"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_document_has_the_resource_schemas() {
    let server = TestServer::start().await;
    let doc = document(&server).await;
    let schemas = doc["components"]["schemas"]
        .as_object()
        .expect("components.schemas");
    for name in SCHEMAS {
        let schema = schemas
            .get(*name)
            .unwrap_or_else(|| panic!("schema {name} is missing"));
        assert!(
            schema["properties"]
                .as_object()
                .is_some_and(|p| !p.is_empty()),
            "schema {name} has properties"
        );
    }
    let contact = &schemas["Contact"]["properties"];
    for field in [
        "id",
        "username",
        "phone_number",
        "avatar_url",
        "display_name",
        "conversation_id",
        "last_active_at",
        "created_at",
    ] {
        assert!(contact.get(field).is_some(), "Contact.{field}");
    }
    let error = &schemas["ErrorBody"]["properties"];
    assert!(error.get("type").is_some() && error.get("message").is_some());
    assert!(
        doc["components"]["securitySchemes"]
            .as_object()
            .is_some_and(|s| !s.is_empty()),
        "the bearer API key is described"
    );
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let doc = document(&server).await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if item.get("get").is_none() {
            continue;
        }
        let concrete = path.replace("{id}", "ZZZZZZZZZZZZZZZZ");
        if path == "/v1/events/stream" {
            // An endless stream: check that it opens, without reading it.
            let reply = c
                .request(reqwest::Method::GET, &concrete)
                .send()
                .await
                .unwrap();
            assert_eq!(reply.status(), 200, "GET {concrete}");
            let kind = reply.headers()["content-type"].to_str().unwrap().to_owned();
            assert!(
                kind.starts_with("text/event-stream"),
                "GET {concrete}: {kind}"
            );
            continue;
        }
        let (status, body) = c.get(&concrete).await;
        assert!(
            [200, 404].contains(&status),
            "GET {concrete}: {status} {body}"
        );
        if status == 404 {
            assert!(path.contains("{id}"), "GET {path} is not routed: {body}");
        }
    }
}

#[tokio::test]
async fn health_probes_answer_200() {
    let server = TestServer::start().await;
    let anonymous = server.anonymous();
    for path in ["/healthz", "/readyz"] {
        let (status, body) = anonymous.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["status"], "ok", "{path}: {body}");
    }
}

/// `docs/openapi.json` is the document as served. Regenerate it after an
/// intended change with
/// `NOTIFLY_UPDATE_DOCS=1 cargo test -p notifly-server --test it openapi::`.
#[tokio::test]
async fn the_document_does_not_drift() {
    let server = TestServer::start().await;
    let served = document(&server).await;
    let text = serde_json::to_string_pretty(&served).unwrap() + "\n";
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    if std::env::var_os("NOTIFLY_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "docs/openapi.json differs from the served document; if the change is intended, run NOTIFLY_UPDATE_DOCS=1 cargo test -p notifly-server --test it openapi::"
    );
    // Two servers describe the API alike: nothing in it depends on the run.
    let again = TestServer::start().await;
    assert_eq!(document(&again).await, served);
}

/// Every operation of a path, with its method.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                out.push((method.clone(), path.clone(), op.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn every_error_status_is_documented_with_the_error_body() {
    let server = TestServer::start().await;
    let doc = document(&server).await;
    for (method, path, op) in operations(&doc) {
        let responses = op["responses"].as_object().unwrap();
        let has = |status: &str| responses.contains_key(status);
        assert!(has("400"), "{method} {path}: 400");
        if path.starts_with("/v1/") {
            for status in ["401", "500", "503"] {
                assert!(has(status), "{method} {path}: {status}");
            }
        }
        if path.contains("{id}") {
            assert!(has("404"), "{method} {path}: 404");
        }
        if op.get("requestBody").is_some() {
            assert!(has("422"), "{method} {path}: 422");
        }
        for (status, response) in responses {
            // `/readyz` answers 503 with its own readiness body.
            if path.starts_with("/v1/") && (status.starts_with('4') || status.starts_with('5')) {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
    }
}

#[tokio::test]
async fn each_create_links_to_the_operations_on_what_it_created() {
    let server = TestServer::start().await;
    let doc = document(&server).await;
    let ids: std::collections::HashSet<String> = operations(&doc)
        .iter()
        .filter_map(|(_, _, op)| op["operationId"].as_str().map(str::to_owned))
        .collect();
    let mut creates = 0;
    for (method, path, op) in operations(&doc) {
        let Some(created) = op["responses"].get("201") else {
            continue;
        };
        assert_eq!(method, "post");
        creates += 1;
        let links = created["links"]
            .as_object()
            .unwrap_or_else(|| panic!("{path}: no links"));
        let item = &doc["paths"][format!("{path}/{{id}}")];
        for m in ["get", "put", "delete"] {
            if let Some(target) = item[m]["operationId"].as_str() {
                let link = &links[target];
                assert_eq!(link["operationId"], target, "{path} → {target}");
                assert_eq!(link["parameters"]["id"], "$response.body#/id");
            }
        }
        for link in links.values() {
            let target = link["operationId"].as_str().unwrap();
            assert!(ids.contains(target), "{path} links to unknown {target}");
        }
    }
    assert!(
        creates >= 6,
        "contacts, conversations, messages, groups, attachments, webhooks"
    );
    let webhook = &doc["paths"]["/v1/webhooks"]["post"]["responses"]["201"]["links"];
    assert!(
        webhook.get("list_deliveries").is_some(),
        "a webhook links to its deliveries: {webhook}"
    );
}

#[tokio::test]
async fn the_rules_the_server_checks_are_in_the_schemas() {
    let server = TestServer::start().await;
    let doc = document(&server).await;
    let schemas = &doc["components"]["schemas"];
    let contact = &schemas["CreateContact"];
    assert_eq!(contact["additionalProperties"], false);
    assert_eq!(contact["properties"]["username"]["maxLength"], 64);
    assert!(contact["properties"]["username"]["pattern"].is_string());
    assert!(contact["properties"]["phone_number"]["pattern"].is_string());
    assert!(contact["properties"]["avatar_url"]["pattern"].is_string());
    assert_eq!(contact["properties"]["last_active_at"]["minimum"], 0);
    let required: Vec<&str> = contact["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(required, ["username", "phone_number"]);
    // An update may leave `username` out, but not clear it.
    let username = &schemas["UpdateContact"]["properties"]["username"];
    assert_eq!(username["type"], "string", "{username}");
    // A conversation is with a contact or a group, not both.
    let shapes = schemas["CreateConversation"]["oneOf"].as_array().unwrap();
    assert_eq!(shapes.len(), 2);
    for shape in shapes {
        assert_eq!(shape["additionalProperties"], false);
        assert_eq!(shape["required"].as_array().unwrap().len(), 1);
    }
    let limit = doc["paths"]["/v1/contacts"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()
        .clone();
    assert_eq!(limit["schema"]["minimum"], 1);
    assert_eq!(limit["schema"]["maximum"], 100);
    let id = doc["paths"]["/v1/contacts/{id}"]["get"]["parameters"][0].clone();
    assert_eq!(id["schema"]["pattern"], "^[A-Za-z0-9]{16}$");
    let webhook = &schemas["CreateWebhook"]["properties"];
    assert_eq!(webhook["rate_limit"]["maximum"], 10000);
    assert!(webhook["events"]["oneOf"].is_array());
}
