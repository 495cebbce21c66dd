//! The PostgreSQL store, for running several nodes on one database.
//!
//! Reads use pooled connections; every write is one `BEGIN … COMMIT`
//! transaction on a pooled connection at the default READ COMMITTED isolation
//! (no group commit: PostgreSQL has concurrent writers).
//!
//! **Locking.** Writes of one account run in parallel, on any node. What
//! SQLite's single writer gives the domain's read-modify-write sequences
//! (read a row, check a rule, write it back) comes from row locks: in a
//! write transaction, a read of single rows locks them `FOR NO KEY UPDATE`;
//! `FOR UPDATE` after [`WriteTx::reads_to_delete`] (a conversation being
//! deleted takes no new message); `FOR KEY SHARE` after
//! [`WriteTx::reads_only_to_refer`] (a new message keeps its conversation
//! from being deleted without holding off the conversation's other
//! writes). Endpoints are the exception: an event's fan-out and a change to
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

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Advisory-lock namespaces (the first key of the two-key form).
const NS_GLOBAL: i32 = 0x4E46_0002;
const NS_IDEMPOTENCY: i32 = 0x4E46_0003;
const NS_ENDPOINTS: i32 = 0x4E46_0004;
/// Keys in [`NS_GLOBAL`].
const KEY_ACCOUNTS: i32 = 1;
const KEY_CLAIM: i32 = 2;

/// The `NOTIFY` channel on which nodes announce their writes.
const CHANGES_CHANNEL: &str = "notifly_changes";

/// The dispatcher's look-ups, which run on every wake-up of every node.
/// Each must be a short index range per enabled endpoint, whatever the
/// backlog: `tests/postgres_plans.rs` checks their plans over 100,000
/// pending deliveries.
pub mod dispatcher_sql {
    /// The planner settings of the connections that run these (see
    /// `PgStore::open` for why).
    pub const SESSION: [(&str, &str); 4] = [
        ("plan_cache_mode", "force_custom_plan"),
        ("enable_hashjoin", "off"),
        ("enable_mergejoin", "off"),
        ("enable_bitmapscan", "off"),
    ];

    /// When the next delivery is due, or the earliest lease expires: the head
    /// of each enabled endpoint's queue (`deliveries_queue`) and of its
    /// leases (`deliveries_leased`). Not a `MIN` over every pending row.
    /// Only pending deliveries hold leases (every other status clears it),
    /// so the lease half does not say `status = 'pending'`: that keeps
    /// `deliveries_queue`, whose predicate it is, out of the planner's
    /// choices, which on stale statistics it took and read every pending
    /// row of the endpoint. An endpoint's head is not due before its
    /// throttle (429, 502, 504) or its open circuit lets it go; with
    /// per-resource ordering it is the first delivery not waiting for an
    /// earlier one (whose end wakes the dispatcher).
    pub const NEXT_DUE: &str = "SELECT LEAST(
            MIN((SELECT GREATEST(d.next_attempt_ms, e.throttled_until_ms,
                        CASE WHEN e.circuit = 'open' THEN e.probe_at_ms END)
                 FROM deliveries d
                 WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.lease_until_ms IS NULL
                   AND (e.ordering = 'none' OR d.resource_id IS NULL OR NOT EXISTS (
                     SELECT 1 FROM deliveries p
                     WHERE p.resource_id = d.resource_id AND p.endpoint_id = d.endpoint_id
                       AND p.status = 'pending' AND p.seq < d.seq))
                 ORDER BY d.next_attempt_ms LIMIT 1)),
            MIN((SELECT d.lease_until_ms FROM deliveries d
                 WHERE d.endpoint_id = e.id AND d.lease_until_ms IS NOT NULL
                 ORDER BY d.lease_until_ms LIMIT 1)))
         FROM endpoints e WHERE e.enabled";

    /// The free slots (`endpoint_slots`, migration 0008) of each endpoint
    /// `$1[i]` below its limit `$2[i]` (`$3`: now, ms), locked for the
    /// claim: a few rows of the primary key each. Slots another transaction
    /// holds are skipped, not waited for (and count as taken).
    pub const FREE_SLOTS: &str = "SELECT w.e, s.n FROM unnest($1::text[], $2::int[]) AS w(e, lim)
         CROSS JOIN LATERAL (
            SELECT s.n FROM endpoint_slots s
            WHERE s.endpoint_id = w.e AND s.n < w.lim AND (s.delivery_id IS NULL OR s.until_ms <= $3)
            ORDER BY s.n
            FOR UPDATE SKIP LOCKED) s";

    /// Up to `$2` due, unleased deliveries of each enabled endpoint (`$1`:
    /// now, ms): one index range per endpoint (LATERAL), so a backlog on one
    /// endpoint never hides another's work. Rows another transaction holds
    /// are skipped, not waited for.
    /// An open circuit's deliveries wait until its next probe is due, a
    /// throttled endpoint's until its pause ends, and with `per_resource`
    /// ordering a delivery waits while an earlier one about the same
    /// resource is pending (`deliveries_resource`).
    pub const CANDIDATES: &str =
        "SELECT q.id, e.id AS endpoint, e.failing_since IS NOT NULL AS failing,
            e.circuit <> 'closed' AS probe, e.rate_limit, e.rate_tat_us
         FROM endpoints e CROSS JOIN LATERAL (
            SELECT d.id, d.next_attempt_ms FROM deliveries d
            WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_ms <= $1
              AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= $1)
              AND (e.ordering = 'none' OR d.resource_id IS NULL OR NOT EXISTS (
                SELECT 1 FROM deliveries p
                WHERE p.endpoint_id = d.endpoint_id AND p.resource_id = d.resource_id
                  AND p.status = 'pending' AND p.seq < d.seq))
            ORDER BY d.next_attempt_ms LIMIT $2
            FOR UPDATE SKIP LOCKED) q
         WHERE e.enabled AND (e.circuit = 'closed' OR e.probe_at_ms <= $1)
           AND (e.throttled_until_ms IS NULL OR e.throttled_until_ms <= $1)
         ORDER BY q.next_attempt_ms";
}
use dispatcher_sql::NEXT_DUE as NEXT_DUE_SQL;

