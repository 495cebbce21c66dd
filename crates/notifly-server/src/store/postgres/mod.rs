//! The PostgreSQL store, for running several nodes on one database.
//!
//! Reads use pooled connections; every write is one `BEGIN … COMMIT`
//! transaction on a pooled connection at the default READ COMMITTED isolation
//! (no group commit: PostgreSQL has concurrent writers), but for the
//! write-back of plain attempt results, one statement on its own. Each
//! statement is a round trip, and most of PostgreSQL's work per event is
//! per statement: writes combine what they can (a resource's insert takes
//! the account's endpoint lock; an event's insert fans it out and hands it
//! off).
//!
//! **Locking.** Writes of one account run in parallel, on any node. What
//! SQLite's single writer gives the domain's read-modify-write sequences
//! (read a row, check a rule, write it back) comes from row locks: in a
//! write transaction, a read of single rows locks them `FOR NO KEY UPDATE`;
//! `FOR UPDATE` after [`WriteTx::reads_to_delete`] (a conversation being
//! deleted takes no new message); `FOR KEY SHARE` after
//! [`WriteTx::reads_only_to_refer`] (a new message keeps its conversation
//! from being deleted without holding off the conversation's other
//! writes). The hot tables' rows have no foreign key to their account
//! (migration 0013): its check locked the one row every write of the
//! account locks, each new locker making a new MultiXact. Endpoints are the
//! exception: an event's fan-out and a change to
//! an endpoint order themselves on an advisory lock of the account's
//! endpoints (shared by fan-outs, exclusive for changes; see
//! [`Scope::lock_endpoints`]), whose waiters queue in order, so a steady
//! stream of events cannot starve a webhook's update. Uniqueness comes from
//! unique indexes, and the requests with one idempotency key are serialized
//! on an advisory lock of the key. Two writes that lock the same rows in
//! opposite orders can deadlock; PostgreSQL then fails one, which answers
//! 503 with `Retry-After`. The event log stays in order for its readers
//! although writes commit out of `seq` order: see [`settled`]. Account
//! creation and the "is the database empty" check of the bootstrap share
//! one global advisory key. Under READ COMMITTED, a statement that waited
//! for a row's lock sees the row as its holder committed it (or not at
//! all, if it was deleted).
//!
//! **Slots, hand-offs and claims.** An endpoint's in-flight limit is its
//! rows in `endpoint_slots` (migration 0008): each leased delivery holds one
//! until its result is written (or its lease runs out). A write takes free
//! slots in its event insert and leases those deliveries to its node, whose
//! dispatcher gets them once the write commits (the hand-off, see
//! [`HandOff`]); a claim takes free slots for the due deliveries it leases.
//! Both lock slots (and claims their candidate rows) `FOR UPDATE SKIP
//! LOCKED`, so a write never waits for a claim's slots nor a claim for a
//! write's, and no two can take the same slot. Claims still run one at a
//! time across the nodes (one advisory key; they are short and commit
//! before anything is sent): two at once would each lock part of the
//! candidates and part of the free slots, and leave work behind.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{FromRow, PgConnection, PgPool, Postgres, QueryBuilder, Transaction};

use super::*;

mod accounts;
mod deliveries;
mod endpoints;
mod events;
mod queue;
mod replays;
mod resources;
mod retention;
mod rows;

pub use queue::dispatcher_sql;
pub use retention::retention_sql;
use rows::{bind, get_locked};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Advisory-lock namespaces (the first key of the two-key form).
const NS_GLOBAL: i32 = 0x4E46_0002;
const NS_IDEMPOTENCY: i32 = 0x4E46_0003;
const NS_ENDPOINTS: i32 = 0x4E46_0004;
/// Keys in [`NS_GLOBAL`].
const KEY_ACCOUNTS: i32 = 1;
const KEY_CLAIM: i32 = 2;
const KEY_NOTICES: i32 = 3;

/// The `NOTIFY` channel on which nodes announce their writes.
const CHANGES_CHANNEL: &str = "notifly_changes";

/// Longest wait for a pooled connection before a request fails as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait of an API request for a lock (its account's, a row's).
const LOCK_TIMEOUT: &str = "5s";
/// Longest an API request's statement may run.
const STATEMENT_TIMEOUT: &str = "30s";

/// Connections for background work: the LISTEN, the claim loop, the
/// write-back, retention and announcements each use at most one.
const WORK_POOL_SIZE: u32 = 5;

