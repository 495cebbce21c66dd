//! One conformance suite for both stores: every check is written once against
//! `Arc<dyn Store>` and runs on a fresh SQLite file and on a fresh PostgreSQL
//! database, so the two backends must give the same answers.
//!
//! The PostgreSQL half needs a server: run with `NOTIFLY_TEST_POSTGRES_URL`
//! set (e.g. `postgres://postgres@127.0.0.1/postgres`) and `--include-ignored`.
//! Without the variable those tests fail rather than pass silently.
//!
//! The checks compare behaviour, not SQL: rows written through a `WriteTx`
//! and read back through a `Conn`, the outbox's all-or-nothing commit, keyset
//! pagination, uniqueness, isolation between accounts, and the dispatcher's
//! queue (claims, leases, write-back, retries, retention).
//!
//! This module is the harness (the two backends, `conformance!`) and the
//! helpers the checks share; each module below holds the checks of one
//! aggregate and lists them in its `conformance!`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common;
use notifly_server::ids;
use notifly_server::store::{
    Account, ApiKeyRecord, Attachment, AttemptRecord, AttemptResult, ClaimRequest, Claimed,
    Contact, Conversation, ConversationFilter, Cursor, DashboardSession, DeliveryRecord,
    EndpointPolicy, EndpointRecord, EventRecord, GroupRecord, IdempotentResponse, KeyRevocation,
    Listed, MessageRecord, NewMessage, NextStep, Page, PurgeRound, Reaction, ReplayRecord,
    SessionFlash, Store, StoreError, StoreResult, StoredKeys, WriteTx,
};
use serde_json::json;
use sqlx::types::Json;

// ---------------------------------------------------------------------------
// The two backends.

/// A fresh store with whatever must outlive it.
struct Db {
    store: Arc<dyn Store>,
    /// The PostgreSQL database, dropped (with `FORCE`) after the store.
    _pg: Option<common::PgTestDb>,
    /// Where the store is, for a second store (node) on it.
    url: String,
    /// The SQLite file's directory; last, so it outlives the store.
    _dir: tempfile::TempDir,
}

impl Db {
    async fn sqlite() -> Db {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("notifly.db").display());
        let store = notifly_server::open_store(&url)
            .await
            .expect("open a fresh SQLite store");
        Db {
            store,
            _pg: None,
            url,
            _dir: dir,
        }
    }

    async fn postgres() -> Db {
        let admin_url = std::env::var(common::POSTGRES_ENV)
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| {
                panic!(
                    "{} is not set: the PostgreSQL conformance tests need a server, e.g. \
                     {}=postgres://postgres@127.0.0.1/postgres cargo test -p notifly-server --test it -- --include-ignored store::",
                    common::POSTGRES_ENV,
                    common::POSTGRES_ENV
                )
            });
        let (pg, url) = common::PgTestDb::create(&admin_url).await;
        let store = notifly_server::open_store(&url)
            .await
            .expect("open a fresh PostgreSQL store");
        Db {
            store,
            _pg: Some(pg),
            url,
            _dir: tempfile::tempdir().expect("tempdir"),
        }
    }
}

/// Two tests per check, in the module that lists it: `<module>::sqlite::<check>`
/// and `<module>::postgres::<check>`.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    let db = crate::store::Db::sqlite().await;
                    super::$check(db.store.clone()).await;
                    db.store.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                #[ignore = "needs PostgreSQL: run with NOTIFLY_TEST_POSTGRES_URL set and --include-ignored"]
                async fn $check() {
                    let db = crate::store::Db::postgres().await;
                    super::$check(db.store.clone()).await;
                    db.store.close().await;
                }
            )*
        }
    };
}

mod accounts;
mod claims;
mod deliveries;
mod endpoints;
mod events;
mod hand_off;
mod isolation;
mod lists;
mod notices;
mod replays;
mod resources;
mod retention;

// ---------------------------------------------------------------------------
// Realistic records, built the way the domain layer builds them.

fn contact(username: &str) -> Contact {
    Contact {
        id: ids::new_id(),
        username: username.to_owned(),
        phone_number: "1-800-759-3000".to_owned(),
        avatar_url: None,
        display_name: None,
        conversation_id: None,
        last_active_at: None,
        created_at: ids::now(),
    }
}

fn conversation_with_contact(contact_id: &str) -> Conversation {
    Conversation {
        id: ids::new_id(),
        contact_id: Some(contact_id.to_owned()),
        group_id: None,
        pinned_message_id: None,
        is_pinned: false,
        is_muted: false,
        last_active_at: None,
        last_opened_at: None,
        created_at: ids::now(),
        archived_at: None,
    }
}

