//! Persistence behind one narrow interface.
//!
//! Nothing outside this module writes SQL. The domain layer talks to a [`Store`]
//! through two kinds of handle:
//!
//! - [`Conn`]: reads, from a pooled connection or from inside a transaction;
//! - [`WriteTx`]: a write transaction. Everything written through one handle
//!   commits atomically, which is what makes the outbox transactional: a resource
//!   change and its event row are written through the same `WriteTx`.
//!
//! Each backend implements the traits with SQL written for it. Nothing here
//! assumes a single process: uniqueness and ordering come from the database.

mod hand_off;
mod metrics;
pub mod postgres;
mod records;
pub mod sqlite;
mod sqlite_rows;
mod sqlite_writer;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

pub use hand_off::{HandOff, Ready};
pub(crate) use metrics::Pool;
pub use metrics::StoreMetrics;
pub use records::*;

/// What can go wrong in the store. The domain maps these to user-facing errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness constraint was violated; the string names the constraint.
    #[error("conflict on {0}")]
    Conflict(&'static str),
    /// A pagination cursor names a row that does not exist for this account.
    #[error("unknown cursor")]
    UnknownCursor,
    /// The database could not be reached or answered with an error.
    #[error("database error")]
    Backend(#[source] sqlx::Error),
    /// The SQLite database answered with an error.
    #[error("database error")]
    Sqlite(#[source] rusqlite::Error),
    /// Every connection stayed busy for too long.
    #[error("{0}")]
    Busy(&'static str),
    /// A stored value could not be decoded.
    #[error("corrupt stored value")]
    Corrupt(#[source] serde_json::Error),
    /// The transaction holding this write failed to commit; nothing of it was kept.
    #[error("commit failed")]
    CommitFailed(#[source] std::sync::Arc<rusqlite::Error>),
    /// The writer task is gone (the store is shutting down).
    #[error("the database writer is unavailable")]
    WriterGone,
    /// Another server process already serves this database, and the store
    /// allows only one (SQLite). The string says which lock file is held.
    #[error("{0}")]
    AlreadyServed(String),
    /// The store's own files could not be used (a lock file).
    #[error("{0}")]
    Io(String, #[source] std::io::Error),
}

impl StoreError {
    /// Whether the database is unreachable, restarting or overloaded (worth a
    /// 503 and a retry) rather than broken.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::WriterGone | StoreError::Busy(_) => true,
            StoreError::Backend(e) => unavailable(e),
            StoreError::Sqlite(e) => sqlite_busy(e),
            StoreError::CommitFailed(e) => sqlite_busy(e),
            _ => false,
        }
    }
}

impl StoreError {
    /// Whether the database refused a value as text it cannot store (a NUL
    /// character): the input's fault, not the server's.
    pub fn is_invalid_text(&self) -> bool {
        matches!(self, StoreError::Backend(sqlx::Error::Database(db))
            if db.code().is_some_and(|code| matches!(&*code, "22021" | "22P05")))
    }
}

/// Another process held SQLite's lock for longer than the busy timeout.
fn sqlite_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Connection failures, pool exhaustion, and the SQLSTATEs PostgreSQL sends
/// when it is shutting down, starting up or out of connections.
fn unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01-57P03: admin shutdown, crash
            // shutdown, cannot connect now; 53300: too many connections;
            // 25006: read-only transaction (a failover in progress);
            // 55P03, 57014: lock or statement timeout (a busy database);
            // 40P01, 40001: a deadlock or serialization failure between
            // concurrent writes (the same request succeeds when retried).
            code.starts_with("08")
                || matches!(
                    &*code,
                    "57P01"
                        | "57P02"
                        | "57P03"
                        | "53300"
                        | "25006"
                        | "55P03"
                        | "57014"
                        | "40P01"
                        | "40001"
                )
        }),
        _ => false,
    }
}

/// A delivery a claim may lease, with what the claim policy needs to know
/// of its endpoint.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct Candidate {
    pub id: String,
    pub endpoint: String,
    /// The endpoint is failing.
    pub failing: bool,
    /// The endpoint's circuit is open and due for a probe (the candidate
    /// queries return no other deliveries of an open circuit).
    pub probe: bool,
    /// The endpoint's rate limit (deliveries per second), if it has one.
    pub rate_limit: Option<i64>,
    /// The endpoint's rate limiter state (see [`rate_allowance`]).
    pub rate_tat_us: Option<i64>,
}

/// What a claim leases: the deliveries, and the rate limiter state each
/// rate-limited endpoint it leased for is left at.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Chosen {
    pub ids: Vec<String>,
    /// `(endpoint, rate_tat_us)`, to write back in the claim's transaction.
    pub rates: Vec<(String, i64)>,
}

