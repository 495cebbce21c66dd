//! Deleting what is past retention.

use super::*;

#[async_trait]
impl Retention for PgStore {
    async fn purge(
        &self,
        before: i64,
        keys_before: i64,
        sessions_at: i64,
        batch: u32,
    ) -> StoreResult<u64> {
        // Oldest first (by `seq`), a bounded number of rows per statement, in
        // one short transaction. Each statement reads its table's oldest rows
        // through its primary key and stops after a batch: at 30 days of
        // retention the tables hold hundreds of millions of rows, and a
        // statement the planner could answer with a scan of one of them
        // took seconds a batch (docs/benchmarks.md, the 10-million-attempt
        // measurement).
        //
        // A finished delivery goes with its attempts, in one statement (the
        // attempts' key to it is checked at the statement's end). It is
        // locked first, so a delivery retried by hand meanwhile (pending
        // again) is skipped, not deleted.
        let deliveries = "WITH d AS (
                SELECT seq, id FROM deliveries
                WHERE created_at < $1 AND status <> 'pending'
                ORDER BY seq LIMIT $2
                FOR UPDATE SKIP LOCKED),
             a AS (DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM d) RETURNING 1),
             gone AS (DELETE FROM deliveries WHERE seq IN (SELECT seq FROM d) RETURNING 1)
             SELECT (SELECT COUNT(*) FROM a) + (SELECT COUNT(*) FROM gone)";
        // An event goes once it has no delivery left: among the oldest events
        // past retention (a window of four batches, read by `seq`), those
        // with none. Events held by a pending delivery at the head of the log
        // hold back no more than the window's worth.
        let statements = [
            (
                "DELETE FROM events WHERE seq IN (
                SELECT w.seq FROM (
                    SELECT seq, id FROM events WHERE created_at < $1 ORDER BY seq LIMIT $2 * 4) w
                WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = w.id)
                ORDER BY w.seq LIMIT $2)",
                before,
            ),
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
        let with_attempts: i64 = sqlx::query_scalar(deliveries)
            .bind(before)
            .bind(i64::from(batch))
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        let mut deleted = u64::try_from(with_attempts).unwrap_or(0);
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