fn conversation_with_group(group_id: &str) -> Conversation {
    Conversation {
        contact_id: None,
        group_id: Some(group_id.to_owned()),
        ..conversation_with_contact("")
    }
}

fn message(conversation_id: &str, contact_id: Option<&str>, text: &str) -> MessageRecord {
    let now = ids::now();
    MessageRecord {
        id: ids::new_id(),
        conversation_id: conversation_id.to_owned(),
        contact_id: contact_id.map(str::to_owned),
        message: text.to_owned(),
        reactions: Json(Vec::new()),
        read_at: None,
        created_at: now,
        updated_at: now,
    }
}

fn group(name: &str) -> GroupRecord {
    GroupRecord {
        id: ids::new_id(),
        name: name.to_owned(),
        description: Some("the McCallisters".to_owned()),
        avatar_url: None,
        conversation_id: None,
        created_at: ids::now(),
        archived_at: None,
    }
}

fn attachment(message_id: &str, filename: &str) -> Attachment {
    Attachment {
        id: ids::new_id(),
        message_id: message_id.to_owned(),
        filename: filename.to_owned(),
        // Derived when read by the domain, never stored.
        file_url: String::new(),
        file_type: "application/pdf".to_owned(),
        file_size: 17,
        created_at: ids::now(),
    }
}

fn endpoint(name: &str, events: &[&str]) -> EndpointRecord {
    let now = ids::now();
    EndpointRecord {
        id: ids::new_id(),
        name: name.to_owned(),
        url: format!("https://hooks.example.com/{name}"),
        description: None,
        events: Json(events.iter().map(|e| (*e).to_owned()).collect()),
        enabled: true,
        disabled_reason: None,
        secret: format!("whsec_{}", ids::new_id()),
        previous_secret: None,
        previous_secret_expires_at: None,
        failing_since: None,
        created_at: now,
        updated_at: now,
        signature_scheme: "hmac-sha256".to_owned(),
        circuit: "closed".to_owned(),
        circuit_since: None,
        rate_limit: None,
        ordering: "none".to_owned(),
        headers: None,
        filter: None,
    }
}

/// The write-back's policy in most checks: circuits that never open.
const POLICY: EndpointPolicy = policy(86_400);

/// A write-back policy that disables after `disable_after_secs`, with
/// circuits that never open.
const fn policy(disable_after_secs: i64) -> EndpointPolicy {
    EndpointPolicy {
        disable_after_secs,
        circuit_failures: 1_000_000,
    }
}

/// An event as `outbox::emit` writes it, created at `created_at` (Unix seconds).
fn event_at(event_type: &str, created_at: i64) -> EventRecord {
    // Read back, an event has no resource id (only its deliveries keep it).
    EventRecord {
        resource_id: None,
        ..about(event_type, created_at, &ids::new_id())
    }
}

/// An event about the resource `resource_id`.
fn about(event_type: &str, created_at: i64, resource_id: &str) -> EventRecord {
    let id = ids::new_id();
    let body = json!({"id": id, "type": event_type, "payload": {"id": resource_id}});
    EventRecord {
        id,
        event_type: event_type.to_owned(),
        body: body.to_string(),
        created_at,
        resource_id: Some(resource_id.to_owned()),
        traceparent: None,
    }
}

fn event(event_type: &str) -> EventRecord {
    event_at(event_type, ids::now())
}

fn idempotent(status: i64, body: &str) -> IdempotentResponse {
    IdempotentResponse {
        request_hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_owned(),
        status,
        body: body.to_owned(),
        created_at: ids::now(),
    }
}

fn claim_request(owner: &str, per_endpoint: u32, max: u32, lease_ms: i64) -> ClaimRequest {
    ClaimRequest {
        lease_ms,
        owner: owner.to_owned(),
        per_endpoint,
        per_failing_endpoint: 2,
        max,
    }
}

/// A claim with a long lease and generous limits, failing endpoints included.
fn claim_all(owner: &str) -> ClaimRequest {
    ClaimRequest {
        per_failing_endpoint: 100,
        ..claim_request(owner, 100, 1000, 60_000)
    }
}

/// The record of an attempt of `c` that got `status` (or no response).
fn attempt_of(c: &Claimed, status: Option<i64>) -> AttemptRecord {
    let succeeded = status.is_some_and(|s| (200..300).contains(&s));
    AttemptRecord {
        id: ids::new_id(),
        delivery_id: c.delivery_id.clone(),
        attempt: c.attempt,
        started_at_ms: ids::now_ms(),
        duration_ms: 12,
        request_headers: Json(vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("webhook-id".to_owned(), c.event_id.clone()),
        ]),
        response_status: status,
        response_headers: status.map(|_| Json(vec![("server".to_owned(), "test".to_owned())])),
        response_body: status.map(|s| format!("status {s}")),
        error: status.is_none().then(|| "connection refused".to_owned()),
        succeeded,
    }
}