/// The claim policy, shared by every backend: from `candidates`, ordered by
/// due time, and the deliveries already in flight per endpoint, the ids to
/// lease at `now_us` (Unix microseconds). Healthy endpoints come first, so
/// that failing ones (mostly old retries) cannot take the global slots from
/// them; each endpoint stays within its limit in flight and its rate limit,
/// and an endpoint whose circuit is open gets one delivery (its probe), and
/// only when nothing of it is in flight.
pub(crate) fn choose_claims(
    candidates: Vec<Candidate>,
    mut in_flight: std::collections::HashMap<String, i64>,
    r: &ClaimRequest,
    now_us: i64,
) -> Chosen {
    let (healthy, failing): (Vec<_>, Vec<_>) = candidates.into_iter().partition(|c| !c.failing);
    // Per rate-limited endpoint: (its rate, its state, how many it may
    // still start now, how many this claim leased).
    let mut rates: std::collections::HashMap<String, (i64, Option<i64>, u32, u32)> =
        std::collections::HashMap::new();
    let mut chosen = Chosen::default();
    for c in healthy.into_iter().chain(failing) {
        if chosen.ids.len() >= r.max as usize {
            break;
        }
        let limit = if c.probe {
            1
        } else if c.failing {
            r.per_failing_endpoint.min(r.per_endpoint)
        } else {
            r.per_endpoint
        };
        let n = in_flight.entry(c.endpoint.clone()).or_insert(0);
        if *n >= i64::from(limit) {
            continue;
        }
        if let Some(rate) = c.rate_limit {
            let (_, _, left, used) = rates.entry(c.endpoint.clone()).or_insert_with(|| {
                let left = rate_allowance(rate, c.rate_tat_us, now_us);
                (rate, c.rate_tat_us, left, 0)
            });
            if *left == 0 {
                continue;
            }
            *left -= 1;
            *used += 1;
        }
        *n += 1;
        chosen.ids.push(c.id);
    }
    let mut rates: Vec<(String, i64)> = rates
        .into_iter()
        .filter(|(_, (_, _, _, used))| *used > 0)
        .map(|(endpoint, (rate, tat, _, used))| (endpoint, rate_after(rate, tat, now_us, used)))
        .collect();
    rates.sort_unstable();
    chosen.rates = rates;
    chosen
}

/// The rate limiter of an endpoint limited to `rate` deliveries a second is
/// a generic cell rate algorithm (virtual scheduling): its state is the
/// theoretical arrival time `tat` of its next delivery, one emission
/// interval (1/rate s) after the last one leased; a delivery may start at
/// `now` if `now >= tat - tolerance`. The tolerance lets a claim lease
/// [`RATE_BURST_MS`]' worth at once (at least one): claims come about every
/// 100 ms while work waits, and without it one delivery a claim would be
/// the most any limit allows. So in any one second an endpoint sees at
/// most `rate` deliveries and that burst (a fifth more). The state lives in the endpoint's row, and
/// claims (one at a time across the nodes) read and advance it, which is
/// what makes the limit hold for the whole cluster.
pub(crate) const RATE_BURST_MS: i64 = 200;

/// The emission interval and tolerance of a limit of `rate` per second, in
/// microseconds.
fn rate_terms(rate: i64) -> (i64, i64) {
    let rate = rate.max(1);
    // Rounded up: never faster than the limit.
    let interval = (1_000_000 + rate - 1) / rate;
    let burst = ((rate * RATE_BURST_MS + 999) / 1000).max(1);
    // At least a claim interval's slack (under one emission interval, so
    // the burst stays one), so that claims a little late do not leave a
    // low limit short.
    (interval, ((burst - 1) * interval).max(RATE_SLACK_US))
}

/// The least tolerance: the dispatcher's recheck interval while work waits.
const RATE_SLACK_US: i64 = 100_000;

/// How many deliveries an endpoint limited to `rate` per second, its
/// limiter at `tat_us`, may start at `now_us` (see [`RATE_BURST_MS`]).
pub(crate) fn rate_allowance(rate: i64, tat_us: Option<i64>, now_us: i64) -> u32 {
    let (interval, tolerance) = rate_terms(rate);
    let tat = tat_us.unwrap_or(i64::MIN).max(now_us);
    let room = now_us + tolerance - tat;
    if room < 0 {
        0
    } else {
        u32::try_from(room / interval + 1).unwrap_or(u32::MAX)
    }
}

/// The limiter state after `n` deliveries start at `now_us`.
pub(crate) fn rate_after(rate: i64, tat_us: Option<i64>, now_us: i64, n: u32) -> i64 {
    let (interval, _) = rate_terms(rate);
    tat_us.unwrap_or(i64::MIN).max(now_us) + i64::from(n) * interval
}

/// What a batch of attempt results does to one endpoint's health (see
/// [`endpoint_health`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// Its last result in the batch succeeded: it is not failing.
    Recovered,
    /// Its last result failed. `since_now`: an earlier result of the batch
    /// succeeded, so its run of failures starts now; otherwise a run already
    /// under way goes on (or starts now if there was none).
    Failing { since_now: bool },
}

