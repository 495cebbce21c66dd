//! The integration-test harness: a real server on `127.0.0.1:0` with a real
//! SQLite file in a temporary directory, driven over HTTP by `reqwest`.
//!
//! With `NOTIFLY_TEST_POSTGRES_URL` set (e.g.
//! `postgres://postgres@127.0.0.1/postgres`), each server gets instead a fresh
//! PostgreSQL database `notifly_test_<random>`, created through that URL and
//! dropped when the `TestServer` is dropped.

pub mod browser;
pub mod delivery_helpers;
pub mod event_schemas;
pub mod node;
pub mod receiver;
pub mod scrape;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use notifly_server::Config;
use notifly_server::store::Store;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Connection, PgPool, SqlitePool};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long the server may take to answer `/readyz` after it is spawned.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// The PostgreSQL server to test against instead of SQLite, if any.
pub const POSTGRES_ENV: &str = "NOTIFLY_TEST_POSTGRES_URL";

/// The encryption key of test servers on PostgreSQL (which has no key file):
/// base64 of `notifly-test-key-32-bytes-long!!`.
pub const TEST_ENCRYPTION_KEY: &str = "bm90aWZseS10ZXN0LWtleS0zMi1ieXRlcy1sb25nISE=";

/// A read pool on the server's database, for counting rows.
#[derive(Debug, Clone)]
pub enum CountPool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl CountPool {
    async fn open(url: &str) -> CountPool {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .connect(url)
                .await
                .expect("open a counting pool");
            CountPool::Postgres(pool)
        } else {
            let pool = SqlitePoolOptions::new()
                .max_connections(2)
                .connect_with(SqliteConnectOptions::from_str(url).unwrap().read_only(true))
                .await
                .expect("open a counting pool");
            CountPool::Sqlite(pool)
        }
    }

    /// `SELECT COUNT(*) FROM {table}`, optionally `WHERE account_id = {account}`.
    async fn count(&self, table: &str, account: Option<&str>) -> i64 {
        let result = match (self, account) {
            (CountPool::Sqlite(pool), None) => {
                sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
                    .fetch_one(pool)
                    .await
            }
            (CountPool::Sqlite(pool), Some(account)) => {
                sqlx::query_scalar(&format!(
                    "SELECT COUNT(*) FROM {table} WHERE account_id = ?"
                ))
                .bind(account)
                .fetch_one(pool)
                .await
            }
            (CountPool::Postgres(pool), None) => {
                sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
                    .fetch_one(pool)
                    .await
            }
            (CountPool::Postgres(pool), Some(account)) => {
                sqlx::query_scalar(&format!(
                    "SELECT COUNT(*) FROM {table} WHERE account_id = $1"
                ))
                .bind(account)
                .fetch_one(pool)
                .await
            }
        };
        result.unwrap_or_else(|e| panic!("count {table}: {e}"))
    }
}

/// A PostgreSQL database created for one test server (or one store test);
/// dropped with it.
#[derive(Debug)]
pub struct PgTestDb {
    admin_url: String,
    name: String,
}

impl PgTestDb {
    /// Creates `notifly_test_<random>` through `admin_url`; returns it and its URL.
    pub async fn create(admin_url: &str) -> (PgTestDb, String) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "notifly_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("connect to {POSTGRES_ENV}: {e}"));
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        let url = notifly_server::store::postgres::url_with_database(admin_url, &name);
        (
            PgTestDb {
                admin_url: admin_url.to_owned(),
                name,
            },
            url,
        )
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        // Drop may run inside or outside a runtime: use a thread of its own.
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(&sql).execute(&mut admin).await?;
                admin.close().await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// Every table that holds what an API write can create, for [`TestServer::counts`].
pub const TABLES: [&str; 8] = [
    "contacts",
    "conversations",
    "messages",
    "groups",
    "group_members",
    "attachments",
    "events",
    "idempotency_keys",
];

/// A running Notifly server with its own database file and data directory.
/// Dropping it tells the server to shut down.
pub struct TestServer {
    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub base: String,
    /// The store the server uses, opened a second time by the test (SQLite
    /// WAL allows that), for creating accounts.
    pub store: Arc<dyn Store>,
    /// A read pool on the same database, for counting rows.
    pub pool: CountPool,
    pub config: Config,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    /// The PostgreSQL database of this server, if it runs on one; dropped
    /// after the pools.
    _pg_db: Option<PgTestDb>,
    // Last, so that the files outlive everything that uses them.
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// A server with the default limits, except a 64 KiB attachment limit.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// A server whose config `adjust` may change (limits, mostly) after the
    /// harness has filled in the database and data directory.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let db_path = dir.path().join("test.db");
        let (pg_db, database_url) = match std::env::var(POSTGRES_ENV) {
            Ok(admin_url) if !admin_url.is_empty() => {
                let (db, url) = PgTestDb::create(&admin_url).await;
                (Some(db), url)
            }
            _ => (None, format!("sqlite://{}", db_path.display())),
        };
        let encryption_key = pg_db
            .is_some()
            .then(|| notifly_server::config::EncryptionKeys(TEST_ENCRYPTION_KEY.to_owned()));
        let mut config = Config {
            database_url,
            data_dir: dir.path().join("data"),
            max_attachment_bytes: 64 * 1024,
            encryption_key,
            // Circuits that open only in the tests about them
            // (`delivery_circuit.rs`): elsewhere a run of failures is the
            // retry schedule's to handle.
            circuit_failures: 1_000,
            ..Config::default()
        };
        adjust(&mut config);