/// Connections in the pool when the configuration does not say.
pub const DEFAULT_POOL_SIZE: u32 = 10;

/// The PostgreSQL implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct PgStore {
    /// Connections for the API: reads and write transactions.
    pool: PgPool,
    /// Connections for this node's background work (claims, write-backs,
    /// retention, LISTEN/NOTIFY), so that API writes queued on an account's
    /// lock can never starve deliveries of connections.
    work: PgPool,
    /// Names this process in its announcements, so it ignores its own.
    node: String,
    /// This node's dispatcher's slots, once it runs (see
    /// [`Store::hand_off`]): writes hand their new deliveries to it, and
    /// claims take its slots and report what they left waiting.
    hand_off: Arc<std::sync::OnceLock<Arc<HandOff>>>,
    /// Endpoints whose slot rows this process has made (up to how many):
    /// only a claim for an endpoint not yet here makes them.
    slots_made: Arc<std::sync::Mutex<HashMap<String, u32>>>,
    /// How many endpoints each account's latest event went to: a write
    /// sets aside that many of this node's slots for its hand-offs (not
    /// all it may hand off, which would leave claims none while many
    /// writes run). Zero: the account's next event is written alone (see
    /// `insert_event_alone`).
    fan_outs: Arc<std::sync::Mutex<HashMap<String, u32>>>,
    /// Accounts with endpoints that have a content filter, as this node
    /// last saw them: their fan-outs match the filters first, so that the
    /// endpoints an event passes are handed off like the others.
    filtered: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Where its transactions and waits for connections are observed.
    metrics: Arc<StoreMetrics>,
}

/// `url` naming the database `name` instead of its own (query kept): for
/// tools and tests that create a scratch database through an admin URL.
pub fn url_with_database(url: &str, name: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((u, q)) => (u, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let base = match url[scheme_end..].find('/') {
        Some(i) => &url[..scheme_end + i],
        None => url,
    };
    format!("{base}/{name}{query}")
}

impl PgStore {
    /// Listens for other nodes' announcements until the connection fails for
    /// good (the listener itself reconnects once after a loss).
    async fn listen(
        &self,
        changed: &(dyn Fn(bool) + Send + Sync),
        backoff: &mut Duration,
    ) -> Result<std::convert::Infallible, sqlx::Error> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.work).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        // What was announced before LISTEN took effect is found by looking
        // once now.
        changed(true);
        *backoff = Duration::from_millis(100);
        loop {
            match listener.try_recv().await? {
                Some(n) => {
                    // `<node>`, or `<node> claim` for writes that left work
                    // for a claim.
                    let (from, claimable) = match n.payload().split_once(' ') {
                        Some((from, _)) => (from, true),
                        None => (n.payload(), false),
                    };
                    if from != self.node {
                        changed(claimable);
                    }
                }
                // The connection was lost and made again: anything announced
                // meanwhile was missed.
                None => changed(true),
            }
        }
    }

    /// Connects to the database at `url` (`postgres://…`) with at most
    /// `pool_size` connections and runs the migrations. Several nodes may
    /// start at once: sqlx's migrator holds a PostgreSQL advisory lock while
    /// it migrates. Its transactions and waits for a connection are
    /// observed into `metrics`.
    pub async fn open(url: &str, pool_size: u32, metrics: Arc<StoreMetrics>) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url).map_err(StoreError::Backend)?;
        // An API request waits a bounded time for everything: a connection,
        // a row's lock, each statement. Past that it fails as
        // unavailable (503), rather than hanging behind a stuck transaction.
        // Each pool names itself, so that an operator's `pg_stat_activity`
        // (and its CPU per backend) tells the API's work from the
        // dispatcher's.
        let api_options = options.clone().application_name("notifly api").options([
            ("lock_timeout", LOCK_TIMEOUT),
            ("statement_timeout", STATEMENT_TIMEOUT),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(2))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(api_options)
            .await
            .map_err(StoreError::Backend)?;
        // The background pool runs the dispatcher's statements: several
        // per claim and write-back, each meant to be a handful of index
        // probes (by id, or one range per endpoint), on tables that grow
        // from empty and churn (every delivery is leased, then released).
        // Planner choices made them scan instead, measured under load on a
        // fresh database:
        // - a plan made while a table was small is a sequential scan, and
        //   a cached one stays so until the next ANALYZE (26-33 ms per
        //   claim statement at 25,000 rows): no sequential scans;
        // - on stale statistics, a hash join over the whole pending set
        //   (25 ms), and bitmap scans, which visit every dead index entry
        //   the churn left (about 1,000 per endpoint, 25-40 ms) where a
        //   plain index scan marks them dead as it goes: neither is used.
        // With those shapes ruled out, each statement is planned once per
        // connection (a generic plan): planning it afresh for every
        // execution cost more than running it, about 300 µs of the
        // database's CPU per delivered event with one endpoint
        // (docs/benchmarks.md, ninth round). No JIT: the cost of a plan
        // with a disabled node crosses its threshold, and compiling took
        // 300 ms per execution of a statement that runs in a millisecond.
        let work_options = options
            .application_name("notifly dispatcher")
            .options(dispatcher_sql::SESSION);
        let work = PgPoolOptions::new()
            .max_connections(WORK_POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(work_options)
            .await
            .map_err(StoreError::Backend)?;
        // On the pool without timeouts: another node may hold the migration
        // lock for as long as its migrations take.
        MIGRATOR
            .run(&work)
            .await
            .map_err(|e| StoreError::Backend(e.into()))?;
        Ok(PgStore {
            pool,
            work,
            node: crate::ids::new_id(),
            hand_off: Arc::default(),
            slots_made: Arc::default(),
            fan_outs: Arc::default(),
            filtered: Arc::default(),
            metrics,
        })
    }

    /// A transaction on the API's pool.
    async fn begin(&self) -> StoreResult<TimedTx> {
        self.begin_on(&self.pool, Pool::Api).await
    }

    /// A transaction on the background pool.
    async fn begin_work(&self) -> StoreResult<TimedTx> {
        self.begin_on(&self.work, Pool::Background).await
    }

    /// A transaction on `pool`, observing the wait for its connection (and
    /// the `BEGIN`, which sqlx sends as it hands the connection over).
    async fn begin_on(&self, pool: &PgPool, which: Pool) -> StoreResult<TimedTx> {
        let asked = Instant::now();
        let tx = pool.begin().await.map_err(backend)?;
        let began = Instant::now();
        self.metrics.waited(which, began - asked);
        Ok(TimedTx {
            tx,
            began,
            metrics: self.metrics.clone(),
        })
    }
}