/// The health policy of a write-back, shared by every backend: each endpoint
/// of `results` once (in the order they first appear), with what its results,
/// taken in order, leave it at. Applying that once per endpoint gives the
/// same `failing_since` as applying every result one by one, with one
/// statement per endpoint instead of one per result.
pub(crate) fn endpoint_health(results: &[AttemptResult]) -> Vec<(&str, Health)> {
    let mut out: Vec<(&str, Health)> = Vec::new();
    let mut succeeded: Vec<bool> = Vec::new();
    for r in results.iter().filter(|r| !r.unsent) {
        let endpoint = r.endpoint_id.as_str();
        let at = match out.iter().position(|(id, _)| *id == endpoint) {
            Some(at) => at,
            None => {
                out.push((endpoint, Health::Recovered));
                succeeded.push(false);
                out.len() - 1
            }
        };
        if r.attempt.succeeded {
            out[at].1 = Health::Recovered;
            succeeded[at] = true;
        } else if out[at].1 == Health::Recovered {
            out[at].1 = Health::Failing {
                since_now: succeeded[at],
            };
        }
    }
    out
}

/// Each endpoint of `results` that asked to be slowed down (429, 502, 504),
/// once, in id order, with the latest time its results pause it until.
pub(crate) fn endpoint_throttles(results: &[AttemptResult]) -> Vec<(&str, i64)> {
    let mut out: Vec<(&str, i64)> = Vec::new();
    for r in results {
        let Some(until) = r.throttle_until_ms else {
            continue;
        };
        match out.iter_mut().find(|(id, _)| *id == r.endpoint_id) {
            Some((_, at)) => *at = (*at).max(until),
            None => out.push((&r.endpoint_id, until)),
        }
    }
    out.sort_unstable();
    out
}

/// The first probe of an open circuit goes this long after it opened.
pub(crate) const FIRST_PROBE_MS: i64 = 5_000;
/// Probes of a circuit that stays open are at most this far apart.
pub(crate) const MAX_PROBE_INTERVAL_MS: i64 = 5 * 60 * 1000;

/// What a batch of attempt results does to one endpoint's circuit breaker
/// (see [`circuit_steps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CircuitStep {
    /// Its last result succeeded: the circuit closes, the count restarts.
    Closed,
    /// Its last result failed: `failures` more in a row, counted from zero
    /// if `restart` (an earlier result of the batch succeeded). A closed
    /// circuit opens once the count reaches the threshold; a half-open one
    /// (its probe failed) opens again, its next probe twice as far off.
    Failed { restart: bool, failures: i64 },
}

/// The circuit policy of a write-back, shared by every backend: each
/// endpoint of `results` (requests actually sent) once, with what its
/// results, in order, do to its circuit.
pub(crate) fn circuit_steps(results: &[AttemptResult]) -> Vec<(&str, CircuitStep)> {
    let mut out: Vec<(&str, CircuitStep)> = Vec::new();
    for r in results.iter().filter(|r| !r.unsent) {
        let endpoint = r.endpoint_id.as_str();
        let at = match out.iter().position(|(id, _)| *id == endpoint) {
            Some(at) => at,
            None => {
                out.push((
                    endpoint,
                    CircuitStep::Failed {
                        restart: false,
                        failures: 0,
                    },
                ));
                out.len() - 1
            }
        };
        out[at].1 = match (out[at].1, r.attempt.succeeded) {
            (_, true) => CircuitStep::Closed,
            (CircuitStep::Closed, false) => CircuitStep::Failed {
                restart: true,
                failures: 1,
            },
            (CircuitStep::Failed { restart, failures }, false) => CircuitStep::Failed {
                restart,
                failures: failures + 1,
            },
        };
    }
    out
}

/// Rows per multi-row statement (fan-out, write-back): at most 12 columns
/// each, well under SQLite's 32,766 and PostgreSQL's 65,535 bound parameters.
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

// What both backends share besides the trait: the columns each row type is
// read with, how errors map, and list filters. The SQL itself is per backend.