        // Open (and migrate) the database first, so that the test's store and
        // pool see the same schema the server will.
        let store = notifly_server::open_store(&config.database_url)
            .await
            .expect("open the test database");
        let pool = CountPool::open(&config.database_url).await;

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        config.listen = addr;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(notifly_server::run(config.clone(), listener, async {
            let _ = rx.await;
        }));
        let server = TestServer {
            base: format!("http://{addr}"),
            store,
            pool,
            config,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            task: Some(task),
            _pg_db: pg_db,
            _dir: dir,
        };
        server.wait_ready().await;
        server
    }

    /// Polls `/readyz` until it answers 200, failing the test past a deadline
    /// or if the server task ends.
    async fn wait_ready(&self) {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(task) = &self.task
                && task.is_finished()
            {
                panic!("the server stopped before it became ready");
            }
            if let Ok(res) = self.http.get(self.url("/readyz")).send().await
                && res.status().as_u16() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server was not ready within {READY_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the server and waits for `run` to return, which must be `Ok`.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("the server did not stop within 20s")
                .expect("the server task panicked");
            result.expect("run() returned an error");
        }
    }

    /// Stops the server gracefully, keeping its database and data
    /// directory (for [`TestServer::restart_with`], or for starting one by
    /// hand that is expected to fail).
    pub async fn halt(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("the server did not stop within 20s")
                .expect("the server task panicked")
                .expect("run() returned an error");
        }
    }

    /// Stops the server gracefully and starts it again on the same database
    /// and data directory (on a new port), with `adjust` applied to its
    /// config. The test's own store and pools stay open across it.
    pub async fn restart_with(&mut self, adjust: impl FnOnce(&mut Config)) {
        self.halt().await;
        adjust(&mut self.config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        self.config.listen = addr;
        self.base = format!("http://{addr}");
        let (tx, rx) = oneshot::channel::<()>();
        self.shutdown = Some(tx);
        self.task = Some(tokio::spawn(notifly_server::run(
            self.config.clone(),
            listener,
            async {
                let _ = rx.await;
            },
        )));
        self.wait_ready().await;
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The data directory the server stores attachment bytes under.
    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    /// Creates an account directly in the store and returns a client that
    /// sends its API key.
    pub async fn account(&self, name: &str) -> Client {
        let account = notifly_server::domain::accounts::create(self.store.as_ref(), name)
            .await
            .expect("create an account");
        Client {
            http: self.http.clone(),
            base: self.base.clone(),
            key: Some(account.api_key),
            account_id: account.id,
        }
    }

    /// A client that sends no `Authorization` header.
    pub fn anonymous(&self) -> Client {
        Client {
            http: self.http.clone(),
            base: self.base.clone(),
            key: None,
            account_id: String::new(),
        }
    }

    /// A client that sends `key` as its API key.
    pub fn with_key(&self, key: &str) -> Client {
        Client {
            http: self.http.clone(),
            base: self.base.clone(),
            key: Some(key.to_owned()),
            account_id: String::new(),
        }
    }

    /// Rows in `table`, read straight from the database.
    pub async fn count(&self, table: &str) -> i64 {
        self.pool.count(table, None).await
    }

    /// Rows of one account in `table` (which must have an `account_id`).
    pub async fn count_for(&self, table: &str, account_id: &str) -> i64 {
        self.pool.count(table, Some(account_id)).await
    }

    /// Row counts of every table in [`TABLES`]: take one before a request and
    /// compare after it to prove that nothing was written.
    pub async fn counts(&self) -> BTreeMap<&'static str, i64> {
        let mut out = BTreeMap::new();
        for table in TABLES {
            out.insert(table, self.count(table).await);
        }
        out
    }

    /// Files under the attachment directory (all accounts).
    pub fn attachment_files(&self) -> usize {
        fn walk(dir: &std::path::Path) -> usize {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() { walk(&p) } else { 1 }
                })
                .sum()
        }
        // Attachments live under `attachments/` (beside the key file).
        walk(&self.config.data_dir.join("attachments"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// An HTTP client for one account.
#[derive(Debug, Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    /// The API key sent as `Authorization: Bearer`, if any.
    pub key: Option<String>,
    /// The account's id (empty for [`TestServer::anonymous`]).
    pub account_id: String,
}

/// A response as a test looks at it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Reply {
    /// The body as JSON; `null` for an empty body and a JSON string holding
    /// the raw text for a body that is not JSON (so that a shape assertion
    /// fails with the body in its message).
    pub fn json(&self) -> Value {
        if self.bytes.is_empty() {
            return Value::Null;
        }
        serde_json::from_slice(&self.bytes).unwrap_or_else(|_| {
            Value::String(format!(
                "<not JSON> {}",
                String::from_utf8_lossy(&self.bytes)
            ))
        })
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<not text>").to_owned())
    }
}

