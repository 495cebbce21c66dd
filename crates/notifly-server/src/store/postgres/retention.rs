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
}
