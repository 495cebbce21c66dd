//! The embedded SQLite store.
//!
//! SQLite allows one writer at a time, so writes go through one connection
//! with group commit (see `sqlite_writer`): each write runs in a savepoint of a
//! shared `BEGIN IMMEDIATE` transaction, and one `COMMIT` makes a whole group
//! durable. Taking the write lock up front means another process (such as
//! `notifly accounts create` beside a running server) waits on the busy
//! timeout instead of failing on a lock upgrade. Reads use a pool of
//! read-only connections and run concurrently thanks to WAL mode.
//! Durability: `synchronous=FULL`, so a write is on disk when its commit
//! returns.
//!
//! Statements go through rusqlite, in the calling task: a statement costs
//! microseconds of CPU and no thread hop (the hop per statement of an async
//! driver was half the server's CPU under load). Every statement is
//! prepared once per connection and cached. sqlx runs the migrations only.

use std::ops::DerefMut;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::types::ToSql;
use rusqlite::{Connection, params, params_from_iter};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::sqlite_rows::{
    Decode, all, exec, one, placeholders, scalar, sqlite, to_json, unique_sqlite, value_rows,
};
use super::sqlite_writer::{Readers, Writer, WriterGuard};
use super::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Read-only connections in the pool.
const READERS: usize = 8;

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Writer,
    readers: Readers,
    /// The database file.
    path: std::path::PathBuf,
    /// While this process serves the database: the locked `<database>.lock`.
    serving: Arc<std::sync::Mutex<Option<std::fs::File>>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or a
    /// plain path) and runs the migrations. Its writes, commits and waits for
    /// a connection are observed into `metrics`.
    pub async fn open(url: &str, metrics: Arc<StoreMetrics>) -> StoreResult<Self> {
        let url = if url.starts_with("sqlite:") {
            url.to_owned()
        } else {
            format!("sqlite://{url}")
        };
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(StoreError::Backend)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(true);
        // Migrations run through a short-lived pool (`Migrator::run` on a bare
        // connection makes the future not `Send`).
        let migrations = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(StoreError::Backend)?;
        MIGRATOR
            .run(&migrations)
            .await
            .map_err(|e| StoreError::Backend(e.into()))?;
        migrations.close().await;
        let path = options.get_filename().to_owned();
        let writer = Writer::start(&path, metrics.clone())?;
        let readers = Readers::new(&path, READERS, metrics);
        Ok(SqliteStore {
            writer,
            readers,
            path,
            serving: Arc::default(),
        })
    }

    /// Takes the lock file that makes this process the database's one
    /// server: an exclusive `flock` on `<database>.lock`, which the kernel
    /// releases when the process ends, however it ends.
    fn lock_for_serving(&self) -> StoreResult<()> {
        let name = self.path.as_os_str();
        if name.is_empty() || name == ":memory:" {
            return Ok(());
        }
        let mut lock_path = name.to_owned();
        lock_path.push(".lock");
        let lock_path = std::path::PathBuf::from(lock_path);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::Io(format!("cannot open {}", lock_path.display()), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::AlreadyServed(format!(
                    "another `notifly serve` is already serving {} (it holds {}): \
                     one server process at a time may use a SQLite database; \
                     stop it first, or run several nodes on PostgreSQL",
                    self.path.display(),
                    lock_path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Io(
                    format!("cannot lock {}", lock_path.display()),
                    e,
                ));
            }
        }
        *self.serving.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
        Ok(())
    }
}

/// What a claim returns per delivery, in [`Claimed`]'s order.
const CLAIMED_SELECT: &str = "SELECT d.id, d.account_id, d.endpoint_id, d.event_id, d.event_type,
        d.attempts + 1, d.schedule_pos, e.url, e.secret, e.previous_secret,
        e.previous_secret_expires_at, ev.body, e.ordering <> 'none'
     FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id JOIN events ev ON ev.id = d.event_id";

#[async_trait]
impl Store for SqliteStore {
    async fn read(&self) -> StoreResult<Box<dyn Conn>> {
        Ok(Box::new(Handle(self.readers.get().await?)))
    }

    async fn write(&self) -> StoreResult<Box<dyn WriteTx>> {
        Ok(Box::new(Handle(self.writer.begin().await?)))
    }

    async fn ping(&self) -> StoreResult<()> {
        let conn = self.readers.get().await?;
        scalar::<i64>(&conn, "SELECT 1", [])?;
        Ok(())
    }

