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

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common;
use notifly_server::ids;
use notifly_server::store::{
    Account, ApiKeyRecord, Attachment, AttemptRecord, AttemptResult, ClaimRequest, Claimed,
    Contact, Conversation, ConversationFilter, Cursor, DashboardSession, DeliveryRecord,
    EndpointPolicy, EndpointRecord, EventRecord, GroupRecord, IdempotentResponse, KeyRevocation,
    Listed, MessageRecord, NextStep, Page, Reaction, SessionFlash, Store, StoreError, StoreResult,
    StoredKeys, WriteTx,
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
                     {}=postgres://postgres@127.0.0.1/postgres cargo test --test store_conformance -- --include-ignored",
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

/// Two tests per check: `sqlite::<check>` and `postgres::<check>`.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    let db = super::Db::sqlite().await;
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
                    let db = super::Db::postgres().await;
                    super::$check(db.store.clone()).await;
                    db.store.close().await;
                }
            )*
        }
    };
}

conformance!(
    accounts,
    api_keys_are_added_capped_touched_and_revoked_but_never_the_last,
    contacts,
    conversations,
    messages,
    groups,
    attachments,
    endpoints,
    endpoint_keys_are_read_in_pages_and_replaced_only_if_unchanged,
    pagination_of_every_list,
    filtered_lists,
    idempotency_keys,
    isolation_between_accounts,
    outbox_rollback_and_commit,
    outbox_fan_out,
    events_log,
    events_log_in_order_of_commit,
    concurrent_writes_of_one_account,
    claims_lease_due_work,
    claim_limits,
    expired_leases_are_claimed_again,
    attempts_move_deliveries_on,
    endpoint_health,
    circuit_breaker,
    rate_limits_pace_claims,
    throttled_endpoints_wait,
    per_resource_ordering,
    release_leases_of_one_node,
    retry_and_recover,
    deleting_an_endpoint_cancels_its_work,
    next_due_and_queue_stats,
    purge_in_batches,
    dashboard_sessions,
    dashboard_sessions_expire_and_are_capped,
    dashboard_sessions_are_isolated,
);

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

// ---------------------------------------------------------------------------
// Accounts.

async fn accounts(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.account_count().await.unwrap(), 0);
    drop(conn);

    let acme = Account {
        id: ids::new_id(),
        name: "acme".to_owned(),
        created_at: ids::now(),
    };
    let key = ids::new_api_key();
    let acme_key = key_row(&acme.id, "first key");
    let mut tx = begin(&store).await;
    assert_eq!(tx.account_count().await.unwrap(), 0);
    tx.insert_account(&acme, &acme_key, &ids::hash_api_key(&key))
        .await
        .unwrap();
    assert_eq!(
        tx.account_count().await.unwrap(),
        1,
        "a write sees its own insert"
    );
    commit(tx).await;
    new_account(&store, "globex").await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.account_count().await.unwrap(), 2);
    let (found, found_key) = conn
        .api_key_by_hash(&ids::hash_api_key(&key))
        .await
        .unwrap()
        .expect("the account of its key");
    assert_eq!(
        (found.id, found.name, found.created_at),
        (acme.id.clone(), acme.name.clone(), acme.created_at)
    );
    assert_eq!(found_key, acme_key);
    assert!(
        conn.api_key_by_hash(&ids::hash_api_key(&ids::new_api_key()))
            .await
            .unwrap()
            .is_none()
    );
    // The key itself is not its hash.
    assert!(conn.api_key_by_hash(&key).await.unwrap().is_none());
    drop(conn);

    // A key hash names one account.
    let mut tx = begin(&store).await;
    let other = Account {
        id: ids::new_id(),
        name: "initech".to_owned(),
        created_at: ids::now(),
    };
    assert!(
        tx.insert_account(&other, &key_row(&other.id, "k"), &ids::hash_api_key(&key))
            .await
            .is_err(),
        "a second account with the same key hash"
    );
    drop(tx);
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.account_count().await.unwrap(),
        2,
        "nothing of the failed insert"
    );
}

async fn api_keys_are_added_capped_touched_and_revoked_but_never_the_last(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    let mut conn = store.read().await.unwrap();
    let first = conn.api_keys(&a).await.unwrap();
    assert_eq!(first.len(), 1);
    drop(conn);

    // Added up to the cap, listed oldest first.
    let mut second = key_row(&a, "second");
    second.created_at = first[0].created_at + 1;
    let second_hash = ids::hash_api_key(&ids::new_api_key());
    let mut tx = begin(&store).await;
    tx.insert_api_key(&second, &second_hash, 2).await.unwrap();
    commit(tx).await;
    let mut tx = begin(&store).await;
    let third = key_row(&a, "third");
    assert!(matches!(
        tx.insert_api_key(&third, &ids::hash_api_key(&ids::new_api_key()), 2)
            .await,
        Err(StoreError::Conflict(_))
    ));
    drop(tx);
    let mut conn = store.read().await.unwrap();
    let listed = conn.api_keys(&a).await.unwrap();
    assert_eq!(
        ids_of(&listed, |k| &k.id),
        [first[0].id.clone(), second.id.clone()]
    );
    assert_eq!(conn.api_keys(&b).await.unwrap().len(), 1);
    drop(conn);

    // A use is recorded.
    let mut tx = begin(&store).await;
    tx.touch_api_key(&second.id, 1_795_700_000).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    let (_, touched) = conn.api_key_by_hash(&second_hash).await.unwrap().unwrap();
    assert_eq!(touched.last_used_at, Some(1_795_700_000));
    drop(conn);

    // Sessions opened with each key.
    let now = ids::now();
    let mut with_second = session_row(&a, "s-second", now, now + 3600);
    with_second.key_id = Some(second.id.clone());
    let mut with_first = session_row(&a, "s-first", now, now + 3600);
    with_first.key_id = Some(first[0].id.clone());
    add_session(&store, &with_second).await;
    add_session(&store, &with_first).await;
    assert_eq!(
        read_session(&store, "s-second", now).await.unwrap().key_id,
        Some(second.id.clone())
    );

    // Another account's key, or an unknown one: not found.
    let theirs = conn_keys(&store, &b).await[0].id.clone();
    let mut tx = begin(&store).await;
    assert_eq!(
        tx.revoke_api_key(&a, &theirs).await.unwrap(),
        KeyRevocation::NotFound
    );
    assert_eq!(
        tx.revoke_api_key(&a, "ZZZZZZZZZZZZZZZZ").await.unwrap(),
        KeyRevocation::NotFound
    );
    // Revoked: gone with its sessions, the other's kept.
    assert_eq!(
        tx.revoke_api_key(&a, &second.id).await.unwrap(),
        KeyRevocation::Revoked
    );
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert!(conn.api_key_by_hash(&second_hash).await.unwrap().is_none());
    drop(conn);
    assert_eq!(read_session(&store, "s-second", now).await, None);
    assert!(read_session(&store, "s-first", now).await.is_some());
    // A session written for the revoked key afterwards (a login that
    // checked the key just before) is not live either.
    let mut late = session_row(&a, "s-late", now, now + 3600);
    late.key_id = Some(second.id.clone());
    add_session(&store, &late).await;
    assert_eq!(read_session(&store, "s-late", now).await, None);
    // The last one stays.
    let mut tx = begin(&store).await;
    assert_eq!(
        tx.revoke_api_key(&a, &first[0].id).await.unwrap(),
        KeyRevocation::Last
    );
    drop(tx);
    assert_eq!(conn_keys(&store, &a).await.len(), 1);
    assert_eq!(conn_keys(&store, &b).await.len(), 1);
}

async fn conn_keys(store: &Arc<dyn Store>, account: &str) -> Vec<ApiKeyRecord> {
    let mut conn = store.read().await.unwrap();
    conn.api_keys(account).await.unwrap()
}

// ---------------------------------------------------------------------------
// Resources: insert, read back, update, delete, uniqueness.

async fn contacts(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    let mut kevin = add_contact(&store, &a, "kevin").await;
    let marv = add_contact(&store, &a, "marv").await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.contact(&a, &kevin.id).await.unwrap().as_ref(),
        Some(&kevin)
    );
    assert_eq!(conn.contact(&a, "ZZZZZZZZZZZZZZZZ").await.unwrap(), None);
    let mut both = conn
        .contacts_by_ids(
            &a,
            &[marv.id.clone(), kevin.id.clone(), "ZZZZZZZZZZZZZZZZ".into()],
        )
        .await
        .unwrap();
    both.sort_by(|x, y| x.username.cmp(&y.username));
    assert_eq!(both, [kevin.clone(), marv.clone()]);
    assert!(conn.contacts_by_ids(&a, &[]).await.unwrap().is_empty());
    assert!(!conn.contact_has_messages(&a, &kevin.id).await.unwrap());
    drop(conn);

    // Update every mutable field.
    kevin.username = "kevin.mccallister".to_owned();
    kevin.phone_number = "+1 555 0100".to_owned();
    kevin.avatar_url = Some("https://example.com/kevin.png".to_owned());
    kevin.display_name = Some("Kevin McCallister".to_owned());
    kevin.last_active_at = Some(ids::now());
    let mut tx = begin(&store).await;
    tx.update_contact(&a, &kevin).await.unwrap();
    assert_eq!(
        tx.contact(&a, &kevin.id).await.unwrap().as_ref(),
        Some(&kevin)
    );
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.contact(&a, &kevin.id).await.unwrap().as_ref(),
        Some(&kevin)
    );
    drop(conn);

    // Usernames are unique per account, on insert and on update; a failed
    // write keeps nothing of its transaction.
    let harry = contact("harry");
    let mut tx = begin(&store).await;
    tx.insert_contact(&a, &harry).await.unwrap();
    assert_conflict(tx.insert_contact(&a, &contact("marv")).await, "username");
    drop(tx);
    let mut tx = begin(&store).await;
    let mut renamed = marv.clone();
    renamed.username = kevin.username.clone();
    assert_conflict(tx.update_contact(&a, &renamed).await, "username");
    drop(tx);
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.contact(&a, &harry.id).await.unwrap(), None);
    assert_eq!(
        conn.contact(&a, &marv.id).await.unwrap().as_ref(),
        Some(&marv)
    );
    drop(conn);
    // Another account may use the same username.
    add_contact(&store, &b, "marv").await;

    // A conversation id is set on the contact once one exists.
    let conv = conversation_with_contact(&marv.id);
    let mut with_conv = marv.clone();
    with_conv.conversation_id = Some(conv.id.clone());
    let mut tx = begin(&store).await;
    tx.insert_conversation(&a, &conv).await.unwrap();
    tx.update_contact(&a, &with_conv).await.unwrap();
    tx.insert_message(&a, &message(&conv.id, Some(&marv.id), "Hi Kevin"))
        .await
        .unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.contact(&a, &marv.id).await.unwrap().as_ref(),
        Some(&with_conv)
    );
    assert!(conn.contact_has_messages(&a, &marv.id).await.unwrap());
    assert!(!conn.contact_has_messages(&a, &kevin.id).await.unwrap());
    drop(conn);

    // Delete.
    let mut tx = begin(&store).await;
    tx.delete_contact(&a, &kevin.id).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.contact(&a, &kevin.id).await.unwrap(), None);
    let listed = conn.list_contacts(&a, &page(10)).await.unwrap();
    assert_eq!(
        ids_of(&listed.items, |c| &c.id),
        std::slice::from_ref(&marv.id)
    );
    drop(conn);
    // The username is free again.
    add_contact(&store, &a, "kevin.mccallister").await;
}

async fn conversations(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let kevin = add_contact(&store, &a, "kevin").await;
    let family = group("family");
    let mut with_kevin = conversation_with_contact(&kevin.id);
    with_kevin.last_active_at = Some(ids::now());
    let mut with_family = conversation_with_group(&family.id);
    let mut tx = begin(&store).await;
    tx.insert_group(&a, &family).await.unwrap();
    tx.insert_conversation(&a, &with_kevin).await.unwrap();
    tx.insert_conversation(&a, &with_family).await.unwrap();
    commit(tx).await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.conversation(&a, &with_kevin.id)
            .await
            .unwrap()
            .as_ref(),
        Some(&with_kevin)
    );
    assert_eq!(
        conn.conversation(&a, &with_family.id)
            .await
            .unwrap()
            .as_ref(),
        Some(&with_family)
    );
    drop(conn);

    // One conversation per contact and per group.
    let mut tx = begin(&store).await;
    assert_conflict(
        tx.insert_conversation(&a, &conversation_with_contact(&kevin.id))
            .await,
        "conversation participant",
    );
    drop(tx);
    let mut tx = begin(&store).await;
    assert_conflict(
        tx.insert_conversation(&a, &conversation_with_group(&family.id))
            .await,
        "conversation participant",
    );
    drop(tx);

    // Update every mutable field.
    let pinned = add_message(&store, &a, &with_family.id, "pin me").await;
    with_family.pinned_message_id = Some(pinned.id.clone());
    with_family.is_pinned = true;
    with_family.is_muted = true;
    with_family.last_active_at = Some(ids::now());
    with_family.last_opened_at = Some(ids::now());
    with_family.archived_at = Some(ids::now());
    let mut tx = begin(&store).await;
    tx.update_conversation(&a, &with_family).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.conversation(&a, &with_family.id)
            .await
            .unwrap()
            .as_ref(),
        Some(&with_family)
    );
    drop(conn);

    // Delete (the domain deletes its messages first).
    let mut tx = begin(&store).await;
    tx.delete_message(&a, &pinned.id).await.unwrap();
    tx.delete_conversation(&a, &with_family.id).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.conversation(&a, &with_family.id).await.unwrap(), None);
    let listed = conn
        .list_conversations(&a, &ConversationFilter::default(), &page(10))
        .await
        .unwrap();
    assert_eq!(ids_of(&listed.items, |c| &c.id), [with_kevin.id.clone()]);
    drop(conn);
    // The group may have a conversation again.
    let mut tx = begin(&store).await;
    tx.insert_conversation(&a, &conversation_with_group(&family.id))
        .await
        .unwrap();
    commit(tx).await;
}

async fn messages(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let conv = add_conversation(&store, &a, "kevin").await;
    let kevin = conv.contact_id.clone().unwrap();
    let mut m = message(&conv.id, Some(&kevin), "Keep the change, ya filthy animal");
    let mine = message(&conv.id, None, "Merry Christmas");
    let mut tx = begin(&store).await;
    tx.insert_message(&a, &m).await.unwrap();
    tx.insert_message(&a, &mine).await.unwrap();
    commit(tx).await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.message(&a, &m.id).await.unwrap().as_ref(), Some(&m));
    assert_eq!(
        conn.message(&a, &mine.id).await.unwrap().as_ref(),
        Some(&mine)
    );
    assert_eq!(
        conn.messages_in_conversation(&a, &conv.id).await.unwrap(),
        [m.clone(), mine.clone()],
        "oldest first"
    );
    drop(conn);

    // Update: text, reactions (JSON), read_at, updated_at.
    m.message = "Keep the change".to_owned();
    m.reactions = Json(vec![
        Reaction {
            contact_id: kevin.clone(),
            emoji: "👍".to_owned(),
            created_at: ids::now(),
        },
        Reaction {
            contact_id: kevin.clone(),
            emoji: "🎄".to_owned(),
            created_at: ids::now(),
        },
    ]);
    m.read_at = Some(ids::now());
    m.updated_at = ids::now() + 1;
    let mut tx = begin(&store).await;
    tx.update_message(&a, &m).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.message(&a, &m.id).await.unwrap().as_ref(), Some(&m));
    drop(conn);

    // A message needs its conversation.
    let mut tx = begin(&store).await;
    assert!(
        tx.insert_message(&a, &message("ZZZZZZZZZZZZZZZZ", None, "orphan"))
            .await
            .is_err(),
        "a message in a conversation that does not exist"
    );
    drop(tx);

    let mut tx = begin(&store).await;
    tx.delete_message(&a, &m.id).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.message(&a, &m.id).await.unwrap(), None);
    assert_eq!(
        conn.messages_in_conversation(&a, &conv.id).await.unwrap(),
        [mine]
    );
    assert!(!conn.contact_has_messages(&a, &kevin).await.unwrap());
}

