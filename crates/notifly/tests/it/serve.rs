//! `notifly serve` and `notifly accounts create` as a user runs them: the
//! first start bootstraps an account and prints its key, more accounts can be
//! created beside a running server, and SIGTERM stops the server cleanly.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, wait_ready};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_notifly");

/// `notifly serve` as a new user runs it: in `dir` with the defaults (so the
/// database is `./notifly.db`), on `port`, with `extra` arguments.
fn serve_in(dir: &Path, port: u16, extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .current_dir(dir)
        .env_remove("NOTIFLY_DATABASE_URL")
        .env_remove("NOTIFLY_ALLOW_PRIVATE_URLS")
        .env("NOTIFLY_LOG", "warn");
    c
}

/// Reads `serve`'s standard output up to the API key a first start prints.
fn printed_key(server: &mut Child) -> String {
    let lines = BufReader::new(server.stdout.take().unwrap()).lines();
    for line in lines {
        if let Some(key) = line.unwrap().trim().strip_prefix("nfly_sk_") {
            return format!("nfly_sk_{key}");
        }
    }
    panic!("serve printed no API key");
}

async fn status(url: &str, key: &str) -> u16 {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn first_start_bootstraps_an_account_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The defaults: a SQLite file and a data directory in the working directory.
    let mut server = serve_in(dir.path(), port, &[])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let key = printed_key(&mut server);
    assert!(
        dir.path().join("notifly.db").exists(),
        "the default database is ./notifly.db"
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;
    assert_eq!(status(&format!("{base}/v1/contacts"), &key).await, 200);
    assert_eq!(
        status(&format!("{base}/v1/contacts"), "nfly_sk_nope").await,
        401
    );

    // A second account, created against the same default database while the
    // server runs, works at once.
    let out = Command::new(BIN)
        .args(["accounts", "create", "--name", "acme", "--json"])
        .current_dir(dir.path())
        .env_remove("NOTIFLY_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let account: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(account["name"], "acme");
    assert_eq!(account["id"].as_str().unwrap().len(), 16);
    let second = account["api_key"].as_str().unwrap();
    assert_eq!(status(&format!("{base}/v1/contacts"), second).await, 200);

    // A restart does not bootstrap again.
    let pid = server.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = server.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(exit.success(), "serve exited with {exit:?} on SIGTERM");
    let mut again = serve_in(dir.path(), port, &[])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(&client, &base).await;
    assert_eq!(status(&format!("{base}/v1/contacts"), &key).await, 200);
    again.kill().unwrap();
    let out = again.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !printed.contains("nfly_sk_"),
        "a restart must not print a new key: {printed}"
    );
}

#[test]
fn a_config_file_with_an_unknown_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("notifly.toml"),
        "listen = \"127.0.0.1:0\"\nretry_shcedule = \"0s\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve"])
        .current_dir(dir.path())
        .env_remove("NOTIFLY_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("notifly.toml") && err.contains("retry_shcedule"),
        "{err}"
    );
}

