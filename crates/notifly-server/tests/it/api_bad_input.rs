//! Bad input gets a precise status and `{"type": "invalid_request", "message"}`,
//! and writes nothing: no resource row, no event row, no file.

use crate::common::{
    Client, TestServer, UNKNOWN_ID, assert_error_body, assert_invalid, id_of, message_of,
};
use reqwest::Method;
use serde_json::{Value, json};

/// Existing resources of one account, for the update and reference cases.
struct Fixture {
    contact: String,
    conversation: String,
    message: String,
    group: String,
    attachment: String,
}

async fn fixture(c: &Client) -> Fixture {
    let contact = c.contact("kevin").await;
    let conversation = c.conversation_with(id_of(&contact)).await;
    let message = c.message(id_of(&conversation), "hello").await;
    let group = c.group("family", &[id_of(&contact)]).await;
    let attachment = c.attachment(id_of(&message), "a.txt").await;
    Fixture {
        contact: id_of(&contact).to_owned(),
        conversation: id_of(&conversation).to_owned(),
        message: id_of(&message).to_owned(),
        group: id_of(&group).to_owned(),
        attachment: id_of(&attachment).to_owned(),
    }
}

impl Fixture {
    /// Every resource path, with the JSON the API answers for it now.
    async fn state(&self, c: &Client) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for path in [
            format!("/v1/contacts/{}", self.contact),
            format!("/v1/conversations/{}", self.conversation),
            format!("/v1/messages/{}", self.message),
            format!("/v1/groups/{}", self.group),
            format!("/v1/attachments/{}", self.attachment),
        ] {
            let (status, body) = c.get(&path).await;
            assert_eq!(status, 200, "{path}");
            out.push((path, body));
        }
        out
    }
}

/// Sends `body` as JSON text and asserts `status`, the error body shape, and
/// that nothing was written anywhere.
async fn rejects(
    server: &TestServer,
    c: &Client,
    method: Method,
    path: &str,
    body: &str,
    status: u16,
) {
    let before = server.counts().await;
    let files = server.attachment_files();
    let got = c
        .send_body(
            method.clone(),
            path,
            Some("application/json"),
            body.to_owned(),
        )
        .await;
    assert_eq!(got.0, status, "{method} {path} {body}: {}", got.1);
    assert_error_body(&got.1, "invalid_request");
    assert_eq!(
        server.counts().await,
        before,
        "{method} {path} {body} wrote rows"
    );
    assert_eq!(server.attachment_files(), files);
}

#[tokio::test]
async fn malformed_json_is_400() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let f = fixture(&c).await;
    let state = f.state(&c).await;
    let mut targets: Vec<(Method, String)> = [
        "/v1/contacts",
        "/v1/conversations",
        "/v1/messages",
        "/v1/groups",
    ]
    .into_iter()
    .map(|p| (Method::POST, p.to_owned()))
    .collect();
    targets.extend(state.iter().map(|(p, _)| (Method::PUT, p.clone())));
    for (method, path) in &targets {
        for body in [
            "{",
            "",
            "not json",
            "{,}",
            "{'username': 'kevin'}",
            r#"{""#,
            "[",
            "\u{0}",
        ] {
            rejects(&server, &c, method.clone(), path, body, 400).await;
        }
    }
    assert_eq!(f.state(&c).await, state, "nothing changed");
}

