//! The verification examples in `docs/examples/` receive real deliveries, so
//! the documentation stays true: each prints one JSON line per request it
//! verified (or refused).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::common::Client;
use crate::common::delivery_helpers as helpers;
use helpers::DEADLINE;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples")
}

/// A documented receiver, run with the webhook's secret; killed when dropped.
struct Example {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    port: u16,
}

impl Example {
    async fn start(program: &str, script: &str, secret: &str) -> Example {
        let variable = if secret.starts_with("whpk_") {
            "NOTIFLY_WEBHOOK_PUBLIC_KEY"
        } else {
            "NOTIFLY_WEBHOOK_SECRET"
        };
        let mut child = Command::new(program)
            .arg(examples().join(script))
            .env(variable, secret)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{program}` for docs/examples/{script}: {e}"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines
            .next_line()
            .await
            .unwrap()
            .expect("the example printed nothing");
        let port = serde_json::from_str::<Value>(&first).unwrap()["port"]
            .as_u64()
            .unwrap() as u16;
        Example {
            _child: child,
            lines,
            port,
        }
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(DEADLINE, self.lines.next_line())
            .await
            .expect("no line from the example in time")
            .unwrap()
            .expect("the example exited");
        serde_json::from_str(&line).unwrap()
    }
}

/// Registers a webhook (of `scheme`), starts the example with its secret (or
/// public key), points the webhook at it, then makes three kinds of events
/// happen and checks that the example verified each one and read its type.
async fn check(program: &str, script: &str, scheme: &str) {
    let server = helpers::server(|_| {}).await;
    let c: Client = server.account("docs").await;
    let (status, created) = c
        .post(
            "/v1/webhooks",
            json!({"name": "docs", "url": "http://127.0.0.1:9/placeholder", "events": ["*"],
                   "signature_scheme": scheme}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    // An ed25519 endpoint's receiver needs only its public key.
    let verifier = created["public_key"]
        .as_str()
        .or(created["secret"].as_str())
        .unwrap();
    let mut example = Example::start(program, script, verifier).await;
    let hook_id = created["id"].as_str().unwrap();
    let url = format!("http://127.0.0.1:{}/webhooks", example.port);
    let (status, _) = c
        .put(&format!("/v1/webhooks/{hook_id}"), json!({"url": url}))
        .await;
    assert_eq!(status, 200);

    let contact = c.contact("kevin").await;
    let expected = [("contact.created", contact["id"].clone())];
    for (t, payload_id) in expected {
        let line = example.next().await;
        assert_eq!(line["verified"], true, "{script}: {line}");
        assert_eq!(line["type"], t);
        assert_eq!(line["payload_id"], payload_id);
    }
    let conversation = c.conversation_with(contact["id"].as_str().unwrap()).await;
    let mut types = Vec::new();
    for _ in 0..2 {
        let line = example.next().await;
        assert_eq!(line["verified"], true, "{script}: {line}");
        types.push(line["type"].as_str().unwrap().to_owned());
    }
    types.sort();
    assert_eq!(types, ["contact.updated", "conversation.created"]);
    let message = c
        .message(conversation["id"].as_str().unwrap(), "I hate meetings.")
        .await;
    let line = example.next().await;
    assert_eq!(
        (
            line["type"].as_str(),
            line["resource"].as_str(),
            line["action"].as_str()
        ),
        (Some("message.created"), Some("message"), Some("created"))
    );
    assert_eq!(line["payload_id"], message["id"]);

    // A request signed with another secret is refused.
    let forged = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("webhook-id", "forged0000000000")
        .header("webhook-timestamp", "1795700000")
        .header("webhook-signature", "v1,AAAA")
        .header(
            "x-notifly-signature",
            notifly_webhooks::sign_hex("whsec_other", b"{}"),
        )
        .body("{}")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    assert_eq!(example.next().await["verified"], false);
}

#[tokio::test]
async fn the_node_example_verifies_real_deliveries() {
    check("node", "node/receiver.js", "hmac-sha256").await;
}

#[tokio::test]
async fn the_python_example_verifies_real_deliveries() {
    check("python3", "python/receiver.py", "hmac-sha256").await;
}

#[tokio::test]
async fn the_node_ed25519_example_verifies_real_deliveries() {
    check("node", "node/receiver-ed25519.js", "ed25519").await;
}

/// Needs Python's `cryptography` package (`.ci/run` installs it if missing).
#[tokio::test]
async fn the_python_ed25519_example_verifies_real_deliveries() {
    let found = std::process::Command::new("python3")
        .args(["-c", "import cryptography"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "docs/examples/python/receiver_ed25519.py needs Python's `cryptography` package: pip install cryptography"
    );
    check("python3", "python/receiver_ed25519.py", "ed25519").await;
}