    async fn close(&self) {
        self.readers.close();
        self.writer.close().await;
        // Another server may take the database from now on.
        self.serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    async fn start_serving(&self) -> StoreResult<u64> {
        self.lock_for_serving()?;
        // Only this process serves the database now, so every lease left
        // is a dead process's.
        let tx = self.writer.begin().await?;
        let done = exec(
            &tx,
            "UPDATE deliveries SET lease_until_ms = NULL, lease_owner = NULL
             WHERE lease_until_ms IS NOT NULL",
            [],
        )
        .map_err(sqlite)?;
        tx.commit().await?;
        Ok(done as u64)
    }

    async fn hand_off(&self, hand_off: Arc<HandOff>) -> bool {
        self.writer.hand_off_to(hand_off).await;
        true
    }

    async fn claim(&self, r: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
        let tx = self.writer.begin().await?;
        let hand_off = tx.hand_off();
        let claimed = claim(&tx, r)?;
        if let Err(e) = tx.commit().await {
            // The leases were rolled back: so are the slots they took.
            if let Some(h) = hand_off {
                for c in &claimed {
                    h.unoccupy(&c.endpoint_id, c.attempt == 1);
                }
            }
            return Err(e);
        }
        Ok(claimed)
    }

    async fn record_attempts(
        &self,
        results: &[AttemptResult],
        policy: &EndpointPolicy,
    ) -> StoreResult<()> {
        let tx = self.writer.begin().await?;
        record_attempts(&tx, results, policy)?;
        tx.commit().await
    }

    async fn endpoint_keys(&self, after: &str, limit: u32) -> StoreResult<Vec<StoredKeys>> {
        let conn = self.readers.get().await?;
        all(
            &conn,
            "SELECT id, secret, previous_secret FROM endpoints WHERE id > ? ORDER BY id LIMIT ?",
            params![after, limit],
            |row| {
                Ok(StoredKeys {
                    endpoint_id: row.get(0)?,
                    secret: row.get(1)?,
                    previous_secret: row.get(2)?,
                })
            },
        )
    }

    async fn replace_endpoint_keys(
        &self,
        before: &StoredKeys,
        after: &StoredKeys,
    ) -> StoreResult<bool> {
        let tx = self.writer.begin().await?;
        let replaced = exec(
            &tx,
            "UPDATE endpoints SET secret = ?, previous_secret = ?
             WHERE id = ? AND secret = ? AND previous_secret IS ?",
            params![
                after.secret,
                after.previous_secret,
                before.endpoint_id,
                before.secret,
                before.previous_secret,
            ],
        )
        .map_err(sqlite)?;
        tx.commit().await?;
        Ok(replaced == 1)
    }

    async fn next_due_ms(&self) -> StoreResult<Option<i64>> {
        let conn = self.readers.get().await?;
        // Per enabled endpoint, the head of its queue (not before its
        // throttle or open circuit lets it go; with per-resource ordering,
        // the first delivery not waiting for an earlier one, which wakes
        // the dispatcher when it ends) and its earliest lease: one short
        // index range each, whatever the backlog.
        let (due, lease): (Option<i64>, Option<i64>) = one(
            &conn,
            "SELECT
                MIN(MAX((SELECT d.next_attempt_ms FROM deliveries d INDEXED BY deliveries_queue
                     WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.lease_until_ms IS NULL
                       AND (e.ordering = 'none' OR d.resource_id IS NULL OR NOT EXISTS (
                         SELECT 1 FROM deliveries p INDEXED BY deliveries_resource
                         WHERE p.resource_id = d.resource_id AND p.endpoint_id = d.endpoint_id
                           AND p.status = 'pending' AND p.seq < d.seq))
                     ORDER BY d.next_attempt_ms LIMIT 1),
                    COALESCE(e.throttled_until_ms, 0),
                    CASE WHEN e.circuit = 'open' THEN COALESCE(e.probe_at_ms, 0) ELSE 0 END)),
                MIN((SELECT d.lease_until_ms FROM deliveries d INDEXED BY deliveries_leased
                     WHERE d.endpoint_id = e.id AND d.lease_until_ms IS NOT NULL AND d.status = 'pending'
                     ORDER BY d.lease_until_ms LIMIT 1))
             FROM endpoints e WHERE e.enabled = 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?
        .unwrap_or_default();
        Ok(match (due, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    async fn release_leases(&self, node: &str) -> StoreResult<u64> {
        let tx = self.writer.begin().await?;
        let done = exec(
            &tx,
            "UPDATE deliveries SET lease_until_ms = NULL, lease_owner = NULL
             WHERE lease_until_ms IS NOT NULL AND substr(lease_owner, 1, length(?1) + 1) = ?1 || ':'",
            [node],
        )
        .map_err(sqlite)?;
        tx.commit().await?;
        Ok(done as u64)
    }

    async fn purge(
        &self,
        before: i64,
        keys_before: i64,
        sessions_at: i64,
        batch: u32,
    ) -> StoreResult<u64> {
        // Oldest first (by `seq`), a bounded number of rows per statement, in
        // one short write: the writer is never held for long.
        let statements = [
            ("DELETE FROM attempts WHERE seq IN (
                SELECT a.seq FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
                WHERE d.created_at < ?1 AND d.status <> 'pending' ORDER BY a.seq LIMIT ?2)", before),
            ("DELETE FROM deliveries WHERE seq IN (
                SELECT d.seq FROM deliveries d
                WHERE d.created_at < ?1 AND d.status <> 'pending'
                  AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.delivery_id = d.id)
                ORDER BY d.seq LIMIT ?2)", before),
            ("DELETE FROM events WHERE seq IN (
                SELECT e.seq FROM events e
                WHERE e.created_at < ?1 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
                ORDER BY e.seq LIMIT ?2)", before),
            ("DELETE FROM idempotency_keys WHERE rowid IN (
                SELECT rowid FROM idempotency_keys WHERE created_at < ?1 LIMIT ?2)", keys_before),
            ("DELETE FROM dashboard_sessions WHERE token_hash IN (
                SELECT token_hash FROM dashboard_sessions WHERE expires_at <= ?1
                ORDER BY expires_at LIMIT ?2)", sessions_at),
        ];
        let tx = self.writer.begin().await?;
        let mut deleted = 0;
        for (sql, cutoff) in statements {
            deleted += exec(&tx, sql, params![cutoff, i64::from(batch)]).map_err(sqlite)? as u64;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn queue_stats(&self, now_ms: i64) -> StoreResult<QueueStats> {
        let conn = self.readers.get().await?;
        let (pending, due, in_flight) = one(
            &conn,
            "SELECT COUNT(*),
                    COALESCE(SUM(next_attempt_ms <= ?1 AND (lease_until_ms IS NULL OR lease_until_ms <= ?1)), 0),
                    COALESCE(SUM(lease_until_ms IS NOT NULL AND lease_until_ms > ?1), 0)
             FROM deliveries WHERE status = 'pending'",
            [now_ms],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?
        .unwrap_or_default();
        let disabled_endpoints: i64 = scalar(
            &conn,
            "SELECT COUNT(*) FROM endpoints WHERE enabled = 0",
            [],
        )?;
        let circuits: Vec<(String, String)> = all(
            &conn,
            "SELECT id, circuit FROM endpoints WHERE circuit <> 'closed' ORDER BY id",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let held_by_circuits: i64 = scalar(
            &conn,
            "SELECT COUNT(*) FROM endpoints e JOIN deliveries d ON d.endpoint_id = e.id
             WHERE e.circuit <> 'closed' AND d.status = 'pending' AND d.next_attempt_ms <= ?1
               AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= ?1)",
            [now_ms],
        )?;
        // The head of each enabled endpoint's queue (skipping the few it
        // has in flight): one short index range per endpoint.
        let oldest_due_ms: Option<i64> = scalar(
            &conn,
            "SELECT MIN((SELECT d.next_attempt_ms FROM deliveries d INDEXED BY deliveries_queue
                         WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_ms <= ?1
                           AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= ?1)
                         ORDER BY d.next_attempt_ms LIMIT 1))
             FROM endpoints e WHERE e.enabled = 1",
            [now_ms],
        )?;
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

/// Leases due deliveries (see [`Store::claim`]), inside the caller's write.
/// With a hand-off, the claimed deliveries take its slots, and no more are
/// claimed than it has free (hand-offs may have taken some since the
/// dispatcher looked).
fn claim(tx: &WriterGuard, r: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
    let hand_off = tx.hand_off();
    let mut r = r.clone();
    if let Some(h) = &hand_off {
        r.max = r.max.min(h.free());
    }
    if r.max == 0 {
        return Ok(Vec::new());
    }
    let r = &r;
    let tx: &Connection = tx;
    // The lease starts once this node holds the writer, not before it waited.
    let now_ms = crate::ids::now_ms();
    let lease_until_ms = now_ms + r.lease_ms;
    // In flight per endpoint, across every node holding a live lease.
    let used: std::collections::HashMap<String, i64> = all(
        tx,
        "SELECT endpoint_id, COUNT(*) FROM deliveries WHERE lease_until_ms IS NOT NULL AND lease_until_ms > ? GROUP BY endpoint_id",
        [now_ms],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?
    .into_iter()
    .collect();
    // Up to `per_endpoint` due, unleased deliveries of each enabled
    // endpoint: one index range per endpoint, so a backlog on one
    // endpoint never hides another's work.
    let candidates: Vec<Candidate> = all(
        tx,
        // CROSS JOIN makes endpoints the outer loop (SQLite keeps the
        // written order), so each endpoint costs one range of
        // `deliveries_queue` instead of a scan of every delivery. An open
        // circuit's deliveries wait until its next probe is due, a
        // throttled endpoint's until its pause ends, and with
        // `per_resource` ordering a delivery waits while an earlier one
        // about the same resource is pending (`deliveries_resource`).
        "SELECT d.id, d.endpoint_id, e.failing_since IS NOT NULL, e.circuit <> 'closed', e.rate_limit, e.rate_tat_us
         FROM endpoints e CROSS JOIN deliveries d
         WHERE e.enabled = 1 AND (e.circuit = 'closed' OR e.probe_at_ms <= ?1)
           AND (e.throttled_until_ms IS NULL OR e.throttled_until_ms <= ?1) AND d.id IN (
            SELECT q.id FROM deliveries q
            WHERE q.endpoint_id = e.id AND q.status = 'pending' AND q.next_attempt_ms <= ?1
              AND (q.lease_until_ms IS NULL OR q.lease_until_ms <= ?1)
              AND (e.ordering = 'none' OR q.resource_id IS NULL OR NOT EXISTS (
                SELECT 1 FROM deliveries p INDEXED BY deliveries_resource
                WHERE p.endpoint_id = q.endpoint_id AND p.resource_id = q.resource_id
                  AND p.status = 'pending' AND p.seq < q.seq))
            ORDER BY q.next_attempt_ms LIMIT ?2)
         ORDER BY d.next_attempt_ms",
        params![now_ms, i64::from(r.per_endpoint)],
        |row| {
            Ok(Candidate {
                id: row.get(0)?,
                endpoint: row.get(1)?,
                failing: row.get(2)?,
                probe: row.get(3)?,
                rate_limit: row.get(4)?,
                rate_tat_us: row.get(5)?,
            })
        },
    )?;
    let probing: std::collections::HashMap<String, String> = candidates
        .iter()
        .filter(|c| c.probe)
        .map(|c| (c.id.clone(), c.endpoint.clone()))
        .collect();
    let Chosen { ids: chosen, rates } = choose_claims(candidates, used, r, now_ms * 1000);
    // A probe half-opens its circuit; if its result never comes (the node
    // died), another may go once its lease has run out.
    for endpoint in chosen.iter().filter_map(|id| probing.get(id)) {
        exec(
            tx,
            "UPDATE endpoints SET circuit = 'half_open', circuit_since = ?, probe_at_ms = ? WHERE id = ?",
            params![now_ms / 1000, lease_until_ms, endpoint],
        )
        .map_err(sqlite)?;
    }
    for (endpoint, tat_us) in &rates {
        exec(
            tx,
            "UPDATE endpoints SET rate_tat_us = ? WHERE id = ?",
            params![tat_us, endpoint],
        )
        .map_err(sqlite)?;
    }
    let mut claimed: Vec<Claimed> = Vec::with_capacity(chosen.len());
    for ids in chosen.chunks(ROWS_PER_STATEMENT) {
        let list = placeholders(ids.len());
        let mut values: Vec<&dyn ToSql> = vec![&lease_until_ms, &r.owner];
        values.extend(ids.iter().map(|id| id as &dyn ToSql));
        exec(
            tx,
            &format!(
                "UPDATE deliveries SET lease_until_ms = ?, lease_owner = ? WHERE id IN ({list})"
            ),
            params_from_iter(values),
        )
        .map_err(sqlite)?;
        claimed.extend(all(
            tx,
            &format!("{CLAIMED_SELECT} WHERE d.id IN ({list})"),
            params_from_iter(ids),
            Claimed::decode,
        )?);
    }
    if let Some(h) = &hand_off {
        for c in &claimed {
            h.occupy(&c.endpoint_id, c.attempt == 1);
        }
    }
    Ok(claimed)
}

/// Records attempts (see [`Store::record_attempts`]), inside the caller's write.
fn record_attempts(
    tx: &Connection,
    results: &[AttemptResult],
    policy: &EndpointPolicy,
) -> StoreResult<()> {
    let now = crate::ids::now();
    let now_ms = crate::ids::now_ms();
    let disable_after_secs = policy.disable_after_secs;
    let circuits: std::collections::HashMap<&str, CircuitStep> =
        circuit_steps(results).into_iter().collect();
    // A handful of statements for the whole batch, not three per result.
    for chunk in results.chunks(ROWS_PER_STATEMENT) {
        let mut headers = Vec::with_capacity(chunk.len());
        for r in chunk {
            let a = &r.attempt;
            let response_headers = match &a.response_headers {
                Some(h) => Some(to_json(&h.0)?),
                None => None,
            };
            headers.push((to_json(&a.request_headers.0)?, response_headers));
        }
        let mut values: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 11);
        for (r, (request_headers, response_headers)) in chunk.iter().zip(&headers) {
            let a = &r.attempt;
            values.extend([
                &a.id as &dyn ToSql,
                &a.delivery_id,
                &a.attempt,
                &a.started_at_ms,
                &a.duration_ms,
                request_headers,
                &a.response_status,
                response_headers,
                &a.response_body,
                &a.error,
                &a.succeeded,
            ]);
        }
        exec(
            tx,
            &format!(
                "INSERT INTO attempts ({ATTEMPT_COLUMNS}) VALUES {}",
                value_rows(chunk.len(), 11)
            ),
            params_from_iter(values),
        )
        .map_err(sqlite)?;

        // A delivery cancelled (endpoint deleted) or retried by hand while
        // in flight keeps its new state; only the lease holder moves it on.
        let steps: Vec<(&str, Option<i64>, Option<i64>, i64)> = chunk
            .iter()
            .map(|r| {
                let at = r.attempt.started_at_ms / 1000;
                match &r.next {
                    NextStep::Succeeded => ("succeeded", None, None, at),
                    NextStep::Retry {
                        at_ms,
                        schedule_pos,
                    } => ("pending", Some(*at_ms), Some(*schedule_pos), at),
                    NextStep::Failed => ("failed", None, None, at),
                }
            })
            .collect();
        let mut values: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 8 + 1);
        for (r, (status, next_ms, pos, at)) in chunk.iter().zip(&steps) {
            let a = &r.attempt;
            values.extend([
                &a.delivery_id as &dyn ToSql,
                &r.owner,
                status,
                &a.attempt,
                next_ms,
                pos,
                at,
                &a.response_status,
            ]);
        }
        values.push(&now);
        exec(
            tx,
            &format!(
                "WITH r(id, owner, status, attempt, next_ms, pos, at, code) AS (VALUES {})
                 UPDATE deliveries SET status = r.status, attempts = MAX(deliveries.attempts, r.attempt),
                    next_attempt_ms = r.next_ms, schedule_pos = COALESCE(r.pos, deliveries.schedule_pos),
                    lease_until_ms = NULL, lease_owner = NULL, last_attempt_at = r.at,
                    last_status_code = r.code, updated_at = ?
                 FROM r WHERE deliveries.id = r.id AND deliveries.status = 'pending'
                    AND deliveries.lease_owner = r.owner",
                value_rows(chunk.len(), 8)
            ),
            params_from_iter(values),
        )
        .map_err(sqlite)?;
    }
    // Endpoint health, once per endpoint, from the order of its results.
    for (endpoint_id, health) in endpoint_health(results) {
        match health {
            Health::Recovered => {
                // Healthy again, and its circuit closed (both follow the
                // last result).
                exec(
                    tx,
                    "UPDATE endpoints SET failing_since = NULL, consecutive_failures = 0,
                        circuit_since = CASE WHEN circuit <> 'closed' THEN ?1 ELSE circuit_since END,
                        circuit = 'closed', probe_at_ms = NULL, probe_interval_ms = NULL
                     WHERE id = ?2 AND (failing_since IS NOT NULL OR consecutive_failures <> 0 OR circuit <> 'closed')",
                    params![now, endpoint_id],
                )
                .map_err(sqlite)?;
            }
            Health::Failing { since_now } => {
                let sql = if since_now {
                    "UPDATE endpoints SET failing_since = ? WHERE id = ?"
                } else {
                    "UPDATE endpoints SET failing_since = COALESCE(failing_since, ?) WHERE id = ?"
                };
                exec(tx, sql, params![now, endpoint_id]).map_err(sqlite)?;
                if let Some(CircuitStep::Failed { restart, failures }) = circuits.get(endpoint_id) {
                    exec(
                        tx,
                        "UPDATE endpoints SET consecutive_failures = CASE WHEN ?1 THEN 0 ELSE consecutive_failures END + ?2
                         WHERE id = ?3",
                        params![restart, failures, endpoint_id],
                    )
                    .map_err(sqlite)?;
                    // A closed circuit opens at the threshold; a half-open
                    // one (its probe failed) opens again, its next probe
                    // twice as far off.
                    exec(
                        tx,
                        "UPDATE endpoints SET
                            probe_interval_ms = CASE WHEN circuit = 'half_open'
                                THEN MIN(COALESCE(probe_interval_ms, ?1) * 2, ?2) ELSE ?1 END,
                            probe_at_ms = ?3 + CASE WHEN circuit = 'half_open'
                                THEN MIN(COALESCE(probe_interval_ms, ?1) * 2, ?2) ELSE ?1 END,
                            circuit_since = ?4, circuit = 'open'
                         WHERE id = ?5 AND (circuit = 'half_open' OR (circuit = 'closed' AND consecutive_failures >= ?6))",
                        params![
                            FIRST_PROBE_MS,
                            MAX_PROBE_INTERVAL_MS,
                            now_ms,
                            now,
                            endpoint_id,
                            policy.circuit_failures
                        ],
                    )
                    .map_err(sqlite)?;
                }
                exec(
                    tx,
                    "UPDATE endpoints SET enabled = 0, updated_at = ?,
                        disabled_reason = 'failing continuously since ' || strftime('%Y-%m-%dT%H:%M:%SZ', failing_since, 'unixepoch')
                     WHERE id = ? AND enabled = 1 AND failing_since <= ?",
                    params![now, endpoint_id, now - disable_after_secs],
                )
                .map_err(sqlite)?;
            }
        }
    }
    // A receiver that asked to be slowed down gets nothing until its pause
    // ends, on any node (a later answer never shortens it).
    for (endpoint_id, until_ms) in endpoint_throttles(results) {
        exec(
            tx,
            "UPDATE endpoints SET throttled_until_ms = MAX(COALESCE(throttled_until_ms, 0), ?) WHERE id = ?",
            params![until_ms, endpoint_id],
        )
        .map_err(sqlite)?;
    }
    for r in results {
        if let Some(reason) = &r.disable {
            exec(
                tx,
                "UPDATE endpoints SET enabled = 0, disabled_reason = ?, updated_at = ? WHERE id = ? AND enabled = 1",
                params![reason, now, r.endpoint_id],
            )
            .map_err(sqlite)?;
        }
    }
    Ok(())
}

/// A connection or a transaction; both read the same way.
struct Handle<C>(C);

/// Reads one row of `table` by id, within `account`.
fn get<T: Decode>(
    c: &Connection,
    table: &'static str,
    columns: &'static str,
    account: &str,
    id: &str,
) -> StoreResult<Option<T>> {
    one(
        c,
        &format!("SELECT {columns} FROM {table} WHERE account_id = ? AND id = ?"),
        [account, id],
        T::decode,
    )
}

/// Deletes one row of `table` by id, within `account`.
fn delete(c: &Connection, table: &'static str, account: &str, id: &str) -> StoreResult<()> {
    exec(
        c,
        &format!("DELETE FROM {table} WHERE account_id = ? AND id = ?"),
        [account, id],
    )
    .map_err(sqlite)?;
    Ok(())
}

/// Reads one page of `table` for `account`, newest first, with keyset cursors on `seq`.
fn list<T: Decode>(
    c: &Connection,
    table: &'static str,
    columns: &'static str,
    account: &str,
    filters: &[Filter<'_>],
    page: &Page,
) -> StoreResult<Listed<T>> {
    let cursor = match &page.cursor {
        None => None,
        Some(Cursor::After(id) | Cursor::Before(id)) => {
            let seq: Option<i64> = one(
                c,
                &format!("SELECT seq FROM {table} WHERE account_id = ? AND id = ?"),
                [account, id],
                |row| row.get(0),
            )?;
            Some(seq.ok_or(StoreError::UnknownCursor)?)
        }
    };
    let mut sql = format!("SELECT {columns} FROM {table} WHERE account_id = ?");
    let mut values: Vec<&dyn ToSql> = vec![&account];
    for filter in filters {
        match filter {
            Filter::Text(col, v) => {
                sql.push_str(&format!(" AND {col} = ?"));
                values.push(v);
            }
            Filter::Bool(col, v) => {
                sql.push_str(&format!(" AND {col} = ?"));
                values.push(v);
            }
            Filter::Set(col, true) => sql.push_str(&format!(" AND {col} IS NOT NULL")),
            Filter::Set(col, false) => sql.push_str(&format!(" AND {col} IS NULL")),
        };
    }
    let backwards = matches!(page.cursor, Some(Cursor::Before(_)));
    if let Some(seq) = &cursor {
        sql.push_str(if backwards {
            " AND seq > ?"
        } else {
            " AND seq < ?"
        });
        values.push(seq);
    }
    sql.push_str(if backwards {
        " ORDER BY seq ASC LIMIT ?"
    } else {
        " ORDER BY seq DESC LIMIT ?"
    });
    let probe = i64::from(page.limit) + 1;
    values.push(&probe);
    let items = all(c, &sql, params_from_iter(values), T::decode)?;
    Ok(Listed::from_probe(items, page.limit, backwards))
}

#[async_trait]
impl<C> Conn for Handle<C>
where
    C: DerefMut<Target = Connection> + Send,
{
    async fn api_key_by_hash(
        &mut self,
        key_hash: &str,
    ) -> StoreResult<Option<(Account, ApiKeyRecord)>> {
        one(
            &self.0,
            &format!(
                "SELECT a.id, a.name, a.created_at, {API_KEY_COLUMNS} FROM api_keys k JOIN accounts a ON a.id = k.account_id
                 WHERE k.key_hash = ?"
            ),
            [key_hash],
            |row| {
                Ok((
                    Account {
                        id: row.get(0)?,
                        name: row.get(1)?,
                        created_at: row.get(2)?,
                    },
                    api_key_at(row, 3)?,
                ))
            },
        )
    }

    async fn api_keys(&mut self, account: &str) -> StoreResult<Vec<ApiKeyRecord>> {
        all(
            &self.0,
            &format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys k WHERE k.account_id = ? ORDER BY k.created_at, k.id"
            ),
            [account],
            |row| api_key_at(row, 0),
        )
    }

    async fn account_count(&mut self) -> StoreResult<i64> {
        scalar(&self.0, "SELECT COUNT(*) FROM accounts", [])
    }

    async fn dashboard_session(
        &mut self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<DashboardSession>> {
        one(
            &self.0,
            &format!(
                "SELECT {DASHBOARD_SESSION_COLUMNS} FROM dashboard_sessions s JOIN accounts a ON a.id = s.account_id
                 WHERE s.token_hash = ?1 AND s.expires_at > ?2
                   AND (s.key_id IS NULL OR EXISTS (SELECT 1 FROM api_keys k WHERE k.id = s.key_id))"
            ),
            params![token_hash, now],
            DashboardSession::decode,
        )
    }

    async fn contact(&mut self, account: &str, id: &str) -> StoreResult<Option<Contact>> {
        get(&self.0, "contacts", CONTACT_COLUMNS, account, id)
    }

    async fn contacts_by_ids(
        &mut self,
        account: &str,
        ids: &[String],
    ) -> StoreResult<Vec<Contact>> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut values: Vec<&dyn ToSql> = vec![&account];
            values.extend(chunk.iter().map(|id| id as &dyn ToSql));
            found.extend(all(
                &self.0,
                &format!(
                    "SELECT {CONTACT_COLUMNS} FROM contacts WHERE account_id = ? AND id IN ({})",
                    placeholders(chunk.len())
                ),
                params_from_iter(values),
                Contact::decode,
            )?);
        }
        Ok(found)
    }

    async fn list_contacts(&mut self, account: &str, page: &Page) -> StoreResult<Listed<Contact>> {
        list(&self.0, "contacts", CONTACT_COLUMNS, account, &[], page)
    }

    async fn contact_has_messages(&mut self, account: &str, contact_id: &str) -> StoreResult<bool> {
        scalar(
            &self.0,
            "SELECT EXISTS (SELECT 1 FROM messages WHERE account_id = ? AND contact_id = ?)",
            [account, contact_id],
        )
    }

    async fn conversation(&mut self, account: &str, id: &str) -> StoreResult<Option<Conversation>> {
        get(&self.0, "conversations", CONVERSATION_COLUMNS, account, id)
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
            &self.0,
            "conversations",
            CONVERSATION_COLUMNS,
            account,
            &filters,
            page,
        )
    }

    async fn message(&mut self, account: &str, id: &str) -> StoreResult<Option<MessageRecord>> {
        get(&self.0, "messages", MESSAGE_COLUMNS, account, id)
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
            &self.0,
            "messages",
            MESSAGE_COLUMNS,
            account,
            &filters,
            page,
        )
    }

    async fn messages_in_conversation(
        &mut self,
        account: &str,
        conversation_id: &str,
    ) -> StoreResult<Vec<MessageRecord>> {
        all(
            &self.0,
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE account_id = ? AND conversation_id = ? ORDER BY seq"
            ),
            [account, conversation_id],
            MessageRecord::decode,
        )
    }

    async fn group(&mut self, account: &str, id: &str) -> StoreResult<Option<GroupRecord>> {
        get(&self.0, "groups", GROUP_COLUMNS, account, id)
    }

    async fn list_groups(
        &mut self,
        account: &str,
        page: &Page,
    ) -> StoreResult<Listed<GroupRecord>> {
        list(&self.0, "groups", GROUP_COLUMNS, account, &[], page)
    }

    async fn group_members(&mut self, group_id: &str) -> StoreResult<Vec<String>> {
        all(
            &self.0,
            "SELECT contact_id FROM group_members WHERE group_id = ? ORDER BY position",
            [group_id],
            |row| row.get(0),
        )
    }

    async fn groups_with_member(
        &mut self,
        account: &str,
        contact_id: &str,
    ) -> StoreResult<Vec<String>> {
        all(
            &self.0,
            "SELECT g.id FROM group_members m JOIN groups g ON g.id = m.group_id WHERE g.account_id = ? AND m.contact_id = ? ORDER BY g.seq",
            [account, contact_id],
            |row| row.get(0),
        )
    }

    async fn attachment(&mut self, account: &str, id: &str) -> StoreResult<Option<Attachment>> {
        get(&self.0, "attachments", ATTACHMENT_COLUMNS, account, id)
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
            &self.0,
            "attachments",
            ATTACHMENT_COLUMNS,
            account,
            &filters,
            page,
        )
    }