/// A transaction that, when it commits, observes how long it ran and how
/// long its `COMMIT` took (a group of one: PostgreSQL has no group commit
/// here). Reads and writes go through it as through the connection.
struct TimedTx {
    tx: Transaction<'static, Postgres>,
    /// When it began (once it had its connection).
    began: Instant,
    metrics: Arc<StoreMetrics>,
}

impl TimedTx {
    /// Commits, observing the transaction and its commit if it succeeds.
    async fn commit(self) -> Result<(), sqlx::Error> {
        let committing = Instant::now();
        self.tx.commit().await?;
        let done = Instant::now();
        self.metrics.committed(done - committing, 1);
        self.metrics.wrote(done - self.began);
        Ok(())
    }
}

impl Deref for TimedTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for TimedTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

#[async_trait]
impl Store for PgStore {
    async fn read(&self) -> StoreResult<Box<dyn Conn>> {
        let asked = Instant::now();
        let conn = self.pool.acquire().await.map_err(StoreError::Backend)?;
        self.metrics.waited(Pool::Api, asked.elapsed());
        Ok(Box::new(Handle(conn)))
    }

    async fn write(&self) -> StoreResult<Box<dyn WriteTx>> {
        Ok(Box::new(Handle(PgTx {
            tx: self.begin().await?,
            reads: RowLock::NoKeyUpdate,
            accounts_locked: false,
            endpoints_locked: None,
            queued_to: Vec::new(),
            claimable: false,
            fan_outs: self.fan_outs.clone(),
            filtered: self.filtered.clone(),
            staged: Staged {
                hand_off: self.hand_off.get().cloned(),
                ready: Vec::new(),
                queued: Vec::new(),
            },
        })))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(StoreError::Backend)?;
        Ok(())
    }

    async fn close(&self) {
        tokio::join!(self.pool.close(), self.work.close());
    }

