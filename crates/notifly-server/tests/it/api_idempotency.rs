//! `Idempotency-Key` on `POST`: a retried request gets the first response and
//! writes nothing more.

use crate::common::{Client, TestServer, assert_invalid, id_of};
use reqwest::Method;
use serde_json::{Value, json};

/// Sends `body` to `path` twice with `key` and checks that the second answer
/// is the first, and that one resource and its events were written once.
async fn replays(server: &TestServer, c: &Client, path: &str, key: &str, body: Value) -> Value {
    let before = server.counts().await;
    let events_before = c.event_count().await;
    let first = c.post_idem(path, key, body.clone()).await;
    assert_eq!(first.0, 201, "{path}: {}", first.1);
    let after_first = server.counts().await;
    let events = c.events_since(events_before).await;
    let second = c.post_idem(path, key, body.clone()).await;
    assert_eq!(second, first, "{path}: the replay is the first response");
    assert_eq!(
        server.counts().await,
        after_first,
        "{path}: the replay wrote nothing"
    );
    assert_eq!(c.events_since(events_before).await, events);
    assert_ne!(before, after_first);
    first.1
}

#[tokio::test]
async fn same_key_and_body_replays_the_first_response() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;

    let contact = replays(
        &server,
        &c,
        "/v1/contacts",
        "contact-1",
        json!({"username": "kevin", "phone_number": "123"}),
    )
    .await;
    assert_eq!(server.count("contacts").await, 1);
    let conv = replays(
        &server,
        &c,
        "/v1/conversations",
        "conversation-1",
        json!({"contact_id": id_of(&contact)}),
    )
    .await;
    assert_eq!(server.count("conversations").await, 1);
    replays(
        &server,
        &c,
        "/v1/messages",
        "message-1",
        json!({"conversation_id": id_of(&conv), "message": "hi"}),
    )
    .await;
    assert_eq!(server.count("messages").await, 1);
    replays(
        &server,
        &c,
        "/v1/groups",
        "group-1",
        json!({"name": "family", "contacts": [id_of(&contact)]}),
    )
    .await;
    assert_eq!(server.count("groups").await, 1);
    let types: Vec<String> = c
        .events()
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "contact.created",
            "conversation.created",
            "contact.updated",
            "message.created",
            "group.created"
        ]
    );

    // A third try, and one after the resource is gone, still replay.
    let third = c
        .post_idem(
            "/v1/contacts",
            "contact-1",
            json!({"username": "kevin", "phone_number": "123"}),
        )
        .await;
    assert_eq!(third, (201, contact.clone()));
    let (status, _) = c
        .delete(&format!(
            "/v1/groups/{}",
            id_of(&c.list_all("/v1/groups").await[0])
        ))
        .await;
    assert_eq!(status, 200);
    let before = server.counts().await;
    let (status, again) = c
        .post_idem(
            "/v1/groups",
            "group-1",
            json!({"name": "family", "contacts": [id_of(&contact)]}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(server.counts().await, before, "a replay never recreates");
    assert_eq!(server.count("groups").await, 0, "{again}");
}

#[tokio::test]
async fn same_key_with_a_different_request_is_422() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let first = c
        .post_idem(
            "/v1/contacts",
            "k",
            json!({"username": "kevin", "phone_number": "123"}),
        )
        .await;
    assert_eq!(first.0, 201);
    let before = server.counts().await;
    for (path, body) in [
        (
            "/v1/contacts",
            json!({"username": "marv", "phone_number": "123"}),
        ),
        (
            "/v1/contacts",
            json!({"username": "kevin", "phone_number": "1234"}),
        ),
        ("/v1/groups", json!({"name": "family"})),
    ] {
        let got = c.post_idem(path, "k", body).await;
        assert_invalid(&got, 422);
        assert!(
            got.1["message"]
                .as_str()
                .unwrap()
                .contains("Idempotency-Key"),
            "{}",
            got.1
        );
    }
    assert_eq!(server.counts().await, before);
    // The original still replays.
    let again = c
        .post_idem(
            "/v1/contacts",
            "k",
            json!({"username": "kevin", "phone_number": "123"}),
        )
        .await;
    assert_eq!(again, first);
}