impl Client {
    /// A request to `path` with this client's API key.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => rb.bearer_auth(key),
            None => rb,
        }
    }

    /// Sends a request, returning the whole response.
    pub async fn send_raw(&self, rb: reqwest::RequestBuilder) -> Reply {
        let res = rb.send().await.expect("send the request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("read the response").to_vec();
        Reply {
            status,
            headers,
            bytes,
        }
    }

    /// Sends a request, returning the status and the JSON body.
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> (u16, Value) {
        let reply = self.send_raw(rb).await;
        (reply.status, reply.json())
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.request(Method::POST, path).json(&body))
            .await
    }

    /// A `POST` with an `Idempotency-Key`.
    pub async fn post_idem(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        self.send(
            self.request(Method::POST, path)
                .header("idempotency-key", key)
                .json(&body),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.request(Method::PUT, path).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.request(Method::DELETE, path)).await
    }

    /// Sends a raw body with the given content type (or none).
    pub async fn send_body(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let mut rb = self.request(method, path).body(body);
        if let Some(ct) = content_type {
            rb = rb.header("content-type", ct);
        }
        self.send(rb).await
    }

    /// Uploads an attachment as `multipart/form-data` (`message_id` and `file`).
    pub async fn upload(
        &self,
        message_id: &str,
        filename: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> (u16, Value) {
        self.send(
            self.request(Method::POST, "/v1/attachments")
                .multipart(upload_form(message_id, filename, content_type, bytes)),
        )
        .await
    }

    /// Like [`Client::upload`], with an `Idempotency-Key`.
    pub async fn upload_idem(
        &self,
        key: &str,
        message_id: &str,
        filename: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> (u16, Value) {
        self.send(
            self.request(Method::POST, "/v1/attachments")
                .header("idempotency-key", key)
                .multipart(upload_form(message_id, filename, content_type, bytes)),
        )
        .await
    }

    /// Every item of a list, following `starting_after` to the end (newest first).
    pub async fn list_all(&self, path: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut out: Vec<Value> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let url = match &after {
                Some(id) => format!("{path}{sep}limit=100&starting_after={id}"),
                None => format!("{path}{sep}limit=100"),
            };
            let (status, body) = self.get(&url).await;
            assert_eq!(status, 200, "GET {url}: {body}");
            let data = body["data"].as_array().expect("a list has data").clone();
            let has_more = body["has_more"].as_bool().expect("a list has has_more");
            after = data.last().map(|item| id_of(item).to_owned());
            out.extend(data);
            if !has_more {
                return out;
            }
            assert!(after.is_some(), "has_more on an empty page: {body}");
        }
    }

    /// The account's whole event log, oldest first.
    pub async fn events(&self) -> Vec<Value> {
        let mut events = self.list_all("/v1/events").await;
        events.reverse();
        events
    }

    /// The `(type, payload)` of every event after the first `skip`, oldest first.
    pub async fn events_since(&self, skip: usize) -> Vec<(String, Value)> {
        self.events()
            .await
            .into_iter()
            .skip(skip)
            .map(|e| {
                (
                    e["type"].as_str().expect("event type").to_owned(),
                    e["payload"].clone(),
                )
            })
            .collect()
    }

    /// How many events the account has (a mark for [`Client::events_since`]).
    pub async fn event_count(&self) -> usize {
        self.list_all("/v1/events").await.len()
    }

    // Shortcuts that create resources and assert success.

    /// Creates a contact `username` and returns it.
    pub async fn contact(&self, username: &str) -> Value {
        let (status, body) = self
            .post(
                "/v1/contacts",
                json!({"username": username, "phone_number": "+1 555 0100"}),
            )
            .await;
        assert_eq!(status, 201, "create contact: {body}");
        body
    }

    /// Creates a conversation with a contact and returns it.
    pub async fn conversation_with(&self, contact_id: &str) -> Value {
        let (status, body) = self
            .post("/v1/conversations", json!({"contact_id": contact_id}))
            .await;
        assert_eq!(status, 201, "create conversation: {body}");
        body
    }

    /// Creates a contact and a conversation with it; returns the conversation.
    pub async fn conversation(&self, username: &str) -> Value {
        let contact = self.contact(username).await;
        self.conversation_with(id_of(&contact)).await
    }

    /// Creates a message (sent by the account) and returns it.
    pub async fn message(&self, conversation_id: &str, text: &str) -> Value {
        let (status, body) = self
            .post(
                "/v1/messages",
                json!({"conversation_id": conversation_id, "message": text}),
            )
            .await;
        assert_eq!(status, 201, "create message: {body}");
        body
    }

    /// Creates a group and returns it.
    pub async fn group(&self, name: &str, contacts: &[&str]) -> Value {
        let (status, body) = self
            .post("/v1/groups", json!({"name": name, "contacts": contacts}))
            .await;
        assert_eq!(status, 201, "create group: {body}");
        body
    }

    /// Uploads a small text attachment and returns it.
    pub async fn attachment(&self, message_id: &str, filename: &str) -> Value {
        let (status, body) = self
            .upload(message_id, filename, "text/plain", b"hello, attachment")
            .await;
        assert_eq!(status, 201, "upload attachment: {body}");
        body
    }
}