/// A body that is not JSON is 400 even when the part before the syntax error
/// already breaks the expected shape.
#[tokio::test]
async fn malformed_json_is_400_even_when_mistyped_before_the_error() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let f = fixture(&c).await;
    let state = f.state(&c).await;
    for (method, path, body) in [
        (Method::POST, "/v1/contacts".to_owned(), r#"{"username": 5"#),
        (Method::POST, "/v1/contacts".to_owned(), "{} {}"),
        (Method::POST, "/v1/groups".to_owned(), r#"{"nmae": "x","#),
        (
            Method::POST,
            "/v1/groups".to_owned(),
            r#"{"username": "kevin",}"#,
        ),
        (Method::POST, "/v1/contacts".to_owned(), "[1, 2"),
        (
            Method::PUT,
            format!("/v1/contacts/{}", f.contact),
            r#"{"display_name": 5"#,
        ),
    ] {
        rejects(&server, &c, method, &path, body, 400).await;
    }
    assert_eq!(f.state(&c).await, state);
}

/// A JSON array is not an object, even one whose items line up with the fields.
#[tokio::test]
async fn json_arrays_are_not_request_objects() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let f = fixture(&c).await;
    let state = f.state(&c).await;
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/contacts".to_owned(),
            json!(["marv", "123"]),
        ),
        (Method::POST, "/v1/groups".to_owned(), json!(["family"])),
        (
            Method::PUT,
            format!("/v1/contacts/{}", f.contact),
            json!(["marv"]),
        ),
        (
            Method::PUT,
            format!("/v1/contacts/{}", f.contact),
            json!([]),
        ),
        (
            Method::PUT,
            format!("/v1/groups/{}", f.group),
            json!(["renamed"]),
        ),
    ] {
        rejects(&server, &c, method, &path, &body.to_string(), 422).await;
    }
    assert_eq!(f.state(&c).await, state);
}

