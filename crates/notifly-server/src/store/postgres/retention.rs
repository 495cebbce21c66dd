//! Deleting what is past retention.

use sqlx::Row as _;

use super::*;

/// The purge's statements on the big tables. At 30 days of retention the
/// tables hold hundreds of millions of rows: a statement the planner
/// answers with a scan of a whole table takes seconds a batch, and one
/// that starts from the oldest row every batch reads again, every batch,
/// whatever the purge must keep (docs/benchmarks.md, the 10-million-row
/// measurements). So each batch reads one window of rows by primary key,
/// after where the round's walk has got to (see
/// [`PurgeRound`](crate::store::PurgeRound)): its cost is the batch's,
/// whatever the table holds. `tests/it/postgres_plans.rs` checks their
/// plans.
pub mod retention_sql {
    /// The purge's planner settings, for its transaction: not the
    /// dispatcher's (`dispatcher_sql::SESSION`, on the same connections).
    /// These statements were measured with plans made for their
    /// parameters, and the idempotency keys' has no index to take instead
    /// of a scan.
    pub const SETTINGS: &str = "SELECT set_config('plan_cache_mode', 'force_custom_plan', true),
                set_config('enable_seqscan', 'on', true)";

    /// One window of the deliveries' walk (`$1`: the cutoff, Unix seconds;
    /// `$2`: the batch; `$3`: the `seq` the window starts after): the next
    /// `$2` deliveries by `seq`, and of those the finished ones past the
    /// cutoff, locked. One row: the window's last `seq` (`NULL` if it is
    /// empty), its size, whether none of its deliveries is past the cutoff
    /// (see [`PurgeRound`](crate::store::PurgeRound)), and the locked deliveries' `seq`s and ids. A pending delivery
    /// is not locked (the dispatcher writes it back without waiting for
    /// the purge); one retried by hand meanwhile (pending again) is locked
    /// by the retry, so skipped, or re-checked under the lock and left.
    pub const DELIVERIES_TO_DELETE: &str = "WITH w AS MATERIALIZED (
                SELECT seq, created_at FROM deliveries WHERE seq > $3 ORDER BY seq LIMIT $2),
             locked AS MATERIALIZED (
                SELECT seq, id FROM deliveries
                WHERE seq > $3 AND seq <= (SELECT MAX(seq) FROM w)
                  AND created_at < $1 AND status <> 'pending'
                FOR UPDATE SKIP LOCKED)
             SELECT w.last, w.size, w.reached, l.seqs, l.ids
             FROM (SELECT MAX(seq) AS last, COUNT(*) AS size,
                          COALESCE(BOOL_AND(created_at >= $1), false) AS reached FROM w) w,
                  (SELECT COALESCE(ARRAY_AGG(seq), '{}') AS seqs,
                          COALESCE(ARRAY_AGG(id), '{}') AS ids FROM locked) l";

    /// Deletes the deliveries [`DELIVERIES_TO_DELETE`] locked (`$1`: their
    /// `seq`s, `$2`: their ids) with their attempts; returns how many rows
    /// went. A statement of its own, so that its snapshot has every attempt
    /// written back before the lock (no foreign key would catch one it
    /// missed: migration 0019), and none can be written while it holds.
    pub const DELIVERIES: &str =
        "WITH a AS (DELETE FROM attempts WHERE delivery_id = ANY($2) RETURNING 1),
             gone AS (DELETE FROM deliveries WHERE seq = ANY($1) RETURNING 1)
             SELECT (SELECT COUNT(*) FROM a) + (SELECT COUNT(*) FROM gone)";

    /// One window of the events' walk (`$1`: the cutoff; `$2`: the batch;
    /// `$3`: the `seq` the window starts after): the next `$2` events by
    /// `seq`, and of those the ones past the cutoff with no delivery left,
    /// locked. One row: the window's last `seq`, its size, whether none of
    /// its events is past the cutoff, and the locked events'
    /// `seq`s. An event a replay is making a delivery of is locked
    /// `FOR KEY SHARE` by it, so skipped.
    pub const EVENTS_TO_DELETE: &str = "WITH w AS MATERIALIZED (
                SELECT seq, created_at FROM events WHERE seq > $3 ORDER BY seq LIMIT $2),
             locked AS MATERIALIZED (
                SELECT e.seq FROM events e
                WHERE e.seq > $3 AND e.seq <= (SELECT MAX(seq) FROM w) AND e.created_at < $1
                  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
                FOR UPDATE OF e SKIP LOCKED)
             SELECT w.last, w.size, w.reached, l.seqs
             FROM (SELECT MAX(seq) AS last, COUNT(*) AS size,
                          COALESCE(BOOL_AND(created_at >= $1), false) AS reached FROM w) w,
                  (SELECT COALESCE(ARRAY_AGG(seq), '{}') AS seqs FROM locked) l";

    /// Deletes the events [`EVENTS_TO_DELETE`] locked (`$1`) that still have
    /// no delivery. No foreign key keeps a delivery's event (migration
    /// 0019): a replay makes deliveries of old events, reading each event
    /// `FOR KEY SHARE` first. One that committed after the lock's snapshot
    /// is seen by this statement's; none can start while the lock holds.
    pub const EVENTS: &str = "DELETE FROM events e WHERE e.seq = ANY($1)
                AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)";
}