async fn groups(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let kevin = add_contact(&store, &a, "kevin").await;
    let buzz = add_contact(&store, &a, "buzz").await;
    let fuller = add_contact(&store, &a, "fuller").await;
    let mut family = group("family");
    let other = group("wet bandits");
    let mut tx = begin(&store).await;
    tx.insert_group(&a, &family).await.unwrap();
    tx.insert_group(&a, &other).await.unwrap();
    // Members keep the order they were given in.
    tx.set_group_members(
        &family.id,
        &[fuller.id.clone(), kevin.id.clone(), buzz.id.clone()],
    )
    .await
    .unwrap();
    tx.set_group_members(&other.id, std::slice::from_ref(&kevin.id))
        .await
        .unwrap();
    commit(tx).await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.group(&a, &family.id).await.unwrap().as_ref(),
        Some(&family)
    );
    assert_eq!(
        conn.group_members(&family.id).await.unwrap(),
        [fuller.id.clone(), kevin.id.clone(), buzz.id.clone()]
    );
    assert_eq!(
        conn.groups_with_member(&a, &kevin.id).await.unwrap(),
        [family.id.clone(), other.id.clone()]
    );
    assert_eq!(
        conn.groups_with_member(&a, &buzz.id).await.unwrap(),
        [family.id.clone()]
    );
    drop(conn);

    // Replacing the members; a contact is a member once.
    let mut tx = begin(&store).await;
    tx.set_group_members(&family.id, &[buzz.id.clone(), kevin.id.clone()])
        .await
        .unwrap();
    commit(tx).await;
    let mut tx = begin(&store).await;
    assert_conflict(
        tx.set_group_members(&family.id, &[buzz.id.clone(), buzz.id.clone()])
            .await,
        "group member",
    );
    drop(tx);
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.group_members(&family.id).await.unwrap(),
        [buzz.id.clone(), kevin.id.clone()]
    );
    assert!(
        conn.groups_with_member(&a, &fuller.id)
            .await
            .unwrap()
            .is_empty()
    );
    drop(conn);

    // Update every mutable field.
    family.name = "McCallisters".to_owned();
    family.description = None;
    family.avatar_url = Some("https://example.com/family.png".to_owned());
    family.conversation_id = Some(ids::new_id());
    family.archived_at = Some(ids::now());
    let mut tx = begin(&store).await;
    tx.update_group(&a, &family).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.group(&a, &family.id).await.unwrap().as_ref(),
        Some(&family)
    );
    drop(conn);

    // Deleting a group deletes its memberships.
    let mut tx = begin(&store).await;
    tx.delete_group(&a, &family.id).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.group(&a, &family.id).await.unwrap(), None);
    assert!(conn.group_members(&family.id).await.unwrap().is_empty());
    assert_eq!(
        conn.groups_with_member(&a, &kevin.id).await.unwrap(),
        std::slice::from_ref(&other.id)
    );
    drop(conn);
    // Its members can be deleted now (no membership refers to them).
    let mut tx = begin(&store).await;
    tx.delete_contact(&a, &buzz.id).await.unwrap();
    commit(tx).await;
}

async fn attachments(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let conv = add_conversation(&store, &a, "kevin").await;
    let m1 = add_message(&store, &a, &conv.id, "itinerary").await;
    let m2 = add_message(&store, &a, &conv.id, "photos").await;
    let mut pdf = attachment(&m1.id, "itinerary.pdf");
    let ticket = attachment(&m1.id, "ticket.pdf");
    let photo = attachment(&m2.id, "house.jpg");
    let mut tx = begin(&store).await;
    for att in [&pdf, &ticket, &photo] {
        tx.insert_attachment(&a, att).await.unwrap();
    }
    commit(tx).await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.attachment(&a, &pdf.id).await.unwrap().as_ref(),
        Some(&pdf)
    );
    assert_eq!(
        conn.attachments_of_message(&a, &m1.id).await.unwrap(),
        [pdf.clone(), ticket.clone()],
        "oldest first"
    );
    drop(conn);

    // Only the filename changes.
    pdf.filename = "itinerary-final.pdf".to_owned();
    let mut changed = pdf.clone();
    changed.file_type = "text/plain".to_owned();
    changed.file_size = 1;
    let mut tx = begin(&store).await;
    tx.update_attachment(&a, &changed).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.attachment(&a, &pdf.id).await.unwrap().as_ref(),
        Some(&pdf)
    );
    drop(conn);

    // An attachment needs its message.
    let mut tx = begin(&store).await;
    assert!(
        tx.insert_attachment(&a, &attachment("ZZZZZZZZZZZZZZZZ", "orphan.txt"))
            .await
            .is_err(),
        "an attachment of a message that does not exist"
    );
    drop(tx);

    let mut tx = begin(&store).await;
    tx.delete_attachment(&a, &ticket.id).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.attachment(&a, &ticket.id).await.unwrap(), None);
    assert_eq!(
        conn.attachments_of_message(&a, &m1.id).await.unwrap(),
        [pdf]
    );
    assert_eq!(
        conn.attachments_of_message(&a, &m2.id).await.unwrap(),
        [photo]
    );
}

async fn endpoints(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    let mut ep = endpoint("orders", &["contact.created", "message.created"]);
    ep.description = Some("the order service".to_owned());
    ep.previous_secret = Some(format!("whsec_{}", ids::new_id()));
    ep.previous_secret_expires_at = Some(ids::now() + 86_400);
    let all = add_endpoint(&store, &a, "all", &["*"], true).await;
    let mut tx = begin(&store).await;
    tx.insert_endpoint(&a, &ep).await.unwrap();
    commit(tx).await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.endpoint(&a, &ep.id).await.unwrap().as_ref(), Some(&ep));
    assert_eq!(
        conn.endpoint(&a, &all.id).await.unwrap().as_ref(),
        Some(&all)
    );
    drop(conn);

    // Names are unique per account, on insert and on update.
    let mut tx = begin(&store).await;
    assert_conflict(
        tx.insert_endpoint(&a, &endpoint("orders", &["*"])).await,
        "endpoint name",
    );
    drop(tx);
    let mut tx = begin(&store).await;
    let mut renamed = all.clone();
    renamed.name = "orders".to_owned();
    assert_conflict(tx.update_endpoint(&a, &renamed).await, "endpoint name");
    drop(tx);
    add_endpoint(&store, &b, "orders", &["*"], true).await;

    // Update every mutable field.
    ep.name = "orders-v2".to_owned();
    ep.url = "https://hooks.example.com/v2".to_owned();
    ep.description = None;
    ep.events = Json(vec!["group.created".to_owned()]);
    ep.enabled = false;
    ep.disabled_reason = Some("the endpoint answered 410 Gone".to_owned());
    ep.secret = format!("whsec_{}", ids::new_id());
    ep.previous_secret = None;
    ep.previous_secret_expires_at = None;
    ep.failing_since = Some(ids::now() - 60);
    ep.signature_scheme = "ed25519".to_owned();
    ep.updated_at = ids::now() + 1;
    let mut tx = begin(&store).await;
    tx.update_endpoint(&a, &ep).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.endpoint(&a, &ep.id).await.unwrap().as_ref(), Some(&ep));
    drop(conn);

    let mut tx = begin(&store).await;
    tx.delete_endpoint(&a, &all.id).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.endpoint(&a, &all.id).await.unwrap(), None);
    let listed = conn.list_endpoints(&a, &page(10)).await.unwrap();
    assert_eq!(ids_of(&listed.items, |e| &e.id), [ep.id.clone()]);
    drop(conn);
    // The name is free again.
    add_endpoint(&store, &a, "all", &["*"], true).await;
}

async fn endpoint_keys_are_read_in_pages_and_replaced_only_if_unchanged(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    let account_of = |n: usize| if n.is_multiple_of(2) { &a } else { &b };
    let mut made = Vec::new();
    for n in 0..5 {
        let account = account_of(n);
        let mut ep = endpoint(&format!("e{n}"), &["*"]);
        if n == 3 {
            ep.previous_secret = Some("nfsealed1:previous".to_owned());
        }
        let mut tx = begin(&store).await;
        tx.insert_endpoint(account, &ep).await.unwrap();
        commit(tx).await;
        made.push((account.clone(), ep));
    }
    made.sort_by(|x, y| x.1.id.cmp(&y.1.id));

    // Every account's, in id order, in pages.
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = store.endpoint_keys(&after, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = last.endpoint_id.clone();
        seen.extend(page);
    }
    let want: Vec<StoredKeys> = made
        .iter()
        .map(|(_, e)| StoredKeys {
            endpoint_id: e.id.clone(),
            secret: e.secret.clone(),
            previous_secret: e.previous_secret.clone(),
        })
        .collect();
    assert_eq!(seen, want);

    // Replaced only while unchanged, with or without a previous secret.
    for before in &want {
        let after = StoredKeys {
            endpoint_id: before.endpoint_id.clone(),
            secret: format!("nfsealed1:{}", ids::new_id()),
            previous_secret: before
                .previous_secret
                .as_ref()
                .map(|_| "nfsealed1:p".to_owned()),
        };
        assert!(store.replace_endpoint_keys(before, &after).await.unwrap());
        assert!(!store.replace_endpoint_keys(before, &after).await.unwrap());
        let mut stale = before.clone();
        stale.previous_secret = Some("other".to_owned());
        assert!(!store.replace_endpoint_keys(&stale, &after).await.unwrap());
    }
    let now = store.endpoint_keys("", 10).await.unwrap();
    assert!(now.iter().all(|k| k.secret.starts_with("nfsealed1:")));
    // The rest of each endpoint is untouched.
    let mut conn = store.read().await.unwrap();
    for (account, ep) in &made {
        let found = conn.endpoint(account, &ep.id).await.unwrap().unwrap();
        assert_eq!((&found.name, &found.url), (&ep.name, &ep.url));
    }
}

// ---------------------------------------------------------------------------
// Pagination and filters.