#[tokio::test]
async fn wrong_shape_or_rule_breaking_json_is_422() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let f = fixture(&c).await;
    let other = c.contact("marv").await;
    let state = f.state(&c).await;
    let long = |n: usize| "x".repeat(n);
    let post = |path: &'static str, body: Value| (Method::POST, path.to_owned(), body);
    let put = |path: String, body: Value| (Method::PUT, path, body);
    let contact_path = format!("/v1/contacts/{}", f.contact);
    let conversation_path = format!("/v1/conversations/{}", f.conversation);
    let message_path = format!("/v1/messages/{}", f.message);
    let group_path = format!("/v1/groups/{}", f.group);
    let attachment_path = format!("/v1/attachments/{}", f.attachment);

    let cases = vec![
        // Contacts: wrong types, missing, unknown, empty, rule-breaking.
        post("/v1/contacts", json!([])),
        post("/v1/contacts", json!("kevin")),
        post("/v1/contacts", json!(null)),
        post("/v1/contacts", json!({})),
        post("/v1/contacts", json!({"phone_number": "123"})),
        post("/v1/contacts", json!({"username": "ab"})),
        post(
            "/v1/contacts",
            json!({"username": 5, "phone_number": "123"}),
        ),
        post(
            "/v1/contacts",
            json!({"username": "ab", "phone_number": 123}),
        ),
        post(
            "/v1/contacts",
            json!({"username": "ab", "phone_number": "123", "nickname": "x"}),
        ),
        post(
            "/v1/contacts",
            json!({"username": "", "phone_number": "123"}),
        ),
        post(
            "/v1/contacts",
            json!({"username": "  ", "phone_number": "123"}),
        ),
        post(
            "/v1/contacts",
            json!({"username": "ab", "phone_number": ""}),
        ),
        post(
            "/v1/contacts",
            json!({"username": "a b", "phone_number": "123"}),
        ),
        post(
            "/v1/contacts",
            json!({"username": long(65), "phone_number": "123"}),
        ),
        post(
            "/v1/contacts",
            json!({"username": "ab", "phone_number": "call me"}),
        ),
        post(
            "/v1/contacts",
            json!({"username": "ab", "phone_number": "12"}),
        ),
        post(
            "/v1/contacts",
            json!({"username": "ab", "phone_number": "123", "display_name": long(129)}),
        ),
        post(
            "/v1/contacts",
            json!({"username": "ab", "phone_number": "123", "display_name": "a\u{7}b"}),
        ),
        post(
            "/v1/contacts",
            json!({"username": "ab", "phone_number": "123", "last_active_at": -1}),
        ),
        post(
            "/v1/contacts",
            json!({"username": "ab", "phone_number": "123", "last_active_at": "now"}),
        ),
        put(contact_path.clone(), json!({"username": null})),
        put(contact_path.clone(), json!({"username": ""})),
        put(contact_path.clone(), json!({"phone_number": null})),
        put(contact_path.clone(), json!({"phone_number": "x"})),
        put(contact_path.clone(), json!({"conversation_id": null})),
        put(contact_path.clone(), json!({"id": "AAAAAAAAAAAAAAAA"})),
        put(contact_path.clone(), json!({"display_name": 5})),
        // Conversations.
        post("/v1/conversations", json!({})),
        post("/v1/conversations", json!({"contact_id": 5})),
        post("/v1/conversations", json!({"contact_id": ""})),
        post("/v1/conversations", json!({"contact_id": "short"})),
        post("/v1/conversations", json!({"contact_id": UNKNOWN_ID})),
        post("/v1/conversations", json!({"group_id": UNKNOWN_ID})),
        post(
            "/v1/conversations",
            json!({"contact_id": id_of(&other), "is_muted": "yes"}),
        ),
        post(
            "/v1/conversations",
            json!({"contact_id": id_of(&other), "topic": "x"}),
        ),
        put(
            conversation_path.clone(),
            json!({"pinned_message_id": UNKNOWN_ID}),
        ),
        put(conversation_path.clone(), json!({"pinned_message_id": "x"})),
        put(conversation_path.clone(), json!({"is_muted": null})),
        put(conversation_path.clone(), json!({"is_pinned": "true"})),
        put(conversation_path.clone(), json!({"archived": null})),
        put(conversation_path.clone(), json!({"last_opened_at": -5})),
        put(
            conversation_path.clone(),
            json!({"contact_id": id_of(&other)}),
        ),
        // Messages.
        post("/v1/messages", json!({"conversation_id": f.conversation})),
        post("/v1/messages", json!({"message": "hi"})),
        post(
            "/v1/messages",
            json!({"conversation_id": f.conversation, "message": ""}),
        ),
        post(
            "/v1/messages",
            json!({"conversation_id": f.conversation, "message": " \n "}),
        ),
        post(
            "/v1/messages",
            json!({"conversation_id": f.conversation, "message": 42}),
        ),
        post(
            "/v1/messages",
            json!({"conversation_id": f.conversation, "message": long(10_001)}),
        ),
        post(
            "/v1/messages",
            json!({"conversation_id": UNKNOWN_ID, "message": "hi"}),
        ),
        post(
            "/v1/messages",
            json!({"conversation_id": "nope", "message": "hi"}),
        ),
        post(
            "/v1/messages",
            json!({"conversation_id": f.conversation, "message": "hi", "contact_id": id_of(&other)}),
        ),
        post(
            "/v1/messages",
            json!({"conversation_id": f.conversation, "message": "hi", "contact_id": UNKNOWN_ID}),
        ),
        post(
            "/v1/messages",
            json!({"conversation_id": f.conversation, "message": "hi", "read_at": -1}),
        ),
        post(
            "/v1/messages",
            json!({"conversation_id": f.conversation, "message": "hi", "reactions": []}),
        ),
        put(message_path.clone(), json!({"message": ""})),
        put(message_path.clone(), json!({"message": null})),
        put(message_path.clone(), json!({"read_at": -1})),
        put(
            message_path.clone(),
            json!({"reactions": [{"contact_id": UNKNOWN_ID, "emoji": "👍"}]}),
        ),
        put(
            message_path.clone(),
            json!({"reactions": [{"contact_id": f.contact, "emoji": ""}]}),
        ),
        put(
            message_path.clone(),
            json!({"reactions": [{"contact_id": f.contact}]}),
        ),
        put(
            message_path.clone(),
            json!({"reactions": [
                {"contact_id": f.contact, "emoji": "👍"},
                {"contact_id": f.contact, "emoji": "👍"},
            ]}),
        ),
        put(message_path.clone(), json!({"conversation_id": UNKNOWN_ID})),
        // Groups.
        post("/v1/groups", json!({})),
        post("/v1/groups", json!({"name": ""})),
        post("/v1/groups", json!({"name": 7})),
        post("/v1/groups", json!({"name": long(129)})),
        post("/v1/groups", json!({"name": "g", "contacts": "x"})),
        post("/v1/groups", json!({"name": "g", "contacts": ["bad"]})),
        post("/v1/groups", json!({"name": "g", "contacts": [UNKNOWN_ID]})),
        post(
            "/v1/groups",
            json!({"name": "g", "contacts": [f.contact, f.contact]}),
        ),
        post("/v1/groups", json!({"name": "g", "members": []})),
        post(
            "/v1/groups",
            json!({"name": "g", "description": long(1025)}),
        ),
        put(group_path.clone(), json!({"name": null})),
        put(group_path.clone(), json!({"name": ""})),
        put(group_path.clone(), json!({"contacts": [UNKNOWN_ID]})),
        put(group_path.clone(), json!({"contacts": null})),
        put(group_path.clone(), json!({"archived": "yes"})),
        put(group_path.clone(), json!({"conversation_id": null})),
        // Attachments.
        put(attachment_path.clone(), json!({"filename": ""})),
        put(attachment_path.clone(), json!({"filename": null})),
        put(attachment_path.clone(), json!({"filename": ".."})),
        put(attachment_path.clone(), json!({"filename": "dir/"})),
        put(attachment_path.clone(), json!({"filename": long(256)})),
        put(attachment_path.clone(), json!({"file_type": "text/html"})),
    ];
    for (method, path, body) in cases {
        rejects(&server, &c, method, &path, &body.to_string(), 422).await;
    }
    assert_eq!(f.state(&c).await, state, "nothing changed");
}

