//! Deleting what is past retention.

use super::*;

/// The purge's statements on the big tables (`$1`: the cutoff, Unix
/// seconds; `$2`: the batch). At 30 days of retention the tables hold
/// hundreds of millions of rows: a statement the planner answers with a
/// scan of a whole table takes seconds a batch (docs/benchmarks.md, the
/// 10-million-attempt measurement).
/// `tests/it/postgres_plans.rs` checks the deliveries' plan.
pub mod retention_sql {
    /// The purge's planner settings, for its transaction: not the
    /// dispatcher's (`dispatcher_sql::SESSION`, on the same connections).
    /// These statements were measured with plans made for their
    /// parameters, and the idempotency keys' has no index to take instead
    /// of a scan.
    pub const SETTINGS: &str = "SELECT set_config('plan_cache_mode', 'force_custom_plan', true),
                set_config('enable_seqscan', 'on', true)";

    /// Finished deliveries past retention, oldest first, locked; each
    /// `seq` and `id`. One retried by hand meanwhile (pending again) is
    /// locked by the retry, so skipped, not deleted.
    pub const DELIVERIES_TO_DELETE: &str = "SELECT seq, id FROM deliveries
                WHERE created_at < $1 AND status <> 'pending'
                ORDER BY seq LIMIT $2
                FOR UPDATE SKIP LOCKED";

    /// Deletes the deliveries [`DELIVERIES_TO_DELETE`] locked (`$1`: their
    /// `seq`s, `$2`: their ids) with their attempts; returns how many rows
    /// went. A statement of its own, so that its snapshot has every attempt
    /// written back before the lock (no foreign key would catch one it
    /// missed: migration 0019), and none can be written while it holds.
    pub const DELIVERIES: &str =
        "WITH a AS (DELETE FROM attempts WHERE delivery_id = ANY($2) RETURNING 1),
             gone AS (DELETE FROM deliveries WHERE seq = ANY($1) RETURNING 1)
             SELECT (SELECT COUNT(*) FROM a) + (SELECT COUNT(*) FROM gone)";

    /// Events past retention with no delivery left, oldest first, locked
    /// (`$1`: the cutoff, `$2`: the batch). Still a scan of the table when
    /// the planner expects few to match (0.3 s a batch at a million
    /// events): a window of the oldest events read by `seq` would be cheap,
    /// but events held by pending deliveries (an endpoint disabled with
    /// work pending keeps it forever) could fill any window and stop the
    /// purge for good.
    pub const EVENTS_TO_DELETE: &str = "SELECT e.seq FROM events e
                WHERE e.created_at < $1 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
                ORDER BY e.seq LIMIT $2
                FOR UPDATE SKIP LOCKED";

    /// Deletes the events [`EVENTS_TO_DELETE`] locked (`$1`) that still have
    /// no delivery. No foreign key keeps a delivery's event (migration
    /// 0019): a replay makes deliveries of old events, reading each event
    /// `FOR KEY SHARE` first. One that committed after the lock's snapshot
    /// is seen by this statement's; none can start while the lock holds.
    pub const EVENTS: &str = "DELETE FROM events e WHERE e.seq = ANY($1)
                AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)";
}

#[async_trait]
impl Retention for PgStore {
    async fn purge(
        &self,
        before: i64,
        keys_before: i64,
        sessions_at: i64,
        batch: u32,
    ) -> StoreResult<u64> {
        // Oldest first, a bounded number of rows per statement, in one short
        // transaction; finished deliveries (with their attempts) first, so
        // that their events may go in the same batch.
        let statements = [
            (
                "DELETE FROM idempotency_keys WHERE (account_id, key) IN (
                SELECT account_id, key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)",
                keys_before,
            ),
            (
                "DELETE FROM dashboard_sessions WHERE token_hash IN (
                SELECT token_hash FROM dashboard_sessions WHERE expires_at <= $1
                ORDER BY expires_at LIMIT $2)",
                sessions_at,
            ),
        ];
        let mut tx = self.begin_work().await?;
        sqlx::query(retention_sql::SETTINGS)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let finished: Vec<(i64, String)> = sqlx::query_as(retention_sql::DELIVERIES_TO_DELETE)
            .bind(before)
            .bind(i64::from(batch))
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        let mut deleted = 0;
        if !finished.is_empty() {
            let (seqs, ids): (Vec<i64>, Vec<String>) = finished.into_iter().unzip();
            let with_attempts: i64 = sqlx::query_scalar(retention_sql::DELIVERIES)
                .bind(&seqs)
                .bind(&ids)
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
            deleted = u64::try_from(with_attempts).unwrap_or(0);
        }
        let events: Vec<i64> = sqlx::query_scalar(retention_sql::EVENTS_TO_DELETE)
            .bind(before)
            .bind(i64::from(batch))
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        if !events.is_empty() {
            deleted += sqlx::query(retention_sql::EVENTS)
                .bind(&events)
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected();
        }
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
}
