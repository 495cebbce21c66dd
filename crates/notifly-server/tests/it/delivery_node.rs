//! Real deliveries verified by code we did not write: a Node receiver
//! (`tests/node/verify-receiver.js`) checks every request with the guide's
//! snippet, unchanged, and with the `standardwebhooks` npm library, also
//! through a secret rotation.
//!
//! Needs `node` and `npm ci` run once in `crates/notifly-server/tests/node`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;

use crate::common;
use crate::common::delivery_helpers as helpers;
use crate::common::{Client, id_of};
use helpers::{DEADLINE, header_in, wait_deliveries, webhook};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const SETUP: &str = "these tests need Node.js 18 or later with npm on PATH; the npm packages install themselves (`npm ci` in crates/notifly-server/tests/node)";

/// The Node verifier, killed when dropped.
struct NodeReceiver {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    port: u16,
    secret_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl NodeReceiver {
    async fn start() -> NodeReceiver {
        match std::process::Command::new("node").arg("--version").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!("`node --version` failed ({:?}): {SETUP}", out.status),
            Err(e) => panic!("cannot run `node` ({e}): {SETUP}"),
        }
        let node_dir = common::node::dir();
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("secrets");
        std::fs::write(&secret_file, "").unwrap();
        let mut child = Command::new("node")
            .arg("verify-receiver.js")
            .arg(&secret_file)
            .current_dir(&node_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node verify-receiver.js ({e}): {SETUP}"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("the Node receiver did not print its port")
            .unwrap()
            .unwrap_or_else(|| panic!("the Node receiver exited at start: {SETUP}"));
        let port = serde_json::from_str::<Value>(&first).unwrap()["port"]
            .as_u64()
            .unwrap_or_else(|| panic!("no port in {first}")) as u16;
        NodeReceiver {
            _child: child,
            lines,
            port,
            secret_file,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/webhooks", self.port)
    }

    /// The secrets the receiver checks each request with, in this order.
    fn use_secrets(&self, secrets: &[&str]) {
        std::fs::write(&self.secret_file, secrets.join("\n") + "\n").unwrap();
    }

    /// The next request's verdict: `{"id", "guide": [bool per secret],
    /// "standard": [bool per secret]}`.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(DEADLINE, self.lines.next_line())
            .await
            .expect("no request reached the Node receiver in time")
            .unwrap()
            .expect("the Node receiver exited");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

/// Sends a test event of `event_type` to the webhook; returns the delivery id.
async fn test_event(c: &Client, webhook_id: &str, event_type: &str) -> String {
    let (status, body) = c
        .post(
            &format!("/v1/webhooks/{webhook_id}/test"),
            json!({"type": event_type}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    id_of(&body).to_owned()
}

/// Rotates a webhook's secret; `body` `None` sends no body at all.
async fn rotate(c: &Client, webhook_id: &str, body: Option<Value>) -> Value {
    let path = format!("/v1/webhooks/{webhook_id}/secret/rotate");
    let rb = c.request(Method::POST, &path);
    let rb = match body {
        Some(b) => rb.json(&b),
        None => rb,
    };
    let (status, got) = c.send(rb).await;
    assert_eq!(status, 200, "rotate: {got}");
    got
}

/// How many `v1,` entries the `webhook-signature` header of a delivery's
/// first attempt had, once the delivery succeeded.
async fn signature_entries(c: &Client, delivery_id: &str) -> usize {
    let d = helpers::wait_delivery(c, delivery_id, "succeeded").await;
    let header = header_in(
        &d["attempt_log"][0]["request"]["headers"],
        "webhook-signature",
    )
    .expect("a webhook-signature header")
    .to_owned();
    header.split(' ').count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_verifies_with_the_guide_snippet_and_standard_webhooks() {
    let mut node = NodeReceiver::start().await;
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let hook = webhook(&c, "node", &node.url(), &["*"]).await;
    node.use_secrets(&[&hook.secret]);

    // Events of every resource kind and action, with real payloads (unicode,
    // nested objects) produced by the API.
    let contact = c.contact("zoë").await;
    let conversation = c.conversation_with(id_of(&contact)).await;
    let message = c
        .message(id_of(&conversation), "héllo \"world\" </script> 😀\n")
        .await;
    let (status, body) = c
        .put(
            &format!("/v1/messages/{}", id_of(&message)),
            json!({"message": "edited ✓"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    c.attachment(id_of(&message), "notes.txt").await;
    let group = c.group("crew", &[id_of(&contact)]).await;
    let (status, body) = c.delete(&format!("/v1/groups/{}", id_of(&group))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = c.delete(&format!("/v1/messages/{}", id_of(&message))).await;
    assert_eq!(status, 200, "{body}");

    let events = c.events().await;
    let types: BTreeSet<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for t in [
        "contact.created",
        "conversation.created",
        "message.created",
        "message.updated",
        "message.deleted",
        "attachment.created",
        "group.created",
        "group.deleted",
    ] {
        assert!(types.contains(t), "no {t} event: {types:?}");
    }

    let mut seen = BTreeSet::new();
    for _ in 0..events.len() {
        let verdict = node.next().await;
        assert_eq!(
            verdict["guide"],
            json!([true]),
            "the guide's snippet rejected {verdict}"
        );
        assert_eq!(
            verdict["standard"],
            json!([true]),
            "standardwebhooks rejected {verdict}"
        );
        seen.insert(verdict["id"].as_str().unwrap().to_owned());
    }
    let want: BTreeSet<String> = events.iter().map(|e| id_of(e).to_owned()).collect();
    assert_eq!(seen, want, "every event was delivered once");
    wait_deliveries(&c, &hook.id, events.len(), "succeeded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_rotation_keeps_every_delivery_verifiable() {
    let mut node = NodeReceiver::start().await;
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let hook = webhook(&c, "node", &node.url(), &["*"]).await;
    let old = hook.secret.clone();
    node.use_secrets(&[&old]);
    let id = test_event(&c, &hook.id, "contact.updated").await;
    let v = node.next().await;
    assert_eq!(
        (&v["guide"], &v["standard"]),
        (&json!([true]), &json!([true])),
        "{v}"
    );
    assert_eq!(signature_entries(&c, &id).await, 1);

    // Rotate with the default overlap window: both secrets are live.
    let rotated = rotate(&c, &hook.id, None).await;
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert!(new.starts_with("whsec_") && new != old, "{rotated}");
    assert_eq!(rotated["previous_secret"], old.as_str());
    assert!(
        rotated["previous_secret_expires_at"]
            .as_i64()
            .is_some_and(|t| t > helpers::now()),
        "{rotated}"
    );
    let shown = helpers::get_ok(&c, &format!("/v1/webhooks/{}/secret", hook.id)).await;
    assert_eq!(shown, rotated);

    // A consumer that accepts the old and the new secret verifies everything;
    // the guide's single-secret check still passes with the old one, and
    // Standard Webhooks with either.
    node.use_secrets(&[&old, &new]);
    for event_type in ["message.created", "group.updated", "attachment.deleted"] {
        let id = test_event(&c, &hook.id, event_type).await;
        let v = node.next().await;
        assert_eq!(v["guide"], json!([true, false]), "{event_type}: {v}");
        assert_eq!(v["standard"], json!([true, true]), "{event_type}: {v}");
        assert_eq!(
            signature_entries(&c, &id).await,
            2,
            "one entry per live secret"
        );
    }

    // Rotating with no overlap: only the newest secret signs either header.
    let rotated = rotate(&c, &hook.id, Some(json!({"overlap_seconds": 0}))).await;
    let newest = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(newest, new);
    assert_eq!(rotated["previous_secret"], Value::Null, "{rotated}");
    assert_eq!(
        rotated["previous_secret_expires_at"],
        Value::Null,
        "{rotated}"
    );
    node.use_secrets(&[&newest, &new, &old]);
    let id = test_event(&c, &hook.id, "conversation.deleted").await;
    let v = node.next().await;
    assert_eq!(v["guide"], json!([true, false, false]), "{v}");
    assert_eq!(v["standard"], json!([true, false, false]), "{v}");
    assert_eq!(signature_entries(&c, &id).await, 1);

    // And a real write, not only test events.
    node.use_secrets(&[&newest]);
    c.contact("after-rotation").await;
    let v = node.next().await;
    assert_eq!(
        (&v["guide"], &v["standard"]),
        (&json!([true]), &json!([true])),
        "{v}"
    );

    // Out-of-range overlap windows are refused.
    for overlap in [-1, 8 * 24 * 60 * 60] {
        let (status, body) = c
            .post(
                &format!("/v1/webhooks/{}/secret/rotate", hook.id),
                json!({"overlap_seconds": overlap}),
            )
            .await;
        common::assert_invalid(&(status, body), 422);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_endpoints_sign_v1a_that_node_crypto_verifies_through_a_rotation() {
    let mut node = NodeReceiver::start().await;
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let (status, created) = c
        .post(
            "/v1/webhooks",
            json!({"name": "ed", "url": node.url(), "events": ["*"], "signature_scheme": "ed25519"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["signature_scheme"], "ed25519");
    let secret = created["secret"].as_str().unwrap().to_owned();
    let public = created["public_key"].as_str().unwrap().to_owned();
    assert!(public.starts_with("whpk_"), "{created}");
    let shown = helpers::get_ok(&c, &format!("/v1/webhooks/{}/secret", id_of(&created))).await;
    assert_eq!(shown["secret"], secret.as_str());
    assert_eq!(shown["public_key"], public.as_str());
    let listed = helpers::get_ok(&c, &format!("/v1/webhooks/{}", id_of(&created))).await;
    assert_eq!(listed["signature_scheme"], "ed25519");
    assert!(listed.get("public_key").is_none(), "{listed}");

    // The guide's header still verifies with the secret; webhook-signature
    // is v1a only, so the HMAC library finds nothing and Node's Ed25519
    // check passes with the public key.
    node.use_secrets(&[&secret, &public]);
    c.contact("ed-one").await;
    let v = node.next().await;
    assert_eq!(v["guide"], json!([true, null]), "{v}");
    assert_eq!(v["standard"], json!([false, true]), "{v}");
    let id = test_event(&c, id_of(&created), "message.created").await;
    node.next().await;
    let d = helpers::wait_delivery(&c, &id, "succeeded").await;
    let request = &d["attempt_log"][0]["request"];
    let header = header_in(&request["headers"], "webhook-signature").unwrap();
    assert!(
        header.starts_with("v1a,") && !header.contains(' '),
        "{header}"
    );

    // The Rust crate verifies the same request with the public key.
    let verifier = notifly_webhooks::Webhook::new(&public).unwrap();
    verifier
        .verify_standard(
            request["body"].as_str().unwrap().as_bytes(),
            header_in(&request["headers"], "webhook-id"),
            header_in(&request["headers"], "webhook-timestamp"),
            Some(header),
            std::time::SystemTime::now(),
        )
        .unwrap();

    // A rotation makes a new key pair; during the overlap window both keys sign.
    let rotated = rotate(&c, id_of(&created), None).await;
    let new_public = rotated["public_key"].as_str().unwrap().to_owned();
    assert_ne!(new_public, public);
    assert_eq!(rotated["previous_public_key"], public.as_str(), "{rotated}");
    node.use_secrets(&[&public, &new_public]);
    let id = test_event(&c, id_of(&created), "group.updated").await;
    let v = node.next().await;
    assert_eq!(v["standard"], json!([true, true]), "{v}");
    assert_eq!(signature_entries(&c, &id).await, 2);

    // Back to hmac-sha256: the key pair goes, the secret stays.
    let (status, body) = c
        .put(
            &format!("/v1/webhooks/{}", id_of(&created)),
            json!({"signature_scheme": "hmac-sha256"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["signature_scheme"], "hmac-sha256");
    let shown = helpers::get_ok(&c, &format!("/v1/webhooks/{}/secret", id_of(&created))).await;
    assert_eq!(shown["public_key"], Value::Null, "{shown}");
    let current = shown["secret"].as_str().unwrap().to_owned();
    node.use_secrets(&[&current]);
    rotate(&c, id_of(&created), Some(json!({"overlap_seconds": 0}))).await;
    let shown = helpers::get_ok(&c, &format!("/v1/webhooks/{}/secret", id_of(&created))).await;
    node.use_secrets(&[shown["secret"].as_str().unwrap()]);
    c.contact("hmac-again").await;
    let v = node.next().await;
    assert_eq!(
        (&v["guide"], &v["standard"]),
        (&json!([true]), &json!([true])),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_scheme_is_refused_naming_the_field_and_changes_nothing() {
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    for bad in [json!("rsa"), json!(""), json!(5), json!("ED25519")] {
        let (status, body) = c
            .post(
                "/v1/webhooks",
                json!({"name": "x", "url": "http://127.0.0.1:9/", "events": ["*"], "signature_scheme": bad}),
            )
            .await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("signature_scheme"),
            "{bad}: {body}"
        );
    }
    assert!(c.list_all("/v1/webhooks").await.is_empty());
    let hook = webhook(&c, "y", "http://127.0.0.1:9/", &["*"]).await;
    for bad in [json!(null), json!("rsa")] {
        let (status, body) = c
            .put(
                &format!("/v1/webhooks/{}", hook.id),
                json!({"signature_scheme": bad}),
            )
            .await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("signature_scheme"),
            "{bad}: {body}"
        );
    }
    let shown = helpers::get_ok(&c, &format!("/v1/webhooks/{}/secret", hook.id)).await;
    assert_eq!(shown["secret"], hook.secret.as_str());
    assert_eq!(shown["public_key"], Value::Null);
}