#[tokio::test]
async fn error_messages_name_the_problem() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let got = c
        .post(
            "/v1/contacts",
            json!({"username": "", "phone_number": "123"}),
        )
        .await;
    assert_invalid(&got, 422);
    assert!(message_of(&got.1).contains("username"), "{}", got.1);
    let got = c
        .post(
            "/v1/contacts",
            json!({"username": "ab", "phone_number": "123", "nick": 1}),
        )
        .await;
    assert_invalid(&got, 422);
    assert!(message_of(&got.1).contains("nick"), "{}", got.1);
    let got = c.post("/v1/contacts", json!({"username": "ab"})).await;
    assert_invalid(&got, 422);
    assert!(message_of(&got.1).contains("phone_number"), "{}", got.1);
    let got = c
        .post(
            "/v1/messages",
            json!({"conversation_id": UNKNOWN_ID, "message": "hi"}),
        )
        .await;
    assert_invalid(&got, 422);
    assert!(message_of(&got.1).contains("conversation_id"), "{}", got.1);
}

#[tokio::test]
async fn json_writes_need_a_json_content_type() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let f = fixture(&c).await;
    let body = r#"{"username": "marv", "phone_number": "123"}"#;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        for (method, path) in [
            (Method::POST, "/v1/contacts".to_owned()),
            (Method::POST, "/v1/groups".to_owned()),
            (Method::PUT, format!("/v1/contacts/{}", f.contact)),
            (Method::PUT, format!("/v1/attachments/{}", f.attachment)),
        ] {
            let before = server.counts().await;
            let got = c
                .send_body(method.clone(), &path, content_type, body.to_owned())
                .await;
            assert_invalid(&got, 415);
            assert_eq!(server.counts().await, before, "{method} {path}");
        }
    }
    // `application/json; charset=utf-8` is JSON.
    let got = c
        .send_body(
            Method::POST,
            "/v1/contacts",
            Some("application/json; charset=utf-8"),
            body.to_owned(),
        )
        .await;
    assert_eq!(got.0, 201, "{}", got.1);
    // Attachments must be multipart.
    let before = server.counts().await;
    let got = c
        .send_body(
            Method::POST,
            "/v1/attachments",
            Some("application/json"),
            json!({"message_id": f.message}).to_string(),
        )
        .await;
    assert_invalid(&got, 415);
    assert_eq!(server.counts().await, before);
}