    /// A write leases each new delivery whose endpoint has a free slot in
    /// the database (and this node one in all) and hands it to `hand_off`
    /// once committed; claims take `hand_off`'s slots and tell it what they
    /// leave waiting per endpoint, for pacing.
    async fn hand_off(&self, hand_off: Arc<HandOff>) -> bool {
        let _ = self.hand_off.set(hand_off);
        true
    }

    async fn announce(&self, claimable: bool) -> StoreResult<()> {
        let payload = if claimable {
            format!("{} claim", self.node)
        } else {
            self.node.clone()
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGES_CHANNEL)
            .bind(payload)
            .execute(&self.work)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn follow(&self, changed: Box<dyn Fn(bool) + Send + Sync>, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() {
            let failed = tokio::select! {
                r = self.listen(changed.as_ref(), &mut backoff) => match r {
                    Err(e) => e,
                    Ok(never) => match never {},
                },
                () = stop.cancelled() => return,
            };
            if matches!(failed, sqlx::Error::PoolClosed) {
                return;
            }
            tracing::warn!(error = ?failed, "listening for other nodes failed; polling until it is back");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// A write transaction.
struct PgTx {
    tx: TimedTx,
    /// How its reads of single rows lock them.
    reads: RowLock,
    accounts_locked: bool,
    /// The lock it holds on its account's endpoints, if any: `true` for
    /// the exclusive one (see [`Scope::lock_endpoints`]).
    endpoints_locked: Option<bool>,
    /// The endpoints it created deliveries to that wait for a claim (for
    /// pacing), once each.
    queued_to: Vec<String>,
    /// It made work that only a claim starts (see [`WriteTx::claimable_work`]).
    claimable: bool,
    /// See [`PgStore::fan_outs`].
    fan_outs: Arc<std::sync::Mutex<HashMap<String, u32>>>,
    /// See [`PgStore::filtered`].
    filtered: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Its hand-offs, until it ends.
    staged: Staged,
}

/// What a write transaction gave its node's dispatcher: the deliveries it
/// leased (each holding a slot of its endpoint, here and in the database),
/// to send once the commit is done, and those that found no slot and wait
/// in their endpoint's queue. If the transaction does not commit, the slots
/// go back and the queue counts are undone.
struct Staged {
    hand_off: Option<Arc<HandOff>>,
    ready: Vec<Ready>,
    /// One entry per delivery left to claims.
    queued: Vec<String>,
}

impl Staged {
    /// The transaction committed: its leased deliveries go to the dispatcher.
    fn committed(mut self) {
        if let Some(h) = &self.hand_off {
            h.deliver(std::mem::take(&mut self.ready));
        }
        self.queued.clear();
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(h) = &self.hand_off {
            for (c, _) in &self.ready {
                h.release(&c.endpoint_id);
            }
            for endpoint in &self.queued {
                h.unqueue(endpoint);
            }
        }
    }
}

/// The row lock a write transaction's read of one row takes (see
/// [`WriteTx::reads_only_to_refer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowLock {
    /// `FOR NO KEY UPDATE`: the transaction may change the row, and nobody
    /// else may until it ends (a read-modify-write). Writers that only
    /// refer to the row (`FOR KEY SHARE`, and foreign-key checks) are not
    /// held off, nor do they hold it off.
    NoKeyUpdate,
    /// `FOR UPDATE`: the transaction may delete the row; nobody may refer
    /// to it anew until it ends.
    Update,
    /// `FOR KEY SHARE`: the transaction refers to the row (a new message's
    /// conversation); it cannot be deleted until the transaction ends, and
    /// other writers may still change it.
    KeyShare,
}

impl Deref for PgTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for PgTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// What differs between reading from a pooled connection and from inside a
/// write transaction: the locks a transaction takes on what it reads.
#[async_trait]
trait Scope: DerefMut<Target = PgConnection> + Send {
    /// Whether this is a write transaction (which must not wait for the
    /// transactions in flight to end: it is one of them).
    const IN_TRANSACTION: bool;
    /// The locking clause for a read of single rows: none outside a
    /// transaction.
    fn row_lock(&self) -> &'static str;
    /// Serializes account creation and the "is the database empty" check.
    async fn scope_accounts(&mut self) -> StoreResult<()>;
    /// Orders the account's event fan-outs (`exclusive: false`, which run
    /// in parallel) against changes to its endpoints (`exclusive: true`):
    /// an endpoint being changed or deleted waits for the fan-outs in
    /// flight, and new ones wait for it. An advisory lock, whose waiters
    /// queue in order: row locks would let a stream of fan-outs starve a
    /// change. Does nothing outside a transaction.
    async fn lock_endpoints(&mut self, account: &str, exclusive: bool) -> StoreResult<()>;
    /// Serializes the transactions that use one idempotency key, so the
    /// second of two concurrent requests waits for the first and replays
    /// its response instead of failing on the key's uniqueness.
    async fn lock_idempotency_key(&mut self, account: &str, key: &str) -> StoreResult<()>;
}

#[async_trait]
impl Scope for PoolConnection<Postgres> {
    const IN_TRANSACTION: bool = false;
    fn row_lock(&self) -> &'static str {
        ""
    }
    async fn scope_accounts(&mut self) -> StoreResult<()> {
        Ok(())
    }
    async fn lock_idempotency_key(&mut self, _account: &str, _key: &str) -> StoreResult<()> {
        Ok(())
    }
    async fn lock_endpoints(&mut self, _account: &str, _exclusive: bool) -> StoreResult<()> {
        Ok(())
    }
}

#[async_trait]
impl Scope for PgTx {
    const IN_TRANSACTION: bool = true;
    fn row_lock(&self) -> &'static str {
        match self.reads {
            RowLock::NoKeyUpdate => " FOR NO KEY UPDATE",
            RowLock::Update => " FOR UPDATE",
            RowLock::KeyShare => " FOR KEY SHARE",
        }
    }

    async fn scope_accounts(&mut self) -> StoreResult<()> {
        if self.accounts_locked {
            return Ok(());
        }
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(NS_GLOBAL)
            .bind(KEY_ACCOUNTS)
            .execute(&mut *self.tx)
            .await
            .map_err(backend)?;
        self.accounts_locked = true;
        Ok(())
    }

    async fn lock_endpoints(&mut self, account: &str, exclusive: bool) -> StoreResult<()> {
        // A transaction that holds the shared lock (a resource insert takes
        // it) and then asks for the exclusive one waits for the other
        // holders; two that do so at once deadlock, and PostgreSQL fails
        // one. The domain's endpoint changes take the exclusive lock first
        // and write no resource.
        match self.endpoints_locked {
            Some(true) => return Ok(()),
            Some(false) if !exclusive => return Ok(()),
            _ => {}
        }
        let sql = if exclusive {
            "SELECT pg_advisory_xact_lock($1, hashtext($2))"
        } else {
            "SELECT pg_advisory_xact_lock_shared($1, hashtext($2))"
        };
        sqlx::query(sql)
            .bind(NS_ENDPOINTS)
            .bind(account)
            .execute(&mut *self.tx)
            .await
            .map_err(backend)?;
        self.endpoints_locked = Some(exclusive);
        Ok(())
    }

    async fn lock_idempotency_key(&mut self, account: &str, key: &str) -> StoreResult<()> {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2 || ' ' || $3))")
            .bind(NS_IDEMPOTENCY)
            .bind(account)
            .bind(key)
            .execute(&mut *self.tx)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

/// A connection or a transaction; both read the same way.
struct Handle<C>(C);

impl<C: Scope> Conn for Handle<C> {}

#[async_trait]
impl WriteTx for Handle<PgTx> {
    fn reads_only_to_refer(&mut self) {
        self.0.reads = RowLock::KeyShare;
    }

    fn reads_to_delete(&mut self) {
        self.0.reads = RowLock::Update;
    }

    fn claimable_work(&self) -> bool {
        self.0.claimable || self.0.staged.hand_off.is_none()
    }

    fn queued_to(&self) -> Vec<String> {
        self.0.queued_to.clone()
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        let PgTx { tx, staged, .. } = self.0;
        tx.commit().await.map_err(backend)?;
        staged.committed();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::url_with_database;

    #[test]
    fn scratch_database_urls_keep_host_and_query() {
        for (admin, want) in [
            ("postgres://u@h/postgres", "postgres://u@h/x"),
            ("postgres://u@h", "postgres://u@h/x"),
            (
                "postgres://u@h/db?sslmode=disable&a=b/c",
                "postgres://u@h/x?sslmode=disable&a=b/c",
            ),
            ("postgresql://u:p@h:5433/db", "postgresql://u:p@h:5433/x"),
        ] {
            assert_eq!(url_with_database(admin, "x"), want, "{admin}");
        }
    }
}