async fn pagination_of_every_list(store: Arc<dyn Store>) {
    const N: usize = 5;
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    // Another account's rows are interleaved: they must never show up, and
    // their ids are not cursors here.
    let b_conv = add_conversation(&store, &b, "intruder").await;
    let b_contact = b_conv.contact_id.clone().unwrap();

    let mut contacts = Vec::new();
    let mut convs = Vec::new();
    for i in 0..N {
        let conv = add_conversation(&store, &a, &format!("contact{i}")).await;
        contacts.push(conv.contact_id.clone().unwrap());
        convs.push(conv.id.clone());
        add_contact(&store, &b, &format!("other{i}")).await;
    }
    let mut messages = Vec::new();
    for i in 0..N {
        messages.push(
            add_message(&store, &a, &convs[0], &format!("m{i}"))
                .await
                .id,
        );
        add_message(&store, &b, &b_conv.id, "other").await;
    }
    let mut groups = Vec::new();
    let mut attachments = Vec::new();
    for i in 0..N {
        let g = group(&format!("g{i}"));
        let att = attachment(&messages[0], &format!("f{i}.txt"));
        let mut tx = begin(&store).await;
        tx.insert_group(&a, &g).await.unwrap();
        tx.insert_attachment(&a, &att).await.unwrap();
        tx.insert_group(&b, &group("other")).await.unwrap();
        commit(tx).await;
        groups.push(g.id);
        attachments.push(att.id);
    }
    let mut endpoints = Vec::new();
    for i in 0..N {
        endpoints.push(
            add_endpoint(&store, &a, &format!("ep{i}"), &["*"], true)
                .await
                .id,
        );
        add_endpoint(&store, &b, &format!("ep{i}"), &["*"], true).await;
    }
    // Events after the endpoints, so each fans out to all five.
    for _ in 0..N {
        emit_event(&store, &a, &event("contact.updated")).await;
        emit_event(&store, &b, &event("contact.updated")).await;
    }
    let mut conn = store.read().await.unwrap();
    let events: Vec<String> = conn
        .events_after(&a, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    drop(conn);
    assert_eq!(events.len(), N);
    let b_event = {
        let mut conn = store.read().await.unwrap();
        conn.latest_event_id(&b).await.unwrap().unwrap()
    };
    // The deliveries of one endpoint, in the order of their events.
    let mut delivered = Vec::new();
    for d in deliveries(&store, &a, &endpoints[0])
        .await
        .into_iter()
        .rev()
    {
        delivered.push(d.id);
    }
    assert_eq!(delivered.len(), N);

    let newest_first = |ids: &[String]| ids.iter().rev().cloned().collect::<Vec<_>>();

    let s = &store;
    let acct = a.as_str();
    check_pages(
        "contacts",
        |p| async move { s.read().await?.list_contacts(acct, &p).await },
        |c| &c.id,
        &newest_first(&contacts),
        &[&b_contact, &convs[0]],
    )
    .await;
    check_pages(
        "conversations",
        |p| async move {
            s.read()
                .await?
                .list_conversations(acct, &ConversationFilter::default(), &p)
                .await
        },
        |c| &c.id,
        &newest_first(&convs),
        &[&b_conv.id, &contacts[0]],
    )
    .await;
    check_pages(
        "messages",
        |p| async move { s.read().await?.list_messages(acct, None, &p).await },
        |m| &m.id,
        &newest_first(&messages),
        &[&convs[0]],
    )
    .await;
    check_pages(
        "groups",
        |p| async move { s.read().await?.list_groups(acct, &p).await },
        |g| &g.id,
        &newest_first(&groups),
        &[&contacts[0]],
    )
    .await;
    check_pages(
        "attachments",
        |p| async move { s.read().await?.list_attachments(acct, None, &p).await },
        |a| &a.id,
        &newest_first(&attachments),
        &[&messages[0]],
    )
    .await;
    check_pages(
        "events",
        |p| async move { s.read().await?.list_events(acct, None, &p).await },
        |e| &e.id,
        &newest_first(&events),
        &[&b_event, &delivered[0]],
    )
    .await;
    check_pages(
        "endpoints",
        |p| async move { s.read().await?.list_endpoints(acct, &p).await },
        |e| &e.id,
        &newest_first(&endpoints),
        &[&events[0]],
    )
    .await;
    let ep0 = endpoints[0].as_str();
    check_pages(
        "deliveries",
        |p| async move { s.read().await?.list_deliveries(acct, ep0, None, &p).await },
        |d| &d.id,
        &newest_first(&delivered),
        &[&events[0]],
    )
    .await;
}

async fn filtered_lists(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let s = &store;
    let acct = a.as_str();

    // Conversations: muted, pinned, archived, group.
    let family = group("family");
    let mut tx = begin(&store).await;
    tx.insert_group(&a, &family).await.unwrap();
    commit(tx).await;
    let plain = add_conversation(&store, &a, "plain").await;
    let mut muted = add_conversation(&store, &a, "muted").await;
    let mut pinned = add_conversation(&store, &a, "pinned").await;
    let mut archived = add_conversation(&store, &a, "archived").await;
    let group_conv = conversation_with_group(&family.id);
    muted.is_muted = true;
    pinned.is_pinned = true;
    archived.archived_at = Some(ids::now());
    archived.is_muted = true;
    let mut tx = begin(&store).await;
    for c in [&muted, &pinned, &archived] {
        tx.update_conversation(&a, c).await.unwrap();
    }
    tx.insert_conversation(&a, &group_conv).await.unwrap();
    commit(tx).await;
    let cases: [(ConversationFilter, Vec<&str>); 8] = [
        (
            ConversationFilter::default(),
            vec![
                &group_conv.id,
                &archived.id,
                &pinned.id,
                &muted.id,
                &plain.id,
            ],
        ),
        (
            ConversationFilter {
                muted: Some(true),
                ..Default::default()
            },
            vec![&archived.id, &muted.id],
        ),
        (
            ConversationFilter {
                muted: Some(false),
                ..Default::default()
            },
            vec![&group_conv.id, &pinned.id, &plain.id],
        ),
        (
            ConversationFilter {
                pinned: Some(true),
                ..Default::default()
            },
            vec![&pinned.id],
        ),
        (
            ConversationFilter {
                archived: Some(true),
                ..Default::default()
            },
            vec![&archived.id],
        ),
        (
            ConversationFilter {
                archived: Some(false),
                muted: Some(true),
                ..Default::default()
            },
            vec![&muted.id],
        ),
        (
            ConversationFilter {
                group_id: Some(family.id.clone()),
                ..Default::default()
            },
            vec![&group_conv.id],
        ),
        (
            ConversationFilter {
                group_id: Some("ZZZZZZZZZZZZZZZZ".to_owned()),
                ..Default::default()
            },
            vec![],
        ),
    ];
    for (filter, expected) in cases {
        let expected: Vec<String> = expected.into_iter().map(str::to_owned).collect();
        let f = &filter;
        check_pages(
            &format!("conversations {filter:?}"),
            |p| async move { s.read().await?.list_conversations(acct, f, &p).await },
            |c| &c.id,
            &expected,
            &[],
        )
        .await;
    }
    // A cursor outside the filter still names a row of the list's kind: the
    // page starts from its position.
    let mut conn = store.read().await.unwrap();
    let muted_only = ConversationFilter {
        muted: Some(true),
        ..Default::default()
    };
    let got = conn
        .list_conversations(&a, &muted_only, &after(10, &pinned.id))
        .await
        .unwrap();
    assert_eq!(ids_of(&got.items, |c| &c.id), [muted.id.clone()]);
    drop(conn);

    // Messages by conversation; attachments by message.
    let mut in_plain = Vec::new();
    let mut in_muted = Vec::new();
    for i in 0..3 {
        in_plain.push(
            add_message(&store, &a, &plain.id, &format!("p{i}"))
                .await
                .id,
        );
        in_muted.push(
            add_message(&store, &a, &muted.id, &format!("m{i}"))
                .await
                .id,
        );
    }
    let mut of_first = Vec::new();
    let mut tx = begin(&store).await;
    for i in 0..3 {
        let att = attachment(&in_plain[0], &format!("a{i}.txt"));
        tx.insert_attachment(&a, &att).await.unwrap();
        of_first.push(att.id);
        tx.insert_attachment(&a, &attachment(&in_plain[1], "other.txt"))
            .await
            .unwrap();
    }
    commit(tx).await;
    let rev = |v: &[String]| v.iter().rev().cloned().collect::<Vec<_>>();
    let plain_id = plain.id.as_str();
    check_pages(
        "messages of a conversation",
        |p| async move {
            s.read()
                .await?
                .list_messages(acct, Some(plain_id), &p)
                .await
        },
        |m| &m.id,
        &rev(&in_plain),
        &[plain_id],
    )
    .await;
    let first_message = in_plain[0].as_str();
    check_pages(
        "attachments of a message",
        |p| async move {
            s.read()
                .await?
                .list_attachments(acct, Some(first_message), &p)
                .await
        },
        |a| &a.id,
        &rev(&of_first),
        &[first_message],
    )
    .await;
    let mut conn = store.read().await.unwrap();
    let none = conn
        .list_messages(&a, Some("ZZZZZZZZZZZZZZZZ"), &page(10))
        .await
        .unwrap();
    assert!(none.items.is_empty() && !none.has_more);
    let none = conn
        .list_attachments(&a, Some(&in_muted[0]), &page(10))
        .await
        .unwrap();
    assert!(none.items.is_empty() && !none.has_more);
    drop(conn);

    // Events by type.
    let mut created = Vec::new();
    for _ in 0..3 {
        let e = event("contact.created");
        emit_event(&store, &a, &e).await;
        created.push(e.id);
        emit_event(&store, &a, &event("contact.updated")).await;
    }
    check_pages(
        "events of a type",
        |p| async move {
            s.read()
                .await?
                .list_events(acct, Some("contact.created"), &p)
                .await
        },
        |e| &e.id,
        &rev(&created),
        &[],
    )
    .await;

    // Deliveries by status.
    let ep = add_endpoint(&store, &a, "all", &["*"], true).await;
    let sent = emit_events(&store, &a, "group.created", 4).await;
    let claimed = claim(&store, &claim_all("node-a:1")).await;
    assert_eq!(claimed.len(), 4);
    let mut by_event: Vec<&Claimed> = claimed.iter().collect();
    by_event.sort_by_key(|c| sent.iter().position(|e| e.id == c.event_id));
    let results = vec![
        result_of(by_event[0], "node-a:1", Some(200), NextStep::Succeeded),
        result_of(by_event[1], "node-a:1", Some(500), NextStep::Failed),
        result_of(by_event[2], "node-a:1", Some(200), NextStep::Succeeded),
    ];
    store.record_attempts(&results, &POLICY).await.unwrap();
    let ep_id = ep.id.as_str();
    for (status, expected) in [
        (
            "succeeded",
            vec![&by_event[2].delivery_id, &by_event[0].delivery_id],
        ),
        ("failed", vec![&by_event[1].delivery_id]),
        ("pending", vec![&by_event[3].delivery_id]),
        ("cancelled", vec![]),
    ] {
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        check_pages(
            &format!("{status} deliveries"),
            |p| async move {
                s.read()
                    .await?
                    .list_deliveries(acct, ep_id, Some(status), &p)
                    .await
            },
            |d| &d.id,
            &expected,
            &[],
        )
        .await;
    }
}

// ---------------------------------------------------------------------------
// Idempotency keys.

async fn idempotency_keys(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    let first = idempotent(201, r#"{"id":"WAz8eIbvDR60rouK"}"#);
    let mut tx = begin(&store).await;
    assert_eq!(tx.idempotent_response(&a, "key-1").await.unwrap(), None);
    tx.insert_idempotent_response(&a, "key-1", &first)
        .await
        .unwrap();
    assert_eq!(
        tx.idempotent_response(&a, "key-1").await.unwrap().as_ref(),
        Some(&first)
    );
    commit(tx).await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.idempotent_response(&a, "key-1")
            .await
            .unwrap()
            .as_ref(),
        Some(&first)
    );
    assert_eq!(conn.idempotent_response(&a, "key-2").await.unwrap(), None);
    assert_eq!(conn.idempotent_response(&b, "key-1").await.unwrap(), None);
    drop(conn);

    // The same key again, in a later write: a conflict, and the first stays.
    let mut tx = begin(&store).await;
    assert_conflict(
        tx.insert_idempotent_response(&a, "key-1", &idempotent(409, "{}"))
            .await,
        "idempotency key",
    );
    drop(tx);
    // Twice in one write: the same.
    let mut tx = begin(&store).await;
    tx.insert_idempotent_response(&a, "key-2", &first)
        .await
        .unwrap();
    assert_conflict(
        tx.insert_idempotent_response(&a, "key-2", &first).await,
        "idempotency key",
    );
    drop(tx);
    // Keys are per account.
    let theirs = idempotent(200, "[]");
    let mut tx = begin(&store).await;
    tx.insert_idempotent_response(&b, "key-1", &theirs)
        .await
        .unwrap();
    commit(tx).await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.idempotent_response(&a, "key-1")
            .await
            .unwrap()
            .as_ref(),
        Some(&first)
    );
    assert_eq!(conn.idempotent_response(&a, "key-2").await.unwrap(), None);
    assert_eq!(
        conn.idempotent_response(&b, "key-1")
            .await
            .unwrap()
            .as_ref(),
        Some(&theirs)
    );
}

// ---------------------------------------------------------------------------
// Isolation.

async fn isolation_between_accounts(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;

    // One of everything in account A.
    let conv = add_conversation(&store, &a, "kevin").await;
    let kevin = conv.contact_id.clone().unwrap();
    let m = message(&conv.id, Some(&kevin), "hello");
    let g = group("family");
    let att = attachment(&m.id, "a.txt");
    let ep = endpoint("all", &["*"]);
    let e = event("message.created");
    let mut tx = begin(&store).await;
    tx.insert_message(&a, &m).await.unwrap();
    tx.insert_group(&a, &g).await.unwrap();
    tx.set_group_members(&g.id, std::slice::from_ref(&kevin))
        .await
        .unwrap();
    tx.insert_attachment(&a, &att).await.unwrap();
    tx.insert_endpoint(&a, &ep).await.unwrap();
    assert_eq!(tx.insert_event(&a, &e).await.unwrap(), 1);
    tx.insert_idempotent_response(&a, "key", &idempotent(201, "{}"))
        .await
        .unwrap();
    commit(tx).await;
    let claimed = claim(&store, &claim_all("node-a:1")).await;
    assert_eq!(claimed.len(), 1);
    let d = claimed[0].delivery_id.clone();
    store
        .record_attempts(
            &[result_of(
                &claimed[0],
                "node-a:1",
                Some(500),
                NextStep::Failed,
            )],
            &POLICY,
        )
        .await
        .unwrap();

    // Account B sees none of it.
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.contact(&b, &kevin).await.unwrap(), None);
    assert!(
        conn.contacts_by_ids(&b, std::slice::from_ref(&kevin))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!conn.contact_has_messages(&b, &kevin).await.unwrap());
    assert_eq!(conn.conversation(&b, &conv.id).await.unwrap(), None);
    assert_eq!(conn.message(&b, &m.id).await.unwrap(), None);
    assert!(
        conn.messages_in_conversation(&b, &conv.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(conn.group(&b, &g.id).await.unwrap(), None);
    assert!(
        conn.groups_with_member(&b, &kevin)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(conn.attachment(&b, &att.id).await.unwrap(), None);
    assert!(
        conn.attachments_of_message(&b, &m.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(conn.event(&b, &e.id).await.unwrap(), None);
    assert!(conn.events_after(&b, None, 100).await.unwrap().is_empty());
    assert_unknown_cursor(
        conn.events_after(&b, Some(&e.id), 100).await,
        "events_after",
    );
    assert_eq!(conn.latest_event_id(&b).await.unwrap(), None);
    assert_eq!(conn.idempotent_response(&b, "key").await.unwrap(), None);
    assert_eq!(conn.endpoint(&b, &ep.id).await.unwrap(), None);
    assert_eq!(conn.delivery(&b, &d).await.unwrap(), None);
    assert!(conn.attempts(&b, &d).await.unwrap().is_empty());
    let lists = [
        conn.list_contacts(&b, &page(100))
            .await
            .unwrap()
            .items
            .len(),
        conn.list_conversations(&b, &ConversationFilter::default(), &page(100))
            .await
            .unwrap()
            .items
            .len(),
        conn.list_messages(&b, None, &page(100))
            .await
            .unwrap()
            .items
            .len(),
        conn.list_messages(&b, Some(&conv.id), &page(100))
            .await
            .unwrap()
            .items
            .len(),
        conn.list_groups(&b, &page(100)).await.unwrap().items.len(),
        conn.list_attachments(&b, None, &page(100))
            .await
            .unwrap()
            .items
            .len(),
        conn.list_attachments(&b, Some(&m.id), &page(100))
            .await
            .unwrap()
            .items
            .len(),
        conn.list_events(&b, None, &page(100))
            .await
            .unwrap()
            .items
            .len(),
        conn.list_endpoints(&b, &page(100))
            .await
            .unwrap()
            .items
            .len(),
        conn.list_deliveries(&b, &ep.id, None, &page(100))
            .await
            .unwrap()
            .items
            .len(),
    ];
    assert_eq!(lists, [0; 10], "account B's lists");
    // A sees its own (the same reads, as a control).
    assert!(conn.contact(&a, &kevin).await.unwrap().is_some());
    assert_eq!(conn.attempts(&a, &d).await.unwrap().len(), 1);
    drop(conn);

    // Writes through account B change nothing of A's rows, including the
    // rows keyed by a parent's id alone (an endpoint's subscription, a
    // group's members).
    let mut renamed = conn_contact(&store, &a, &kevin).await;
    renamed.username = "hijacked".to_owned();
    let mut tx = begin(&store).await;
    tx.update_contact(&b, &renamed).await.unwrap();
    let mut moved = conv.clone();
    moved.is_muted = true;
    tx.update_conversation(&b, &moved).await.unwrap();
    let mut edited = m.clone();
    edited.message = "hijacked".to_owned();
    tx.update_message(&b, &edited).await.unwrap();
    let mut g2 = g.clone();
    g2.name = "hijacked".to_owned();
    tx.update_group(&b, &g2).await.unwrap();
    let mut att2 = att.clone();
    att2.filename = "hijacked".to_owned();
    tx.update_attachment(&b, &att2).await.unwrap();
    let mut ep2 = ep.clone();
    ep2.url = "https://evil.example.com/".to_owned();
    ep2.events = Json(vec!["group.deleted".to_owned()]);
    tx.update_endpoint(&b, &ep2).await.unwrap();
    tx.delete_group(&b, &g.id).await.unwrap();
    assert!(!tx.retry_delivery(&b, &d, ids::now_ms()).await.unwrap());
    assert_eq!(
        tx.recover_deliveries(&b, &ep.id, 0, ids::now_ms())
            .await
            .unwrap(),
        0
    );
    tx.delete_attachment(&b, &att.id).await.unwrap();
    tx.delete_endpoint(&b, &ep.id).await.unwrap();
    commit(tx).await;
    let mut tx = begin(&store).await;
    tx.delete_message(&b, &m.id).await.unwrap();
    commit(tx).await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.contact(&a, &kevin).await.unwrap().unwrap().username,
        "kevin"
    );
    assert_eq!(
        conn.conversation(&a, &conv.id).await.unwrap().as_ref(),
        Some(&conv)
    );
    assert_eq!(conn.message(&a, &m.id).await.unwrap().as_ref(), Some(&m));
    assert_eq!(conn.group(&a, &g.id).await.unwrap().as_ref(), Some(&g));
    assert_eq!(
        conn.attachment(&a, &att.id).await.unwrap().as_ref(),
        Some(&att)
    );
    assert_eq!(
        conn.endpoint(&a, &ep.id).await.unwrap().unwrap().url,
        ep.url
    );
    assert_eq!(
        conn.group_members(&g.id).await.unwrap(),
        vec![kevin.clone()]
    );
    drop(conn);
    // A's endpoint is still subscribed to everything.
    let mut tx = begin(&store).await;
    assert_eq!(
        tx.insert_event(&a, &event("message.created"))
            .await
            .unwrap(),
        1
    );
    drop(tx);
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.delivery(&a, &d).await.unwrap().unwrap().status,
        "failed"
    );
    drop(conn);

    // A's endpoint can be the target of neither B's events nor B's test events.
    let mut tx = begin(&store).await;
    assert_eq!(
        tx.insert_event(&b, &event("message.created"))
            .await
            .unwrap(),
        0
    );
    commit(tx).await;
    let mut tx = begin(&store).await;
    assert!(
        tx.insert_event_for_endpoint(&b, &event("webhook.test"), &ep.id)
            .await
            .is_err(),
        "a test event of B to A's endpoint"
    );
    drop(tx);
    assert_eq!(deliveries(&store, &a, &ep.id).await.len(), 1);
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.events_after(&b, None, 100).await.unwrap().len(), 1);
}

async fn conn_contact(store: &Arc<dyn Store>, account: &str, id: &str) -> Contact {
    let mut conn = store.read().await.unwrap();
    conn.contact(account, id).await.unwrap().unwrap()
}

// ---------------------------------------------------------------------------
// The outbox.

async fn outbox_rollback_and_commit(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let ep = add_endpoint(&store, &a, "all", &["*"], true).await;

    // Dropped without commit: neither the change nor its event nor a delivery.
    let kevin = contact("kevin");
    let created = event("contact.created");
    let mut tx = begin(&store).await;
    tx.insert_contact(&a, &kevin).await.unwrap();
    assert_eq!(tx.insert_event(&a, &created).await.unwrap(), 1);
    // The transaction sees its own writes.
    assert!(tx.contact(&a, &kevin.id).await.unwrap().is_some());
    assert_eq!(
        tx.event(&a, &created.id).await.unwrap().as_ref(),
        Some(&created)
    );
    assert_eq!(
        tx.latest_event_id(&a).await.unwrap(),
        Some(created.id.clone())
    );
    assert_eq!(
        tx.list_deliveries(&a, &ep.id, None, &page(10))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    drop(tx);
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.contact(&a, &kevin.id).await.unwrap(), None);
    assert_eq!(conn.event(&a, &created.id).await.unwrap(), None);
    assert_eq!(conn.latest_event_id(&a).await.unwrap(), None);
    assert!(
        conn.list_events(&a, None, &page(10))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    drop(conn);
    assert!(deliveries(&store, &a, &ep.id).await.is_empty());
    assert!(claim(&store, &claim_all("node-a:1")).await.is_empty());

    // A write that fails half-way and is dropped keeps nothing either.
    let mut tx = begin(&store).await;
    tx.insert_contact(&a, &kevin).await.unwrap();
    tx.insert_event(&a, &created).await.unwrap();
    assert_conflict(tx.insert_contact(&a, &contact("kevin")).await, "username");
    drop(tx);
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.contact(&a, &kevin.id).await.unwrap(), None);
    assert_eq!(conn.event(&a, &created.id).await.unwrap(), None);
    drop(conn);
    assert!(deliveries(&store, &a, &ep.id).await.is_empty());

    // Committed: the change, its event and its delivery, all at once.
    let mut tx = begin(&store).await;
    tx.insert_contact(&a, &kevin).await.unwrap();
    tx.insert_event(&a, &created).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.contact(&a, &kevin.id).await.unwrap().as_ref(),
        Some(&kevin)
    );
    assert_eq!(
        conn.event(&a, &created.id).await.unwrap().as_ref(),
        Some(&created)
    );
    drop(conn);
    let ds = deliveries(&store, &a, &ep.id).await;
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].event_id, created.id);

    // The next write after a rollback is unaffected by it.
    let marv = contact("marv");
    let mut tx = begin(&store).await;
    tx.insert_contact(&a, &marv).await.unwrap();
    drop(tx);
    let harry = contact("harry");
    let mut tx = begin(&store).await;
    tx.insert_contact(&a, &harry).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.contact(&a, &marv.id).await.unwrap(), None);
    assert!(conn.contact(&a, &harry.id).await.unwrap().is_some());
}