#[tokio::test]
async fn oversized_json_is_413() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let f = fixture(&c).await;
    let big = "x".repeat(1024 * 1024 + 1);
    let create = json!({"username": "marv", "phone_number": "123", "display_name": big});
    rejects(
        &server,
        &c,
        Method::POST,
        "/v1/contacts",
        &create.to_string(),
        413,
    )
    .await;
    rejects(
        &server,
        &c,
        Method::PUT,
        &format!("/v1/contacts/{}", f.contact),
        &json!({"display_name": big}).to_string(),
        413,
    )
    .await;
    // The same, sent chunked (no Content-Length, so the limit applies while reading).
    let before = server.counts().await;
    let key = c.key.clone().unwrap();
    let mut request = format!(
        "POST /v1/contacts HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in create.to_string().as_bytes().chunks(64 * 1024) {
        request.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend(chunk);
        request.extend(b"\r\n");
    }
    request.extend(b"0\r\n\r\n");
    let (status, body) = raw_http(&server, &request).await;
    assert_eq!(status, 413, "{body}");
    assert_error_body(
        &serde_json::from_str(&body).unwrap_or(json!(body)),
        "invalid_request",
    );
    assert_eq!(server.counts().await, before);
}

/// Sends raw bytes to the server and returns the response's status and body
/// (which must not be chunked: error bodies have a Content-Length).
async fn raw_http(server: &TestServer, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(request).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn oversized_attachments_are_413() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let f = fixture(&c).await;
    let limit = server.config.max_attachment_bytes;
    for size in [limit + 1, limit + 64 * 1024, 4 * limit] {
        let before = server.counts().await;
        let files = server.attachment_files();
        let got = c
            .upload(
                &f.message,
                "big.bin",
                "application/octet-stream",
                &vec![7; size],
            )
            .await;
        assert_invalid(&got, 413);
        assert_eq!(server.counts().await, before, "{size} bytes");
        assert_eq!(server.attachment_files(), files, "{size} bytes");
    }
    // Exactly at the limit is fine.
    let (status, body) = c
        .upload(
            &f.message,
            "max.bin",
            "application/octet-stream",
            &vec![7; limit],
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["file_size"], json!(limit));
}

#[tokio::test]
async fn malformed_uploads_are_rejected() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let other = server.account("other").await;
    let f = fixture(&c).await;
    let theirs = other
        .message(id_of(&other.conversation("x").await), "m")
        .await;
    let file = || {
        reqwest::multipart::Part::bytes(b"data".to_vec())
            .file_name("a.txt")
            .mime_str("text/plain")
            .unwrap()
    };
    type Form = reqwest::multipart::Form;
    let cases: Vec<(&str, Form, u16)> = vec![
        ("no message_id", Form::new().part("file", file()), 422),
        (
            "no file",
            Form::new().text("message_id", f.message.clone()),
            422,
        ),
        // RFC 2046: a multipart body has at least one part.
        ("empty form", Form::new(), 400),
        (
            "unknown field",
            Form::new()
                .text("message_id", f.message.clone())
                .text("caption", "hi")
                .part("file", file()),
            422,
        ),
        (
            "file without a file name",
            Form::new()
                .text("message_id", f.message.clone())
                .part("file", reqwest::multipart::Part::bytes(b"data".to_vec())),
            422,
        ),
        (
            "empty file name",
            Form::new()
                .text("message_id", f.message.clone())
                .part("file", file().file_name("")),
            422,
        ),
        (
            "unknown message",
            Form::new()
                .text("message_id", UNKNOWN_ID)
                .part("file", file()),
            422,
        ),
        (
            "malformed message id",
            Form::new().text("message_id", "nope").part("file", file()),
            422,
        ),
        (
            "another account's message",
            Form::new()
                .text("message_id", id_of(&theirs).to_owned())
                .part("file", file()),
            422,
        ),
    ];
    for (what, form, status) in cases {
        let before = server.counts().await;
        let files = server.attachment_files();
        let got = c
            .send(c.request(Method::POST, "/v1/attachments").multipart(form))
            .await;
        assert_eq!(got.0, status, "{what}: {}", got.1);
        assert_error_body(&got.1, "invalid_request");
        assert_eq!(server.counts().await, before, "{what}");
        assert_eq!(server.attachment_files(), files, "{what}");
    }
    // A body that is not multipart at all, under a multipart content type.
    let before = server.counts().await;
    let got = c
        .send_body(
            Method::POST,
            "/v1/attachments",
            Some("multipart/form-data; boundary=XYZ"),
            "this is not a multipart body",
        )
        .await;
    assert_invalid(&got, 400);
    let got = c
        .send_body(
            Method::POST,
            "/v1/attachments",
            Some("multipart/form-data"),
            "--\r\n",
        )
        .await;
    assert_invalid(&got, 400);
    assert_eq!(server.counts().await, before);
}