    async fn attachments_of_message(
        &mut self,
        account: &str,
        message_id: &str,
    ) -> StoreResult<Vec<Attachment>> {
        all(
            &self.0,
            &format!(
                "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE account_id = ? AND message_id = ? ORDER BY seq"
            ),
            [account, message_id],
            Attachment::decode,
        )
    }

    async fn event(&mut self, account: &str, id: &str) -> StoreResult<Option<EventRecord>> {
        one(
            &self.0,
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE account_id = ? AND id = ? AND is_test = 0"
            ),
            [account, id],
            EventRecord::decode,
        )
    }

    async fn delivered_event(
        &mut self,
        account: &str,
        id: &str,
    ) -> StoreResult<Option<EventRecord>> {
        get(&self.0, "events", EVENT_COLUMNS, account, id)
    }

    async fn events_after(
        &mut self,
        account: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>> {
        let after_seq: i64 = match after {
            None => 0,
            Some(id) => one(
                &self.0,
                "SELECT seq FROM events WHERE account_id = ? AND id = ? AND is_test = 0",
                [account, id],
                |row| row.get(0),
            )?
            .ok_or(StoreError::UnknownCursor)?,
        };
        all(
            &self.0,
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE account_id = ? AND seq > ? AND is_test = 0 ORDER BY seq LIMIT ?"
            ),
            params![account, after_seq, i64::from(limit)],
            EventRecord::decode,
        )
    }

    async fn latest_event_id(&mut self, account: &str) -> StoreResult<Option<String>> {
        one(
            &self.0,
            "SELECT id FROM events WHERE account_id = ? AND is_test = 0 ORDER BY seq DESC LIMIT 1",
            [account],
            |row| row.get(0),
        )
    }

    async fn list_events(
        &mut self,
        account: &str,
        event_type: Option<&str>,
        page: &Page,
    ) -> StoreResult<Listed<EventRecord>> {
        let filters: Vec<Filter> = event_type
            .map(|t| Filter::Text("event_type", t))
            .into_iter()
            .chain([Filter::Bool("is_test", false)])
            .collect();
        list(&self.0, "events", EVENT_COLUMNS, account, &filters, page)
    }

    async fn idempotent_response(
        &mut self,
        account: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotentResponse>> {
        one(
            &self.0,
            "SELECT request_hash, status, body, created_at FROM idempotency_keys WHERE account_id = ? AND key = ?",
            [account, key],
            IdempotentResponse::decode,
        )
    }

    async fn endpoint(&mut self, account: &str, id: &str) -> StoreResult<Option<EndpointRecord>> {
        get(&self.0, "endpoints", ENDPOINT_COLUMNS, account, id)
    }

    async fn list_endpoints(
        &mut self,
        account: &str,
        page: &Page,
    ) -> StoreResult<Listed<EndpointRecord>> {
        list(&self.0, "endpoints", ENDPOINT_COLUMNS, account, &[], page)
    }

    async fn delivery(&mut self, account: &str, id: &str) -> StoreResult<Option<DeliveryRecord>> {
        get(&self.0, "deliveries", DELIVERY_COLUMNS, account, id)
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
            &self.0,
            "deliveries",
            DELIVERY_COLUMNS,
            account,
            &filters,
            page,
        )
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
        all(
            &self.0,
            &format!(
                "SELECT {columns} FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
                 WHERE d.account_id = ? AND a.delivery_id = ? ORDER BY a.seq"
            ),
            [account, delivery_id],
            AttemptRecord::decode,
        )
    }

    async fn attempt_buckets(
        &mut self,
        account: &str,
        endpoint_id: &str,
        since_ms: i64,
        bucket_ms: i64,
    ) -> StoreResult<Vec<AttemptBucket>> {
        all(
            &self.0,
            "SELECT (a.started_at_ms - ?1) / ?2 AS bucket, COUNT(*) AS attempts,
                    SUM(CASE WHEN a.succeeded THEN 1 ELSE 0 END) AS succeeded,
                    SUM(a.duration_ms) AS total_duration_ms,
                    MAX(a.duration_ms) AS max_duration_ms
             FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
             WHERE d.account_id = ?3 AND d.endpoint_id = ?4 AND a.started_at_ms >= ?1
             GROUP BY 1 ORDER BY 1",
            params![since_ms, bucket_ms.max(1), account, endpoint_id],
            AttemptBucket::decode,
        )
    }

    async fn last_attempt_at(
        &mut self,
        account: &str,
        endpoint_id: &str,
    ) -> StoreResult<Option<i64>> {
        scalar(
            &self.0,
            "SELECT MAX(last_attempt_at) FROM deliveries WHERE account_id = ? AND endpoint_id = ?",
            [account, endpoint_id],
        )
    }
}

