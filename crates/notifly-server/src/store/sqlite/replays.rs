//! Replays.

use super::deliveries::insert_delivery;
use super::*;

#[async_trait]
impl<C> ReplayReads for Handle<C>
where
    C: DerefMut<Target = Connection> + Send,
{
    async fn replay(&mut self, account: &str, id: &str) -> StoreResult<Option<ReplayRecord>> {
        self.get(account, id).await
    }

    async fn replays_of(
        &mut self,
        account: &str,
        endpoint_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<ReplayRecord>> {
        all(
            &self.0,
            &format!(
                "SELECT {REPLAY_COLUMNS} FROM replays WHERE account_id = ? AND endpoint_id = ?
                 ORDER BY created_at DESC, id DESC LIMIT ?"
            ),
            params![account, endpoint_id, i64::from(limit)],
            ReplayRecord::decode,
        )
    }

    async fn active_replays(&mut self, limit: u32) -> StoreResult<Vec<ReplayRecord>> {
        all(
            &self.0,
            &format!(
                "SELECT {REPLAY_COLUMNS} FROM replays WHERE status IN ('queued', 'running')
                 ORDER BY updated_at LIMIT ?"
            ),
            [i64::from(limit)],
            ReplayRecord::decode,
        )
    }

    async fn event_before(&mut self, account: &str, at: i64) -> StoreResult<Option<String>> {
        // From the newest back: reads the window, not the whole log.
        one(
            &self.0,
            "SELECT id FROM events WHERE account_id = ? AND is_test = 0 AND created_at < ?
             ORDER BY seq DESC LIMIT 1",
            params![account, at],
            |row| row.get(0),
        )
    }

    async fn pending_deliveries(&mut self, endpoint_id: &str, cap: i64) -> StoreResult<i64> {
        scalar(
            &self.0,
            "SELECT COUNT(*) FROM (SELECT 1 FROM deliveries INDEXED BY deliveries_queue
                                   WHERE endpoint_id = ? AND status = 'pending' LIMIT ?)",
            params![endpoint_id, cap],
        )
    }
}

#[async_trait]
impl ReplayWrites for Handle<WriterGuard> {
    async fn insert_replay(&mut self, account: &str, replay: &ReplayRecord) -> StoreResult<()> {
        self.insert(account, replay).await
    }

    async fn advance_replay(
        &mut self,
        account: &str,
        r: &ReplayRecord,
        from: Option<&str>,
    ) -> StoreResult<bool> {
        let done = exec(
            &self.0,
            "UPDATE replays SET status = ?, sent = ?, cursor = ?, cursor_at = ?, updated_at = ?
             WHERE account_id = ? AND id = ? AND status IN ('queued', 'running') AND cursor IS ?",
            params![
                r.status,
                r.sent,
                r.cursor,
                r.cursor_at,
                r.updated_at,
                account,
                r.id,
                from
            ],
        )
        .map_err(sqlite)?;
        Ok(done == 1)
    }

    async fn end_replay(
        &mut self,
        account: &str,
        id: &str,
        status: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let done = exec(
            &self.0,
            "UPDATE replays SET status = ?, updated_at = ?
             WHERE account_id = ? AND id = ? AND status IN ('queued', 'running')",
            params![status, now, account, id],
        )
        .map_err(sqlite)?;
        Ok(done == 1)
    }

    async fn insert_replayed_delivery(
        &mut self,
        account: &str,
        e: &EventRecord,
        endpoint_id: &str,
    ) -> StoreResult<String> {
        self.0.claimable = true;
        insert_delivery(&self.0, account, e, endpoint_id)
    }
}