#[tokio::test]
async fn dev_mode_allows_loopback_webhooks_and_says_so_in_a_plain_log() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = serve_in(dir.path(), port, &["--dev"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let key = printed_key(&mut server);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;
    let created = client
        .post(format!("{base}/v1/webhooks"))
        .bearer_auth(&key)
        .json(&serde_json::json!({
            "name": "my app", "url": "http://localhost:3000/webhooks", "events": ["*"]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());

    server.kill().unwrap();
    let out = server.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("development mode"),
        "the log says it runs in development mode: {log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "a log that is not a terminal has no colour codes: {log:?}"
    );
}

#[test]
fn help_shows_no_empty_environment_values() {
    for args in [
        &["serve", "--help"][..],
        &["listen", "--help"],
        &["trigger", "--help"],
        &["accounts", "create", "--help"],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .env_remove("NOTIFLY_URL")
            .env_remove("NOTIFLY_API_KEY")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("[env: NOTIFLY_"), "{args:?}: {help}");
        assert!(
            !help.contains("=]"),
            "{args:?} shows an empty value: {help}"
        );
    }
}

#[tokio::test]
async fn a_second_server_on_the_same_sqlite_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut first = serve_in(dir.path(), port, &[])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;
    let second = serve_in(dir.path(), free_port(), &[]).output().unwrap();
    assert!(!second.status.success(), "a second server started");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("already serving") && err.contains("notifly.db"),
        "it says why: {err}"
    );
    assert!(
        reqwest::get(format!("{base}/readyz")).await.is_ok(),
        "the first server goes on"
    );
    first.kill().unwrap();
    first.wait().unwrap();

    // Once the first is gone (even killed), a server starts again at once.
    let mut again = serve_in(dir.path(), port, &[])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(&client, &base).await;
    again.kill().unwrap();
    again.wait().unwrap();
}

/// Webhook secrets and private keys appear in no log line (at `debug`, with
/// deliveries, a rotation and a secret shown) and in no metric; the first
/// start says where it made the encryption key.
#[tokio::test]
async fn no_secret_reaches_the_log_or_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut server = serve_in(dir.path(), port, &["--dev"])
        .env("NOTIFLY_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let key = printed_key(&mut server);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;
    let api = |method: reqwest::Method, path: &str| {
        client
            .request(method, format!("{base}{path}"))
            .bearer_auth(&key)
    };

    // Two webhooks (one per scheme) at a port nothing listens on, so every
    // delivery is signed, attempted and fails with a logged error.
    let mut secrets = Vec::new();
    for scheme in ["hmac-sha256", "ed25519"] {
        let created: Value = api(reqwest::Method::POST, "/v1/webhooks")
            .json(
                &serde_json::json!({"name": scheme, "url": "http://127.0.0.1:9/", "events": ["*"],
                                      "signature_scheme": scheme}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["id"].as_str().unwrap().to_owned();
        secrets.push(created["secret"].as_str().unwrap().to_owned());
        let rotated: Value = api(
            reqwest::Method::POST,
            &format!("/v1/webhooks/{id}/secret/rotate"),
        )
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        secrets.push(rotated["secret"].as_str().unwrap().to_owned());
    }
    let created = api(reqwest::Method::POST, "/v1/contacts")
        .json(&serde_json::json!({"username": "kevin", "phone_number": "1-800-759-3000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // Wait until both first attempts are recorded.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let attempts: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("notifly_delivery_attempts_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if attempts >= 2.0 {
            for s in &secrets {
                assert!(!metrics.contains(s.as_str()), "a secret in /metrics");
            }
            assert!(!metrics.contains("whsec_") && !metrics.contains("whsk_"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no attempts were recorded:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    server.wait().unwrap();

    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(
        log.contains("encryption.key"),
        "the log says where the key is:\n{log}"
    );
    assert!(log.contains("delivery"),);
    let encryption_key =
        std::fs::read_to_string(dir.path().join("notifly-data/encryption.key")).unwrap();
    for needle in secrets
        .iter()
        .map(String::as_str)
        .chain([encryption_key.trim()])
    {
        assert!(!log.contains(needle), "the log holds {needle}:\n{log}");
    }
    // Nor any other secret or private key (the schema's comments name the
    // prefixes, followed by no key).
    for prefix in ["whsec_", "whsk_"] {
        for (at, _) in log.match_indices(prefix) {
            let next = log[at + prefix.len()..].chars().next();
            assert!(
                !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/'),
                "the log holds a key: {}",
                &log[at..(at + 60).min(log.len())]
            );
        }
    }
}

#[test]
fn a_port_in_use_says_how_to_pick_another() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = serve_in(dir.path(), port, &[]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already in use")
            && err.contains("--listen")
            && err.contains("NOTIFLY_LISTEN"),
        "{err}"
    );
}
