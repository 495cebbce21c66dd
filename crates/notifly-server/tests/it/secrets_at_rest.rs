//! Webhook signing secrets and private keys are sealed at rest: the database
//! holds none of them in the clear, plaintext ones from before are sealed at
//! start-up, a wrong or missing key stops the start-up with a clear error,
//! and keys rotate by listing the new one first. Deliveries to a real
//! receiver verify throughout.

use std::time::Duration;

use crate::common::delivery_helpers as helpers;
use crate::common::receiver;
use crate::common::{Client, TestServer, id_of};
use helpers::{DEADLINE, get_ok, webhook};
use notifly_server::config::EncryptionKeys;
use notifly_server::secrets::{KeySet, Keyring, Sealing};
use notifly_server::store::StoredKeys;
use notifly_webhooks::Webhook;
use receiver::Receiver;
use serde_json::{Value, json};

/// The key text the server runs with: configured, or its key file's.
fn key_of(server: &TestServer) -> String {
    match &server.config.encryption_key {
        Some(EncryptionKeys(keys)) => keys.clone(),
        None => std::fs::read_to_string(server.config.key_file())
            .unwrap()
            .trim()
            .to_owned(),
    }
}

async fn stored(server: &TestServer) -> Vec<StoredKeys> {
    server.store.endpoint_keys("", 1000).await.unwrap()
}

/// Waits for the next request to `path` and checks its signatures with
/// `secret` (both headers) or `public_key` (`webhook-signature`).
async fn verified(receiver: &Receiver, path: &str, n: usize, verifier: &str) -> Value {
    let got = receiver.wait_for_path(path, n, DEADLINE).await;
    let request = &got[n - 1];
    Webhook::new(verifier)
        .unwrap()
        .verify(&request.headers, &request.body)
        .unwrap_or_else(|e| panic!("delivery {n} to {path} did not verify: {e}"));
    request.json()
}

