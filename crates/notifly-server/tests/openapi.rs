//! The OpenAPI document at `/openapi.json` and the health probes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
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