async fn outbox_fan_out(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    let contacts_ep = add_endpoint(
        &store,
        &a,
        "contacts",
        &["contact.created", "contact.deleted"],
        true,
    )
    .await;
    let all = add_endpoint(&store, &a, "all", &["*"], true).await;
    let mut disabled = add_endpoint(&store, &a, "disabled", &["*"], false).await;
    let groups_ep = add_endpoint(&store, &a, "groups", &["group.created"], true).await;
    let theirs = add_endpoint(&store, &b, "theirs", &["*"], true).await;

    let e = event("contact.created");
    assert_eq!(emit_event(&store, &a, &e).await, 2);
    for (ep, n) in [
        (&contacts_ep, 1),
        (&all, 1),
        (&disabled, 0),
        (&groups_ep, 0),
    ] {
        let ds = deliveries(&store, &a, &ep.id).await;
        assert_eq!(ds.len(), n, "deliveries to {}", ep.name);
        for d in ds {
            assert_eq!(d.event_id, e.id);
            assert_eq!(d.event_type, "contact.created");
            assert_eq!(d.status, "pending");
            assert_eq!(d.attempts, 0);
            assert!(
                d.next_attempt_ms.is_some_and(|t| t <= ids::now_ms()),
                "due now: {d:?}"
            );
            assert_eq!(d.last_attempt_at, None);
            assert_eq!(d.last_status_code, None);
            assert_eq!(d.created_at, e.created_at);
        }
    }
    assert!(deliveries(&store, &b, &theirs.id).await.is_empty());

    assert_eq!(emit_event(&store, &a, &event("group.created")).await, 2);
    assert_eq!(emit_event(&store, &a, &event("message.created")).await, 1);
    assert_eq!(deliveries(&store, &a, &groups_ep.id).await.len(), 1);
    assert_eq!(deliveries(&store, &a, &all.id).await.len(), 3);

    // A changed subscription and a re-enabled endpoint apply to later events.
    let mut narrowed = contacts_ep.clone();
    narrowed.events = Json(vec!["message.created".to_owned()]);
    disabled.enabled = true;
    disabled.disabled_reason = None;
    disabled.events = Json(vec!["contact.created".to_owned()]);
    let mut tx = begin(&store).await;
    tx.update_endpoint(&a, &narrowed).await.unwrap();
    tx.update_endpoint(&a, &disabled).await.unwrap();
    commit(tx).await;
    assert_eq!(
        emit_event(&store, &a, &event("contact.created")).await,
        2,
        "all + re-enabled"
    );
    assert_eq!(deliveries(&store, &a, &contacts_ep.id).await.len(), 1);
    assert_eq!(deliveries(&store, &a, &disabled.id).await.len(), 1);
    assert_eq!(
        emit_event(&store, &a, &event("message.created")).await,
        2,
        "all + narrowed"
    );

    // A test event goes to its one endpoint, subscribed or not, even disabled.
    let mut off = groups_ep.clone();
    off.enabled = false;
    let mut tx = begin(&store).await;
    tx.update_endpoint(&a, &off).await.unwrap();
    commit(tx).await;
    let before_all = deliveries(&store, &a, &all.id).await.len();
    let test = event("webhook.test");
    let mut tx = begin(&store).await;
    let id = tx
        .insert_event_for_endpoint(&a, &test, &groups_ep.id)
        .await
        .unwrap();
    commit(tx).await;
    let d = delivery(&store, &a, &id).await;
    assert_eq!(
        (
            d.endpoint_id.as_str(),
            d.event_id.as_str(),
            d.status.as_str()
        ),
        (groups_ep.id.as_str(), test.id.as_str(), "pending")
    );
    assert_eq!(deliveries(&store, &a, &groups_ep.id).await.len(), 2);
    assert_eq!(deliveries(&store, &a, &all.id).await.len(), before_all);
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.delivered_event(&a, &test.id).await.unwrap().as_ref(),
        Some(&test),
        "its delivery finds it"
    );
    // It is no part of the account's log, nor a position in it.
    assert_eq!(conn.event(&a, &test.id).await.unwrap(), None);
    let listed = conn.list_events(&a, None, &page(100)).await.unwrap();
    assert!(
        listed.items.iter().all(|e| e.id != test.id),
        "the log lists no test event"
    );
    let streamed = conn.events_after(&a, None, 1000).await.unwrap();
    assert!(streamed.iter().all(|e| e.id != test.id));
    assert_ne!(
        conn.latest_event_id(&a).await.unwrap().as_deref(),
        Some(test.id.as_str())
    );
    assert!(matches!(
        conn.events_after(&a, Some(&test.id), 10).await,
        Err(StoreError::UnknownCursor)
    ));
    drop(conn);

    // A test event to an endpoint that does not exist writes nothing.
    let ghost = event("webhook.test");
    let mut tx = begin(&store).await;
    assert!(
        tx.insert_event_for_endpoint(&a, &ghost, "ZZZZZZZZZZZZZZZZ")
            .await
            .is_err(),
        "a test event to no endpoint"
    );
    drop(tx);
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.event(&a, &ghost.id).await.unwrap(), None);
    drop(conn);
    assert!(deliveries(&store, &b, &theirs.id).await.is_empty());
}

async fn events_log(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.latest_event_id(&a).await.unwrap(), None);
    assert!(conn.events_after(&a, None, 10).await.unwrap().is_empty());
    drop(conn);

    let types = [
        "contact.created",
        "conversation.created",
        "contact.updated",
        "message.created",
        "contact.created",
    ];
    let mut log = Vec::new();
    for t in types {
        let e = event(t);
        let mut tx = begin(&store).await;
        tx.insert_event(&a, &e).await.unwrap();
        commit(tx).await;
        log.push(e);
    }

    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.event(&a, &log[2].id).await.unwrap().as_ref(),
        Some(&log[2])
    );
    assert_eq!(
        conn.latest_event_id(&a).await.unwrap(),
        Some(log[4].id.clone())
    );
    assert_eq!(
        conn.events_after(&a, None, 10).await.unwrap(),
        log,
        "oldest first"
    );
    assert_eq!(conn.events_after(&a, None, 2).await.unwrap(), log[..2]);
    assert_eq!(
        conn.events_after(&a, Some(&log[1].id), 2).await.unwrap(),
        log[2..4]
    );
    assert!(
        conn.events_after(&a, Some(&log[4].id), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_unknown_cursor(
        conn.events_after(&a, Some("ZZZZZZZZZZZZZZZZ"), 10).await,
        "events_after",
    );

    let created = conn
        .list_events(&a, Some("contact.created"), &page(10))
        .await
        .unwrap();
    assert_eq!(
        created.items,
        [log[4].clone(), log[0].clone()],
        "newest first"
    );
    let none = conn
        .list_events(&a, Some("group.deleted"), &page(10))
        .await
        .unwrap();
    assert!(none.items.is_empty() && !none.has_more);
    let all = conn.list_events(&a, None, &page(10)).await.unwrap();
    let mut newest_first = log.clone();
    newest_first.reverse();
    assert_eq!(all.items, newest_first);
    drop(conn);

    // Several events in one write keep their order.
    let (x, y) = (event("group.created"), event("group.updated"));
    let mut tx = begin(&store).await;
    tx.insert_event(&a, &x).await.unwrap();
    tx.insert_event(&a, &y).await.unwrap();
    commit(tx).await;
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.events_after(&a, Some(&log[4].id), 10).await.unwrap(),
        [x, y.clone()]
    );
    assert_eq!(conn.latest_event_id(&a).await.unwrap(), Some(y.id));
}

/// The log's guarantee with writers that overlap: a reader never passes an
/// event whose transaction is still to commit. Write `a` starts first and
/// commits last; write `b` starts after it and commits first (where the
/// store lets two writes overlap; SQLite's writes run one at a time, so `b`
/// waits for `a`). Until `a` commits, a reader sees neither; then both, in
/// the order the writes started, each once from any position already read.
async fn events_log_in_order_of_commit(store: Arc<dyn Store>) {
    let acct = new_account(&store, "acme").await;
    let earlier = event("contact.created");
    emit_event(&store, &acct, &earlier).await;

    let a = event("contact.created");
    let mut first = begin(&store).await;
    first.insert_event(&acct, &a).await.unwrap();

    let b = event("contact.updated");
    let second = tokio::spawn({
        let (store, acct, b) = (store.clone(), acct.clone(), b.clone());
        async move {
            let mut tx = begin(&store).await;
            tx.insert_event(&acct, &b).await.unwrap();
            commit(tx).await;
        }
    });
    // Where writes overlap, `b` is committed by now.
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while !second.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.events_after(&acct, None, 10).await.unwrap(),
        std::slice::from_ref(&earlier),
        "an event committed while an earlier write is in flight is not readable yet"
    );
    assert_eq!(
        conn.latest_event_id(&acct).await.unwrap().as_deref(),
        Some(earlier.id.as_str())
    );
    let listed = conn.list_events(&acct, None, &page(10)).await.unwrap();
    assert_eq!(listed.items, std::slice::from_ref(&earlier));
    drop(conn);

    commit(first).await;
    second.await.unwrap();
    let mut conn = store.read().await.unwrap();
    assert_eq!(
        conn.events_after(&acct, Some(&earlier.id), 10)
            .await
            .unwrap(),
        [a.clone(), b.clone()],
        "from the position already read: both, each once, in the order the writes started"
    );
    assert_eq!(
        conn.events_after(&acct, Some(&a.id), 10).await.unwrap(),
        std::slice::from_ref(&b)
    );
    assert_eq!(
        conn.latest_event_id(&acct).await.unwrap().as_deref(),
        Some(b.id.as_str())
    );
    let listed = conn.list_events(&acct, None, &page(10)).await.unwrap();
    assert_eq!(listed.items, [b.clone(), a.clone(), earlier.clone()]);
    let older = conn
        .list_events(&acct, None, &after(10, &b.id))
        .await
        .unwrap();
    assert_eq!(older.items, [a.clone(), earlier.clone()]);
    let newer = conn
        .list_events(&acct, None, &before(10, &earlier.id))
        .await
        .unwrap();
    assert_eq!(newer.items, [b, a]);
}

/// Many writes of one account at once (in parallel where the store allows
/// it): every write lands, each event is in the log once, and a read-modify-
/// write of one row loses no update.
async fn concurrent_writes_of_one_account(store: Arc<dyn Store>) {
    let acct = new_account(&store, "acme").await;
    add_endpoint(&store, &acct, "all", &["*"], true).await;
    let shared = add_contact(&store, &acct, "shared").await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (store, acct, shared_id) = (store.clone(), acct.clone(), shared.id.clone());
        tasks.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for i in 0..10 {
                let mut tx = begin(&store).await;
                let c = contact(&format!("w{w}-{i}"));
                tx.insert_contact(&acct, &c).await.unwrap();
                let e = event("contact.created");
                tx.insert_event(&acct, &e).await.unwrap();
                // A counter kept in a row every writer reads and rewrites.
                let mut row = tx.contact(&acct, &shared_id).await.unwrap().unwrap();
                row.last_active_at = Some(row.last_active_at.unwrap_or(0) + 1);
                tx.update_contact(&acct, &row).await.unwrap();
                commit(tx).await;
                written.push(e.id);
            }
            written
        }));
    }
    let mut written = std::collections::HashSet::new();
    for t in tasks {
        written.extend(t.await.unwrap());
    }
    let mut conn = store.read().await.unwrap();
    let mut read = Vec::new();
    let mut position: Option<String> = None;
    loop {
        let batch = conn
            .events_after(&acct, position.as_deref(), 7)
            .await
            .unwrap();
        let Some(last) = batch.last() else { break };
        position = Some(last.id.clone());
        read.extend(batch.into_iter().map(|e| e.id));
    }
    assert_eq!(read.len(), 80, "every event once");
    assert_eq!(
        read.iter()
            .cloned()
            .collect::<std::collections::HashSet<_>>(),
        written
    );
    assert_eq!(
        conn_contact(&store, &acct, &shared.id).await.last_active_at,
        Some(80),
        "no update lost"
    );
    let mut newest_first = conn
        .list_events(&acct, None, &page(100))
        .await
        .unwrap()
        .items;
    newest_first.reverse();
    assert_eq!(
        newest_first.into_iter().map(|e| e.id).collect::<Vec<_>>(),
        read,
        "the list and the stream agree on the order"
    );
}

// ---------------------------------------------------------------------------
// The dispatcher's queue.

async fn claims_lease_due_work(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let mut ep = endpoint("all", &["*"]);
    ep.previous_secret = Some(format!("whsec_{}", ids::new_id()));
    ep.previous_secret_expires_at = Some(ids::now() + 3600);
    let mut tx = begin(&store).await;
    tx.insert_endpoint(&a, &ep).await.unwrap();
    commit(tx).await;
    let sent = emit_events(&store, &a, "contact.created", 3).await;

    let claimed = claim(&store, &claim_all("node-a:1")).await;
    assert_eq!(claimed.len(), 3);
    let ds = deliveries(&store, &a, &ep.id).await;
    assert_eq!(claimed_ids(&claimed), sorted(ids_of(&ds, |d| &d.id)));
    for c in &claimed {
        let e = sent
            .iter()
            .find(|e| e.id == c.event_id)
            .expect("a claimed event");
        assert_eq!(c.account_id, a);
        assert_eq!(c.endpoint_id, ep.id);
        assert_eq!(c.event_type, "contact.created");
        assert_eq!(c.attempt, 1);
        assert_eq!(c.schedule_pos, 0);
        assert_eq!(c.url, ep.url);
        assert_eq!(c.secret, ep.secret);
        assert_eq!(c.previous_secret, ep.previous_secret);
        assert_eq!(c.previous_secret_expires_at, ep.previous_secret_expires_at);
        assert_eq!(c.body, e.body, "the event's exact bytes");
    }
    // Leased work is not claimed again, by this node or another.
    assert!(claim(&store, &claim_all("node-a:2")).await.is_empty());
    assert!(claim(&store, &claim_all("node-b:1")).await.is_empty());
    // A claim does not change what the API shows of a delivery.
    for d in deliveries(&store, &a, &ep.id).await {
        assert_eq!((d.status.as_str(), d.attempts), ("pending", 0));
    }
    // New work is claimable beside the leased.
    let more = emit_events(&store, &a, "contact.created", 1).await;
    let claimed = claim(&store, &claim_all("node-b:1")).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event_id, more[0].id);

    // Nothing is claimed for a disabled endpoint or before it is due.
    let b = new_account(&store, "globex").await;
    let mut off = add_endpoint(&store, &b, "off", &["*"], true).await;
    let later = add_endpoint(&store, &b, "later", &["*"], true).await;
    assert_eq!(emit_event(&store, &b, &event("group.created")).await, 2);
    off.enabled = false;
    off.disabled_reason = Some("disabled by hand".to_owned());
    let mut tx = begin(&store).await;
    tx.update_endpoint(&b, &off).await.unwrap();
    commit(tx).await;
    let claimed = claim(&store, &claim_all("node-a:3")).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].endpoint_id, later.id);
    store
        .record_attempts(
            &[result_of(
                &claimed[0],
                "node-a:3",
                Some(503),
                NextStep::Retry {
                    at_ms: ids::now_ms() + 3_600_000,
                    schedule_pos: 1,
                },
            )],
            &POLICY,
        )
        .await
        .unwrap();
    assert!(claim(&store, &claim_all("node-a:4")).await.is_empty());
}