/// Every byte of the database that a copy of it would carry: the SQLite
/// file and its WAL, or PostgreSQL's endpoint rows as text.
async fn database_bytes(server: &TestServer) -> Vec<u8> {
    if server.config.database_url.starts_with("postgres") {
        let rows = stored(server).await;
        return format!(
            "{:?}",
            rows.iter()
                .map(|r| (&r.secret, &r.previous_secret, &r.headers))
                .collect::<Vec<_>>()
        )
        .into_bytes();
    }
    let path = server
        .config
        .database_url
        .trim_start_matches("sqlite://")
        .to_owned();
    let mut bytes = std::fs::read(&path).unwrap();
    if let Ok(wal) = std::fs::read(format!("{path}-wal")) {
        bytes.extend(wal);
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_holds_no_secret_and_deliveries_verify() {
    let receiver = Receiver::start().await;
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let hmac = webhook(&c, "hmac", &receiver.url("/hmac"), &["contact.created"]).await;
    let (status, ed) = c
        .post(
            "/v1/webhooks",
            json!({"name": "ed", "url": receiver.url("/ed"), "events": ["contact.created"],
                   "signature_scheme": "ed25519"}),
        )
        .await;
    assert_eq!(status, 201, "{ed}");
    let rotated = c
        .post(
            &format!("/v1/webhooks/{}/secret/rotate", hmac.id),
            json!({}),
        )
        .await
        .1;
    let token = "Bearer sealed-token-0123456789";
    let (status, body) = c
        .put(
            &format!("/v1/webhooks/{}", hmac.id),
            json!({"headers": {"Authorization": token}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let shown = get_ok(&c, &format!("/v1/webhooks/{}/secret", id_of(&ed))).await;
    c.contact("sealed").await;
    verified(&receiver, "/hmac", 1, rotated["secret"].as_str().unwrap()).await;
    let got = receiver.wait_for_path("/hmac", 1, DEADLINE).await;
    assert_eq!(got[0].header("authorization"), token);
    verified(&receiver, "/ed", 1, shown["public_key"].as_str().unwrap()).await;

    // Every stored key is sealed under the server's key...
    let keyring = Keyring::parse(&key_of(&server)).unwrap();
    let rows = stored(&server).await;
    assert_eq!(rows.len(), 2);
    for row in &rows {
        for text in std::iter::once(&row.secret)
            .chain(&row.previous_secret)
            .chain(&row.headers)
        {
            assert_eq!(keyring.sealing(text), Sealing::Current, "{row:?}");
        }
    }
    assert_eq!(rows.iter().filter(|r| r.headers.is_some()).count(), 1);
    // ...and no secret, private key or key prefix is anywhere in the database.
    let bytes = database_bytes(&server).await;
    let private = rows
        .iter()
        .map(|r| keyring.open_keys(&r.endpoint_id, &r.secret).unwrap())
        .find_map(|k| k.signing_key)
        .expect("the ed25519 endpoint has a private key");
    for needle in [
        hmac.secret.as_str(),
        rotated["secret"].as_str().unwrap(),
        shown["secret"].as_str().unwrap(),
        private.as_str(),
        "whsec_",
        "whsk_",
        "sealed-token",
    ] {
        assert!(!contains(&bytes, needle), "the database holds {needle}");
    }

    // The key file (SQLite's default) is the owner's alone.
    if server.config.encryption_key.is_none() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(server.config.key_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_secrets_are_sealed_at_start_up() {
    let receiver = Receiver::start().await;
    let mut server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let key = c.key.clone().unwrap();
    let hook = webhook(&c, "old", &receiver.url("/old"), &["contact.created"]).await;

    // As a database from before sealing holds it: the secret in the clear.
    let plain = KeySet {
        secret: hook.secret.clone(),
        signing_key: None,
    };
    let row = stored(&server).await.remove(0);
    let cleartext = StoredKeys {
        endpoint_id: row.endpoint_id.clone(),
        secret: plain.encode(),
        previous_secret: None,
        headers: None,
    };
    assert!(
        server
            .store
            .replace_endpoint_keys(&row, &cleartext)
            .await
            .unwrap()
    );
    // A stale `before` changes nothing.
    assert!(
        !server
            .store
            .replace_endpoint_keys(&row, &cleartext)
            .await
            .unwrap()
    );

    server.restart_with(|_| {}).await;
    let keyring = Keyring::parse(&key_of(&server)).unwrap();
    let row = stored(&server).await.remove(0);
    assert_eq!(keyring.sealing(&row.secret), Sealing::Current);
    assert_eq!(
        keyring.open_keys(&row.endpoint_id, &row.secret).unwrap(),
        plain
    );
    let c = server.with_key(&key);
    let shown = get_ok(&c, &format!("/v1/webhooks/{}/secret", hook.id)).await;
    assert_eq!(shown["secret"], hook.secret.as_str());
    c.contact("after-sealing").await;
    verified(&receiver, "/old", 1, &hook.secret).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_key_stops_the_start_up_with_a_clear_error() {
    let receiver = Receiver::start().await;
    let mut server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let key = c.key.clone().unwrap();
    let hook = webhook(&c, "h", &receiver.url("/h"), &["*"]).await;
    let right = key_of(&server);
    let right_id = Keyring::parse(&right).unwrap().ids()[0].to_owned();
    server.halt().await;

    let wrong = Keyring::generate_key();
    let mut config = server.config.clone();
    config.encryption_key = Some(EncryptionKeys(wrong));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = notifly_server::run(config, listener, std::future::pending())
        .await
        .expect_err("a server with the wrong key must not start");
    let text = format!("{err:#}");
    assert!(
        text.contains("encryption key") && text.contains(&right_id),
        "the error names the key the database needs: {text}"
    );
    assert!(!text.contains(&right), "{text}");

    // SQLite: the database copied without its key file yields no secret.
    if server.config.encryption_key.is_none() {
        let file = server.config.key_file();
        let saved = std::fs::read(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = notifly_server::run(server.config.clone(), listener, std::future::pending())
            .await
            .expect_err("a server without the key must not start");
        assert!(format!("{err:#}").contains(&right_id), "{err:#}");
        std::fs::write(&file, saved).unwrap();
    }

    // With the right key it starts and signs as before.
    server.restart_with(|_| {}).await;
    let c = server.with_key(&key);
    c.contact("right-key").await;
    verified(&receiver, "/h", 1, &hook.secret).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_by_listing_the_new_one_first() {
    let receiver = Receiver::start().await;
    let mut server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let key = c.key.clone().unwrap();
    let mut hooks = Vec::new();
    for n in 0..3 {
        hooks.push(
            webhook(
                &c,
                &format!("h{n}"),
                &receiver.url(&format!("/h{n}")),
                &["*"],
            )
            .await,
        );
    }
    // Custom headers are sealed too, and sealed again with the keys.
    let (status, body) = c
        .put(
            &format!("/v1/webhooks/{}", hooks[0].id),
            json!({"headers": {"X-Api-Key": "k-0123456789abcdef"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let old = key_of(&server);
    let new = Keyring::generate_key();

    // New first, old after: the server starts, and seals every row again
    // under the new key in the background.
    let both = format!("{new},{old}");
    server
        .restart_with(|c| c.encryption_key = Some(EncryptionKeys(both.clone())))
        .await;
    let new_only = Keyring::parse(&new).unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let rows = stored(&server).await;
        if rows.iter().all(|r| {
            std::iter::once(&r.secret)
                .chain(&r.headers)
                .all(|t| new_only.sealing(t) == Sealing::Current)
        }) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rows were not sealed again under the new key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The old key can go; the secrets are the same ones.
    server
        .restart_with(|c| c.encryption_key = Some(EncryptionKeys(new.clone())))
        .await;
    let c: Client = server.with_key(&key);
    for hook in &hooks {
        let shown = get_ok(&c, &format!("/v1/webhooks/{}/secret", hook.id)).await;
        assert_eq!(shown["secret"], hook.secret.as_str());
    }
    c.contact("rotated").await;
    for (n, hook) in hooks.iter().enumerate() {
        verified(&receiver, &format!("/h{n}"), 1, &hook.secret).await;
    }
    let got = receiver.wait_for_path("/h0", 1, DEADLINE).await;
    assert_eq!(got[0].header("x-api-key"), "k-0123456789abcdef");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_open_the_keys_sends_nothing_and_spends_no_retry() {
    let receiver = Receiver::start().await;
    let server = helpers::server(|c| c.retry_schedule = "0s,100ms".to_owned()).await;
    let c = server.account("acme").await;
    let hook = webhook(&c, "h", &receiver.url("/h"), &["*"]).await;

    // As if another node, with a key this one lacks, had sealed them again.
    let row = stored(&server).await.remove(0);
    let foreign = Keyring::parse(&Keyring::generate_key()).unwrap();
    let resealed = StoredKeys {
        endpoint_id: row.endpoint_id.clone(),
        secret: foreign.seal_keys(
            &row.endpoint_id,
            &KeySet {
                secret: hook.secret.clone(),
                signing_key: None,
            },
        ),
        previous_secret: None,
        headers: None,
    };
    assert!(
        server
            .store
            .replace_endpoint_keys(&row, &resealed)
            .await
            .unwrap()
    );

    c.contact("unsigned").await;
    let d = helpers::wait_deliveries(&c, &hook.id, 1, "pending").await;
    let id = d[0]["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let d = loop {
        let d = helpers::delivery(&c, &id).await;
        if d["attempts"].as_i64() == Some(1) {
            break d;
        }
        assert!(tokio::time::Instant::now() < deadline, "no attempt: {d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Recorded, with why; not sent; still pending, a minute on, with the
    // whole retry schedule left (a 100 ms retry would have come by now).
    let error = d["attempt_log"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("cannot open the endpoint's signing keys"),
        "{d}"
    );
    assert!(error.contains(foreign.ids()[0]), "names the key: {d}");
    assert_eq!(d["status"], "pending", "{d}");
    assert!(
        d["next_attempt_at"].as_i64().unwrap() >= helpers::now() + 50,
        "{d}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), 0);
    assert_eq!(helpers::delivery(&c, &id).await["attempts"], 1);
}