/// Runs one window of a walk ([`retention_sql::DELIVERIES_TO_DELETE`] or
/// [`retention_sql::EVENTS_TO_DELETE`]) after `after`: where the walk goes
/// next, and the row that names what the window locked (`seqs`, and the
/// deliveries' `ids`).
async fn window(
    conn: &mut PgConnection,
    sql: &str,
    round: &PurgeRound,
    batch: u32,
    after: i64,
) -> StoreResult<(Walk, PgRow)> {
    let row = sqlx::query(sql)
        .bind(round.before)
        .bind(i64::from(batch))
        .bind(after)
        .fetch_one(conn)
        .await
        .map_err(backend)?;
    let walk = Walk::past(
        row.try_get("last").map_err(backend)?,
        row.try_get("size").map_err(backend)?,
        row.try_get("reached").map_err(backend)?,
        batch,
    );
    Ok((walk, row))
}

#[async_trait]
impl Retention for PgStore {
    async fn purge(&self, round: &mut PurgeRound, batch: u32) -> StoreResult<u64> {
        if round.finished() {
            return Ok(0);
        }
        // A bounded number of rows per table, in one short transaction;
        // the round moves on only if it commits. Finished deliveries (with
        // their attempts) first, so that the events they held may go in
        // the same batch.
        let mut next = round.clone();
        let limit = i64::from(batch);
        let mut tx = self.begin_work().await?;
        sqlx::query(retention_sql::SETTINGS)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let mut deleted = 0;
        if let Walk::After(after) = next.deliveries {
            let (walk, locked) = window(
                &mut tx,
                retention_sql::DELIVERIES_TO_DELETE,
                &next,
                batch,
                after,
            )
            .await?;
            next.deliveries = walk;
            let seqs: Vec<i64> = locked.try_get("seqs").map_err(backend)?;
            if !seqs.is_empty() {
                let ids: Vec<String> = locked.try_get("ids").map_err(backend)?;
                let with_attempts: i64 = sqlx::query_scalar(retention_sql::DELIVERIES)
                    .bind(&seqs)
                    .bind(&ids)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(backend)?;
                deleted += u64::try_from(with_attempts).unwrap_or(0);
            }
        }
        // Events once every delivery of the round has been looked at.
        if let (Walk::Done, Walk::After(after)) = (next.deliveries, next.events) {
            let (walk, locked) = window(
                &mut tx,
                retention_sql::EVENTS_TO_DELETE,
                &next,
                batch,
                after,
            )
            .await?;
            next.events = walk;
            let seqs: Vec<i64> = locked.try_get("seqs").map_err(backend)?;
            if !seqs.is_empty() {
                deleted += sqlx::query(retention_sql::EVENTS)
                    .bind(&seqs)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?
                    .rows_affected();
            }
        }
        // The small tables: each asked until a batch finds fewer rows than
        // it may delete.
        if !next.keys_done {
            let gone = sqlx::query(
                "DELETE FROM idempotency_keys WHERE (account_id, key) IN (
                SELECT account_id, key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)",
            )
            .bind(next.keys_before)
            .bind(limit)
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
            next.keys_done = gone < u64::from(batch);
            deleted += gone;
        }
        if !next.sessions_done {
            let gone = sqlx::query(
                "DELETE FROM dashboard_sessions WHERE token_hash IN (
                SELECT token_hash FROM dashboard_sessions WHERE expires_at <= $1
                ORDER BY expires_at LIMIT $2)",
            )
            .bind(next.sessions_at)
            .bind(limit)
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
            next.sessions_done = gone < u64::from(batch);
            deleted += gone;
        }
        tx.commit().await.map_err(backend)?;
        *round = next;
        Ok(deleted)
    }

    fn purge_pause(&self, took: Duration) -> Duration {
        crate::store::retention::pause_in_proportion(took)
    }
}