fn result_of(c: &Claimed, owner: &str, status: Option<i64>, next: NextStep) -> AttemptResult {
    AttemptResult {
        attempt: attempt_of(c, status),
        endpoint_id: c.endpoint_id.clone(),
        owner: owner.to_owned(),
        next,
        disable: None,
        unsent: false,
        throttle_until_ms: None,
        ordered: c.ordered,
    }
}

fn page(limit: u32) -> Page {
    Page {
        limit,
        cursor: None,
    }
}

fn after(limit: u32, id: &str) -> Page {
    Page {
        limit,
        cursor: Some(Cursor::After(id.to_owned())),
    }
}

fn before(limit: u32, id: &str) -> Page {
    Page {
        limit,
        cursor: Some(Cursor::Before(id.to_owned())),
    }
}

/// Far enough in the past to be out of any retention window in these tests.
const LONG_AGO: i64 = 1_700_000_000;
/// How long a test waits for a lease to expire.
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Small steps.

async fn new_account(store: &Arc<dyn Store>, name: &str) -> String {
    let account = Account {
        id: ids::new_id(),
        name: name.to_owned(),
        created_at: ids::now(),
    };
    let mut tx = store.write().await.unwrap();
    tx.insert_account(
        &account,
        &key_row(&account.id, "first key"),
        &ids::hash_api_key(&ids::new_api_key()),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    account.id
}

/// An API key record of `account`, as the domain makes one.
fn key_row(account: &str, name: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: ids::new_id(),
        account_id: account.to_owned(),
        name: name.to_owned(),
        prefix: "nfly_sk_abcd".to_owned(),
        created_at: ids::now(),
        last_used_at: None,
    }
}

async fn begin(store: &Arc<dyn Store>) -> Box<dyn WriteTx> {
    store.write().await.expect("begin a write")
}

async fn commit(tx: Box<dyn WriteTx>) {
    tx.commit().await.expect("commit");
}

async fn add_contact(store: &Arc<dyn Store>, account: &str, username: &str) -> Contact {
    let c = contact(username);
    let mut tx = begin(store).await;
    tx.insert_contact(account, &c).await.unwrap();
    commit(tx).await;
    c
}

/// A contact and a conversation with it.
async fn add_conversation(store: &Arc<dyn Store>, account: &str, username: &str) -> Conversation {
    let c = contact(username);
    let conv = conversation_with_contact(&c.id);
    let mut tx = begin(store).await;
    tx.insert_contact(account, &c).await.unwrap();
    tx.insert_conversation(account, &conv).await.unwrap();
    commit(tx).await;
    conv
}

async fn add_message(
    store: &Arc<dyn Store>,
    account: &str,
    conv: &str,
    text: &str,
) -> MessageRecord {
    let m = message(conv, None, text);
    let mut tx = begin(store).await;
    tx.insert_message(account, &m).await.unwrap();
    commit(tx).await;
    m
}

async fn add_endpoint(
    store: &Arc<dyn Store>,
    account: &str,
    name: &str,
    events: &[&str],
    enabled: bool,
) -> EndpointRecord {
    let mut ep = endpoint(name, events);
    ep.enabled = enabled;
    if !enabled {
        ep.disabled_reason = Some("disabled by hand".to_owned());
    }
    let mut tx = begin(store).await;
    tx.insert_endpoint(account, &ep).await.unwrap();
    commit(tx).await;
    ep
}

/// Appends `e` in its own transaction; returns how many deliveries it made.
async fn emit_event(store: &Arc<dyn Store>, account: &str, e: &EventRecord) -> u64 {
    let mut tx = begin(store).await;
    let n = tx.insert_event(account, e).await.unwrap();
    commit(tx).await;
    n
}

/// Appends `n` events of `event_type`, oldest first.
async fn emit_events(
    store: &Arc<dyn Store>,
    account: &str,
    event_type: &str,
    n: usize,
) -> Vec<EventRecord> {
    let mut out = Vec::new();
    for _ in 0..n {
        let e = event(event_type);
        emit_event(store, account, &e).await;
        out.push(e);
    }
    out
}

/// Every delivery of an endpoint (any status), newest first.
async fn deliveries(
    store: &Arc<dyn Store>,
    account: &str,
    endpoint_id: &str,
) -> Vec<DeliveryRecord> {
    let mut conn = store.read().await.unwrap();
    let listed = conn
        .list_deliveries(account, endpoint_id, None, &page(100))
        .await
        .unwrap();
    assert!(!listed.has_more);
    listed.items
}

async fn delivery(store: &Arc<dyn Store>, account: &str, id: &str) -> DeliveryRecord {
    let mut conn = store.read().await.unwrap();
    conn.delivery(account, id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("delivery {id} is missing"))
}