#[tokio::test]
async fn a_rejected_request_does_not_use_up_its_key() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let bad = c
        .post_idem(
            "/v1/contacts",
            "k",
            json!({"username": "", "phone_number": "123"}),
        )
        .await;
    assert_invalid(&bad, 422);
    let (status, body) = c
        .post_idem(
            "/v1/contacts",
            "k",
            json!({"username": "kevin", "phone_number": "123"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(server.count("contacts").await, 1);
}

#[tokio::test]
async fn keys_are_per_account() {
    let server = TestServer::start().await;
    let a = server.account("a").await;
    let b = server.account("b").await;
    let body = json!({"username": "kevin", "phone_number": "123"});
    let (sa, ca) = a.post_idem("/v1/contacts", "shared", body.clone()).await;
    let (sb, cb) = b.post_idem("/v1/contacts", "shared", body.clone()).await;
    assert_eq!((sa, sb), (201, 201), "{ca} {cb}");
    assert_ne!(id_of(&ca), id_of(&cb));
    assert_eq!(server.count_for("contacts", &a.account_id).await, 1);
    assert_eq!(server.count_for("contacts", &b.account_id).await, 1);
    // And a different body under the same key in the other account is fine.
    let (status, _) = b
        .post_idem("/v1/groups", "shared-2", json!({"name": "g"}))
        .await;
    assert_eq!(status, 201);
    let (status, _) = a
        .post_idem(
            "/v1/contacts",
            "shared-2",
            json!({"username": "marv", "phone_number": "123"}),
        )
        .await;
    assert_eq!(status, 201);
    // Replays stay in their account.
    assert_eq!(
        a.post_idem("/v1/contacts", "shared", body.clone()).await,
        (201, ca)
    );
    assert_eq!(b.post_idem("/v1/contacts", "shared", body).await, (201, cb));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_create_one_resource() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let conv = c.conversation("kevin").await;
    let body = json!({"conversation_id": id_of(&conv), "message": "only once"});
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let c = c.clone();
            let body = body.clone();
            tokio::spawn(async move { c.post_idem("/v1/messages", "race", body).await })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    for r in &replies {
        assert_eq!(r, &replies[0], "every request gets the same answer");
    }
    assert_eq!(replies[0].0, 201, "{}", replies[0].1);
    assert_eq!(server.count("messages").await, 1);
    let created = c.list_all("/v1/events?type=message.created").await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["payload"], replies[0].1);
}

/// A multipart body with a fixed boundary, so that a retry is byte-identical.
fn multipart(message_id: &str, filename: &str, data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "------------------------notifly-test-boundary";
    let mut body = Vec::new();
    body.extend(
        format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"message_id\"\r\n\r\n{message_id}\r\n--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\ncontent-type: text/plain\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend(data);
    body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn idempotent_attachment_uploads() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let conv = c.conversation("kevin").await;
    let msg = c.message(id_of(&conv), "files").await;
    let mid = id_of(&msg).to_owned();

    let send = |key: &'static str, filename: &'static str, data: &'static [u8]| {
        let c = c.clone();
        let mid = mid.clone();
        async move {
            let (ct, body) = multipart(&mid, filename, data);
            c.send(
                c.request(Method::POST, "/v1/attachments")
                    .header("idempotency-key", key)
                    .header("content-type", ct)
                    .body(body),
            )
            .await
        }
    };
    let mark = c.event_count().await;
    let first = send("upload-1", "a.txt", b"hello").await;
    assert_eq!(first.0, 201, "{}", first.1);
    let second = send("upload-1", "a.txt", b"hello").await;
    assert_eq!(second, first);
    assert_eq!(server.count("attachments").await, 1);
    assert_eq!(server.attachment_files(), 1);
    let types: Vec<String> = c
        .events_since(mark)
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(types, ["attachment.created", "message.updated"]);

    // The same key with another file is refused, and stores nothing.
    let before = server.counts().await;
    let other = send("upload-1", "a.txt", b"HELLO").await;
    assert_invalid(&other, 422);
    let other = send("upload-1", "b.txt", b"hello").await;
    assert_invalid(&other, 422);
    assert_eq!(server.counts().await, before);
    assert_eq!(server.attachment_files(), 1);
}

/// A client that retries an upload builds its form again, and multipart
/// encoders pick a new random boundary each time: the retry carries the same
/// fields and file, so it must replay, not be refused or stored twice.
#[tokio::test]
async fn idempotent_upload_retried_with_a_new_multipart_boundary() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let conv = c.conversation("kevin").await;
    let msg = c.message(id_of(&conv), "files").await;
    let first = c
        .upload_idem("retry", id_of(&msg), "a.txt", "text/plain", b"hello")
        .await;
    assert_eq!(first.0, 201, "{}", first.1);
    let second = c
        .upload_idem("retry", id_of(&msg), "a.txt", "text/plain", b"hello")
        .await;
    assert_eq!(second, first);
    assert_eq!(server.count("attachments").await, 1);
    assert_eq!(server.attachment_files(), 1);
}

#[tokio::test]
async fn malformed_idempotency_keys_are_400() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let body = json!({"username": "kevin", "phone_number": "123"});
    let before = server.counts().await;
    for key in ["", "has space", &"k".repeat(256), "tab\there", "é"] {
        let rb = c
            .request(Method::POST, "/v1/contacts")
            .header(
                "idempotency-key",
                reqwest::header::HeaderValue::from_bytes(key.as_bytes()).unwrap(),
            )
            .json(&body);
        let got = c.send(rb).await;
        assert_invalid(&got, 400);
        assert!(
            got.1["message"]
                .as_str()
                .unwrap()
                .contains("Idempotency-Key"),
            "{}",
            got.1
        );
    }
    assert_eq!(server.counts().await, before);
    // 255 printable characters are fine.
    let (status, _) = c.post_idem("/v1/contacts", &"k".repeat(255), body).await;
    assert_eq!(status, 201);
}
