//! Deleting what is past retention.

use super::*;

#[async_trait]
impl Retention for SqliteStore {
    async fn purge(&self, round: &mut PurgeRound, batch: u32) -> StoreResult<u64> {
        if round.finished() {
            return Ok(0);
        }
        let PurgeRound {
            before,
            keys_before,
            sessions_at,
            ..
        } = *round;
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
        // Its statements are no walks: the round is over once a batch
        // finds nothing.
        if deleted == 0 {
            round.finish();
        }
        Ok(deleted)
    }
}