/// Deliveries an event's insert creates in the same statement (ids made
/// beforehand); an event to more endpoints inserts the rest separately.
const FAN_OUT_IN_ONE: usize = 16;

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
    /// writes run).
    fan_outs: Arc<std::sync::Mutex<HashMap<String, u32>>>,
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
        let api_options = options.clone().options([
            ("lock_timeout", LOCK_TIMEOUT),
            ("statement_timeout", STATEMENT_TIMEOUT),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(2))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(api_options)
            .await
            .map_err(StoreError::Backend)?;
        // The background pool runs the dispatcher's statements: a few a
        // second, each meant to be a handful of index probes (by id, or one
        // range per endpoint), on tables that grow from empty and churn
        // (every delivery is leased, then released). Planner choices made
        // them scan instead, measured under load on a fresh database:
        // - a generic plan cached while a table was small stays a
        //   sequential scan until the next ANALYZE (26-33 ms per claim
        //   statement at 25,000 rows): plans are made for each execution;
        // - on stale statistics, a hash join over the whole pending set
        //   (25 ms), and bitmap scans, which visit every dead index entry
        //   the churn left (about 1,000 per endpoint, 25-40 ms) where a
        //   plain index scan marks them dead as it goes: neither is used.
        let work_options = options.options(dispatcher_sql::SESSION);
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

    async fn claim(&self, r: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
        let hand_off = self.hand_off.get();
        let mut r = r.clone();
        if let Some(h) = hand_off {
            // Hand-offs may have taken some since the dispatcher looked.
            r.max = r.max.min(h.free());
        }
        if r.max == 0 {
            return Ok(Vec::new());
        }
        let r = &r;
        let mut tx = self.begin_work().await?;
        // One claim at a time across the nodes. Claims that ran together
        // would each lock part of the candidates and part of the free slots
        // (`SKIP LOCKED`), and one could leave a delivery it locked for want
        // of the slots the other locked, for want of work (on 3 nodes that
        // cost both rate and latency: docs/benchmarks.md). Writes do not take
        // this lock: their hand-offs take free slots beside it.
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(NS_GLOBAL)
            .bind(KEY_CLAIM)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        // The lease starts once this node holds the lock, not before it waited.
        let now_ms = crate::ids::now_ms();
        let lease_until_ms = now_ms + r.lease_ms;
        // Due, unleased deliveries of each enabled endpoint. Twice the
        // limit, so that what the claim leaves tells a queue of a full
        // slot's worth (pacing) from a few stragglers.
        let candidates: Vec<Candidate> = sqlx::query_as(dispatcher_sql::CANDIDATES)
            .bind(now_ms)
            .bind(2 * i64::from(r.per_endpoint))
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        if candidates.is_empty() {
            if let Some(h) = hand_off {
                h.left_waiting(HashMap::new());
            }
            tx.commit().await.map_err(backend)?;
            return Ok(Vec::new());
        }
        let mut endpoints: Vec<String> = candidates.iter().map(|c| c.endpoint.clone()).collect();
        endpoints.sort_unstable();
        endpoints.dedup();
        let limit = r.per_endpoint as i32;
        let to_make: Vec<&str> = {
            let made = self.slots_made.lock().unwrap_or_else(|e| e.into_inner());
            endpoints
                .iter()
                .map(String::as_str)
                .filter(|e| made.get(*e).is_none_or(|n| *n < r.per_endpoint))
                .collect()
        };
        if !to_make.is_empty() {
            // In id order, so that two nodes making the same rows cannot
            // deadlock.
            sqlx::query(
                "INSERT INTO endpoint_slots (endpoint_id, n)
                 SELECT e.id, g FROM endpoints e CROSS JOIN generate_series(0, $2 - 1) g
                 WHERE e.id = ANY($1) ORDER BY e.id, g
                 ON CONFLICT DO NOTHING",
            )
            .bind(&to_make)
            .bind(limit)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        // Each endpoint's free slots: the rest are in flight, on any node.
        let free: Vec<(String, i32)> = sqlx::query_as(dispatcher_sql::FREE_SLOTS)
            .bind(&endpoints)
            .bind(vec![limit; endpoints.len()])
            .bind(now_ms)
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        let mut free_slots: HashMap<&str, Vec<i32>> = HashMap::new();
        for (endpoint, n) in &free {
            free_slots.entry(endpoint.as_str()).or_default().push(*n);
        }
        let in_flight: HashMap<String, i64> = endpoints
            .iter()
            .map(|e| {
                let free = free_slots.get(e.as_str()).map_or(0, Vec::len) as i64;
                (e.clone(), i64::from(limit) - free)
            })
            .collect();
        // What the claim leaves waiting per endpoint, for pacing writes.
        let mut waiting: HashMap<String, u32> = HashMap::new();
        let mut endpoint_of: HashMap<String, String> = HashMap::new();
        let mut probing: Vec<&str> = Vec::new();
        for c in &candidates {
            // What a rate limit holds back waits for time, not for slots:
            // it does not pace writers.
            if c.rate_limit.is_none() {
                *waiting.entry(c.endpoint.clone()).or_insert(0) += 1;
            }
            endpoint_of.insert(c.id.clone(), c.endpoint.clone());
            if c.probe {
                probing.push(&c.id);
            }
        }
        let probing: Vec<String> = probing.into_iter().map(str::to_owned).collect();
        let Chosen { ids: chosen, rates } = choose_claims(candidates, in_flight, r, now_ms * 1000);
        // A probe half-opens its circuit; if its result never comes (the
        // node died), another may go once its lease has run out.
        let probes: Vec<&str> = chosen
            .iter()
            .filter(|id| probing.contains(id))
            .map(|id| endpoint_of[id].as_str())
            .collect();
        if !probes.is_empty() {
            sqlx::query(
                "UPDATE endpoints SET circuit = 'half_open', circuit_since = $1, probe_at_ms = $2 WHERE id = ANY($3)",
            )
            .bind(now_ms / 1000)
            .bind(lease_until_ms)
            .bind(&probes)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        // Rate-limited endpoints' limiters advance by what this claim leased
        // (claims run one at a time, so the limit holds across nodes).
        if !rates.is_empty() {
            let (endpoints, tats): (Vec<&str>, Vec<i64>) =
                rates.iter().map(|(e, t)| (e.as_str(), *t)).unzip();
            sqlx::query(
                "UPDATE endpoints e SET rate_tat_us = r.t
                 FROM unnest($1::text[], $2::bigint[]) AS r(id, t) WHERE e.id = r.id",
            )
            .bind(&endpoints)
            .bind(&tats)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        // Each chosen delivery takes one of its endpoint's free slots.
        let (mut slot_endpoints, mut slot_numbers) = (Vec::new(), Vec::new());
        for id in &chosen {
            let endpoint = &endpoint_of[id];
            if let Some(n) = waiting.get_mut(endpoint) {
                *n -= 1;
            }
            let n = free_slots
                .get_mut(endpoint.as_str())
                .and_then(Vec::pop)
                .expect("a claim chooses no more than its endpoint's free slots");
            slot_endpoints.push(endpoint.as_str());
            slot_numbers.push(n);
        }
        if let Some(h) = hand_off {
            h.left_waiting(waiting);
        }
        if chosen.is_empty() {
            tx.commit().await.map_err(backend)?;
            return Ok(Vec::new());
        }
        sqlx::query(
            "WITH slots AS (
                UPDATE endpoint_slots s SET delivery_id = w.d, owner = $2, until_ms = $1
                FROM unnest($3::text[], $4::text[], $5::int[]) AS w(d, e, n)
                WHERE s.endpoint_id = w.e AND s.n = w.n)
             UPDATE deliveries SET lease_until_ms = $1, lease_owner = $2 WHERE id = ANY($3)",
        )
        .bind(lease_until_ms)
        .bind(&r.owner)
        .bind(&chosen)
        .bind(&slot_endpoints)
        .bind(&slot_numbers)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let claimed: Vec<Claimed> = sqlx::query_as(
            "SELECT d.id AS delivery_id, d.account_id, d.endpoint_id, d.event_id, d.event_type,
                    d.attempts + 1 AS attempt, d.schedule_pos, e.url, e.secret, e.previous_secret,
                    e.previous_secret_expires_at, ev.body, e.ordering <> 'none' AS ordered
             FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id JOIN events ev ON ev.id = d.event_id
             WHERE d.id = ANY($1)
             ORDER BY d.next_attempt_ms",
        )
        .bind(&chosen)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        // Their slots here (what they leave queued is told above).
        if let Some(h) = hand_off {
            for c in &claimed {
                h.occupy(&c.endpoint_id, false);
            }
        }
        if let Err(e) = tx.commit().await {
            // The leases were rolled back: so are the slots they took.
            if let Some(h) = hand_off {
                for c in &claimed {
                    h.release(&c.endpoint_id);
                }
            }
            return Err(backend(e));
        }
        if !to_make.is_empty() {
            let mut made = self.slots_made.lock().unwrap_or_else(|e| e.into_inner());
            for e in to_make {
                made.insert(e.to_owned(), r.per_endpoint);
            }
        }
        Ok(claimed)
    }

    async fn record_attempts(
        &self,
        results: &[AttemptResult],
        policy: &EndpointPolicy,
    ) -> StoreResult<()> {
        let mut tx = self.begin_work().await?;
        let now = crate::ids::now();
        let now_ms = crate::ids::now_ms();
        let disable_after_secs = policy.disable_after_secs;
        let circuits: HashMap<&str, CircuitStep> = circuit_steps(results).into_iter().collect();
        // Rows are locked in one order by every write-back (deliveries by
        // id, then endpoints by id), so that two nodes' batches cannot
        // deadlock each other. A handful of statements per batch, not
        // three or more per result: each is a round trip.
        let mut ids: Vec<&str> = results
            .iter()
            .map(|r| r.attempt.delivery_id.as_str())
            .collect();
        ids.sort_unstable();
        sqlx::query("SELECT 1 FROM deliveries WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        // Each attempt's slot is free again, if its lease still holds it (a
        // lease that ran out may have been taken, with its slot, by another).
        let (endpoints, owners): (Vec<&str>, Vec<&str>) = results
            .iter()
            .map(|r| (r.endpoint_id.as_str(), r.owner.as_str()))
            .unzip();
        let deliveries: Vec<&str> = results
            .iter()
            .map(|r| r.attempt.delivery_id.as_str())
            .collect();
        sqlx::query(
            "UPDATE endpoint_slots s SET delivery_id = NULL, owner = NULL, until_ms = NULL
             FROM unnest($1::text[], $2::text[], $3::text[]) AS r(e, d, o)
             WHERE s.endpoint_id = r.e AND s.delivery_id = r.d AND s.owner = r.o",
        )
        .bind(&endpoints)
        .bind(&deliveries)
        .bind(&owners)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        for chunk in results.chunks(ROWS_PER_STATEMENT) {
            let mut q =
                QueryBuilder::<Postgres>::new(format!("INSERT INTO attempts ({ATTEMPT_COLUMNS}) "));
            q.push_values(chunk, |mut row, r| {
                let a = &r.attempt;
                row.push_bind(&a.id)
                    .push_bind(&a.delivery_id)
                    .push_bind(a.attempt)
                    .push_bind(a.started_at_ms)
                    .push_bind(a.duration_ms)
                    .push_bind(&a.request_headers)
                    .push_bind(a.response_status)
                    .push_bind(&a.response_headers)
                    .push_bind(&a.response_body)
                    .push_bind(&a.error)
                    .push_bind(a.succeeded);
            });
            q.build().execute(&mut *tx).await.map_err(backend)?;

            // A delivery cancelled (endpoint deleted) or retried by hand while
            // in flight keeps its new state; only the lease holder moves it on.
            let mut q = QueryBuilder::<Postgres>::new(
                "UPDATE deliveries SET status = r.status, attempts = GREATEST(deliveries.attempts, r.attempt),
                    next_attempt_ms = r.next_ms, schedule_pos = COALESCE(r.pos, deliveries.schedule_pos),
                    lease_until_ms = NULL, lease_owner = NULL, last_attempt_at = r.at,
                    last_status_code = r.code, updated_at = ",
            );
            q.push_bind(now).push(" FROM (");
            q.push_values(chunk, |mut row, r| {
                let a = &r.attempt;
                let (status, next_ms, pos) = match &r.next {
                    NextStep::Succeeded => ("succeeded", None, None),
                    NextStep::Retry {
                        at_ms,
                        schedule_pos,
                    } => ("pending", Some(*at_ms), Some(*schedule_pos)),
                    NextStep::Failed => ("failed", None, None),
                };
                row.push_bind(&a.delivery_id)
                    .push_bind(&r.owner)
                    .push_bind(status)
                    .push_bind(a.attempt)
                    .push_bind(next_ms)
                    .push_bind(pos)
                    .push_bind(a.started_at_ms / 1000)
                    .push_bind(a.response_status);
            });
            q.push(
                ") AS r(id, owner, status, attempt, next_ms, pos, at, code)
                 WHERE deliveries.id = r.id AND deliveries.status = 'pending'
                   AND deliveries.lease_owner = r.owner",
            );
            q.build().execute(&mut *tx).await.map_err(backend)?;
        }
        // Endpoint health, once per endpoint, from the order of its results.
        let mut health = endpoint_health(results);
        health.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (endpoint_id, health) in health {
            match health {
                Health::Recovered => {
                    // Healthy again, and its circuit closed (both follow
                    // the last result).
                    sqlx::query(
                        "UPDATE endpoints SET failing_since = NULL, consecutive_failures = 0,
                            circuit_since = CASE WHEN circuit <> 'closed' THEN $1 ELSE circuit_since END,
                            circuit = 'closed', probe_at_ms = NULL, probe_interval_ms = NULL
                         WHERE id = $2 AND (failing_since IS NOT NULL OR consecutive_failures <> 0 OR circuit <> 'closed')",
                    )
                    .bind(now)
                    .bind(endpoint_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                }
                Health::Failing { since_now } => {
                    let sql = if since_now {
                        "UPDATE endpoints SET failing_since = $1 WHERE id = $2"
                    } else {
                        "UPDATE endpoints SET failing_since = COALESCE(failing_since, $1) WHERE id = $2"
                    };
                    sqlx::query(sql)
                        .bind(now)
                        .bind(endpoint_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                    if let Some(CircuitStep::Failed { restart, failures }) =
                        circuits.get(endpoint_id)
                    {
                        // A closed circuit opens at the threshold; a
                        // half-open one (its probe failed) opens again, its
                        // next probe twice as far off.
                        sqlx::query(
                            "UPDATE endpoints SET consecutive_failures =
                                CASE WHEN $1 THEN 0 ELSE consecutive_failures END + $2
                             WHERE id = $3",
                        )
                        .bind(restart)
                        .bind(failures)
                        .bind(endpoint_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                        sqlx::query(
                            "UPDATE endpoints SET
                                probe_interval_ms = CASE WHEN circuit = 'half_open'
                                    THEN LEAST(COALESCE(probe_interval_ms, $1) * 2, $2) ELSE $1 END,
                                probe_at_ms = $3 + CASE WHEN circuit = 'half_open'
                                    THEN LEAST(COALESCE(probe_interval_ms, $1) * 2, $2) ELSE $1 END,
                                circuit_since = $4, circuit = 'open'
                             WHERE id = $5 AND (circuit = 'half_open'
                                OR (circuit = 'closed' AND consecutive_failures >= $6))",
                        )
                        .bind(FIRST_PROBE_MS)
                        .bind(MAX_PROBE_INTERVAL_MS)
                        .bind(now_ms)
                        .bind(now)
                        .bind(endpoint_id)
                        .bind(i64::from(policy.circuit_failures))
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                    }
                    sqlx::query(
                        "UPDATE endpoints SET enabled = FALSE, updated_at = $1,
                            disabled_reason = 'failing continuously since '
                                || to_char(to_timestamp(failing_since) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                         WHERE id = $2 AND enabled AND failing_since <= $3",
                    )
                    .bind(now)
                    .bind(endpoint_id)
                    .bind(now - disable_after_secs)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                }
            }
        }
        // A receiver that asked to be slowed down gets nothing until its
        // pause ends, on any node (a later answer never shortens it).
        let (throttled, until): (Vec<&str>, Vec<i64>) =
            endpoint_throttles(results).into_iter().unzip();
        if !throttled.is_empty() {
            sqlx::query(
                "UPDATE endpoints e SET throttled_until_ms = GREATEST(e.throttled_until_ms, t.until_ms)
                 FROM (SELECT * FROM unnest($1::text[], $2::bigint[]) AS t(id, until_ms) ORDER BY id) t
                 WHERE e.id = t.id",
            )
            .bind(&throttled)
            .bind(&until)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        let mut disabled: Vec<&AttemptResult> =
            results.iter().filter(|r| r.disable.is_some()).collect();
        disabled.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
        for r in disabled {
            sqlx::query("UPDATE endpoints SET enabled = FALSE, disabled_reason = $1, updated_at = $2 WHERE id = $3 AND enabled")
                .bind(&r.disable)
                .bind(now)
                .bind(&r.endpoint_id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn endpoint_keys(&self, after: &str, limit: u32) -> StoreResult<Vec<StoredKeys>> {
        sqlx::query_as(
            "SELECT id AS endpoint_id, secret, previous_secret FROM endpoints
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.work)
        .await
        .map_err(backend)
    }

    async fn replace_endpoint_keys(
        &self,
        before: &StoredKeys,
        after: &StoredKeys,
    ) -> StoreResult<bool> {
        let replaced = sqlx::query(
            "UPDATE endpoints SET secret = $1, previous_secret = $2
             WHERE id = $3 AND secret = $4 AND previous_secret IS NOT DISTINCT FROM $5",
        )
        .bind(&after.secret)
        .bind(&after.previous_secret)
        .bind(&before.endpoint_id)
        .bind(&before.secret)
        .bind(&before.previous_secret)
        .execute(&self.work)
        .await
        .map_err(backend)?;
        Ok(replaced.rows_affected() == 1)
    }

    async fn next_due_ms(&self) -> StoreResult<Option<i64>> {
        sqlx::query_scalar(NEXT_DUE_SQL)
            .fetch_one(&self.work)
            .await
            .map_err(backend)
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

    async fn release_leases(&self, node: &str) -> StoreResult<u64> {
        let mut tx = self.begin_work().await?;
        sqlx::query(
            "UPDATE endpoint_slots SET delivery_id = NULL, owner = NULL, until_ms = NULL
             WHERE starts_with(owner, $1 || ':')",
        )
        .bind(node)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let done = sqlx::query(
            "UPDATE deliveries SET lease_until_ms = NULL, lease_owner = NULL
             WHERE lease_until_ms IS NOT NULL AND starts_with(lease_owner, $1 || ':')",
        )
        .bind(node)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn purge(
        &self,
        before: i64,
        keys_before: i64,
        sessions_at: i64,
        batch: u32,
    ) -> StoreResult<u64> {
        // Oldest first (by `seq`), a bounded number of rows per statement, in
        // one short transaction.
        let statements = [
            ("DELETE FROM attempts WHERE seq IN (
                SELECT a.seq FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
                WHERE d.created_at < $1 AND d.status <> 'pending' ORDER BY a.seq LIMIT $2)", before),
            ("DELETE FROM deliveries WHERE seq IN (
                SELECT d.seq FROM deliveries d
                WHERE d.created_at < $1 AND d.status <> 'pending'
                  AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.delivery_id = d.id)
                ORDER BY d.seq LIMIT $2)", before),
            ("DELETE FROM events WHERE seq IN (
                SELECT e.seq FROM events e
                WHERE e.created_at < $1 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
                ORDER BY e.seq LIMIT $2)", before),
            ("DELETE FROM idempotency_keys WHERE (account_id, key) IN (
                SELECT account_id, key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)", keys_before),
            ("DELETE FROM dashboard_sessions WHERE token_hash IN (
                SELECT token_hash FROM dashboard_sessions WHERE expires_at <= $1
                ORDER BY expires_at LIMIT $2)", sessions_at),
        ];
        let mut tx = self.begin_work().await?;
        let mut deleted = 0;
        for (sql, cutoff) in statements {
            deleted += sqlx::query(sql)
                .bind(cutoff)
                .bind(i64::from(batch))
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected();
        }
        tx.commit().await.map_err(backend)?;
        Ok(deleted)
    }

    async fn queue_stats(&self, now_ms: i64) -> StoreResult<QueueStats> {
        let (pending, due, in_flight): (i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*),
                    COUNT(*) FILTER (WHERE next_attempt_ms <= $1 AND (lease_until_ms IS NULL OR lease_until_ms <= $1)),
                    COUNT(*) FILTER (WHERE lease_until_ms IS NOT NULL AND lease_until_ms > $1)
             FROM deliveries WHERE status = 'pending'",
        )
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        let disabled_endpoints: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM endpoints WHERE NOT enabled")
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
        let circuits: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, circuit FROM endpoints WHERE circuit <> 'closed' ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let held_by_circuits: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM endpoints e JOIN deliveries d ON d.endpoint_id = e.id
             WHERE e.circuit <> 'closed' AND d.status = 'pending' AND d.next_attempt_ms <= $1
               AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= $1)",
        )
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        // The head of each enabled endpoint's queue (`deliveries_queue`,
        // skipping the few it has in flight): one short index range each.
        let oldest_due_ms: Option<i64> = sqlx::query_scalar(
            "SELECT MIN((SELECT d.next_attempt_ms FROM deliveries d
                         WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_ms <= $1
                           AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= $1)
                         ORDER BY d.next_attempt_ms LIMIT 1))
             FROM endpoints e WHERE e.enabled",
        )
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        Ok(QueueStats {
            pending,
            due,
            in_flight,
            disabled_endpoints,
            held_by_circuits,
            circuits,
            oldest_due_ms,
        })
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

/// The condition that keeps a reader of the event log to its settled part:
/// events of transactions older than every transaction of this database
/// still in flight (`notifly_log_horizon()`, migrations 0006-0007). Writes run in
/// parallel, so `seq` is taken in one order and committed in another; the
/// log is ordered by the writing transaction's id, then `seq`, and no
/// transaction that has yet to commit can add an event at or before a
/// position this condition lets a reader pass (its id is at least the
/// horizon). A write transaction also reads its own events; a reader
/// outside one first waits for the writes in flight (see [`settle`]).
async fn settled<C: Scope>(conn: &mut C) -> StoreResult<&'static str> {
    if C::IN_TRANSACTION {
        return Ok("(xid < notifly_log_horizon() OR xid = pg_current_xact_id_if_assigned())");
    }
    settle(conn).await?;
    Ok("xid < notifly_log_horizon()")
}

/// Longest a reader of the event log waits for the transactions in flight
/// when it started to end (see [`settle`]).
const SETTLE_WAIT: Duration = Duration::from_millis(500);

/// Waits until every transaction of this database in flight when it was
/// called has ended (at most [`SETTLE_WAIT`]), so that a read of the log
/// after it shows every event committed before the call: a client that
/// reads the log after its write was acknowledged sees the write's events.
/// With nothing in flight, one round trip. Past the wait the read goes on
/// and is still in order; it only leaves out what is not settled yet.
async fn settle(conn: &mut PgConnection) -> StoreResult<()> {
    let (horizon, settled): (String, bool) = sqlx::query_as(
        "SELECT pg_snapshot_xmax(s)::text, notifly_log_horizon() = pg_snapshot_xmax(s)
         FROM pg_current_snapshot() s",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(backend)?;
    let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
    let mut settled = settled;
    while !settled && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
        settled = sqlx::query_scalar("SELECT notifly_log_horizon() >= $1::xid8")
            .bind(&horizon)
            .fetch_one(&mut *conn)
            .await
            .map_err(backend)?;
    }
    Ok(())
}

/// The log position (`xid` as text, `seq`) of one of the account's events.
async fn event_position(
    conn: &mut PgConnection,
    account: &str,
    id: &str,
) -> StoreResult<Option<(String, i64)>> {
    sqlx::query_as(
        "SELECT xid::text, seq FROM events WHERE account_id = $1 AND id = $2 AND NOT is_test",
    )
    .bind(account)
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(backend)
}

/// A connection or a transaction; both read the same way.
struct Handle<C>(C);

/// Reads one row of `table` by id, within `account`, locked as the handle
/// locks what it reads (see [`Scope::row_lock`]).
async fn get<T, C: Scope>(
    conn: &mut C,
    table: &'static str,
    columns: &'static str,
    account: &str,
    id: &str,
) -> StoreResult<Option<T>>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    let lock = conn.row_lock();
    get_locked(conn, table, columns, account, id, lock).await
}

/// Reads one row of `table` by id, within `account`, with the locking
/// clause `lock` ("" for none).
async fn get_locked<T>(
    conn: &mut PgConnection,
    table: &'static str,
    columns: &'static str,
    account: &str,
    id: &str,
    lock: &str,
) -> StoreResult<Option<T>>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    sqlx::query_as(&format!(
        "SELECT {columns} FROM {table} WHERE account_id = $1 AND id = $2{lock}"
    ))
    .bind(account)
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(backend)
}

/// Deletes one row of `table` by id, within `account`.
async fn delete(
    conn: &mut PgConnection,
    table: &'static str,
    account: &str,
    id: &str,
) -> StoreResult<()> {
    sqlx::query(&format!(
        "DELETE FROM {table} WHERE account_id = $1 AND id = $2"
    ))
    .bind(account)
    .bind(id)
    .execute(conn)
    .await
    .map_err(backend)?;
    Ok(())
}

/// Reads one page of `table` for `account`, newest first, with keyset cursors on `seq`.
async fn list<T>(
    conn: &mut PgConnection,
    table: &'static str,
    columns: &'static str,
    account: &str,
    filters: &[Filter<'_>],
    page: &Page,
) -> StoreResult<Listed<T>>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    let cursor = match &page.cursor {
        None => None,
        Some(Cursor::After(id) | Cursor::Before(id)) => {
            let seq: Option<i64> = sqlx::query_scalar(&format!(
                "SELECT seq FROM {table} WHERE account_id = $1 AND id = $2"
            ))
            .bind(account)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
            Some(seq.ok_or(StoreError::UnknownCursor)?)
        }
    };
    let mut q =
        QueryBuilder::<Postgres>::new(format!("SELECT {columns} FROM {table} WHERE account_id = "));
    q.push_bind(account);
    for filter in filters {
        match filter {
            Filter::Text(col, v) => q.push(format!(" AND {col} = ")).push_bind(*v),
            Filter::Bool(col, v) => q.push(format!(" AND {col} = ")).push_bind(*v),
            Filter::Set(col, true) => q.push(format!(" AND {col} IS NOT NULL")),
            Filter::Set(col, false) => q.push(format!(" AND {col} IS NULL")),
        };
    }
    let backwards = matches!(page.cursor, Some(Cursor::Before(_)));
    if let Some(seq) = cursor {
        q.push(if backwards {
            " AND seq > "
        } else {
            " AND seq < "
        })
        .push_bind(seq);
    }
    q.push(if backwards {
        " ORDER BY seq ASC LIMIT "
    } else {
        " ORDER BY seq DESC LIMIT "
    })
    .push_bind(i64::from(page.limit) + 1);
    let items: Vec<T> = q.build_query_as().fetch_all(conn).await.map_err(backend)?;
    Ok(Listed::from_probe(items, page.limit, backwards))
}

#[async_trait]
impl<C> Conn for Handle<C>
where
    C: Scope,
{
    async fn api_key_by_hash(
        &mut self,
        key_hash: &str,
    ) -> StoreResult<Option<(Account, ApiKeyRecord)>> {
        let found: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT a.id, a.name, a.created_at FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.key_hash = $1",
        )
        .bind(key_hash)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)?;
        let Some((id, name, created_at)) = found else {
            return Ok(None);
        };
        let key: Option<ApiKeyRecord> = sqlx::query_as(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"
        ))
        .bind(key_hash)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(key.map(|key| {
            (
                Account {
                    id,
                    name,
                    created_at,
                },
                key,
            )
        }))
    }

    async fn api_keys(&mut self, account: &str) -> StoreResult<Vec<ApiKeyRecord>> {
        sqlx::query_as(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE account_id = $1 ORDER BY created_at, id"
        ))
        .bind(account)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn account_count(&mut self) -> StoreResult<i64> {
        self.0.scope_accounts().await?;
        sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
            .fetch_one(&mut *self.0)
            .await
            .map_err(backend)
    }

    async fn dashboard_session(
        &mut self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<DashboardSession>> {
        sqlx::query_as(&format!(
            "SELECT {DASHBOARD_SESSION_COLUMNS} FROM dashboard_sessions s JOIN accounts a ON a.id = s.account_id
             WHERE s.token_hash = $1 AND s.expires_at > $2
               AND (s.key_id IS NULL OR EXISTS (SELECT 1 FROM api_keys k WHERE k.id = s.key_id))"
        ))
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn contact(&mut self, account: &str, id: &str) -> StoreResult<Option<Contact>> {
        get(&mut self.0, "contacts", CONTACT_COLUMNS, account, id).await
    }

    async fn contacts_by_ids(
        &mut self,
        account: &str,
        ids: &[String],
    ) -> StoreResult<Vec<Contact>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Locked (in a transaction) in one order, so that two writers
        // locking overlapping sets cannot deadlock.
        let lock = self.0.row_lock();
        sqlx::query_as(&format!(
            "SELECT {CONTACT_COLUMNS} FROM contacts WHERE account_id = $1 AND id = ANY($2) ORDER BY id{lock}"
        ))
        .bind(account)
        .bind(ids)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn list_contacts(&mut self, account: &str, page: &Page) -> StoreResult<Listed<Contact>> {
        list(&mut self.0, "contacts", CONTACT_COLUMNS, account, &[], page).await
    }

    async fn contact_has_messages(&mut self, account: &str, contact_id: &str) -> StoreResult<bool> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE account_id = $1 AND contact_id = $2)",
        )
        .bind(account)
        .bind(contact_id)
        .fetch_one(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn conversation(&mut self, account: &str, id: &str) -> StoreResult<Option<Conversation>> {
        get(
            &mut self.0,
            "conversations",
            CONVERSATION_COLUMNS,
            account,
            id,
        )
        .await
    }

    async fn list_conversations(
        &mut self,
        account: &str,
        filter: &ConversationFilter,
        page: &Page,
    ) -> StoreResult<Listed<Conversation>> {
        let mut filters = Vec::new();
        if let Some(muted) = filter.muted {
            filters.push(Filter::Bool("is_muted", muted));
        }
        if let Some(pinned) = filter.pinned {
            filters.push(Filter::Bool("is_pinned", pinned));
        }
        if let Some(archived) = filter.archived {
            filters.push(Filter::Set("archived_at", archived));
        }
        if let Some(group_id) = &filter.group_id {
            filters.push(Filter::Text("group_id", group_id));
        }
        list(
            &mut self.0,
            "conversations",
            CONVERSATION_COLUMNS,
            account,
            &filters,
            page,
        )
        .await
    }

    async fn message(&mut self, account: &str, id: &str) -> StoreResult<Option<MessageRecord>> {
        get(&mut self.0, "messages", MESSAGE_COLUMNS, account, id).await
    }

    async fn list_messages(
        &mut self,
        account: &str,
        conversation_id: Option<&str>,
        page: &Page,
    ) -> StoreResult<Listed<MessageRecord>> {
        let filters: Vec<Filter> = conversation_id
            .map(|c| Filter::Text("conversation_id", c))
            .into_iter()
            .collect();
        list(
            &mut self.0,
            "messages",
            MESSAGE_COLUMNS,
            account,
            &filters,
            page,
        )
        .await
    }

    async fn messages_in_conversation(
        &mut self,
        account: &str,
        conversation_id: &str,
    ) -> StoreResult<Vec<MessageRecord>> {
        sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE account_id = $1 AND conversation_id = $2 ORDER BY seq"
        ))
        .bind(account)
        .bind(conversation_id)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn group(&mut self, account: &str, id: &str) -> StoreResult<Option<GroupRecord>> {
        get(&mut self.0, "groups", GROUP_COLUMNS, account, id).await
    }

    async fn list_groups(
        &mut self,
        account: &str,
        page: &Page,
    ) -> StoreResult<Listed<GroupRecord>> {
        list(&mut self.0, "groups", GROUP_COLUMNS, account, &[], page).await
    }

    async fn group_members(&mut self, group_id: &str) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT contact_id FROM group_members WHERE group_id = $1 ORDER BY position",
        )
        .bind(group_id)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn groups_with_member(
        &mut self,
        account: &str,
        contact_id: &str,
    ) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT g.id FROM group_members m JOIN groups g ON g.id = m.group_id WHERE g.account_id = $1 AND m.contact_id = $2 ORDER BY g.seq",
        )
        .bind(account)
        .bind(contact_id)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn attachment(&mut self, account: &str, id: &str) -> StoreResult<Option<Attachment>> {
        get(&mut self.0, "attachments", ATTACHMENT_COLUMNS, account, id).await
    }

    async fn list_attachments(
        &mut self,
        account: &str,
        message_id: Option<&str>,
        page: &Page,
    ) -> StoreResult<Listed<Attachment>> {
        let filters: Vec<Filter> = message_id
            .map(|m| Filter::Text("message_id", m))
            .into_iter()
            .collect();
        list(
            &mut self.0,
            "attachments",
            ATTACHMENT_COLUMNS,
            account,
            &filters,
            page,
        )
        .await
    }

    async fn attachments_of_message(
        &mut self,
        account: &str,
        message_id: &str,
    ) -> StoreResult<Vec<Attachment>> {
        sqlx::query_as(&format!(
            "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE account_id = $1 AND message_id = $2 ORDER BY seq"
        ))
        .bind(account)
        .bind(message_id)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn event(&mut self, account: &str, id: &str) -> StoreResult<Option<EventRecord>> {
        sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE account_id = $1 AND id = $2 AND NOT is_test"
        ))
        .bind(account)
        .bind(id)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn delivered_event(
        &mut self,
        account: &str,
        id: &str,
    ) -> StoreResult<Option<EventRecord>> {
        get(&mut self.0, "events", EVENT_COLUMNS, account, id).await
    }

    async fn events_after(
        &mut self,
        account: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>> {
        let settled = settled(&mut self.0).await?;
        let (xid, seq) = match after {
            None => ("0".to_owned(), 0),
            Some(id) => event_position(&mut self.0, account, id)
                .await?
                .ok_or(StoreError::UnknownCursor)?,
        };
        sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE account_id = $1 AND (xid, seq) > ($2::xid8, $3) AND {settled} AND NOT is_test
             ORDER BY xid, seq LIMIT $4"
        ))
        .bind(account)
        .bind(xid)
        .bind(seq)
        .bind(i64::from(limit))
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn latest_event_id(&mut self, account: &str) -> StoreResult<Option<String>> {
        let settled = settled(&mut self.0).await?;
        sqlx::query_scalar(&format!(
            "SELECT id FROM events WHERE account_id = $1 AND {settled} AND NOT is_test
             ORDER BY xid DESC, seq DESC LIMIT 1"
        ))
        .bind(account)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn list_events(
        &mut self,
        account: &str,
        event_type: Option<&str>,
        page: &Page,
    ) -> StoreResult<Listed<EventRecord>> {
        let settled = settled(&mut self.0).await?;
        // As `list`, newest first, but in the log's order (see [`settled`]).
        let cursor = match &page.cursor {
            None => None,
            Some(Cursor::After(id) | Cursor::Before(id)) => Some(
                event_position(&mut self.0, account, id)
                    .await?
                    .ok_or(StoreError::UnknownCursor)?,
            ),
        };
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE {settled} AND NOT is_test AND account_id = "
        ));
        q.push_bind(account);
        if let Some(t) = event_type {
            q.push(" AND event_type = ").push_bind(t);
        }
        let backwards = matches!(page.cursor, Some(Cursor::Before(_)));
        if let Some((xid, seq)) = cursor {
            q.push(if backwards {
                " AND (xid, seq) > ("
            } else {
                " AND (xid, seq) < ("
            })
            .push_bind(xid)
            .push("::xid8, ")
            .push_bind(seq)
            .push(")");
        }
        q.push(if backwards {
            " ORDER BY xid ASC, seq ASC LIMIT "
        } else {
            " ORDER BY xid DESC, seq DESC LIMIT "
        })
        .push_bind(i64::from(page.limit) + 1);
        let items: Vec<EventRecord> = q
            .build_query_as()
            .fetch_all(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(Listed::from_probe(items, page.limit, backwards))
    }

    async fn idempotent_response(
        &mut self,
        account: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotentResponse>> {
        self.0.lock_idempotency_key(account, key).await?;
        sqlx::query_as(
            "SELECT request_hash, status, body, created_at FROM idempotency_keys WHERE account_id = $1 AND key = $2",
        )
        .bind(account)
        .bind(key)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn endpoint(&mut self, account: &str, id: &str) -> StoreResult<Option<EndpointRecord>> {
        // In a write transaction the account's endpoint lock stands in for
        // a row lock: a write-back locks deliveries, then endpoints, and a
        // row lock taken here first (before cancelling deliveries) would
        // be the opposite order.
        self.0.lock_endpoints(account, true).await?;
        get_locked(&mut self.0, "endpoints", ENDPOINT_COLUMNS, account, id, "").await
    }

    async fn list_endpoints(
        &mut self,
        account: &str,
        page: &Page,
    ) -> StoreResult<Listed<EndpointRecord>> {
        list(
            &mut self.0,
            "endpoints",
            ENDPOINT_COLUMNS,
            account,
            &[],
            page,
        )
        .await
    }

    async fn delivery(&mut self, account: &str, id: &str) -> StoreResult<Option<DeliveryRecord>> {
        get(&mut self.0, "deliveries", DELIVERY_COLUMNS, account, id).await
    }

    async fn list_deliveries(
        &mut self,
        account: &str,
        endpoint_id: &str,
        status: Option<&str>,
        page: &Page,
    ) -> StoreResult<Listed<DeliveryRecord>> {
        let mut filters = vec![Filter::Text("endpoint_id", endpoint_id)];
        if let Some(status) = status {
            filters.push(Filter::Text("status", status));
        }
        list(
            &mut self.0,
            "deliveries",
            DELIVERY_COLUMNS,
            account,
            &filters,
            page,
        )
        .await
    }

    async fn attempts(
        &mut self,
        account: &str,
        delivery_id: &str,
    ) -> StoreResult<Vec<AttemptRecord>> {
        let columns = ATTEMPT_COLUMNS
            .split(", ")
            .map(|c| format!("a.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        sqlx::query_as(&format!(
            "SELECT {columns} FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
             WHERE d.account_id = $1 AND a.delivery_id = $2 ORDER BY a.seq"
        ))
        .bind(account)
        .bind(delivery_id)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn attempt_buckets(
        &mut self,
        account: &str,
        endpoint_id: &str,
        since_ms: i64,
        bucket_ms: i64,
    ) -> StoreResult<Vec<AttemptBucket>> {
        sqlx::query_as(
            "SELECT (a.started_at_ms - $1) / $2 AS bucket, COUNT(*) AS attempts,
                    SUM(CASE WHEN a.succeeded THEN 1 ELSE 0 END)::BIGINT AS succeeded,
                    SUM(a.duration_ms)::BIGINT AS total_duration_ms,
                    MAX(a.duration_ms) AS max_duration_ms
             FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
             WHERE d.account_id = $3 AND d.endpoint_id = $4 AND a.started_at_ms >= $5
             GROUP BY 1 ORDER BY 1",
        )
        .bind(since_ms)
        .bind(bucket_ms.max(1))
        .bind(account)
        .bind(endpoint_id)
        .bind(since_ms)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn last_attempt_at(
        &mut self,
        account: &str,
        endpoint_id: &str,
    ) -> StoreResult<Option<i64>> {
        sqlx::query_scalar(
            "SELECT MAX(last_attempt_at) FROM deliveries WHERE account_id = $1 AND endpoint_id = $2",
        )
        .bind(account)
        .bind(endpoint_id)
        .fetch_one(&mut *self.0)
        .await
        .map_err(backend)
    }
}

#[async_trait]
impl WriteTx for Handle<PgTx> {
    async fn insert_account(
        &mut self,
        account: &Account,
        key: &ApiKeyRecord,
        key_hash: &str,
    ) -> StoreResult<()> {
        self.0.scope_accounts().await?;
        sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&account.id)
            .bind(&account.name)
            .bind(account.created_at)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        insert_key(&mut self.0, key, key_hash).await
    }

    async fn insert_api_key(
        &mut self,
        key: &ApiKeyRecord,
        key_hash: &str,
        max: u32,
    ) -> StoreResult<()> {
        let count = lock_account_keys(&mut self.0, &key.account_id).await?;
        if count >= i64::from(max) {
            return Err(StoreError::Conflict("api key limit"));
        }
        insert_key(&mut self.0, key, key_hash).await
    }

    async fn revoke_api_key(&mut self, account: &str, id: &str) -> StoreResult<KeyRevocation> {
        let keys = lock_account_keys(&mut self.0, account).await?;
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM api_keys WHERE account_id = $1 AND id = $2)",
        )
        .bind(account)
        .bind(id)
        .fetch_one(&mut *self.0)
        .await
        .map_err(backend)?;
        if !exists {
            return Ok(KeyRevocation::NotFound);
        }
        if keys <= 1 {
            return Ok(KeyRevocation::Last);
        }
        sqlx::query("DELETE FROM api_keys WHERE account_id = $1 AND id = $2")
            .bind(account)
            .bind(id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        sqlx::query("DELETE FROM dashboard_sessions WHERE account_id = $1 AND key_id = $2")
            .bind(account)
            .bind(id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(KeyRevocation::Revoked)
    }

    async fn touch_api_key(&mut self, id: &str, now: i64) -> StoreResult<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn insert_dashboard_session(
        &mut self,
        account: &str,
        session: &DashboardSession,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO dashboard_sessions (token_hash, account_id, csrf, created_at, last_seen_at, expires_at, flash_kind, flash_message, key_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&session.token_hash)
        .bind(account)
        .bind(&session.csrf)
        .bind(session.created_at)
        .bind(session.last_seen_at)
        .bind(session.expires_at)
        .bind(&session.flash_kind)
        .bind(&session.flash_message)
        .bind(&session.key_id)
        .execute(&mut *self.0)
        .await
        .map_err(unique("dashboard session"))?;
        Ok(())
    }

    async fn trim_dashboard_sessions(&mut self, account: &str, keep: u32) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM dashboard_sessions WHERE account_id = $1 AND token_hash IN (
                SELECT token_hash FROM dashboard_sessions WHERE account_id = $1
                ORDER BY last_seen_at DESC, created_at DESC, token_hash OFFSET $2)",
        )
        .bind(account)
        .bind(i64::from(keep))
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn touch_dashboard_session(
        &mut self,
        account: &str,
        token_hash: &str,
        last_seen_at: i64,
        expires_at: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE dashboard_sessions SET last_seen_at = $1, expires_at = $2 WHERE account_id = $3 AND token_hash = $4",
        )
        .bind(last_seen_at)
        .bind(expires_at)
        .bind(account)
        .bind(token_hash)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn set_dashboard_session_flash(
        &mut self,
        account: &str,
        token_hash: &str,
        flash: &SessionFlash,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE dashboard_sessions SET flash_kind = $1, flash_message = $2 WHERE account_id = $3 AND token_hash = $4",
        )
        .bind(&flash.kind)
        .bind(&flash.message)
        .bind(account)
        .bind(token_hash)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn take_dashboard_session_flash(
        &mut self,
        account: &str,
        token_hash: &str,
    ) -> StoreResult<Option<SessionFlash>> {
        // Read and cleared in one statement: the row is locked, so of two
        // takes (on any nodes) the second sees it cleared.
        sqlx::query_as(
            "UPDATE dashboard_sessions s SET flash_kind = NULL, flash_message = NULL
             FROM (SELECT token_hash, flash_kind, flash_message FROM dashboard_sessions
                   WHERE account_id = $1 AND token_hash = $2 FOR UPDATE) old
             WHERE s.token_hash = old.token_hash
               AND old.flash_kind IS NOT NULL AND old.flash_message IS NOT NULL
             RETURNING old.flash_kind AS kind, old.flash_message AS message",
        )
        .bind(account)
        .bind(token_hash)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn delete_dashboard_session(
        &mut self,
        account: &str,
        token_hash: &str,
    ) -> StoreResult<()> {
        sqlx::query("DELETE FROM dashboard_sessions WHERE account_id = $1 AND token_hash = $2")
            .bind(account)
            .bind(token_hash)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn insert_contact(&mut self, account: &str, c: &Contact) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO contacts (account_id, id, username, phone_number, avatar_url, display_name, conversation_id, last_active_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(account)
        .bind(&c.id)
        .bind(&c.username)
        .bind(&c.phone_number)
        .bind(&c.avatar_url)
        .bind(&c.display_name)
        .bind(&c.conversation_id)
        .bind(c.last_active_at)
        .bind(c.created_at)
        .execute(&mut *self.0)
        .await
        .map_err(unique("username"))?;
        Ok(())
    }

    async fn update_contact(&mut self, account: &str, c: &Contact) -> StoreResult<()> {
        sqlx::query(
            "UPDATE contacts SET username = $1, phone_number = $2, avatar_url = $3, display_name = $4, conversation_id = $5, last_active_at = $6 WHERE account_id = $7 AND id = $8",
        )
        .bind(&c.username)
        .bind(&c.phone_number)
        .bind(&c.avatar_url)
        .bind(&c.display_name)
        .bind(&c.conversation_id)
        .bind(c.last_active_at)
        .bind(account)
        .bind(&c.id)
        .execute(&mut *self.0)
        .await
        .map_err(unique("username"))?;
        Ok(())
    }

    async fn delete_contact(&mut self, account: &str, id: &str) -> StoreResult<()> {
        delete(&mut self.0, "contacts", account, id).await
    }

    async fn insert_conversation(&mut self, account: &str, c: &Conversation) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO conversations (account_id, id, contact_id, group_id, pinned_message_id, is_pinned, is_muted, last_active_at, last_opened_at, created_at, archived_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(account)
        .bind(&c.id)
        .bind(&c.contact_id)
        .bind(&c.group_id)
        .bind(&c.pinned_message_id)
        .bind(c.is_pinned)
        .bind(c.is_muted)
        .bind(c.last_active_at)
        .bind(c.last_opened_at)
        .bind(c.created_at)
        .bind(c.archived_at)
        .execute(&mut *self.0)
        .await
        .map_err(unique("conversation participant"))?;
        Ok(())
    }

    async fn update_conversation(&mut self, account: &str, c: &Conversation) -> StoreResult<()> {
        sqlx::query(
            "UPDATE conversations SET pinned_message_id = $1, is_pinned = $2, is_muted = $3, last_active_at = $4, last_opened_at = $5, archived_at = $6 WHERE account_id = $7 AND id = $8",
        )
        .bind(&c.pinned_message_id)
        .bind(c.is_pinned)
        .bind(c.is_muted)
        .bind(c.last_active_at)
        .bind(c.last_opened_at)
        .bind(c.archived_at)
        .bind(account)
        .bind(&c.id)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn delete_conversation(&mut self, account: &str, id: &str) -> StoreResult<()> {
        delete(&mut self.0, "conversations", account, id).await
    }

    async fn insert_message(&mut self, account: &str, m: &MessageRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO messages (account_id, id, conversation_id, contact_id, message, reactions, read_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(account)
        .bind(&m.id)
        .bind(&m.conversation_id)
        .bind(&m.contact_id)
        .bind(&m.message)
        .bind(&m.reactions)
        .bind(m.read_at)
        .bind(m.created_at)
        .bind(m.updated_at)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn update_message(&mut self, account: &str, m: &MessageRecord) -> StoreResult<()> {
        sqlx::query(
            "UPDATE messages SET message = $1, reactions = $2, read_at = $3, updated_at = $4 WHERE account_id = $5 AND id = $6",
        )
        .bind(&m.message)
        .bind(&m.reactions)
        .bind(m.read_at)
        .bind(m.updated_at)
        .bind(account)
        .bind(&m.id)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn delete_message(&mut self, account: &str, id: &str) -> StoreResult<()> {
        delete(&mut self.0, "messages", account, id).await
    }

    async fn insert_group(&mut self, account: &str, g: &GroupRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO groups (account_id, id, name, description, avatar_url, conversation_id, created_at, archived_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(account)
        .bind(&g.id)
        .bind(&g.name)
        .bind(&g.description)
        .bind(&g.avatar_url)
        .bind(&g.conversation_id)
        .bind(g.created_at)
        .bind(g.archived_at)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn update_group(&mut self, account: &str, g: &GroupRecord) -> StoreResult<()> {
        sqlx::query(
            "UPDATE groups SET name = $1, description = $2, avatar_url = $3, conversation_id = $4, archived_at = $5 WHERE account_id = $6 AND id = $7",
        )
        .bind(&g.name)
        .bind(&g.description)
        .bind(&g.avatar_url)
        .bind(&g.conversation_id)
        .bind(g.archived_at)
        .bind(account)
        .bind(&g.id)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn set_group_members(
        &mut self,
        group_id: &str,
        contact_ids: &[String],
    ) -> StoreResult<()> {
        sqlx::query("DELETE FROM group_members WHERE group_id = $1")
            .bind(group_id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        for (position, contact_id) in contact_ids.iter().enumerate() {
            sqlx::query(
                "INSERT INTO group_members (group_id, contact_id, position) VALUES ($1, $2, $3)",
            )
            .bind(group_id)
            .bind(contact_id)
            .bind(position as i64)
            .execute(&mut *self.0)
            .await
            .map_err(unique("group member"))?;
        }
        Ok(())
    }

    async fn delete_group(&mut self, account: &str, id: &str) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM group_members WHERE group_id IN (SELECT id FROM groups WHERE account_id = $1 AND id = $2)",
        )
        .bind(account)
        .bind(id)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        sqlx::query("DELETE FROM groups WHERE account_id = $1 AND id = $2")
            .bind(account)
            .bind(id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn insert_attachment(&mut self, account: &str, a: &Attachment) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO attachments (account_id, id, message_id, filename, file_type, file_size, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(account)
        .bind(&a.id)
        .bind(&a.message_id)
        .bind(&a.filename)
        .bind(&a.file_type)
        .bind(a.file_size)
        .bind(a.created_at)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn update_attachment(&mut self, account: &str, a: &Attachment) -> StoreResult<()> {
        sqlx::query("UPDATE attachments SET filename = $1 WHERE account_id = $2 AND id = $3")
            .bind(&a.filename)
            .bind(account)
            .bind(&a.id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn delete_attachment(&mut self, account: &str, id: &str) -> StoreResult<()> {
        delete(&mut self.0, "attachments", account, id).await
    }

    async fn insert_event(&mut self, account: &str, e: &EventRecord) -> StoreResult<u64> {
        // The event, the endpoints it goes to and (for the first
        // `FAN_OUT_IN_ONE` of them) their deliveries, in one round trip: the
        // sub-statements of a data-modifying WITH all run, and the
        // deliveries' reference to the event is checked at the end of the
        // statement. Under the account's endpoint lock (shared with other
        // fan-outs): an endpoint being deleted meanwhile either waits for
        // this write (and then cancels the delivery it made) or is gone
        // before it (and gets none).
        //
        // With a hand-off, each of those deliveries whose endpoint is
        // healthy and not held for claims (circuit not closed, rate-limited,
        // throttled, or an earlier delivery about the same resource pending
        // with per-resource ordering), has a free slot and no deliveries
        // waiting before it
        // takes the slot and is leased to this node in the same statement
        // (as many as the node has slots free in all): its dispatcher
        // sends it once this transaction commits, with no claim.
        self.0.lock_endpoints(account, false).await?;
        let ids: Vec<String> = (0..FAN_OUT_IN_ONE).map(|_| crate::ids::new_id()).collect();
        let hand_off = self.0.staged.hand_off.clone();
        let fan_out_was = self
            .0
            .fan_outs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(account)
            .copied()
            .unwrap_or(1);
        let (took, blocked, owner, lease_ms) = match &hand_off {
            Some(h) => (
                h.take_total(fan_out_was.min(FAN_OUT_IN_ONE as u32)),
                h.queued_endpoints(),
                Some(h.owner().to_owned()),
                h.lease_ms(),
            ),
            None => (0, Vec::new(), None, 0),
        };
        let per_endpoint = hand_off.as_ref().map_or(0, |h| h.per_endpoint() as i32);
        let now_ms = crate::ids::now_ms();
        let lease_until_ms = now_ms + lease_ms;
        let targets: StoreResult<Vec<Target>> = sqlx::query_as(
            "WITH event AS (
                INSERT INTO events (account_id, id, event_type, body, created_at) VALUES ($1, $2, $3, $4, $5)),
             targets AS (
                SELECT id, held, row_number() OVER (ORDER BY seq) AS n FROM (
                    SELECT e.id, e.seq,
                        (e.failing_since IS NOT NULL OR e.circuit <> 'closed' OR e.rate_limit IS NOT NULL
                         OR COALESCE(e.throttled_until_ms, 0) > $7
                         OR (e.ordering <> 'none' AND EXISTS (
                            SELECT 1 FROM deliveries p
                            WHERE p.endpoint_id = e.id AND p.resource_id = $13 AND p.status = 'pending'))) AS held
                    FROM endpoints e
                    WHERE e.account_id = $1 AND e.enabled
                      AND EXISTS (SELECT 1 FROM endpoint_events s WHERE s.endpoint_id = e.id AND s.event_type IN ($3, '*'))) t),
             slot AS (
                SELECT t.id, t.n, s.n AS slot FROM targets t CROSS JOIN LATERAL (
                    SELECT s.n FROM endpoint_slots s
                    WHERE s.endpoint_id = t.id AND s.n < $9 AND (s.delivery_id IS NULL OR s.until_ms <= $7)
                    ORDER BY s.n LIMIT 1
                    FOR UPDATE SKIP LOCKED) s
                WHERE t.n <= $10 AND NOT t.held AND t.id <> ALL($11::text[])),
             took AS (
                UPDATE endpoint_slots s SET delivery_id = ($6::text[])[slot.n], owner = $8, until_ms = $12
                FROM slot WHERE s.endpoint_id = slot.id AND s.n = slot.slot),
             made AS (
                INSERT INTO deliveries (id, account_id, endpoint_id, event_id, event_type, status, next_attempt_ms,
                                        created_at, updated_at, lease_until_ms, lease_owner, resource_id)
                SELECT ($6::text[])[t.n], $1, t.id, $2, $3, 'pending', $7, $5, $5,
                       CASE WHEN slot.id IS NOT NULL THEN $12::bigint END,
                       CASE WHEN slot.id IS NOT NULL THEN $8 END, $13
                FROM targets t LEFT JOIN slot ON slot.id = t.id WHERE t.n <= cardinality($6::text[]))
             SELECT t.id, t.n, t.held, e.url, e.secret, e.previous_secret, e.previous_secret_expires_at,
                    COALESCE(e.ordering <> 'none', FALSE) AS ordered
             FROM targets t LEFT JOIN slot ON slot.id = t.id LEFT JOIN endpoints e ON e.id = slot.id
             ORDER BY t.n",
        )
        .bind(account)
        .bind(&e.id)
        .bind(&e.event_type)
        .bind(&e.body)
        .bind(e.created_at)
        .bind(&ids)
        .bind(now_ms)
        .bind(&owner)
        .bind(per_endpoint)
        .bind(i64::from(took))
        .bind(&blocked)
        .bind(lease_until_ms)
        .bind(&e.resource_id)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend);
        let targets = match targets {
            Ok(t) => t,
            Err(err) => {
                if let Some(h) = &hand_off {
                    h.give_back(took);
                }
                return Err(err);
            }
        };
        let body = axum::body::Bytes::from(e.body.clone());
        let mut handed = 0;
        let mut rest = Vec::new();
        for t in &targets {
            let leased = match (&hand_off, &t.url, &t.secret) {
                (Some(h), Some(url), Some(secret)) => {
                    h.took_slot(&t.id);
                    handed += 1;
                    let claimed = Claimed {
                        delivery_id: ids[t.n as usize - 1].clone(),
                        account_id: account.to_owned(),
                        endpoint_id: t.id.clone(),
                        event_id: e.id.clone(),
                        event_type: e.event_type.clone(),
                        attempt: 1,
                        schedule_pos: 0,
                        url: url.clone(),
                        secret: secret.clone(),
                        previous_secret: t.previous_secret.clone(),
                        previous_secret_expires_at: t.previous_secret_expires_at,
                        body: String::new(),
                        ordered: t.ordered,
                    };
                    self.0.staged.ready.push((claimed, body.clone()));
                    true
                }
                _ => false,
            };
            if t.n as usize > FAN_OUT_IN_ONE {
                rest.push(t.id.clone());
            }
            if !leased {
                // One held for a claim (rate limit, throttle, order) is
                // not waiting for a slot: it does not pace the writer.
                if t.held {
                    self.0.claimable = true;
                } else {
                    self.0.queued(&t.id);
                }
            }
        }
        if let Some(h) = &hand_off {
            h.give_back(took - handed);
            let n = u32::try_from(targets.len()).unwrap_or(u32::MAX);
            if n != fan_out_was {
                let mut fan_outs = self.0.fan_outs.lock().unwrap_or_else(|e| e.into_inner());
                fan_outs.insert(account.to_owned(), n.max(1));
            }
        }
        if !rest.is_empty() {
            fan_out(&mut self.0, account, e, &rest).await?;
        }
        Ok(targets.len() as u64)
    }

    async fn insert_event_for_endpoint(
        &mut self,
        account: &str,
        e: &EventRecord,
        endpoint_id: &str,
    ) -> StoreResult<String> {
        self.0.lock_endpoints(account, false).await?;
        sqlx::query(
            "INSERT INTO events (account_id, id, event_type, body, created_at, is_test) VALUES ($1, $2, $3, $4, $5, true)",
        )
        .bind(account)
        .bind(&e.id)
        .bind(&e.event_type)
        .bind(&e.body)
        .bind(e.created_at)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        self.0.claimable = true;
        insert_delivery(&mut self.0, account, e, endpoint_id).await
    }

    async fn insert_endpoint(&mut self, account: &str, ep: &EndpointRecord) -> StoreResult<()> {
        self.0.lock_endpoints(account, true).await?;
        sqlx::query(&format!(
            "INSERT INTO endpoints (account_id, {ENDPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
        ))
        .bind(account)
        .bind(&ep.id)
        .bind(&ep.name)
        .bind(&ep.url)
        .bind(&ep.description)
        .bind(&ep.events)
        .bind(ep.enabled)
        .bind(&ep.disabled_reason)
        .bind(&ep.secret)
        .bind(&ep.previous_secret)
        .bind(ep.previous_secret_expires_at)
        .bind(ep.failing_since)
        .bind(ep.created_at)
        .bind(ep.updated_at)
        .bind(&ep.signature_scheme)
        .bind(&ep.circuit)
        .bind(ep.circuit_since)
        .bind(ep.rate_limit)
        .bind(&ep.ordering)
        .execute(&mut *self.0)
        .await
        .map_err(unique("endpoint name"))?;
        // Its slots, so that its first deliveries can be handed off.
        if let Some(h) = &self.0.staged.hand_off {
            sqlx::query(
                "INSERT INTO endpoint_slots (endpoint_id, n) SELECT $1, g FROM generate_series(0, $2 - 1) g",
            )
            .bind(&ep.id)
            .bind(h.per_endpoint() as i32)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        }
        set_subscription(&mut self.0, ep).await
    }

    async fn update_endpoint(&mut self, account: &str, ep: &EndpointRecord) -> StoreResult<()> {
        self.0.lock_endpoints(account, true).await?;
        let updated = sqlx::query(
            "UPDATE endpoints SET name = $1, url = $2, description = $3, events = $4, enabled = $5, disabled_reason = $6,
                secret = $7, previous_secret = $8, previous_secret_expires_at = $9, failing_since = $10, updated_at = $11,
                signature_scheme = $12, rate_limit = $17, ordering = $18,
                -- A new URL, or enabling it again, ends a pause its old
                -- answers asked for.
                throttled_until_ms = CASE WHEN url <> $2 OR (NOT enabled AND $5) THEN NULL ELSE throttled_until_ms END,
                -- An update only closes the circuit (URL changed, enabled
                -- again), and closing it starts its count over.
                consecutive_failures = CASE WHEN $15 = 'closed' AND circuit <> 'closed' THEN 0 ELSE consecutive_failures END,
                probe_at_ms = CASE WHEN $15 = 'closed' AND circuit <> 'closed' THEN NULL ELSE probe_at_ms END,
                probe_interval_ms = CASE WHEN $15 = 'closed' AND circuit <> 'closed' THEN NULL ELSE probe_interval_ms END,
                circuit_since = CASE WHEN $15 = 'closed' AND circuit <> 'closed' THEN $16 ELSE circuit_since END,
                circuit = CASE WHEN $15 = 'closed' THEN 'closed' ELSE circuit END
             WHERE account_id = $13 AND id = $14",
        )
        .bind(&ep.name)
        .bind(&ep.url)
        .bind(&ep.description)
        .bind(&ep.events)
        .bind(ep.enabled)
        .bind(&ep.disabled_reason)
        .bind(&ep.secret)
        .bind(&ep.previous_secret)
        .bind(ep.previous_secret_expires_at)
        .bind(ep.failing_since)
        .bind(ep.updated_at)
        .bind(&ep.signature_scheme)
        .bind(account)
        .bind(&ep.id)
        .bind(&ep.circuit)
        .bind(ep.circuit_since)
        .bind(ep.rate_limit)
        .bind(&ep.ordering)
        .execute(&mut *self.0)
        .await
        .map_err(unique("endpoint name"))?;
        // Another account's endpoint id matches nothing, and keeps its subscription.
        if updated.rows_affected() == 0 {
            return Ok(());
        }
        // Enabled again, its pending deliveries are claimable.
        self.0.claimable |= ep.enabled;
        set_subscription(&mut self.0, ep).await
    }

    async fn delete_endpoint(&mut self, account: &str, id: &str) -> StoreResult<()> {
        self.0.lock_endpoints(account, true).await?;
        sqlx::query(
            "UPDATE deliveries SET status = 'cancelled', next_attempt_ms = NULL, lease_until_ms = NULL, lease_owner = NULL, updated_at = $1
             WHERE account_id = $2 AND endpoint_id = $3 AND status = 'pending'",
        )
        .bind(crate::ids::now())
        .bind(account)
        .bind(id)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        // Its subscription goes with it (ON DELETE CASCADE).
        sqlx::query("DELETE FROM endpoints WHERE account_id = $1 AND id = $2")
            .bind(account)
            .bind(id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn retry_delivery(&mut self, account: &str, id: &str, now_ms: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'pending', next_attempt_ms = $1, schedule_pos = 0,
                lease_until_ms = NULL, lease_owner = NULL, updated_at = $2
             WHERE account_id = $3 AND id = $4 AND (lease_until_ms IS NULL OR lease_until_ms <= $5)",
        )
        .bind(now_ms)
        .bind(now_ms / 1000)
        .bind(account)
        .bind(id)
        .bind(now_ms)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        self.0.claimable |= done.rows_affected() > 0;
        Ok(done.rows_affected() > 0)
    }

    async fn recover_deliveries(
        &mut self,
        account: &str,
        endpoint_id: &str,
        since: i64,
        now_ms: i64,
    ) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'pending', next_attempt_ms = $1, schedule_pos = 0,
                lease_until_ms = NULL, lease_owner = NULL, updated_at = $2
             WHERE account_id = $3 AND endpoint_id = $4 AND status = 'failed' AND created_at >= $5",
        )
        .bind(now_ms)
        .bind(now_ms / 1000)
        .bind(account)
        .bind(endpoint_id)
        .bind(since)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        self.0.claimable |= done.rows_affected() > 0;
        Ok(done.rows_affected())
    }

    async fn insert_idempotent_response(
        &mut self,
        account: &str,
        key: &str,
        r: &IdempotentResponse,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO idempotency_keys (account_id, key, request_hash, status, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(account)
        .bind(key)
        .bind(&r.request_hash)
        .bind(r.status)
        .bind(&r.body)
        .bind(r.created_at)
        .execute(&mut *self.0)
        .await
        .map_err(unique("idempotency key"))?;
        Ok(())
    }

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

/// An endpoint an event goes to (see `insert_event`): its place in the
/// fan-out and, if the write leased its delivery, what sending it needs.
#[derive(FromRow)]
struct Target {
    id: String,
    n: i64,
    /// Held for a claim (see `insert_event`).
    held: bool,
    /// Its endpoint orders deliveries per resource (only read if leased).
    ordered: bool,
    url: Option<String>,
    secret: Option<String>,
    previous_secret: Option<String>,
    previous_secret_expires_at: Option<i64>,
}

impl PgTx {
    /// Notes a new delivery to `endpoint` that waits for a claim.
    fn queued(&mut self, endpoint: &str) {
        self.claimable = true;
        if !self.queued_to.iter().any(|e| e == endpoint) {
            self.queued_to.push(endpoint.to_owned());
        }
        if let Some(h) = &self.staged.hand_off {
            h.queued(endpoint);
            self.staged.queued.push(endpoint.to_owned());
        }
    }
}

/// A pending delivery of `e` to one of the account's endpoints. The endpoint
/// must belong to the account: otherwise nothing is written and it is an
/// error, so one account's event can never go to another's endpoint.
async fn insert_delivery(
    conn: &mut PgConnection,
    account: &str,
    e: &EventRecord,
    endpoint_id: &str,
) -> StoreResult<String> {
    let id = crate::ids::new_id();
    let done = sqlx::query(
        "INSERT INTO deliveries (id, account_id, endpoint_id, event_id, event_type, status, next_attempt_ms, created_at, updated_at, resource_id)
         SELECT $1, account_id, id, $2, $3, 'pending', $4, $5, $6, $9 FROM endpoints WHERE id = $7 AND account_id = $8",
    )
    .bind(&id)
    .bind(&e.id)
    .bind(&e.event_type)
    .bind(crate::ids::now_ms())
    .bind(e.created_at)
    .bind(e.created_at)
    .bind(endpoint_id)
    .bind(account)
    .bind(&e.resource_id)
    .execute(conn)
    .await
    .map_err(backend)?;
    if done.rows_affected() != 1 {
        return Err(StoreError::Backend(sqlx::Error::RowNotFound));
    }
    Ok(id)
}

/// Inserts one pending delivery of `e` per endpoint in `endpoints` (ids of
/// the account's endpoints, just read) with one statement per
/// [`ROWS_PER_STATEMENT`].
async fn fan_out(
    conn: &mut PgConnection,
    account: &str,
    e: &EventRecord,
    endpoints: &[String],
) -> StoreResult<()> {
    let now_ms = crate::ids::now_ms();
    for chunk in endpoints.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO deliveries (id, account_id, endpoint_id, event_id, event_type, status, next_attempt_ms, created_at, updated_at, resource_id) ",
        );
        q.push_values(chunk, |mut row, endpoint| {
            row.push_bind(crate::ids::new_id())
                .push_bind(account)
                .push_bind(endpoint)
                .push_bind(&e.id)
                .push_bind(&e.event_type)
                .push_bind("pending")
                .push_bind(now_ms)
                .push_bind(e.created_at)
                .push_bind(e.created_at)
                .push_bind(&e.resource_id);
        });
        q.build().execute(&mut *conn).await.map_err(backend)?;
    }
    Ok(())
}

/// Rewrites an endpoint's subscription rows from its `events`.
async fn set_subscription(conn: &mut PgConnection, ep: &EndpointRecord) -> StoreResult<()> {
    sqlx::query("DELETE FROM endpoint_events WHERE endpoint_id = $1")
        .bind(&ep.id)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    for event_type in ep.events.iter() {
        sqlx::query("INSERT INTO endpoint_events (endpoint_id, event_type) VALUES ($1, $2)")
            .bind(&ep.id)
            .bind(event_type)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    Ok(())
}

/// The columns of an API key row, as `ApiKeyRecord` reads them.
const API_KEY_COLUMNS: &str = "id, account_id, name, prefix, created_at, last_used_at";

async fn insert_key(tx: &mut PgTx, key: &ApiKeyRecord, key_hash: &str) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO api_keys (key_hash, id, account_id, name, prefix, created_at, last_used_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(key_hash)
    .bind(&key.id)
    .bind(&key.account_id)
    .bind(&key.name)
    .bind(&key.prefix)
    .bind(key.created_at)
    .bind(key.last_used_at)
    .execute(&mut *tx.tx)
    .await
    .map_err(backend)?;
    Ok(())
}

/// Locks the account's row, which orders its key changes (two revocations
/// of its last two keys: the second sees one left), and counts its keys.
async fn lock_account_keys(tx: &mut PgTx, account: &str) -> StoreResult<i64> {
    // NO KEY: concurrent inserts that refer to the account (its sessions,
    // its resources) need not wait.
    sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
        .bind(account)
        .execute(&mut *tx.tx)
        .await
        .map_err(backend)?;
    sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE account_id = $1")
        .bind(account)
        .fetch_one(&mut *tx.tx)
        .await
        .map_err(backend)
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