#[async_trait]
impl WriteTx for Handle<WriterGuard> {
    async fn insert_account(
        &mut self,
        account: &Account,
        key: &ApiKeyRecord,
        key_hash: &str,
    ) -> StoreResult<()> {
        exec(
            &self.0,
            "INSERT INTO accounts (id, name, created_at) VALUES (?, ?, ?)",
            params![account.id, account.name, account.created_at],
        )
        .map_err(sqlite)?;
        insert_key(&self.0, key, key_hash)
    }

    async fn insert_api_key(
        &mut self,
        key: &ApiKeyRecord,
        key_hash: &str,
        max: u32,
    ) -> StoreResult<()> {
        // The writer is one connection: nothing runs between the count and
        // the insert.
        let count: i64 = scalar(
            &self.0,
            "SELECT COUNT(*) FROM api_keys WHERE account_id = ?",
            [&key.account_id],
        )?;
        if count >= i64::from(max) {
            return Err(StoreError::Conflict("api key limit"));
        }
        insert_key(&self.0, key, key_hash)
    }

    async fn revoke_api_key(&mut self, account: &str, id: &str) -> StoreResult<KeyRevocation> {
        let keys: i64 = scalar(
            &self.0,
            "SELECT COUNT(*) FROM api_keys WHERE account_id = ?",
            [account],
        )?;
        let exists: i64 = scalar(
            &self.0,
            "SELECT COUNT(*) FROM api_keys WHERE account_id = ? AND id = ?",
            [account, id],
        )?;
        if exists == 0 {
            return Ok(KeyRevocation::NotFound);
        }
        if keys <= 1 {
            return Ok(KeyRevocation::Last);
        }
        exec(
            &self.0,
            "DELETE FROM api_keys WHERE account_id = ? AND id = ?",
            [account, id],
        )
        .map_err(sqlite)?;
        exec(
            &self.0,
            "DELETE FROM dashboard_sessions WHERE account_id = ? AND key_id = ?",
            [account, id],
        )
        .map_err(sqlite)?;
        Ok(KeyRevocation::Revoked)
    }

