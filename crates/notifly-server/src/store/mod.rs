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
//! Both handles, and the [`Store`] itself, are made of one trait per
//! aggregate, declared in a file named after it: `accounts.rs` (accounts,
//! API keys, dashboard sessions), `resources.rs` (contacts, conversations,
//! messages, groups, attachments), `events.rs` (the event log, idempotent
//! responses), `endpoints.rs`, `deliveries.rs` (reads, retries, recovery),
//! `queue.rs` (the dispatcher's claims and write-back, with the policies
//! both backends share) and `retention.rs`. Each backend is a folder with
//! the same files (`sqlite/`, `postgres/`), each implementing that
//! aggregate's traits with SQL written for the backend, beside a `mod.rs`
//! that holds the connections and the transaction type. So a statement's
//! home follows from what it is about, and the two backends read side by
//! side. Nothing here assumes a single process: uniqueness and ordering
//! come from the database.

mod accounts;
mod crud;
mod deliveries;
mod endpoints;
mod events;
mod hand_off;
mod metrics;
pub mod postgres;
mod queue;
mod records;
mod replays;
mod resources;
mod retention;
pub mod sqlite;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

pub use accounts::{AccountReads, AccountWrites};
pub(crate) use crud::{Dialect, Record, Row, TableWrites, Tables, Value};
pub use deliveries::{AttemptReads, DeliveryReads, DeliveryWrites};
pub use endpoints::{EndpointKeys, EndpointReads, EndpointWrites};
pub use events::{EventReads, EventWrites};
pub use hand_off::{HandOff, Ready};
pub(crate) use metrics::Pool;
pub use metrics::StoreMetrics;
pub use queue::DeliveryQueue;
pub(crate) use queue::*;
pub use records::*;
pub use replays::{ReplayReads, ReplayWrites};
pub use resources::{
    GroupWrites, MessageWrites, NewMessage, ResourceQueries, ResourceReads, ResourceWrites,
};
pub(crate) use retention::Walk;
pub use retention::{PurgeRound, Retention};

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
    /// Whether the database refused a write for want of space on its storage
    /// (SQLite's `SQLITE_FULL`, PostgreSQL's `53100 disk_full`): nothing of
    /// the write was kept, and it may succeed once an operator frees space.
    pub fn is_storage_full(&self) -> bool {
        match self {
            StoreError::Sqlite(e) => sqlite_full(e),
            StoreError::CommitFailed(e) => sqlite_full(e),
            StoreError::Backend(sqlx::Error::Database(db)) => {
                // 13: SQLITE_FULL (through sqlx's SQLite driver).
                db.code()
                    .is_some_and(|code| matches!(&*code, "53100" | "13"))
            }
            StoreError::Io(_, e) => io_full(e),
            _ => false,
        }
    }

    /// Whether the database refused a value as text it cannot store (a NUL
    /// character): the input's fault, not the server's.
    pub fn is_invalid_text(&self) -> bool {
        matches!(self, StoreError::Backend(sqlx::Error::Database(db))
            if db.code().is_some_and(|code| matches!(&*code, "22021" | "22P05")))
    }
}