/// Maps any database error.
pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e)
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`].
pub(crate) fn unique(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
        _ => StoreError::Backend(e),
    }
}

pub(crate) const CONTACT_COLUMNS: &str = "id, username, phone_number, avatar_url, display_name, conversation_id, last_active_at, created_at";
pub(crate) const CONVERSATION_COLUMNS: &str = "id, contact_id, group_id, pinned_message_id, is_pinned, is_muted, last_active_at, last_opened_at, created_at, archived_at";
pub(crate) const MESSAGE_COLUMNS: &str =
    "id, conversation_id, contact_id, message, reactions, read_at, created_at, updated_at";
pub(crate) const GROUP_COLUMNS: &str =
    "id, name, description, avatar_url, conversation_id, created_at, archived_at";
pub(crate) const ATTACHMENT_COLUMNS: &str =
    "id, message_id, filename, file_type, file_size, created_at";
pub(crate) const EVENT_COLUMNS: &str = "id, event_type, body, created_at";
pub(crate) const ENDPOINT_COLUMNS: &str = "id, name, url, description, events, enabled, disabled_reason, secret, previous_secret, previous_secret_expires_at, failing_since, created_at, updated_at, signature_scheme, circuit, circuit_since, rate_limit, ordering";
pub(crate) const DELIVERY_COLUMNS: &str = "id, endpoint_id, event_id, event_type, status, attempts, next_attempt_ms, last_attempt_at, last_status_code, created_at, updated_at";
/// A dashboard session's columns, from `dashboard_sessions s JOIN accounts a`.
pub(crate) const DASHBOARD_SESSION_COLUMNS: &str = "s.token_hash, s.account_id, a.name AS account_name, s.csrf, s.created_at, s.last_seen_at, s.expires_at, s.flash_kind, s.flash_message, s.key_id";
pub(crate) const ATTEMPT_COLUMNS: &str = "id, delivery_id, attempt, started_at_ms, duration_ms, request_headers, response_status, response_headers, response_body, error, succeeded";

/// A list filter on one column.
pub(crate) enum Filter<'a> {
    Text(&'static str, &'a str),
    Bool(&'static str, bool),
    /// `true`: the column is set; `false`: it is null.
    Set(&'static str, bool),
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// A database holding Notifly's data.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A connection for reads.
    async fn read(&self) -> StoreResult<Box<dyn Conn>>;
    /// Starts a write transaction. Dropping it without [`WriteTx::commit`] rolls back.
    async fn write(&self) -> StoreResult<Box<dyn WriteTx>>;
    /// Checks that the database answers.
    async fn ping(&self) -> StoreResult<()>;
    /// Closes the pools, waiting for connections in use.
    async fn close(&self);

    /// Leases due deliveries, at most `per_endpoint` in flight per endpoint
    /// across all nodes, and returns them ready to send.
    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Vec<Claimed>>;
    /// Records attempts and moves their deliveries on, in one transaction.
    /// An endpoint failing without a success for `policy.disable_after_secs`
    /// is disabled; `policy.circuit_failures` failures in a row open its
    /// circuit (see [`circuit_steps`]).
    async fn record_attempts(
        &self,
        results: &[AttemptResult],
        policy: &EndpointPolicy,
    ) -> StoreResult<()>;
    /// When the next pending delivery is due (Unix ms), if any.
    async fn next_due_ms(&self) -> StoreResult<Option<i64>>;
    /// Hands back the leases a node holds (tokens `<node>:…`), so other nodes
    /// can take the work.
    async fn release_leases(&self, node: &str) -> StoreResult<u64>;
    /// Called once by a server process before it serves. A store that one
    /// server process at a time may use (SQLite) makes this process that
    /// one, or fails with [`StoreError::AlreadyServed`], and then hands back
    /// every lease still recorded: they were held by a process that is gone
    /// (killed, or a crash), so their work is sent again at once instead of
    /// when the leases expire. Returns how many it handed back. A store that
    /// several nodes share (PostgreSQL) does nothing: other nodes' leases are
    /// live, and a dead node's expire.
    async fn start_serving(&self) -> StoreResult<u64> {
        Ok(0)
    }
    /// Makes new deliveries created by this process go to `hand_off`: each
    /// is leased to this process in the transaction that creates it (when
    /// its endpoint has a free slot) and queued there once durable, so the
    /// dispatcher sends it without a claim. Claims take their slots from
    /// `hand_off` too. Returns whether the store does this (both do); one
    /// that did not would leave new deliveries to claims, and the
    /// dispatcher would count its slots itself.
    async fn hand_off(&self, hand_off: std::sync::Arc<HandOff>) -> bool {
        let _ = hand_off;
        false
    }
    /// Tells the other nodes on this database that this node committed
    /// writes (new events), and whether they left work for a claim (new
    /// deliveries it did not hand off, retries). With one process there is
    /// nobody to tell.
    async fn announce(&self, claimable: bool) -> StoreResult<()> {
        let _ = claimable;
        Ok(())
    }
    /// Calls `changed` whenever another node announces writes (with whether
    /// they left work for a claim), and after a lost connection (when
    /// announcements may have been missed: as if they had), until `stop` is
    /// cancelled. With one process there is nobody to hear.
    async fn follow(&self, changed: Box<dyn Fn(bool) + Send + Sync>, stop: CancellationToken) {
        let _ = changed;
        stop.cancelled().await;
    }
    /// Queue figures for metrics.
    async fn queue_stats(&self, now_ms: i64) -> StoreResult<QueueStats>;

    /// Every account's endpoints' stored keys with ids after `after`, in id
    /// order, at most `limit`: for sealing them at start-up and sealing
    /// them again under a new key.
    async fn endpoint_keys(&self, after: &str, limit: u32) -> StoreResult<Vec<StoredKeys>>;

    /// Replaces an endpoint's stored keys with `after`'s if they are still
    /// `before`'s (a rotation in between wins); whether they were.
    async fn replace_endpoint_keys(
        &self,
        before: &StoredKeys,
        after: &StoredKeys,
    ) -> StoreResult<bool>;
    /// Deletes one small batch (at most `batch` rows per table) of what is
    /// past retention: attempts and finished deliveries created before
    /// `before`, events before it that no delivery still needs, idempotency
    /// keys created before `keys_before`, and dashboard sessions expired at
    /// `sessions_at` (`expires_at <= sessions_at`). Returns the rows
    /// deleted; 0 means nothing is left to purge.
    async fn purge(
        &self,
        before: i64,
        keys_before: i64,
        sessions_at: i64,
        batch: u32,
    ) -> StoreResult<u64>;
}

/// Reads. Every resource read is scoped to an account.
#[async_trait]
pub trait Conn: Send {
    /// The key with this hash and its account.
    async fn api_key_by_hash(
        &mut self,
        key_hash: &str,
    ) -> StoreResult<Option<(Account, ApiKeyRecord)>>;
    /// An account's keys, oldest first.
    async fn api_keys(&mut self, account: &str) -> StoreResult<Vec<ApiKeyRecord>>;
    async fn account_count(&mut self) -> StoreResult<i64>;
    /// The dashboard session whose token hashes to `token_hash`, with its
    /// account's name, unless it has expired at `now` (Unix seconds). Looked
    /// up by the hash alone, like an API key: the account is not known yet.
    async fn dashboard_session(
        &mut self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<DashboardSession>>;

    async fn contact(&mut self, account: &str, id: &str) -> StoreResult<Option<Contact>>;
    async fn contacts_by_ids(&mut self, account: &str, ids: &[String])
    -> StoreResult<Vec<Contact>>;
    async fn list_contacts(&mut self, account: &str, page: &Page) -> StoreResult<Listed<Contact>>;
    async fn contact_has_messages(&mut self, account: &str, contact_id: &str) -> StoreResult<bool>;

    async fn conversation(&mut self, account: &str, id: &str) -> StoreResult<Option<Conversation>>;
    async fn list_conversations(
        &mut self,
        account: &str,
        filter: &ConversationFilter,
        page: &Page,
    ) -> StoreResult<Listed<Conversation>>;

    async fn message(&mut self, account: &str, id: &str) -> StoreResult<Option<MessageRecord>>;
    async fn list_messages(
        &mut self,
        account: &str,
        conversation_id: Option<&str>,
        page: &Page,
    ) -> StoreResult<Listed<MessageRecord>>;
    /// Every message of a conversation, oldest first (for cascades).
    async fn messages_in_conversation(
        &mut self,
        account: &str,
        conversation_id: &str,
    ) -> StoreResult<Vec<MessageRecord>>;

    async fn group(&mut self, account: &str, id: &str) -> StoreResult<Option<GroupRecord>>;
    async fn list_groups(&mut self, account: &str, page: &Page)
    -> StoreResult<Listed<GroupRecord>>;
    /// Member contact ids of a group, in the order they were given.
    async fn group_members(&mut self, group_id: &str) -> StoreResult<Vec<String>>;
    /// Ids of the groups a contact belongs to.
    async fn groups_with_member(
        &mut self,
        account: &str,
        contact_id: &str,
    ) -> StoreResult<Vec<String>>;

    async fn attachment(&mut self, account: &str, id: &str) -> StoreResult<Option<Attachment>>;
    async fn list_attachments(
        &mut self,
        account: &str,
        message_id: Option<&str>,
        page: &Page,
    ) -> StoreResult<Listed<Attachment>>;
    /// Every attachment of a message, oldest first.
    async fn attachments_of_message(
        &mut self,
        account: &str,
        message_id: &str,
    ) -> StoreResult<Vec<Attachment>>;

    /// An event of the account's log (`/v1/events`): test events are not.
    async fn event(&mut self, account: &str, id: &str) -> StoreResult<Option<EventRecord>>;
    /// Any event a delivery of the account was made for, test events too.
    async fn delivered_event(
        &mut self,
        account: &str,
        id: &str,
    ) -> StoreResult<Option<EventRecord>>;
    async fn list_events(
        &mut self,
        account: &str,
        event_type: Option<&str>,
        page: &Page,
    ) -> StoreResult<Listed<EventRecord>>;
    /// Up to `limit` events written after the event `after` (from the start of
    /// the log if `None`), oldest first: for streaming the log.
    async fn events_after(
        &mut self,
        account: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>>;
    /// The newest event's id, if any.
    async fn latest_event_id(&mut self, account: &str) -> StoreResult<Option<String>>;

    async fn idempotent_response(
        &mut self,
        account: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotentResponse>>;

    async fn endpoint(&mut self, account: &str, id: &str) -> StoreResult<Option<EndpointRecord>>;
    async fn list_endpoints(
        &mut self,
        account: &str,
        page: &Page,
    ) -> StoreResult<Listed<EndpointRecord>>;
    async fn delivery(&mut self, account: &str, id: &str) -> StoreResult<Option<DeliveryRecord>>;
    async fn list_deliveries(
        &mut self,
        account: &str,
        endpoint_id: &str,
        status: Option<&str>,
        page: &Page,
    ) -> StoreResult<Listed<DeliveryRecord>>;
    /// Every attempt of a delivery, oldest first.
    async fn attempts(
        &mut self,
        account: &str,
        delivery_id: &str,
    ) -> StoreResult<Vec<AttemptRecord>>;
    /// An endpoint's attempts started at or after `since_ms`, summed per
    /// bucket of `bucket_ms` (bucket 0 starts at `since_ms`), oldest bucket
    /// first; buckets without attempts are absent.
    async fn attempt_buckets(
        &mut self,
        account: &str,
        endpoint_id: &str,
        since_ms: i64,
        bucket_ms: i64,
    ) -> StoreResult<Vec<AttemptBucket>>;
    /// When a delivery to an endpoint was last attempted (Unix seconds).
    async fn last_attempt_at(
        &mut self,
        account: &str,
        endpoint_id: &str,
    ) -> StoreResult<Option<i64>>;
}

/// A write transaction. It can also read, seeing its own writes.
#[async_trait]
pub trait WriteTx: Conn {
    /// A new account with its first key.
    async fn insert_account(
        &mut self,
        account: &Account,
        key: &ApiKeyRecord,
        key_hash: &str,
    ) -> StoreResult<()>;
    /// A new key of `account` (the record's); `Conflict` if the account
    /// already has `max` keys. Serialized with the account's other key
    /// changes.
    async fn insert_api_key(
        &mut self,
        key: &ApiKeyRecord,
        key_hash: &str,
        max: u32,
    ) -> StoreResult<()>;
    /// Revokes a key of `account`, and ends the dashboard sessions opened
    /// with it, unless it is the account's last key. Serialized with the
    /// account's other key changes, so two revocations cannot remove the
    /// last two keys.
    async fn revoke_api_key(&mut self, account: &str, id: &str) -> StoreResult<KeyRevocation>;
    /// Records that a key was used at `now`.
    async fn touch_api_key(&mut self, id: &str, now: i64) -> StoreResult<()>;

    /// Starts a dashboard session of `account` (`session.account_name` is
    /// not stored).
    async fn insert_dashboard_session(
        &mut self,
        account: &str,
        session: &DashboardSession,
    ) -> StoreResult<()>;
    /// Ends the account's least recently used sessions beyond the `keep`
    /// most recently used. Returns how many it ended.
    async fn trim_dashboard_sessions(&mut self, account: &str, keep: u32) -> StoreResult<u64>;
    /// Records that a session was used at `last_seen_at`, and when it now expires.
    async fn touch_dashboard_session(
        &mut self,
        account: &str,
        token_hash: &str,
        last_seen_at: i64,
        expires_at: i64,
    ) -> StoreResult<()>;
    /// Leaves a message for the session's next page, replacing any other.
    async fn set_dashboard_session_flash(
        &mut self,
        account: &str,
        token_hash: &str,
        flash: &SessionFlash,
    ) -> StoreResult<()>;
    /// Removes the session's message and returns it, if it had one. Of two
    /// takes of one message, only the first gets it.
    async fn take_dashboard_session_flash(
        &mut self,
        account: &str,
        token_hash: &str,
    ) -> StoreResult<Option<SessionFlash>>;
    /// Ends a session (nothing happens if there is none).
    async fn delete_dashboard_session(
        &mut self,
        account: &str,
        token_hash: &str,
    ) -> StoreResult<()>;

    async fn insert_contact(&mut self, account: &str, contact: &Contact) -> StoreResult<()>;
    async fn update_contact(&mut self, account: &str, contact: &Contact) -> StoreResult<()>;
    async fn delete_contact(&mut self, account: &str, id: &str) -> StoreResult<()>;

    async fn insert_conversation(
        &mut self,
        account: &str,
        conversation: &Conversation,
    ) -> StoreResult<()>;
    async fn update_conversation(
        &mut self,
        account: &str,
        conversation: &Conversation,
    ) -> StoreResult<()>;
    async fn delete_conversation(&mut self, account: &str, id: &str) -> StoreResult<()>;

    async fn insert_message(&mut self, account: &str, message: &MessageRecord) -> StoreResult<()>;
    async fn update_message(&mut self, account: &str, message: &MessageRecord) -> StoreResult<()>;
    async fn delete_message(&mut self, account: &str, id: &str) -> StoreResult<()>;

    async fn insert_group(&mut self, account: &str, group: &GroupRecord) -> StoreResult<()>;
    async fn update_group(&mut self, account: &str, group: &GroupRecord) -> StoreResult<()>;
    async fn set_group_members(
        &mut self,
        group_id: &str,
        contact_ids: &[String],
    ) -> StoreResult<()>;
    async fn delete_group(&mut self, account: &str, id: &str) -> StoreResult<()>;

    async fn insert_attachment(
        &mut self,
        account: &str,
        attachment: &Attachment,
    ) -> StoreResult<()>;
    async fn update_attachment(
        &mut self,
        account: &str,
        attachment: &Attachment,
    ) -> StoreResult<()>;
    async fn delete_attachment(&mut self, account: &str, id: &str) -> StoreResult<()>;

    /// Appends an event to the account's log (the outbox) and fans it out: one
    /// pending delivery per enabled endpoint subscribed to its type. Returns
    /// how many deliveries it created.
    async fn insert_event(&mut self, account: &str, event: &EventRecord) -> StoreResult<u64>;
    /// Appends an event delivered to one endpoint only (a test event, which
    /// the account's log and its stream do not show); returns the
    /// delivery's id.
    async fn insert_event_for_endpoint(
        &mut self,
        account: &str,
        event: &EventRecord,
        endpoint_id: &str,
    ) -> StoreResult<String>;

    async fn insert_endpoint(
        &mut self,
        account: &str,
        endpoint: &EndpointRecord,
    ) -> StoreResult<()>;
    async fn update_endpoint(
        &mut self,
        account: &str,
        endpoint: &EndpointRecord,
    ) -> StoreResult<()>;
    /// Deletes an endpoint and cancels its pending deliveries.
    async fn delete_endpoint(&mut self, account: &str, id: &str) -> StoreResult<()>;
    /// Makes a delivery pending again, due now, with a fresh retry schedule.
    /// Returns `false` (and changes nothing) while an attempt is in flight.
    async fn retry_delivery(&mut self, account: &str, id: &str, now_ms: i64) -> StoreResult<bool>;
    /// Makes every failed delivery of an endpoint created at or after `since`
    /// pending again, due now. Returns how many.
    async fn recover_deliveries(
        &mut self,
        account: &str,
        endpoint_id: &str,
        since: i64,
        now_ms: i64,
    ) -> StoreResult<u64>;

    /// Remembers the response to an idempotent request. A second insert of the
    /// same key is a [`StoreError::Conflict`].
    async fn insert_idempotent_response(
        &mut self,
        account: &str,
        key: &str,
        response: &IdempotentResponse,
    ) -> StoreResult<()>;

    /// Says that this transaction reads rows only to refer to them (a new
    /// message reads its conversation and sender): from now on its reads
    /// keep the rows they return from being deleted until it ends, without
    /// holding off other writes to them. Otherwise a write transaction's
    /// reads of single rows lock them against other changes until it ends,
    /// as a read-modify-write needs. A store whose writes run one at
    /// a time (SQLite) has nothing to lock.
    fn reads_only_to_refer(&mut self) {}

    /// Says that this transaction reads rows to delete them (a contact, a
    /// conversation): from now on its reads lock the rows they return
    /// against new references too, so that no write adds a message to a
    /// conversation being deleted. A store whose writes run one at a time
    /// (SQLite) has nothing to lock.
    fn reads_to_delete(&mut self) {}

    /// Whether this transaction made work that the dispatcher must claim:
    /// new deliveries it did not hand off, deliveries made pending again,
    /// an endpoint enabled again. The domain wakes the dispatcher only then.
    fn claimable_work(&self) -> bool {
        true
    }

    /// The endpoints this transaction created deliveries to that wait in
    /// their queue (see [`HandOff::pace`]): with a hand-off, those that
    /// found no free slot; where claims start every delivery, all of them.
    fn queued_to(&self) -> Vec<String> {
        Vec::new()
    }

    /// Makes every write of this transaction durable and visible.
    async fn commit(self: Box<Self>) -> StoreResult<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(per_endpoint: u32, per_failing_endpoint: u32, max: u32) -> ClaimRequest {
        ClaimRequest {
            lease_ms: 1000,
            owner: "node:0".into(),
            per_endpoint,
            per_failing_endpoint,
            max,
        }
    }

    fn candidate(id: &str, endpoint: &str, failing: bool) -> Candidate {
        Candidate {
            id: id.into(),
            endpoint: endpoint.into(),
            failing,
            probe: false,
            rate_limit: None,
            rate_tat_us: None,
        }
    }

    fn ids(chosen: &Chosen) -> Vec<&str> {
        chosen.ids.iter().map(String::as_str).collect()
    }

    #[test]
    fn claims_respect_limits_and_serve_healthy_endpoints_first() {
        let candidates = vec![
            candidate("f1", "down", true),
            candidate("f2", "down", true),
            candidate("f3", "down", true),
            candidate("h1", "up", false),
            candidate("h2", "up", false),
            candidate("h3", "up", false),
        ];
        let in_flight = [("up".to_owned(), 1)].into_iter().collect();
        let chosen = choose_claims(candidates.clone(), in_flight, &request(3, 2, 10), 0);
        assert_eq!(ids(&chosen), ["h1", "h2", "f1", "f2"]);
        assert!(chosen.rates.is_empty());
        let chosen = choose_claims(candidates, Default::default(), &request(3, 2, 2), 0);
        assert_eq!(ids(&chosen), ["h1", "h2"]);
        // An open circuit: one probe, and none while something is in flight.
        let probe = |id: &str| Candidate {
            probe: true,
            ..candidate(id, "open", true)
        };
        let probes = vec![probe("p1"), probe("p2")];
        let chosen = choose_claims(probes.clone(), Default::default(), &request(3, 2, 10), 0);
        assert_eq!(ids(&chosen), ["p1"]);
        let busy = [("open".to_owned(), 1)].into_iter().collect();
        assert!(
            choose_claims(probes, busy, &request(3, 2, 10), 0)
                .ids
                .is_empty()
        );
    }

    #[test]
    fn claims_keep_to_rate_limits_and_advance_the_limiter() {
        let limited = |id: &str, tat: Option<i64>| Candidate {
            rate_limit: Some(20),
            rate_tat_us: tat,
            ..candidate(id, "slow", false)
        };
        let now = 10_000_000;
        // 20 a second: 50 ms apart, four at once (200 ms' worth).
        let candidates: Vec<Candidate> = (0..9).map(|i| limited(&format!("s{i}"), None)).collect();
        let chosen = choose_claims(candidates, Default::default(), &request(10, 2, 10), now);
        assert_eq!(ids(&chosen), ["s0", "s1", "s2", "s3"]);
        assert_eq!(chosen.rates, [("slow".to_owned(), now + 200_000)]);
        // 60 ms later, one more interval has passed.
        let later: Vec<Candidate> = (0..5)
            .map(|i| limited(&format!("s{i}"), Some(now + 200_000)))
            .collect();
        let chosen = choose_claims(
            later.clone(),
            Default::default(),
            &request(10, 2, 10),
            now + 60_000,
        );
        assert_eq!(ids(&chosen), ["s0"]);
        assert_eq!(chosen.rates, [("slow".to_owned(), now + 250_000)]);
        // Other endpoints are not held back by it.
        let mut mixed = later;
        mixed.push(candidate("f0", "fast", false));
        let chosen = choose_claims(mixed, Default::default(), &request(10, 2, 10), now + 10_000);
        assert_eq!(ids(&chosen), ["f0"]);
        assert!(chosen.rates.is_empty());
    }

    #[test]
    fn a_rate_limit_holds_over_time_whatever_the_claim_cadence() {
        for rate in [1, 3, 20, 250, 1000] {
            for cadence_us in [7_000, 50_000, 100_000, 190_000, 330_000] {
                let (mut tat, mut now, mut started) = (None, 0_i64, Vec::new());
                while now < 10_000_000 {
                    let n = rate_allowance(rate, tat, now);
                    if n > 0 {
                        started.extend(std::iter::repeat_n(now, n as usize));
                        tat = Some(rate_after(rate, tat, now, n));
                    }
                    now += cadence_us;
                }
                let burst = ((rate * RATE_BURST_MS + 999) / 1000).max(1) as usize;
                // In any one second: at most the rate and one burst.
                for (i, t) in started.iter().enumerate() {
                    let within = started[i..]
                        .iter()
                        .take_while(|u| **u < t + 1_000_000)
                        .count();
                    assert!(
                        within <= rate as usize + burst,
                        "{rate}/s every {cadence_us} us: {within}"
                    );
                }
                // And, claimed at least every 200 ms, no slower than the
                // rate, less what the cadence rounds off.
                if cadence_us <= 200_000 && rate >= 20 {
                    assert!(
                        started.len() as i64 >= rate * 9,
                        "{rate}/s every {cadence_us} us: {}",
                        started.len()
                    );
                }
            }
        }
    }

    fn result(endpoint: &str, succeeded: bool) -> AttemptResult {
        AttemptResult {
            attempt: AttemptRecord {
                id: String::new(),
                delivery_id: String::new(),
                attempt: 1,
                started_at_ms: 0,
                duration_ms: 0,
                request_headers: sqlx::types::Json(Vec::new()),
                response_status: None,
                response_headers: None,
                response_body: None,
                error: None,
                succeeded,
            },
            endpoint_id: endpoint.into(),
            owner: String::new(),
            next: NextStep::Failed,
            disable: None,
            unsent: false,
            throttle_until_ms: None,
            ordered: false,
        }
    }

    #[test]
    fn circuit_steps_count_failures_since_the_last_success() {
        let mut unsent = result("d", false);
        unsent.unsent = true;
        let results = [
            result("a", false),
            result("a", false),
            result("b", false),
            result("b", true),
            result("c", true),
            result("c", false),
            result("c", false),
            unsent,
        ];
        assert_eq!(
            circuit_steps(&results),
            [
                (
                    "a",
                    CircuitStep::Failed {
                        restart: false,
                        failures: 2
                    }
                ),
                ("b", CircuitStep::Closed),
                (
                    "c",
                    CircuitStep::Failed {
                        restart: true,
                        failures: 2
                    }
                ),
            ]
        );
    }

    #[test]
    fn endpoint_health_is_what_the_results_leave_in_order() {
        let results = [
            result("a", false),
            result("b", false),
            result("c", true),
            result("b", true),
            result("d", true),
            result("a", false),
            result("d", false),
            result("c", false),
            result("c", true),
        ];
        assert_eq!(
            endpoint_health(&results),
            [
                ("a", Health::Failing { since_now: false }),
                ("b", Health::Recovered),
                ("c", Health::Recovered),
                ("d", Health::Failing { since_now: true }),
            ]
        );
        assert!(endpoint_health(&[]).is_empty());
        // A request never sent says nothing of the endpoint.
        let mut unsent = result("e", false);
        unsent.unsent = true;
        assert!(endpoint_health(&[unsent]).is_empty());
    }
}