    async fn touch_api_key(&mut self, id: &str, now: i64) -> StoreResult<()> {
        exec(
            &self.0,
            "UPDATE api_keys SET last_used_at = ? WHERE id = ?",
            params![now, id],
        )
        .map_err(sqlite)?;
        Ok(())
    }

    async fn insert_dashboard_session(
        &mut self,
        account: &str,
        session: &DashboardSession,
    ) -> StoreResult<()> {
        exec(
            &self.0,
            "INSERT INTO dashboard_sessions (token_hash, account_id, csrf, created_at, last_seen_at, expires_at, flash_kind, flash_message, key_id)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                session.token_hash,
                account,
                session.csrf,
                session.created_at,
                session.last_seen_at,
                session.expires_at,
                session.flash_kind,
                session.flash_message,
                session.key_id,
            ],
        )
        .map_err(unique_sqlite("dashboard session"))?;
        Ok(())
    }

    async fn trim_dashboard_sessions(&mut self, account: &str, keep: u32) -> StoreResult<u64> {
        let done = exec(
            &self.0,
            "DELETE FROM dashboard_sessions WHERE account_id = ?1 AND token_hash IN (
                SELECT token_hash FROM dashboard_sessions WHERE account_id = ?1
                ORDER BY last_seen_at DESC, created_at DESC, token_hash LIMIT -1 OFFSET ?2)",
            params![account, i64::from(keep)],
        )
        .map_err(sqlite)?;
        Ok(done as u64)
    }

    async fn touch_dashboard_session(
        &mut self,
        account: &str,
        token_hash: &str,
        last_seen_at: i64,
        expires_at: i64,
    ) -> StoreResult<()> {
        exec(
            &self.0,
            "UPDATE dashboard_sessions SET last_seen_at = ?, expires_at = ? WHERE account_id = ? AND token_hash = ?",
            params![last_seen_at, expires_at, account, token_hash],
        )
        .map_err(sqlite)?;
        Ok(())
    }

    async fn set_dashboard_session_flash(
        &mut self,
        account: &str,
        token_hash: &str,
        flash: &SessionFlash,
    ) -> StoreResult<()> {
        exec(
            &self.0,
            "UPDATE dashboard_sessions SET flash_kind = ?, flash_message = ? WHERE account_id = ? AND token_hash = ?",
            params![flash.kind, flash.message, account, token_hash],
        )
        .map_err(sqlite)?;
        Ok(())
    }

    async fn take_dashboard_session_flash(
        &mut self,
        account: &str,
        token_hash: &str,
    ) -> StoreResult<Option<SessionFlash>> {
        // The single writer makes the read and the clear one step.
        let flash = one(
            &self.0,
            "SELECT flash_kind, flash_message FROM dashboard_sessions
             WHERE account_id = ? AND token_hash = ? AND flash_kind IS NOT NULL AND flash_message IS NOT NULL",
            [account, token_hash],
            SessionFlash::decode,
        )?;
        if flash.is_some() {
            exec(
                &self.0,
                "UPDATE dashboard_sessions SET flash_kind = NULL, flash_message = NULL WHERE account_id = ? AND token_hash = ?",
                [account, token_hash],
            )
            .map_err(sqlite)?;
        }
        Ok(flash)
    }

    async fn delete_dashboard_session(
        &mut self,
        account: &str,
        token_hash: &str,
    ) -> StoreResult<()> {
        exec(
            &self.0,
            "DELETE FROM dashboard_sessions WHERE account_id = ? AND token_hash = ?",
            [account, token_hash],
        )
        .map_err(sqlite)?;
        Ok(())
    }

    async fn insert_contact(&mut self, account: &str, c: &Contact) -> StoreResult<()> {
        exec(
            &self.0,
            "INSERT INTO contacts (account_id, id, username, phone_number, avatar_url, display_name, conversation_id, last_active_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                account,
                c.id,
                c.username,
                c.phone_number,
                c.avatar_url,
                c.display_name,
                c.conversation_id,
                c.last_active_at,
                c.created_at,
            ],
        )
        .map_err(unique_sqlite("username"))?;
        Ok(())
    }

    async fn update_contact(&mut self, account: &str, c: &Contact) -> StoreResult<()> {
        exec(
            &self.0,
            "UPDATE contacts SET username = ?, phone_number = ?, avatar_url = ?, display_name = ?, conversation_id = ?, last_active_at = ? WHERE account_id = ? AND id = ?",
            params![
                c.username,
                c.phone_number,
                c.avatar_url,
                c.display_name,
                c.conversation_id,
                c.last_active_at,
                account,
                c.id,
            ],
        )
        .map_err(unique_sqlite("username"))?;
        Ok(())
    }

    async fn delete_contact(&mut self, account: &str, id: &str) -> StoreResult<()> {
        delete(&self.0, "contacts", account, id)
    }

    async fn insert_conversation(&mut self, account: &str, c: &Conversation) -> StoreResult<()> {
        exec(
            &self.0,
            "INSERT INTO conversations (account_id, id, contact_id, group_id, pinned_message_id, is_pinned, is_muted, last_active_at, last_opened_at, created_at, archived_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                account,
                c.id,
                c.contact_id,
                c.group_id,
                c.pinned_message_id,
                c.is_pinned,
                c.is_muted,
                c.last_active_at,
                c.last_opened_at,
                c.created_at,
                c.archived_at,
            ],
        )
        .map_err(unique_sqlite("conversation participant"))?;
        Ok(())
    }

    async fn update_conversation(&mut self, account: &str, c: &Conversation) -> StoreResult<()> {
        exec(
            &self.0,
            "UPDATE conversations SET pinned_message_id = ?, is_pinned = ?, is_muted = ?, last_active_at = ?, last_opened_at = ?, archived_at = ? WHERE account_id = ? AND id = ?",
            params![
                c.pinned_message_id,
                c.is_pinned,
                c.is_muted,
                c.last_active_at,
                c.last_opened_at,
                c.archived_at,
                account,
                c.id,
            ],
        )
        .map_err(sqlite)?;
        Ok(())
    }

    async fn delete_conversation(&mut self, account: &str, id: &str) -> StoreResult<()> {
        delete(&self.0, "conversations", account, id)
    }

    async fn insert_message(&mut self, account: &str, m: &MessageRecord) -> StoreResult<()> {
        exec(
            &self.0,
            "INSERT INTO messages (account_id, id, conversation_id, contact_id, message, reactions, read_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                account,
                m.id,
                m.conversation_id,
                m.contact_id,
                m.message,
                to_json(&m.reactions.0)?,
                m.read_at,
                m.created_at,
                m.updated_at,
            ],
        )
        .map_err(sqlite)?;
        Ok(())
    }

    async fn update_message(&mut self, account: &str, m: &MessageRecord) -> StoreResult<()> {
        exec(
            &self.0,
            "UPDATE messages SET message = ?, reactions = ?, read_at = ?, updated_at = ? WHERE account_id = ? AND id = ?",
            params![
                m.message,
                to_json(&m.reactions.0)?,
                m.read_at,
                m.updated_at,
                account,
                m.id,
            ],
        )
        .map_err(sqlite)?;
        Ok(())
    }

    async fn delete_message(&mut self, account: &str, id: &str) -> StoreResult<()> {
        delete(&self.0, "messages", account, id)
    }

    async fn insert_group(&mut self, account: &str, g: &GroupRecord) -> StoreResult<()> {
        exec(
            &self.0,
            "INSERT INTO groups (account_id, id, name, description, avatar_url, conversation_id, created_at, archived_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                account,
                g.id,
                g.name,
                g.description,
                g.avatar_url,
                g.conversation_id,
                g.created_at,
                g.archived_at,
            ],
        )
        .map_err(sqlite)?;
        Ok(())
    }

    async fn update_group(&mut self, account: &str, g: &GroupRecord) -> StoreResult<()> {
        exec(
            &self.0,
            "UPDATE groups SET name = ?, description = ?, avatar_url = ?, conversation_id = ?, archived_at = ? WHERE account_id = ? AND id = ?",
            params![
                g.name,
                g.description,
                g.avatar_url,
                g.conversation_id,
                g.archived_at,
                account,
                g.id,
            ],
        )
        .map_err(sqlite)?;
        Ok(())
    }

    async fn set_group_members(
        &mut self,
        group_id: &str,
        contact_ids: &[String],
    ) -> StoreResult<()> {
        exec(
            &self.0,
            "DELETE FROM group_members WHERE group_id = ?",
            [group_id],
        )
        .map_err(sqlite)?;
        for (position, contact_id) in contact_ids.iter().enumerate() {
            exec(
                &self.0,
                "INSERT INTO group_members (group_id, contact_id, position) VALUES (?, ?, ?)",
                params![group_id, contact_id, position as i64],
            )
            .map_err(unique_sqlite("group member"))?;
        }
        Ok(())
    }

    async fn delete_group(&mut self, account: &str, id: &str) -> StoreResult<()> {
        exec(
            &self.0,
            "DELETE FROM group_members WHERE group_id IN (SELECT id FROM groups WHERE account_id = ? AND id = ?)",
            [account, id],
        )
        .map_err(sqlite)?;
        delete(&self.0, "groups", account, id)
    }

    async fn insert_attachment(&mut self, account: &str, a: &Attachment) -> StoreResult<()> {
        exec(
            &self.0,
            "INSERT INTO attachments (account_id, id, message_id, filename, file_type, file_size, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            params![
                account,
                a.id,
                a.message_id,
                a.filename,
                a.file_type,
                a.file_size,
                a.created_at,
            ],
        )
        .map_err(sqlite)?;
        Ok(())
    }

    async fn update_attachment(&mut self, account: &str, a: &Attachment) -> StoreResult<()> {
        exec(
            &self.0,
            "UPDATE attachments SET filename = ? WHERE account_id = ? AND id = ?",
            params![a.filename, account, a.id],
        )
        .map_err(sqlite)?;
        Ok(())
    }

    async fn delete_attachment(&mut self, account: &str, id: &str) -> StoreResult<()> {
        delete(&self.0, "attachments", account, id)
    }

    async fn insert_event(&mut self, account: &str, e: &EventRecord) -> StoreResult<u64> {
        exec(
            &self.0,
            "INSERT INTO events (account_id, id, event_type, body, created_at) VALUES (?, ?, ?, ?, ?)",
            params![account, e.id, e.event_type, e.body, e.created_at],
        )
        .map_err(sqlite)?;
        let endpoints: Vec<Target> = all(
            &self.0,
            // Held for a claim: an endpoint whose circuit is not closed,
            // that is rate-limited or throttled (claims keep count), or
            // ordered with a delivery about the same resource pending.
            "SELECT e.id, e.url, e.secret, e.previous_secret, e.previous_secret_expires_at,
                    e.ordering <> 'none', e.failing_since IS NOT NULL,
                    e.circuit <> 'closed' OR e.rate_limit IS NOT NULL OR COALESCE(e.throttled_until_ms, 0) > ?3
                    OR (e.ordering <> 'none' AND EXISTS (
                        SELECT 1 FROM deliveries p INDEXED BY deliveries_resource
                        WHERE p.endpoint_id = e.id AND p.resource_id = ?4 AND p.status = 'pending'))
             FROM endpoints e WHERE e.account_id = ?1 AND e.enabled = 1
               AND EXISTS (SELECT 1 FROM endpoint_events s WHERE s.endpoint_id = e.id AND s.event_type IN (?2, '*'))",
            params![account, &e.event_type, crate::ids::now_ms(), e.resource_id],
            |row| {
                Ok(Target {
                    id: row.get(0)?,
                    url: row.get(1)?,
                    secret: row.get(2)?,
                    previous_secret: row.get(3)?,
                    previous_secret_expires_at: row.get(4)?,
                    ordered: row.get(5)?,
                    failing: row.get(6)?,
                    held: row.get(7)?,
                })
            },
        )?;
        fan_out(&mut self.0, account, e, &endpoints)?;
        Ok(endpoints.len() as u64)
    }

    async fn insert_event_for_endpoint(
        &mut self,
        account: &str,
        e: &EventRecord,
        endpoint_id: &str,
    ) -> StoreResult<String> {
        exec(
            &self.0,
            "INSERT INTO events (account_id, id, event_type, body, created_at, is_test) VALUES (?, ?, ?, ?, ?, 1)",
            params![account, e.id, e.event_type, e.body, e.created_at],
        )
        .map_err(sqlite)?;
        self.0.claimable = true;
        insert_delivery(&self.0, account, e, endpoint_id)
    }

    async fn insert_endpoint(&mut self, account: &str, ep: &EndpointRecord) -> StoreResult<()> {
        exec(
            &self.0,
            &format!(
                "INSERT INTO endpoints (account_id, {ENDPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            params![
                account,
                ep.id,
                ep.name,
                ep.url,
                ep.description,
                to_json(&ep.events.0)?,
                ep.enabled,
                ep.disabled_reason,
                ep.secret,
                ep.previous_secret,
                ep.previous_secret_expires_at,
                ep.failing_since,
                ep.created_at,
                ep.updated_at,
                ep.signature_scheme,
                ep.circuit,
                ep.circuit_since,
                ep.rate_limit,
                ep.ordering,
            ],
        )
        .map_err(unique_sqlite("endpoint name"))?;
        set_subscription(&self.0, ep)
    }

    async fn update_endpoint(&mut self, account: &str, ep: &EndpointRecord) -> StoreResult<()> {
        let updated = exec(
            &self.0,
            "UPDATE endpoints SET name = ?1, url = ?2, description = ?3, events = ?4, enabled = ?5, disabled_reason = ?6,
                secret = ?7, previous_secret = ?8, previous_secret_expires_at = ?9, failing_since = ?10, updated_at = ?11,
                signature_scheme = ?12, rate_limit = ?17, ordering = ?18,
                -- A new URL, or enabling it again, ends a pause its old
                -- answers asked for.
                throttled_until_ms = CASE WHEN url <> ?2 OR (NOT enabled AND ?5) THEN NULL ELSE throttled_until_ms END,
                -- An update only closes the circuit (URL changed, enabled
                -- again), and closing it starts its count over.
                consecutive_failures = CASE WHEN ?15 = 'closed' AND circuit <> 'closed' THEN 0 ELSE consecutive_failures END,
                probe_at_ms = CASE WHEN ?15 = 'closed' AND circuit <> 'closed' THEN NULL ELSE probe_at_ms END,
                probe_interval_ms = CASE WHEN ?15 = 'closed' AND circuit <> 'closed' THEN NULL ELSE probe_interval_ms END,
                circuit_since = CASE WHEN ?15 = 'closed' AND circuit <> 'closed' THEN ?16 ELSE circuit_since END,
                circuit = CASE WHEN ?15 = 'closed' THEN 'closed' ELSE circuit END
             WHERE account_id = ?13 AND id = ?14",
            params![
                ep.name,
                ep.url,
                ep.description,
                to_json(&ep.events.0)?,
                ep.enabled,
                ep.disabled_reason,
                ep.secret,
                ep.previous_secret,
                ep.previous_secret_expires_at,
                ep.failing_since,
                ep.updated_at,
                ep.signature_scheme,
                account,
                ep.id,
                ep.circuit,
                ep.circuit_since,
                ep.rate_limit,
                ep.ordering,
            ],
        )
        .map_err(unique_sqlite("endpoint name"))?;
        // Another account's endpoint id matches nothing, and keeps its subscription.
        if updated == 0 {
            return Ok(());
        }
        // Enabled again, its pending deliveries are claimable.
        self.0.claimable |= ep.enabled;
        set_subscription(&self.0, ep)
    }

    async fn delete_endpoint(&mut self, account: &str, id: &str) -> StoreResult<()> {
        exec(
            &self.0,
            "UPDATE deliveries SET status = 'cancelled', next_attempt_ms = NULL, lease_until_ms = NULL, lease_owner = NULL, updated_at = ?
             WHERE account_id = ? AND endpoint_id = ? AND status = 'pending'",
            params![crate::ids::now(), account, id],
        )
        .map_err(sqlite)?;
        // Its subscription goes with it (ON DELETE CASCADE).
        delete(&self.0, "endpoints", account, id)
    }

    async fn retry_delivery(&mut self, account: &str, id: &str, now_ms: i64) -> StoreResult<bool> {
        let done = exec(
            &self.0,
            "UPDATE deliveries SET status = 'pending', next_attempt_ms = ?1, schedule_pos = 0,
                lease_until_ms = NULL, lease_owner = NULL, updated_at = ?2
             WHERE account_id = ?3 AND id = ?4 AND (lease_until_ms IS NULL OR lease_until_ms <= ?1)",
            params![now_ms, now_ms / 1000, account, id],
        )
        .map_err(sqlite)?;
        self.0.claimable |= done > 0;
        Ok(done > 0)
    }

    async fn recover_deliveries(
        &mut self,
        account: &str,
        endpoint_id: &str,
        since: i64,
        now_ms: i64,
    ) -> StoreResult<u64> {
        let done = exec(
            &self.0,
            "UPDATE deliveries SET status = 'pending', next_attempt_ms = ?, schedule_pos = 0,
                lease_until_ms = NULL, lease_owner = NULL, updated_at = ?
             WHERE account_id = ? AND endpoint_id = ? AND status = 'failed' AND created_at >= ?",
            params![now_ms, now_ms / 1000, account, endpoint_id, since],
        )
        .map_err(sqlite)?;
        self.0.claimable |= done > 0;
        Ok(done as u64)
    }

    async fn insert_idempotent_response(
        &mut self,
        account: &str,
        key: &str,
        r: &IdempotentResponse,
    ) -> StoreResult<()> {
        exec(
            &self.0,
            "INSERT INTO idempotency_keys (account_id, key, request_hash, status, body, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            params![account, key, r.request_hash, r.status, r.body, r.created_at],
        )
        .map_err(unique_sqlite("idempotency key"))?;
        Ok(())
    }

    fn claimable_work(&self) -> bool {
        self.0.claimable || !self.0.hands_off()
    }

    fn queued_to(&self) -> Vec<String> {
        self.0.queued_to().to_vec()
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        self.0.commit().await
    }
}