#[tokio::test]
async fn invalid_avatar_urls_are_422() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let f = fixture(&c).await;
    let state = f.state(&c).await;
    for url in [
        "",
        "example.com/a.png",
        "ftp://example.com/a.png",
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "http://",
        "https:///path",
        "https://user:pw@example.com/a.png",
        "http://exa mple.com/a.png",
        "https://example.com/a b.png",
        "//example.com/a.png",
    ] {
        for (method, path, body) in [
            (
                Method::POST,
                "/v1/contacts".to_owned(),
                json!({"username": "marv", "phone_number": "123", "avatar_url": url}),
            ),
            (
                Method::PUT,
                format!("/v1/contacts/{}", f.contact),
                json!({"avatar_url": url}),
            ),
            (
                Method::POST,
                "/v1/groups".to_owned(),
                json!({"name": "g", "avatar_url": url}),
            ),
            (
                Method::PUT,
                format!("/v1/groups/{}", f.group),
                json!({"avatar_url": url}),
            ),
        ] {
            rejects(&server, &c, method, &path, &body.to_string(), 422).await;
        }
    }
    assert_eq!(f.state(&c).await, state);
    let (status, body) = c
        .post(
            "/v1/contacts",
            json!({"username": "marv", "phone_number": "123", "avatar_url": "https://cdn.example.com/a.png?size=64#x"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn references_to_another_accounts_resources_are_422() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let other = server.account("other").await;
    let mine = fixture(&c).await;
    let theirs = fixture(&other).await;
    let spare = other.contact("spare").await;
    let spare_group = other.group("spare", &[]).await;
    let cases = vec![
        (
            Method::POST,
            "/v1/messages".to_owned(),
            json!({"conversation_id": theirs.conversation, "message": "hi"}),
        ),
        (
            Method::POST,
            "/v1/messages".to_owned(),
            json!({"conversation_id": mine.conversation, "message": "hi", "contact_id": theirs.contact}),
        ),
        (
            Method::POST,
            "/v1/conversations".to_owned(),
            json!({"contact_id": id_of(&spare)}),
        ),
        (
            Method::POST,
            "/v1/conversations".to_owned(),
            json!({"group_id": id_of(&spare_group)}),
        ),
        (
            Method::POST,
            "/v1/groups".to_owned(),
            json!({"name": "g", "contacts": [mine.contact, theirs.contact]}),
        ),
        (
            Method::PUT,
            format!("/v1/groups/{}", mine.group),
            json!({"contacts": [theirs.contact]}),
        ),
        (
            Method::PUT,
            format!("/v1/conversations/{}", mine.conversation),
            json!({"pinned_message_id": theirs.message}),
        ),
        (
            Method::PUT,
            format!("/v1/messages/{}", mine.message),
            json!({"reactions": [{"contact_id": theirs.contact, "emoji": "👍"}]}),
        ),
    ];
    for (method, path, body) in cases {
        rejects(&server, &c, method, &path, &body.to_string(), 422).await;
    }
}

#[tokio::test]
async fn unknown_ids_are_404() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let f = fixture(&c).await;
    let state = f.state(&c).await;
    for resource in [
        "contacts",
        "conversations",
        "messages",
        "groups",
        "attachments",
    ] {
        for id in [UNKNOWN_ID, "nope", "ZZZZZZZZZZZZZZZZZ", "%20"] {
            let path = format!("/v1/{resource}/{id}");
            let before = server.counts().await;
            let got = c.get(&path).await;
            assert_invalid(&got, 404);
            let got = c.put(&path, json!({})).await;
            assert_invalid(&got, 404);
            let got = c.delete(&path).await;
            assert_invalid(&got, 404);
            assert_eq!(server.counts().await, before, "{path}");
        }
    }
    assert_invalid(
        &c.get(&format!("/v1/attachments/{UNKNOWN_ID}/content"))
            .await,
        404,
    );
    assert_invalid(&c.get(&format!("/v1/events/{UNKNOWN_ID}")).await, 404);
    // A real id of another kind is no id of this one.
    assert_invalid(&c.get(&format!("/v1/contacts/{}", f.group)).await, 404);
    assert_invalid(&c.get(&format!("/v1/events/{}", f.contact)).await, 404);
    assert_eq!(f.state(&c).await, state);
}

#[tokio::test]
async fn unknown_routes_are_404_with_a_json_body() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    for client in [c.clone(), server.anonymous()] {
        for (method, path) in [
            (Method::GET, "/v1/nope"),
            (Method::GET, "/nope"),
            (Method::GET, "/v2/contacts"),
            (Method::POST, "/v1/contacts/AAAAAAAAAAAAAAAA/extra"),
            (Method::GET, "/v1/webhookz"),
            (Method::DELETE, "/"),
        ] {
            let got = client.send(client.request(method.clone(), path)).await;
            assert_invalid(&got, 404);
        }
    }
}