async fn claim_limits(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let busy = add_endpoint(&store, &a, "busy", &["contact.created"], true).await;
    let quiet = add_endpoint(&store, &a, "quiet", &["group.created"], true).await;
    emit_events(&store, &a, "contact.created", 5).await;
    emit_events(&store, &a, "group.created", 2).await;

    // At most `per_endpoint` in flight per endpoint, counted across claims.
    let first = claim(&store, &claim_request("node-a:1", 2, 100, 60_000)).await;
    let per: Vec<usize> = [&busy, &quiet]
        .iter()
        .map(|ep| first.iter().filter(|c| c.endpoint_id == ep.id).count())
        .collect();
    assert_eq!(per, [2, 2]);
    assert!(
        claim(&store, &claim_request("node-b:1", 2, 100, 60_000))
            .await
            .is_empty()
    );
    let third = claim(&store, &claim_request("node-b:2", 3, 100, 60_000)).await;
    assert_eq!(third.len(), 1, "one more once the limit is 3");
    assert_eq!(third[0].endpoint_id, busy.id);

    // `max` caps one claim.
    let b = new_account(&store, "globex").await;
    let wide = add_endpoint(&store, &b, "wide", &["*"], true).await;
    emit_events(&store, &b, "message.created", 4).await;
    let got = claim(&store, &claim_request("node-c:1", 10, 3, 60_000)).await;
    assert_eq!(got.len(), 3);
    assert!(
        got.iter()
            .all(|c| c.endpoint_id == wide.id || c.endpoint_id == busy.id)
    );

    // Take the rest, so that only the endpoints below have work.
    claim(&store, &claim_all("node-c:2")).await;

    // A failing endpoint gets at most `per_failing_endpoint`, and healthy
    // endpoints are served first even when their work is younger.
    let c = new_account(&store, "initech").await;
    let mut down = endpoint("down", &["contact.deleted"]);
    down.failing_since = Some(ids::now() - 60);
    let mut tx = begin(&store).await;
    tx.insert_endpoint(&c, &down).await.unwrap();
    commit(tx).await;
    emit_events(&store, &c, "contact.deleted", 4).await;
    let up = add_endpoint(&store, &c, "up", &["group.deleted"], true).await;
    emit_events(&store, &c, "group.deleted", 2).await;
    let mut request = claim_request("node-d:1", 10, 2, 60_000);
    request.per_failing_endpoint = 1;
    let got = claim(&store, &request).await;
    assert_eq!(got.len(), 2);
    assert!(
        got.iter().all(|c| c.endpoint_id == up.id),
        "healthy first: {got:?}"
    );
    let got = claim(&store, &request).await;
    assert_eq!(got.len(), 1, "a failing endpoint's limit");
    assert_eq!(got[0].endpoint_id, down.id);
    assert!(claim(&store, &request).await.is_empty());
}

