//! `notifly listen` and `notifly trigger`, driving the real binary against a
//! real server process and a real local receiver.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use notifly_webhooks::{StandardSecret, verify_hex};
use serde_json::Value;

#[path = "../../../notifly-server/tests/it/common/event_schemas.rs"]
mod event_schemas;
use event_schemas::EventSchemas;

const BIN: &str = env!("CARGO_BIN_EXE_notifly");

#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<(HeaderMap, Bytes)>>>);

async fn record(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> StatusCode {
    inbox.0.lock().unwrap().push((headers, body));
    StatusCode::OK
}

impl Inbox {
    async fn start() -> (Inbox, String) {
        let inbox = Inbox::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/hooks", post(record))
            .with_state(inbox.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (inbox, url)
    }

    fn ids(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(h, _)| h["webhook-id"].to_str().unwrap().to_owned())
            .collect()
    }

    async fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.0.lock().unwrap().len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} forwards arrived",
                self.0.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

struct Server {
    child: Child,
    db: String,
    dir: tempfile::TempDir,
    port: u16,
    key: String,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("notifly.db").display());
        let out = Command::new(BIN)
            .args([
                "accounts",
                "create",
                "--name",
                "cli",
                "--json",
                "--database",
                &db,
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        let key = serde_json::from_slice::<Value>(&out.stdout).unwrap()["api_key"]
            .as_str()
            .unwrap()
            .to_owned();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Self::spawn(&db, dir.path(), port);
        let server = Server {
            child,
            db,
            dir,
            port,
            key,
        };
        server.wait_ready().await;
        server
    }

    fn spawn(db: &str, dir: &std::path::Path, port: u16) -> Child {
        Command::new(BIN)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database",
                db,
            ])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("NOTIFLY_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", self.url())).await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "server not ready");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn client(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("NOTIFLY_URL", self.url())
            .env("NOTIFLY_API_KEY", &self.key)
            // `listen` remembers its session secret here, not in the real home.
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env_remove("NOTIFLY_LISTEN_SECRET")
            .env_remove("RUST_BACKTRACE");
        c
    }

    fn trigger(&self, event_type: &str) -> std::process::Output {
        self.client(&["trigger", event_type]).output().unwrap()
    }

    /// Every event id in the account's log.
    async fn event_ids(&self) -> HashSet<String> {
        let client = reqwest::Client::new();
        let mut ids = HashSet::new();
        let mut after: Option<String> = None;
        loop {
            let mut url = format!("{}/v1/events?limit=100", self.url());
            if let Some(a) = &after {
                url.push_str(&format!("&starting_after={a}"));
            }
            let page: Value = client
                .get(url)
                .bearer_auth(&self.key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for e in page["data"].as_array().unwrap() {
                ids.insert(e["id"].as_str().unwrap().to_owned());
                after = Some(e["id"].as_str().unwrap().to_owned());
            }
            if page["has_more"] != true {
                return ids;
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process that is killed when dropped, so that a failing test
/// leaves no `listen` running behind it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Running {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Starts `notifly listen` and returns it with the session secret it printed.
fn listen(server: &Server, forward_to: &str) -> (Running, String) {
    listen_with(server, &["--forward-to", forward_to])
}

/// `notifly listen` with these arguments, and the session secret it printed.
fn listen_with(server: &Server, args: &[&str]) -> (Running, String) {
    let mut child = Running(
        server
            .client(&[&["listen"], args].concat())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let secret = loop {
        let line = lines
            .next()
            .expect("listen exited before printing its secret")
            .unwrap();
        if let Some((_, s)) = line
            .strip_prefix("Session secret (verify signatures with it")
            .and_then(|rest| rest.split_once("): "))
        {
            break s.to_owned();
        }
    };
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_forwards_signed_events_and_resumes_after_a_dropped_stream() {
    let mut server = Server::start().await;
    let (inbox, url) = Inbox::start().await;
    let (mut listener, secret) = listen(&server, &url);

    let out = server.trigger("message.updated");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("updated message"), "{said}");
    // contact.created, conversation.created, contact.updated, message.created, message.updated
    inbox.wait_for(5).await;
    {
        let got = inbox.0.lock().unwrap();
        let types: Vec<&str> = got
            .iter()
            .map(|(h, _)| h["x-notifly-event-type"].to_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "contact.created",
                "conversation.created",
                "contact.updated",
                "message.created",
                "message.updated"
            ]
        );
        let key = StandardSecret::parse(&secret).unwrap();
        for (headers, body) in got.iter() {
            let h = |n: &str| headers[n].to_str().unwrap().to_owned();
            verify_hex(&secret, body, &h("x-notifly-signature")).unwrap();
            let ts: i64 = h("webhook-timestamp").parse().unwrap();
            key.verify(&h("webhook-id"), ts, &h("webhook-signature"), body, ts, 300)
                .unwrap();
            let event: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(event["id"].as_str().unwrap(), h("webhook-id"));
            assert_eq!(h("content-type"), "application/json");
        }
    }

    // Drop the stream: kill the server, restart it, and make events happen
    // at once, before `listen` has reconnected. It must resume after the last
    // event it saw and forward every later one exactly once.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    server.child = Server::spawn(&server.db, server.dir.path(), server.port);
    server.wait_ready().await;
    for t in ["group.created", "attachment.deleted"] {
        let out = server.trigger(t);
        assert!(
            out.status.success(),
            "{t}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let all = server.event_ids().await;
    inbox.wait_for(all.len()).await;
    let forwarded = inbox.ids();
    let unique: HashSet<String> = forwarded.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        forwarded.len(),
        "an event was forwarded twice"
    );
    assert_eq!(
        unique, all,
        "the forwarded events are not the account's log"
    );
    listener.kill().unwrap();
    listener.wait().unwrap();
}

#[tokio::test]
async fn trigger_makes_every_event_type_happen() {
    let server = Server::start().await;
    for resource in ["contact", "conversation", "message", "group", "attachment"] {
        for action in ["created", "updated", "deleted"] {
            let t = format!("{resource}.{action}");
            let out = server.trigger(&t);
            assert!(
                out.status.success(),
                "{t}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let client = reqwest::Client::new();
    // Each event it made, as delivered (`{id, type, payload}`), matches its
    // schema in the document the server serves; the log holds every type.
    let doc: Value = client
        .get(format!("{}/openapi.json", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = EventSchemas::of(&doc);
    let mut types = HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let cursor = after
            .map(|id| format!("&starting_after={id}"))
            .unwrap_or_default();
        let page: Value = client
            .get(format!("{}/v1/events?limit=100{cursor}", server.url()))
            .bearer_auth(&server.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = page["data"].as_array().unwrap();
        for event in events {
            let body = serde_json::json!({"id": event["id"], "type": event["type"], "payload": event["payload"]});
            schemas.check(&body).unwrap_or_else(|e| panic!("{e}"));
            types.insert(event["type"].as_str().unwrap().to_owned());
        }
        after = events.last().map(|e| e["id"].as_str().unwrap().to_owned());
        if page["has_more"] != true {
            break;
        }
    }
    for resource in ["contact", "conversation", "message", "group", "attachment"] {
        for action in ["created", "updated", "deleted"] {
            let t = format!("{resource}.{action}");
            assert!(types.contains(&t), "no {t} event in the log: {types:?}");
        }
    }
}

#[tokio::test]
async fn bad_input_gets_a_clear_message_and_a_nonzero_exit() {
    let server = Server::start().await;

    let out = server.trigger("message.sent");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown event type") && err.contains("attachment.deleted"),
        "{err}"
    );

    let out = server
        .client(&["trigger", "contact.created", "--api-key", "nfly_sk_wrong"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused the API key") && !err.contains("backtrace"),
        "{err}"
    );

    // Without a key: says how to give one, by flag or environment.
    let out = server
        .client(&["listen", "--forward-to", "http://127.0.0.1:9/hook"])
        .env_remove("NOTIFLY_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--api-key") && err.contains("NOTIFLY_API_KEY"),
        "{err}"
    );

    let out = server
        .client(&["trigger", "contact.created", "--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the Notifly server"));

    let out = server
        .client(&["listen", "--forward-to", "not a url"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--forward-to"));

    let out = server
        .client(&[
            "listen",
            "--forward-to",
            "http://127.0.0.1:9/x",
            "--api-key",
            "nfly_sk_wrong",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the API key"));
}

#[tokio::test]
async fn listen_keeps_going_when_the_local_app_refuses_connections() {
    let server = Server::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = Running(
        server
            .client(&["listen", "--forward-to", &format!("http://{closed}/hooks")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("Ready!"));
    for _ in 0..2 {
        assert!(server.trigger("contact.created").status.success());
    }
    let mut failures = 0;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("contact.created") && line.contains("failed") {
            assert!(
                line.contains("cannot connect") && line.contains("not retried"),
                "the line says why and that it is not retried: {line}"
            );
            failures += 1;
            if failures == 2 {
                break;
            }
        }
    }
    assert_eq!(
        failures, 2,
        "each refused forward is reported and listening goes on"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn listen_remembers_its_session_secret_or_takes_one() {
    let server = Server::start().await;
    let (_inbox, url) = Inbox::start().await;
    let run = |extra: &[&str]| {
        let (mut child, secret) =
            listen_with(&server, &[&["--forward-to", url.as_str()], extra].concat());
        child.kill().unwrap();
        child.wait().unwrap();
        secret
    };
    let first = run(&[]);
    assert!(first.starts_with("whsec_"), "{first}");
    assert_eq!(
        run(&[]),
        first,
        "a restart keeps the secret, so the app keeps verifying"
    );
    let renewed = run(&["--new-secret"]);
    assert_ne!(renewed, first);
    assert_eq!(run(&[]), renewed, "the new secret is the one remembered");
    let mine = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert_eq!(run(&["--secret", mine]), mine);
    assert_eq!(
        run(&[]),
        renewed,
        "--secret does not replace the remembered one"
    );

    let file = server.dir.path().join("config/notifly/listen-secrets.json");
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(
        !stored.contains(&server.key),
        "the API key is not stored: {stored}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "only its owner can read it: {mode:o}");
    }

    let out = server
        .client(&["listen", "--forward-to", &url, "--secret", "hunter2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--secret") && err.contains("whsec_"), "{err}");
}