/// A pending delivery of `e` to one of the account's endpoints. The endpoint
/// must belong to the account: otherwise nothing is written and it is an
/// error, so one account's event can never go to another's endpoint.
fn insert_delivery(
    c: &Connection,
    account: &str,
    e: &EventRecord,
    endpoint_id: &str,
) -> StoreResult<String> {
    let id = crate::ids::new_id();
    let done = exec(
        c,
        "INSERT INTO deliveries (id, account_id, endpoint_id, event_id, event_type, status, next_attempt_ms, created_at, updated_at, resource_id)
         SELECT ?, account_id, id, ?, ?, 'pending', ?, ?, ?, ? FROM endpoints WHERE id = ? AND account_id = ?",
        params![
            id,
            e.id,
            e.event_type,
            crate::ids::now_ms(),
            e.created_at,
            e.created_at,
            e.resource_id,
            endpoint_id,
            account,
        ],
    )
    .map_err(sqlite)?;
    if done != 1 {
        return Err(StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows));
    }
    Ok(id)
}

/// An endpoint an event goes to, with what sending to it needs.
struct Target {
    id: String,
    url: String,
    secret: String,
    previous_secret: Option<String>,
    previous_secret_expires_at: Option<i64>,
    ordered: bool,
    failing: bool,
    /// Its deliveries wait for a claim: its circuit is not closed, it is
    /// rate-limited or throttled, or an earlier delivery it must follow is
    /// pending.
    held: bool,
}