async fn expired_leases_are_claimed_again(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let ep = add_endpoint(&store, &a, "all", &["*"], true).await;
    emit_events(&store, &a, "contact.created", 1).await;

    let first = claim(&store, &claim_request("node-a:1", 10, 10, 50)).await;
    assert_eq!(first.len(), 1);
    // Once the 50 ms lease has run out, another node takes the work.
    let deadline = Instant::now() + DEADLINE;
    let second = loop {
        let got = claim(&store, &claim_all("node-b:1")).await;
        if !got.is_empty() {
            break got;
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(claimed_ids(&second), claimed_ids(&first));
    assert_eq!(second[0].attempt, 1, "no attempt was recorded");

    // The first holder's late result is not applied; the current holder's is.
    let late = result_of(&first[0], "node-a:1", Some(200), NextStep::Succeeded);
    store
        .record_attempts(std::slice::from_ref(&late), &POLICY)
        .await
        .unwrap();
    let d = delivery(&store, &a, &first[0].delivery_id).await;
    assert_eq!(
        (d.status.as_str(), d.attempts),
        ("pending", 0),
        "a stale owner changes nothing"
    );
    assert!(
        claim(&store, &claim_all("node-c:1")).await.is_empty(),
        "still leased by node-b"
    );
    // The attempt itself was made, so it is logged.
    let mut conn = store.read().await.unwrap();
    assert_eq!(conn.attempts(&a, &d.id).await.unwrap(), [late.attempt]);
    drop(conn);

    store
        .record_attempts(
            &[result_of(
                &second[0],
                "node-b:1",
                Some(200),
                NextStep::Succeeded,
            )],
            &POLICY,
        )
        .await
        .unwrap();
    let d = delivery(&store, &a, &first[0].delivery_id).await;
    assert_eq!((d.status.as_str(), d.attempts), ("succeeded", 1));
    assert_eq!(deliveries(&store, &a, &ep.id).await.len(), 1);
}

async fn attempts_move_deliveries_on(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let ep = add_endpoint(&store, &a, "all", &["*"], true).await;
    emit_events(&store, &a, "contact.created", 3).await;
    let claimed = claim(&store, &claim_all("node-a:1")).await;
    assert_eq!(claimed.len(), 3);
    let (ok, retry, failed) = (&claimed[0], &claimed[1], &claimed[2]);

    let retry_at = ids::now_ms() + 200;
    let results = [
        result_of(ok, "node-a:1", Some(200), NextStep::Succeeded),
        result_of(
            retry,
            "node-a:1",
            None,
            NextStep::Retry {
                at_ms: retry_at,
                schedule_pos: 1,
            },
        ),
        result_of(failed, "node-a:1", Some(500), NextStep::Failed),
    ];
    store.record_attempts(&results, &POLICY).await.unwrap();

    let expect = [
        (ok, "succeeded", None, Some(200)),
        (retry, "pending", Some(retry_at), None),
        (failed, "failed", None, Some(500)),
    ];
    let mut conn = store.read().await.unwrap();
    for ((c, status, next, code), r) in expect.iter().zip(&results) {
        let d = conn.delivery(&a, &c.delivery_id).await.unwrap().unwrap();
        assert_eq!(d.status, *status, "{}", c.delivery_id);
        assert_eq!(d.attempts, 1);
        assert_eq!(d.next_attempt_ms, *next);
        assert_eq!(d.last_status_code, *code);
        assert_eq!(d.last_attempt_at, Some(r.attempt.started_at_ms / 1000));
        assert_eq!(d.endpoint_id, ep.id);
        assert_eq!(
            conn.attempts(&a, &c.delivery_id).await.unwrap(),
            std::slice::from_ref(&r.attempt)
        );
    }
    drop(conn);

    // The retry is due at its time, as attempt 2 at its schedule position.
    let deadline = Instant::now() + DEADLINE;
    let again = loop {
        let got = claim(&store, &claim_all("node-a:2")).await;
        if !got.is_empty() {
            break got;
        }
        assert!(Instant::now() < deadline, "the retry never came due");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(ids::now_ms() >= retry_at);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery_id, retry.delivery_id);
    assert_eq!((again[0].attempt, again[0].schedule_pos), (2, 1));
    let second = result_of(&again[0], "node-a:2", Some(204), NextStep::Succeeded);
    store
        .record_attempts(std::slice::from_ref(&second), &POLICY)
        .await
        .unwrap();
    let d = delivery(&store, &a, &retry.delivery_id).await;
    assert_eq!(
        (d.status.as_str(), d.attempts, d.next_attempt_ms),
        ("succeeded", 2, None)
    );
    let mut conn = store.read().await.unwrap();
    let log = conn.attempts(&a, &retry.delivery_id).await.unwrap();
    assert_eq!(
        log,
        [results[1].attempt.clone(), second.attempt],
        "oldest first"
    );
    drop(conn);

    // A finished delivery is not moved by a result that arrives for it again.
    store
        .record_attempts(
            &[result_of(ok, "node-a:1", Some(500), NextStep::Failed)],
            &POLICY,
        )
        .await
        .unwrap();
    assert_eq!(
        delivery(&store, &a, &ok.delivery_id).await.status,
        "succeeded"
    );
    assert!(claim(&store, &claim_all("node-a:3")).await.is_empty());
}

/// `failing continuously since <RFC 3339>`, as both stores write it.
fn rfc3339(unix: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

async fn circuit_breaker(store: Arc<dyn Store>) {
    let policy = EndpointPolicy {
        disable_after_secs: 86_400,
        circuit_failures: 3,
    };
    let a = new_account(&store, "acme").await;
    let down = add_endpoint(&store, &a, "down", &["contact.created"], true).await;
    emit_events(&store, &a, "contact.created", 2).await;
    let retry_now = || NextStep::Retry {
        at_ms: ids::now_ms() - 1,
        schedule_pos: 1,
    };

    // Failures in a row, below the threshold: closed, still claimed.
    let claimed = claim(&store, &claim_all("node-a:0")).await;
    assert_eq!(claimed.len(), 2);
    let results: Vec<AttemptResult> = claimed
        .iter()
        .map(|c| result_of(c, "node-a:0", Some(500), retry_now()))
        .collect();
    store.record_attempts(&results, &policy).await.unwrap();
    let ep = read_endpoint(&store, &a, &down.id).await.unwrap();
    assert_eq!((ep.circuit.as_str(), ep.circuit_since), ("closed", None));
    // The third failure in a row opens it: its deliveries are not claimed
    // (the first probe is 5 s off).
    let claimed = claim(&store, &claim_all("node-a:3")).await;
    let before = ids::now();
    store
        .record_attempts(
            &[result_of(&claimed[0], "node-a:3", Some(500), retry_now())],
            &policy,
        )
        .await
        .unwrap();
    store.release_leases("node-a").await.unwrap();
    let ep = read_endpoint(&store, &a, &down.id).await.unwrap();
    assert_eq!(ep.circuit, "open");
    assert!(ep.circuit_since.is_some_and(|t| t >= before), "{ep:?}");
    assert!(claim(&store, &claim_all("node-a:4")).await.is_empty());
    let stats = store.queue_stats(ids::now_ms()).await.unwrap();
    assert_eq!(stats.circuits, [(down.id.clone(), "open".to_owned())]);
    assert_eq!(stats.held_by_circuits, 2);

    // A result never sent says nothing; a success (an attempt that was in
    // flight when it opened) closes it.
    let mut unsent = result_of(&claimed[1], "node-a:3", None, retry_now());
    unsent.unsent = true;
    store.record_attempts(&[unsent], &policy).await.unwrap();
    assert_eq!(
        read_endpoint(&store, &a, &down.id).await.unwrap().circuit,
        "open"
    );
    // An update that closes it (a new URL) does so at once, and starts the
    // count over: one more failure does not open it again.
    let mut closed = read_endpoint(&store, &a, &down.id).await.unwrap();
    closed.circuit = "closed".to_owned();
    closed.circuit_since = Some(ids::now());
    let mut tx = begin(&store).await;
    tx.update_endpoint(&a, &closed).await.unwrap();
    commit(tx).await;
    let claimed = claim(&store, &claim_all("node-a:5")).await;
    assert_eq!(claimed.len(), 2);
    store
        .record_attempts(
            &[result_of(&claimed[0], "node-a:5", Some(500), retry_now())],
            &policy,
        )
        .await
        .unwrap();
    assert_eq!(
        read_endpoint(&store, &a, &down.id).await.unwrap().circuit,
        "closed"
    );
    store
        .record_attempts(
            &[result_of(
                &claimed[1],
                "node-a:5",
                Some(200),
                NextStep::Succeeded,
            )],
            &policy,
        )
        .await
        .unwrap();
    let ep = read_endpoint(&store, &a, &down.id).await.unwrap();
    assert_eq!(ep.circuit, "closed");
    assert!(
        store
            .queue_stats(ids::now_ms())
            .await
            .unwrap()
            .circuits
            .is_empty()
    );
}

async fn endpoint_health(store: Arc<dyn Store>) {
    assert_eq!(rfc3339(LONG_AGO), "2023-11-14T22:13:20Z");
    let a = new_account(&store, "acme").await;
    let flaky = add_endpoint(&store, &a, "flaky", &["contact.created"], true).await;
    let gone = add_endpoint(&store, &a, "gone", &["group.created"], true).await;
    let mut old = endpoint("old", &["message.created"]);
    old.failing_since = Some(LONG_AGO);
    let mut tx = begin(&store).await;
    tx.insert_endpoint(&a, &old).await.unwrap();
    commit(tx).await;
    emit_events(&store, &a, "contact.created", 2).await;
    emit_events(&store, &a, "group.created", 1).await;
    emit_events(&store, &a, "message.created", 1).await;
    let claimed = claim(&store, &claim_all("node-a:1")).await;
    assert_eq!(claimed.len(), 4);
    let of = |ep: &EndpointRecord| -> Vec<&Claimed> {
        claimed.iter().filter(|c| c.endpoint_id == ep.id).collect()
    };

    // A failure marks the start of a failing run; a success clears it.
    let before = ids::now();
    store
        .record_attempts(
            &[result_of(
                of(&flaky)[0],
                "node-a:1",
                Some(500),
                NextStep::Failed,
            )],
            &POLICY,
        )
        .await
        .unwrap();
    let ep = read_endpoint(&store, &a, &flaky.id).await.unwrap();
    assert!(
        ep.failing_since
            .is_some_and(|t| t >= before && t <= ids::now()),
        "{:?}",
        ep.failing_since
    );
    assert!(ep.enabled);
    store
        .record_attempts(
            &[result_of(
                of(&flaky)[1],
                "node-a:1",
                Some(200),
                NextStep::Succeeded,
            )],
            &POLICY,
        )
        .await
        .unwrap();
    assert_eq!(
        read_endpoint(&store, &a, &flaky.id)
            .await
            .unwrap()
            .failing_since,
        None
    );

    // `disable` disables at once with its reason (a 410).
    let mut gone_result = result_of(of(&gone)[0], "node-a:1", Some(410), NextStep::Failed);
    gone_result.disable = Some("the endpoint answered 410 Gone".to_owned());
    store
        .record_attempts(&[gone_result], &POLICY)
        .await
        .unwrap();
    let ep = read_endpoint(&store, &a, &gone.id).await.unwrap();
    assert!(!ep.enabled);
    assert_eq!(
        ep.disabled_reason.as_deref(),
        Some("the endpoint answered 410 Gone")
    );

    // Failing for longer than `disable_after` disables it, saying since when.
    store
        .record_attempts(
            &[result_of(
                of(&old)[0],
                "node-a:1",
                None,
                NextStep::Retry {
                    at_ms: ids::now_ms(),
                    schedule_pos: 1,
                },
            )],
            &policy(3600),
        )
        .await
        .unwrap();
    let ep = read_endpoint(&store, &a, &old.id).await.unwrap();
    assert!(!ep.enabled);
    assert_eq!(ep.failing_since, Some(LONG_AGO));
    assert_eq!(
        ep.disabled_reason,
        Some(format!("failing continuously since {}", rfc3339(LONG_AGO)))
    );
    // Its due retry waits while it is disabled.
    assert!(claim(&store, &claim_all("node-a:2")).await.is_empty());
    let stats = store.queue_stats(ids::now_ms()).await.unwrap();
    assert_eq!(stats.disabled_endpoints, 2);

    // One batch with several results per endpoint leaves each endpoint as
    // its results, taken in order, would: a success then a failure starts a
    // new run now; a failure then a success ends the run.
    let mut lapsed = endpoint("lapsed", &["conversation.created"]);
    lapsed.failing_since = Some(LONG_AGO);
    let mut tx = begin(&store).await;
    tx.insert_endpoint(&a, &lapsed).await.unwrap();
    commit(tx).await;
    emit_events(&store, &a, "contact.created", 2).await;
    emit_events(&store, &a, "conversation.created", 2).await;
    let claimed = claim(&store, &claim_all("node-a:3")).await;
    assert_eq!(claimed.len(), 4);
    let (flaky_work, lapsed_work): (Vec<&Claimed>, Vec<&Claimed>) =
        claimed.iter().partition(|c| c.endpoint_id == flaky.id);
    let retry = NextStep::Retry {
        at_ms: ids::now_ms() + 60_000,
        schedule_pos: 1,
    };
    let before = ids::now();
    let batch = [
        result_of(flaky_work[0], "node-a:3", Some(200), NextStep::Succeeded),
        result_of(lapsed_work[0], "node-a:3", Some(500), retry.clone()),
        result_of(flaky_work[1], "node-a:3", Some(500), retry),
        result_of(lapsed_work[1], "node-a:3", Some(200), NextStep::Succeeded),
    ];
    // Ten years: the long-failing endpoint is not disabled by this batch.
    store
        .record_attempts(&batch, &policy(10 * 365 * 86_400))
        .await
        .unwrap();
    let ep = read_endpoint(&store, &a, &flaky.id).await.unwrap();
    assert!(
        ep.failing_since.is_some_and(|t| t >= before),
        "a new run starts: {:?}",
        ep.failing_since
    );
    let ep = read_endpoint(&store, &a, &lapsed.id).await.unwrap();
    assert_eq!(ep.failing_since, None);
    assert!(ep.enabled);
    for (c, status) in [
        (flaky_work[0], "succeeded"),
        (flaky_work[1], "pending"),
        (lapsed_work[0], "pending"),
        (lapsed_work[1], "succeeded"),
    ] {
        let d = delivery(&store, &a, &c.delivery_id).await;
        assert_eq!(d.status, status, "{}", c.delivery_id);
        assert_eq!(d.attempts, 1);
        let mut conn = store.read().await.unwrap();
        assert_eq!(conn.attempts(&a, &c.delivery_id).await.unwrap().len(), 1);
    }
}

async fn release_leases_of_one_node(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let one = add_endpoint(&store, &a, "one", &["contact.created"], true).await;
    let two = add_endpoint(&store, &a, "two", &["group.created"], true).await;
    let three = add_endpoint(&store, &a, "three", &["message.created"], true).await;
    emit_events(&store, &a, "contact.created", 2).await;
    let by_a = claim(&store, &claim_all("node-a:1")).await;
    emit_events(&store, &a, "group.created", 1).await;
    let by_a_again = claim(&store, &claim_all("node-a:2")).await;
    emit_events(&store, &a, "message.created", 1).await;
    // A node whose name starts with the other's.
    let by_aa = claim(&store, &claim_all("node-aa:1")).await;
    assert_eq!((by_a.len(), by_a_again.len(), by_aa.len()), (2, 1, 1));
    assert_eq!(by_aa[0].endpoint_id, three.id);

    assert_eq!(store.release_leases("node-b").await.unwrap(), 0);
    // A node id is matched exactly: not by case, not as a pattern.
    assert_eq!(store.release_leases("NODE-A").await.unwrap(), 0);
    assert_eq!(store.release_leases("node_a").await.unwrap(), 0);
    assert_eq!(store.release_leases("node-%").await.unwrap(), 0);
    assert_eq!(
        store.release_leases("node-a").await.unwrap(),
        3,
        "both of node-a's claims"
    );
    let again = claim(&store, &claim_all("node-b:1")).await;
    let mut expected = claimed_ids(&by_a);
    expected.extend(claimed_ids(&by_a_again));
    assert_eq!(
        claimed_ids(&again),
        sorted(expected),
        "node-aa keeps its lease"
    );
    assert!(
        again
            .iter()
            .all(|c| c.endpoint_id == one.id || c.endpoint_id == two.id)
    );
    assert_eq!(store.release_leases("node-a").await.unwrap(), 0);

    // A released lease's late result no longer applies.
    store
        .record_attempts(
            &[result_of(
                &by_a_again[0],
                "node-a:2",
                Some(200),
                NextStep::Succeeded,
            )],
            &POLICY,
        )
        .await
        .unwrap();
    assert_eq!(
        delivery(&store, &a, &by_a_again[0].delivery_id)
            .await
            .status,
        "pending"
    );
    assert_eq!(store.release_leases("node-aa").await.unwrap(), 1);
    assert_eq!(store.release_leases("node-b").await.unwrap(), 3);
}

async fn retry_and_recover(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let ep = add_endpoint(&store, &a, "all", &["*"], true).await;
    let other = add_endpoint(&store, &a, "other", &["group.created"], true).await;
    // Two old deliveries and two recent ones, all failed after a few tries;
    // one succeeded; one on another endpoint.
    let old = ids::now() - 1000;
    let old_events = [
        event_at("contact.created", old),
        event_at("contact.created", old),
    ];
    for e in &old_events {
        emit_event(&store, &a, e).await;
    }
    emit_events(&store, &a, "contact.updated", 3).await;
    emit_events(&store, &a, "group.created", 1).await;
    let claimed = claim(&store, &claim_all("node-a:1")).await;
    assert_eq!(claimed.len(), 7);
    let mut results = Vec::new();
    let mut succeeded = None;
    for c in &claimed {
        if succeeded.is_none() && c.event_type == "contact.updated" && c.endpoint_id == ep.id {
            succeeded = Some(c.delivery_id.clone());
            results.push(result_of(c, "node-a:1", Some(200), NextStep::Succeeded));
        } else {
            let mut r = result_of(c, "node-a:1", Some(500), NextStep::Failed);
            r.attempt.attempt = 8;
            results.push(r);
        }
    }
    let succeeded = succeeded.unwrap();
    store.record_attempts(&results, &POLICY).await.unwrap();

    // A manual retry: pending, due now, schedule restarted; attempts count on.
    let failed_one = claimed
        .iter()
        .find(|c| c.endpoint_id == ep.id && c.event_id == old_events[0].id)
        .unwrap();
    let now_ms = ids::now_ms();
    let mut tx = begin(&store).await;
    assert!(
        tx.retry_delivery(&a, &failed_one.delivery_id, now_ms)
            .await
            .unwrap()
    );
    assert!(
        !tx.retry_delivery(&a, "ZZZZZZZZZZZZZZZZ", now_ms)
            .await
            .unwrap()
    );
    commit(tx).await;
    let d = delivery(&store, &a, &failed_one.delivery_id).await;
    assert_eq!(
        (
            d.status.as_str(),
            d.next_attempt_ms,
            d.attempts,
            d.updated_at
        ),
        ("pending", Some(now_ms), 8, now_ms / 1000)
    );
    let got = claim(&store, &claim_all("node-a:2")).await;
    assert_eq!(
        claimed_ids(&got),
        std::slice::from_ref(&failed_one.delivery_id)
    );
    assert_eq!((got[0].attempt, got[0].schedule_pos), (9, 0));

    // Not while an attempt is in flight.
    let mut tx = begin(&store).await;
    assert!(
        !tx.retry_delivery(&a, &failed_one.delivery_id, ids::now_ms())
            .await
            .unwrap()
    );
    commit(tx).await;
    store
        .record_attempts(
            &[result_of(&got[0], "node-a:2", Some(500), NextStep::Failed)],
            &POLICY,
        )
        .await
        .unwrap();

    // Recovery: the endpoint's failed deliveries created since a time.
    let mut tx = begin(&store).await;
    let now_ms = ids::now_ms();
    let recovered = tx
        .recover_deliveries(&a, &ep.id, old + 1, now_ms)
        .await
        .unwrap();
    commit(tx).await;
    assert_eq!(
        recovered, 3,
        "the recent failed ones (not the succeeded, not the old)"
    );
    let mut pending = Vec::new();
    for d in deliveries(&store, &a, &ep.id).await {
        if d.created_at > old {
            let want = if d.id == succeeded {
                "succeeded"
            } else {
                "pending"
            };
            assert_eq!(d.status, want);
        } else {
            assert_eq!(d.status, "failed");
        }
        if d.status == "pending" {
            assert_eq!(d.next_attempt_ms, Some(now_ms));
            pending.push(d.id);
        }
    }
    assert_eq!(deliveries(&store, &a, &other.id).await[0].status, "failed");
    let got = claim(&store, &claim_all("node-a:3")).await;
    assert_eq!(claimed_ids(&got), sorted(pending));
    assert!(got.iter().all(|c| c.schedule_pos == 0));

    // Everything since the beginning (the in-flight ones are not failed).
    let mut tx = begin(&store).await;
    assert_eq!(
        tx.recover_deliveries(&a, &ep.id, 0, ids::now_ms())
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        tx.recover_deliveries(&a, &ep.id, 0, ids::now_ms())
            .await
            .unwrap(),
        0
    );
    commit(tx).await;
}

async fn deleting_an_endpoint_cancels_its_work(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let doomed = add_endpoint(&store, &a, "doomed", &["*"], true).await;
    let kept = add_endpoint(&store, &a, "kept", &["*"], true).await;
    emit_events(&store, &a, "contact.created", 1).await;
    let claimed = claim(&store, &claim_all("node-a:1")).await;
    let done = claimed.iter().find(|c| c.endpoint_id == doomed.id).unwrap();
    store
        .record_attempts(
            &[result_of(done, "node-a:1", Some(200), NextStep::Succeeded)],
            &POLICY,
        )
        .await
        .unwrap();
    emit_events(&store, &a, "contact.created", 1).await;
    let in_flight = claim(&store, &claim_request("node-a:2", 100, 1, 60_000)).await;
    assert_eq!(in_flight.len(), 1);
    emit_events(&store, &a, "contact.created", 1).await;

    let mut tx = begin(&store).await;
    tx.delete_endpoint(&a, &doomed.id).await.unwrap();
    commit(tx).await;
    assert_eq!(read_endpoint(&store, &a, &doomed.id).await, None);

    for d in deliveries(&store, &a, &doomed.id).await {
        if d.id == done.delivery_id {
            assert_eq!(d.status, "succeeded");
        } else {
            assert_eq!(
                (d.status.as_str(), d.next_attempt_ms),
                ("cancelled", None),
                "{d:?}"
            );
        }
    }
    // An attempt in flight when it was deleted does not revive its delivery.
    if in_flight[0].endpoint_id == doomed.id {
        store
            .record_attempts(
                &[result_of(
                    &in_flight[0],
                    "node-a:2",
                    Some(500),
                    NextStep::Retry {
                        at_ms: ids::now_ms(),
                        schedule_pos: 1,
                    },
                )],
                &POLICY,
            )
            .await
            .unwrap();
        assert_eq!(
            delivery(&store, &a, &in_flight[0].delivery_id).await.status,
            "cancelled"
        );
    }
    // Only the kept endpoint's work is claimable, and later events skip it.
    let got = claim(&store, &claim_all("node-a:3")).await;
    assert!(got.iter().all(|c| c.endpoint_id == kept.id), "{got:?}");
    assert_eq!(emit_event(&store, &a, &event("contact.created")).await, 1);
    let mut tx = begin(&store).await;
    assert!(
        tx.insert_event_for_endpoint(&a, &event("webhook.test"), &doomed.id)
            .await
            .is_err(),
        "a test event to a deleted endpoint"
    );
    drop(tx);
    let stats = store.queue_stats(ids::now_ms()).await.unwrap();
    let pending_kept = deliveries(&store, &a, &kept.id)
        .await
        .iter()
        .filter(|d| d.status == "pending")
        .count() as i64;
    assert_eq!(
        stats.pending, pending_kept,
        "no pending work left for the deleted endpoint"
    );
}

async fn next_due_and_queue_stats(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    assert_eq!(store.next_due_ms().await.unwrap(), None);
    let stats = store.queue_stats(ids::now_ms()).await.unwrap();
    assert_eq!(
        (
            stats.pending,
            stats.due,
            stats.in_flight,
            stats.disabled_endpoints
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(stats.oldest_due_ms, None, "nothing is due");

    let ep = add_endpoint(&store, &a, "all", &["*"], true).await;
    let start = ids::now_ms();
    emit_events(&store, &a, "contact.created", 3).await;
    let due = store.next_due_ms().await.unwrap().expect("due work");
    assert!(
        due >= start && due <= ids::now_ms(),
        "{due} not in [{start}, now]"
    );
    let stats = store.queue_stats(ids::now_ms()).await.unwrap();
    assert_eq!((stats.pending, stats.due, stats.in_flight), (3, 3, 0));
    let oldest = stats.oldest_due_ms.expect("due work");
    assert!(
        oldest >= start && oldest <= due,
        "the oldest due {oldest} is the first due {due} or earlier"
    );
    // Not yet due at an earlier time.
    let stats = store.queue_stats(start - 1).await.unwrap();
    assert_eq!((stats.pending, stats.due, stats.in_flight), (3, 0, 0));
    assert_eq!(stats.oldest_due_ms, None);

    // Leased: in flight, and next due when the lease runs out.
    let before_claim = ids::now_ms();
    let claimed = claim(&store, &claim_request("node-a:1", 10, 2, 60_000)).await;
    assert_eq!(claimed.len(), 2);
    let stats = store.queue_stats(ids::now_ms()).await.unwrap();
    assert_eq!((stats.pending, stats.due, stats.in_flight), (3, 1, 2));
    // The leased ones aside, the one left is the oldest due.
    assert!(stats.oldest_due_ms.is_some_and(|at| at >= oldest));
    // After the leases would have run out they count as due again.
    let stats = store.queue_stats(ids::now_ms() + 120_000).await.unwrap();
    assert_eq!((stats.pending, stats.due, stats.in_flight), (3, 3, 0));
    let rest = claim(&store, &claim_all("node-a:2")).await;
    assert_eq!(rest.len(), 1);
    let due = store.next_due_ms().await.unwrap().expect("a lease ends");
    assert!(
        due >= before_claim + 60_000 && due <= ids::now_ms() + 60_000,
        "the first lease's end, got {due}"
    );

    // Scheduled retries: the earliest.
    let later = ids::now_ms() + 3_600_000;
    let soon = ids::now_ms() + 600_000;
    let mut results = Vec::new();
    for (c, at) in claimed.iter().zip([later, soon]) {
        results.push(result_of(
            c,
            "node-a:1",
            Some(503),
            NextStep::Retry {
                at_ms: at,
                schedule_pos: 1,
            },
        ));
    }
    results.push(result_of(
        &rest[0],
        "node-a:2",
        Some(200),
        NextStep::Succeeded,
    ));
    store.record_attempts(&results, &POLICY).await.unwrap();
    assert_eq!(store.next_due_ms().await.unwrap(), Some(soon));
    let stats = store.queue_stats(ids::now_ms()).await.unwrap();
    assert_eq!((stats.pending, stats.due, stats.in_flight), (2, 0, 0));
    assert_eq!(stats.oldest_due_ms, None, "retries not due yet");
    let stats = store.queue_stats(soon).await.unwrap();
    assert_eq!(stats.due, 1);
    assert_eq!(stats.oldest_due_ms, Some(soon));

    // A disabled endpoint's work is not due; the endpoint is counted.
    let mut off = read_endpoint(&store, &a, &ep.id).await.unwrap();
    off.enabled = false;
    off.disabled_reason = Some("disabled by hand".to_owned());
    let mut tx = begin(&store).await;
    tx.update_endpoint(&a, &off).await.unwrap();
    commit(tx).await;
    assert_eq!(store.next_due_ms().await.unwrap(), None);
    let stats = store.queue_stats(ids::now_ms()).await.unwrap();
    assert_eq!((stats.pending, stats.disabled_endpoints), (2, 1));
    let stats = store.queue_stats(later).await.unwrap();
    assert_eq!(
        stats.oldest_due_ms, None,
        "a disabled endpoint's work is not behind"
    );
}

async fn purge_in_batches(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let ep = add_endpoint(
        &store,
        &a,
        "all",
        &["contact.created", "contact.updated"],
        true,
    )
    .await;
    let old = ids::now() - 10_000;
    let cutoff = ids::now() - 5_000;

    // Old and finished: two succeeded (with attempts), one failed.
    let old_done: Vec<EventRecord> = (0..3).map(|_| event_at("contact.created", old)).collect();
    for e in &old_done {
        emit_event(&store, &a, e).await;
    }
    let claimed = claim(&store, &claim_all("node-a:1")).await;
    assert_eq!(claimed.len(), 3);
    let results: Vec<AttemptResult> = claimed
        .iter()
        .zip([NextStep::Succeeded, NextStep::Succeeded, NextStep::Failed])
        .map(|(c, next)| {
            let status = if next == NextStep::Failed { 500 } else { 200 };
            result_of(c, "node-a:1", Some(status), next)
        })
        .collect();
    store.record_attempts(&results, &POLICY).await.unwrap();
    // Old but still pending: kept with its event.
    let old_pending = event_at("contact.updated", old);
    emit_event(&store, &a, &old_pending).await;
    // Old with no delivery at all (nobody subscribed): purged.
    let old_unsent = event_at("group.created", old);
    assert_eq!(emit_event(&store, &a, &old_unsent).await, 0);
    // Recent and finished: kept.
    let recent = event("contact.created");
    emit_event(&store, &a, &recent).await;
    let got = claim(&store, &claim_all("node-a:2")).await;
    let recent_claim = got.iter().find(|c| c.event_id == recent.id).unwrap();
    store
        .record_attempts(
            &[result_of(
                recent_claim,
                "node-a:2",
                Some(200),
                NextStep::Succeeded,
            )],
            &POLICY,
        )
        .await
        .unwrap();
    // Release the old pending delivery's lease so it is plain pending work.
    store.release_leases("node-a").await.unwrap();
    // Idempotency keys, old and recent.
    let mut old_key = idempotent(201, "{}");
    old_key.created_at = old;
    let mut tx = begin(&store).await;
    tx.insert_idempotent_response(&a, "old", &old_key)
        .await
        .unwrap();
    tx.insert_idempotent_response(&a, "new", &idempotent(201, "{}"))
        .await
        .unwrap();
    commit(tx).await;

    // Batches of one row per table: several rounds, each bounded.
    let mut rounds = Vec::new();
    loop {
        let n = store.purge(cutoff, cutoff, cutoff, 1).await.unwrap();
        assert!(n <= 4, "one row per table at most, got {n}");
        rounds.push(n);
        if n == 0 {
            break;
        }
        assert!(rounds.len() < 20, "purge never finished: {rounds:?}");
    }
    // 3 attempts, 3 deliveries, 4 events (3 sent + 1 unsent), 1 key.
    assert_eq!(rounds.iter().sum::<u64>(), 11, "rounds: {rounds:?}");
    assert!(rounds.len() > 2, "in batches: {rounds:?}");

    let mut conn = store.read().await.unwrap();
    for e in old_done.iter().chain([&old_unsent]) {
        assert_eq!(
            conn.event(&a, &e.id).await.unwrap(),
            None,
            "old event purged"
        );
    }
    assert_eq!(
        conn.event(&a, &old_pending.id).await.unwrap().as_ref(),
        Some(&old_pending)
    );
    assert_eq!(
        conn.event(&a, &recent.id).await.unwrap().as_ref(),
        Some(&recent)
    );
    for c in &claimed {
        assert_eq!(conn.delivery(&a, &c.delivery_id).await.unwrap(), None);
        assert!(conn.attempts(&a, &c.delivery_id).await.unwrap().is_empty());
    }
    assert_eq!(
        conn.attempts(&a, &recent_claim.delivery_id)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(conn.idempotent_response(&a, "old").await.unwrap(), None);
    assert!(conn.idempotent_response(&a, "new").await.unwrap().is_some());
    drop(conn);
    let left = deliveries(&store, &a, &ep.id).await;
    let mut statuses: Vec<&str> = left.iter().map(|d| d.status.as_str()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, ["pending", "succeeded"]);
    // The pending work is still claimable.
    let got = claim(&store, &claim_all("node-b:1")).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event_id, old_pending.id);
    assert_eq!(got[0].body, old_pending.body);
}

// ---------------------------------------------------------------------------
// Dashboard sessions.

/// A session row as the domain writes it at login: `last_seen_at` at
/// `seen`, expiring at `expires_at`.
fn session_row(account: &str, token_hash: &str, seen: i64, expires_at: i64) -> DashboardSession {
    DashboardSession {
        token_hash: token_hash.to_owned(),
        account_id: account.to_owned(),
        account_name: String::new(),
        csrf: format!("csrf-of-{token_hash}"),
        created_at: seen,
        last_seen_at: seen,
        expires_at,
        key_id: None,
        flash_kind: None,
        flash_message: None,
    }
}

async fn add_session(store: &Arc<dyn Store>, s: &DashboardSession) {
    let mut tx = begin(store).await;
    tx.insert_dashboard_session(&s.account_id, s).await.unwrap();
    commit(tx).await;
}

async fn read_session(
    store: &Arc<dyn Store>,
    token_hash: &str,
    now: i64,
) -> Option<DashboardSession> {
    let mut conn = store.read().await.unwrap();
    conn.dashboard_session(token_hash, now).await.unwrap()
}

fn flash(kind: &str, message: &str) -> SessionFlash {
    SessionFlash {
        kind: kind.to_owned(),
        message: message.to_owned(),
    }
}

async fn dashboard_sessions(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let now = ids::now();
    let row = session_row(&a, "hash-1", now - 100, now + 3600);
    add_session(&store, &row).await;

    // Read back by its hash, with the account's name.
    let got = read_session(&store, "hash-1", now)
        .await
        .expect("the session");
    assert_eq!(
        got,
        DashboardSession {
            account_name: "acme".to_owned(),
            ..row.clone()
        }
    );
    assert_eq!(read_session(&store, "hash-2", now).await, None);
    assert_eq!(read_session(&store, "HASH-1", now).await, None);
    // A write transaction reads it too.
    let mut tx = begin(&store).await;
    assert!(tx.dashboard_session("hash-1", now).await.unwrap().is_some());
    drop(tx);

    // Expiry: live strictly before `expires_at`.
    assert!(read_session(&store, "hash-1", now + 3599).await.is_some());
    assert_eq!(read_session(&store, "hash-1", now + 3600).await, None);

    // A touch moves `last_seen_at` and `expires_at`, nothing else.
    let mut tx = begin(&store).await;
    tx.touch_dashboard_session(&a, "hash-1", now, now + 7200)
        .await
        .unwrap();
    commit(tx).await;
    let got = read_session(&store, "hash-1", now + 3600)
        .await
        .expect("extended");
    assert_eq!(
        (got.created_at, got.last_seen_at, got.expires_at),
        (now - 100, now, now + 7200)
    );
    assert_eq!(got.csrf, row.csrf);
    assert_eq!((got.flash_kind, got.flash_message), (None, None));

    // Messages: none to take; one set is read and taken once.
    let mut tx = begin(&store).await;
    assert_eq!(
        tx.take_dashboard_session_flash(&a, "hash-1").await.unwrap(),
        None
    );
    tx.set_dashboard_session_flash(&a, "hash-1", &flash("ok", "Saved."))
        .await
        .unwrap();
    commit(tx).await;
    let got = read_session(&store, "hash-1", now).await.unwrap();
    assert_eq!(
        (got.flash_kind.as_deref(), got.flash_message.as_deref()),
        (Some("ok"), Some("Saved."))
    );
    // A second message replaces the first.
    let mut tx = begin(&store).await;
    tx.set_dashboard_session_flash(&a, "hash-1", &flash("error", "No <b>."))
        .await
        .unwrap();
    commit(tx).await;
    // A take that rolls back leaves the message.
    let mut tx = begin(&store).await;
    assert!(
        tx.take_dashboard_session_flash(&a, "hash-1")
            .await
            .unwrap()
            .is_some()
    );
    drop(tx);
    let mut tx = begin(&store).await;
    assert_eq!(
        tx.take_dashboard_session_flash(&a, "hash-1").await.unwrap(),
        Some(flash("error", "No <b>.")),
    );
    assert_eq!(
        tx.take_dashboard_session_flash(&a, "hash-1").await.unwrap(),
        None,
        "taken once"
    );
    commit(tx).await;
    let got = read_session(&store, "hash-1", now).await.unwrap();
    assert_eq!((got.flash_kind, got.flash_message), (None, None));
    assert_eq!(
        got.last_seen_at, now,
        "taking the message changes nothing else"
    );

    // One row per token hash.
    let mut tx = begin(&store).await;
    assert_conflict(
        tx.insert_dashboard_session(&a, &session_row(&a, "hash-1", now, now + 60))
            .await,
        "dashboard session",
    );
    drop(tx);

    // Deleting ends it; deleting again is harmless.
    let mut tx = begin(&store).await;
    tx.delete_dashboard_session(&a, "hash-1").await.unwrap();
    commit(tx).await;
    assert_eq!(read_session(&store, "hash-1", now).await, None);
    let mut tx = begin(&store).await;
    tx.delete_dashboard_session(&a, "hash-1").await.unwrap();
    tx.touch_dashboard_session(&a, "hash-1", now, now + 60)
        .await
        .unwrap();
    tx.set_dashboard_session_flash(&a, "hash-1", &flash("ok", "gone"))
        .await
        .unwrap();
    commit(tx).await;
    assert_eq!(
        read_session(&store, "hash-1", now).await,
        None,
        "writes to a deleted session bring nothing back"
    );
}

async fn dashboard_sessions_expire_and_are_capped(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    let now = ids::now();
    for (i, h) in ["old-1", "old-2", "old-3"].iter().enumerate() {
        add_session(&store, &session_row(&a, h, now - 9000, now - 10 + i as i64)).await;
    }
    add_session(&store, &session_row(&a, "at-now", now - 9000, now)).await;
    add_session(&store, &session_row(&b, "live", now - 10, now + 100)).await;
    for h in ["old-1", "old-2", "old-3", "at-now"] {
        assert_eq!(read_session(&store, h, now).await, None, "{h} has expired");
    }

    // Retention deletes what has expired, a bounded batch at a time, and
    // nothing else (no other row is old enough here).
    let mut rounds = Vec::new();
    loop {
        let n = store.purge(0, 0, now, 1).await.unwrap();
        assert!(n <= 1, "one session per batch, got {n}");
        rounds.push(n);
        if n == 0 {
            break;
        }
        assert!(rounds.len() < 10, "purge never finished: {rounds:?}");
    }
    assert_eq!(rounds, [1, 1, 1, 1, 0]);
    assert!(read_session(&store, "live", now).await.is_some());
    assert!(read_session(&store, "live", now + 99).await.is_some());
    // Re-inserting a purged hash works: the row is gone.
    add_session(&store, &session_row(&a, "old-1", now, now + 100)).await;
    assert!(read_session(&store, "old-1", now).await.is_some());

    // The cap: an account keeps its `keep` most recently used sessions.
    for (i, h) in ["a-1", "a-2", "a-3"].iter().enumerate() {
        let mut row = session_row(&a, h, now - 500, now + 1000);
        row.last_seen_at = now - 300 + i as i64 * 100;
        add_session(&store, &row).await;
    }
    // Most recently used: a-3 (now - 100), a-2 (now - 200), old-1 (now),
    // a-1 (now - 300).
    let mut tx = begin(&store).await;
    assert_eq!(tx.trim_dashboard_sessions(&a, 2).await.unwrap(), 2);
    assert_eq!(tx.trim_dashboard_sessions(&a, 2).await.unwrap(), 0);
    commit(tx).await;
    assert!(read_session(&store, "old-1", now).await.is_some());
    assert!(read_session(&store, "a-3", now).await.is_some());
    assert_eq!(read_session(&store, "a-2", now).await, None);
    assert_eq!(read_session(&store, "a-1", now).await, None);
    assert!(
        read_session(&store, "live", now).await.is_some(),
        "another account's sessions are not counted or trimmed"
    );
    let mut tx = begin(&store).await;
    assert_eq!(tx.trim_dashboard_sessions(&a, 0).await.unwrap(), 2);
    commit(tx).await;
    assert_eq!(read_session(&store, "old-1", now).await, None);
    assert!(read_session(&store, "live", now).await.is_some());
}

async fn dashboard_sessions_are_isolated(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let b = new_account(&store, "globex").await;
    let now = ids::now();
    let sa = session_row(&a, "hash-a", now, now + 3600);
    let sb = session_row(&b, "hash-b", now, now + 3600);
    add_session(&store, &sa).await;
    add_session(&store, &sb).await;

    // Each hash reads its own session and account, never the other's.
    let got_a = read_session(&store, "hash-a", now).await.unwrap();
    let got_b = read_session(&store, "hash-b", now).await.unwrap();
    assert_eq!(
        (got_a.account_id.as_str(), got_a.account_name.as_str()),
        (a.as_str(), "acme")
    );
    assert_eq!(
        (got_b.account_id.as_str(), got_b.account_name.as_str()),
        (b.as_str(), "globex")
    );
    assert_eq!(got_a.csrf, sa.csrf);
    assert_eq!(got_b.csrf, sb.csrf);

    // Writes naming the other account change nothing.
    let mut tx = begin(&store).await;
    tx.touch_dashboard_session(&b, "hash-a", now + 5, now + 99_999)
        .await
        .unwrap();
    tx.set_dashboard_session_flash(&b, "hash-a", &flash("error", "theirs"))
        .await
        .unwrap();
    tx.delete_dashboard_session(&b, "hash-a").await.unwrap();
    commit(tx).await;
    assert_eq!(
        read_session(&store, "hash-a", now).await,
        Some(got_a.clone())
    );

    // A message left for one session is not another's to take.
    let mut tx = begin(&store).await;
    tx.set_dashboard_session_flash(&a, "hash-a", &flash("ok", "mine"))
        .await
        .unwrap();
    assert_eq!(
        tx.take_dashboard_session_flash(&b, "hash-a").await.unwrap(),
        None
    );
    assert_eq!(
        tx.take_dashboard_session_flash(&b, "hash-b").await.unwrap(),
        None
    );
    commit(tx).await;
    let got_b_after = read_session(&store, "hash-b", now).await.unwrap();
    assert_eq!(got_b_after, got_b);
    let mut tx = begin(&store).await;
    assert_eq!(
        tx.take_dashboard_session_flash(&a, "hash-a").await.unwrap(),
        Some(flash("ok", "mine"))
    );
    commit(tx).await;

    // Ending one session leaves the other.
    let mut tx = begin(&store).await;
    tx.delete_dashboard_session(&b, "hash-b").await.unwrap();
    commit(tx).await;
    assert_eq!(read_session(&store, "hash-b", now).await, None);
    assert!(read_session(&store, "hash-a", now).await.is_some());
}

// ---------------------------------------------------------------------------
// The hand-off of new deliveries. On SQLite one process serves the database
// and its slots are in memory; on PostgreSQL an endpoint's slots are rows
// of the database, which writes and claims of every node take.

/// A delivery created by a write is leased in that write and handed to the
/// dispatcher once durable, without a claim; a rolled-back write hands off
/// nothing and frees its slot; full slots leave deliveries to claims; and a
/// handed-off delivery that was never sent (the process died between the
/// commit and the send) is claimed again as soon as the next process starts.
#[tokio::test]
async fn sqlite_hand_off_sends_new_deliveries_without_a_claim_and_loses_none() {
    use notifly_server::store::HandOff;

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("notifly.db").display());
    let store = notifly_server::open_store(&url).await.unwrap();
    store.start_serving().await.unwrap();
    // Two slots per endpoint, three in all.
    let hand_off = Arc::new(HandOff::new("node-a", 60_000, 2, 1, 3));
    assert!(store.hand_off(hand_off.clone()).await);
    let account = new_account(&store, "acme").await;
    let ep = add_endpoint(&store, &account, "main", &["*"], true).await;

    // Nothing is handed off before the commit is durable.
    let e = event("contact.created");
    let mut tx = begin(&store).await;
    assert_eq!(tx.insert_event(&account, &e).await.unwrap(), 1);
    assert!(
        !tx.claimable_work(),
        "a handed-off delivery needs no claim, so the dispatcher need not wake"
    );
    let early = tokio::time::timeout(Duration::from_millis(50), hand_off.next()).await;
    assert!(early.is_err(), "handed off before the commit");
    commit(tx).await;
    let ready = tokio::time::timeout(Duration::from_secs(5), hand_off.next())
        .await
        .expect("the delivery is handed off after the commit");
    assert_eq!(ready.len(), 1);
    let (c, body) = &ready[0];
    assert_eq!(c.endpoint_id, ep.id);
    assert_eq!(c.event_id, e.id);
    assert_eq!(c.account_id, account);
    assert_eq!((c.attempt, c.schedule_pos), (1, 0));
    assert_eq!(
        (c.url.as_str(), c.secret.as_str()),
        (ep.url.as_str(), ep.secret.as_str())
    );
    assert_eq!(body.as_ref(), e.body.as_bytes());
    assert_eq!(
        hand_off.free(),
        2,
        "its slot is taken until the attempt ends"
    );
    // It is leased, so a claim does not take it a second time.
    assert!(claim(&store, &claim_all("node-a:1")).await.is_empty());

    // A write rolled back hands off nothing and gives its slot back.
    let mut tx = begin(&store).await;
    tx.insert_event(&account, &event("contact.created"))
        .await
        .unwrap();
    assert_eq!(hand_off.free(), 1);
    drop(tx);
    assert_eq!(hand_off.free(), 2);

    // With the endpoint's two slots taken, the next delivery is left to a claim.
    emit_event(&store, &account, &event("contact.created")).await;
    let second = tokio::time::timeout(Duration::from_secs(5), hand_off.next())
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    let mut tx = begin(&store).await;
    tx.insert_event(&account, &event("contact.created"))
        .await
        .unwrap();
    assert!(
        tx.claimable_work(),
        "a delivery left unleased must be claimed"
    );
    commit(tx).await;
    assert_eq!(deliveries(&store, &account, &ep.id).await.len(), 3);
    let dispatcher_claim = |n: u32| claim_request(&format!("node-a:{n}"), 2, 100, 60_000);
    assert!(
        claim(&store, &dispatcher_claim(2)).await.is_empty(),
        "claims keep to the slots the hand-offs took"
    );
    // The first attempt ends and is recorded: its slot goes to the waiting one.
    store
        .record_attempts(
            &[result_of(c, "node-a:h", Some(200), NextStep::Succeeded)],
            &policy(3600),
        )
        .await
        .unwrap();
    hand_off.release(&ep.id);
    let claimed = claim(&store, &dispatcher_claim(3)).await;
    assert_eq!(
        claimed.len(),
        1,
        "a freed slot goes to the waiting delivery"
    );
    assert_eq!(hand_off.free(), 1, "the claim took its slot");

    // The process dies before sending the other two: the next one to serve
    // the database hands their leases back at once, and claims them.
    drop(store);
    let store = notifly_server::open_store(&url).await.unwrap();
    assert_eq!(store.start_serving().await.unwrap(), 2);
    let again = claim(&store, &claim_all("node-b:0")).await;
    let expected = vec![
        second[0].0.delivery_id.clone(),
        claimed[0].delivery_id.clone(),
    ];
    assert_eq!(claimed_ids(&again), sorted(expected));
    let first = delivery(&store, &account, &c.delivery_id).await;
    assert_eq!(first.status, "succeeded");
}

/// Two nodes on one PostgreSQL database, an endpoint limited to 2 in flight.
/// Each node's writes lease their new deliveries and hand them to their own
/// dispatcher while the endpoint has a free slot; the limit holds across
/// the nodes and across hand-offs and claims; a rolled-back write frees its
/// slot; a recorded result frees it for the deliveries waiting; and a node
/// that stops hands its slots back with its leases.
#[tokio::test]
#[ignore = "needs PostgreSQL: run with NOTIFLY_TEST_POSTGRES_URL set and --include-ignored"]
async fn postgres_hand_off_keeps_an_endpoints_limit_across_nodes() {
    use notifly_server::store::HandOff;

    let db = Db::postgres().await;
    let a = db.store.clone();
    let b = notifly_server::open_store(&db.url).await.unwrap();
    let to_a = Arc::new(HandOff::new("node-a", 60_000, 2, 1, 100));
    let to_b = Arc::new(HandOff::new("node-b", 60_000, 2, 1, 100));
    assert!(a.hand_off(to_a.clone()).await);
    assert!(b.hand_off(to_b.clone()).await);
    let account = new_account(&a, "acme").await;
    let ep = add_endpoint(&a, &account, "main", &["*"], true).await;
    let next = |h: &Arc<HandOff>| {
        let h = h.clone();
        async move { tokio::time::timeout(Duration::from_millis(200), h.next()).await }
    };

    // Node A's write takes one slot and hands its delivery to A, once
    // committed, with no claim.
    let e = event("contact.created");
    let mut tx = begin(&a).await;
    assert_eq!(tx.insert_event(&account, &e).await.unwrap(), 1);
    assert!(!tx.claimable_work(), "a handed-off delivery needs no claim");
    assert!(next(&to_a).await.is_err(), "handed off before the commit");
    commit(tx).await;
    let ready = next(&to_a).await.expect("handed off after the commit");
    let (on_a, body) = &ready[0];
    assert_eq!(
        (
            on_a.endpoint_id.as_str(),
            on_a.event_id.as_str(),
            on_a.attempt
        ),
        (ep.id.as_str(), e.id.as_str(), 1)
    );
    assert_eq!(
        (on_a.url.as_str(), on_a.secret.as_str()),
        (ep.url.as_str(), ep.secret.as_str())
    );
    assert_eq!(body.as_ref(), e.body.as_bytes());
    assert_eq!(
        to_a.free(),
        99,
        "its slot here is taken until the attempt ends"
    );

    // A write on node B that is rolled back gives its slot back, here and
    // in the database.
    let mut tx = begin(&b).await;
    tx.insert_event(&account, &event("contact.created"))
        .await
        .unwrap();
    assert_eq!(to_b.free(), 99);
    drop(tx);
    assert_eq!(to_b.free(), 100);

    // B's next write takes the endpoint's second slot; the one after finds
    // none (A holds the other) and waits for a claim.
    emit_event(&b, &account, &event("contact.created")).await;
    let ready = next(&to_b).await.expect("the freed slot is taken again");
    let on_b = ready[0].0.clone();
    let mut tx = begin(&b).await;
    tx.insert_event(&account, &event("contact.created"))
        .await
        .unwrap();
    assert!(
        tx.claimable_work(),
        "a delivery left unleased must be claimed"
    );
    commit(tx).await;
    assert!(next(&to_b).await.is_err(), "over the limit: not handed off");
    assert_eq!(deliveries(&a, &account, &ep.id).await.len(), 3);
    for (store, owner) in [(&a, "node-a:1"), (&b, "node-b:1")] {
        assert!(
            claim(store, &claim_request(owner, 2, 100, 60_000))
                .await
                .is_empty(),
            "{owner}: two in flight across the nodes, the limit"
        );
    }

    // A's attempt is recorded: its slot is free, and B's claim takes the
    // delivery that waited.
    a.record_attempts(
        &[result_of(on_a, "node-a:h", Some(200), NextStep::Succeeded)],
        &policy(3600),
    )
    .await
    .unwrap();
    to_a.release(&ep.id);
    let claimed = claim(&b, &claim_request("node-b:2", 2, 100, 60_000)).await;
    assert_eq!(
        claimed.len(),
        1,
        "the freed slot goes to the waiting delivery"
    );
    assert!(
        claim(&a, &claim_request("node-a:2", 2, 100, 60_000))
            .await
            .is_empty()
    );

    // Node B stops without sending either: it hands back their leases and
    // slots, and node A takes both at once.
    assert_eq!(b.release_leases("node-b").await.unwrap(), 2);
    let again = claim(&a, &claim_request("node-a:3", 2, 100, 60_000)).await;
    assert_eq!(
        claimed_ids(&again),
        sorted(vec![on_b.delivery_id, claimed[0].delivery_id.clone()])
    );
    b.close().await;
    a.close().await;
}

/// An endpoint changed by `change`, written through `update_endpoint`.
async fn change_endpoint(
    store: &Arc<dyn Store>,
    account: &str,
    ep: &EndpointRecord,
    change: impl FnOnce(&mut EndpointRecord),
) -> EndpointRecord {
    let mut after = ep.clone();
    change(&mut after);
    let mut tx = begin(store).await;
    tx.update_endpoint(account, &after).await.unwrap();
    commit(tx).await;
    after
}

async fn rate_limits_pace_claims(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let slow = add_endpoint(&store, &a, "slow", &["contact.created"], true).await;
    let slow = change_endpoint(&store, &a, &slow, |e| e.rate_limit = Some(5)).await;
    let fast = add_endpoint(&store, &a, "fast", &["contact.created"], true).await;
    assert_eq!(
        read_endpoint(&store, &a, &slow.id)
            .await
            .unwrap()
            .rate_limit,
        Some(5)
    );
    emit_events(&store, &a, "contact.created", 6).await;
    // 5 a second: one at a time, 200 ms apart; the other endpoint is not
    // held back.
    let started = Instant::now();
    let claimed = claim(&store, &claim_all("node-a:0")).await;
    let to = |endpoint: &str| claimed.iter().filter(|c| c.endpoint_id == endpoint).count();
    assert_eq!((to(&slow.id), to(&fast.id)), (1, 6));
    // Claims in the same interval get nothing more, whichever node asks.
    assert!(claim(&store, &claim_all("node-b:0")).await.is_empty());
    // Over the limit, deliveries wait: still pending, no attempt used.
    let waiting = deliveries(&store, &a, &slow.id).await;
    assert_eq!(waiting.len(), 6);
    assert!(
        waiting
            .iter()
            .all(|d| d.status == "pending" && d.attempts == 0)
    );
    // Claimed every 50 ms, the rest go one at a time: the k-th no sooner
    // than k intervals after the first, less the limiter's 100 ms of slack
    // (each measured from before its claim started to after it returned,
    // which brackets the claim's own clock).
    let mut spans = vec![(started, Instant::now())];
    while spans.len() < 6 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = Instant::now();
        let n = claim(&store, &claim_all("node-a:1")).await.len();
        assert!(n <= 1, "{n} claimed at once at 5 a second");
        if n == 1 {
            spans.push((before, Instant::now()));
        }
    }
    assert_eq!(spans.len(), 6, "every delivery is claimed in the end");
    let first = spans[0].0;
    for (k, (_, after)) in spans.iter().enumerate().skip(1) {
        let least = Duration::from_millis(200 * k as u64 - 100);
        assert!(
            after.duration_since(first) >= least,
            "the {k}th after {:?}",
            after.duration_since(first)
        );
    }
    // Without the limit, what waits goes at once.
    emit_events(&store, &a, "contact.created", 3).await;
    change_endpoint(&store, &a, &slow, |e| e.rate_limit = None).await;
    let claimed = claim(&store, &claim_all("node-a:2")).await;
    assert_eq!(
        claimed.iter().filter(|c| c.endpoint_id == slow.id).count(),
        3
    );
}

async fn throttled_endpoints_wait(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let busy = add_endpoint(&store, &a, "busy", &["contact.created"], true).await;
    let calm = add_endpoint(&store, &a, "calm", &["contact.created"], true).await;
    emit_events(&store, &a, "contact.created", 1).await;
    let claimed = claim(&store, &claim_all("node-a:0")).await;
    assert_eq!(claimed.len(), 2);
    emit_events(&store, &a, "contact.created", 1).await;
    // The busy endpoint answers 429 with `Retry-After: 60`.
    let first = claimed.iter().find(|c| c.endpoint_id == busy.id).unwrap();
    let until = ids::now_ms() + 60_000;
    let mut throttled = result_of(
        first,
        "node-a:0",
        Some(429),
        NextStep::Retry {
            at_ms: until,
            schedule_pos: 1,
        },
    );
    throttled.throttle_until_ms = Some(until);
    let other = claimed.iter().find(|c| c.endpoint_id == calm.id).unwrap();
    let done = result_of(other, "node-a:0", Some(200), NextStep::Succeeded);
    store
        .record_attempts(&[throttled, done], &POLICY)
        .await
        .unwrap();
    // Its new delivery, due now, waits for the pause; the other endpoint's
    // goes.
    let claimed = claim(&store, &claim_all("node-a:1")).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].endpoint_id, calm.id);
    let due = store.next_due_ms().await.unwrap();
    // The only work left is the busy endpoint's, due when its pause ends
    // (the calm endpoint's lease ends later).
    assert!(due.is_some_and(|d| d >= until - 1), "{due:?} < {until}");
    let new = deliveries(&store, &a, &busy.id).await;
    assert!(new.iter().any(|d| d.attempts == 0 && d.status == "pending"));
    // A shorter pause from a later answer does not cut it short.
    let mut earlier = result_of(&claimed[0], "node-a:1", Some(502), NextStep::Succeeded);
    earlier.endpoint_id = busy.id.clone();
    earlier.throttle_until_ms = Some(ids::now_ms() + 1_000);
    store.record_attempts(&[earlier], &POLICY).await.unwrap();
    assert!(claim(&store, &claim_all("node-a:2")).await.is_empty());
    let due = store.next_due_ms().await.unwrap();
    assert!(due.is_some_and(|d| d >= until - 1), "{due:?} < {until}");
}

async fn per_resource_ordering(store: Arc<dyn Store>) {
    let a = new_account(&store, "acme").await;
    let ordered = add_endpoint(&store, &a, "ordered", &["contact.updated"], true).await;
    let ordered = change_endpoint(&store, &a, &ordered, |e| {
        e.ordering = "per_resource".to_owned();
    })
    .await;
    assert_eq!(
        read_endpoint(&store, &a, &ordered.id)
            .await
            .unwrap()
            .ordering,
        "per_resource"
    );
    let free = add_endpoint(&store, &a, "free", &["contact.updated"], true).await;
    let now = ids::now();
    let (r1, r2) = (ids::new_id(), ids::new_id());
    let mut events = Vec::new();
    for resource in [&r1, &r1, &r2, &r1] {
        let e = about("contact.updated", now, resource);
        emit_event(&store, &a, &e).await;
        events.push(e);
    }
    let of = |claimed: &[Claimed], endpoint: &str| -> Vec<String> {
        let mut ids: Vec<String> = claimed
            .iter()
            .filter(|c| c.endpoint_id == endpoint)
            .map(|c| c.event_id.clone())
            .collect();
        ids.sort();
        ids
    };
    let ids = |list: &[&EventRecord]| -> Vec<String> {
        let mut ids: Vec<String> = list.iter().map(|e| e.id.clone()).collect();
        ids.sort();
        ids
    };
    // The unordered endpoint gets all four at once; the ordered one the
    // first event of each resource.
    let claimed = claim(&store, &claim_all("node-a:0")).await;
    assert_eq!(of(&claimed, &free.id).len(), 4);
    assert_eq!(of(&claimed, &ordered.id), ids(&[&events[0], &events[2]]));
    let first = claimed
        .iter()
        .find(|c| c.event_id == events[0].id && c.endpoint_id == ordered.id)
        .unwrap();
    // While r1's first is in flight, or waits for a retry, r1's second waits.
    assert!(of(&claim(&store, &claim_all("node-a:1")).await, &ordered.id).is_empty());
    let retry = NextStep::Retry {
        at_ms: ids::now_ms() - 1,
        schedule_pos: 1,
    };
    store
        .record_attempts(&[result_of(first, "node-a:0", Some(500), retry)], &POLICY)
        .await
        .unwrap();
    let claimed = claim(&store, &claim_all("node-a:2")).await;
    assert_eq!(of(&claimed, &ordered.id), ids(&[&events[0]]));
    // Once it succeeds, the second goes; once that finally fails, the third.
    let retried = claimed
        .iter()
        .find(|c| c.endpoint_id == ordered.id)
        .unwrap();
    store
        .record_attempts(
            &[result_of(
                retried,
                "node-a:2",
                Some(200),
                NextStep::Succeeded,
            )],
            &POLICY,
        )
        .await
        .unwrap();
    let claimed = claim(&store, &claim_all("node-a:3")).await;
    assert_eq!(of(&claimed, &ordered.id), ids(&[&events[1]]));
    store
        .record_attempts(
            &[result_of(
                &claimed[0],
                "node-a:3",
                Some(500),
                NextStep::Failed,
            )],
            &POLICY,
        )
        .await
        .unwrap();
    let claimed = claim(&store, &claim_all("node-a:4")).await;
    assert_eq!(of(&claimed, &ordered.id), ids(&[&events[3]]));
}