#[tokio::test]
async fn wrong_methods_are_405_with_a_json_body() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let f = fixture(&c).await;
    let before = server.counts().await;
    for (method, path) in [
        (Method::DELETE, "/v1/contacts".to_owned()),
        (Method::PUT, "/v1/contacts".to_owned()),
        (Method::PATCH, format!("/v1/contacts/{}", f.contact)),
        (Method::POST, format!("/v1/contacts/{}", f.contact)),
        (Method::POST, format!("/v1/groups/{}", f.group)),
        (Method::DELETE, "/v1/events".to_owned()),
        (Method::POST, "/v1/events".to_owned()),
        (Method::DELETE, format!("/v1/events/{}", f.contact)),
        (
            Method::POST,
            format!("/v1/attachments/{}/content", f.attachment),
        ),
        (Method::POST, "/healthz".to_owned()),
        (Method::POST, "/openapi.json".to_owned()),
    ] {
        let got = c.send(c.request(method.clone(), &path)).await;
        assert_eq!(got.0, 405, "{method} {path}: {}", got.1);
        assert_error_body(&got.1, "invalid_request");
    }
    assert_eq!(server.counts().await, before);
}

#[tokio::test]
async fn missing_or_wrong_api_keys_are_401() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let f = fixture(&c).await;
    let key = c.key.clone().unwrap();
    let mut requests: Vec<(String, reqwest::RequestBuilder)> = Vec::new();
    let paths = [
        (Method::GET, "/v1/contacts".to_owned(), None),
        (
            Method::POST,
            "/v1/contacts".to_owned(),
            Some(json!({"username": "marv", "phone_number": "123"})),
        ),
        (Method::GET, format!("/v1/contacts/{}", f.contact), None),
        (
            Method::PUT,
            format!("/v1/contacts/{}", f.contact),
            Some(json!({"display_name": "x"})),
        ),
        (Method::DELETE, format!("/v1/groups/{}", f.group), None),
        (Method::GET, "/v1/conversations".to_owned(), None),
        (
            Method::POST,
            "/v1/messages".to_owned(),
            Some(json!({"conversation_id": f.conversation, "message": "hi"})),
        ),
        (
            Method::GET,
            format!("/v1/attachments/{}/content", f.attachment),
            None,
        ),
        (Method::GET, "/v1/events".to_owned(), None),
    ];
    for (method, path, body) in &paths {
        let url = server.url(path);
        let with_body = |rb: reqwest::RequestBuilder| match body {
            Some(b) => rb.json(b),
            None => rb,
        };
        let http = &server.http;
        let request = |auth: Option<String>| {
            let rb = with_body(http.request(method.clone(), &url));
            match auth {
                Some(a) => rb.header("authorization", a),
                None => rb,
            }
        };
        requests.push((format!("{method} {path} without a key"), request(None)));
        for auth in [
            "Bearer nfly_sk_0000000000000000000000000000000000000000".to_owned(),
            "Bearer ".to_owned(),
            "Bearer".to_owned(),
            format!("Basic {key}"),
            key.clone(),
            format!("Bearer {key}x"),
            format!("Bearer {}", &key[..key.len() - 1]),
            "Bearer not-a-key".to_owned(),
        ] {
            requests.push((
                format!("{method} {path} with `{auth}`"),
                request(Some(auth)),
            ));
        }
    }
    for (what, rb) in requests {
        let before = server.counts().await;
        let reply = c.send_raw(rb).await;
        assert_eq!(reply.status, 401, "{what}: {}", reply.json());
        assert_error_body(&reply.json(), "invalid_request");
        assert_eq!(
            reply.header("www-authenticate").as_deref(),
            Some("Bearer"),
            "{what}"
        );
        assert_eq!(server.counts().await, before, "{what}");
    }
    // The right key works, and so does a lowercase scheme.
    let (status, _) = c.get("/v1/contacts").await;
    assert_eq!(status, 200);
    let reply = c
        .send_raw(
            server
                .http
                .get(server.url("/v1/contacts"))
                .header("authorization", format!("bearer {key}")),
        )
        .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn nul_characters_are_refused_in_every_store() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let f = fixture(&c).await;
    let before = f.state(&c).await;
    // PostgreSQL cannot store NUL in text; refusing it up front keeps both
    // stores answering the same 422 (and never a 500).
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/contacts".to_owned(),
            r#"{"username":"nul\u0000","phone_number":"+1 555 0100"}"#.to_owned(),
        ),
        (
            Method::PUT,
            format!("/v1/messages/{}", f.message),
            r#"{"message":"a\u0000b"}"#.to_owned(),
        ),
        (
            Method::POST,
            "/v1/messages".to_owned(),
            format!(
                r#"{{"conversation_id":"{}","contact_id":"{}","message":"\u0000"}}"#,
                f.conversation, f.contact
            ),
        ),
        (
            Method::POST,
            "/v1/webhooks".to_owned(),
            r#"{"name":"x","url":"https://example.com/h","events":["*"],"description":"\u0000"}"#
                .to_owned(),
        ),
    ] {
        rejects(&server, &c, method, &path, &body, 422).await;
    }
    // Nor in a URL: an id or a filter with %00 is a 400 on both stores.
    for path in [
        "/v1/contacts/%00".to_owned(),
        format!("/v1/messages/{}%00", f.message),
        "/v1/events?type=%00".to_owned(),
    ] {
        let got = c.get(&path).await;
        assert_invalid(&got, 400);
    }
    let got = c.delete(&format!("/v1/contacts/%00{}", f.contact)).await;
    assert_invalid(&got, 400);
    assert_eq!(f.state(&c).await, before);
    // An escaped backslash followed by `u0000` is text, not a NUL.
    let (status, message) = c
        .send_body(
            Method::PUT,
            &format!("/v1/messages/{}", f.message),
            Some("application/json"),
            r#"{"message":"C:\\u0000"}"#.to_owned(),
        )
        .await;
    assert_eq!(status, 200, "{message}");
    assert_eq!(message["message"], "C:\\u0000");
}