/// Inserts one pending delivery of `e` per endpoint in `endpoints` (the
/// account's endpoints, just read), in as few statements as SQLite's
/// variable limit allows. With a hand-off, each delivery whose endpoint has
/// a free slot is leased to this process and staged for the dispatcher;
/// the others are left for claims.
fn fan_out(
    tx: &mut WriterGuard,
    account: &str,
    e: &EventRecord,
    endpoints: &[Target],
) -> StoreResult<()> {
    let now_ms = crate::ids::now_ms();
    let hand_off = tx.hand_off();
    let (lease_until_ms, owner) = match &hand_off {
        Some(h) => (Some(now_ms + h.lease_ms()), Some(h.owner().to_owned())),
        None => (None, None),
    };
    let body = axum::body::Bytes::from(e.body.clone());
    let mut ready = Vec::new();
    for chunk in endpoints.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<(String, bool)> = chunk
            .iter()
            .map(|t| {
                let leased = hand_off
                    .as_ref()
                    .is_some_and(|h| !t.held && h.reserve(&t.id, t.failing));
                (crate::ids::new_id(), leased)
            })
            .collect();
        let mut values: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 12);
        for ((id, leased), t) in rows.iter().zip(chunk) {
            let (lease_until_ms, owner): (&dyn ToSql, &dyn ToSql) = if *leased {
                (&lease_until_ms, &owner)
            } else {
                (&rusqlite::types::Null, &rusqlite::types::Null)
            };
            values.extend([
                id as &dyn ToSql,
                &account,
                &t.id,
                &e.id,
                &e.event_type,
                &"pending",
                &now_ms,
                &e.created_at,
                &e.created_at,
                lease_until_ms,
                owner,
                &e.resource_id,
            ]);
        }
        let done = exec(
            tx,
            &format!(
                "INSERT INTO deliveries (id, account_id, endpoint_id, event_id, event_type, status, next_attempt_ms, created_at, updated_at, lease_until_ms, lease_owner, resource_id) VALUES {}",
                value_rows(chunk.len(), 12)
            ),
            params_from_iter(values),
        );
        for ((id, leased), t) in rows.into_iter().zip(chunk) {
            if !leased {
                // One held for a claim (rate limit, throttle, order) is
                // not waiting for a slot: it leaves work for a claim but
                // does not count towards pacing the writer.
                if hand_off.is_some() && !t.held {
                    tx.stage_queued(&t.id);
                } else {
                    tx.claimable = true;
                }
                continue;
            }
            let claimed = Claimed {
                delivery_id: id,
                account_id: account.to_owned(),
                endpoint_id: t.id.clone(),
                event_id: e.id.clone(),
                event_type: e.event_type.clone(),
                attempt: 1,
                schedule_pos: 0,
                url: t.url.clone(),
                secret: t.secret.clone(),
                previous_secret: t.previous_secret.clone(),
                previous_secret_expires_at: t.previous_secret_expires_at,
                body: String::new(),
                ordered: t.ordered,
            };
            ready.push((claimed, body.clone()));
        }
        // Staged even on failure, so that rolling the write back frees the slots.
        tx.stage(std::mem::take(&mut ready));
        done.map_err(sqlite)?;
    }
    Ok(())
}