/// A file could not be written for want of space: the file system is
/// full, or the user's disk quota is.
pub(crate) fn io_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// SQLite could not grow its file (or its WAL): the file system is full.
fn sqlite_full(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
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
pub(crate) const ENDPOINT_COLUMNS: &str = "id, name, url, description, events, enabled, disabled_reason, secret, previous_secret, previous_secret_expires_at, failing_since, created_at, updated_at, signature_scheme, circuit, circuit_since, rate_limit, ordering, headers, filter";
pub(crate) const DELIVERY_COLUMNS: &str = "id, endpoint_id, event_id, event_type, status, attempts, next_attempt_ms, last_attempt_at, last_status_code, created_at, updated_at";
/// A dashboard session's columns, from `dashboard_sessions s JOIN accounts a`.
pub(crate) const DASHBOARD_SESSION_COLUMNS: &str = "s.token_hash, s.account_id, a.name AS account_name, s.csrf, s.created_at, s.last_seen_at, s.expires_at, s.flash_kind, s.flash_message, s.key_id";
pub(crate) const REPLAY_COLUMNS: &str = "id, account_id, endpoint_id, since, until, status, total, sent, cursor, cursor_at, last_event, created_at, updated_at";
pub(crate) const ATTEMPT_COLUMNS: &str = "id, delivery_id, attempt, started_at_ms, duration_ms, request_headers, response_status, response_headers, response_body, error, succeeded";

/// `columns` (a `*_COLUMNS` list), each qualified by the table alias
/// `alias`, for a query that joins.
pub(crate) fn qualified(columns: &str, alias: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The endpoints of a fan-out (`id_of` names one) whose content filter
/// (`filter_of`; none passes everything) the event passes. The envelope is
/// parsed only if one has a filter. A stored filter that does not parse
/// (a hand-edited database, or one saved by a newer version with an
/// operator this one lacks) passes nothing, with a warning: filters often
/// keep one tenant's events from another's endpoint.
pub(crate) fn passing_filters<T>(
    endpoints: Vec<T>,
    id_of: impl Fn(&T) -> &str,
    filter_of: impl Fn(&T) -> Option<&str>,
    e: &EventRecord,
) -> Vec<T> {
    if endpoints.iter().all(|t| filter_of(t).is_none()) {
        return endpoints;
    }
    // The outbox wrote the body from a JSON value.
    let envelope: serde_json::Value = serde_json::from_str(&e.body).unwrap_or_default();
    endpoints
        .into_iter()
        .filter(|t| {
            filter_of(t).is_none_or(|text| match crate::filter::Filter::from_stored(text) {
                Ok(f) => f.matches(&envelope),
                Err(error) => {
                    tracing::warn!(endpoint = id_of(t), event = %e.id, %error,
                        "the endpoint's stored content filter does not parse; it gets no event until the filter is saved again");
                    false
                }
            })
        })
        .collect()
}

/// A list filter on one column.
pub(crate) enum Filter<'a> {
    Text(&'static str, &'a str),
    Bool(&'static str, bool),
    /// `true`: the column is set; `false`: it is null.
    Set(&'static str, bool),
}

impl<'a> Filter<'a> {
    /// `column = value`, if there is a value.
    pub(crate) fn optional(column: &'static str, value: Option<&'a str>) -> Option<Filter<'a>> {
        value.map(|v| Filter::Text(column, v))
    }
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// A database holding Notifly's data: the handles to read and write it,
/// and the pool-level work of the dispatcher (claims, write-back), of
/// retention and of sealing keys.
#[async_trait]
pub trait Store: DeliveryQueue + EndpointKeys + Retention + Send + Sync + 'static {
    /// A connection for reads.
    async fn read(&self) -> StoreResult<Box<dyn Conn>>;
    /// Starts a write transaction. Dropping it without [`WriteTx::commit`] rolls back.
    async fn write(&self) -> StoreResult<Box<dyn WriteTx>>;
    /// Checks that the database answers.
    async fn ping(&self) -> StoreResult<()>;
    /// Closes the pools, waiting for connections in use.
    async fn close(&self);

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
}

/// Reads, of every aggregate. Every resource read is scoped to an account.
pub trait Conn:
    AccountReads
    + ResourceReads
    + ResourceQueries
    + EventReads
    + EndpointReads
    + DeliveryReads
    + AttemptReads
    + ReplayReads
{
}

/// A write transaction, of every aggregate. It can also read, seeing its
/// own writes.
#[async_trait]
pub trait WriteTx:
    Conn
    + AccountWrites
    + ResourceWrites
    + GroupWrites
    + MessageWrites
    + EventWrites
    + EndpointWrites
    + DeliveryWrites
    + ReplayWrites
{
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