async fn read_endpoint(store: &Arc<dyn Store>, account: &str, id: &str) -> Option<EndpointRecord> {
    let mut conn = store.read().await.unwrap();
    conn.endpoint(account, id).await.unwrap()
}

async fn claim(store: &Arc<dyn Store>, request: &ClaimRequest) -> Vec<Claimed> {
    let mut claimed = store.claim(request).await.expect("claim");
    claimed.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
    claimed
}

/// One round of the purge with these cutoffs, in batches of `batch` rows
/// per table: what each batch deleted.
async fn purge_round(
    store: &Arc<dyn Store>,
    before: i64,
    keys_before: i64,
    sessions_at: i64,
    batch: u32,
) -> Vec<u64> {
    let mut round = PurgeRound::new(before, keys_before, sessions_at);
    let mut batches = Vec::new();
    while !round.finished() {
        batches.push(store.purge(&mut round, batch).await.unwrap());
        assert!(batches.len() < 100, "the round never finished: {batches:?}");
    }
    batches
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

fn claimed_ids(claimed: &[Claimed]) -> Vec<String> {
    sorted(claimed.iter().map(|c| c.delivery_id.clone()).collect())
}

fn ids_of<T>(items: &[T], id: fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|t| id(t).to_owned()).collect()
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(got: StoreResult<T>, what: &str) {
    match got {
        Err(StoreError::Conflict(name)) => assert_eq!(name, what, "the conflict's name"),
        other => panic!("expected a conflict on {what}, got {other:?}"),
    }
}

#[track_caller]
fn assert_unknown_cursor<T: std::fmt::Debug>(got: StoreResult<T>, what: &str) {
    assert!(
        matches!(got, Err(StoreError::UnknownCursor)),
        "{what}: expected UnknownCursor, got {got:?}"
    );
}

/// Walks a list forwards and backwards with a page size of 2 and checks every
/// page against `expected` (ids, newest first); `foreign` are ids that must be
/// rejected as cursors (another account's rows, another kind's ids).
async fn check_pages<T, F, Fut>(
    what: &str,
    list: F,
    id: fn(&T) -> &str,
    expected: &[String],
    foreign: &[&str],
) where
    T: std::fmt::Debug,
    F: Fn(Page) -> Fut,
    Fut: Future<Output = StoreResult<Listed<T>>>,
{
    let n = expected.len();
    let all = list(page(100)).await.unwrap();
    assert_eq!(ids_of(&all.items, id), expected, "{what}: the whole list");
    assert!(!all.has_more, "{what}: has_more on the whole list");

    // Forwards, `starting_after` the last item of each page.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let p = match &cursor {
            None => page(2),
            Some(c) => after(2, c),
        };
        let got = list(p).await.unwrap();
        let got_ids = ids_of(&got.items, id);
        let start = seen.len();
        assert_eq!(
            got_ids,
            expected[start..(start + 2).min(n)],
            "{what}: forward page after {cursor:?}"
        );
        assert_eq!(got.has_more, start + 2 < n, "{what}: forward has_more");
        seen.extend(got_ids);
        if !got.has_more {
            break;
        }
        cursor = seen.last().cloned();
    }
    assert_eq!(seen, expected, "{what}: forward walk");

    // Backwards, `ending_before` the first item of each page, from the oldest.
    if n >= 2 {
        let mut end = n - 1;
        loop {
            let got = list(before(2, &expected[end])).await.unwrap();
            let start = end.saturating_sub(2);
            assert_eq!(
                ids_of(&got.items, id),
                expected[start..end],
                "{what}: backward page before item {end}"
            );
            assert_eq!(got.has_more, start > 0, "{what}: backward has_more");
            if !got.has_more {
                break;
            }
            end = start;
        }
    }

    // Past either end.
    if let (Some(first), Some(last)) = (expected.first(), expected.last()) {
        let got = list(after(2, last)).await.unwrap();
        assert!(
            got.items.is_empty() && !got.has_more,
            "{what}: after the oldest"
        );
        let got = list(before(2, first)).await.unwrap();
        assert!(
            got.items.is_empty() && !got.has_more,
            "{what}: before the newest"
        );
    }

    // Cursors naming nothing of this list.
    for bad in foreign.iter().chain([&"ZZZZZZZZZZZZZZZZ"]) {
        assert_unknown_cursor(list(after(2, bad)).await, what);
        assert_unknown_cursor(list(before(2, bad)).await, what);
    }
}

async fn conn_contact(store: &Arc<dyn Store>, account: &str, id: &str) -> Contact {
    let mut conn = store.read().await.unwrap();
    conn.contact(account, id).await.unwrap().unwrap()
}