/// The multipart form of an attachment upload.
pub fn upload_form(
    message_id: &str,
    filename: &str,
    content_type: &str,
    bytes: &[u8],
) -> reqwest::multipart::Form {
    let part = reqwest::multipart::Part::bytes(bytes.to_vec())
        .file_name(filename.to_owned())
        .mime_str(content_type)
        .expect("a valid media type");
    reqwest::multipart::Form::new()
        .text("message_id", message_id.to_owned())
        .part("file", part)
}

/// The `id` of a resource.
pub fn id_of(v: &Value) -> &str {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}"))
}

/// The ids of a list's items, in order.
pub fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|v| id_of(v).to_owned()).collect()
}

/// Asserts an error response: `status`, and a body
/// `{"type": "invalid_request", "message": "<non-empty>"}`.
#[track_caller]
pub fn assert_invalid(got: &(u16, Value), status: u16) {
    let (got_status, body) = got;
    assert_eq!(*got_status, status, "status; body: {body}");
    assert_error_body(body, "invalid_request");
}

/// Asserts that `body` is `{"type": kind, "message": "<non-empty>"}` and nothing else.
#[track_caller]
pub fn assert_error_body(body: &Value, kind: &str) {
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not a JSON object: {body}"));
    assert_eq!(obj.get("type"), Some(&json!(kind)), "error type: {body}");
    let message = obj
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("error body has no message: {body}"));
    assert!(!message.trim().is_empty(), "empty error message: {body}");
    assert_eq!(obj.len(), 2, "unexpected fields in the error body: {body}");
}

/// The message of an error body.
pub fn message_of(body: &Value) -> &str {
    body["message"].as_str().unwrap_or("")
}

/// An id of the right shape that names nothing.
pub const UNKNOWN_ID: &str = "ZZZZZZZZZZZZZZZZ";