/// Rewrites an endpoint's subscription rows from its `events`.
fn set_subscription(c: &Connection, ep: &EndpointRecord) -> StoreResult<()> {
    exec(
        c,
        "DELETE FROM endpoint_events WHERE endpoint_id = ?",
        [&ep.id],
    )
    .map_err(sqlite)?;
    for event_type in ep.events.iter() {
        exec(
            c,
            "INSERT INTO endpoint_events (endpoint_id, event_type) VALUES (?, ?)",
            [&ep.id, event_type],
        )
        .map_err(sqlite)?;
    }
    Ok(())
}

/// The columns of an API key row (`k`), in [`api_key_at`]'s order.
const API_KEY_COLUMNS: &str = "k.id, k.account_id, k.name, k.prefix, k.created_at, k.last_used_at";

/// An API key from `API_KEY_COLUMNS`, starting at column `at`.
fn api_key_at(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.get(at)?,
        account_id: row.get(at + 1)?,
        name: row.get(at + 2)?,
        prefix: row.get(at + 3)?,
        created_at: row.get(at + 4)?,
        last_used_at: row.get(at + 5)?,
    })
}

fn insert_key(c: &Connection, key: &ApiKeyRecord, key_hash: &str) -> StoreResult<()> {
    exec(
        c,
        "INSERT INTO api_keys (key_hash, id, account_id, name, prefix, created_at, last_used_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
        params![
            key_hash,
            key.id,
            key.account_id,
            key.name,
            key.prefix,
            key.created_at,
            key.last_used_at
        ],
    )
    .map_err(sqlite)?;
    Ok(())
}
