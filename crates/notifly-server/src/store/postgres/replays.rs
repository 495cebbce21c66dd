//! Replays.

use super::deliveries::insert_delivery;
use super::*;

#[async_trait]
impl<C> ReplayReads for Handle<C>
where
    C: Scope,
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
        sqlx::query_as(&format!(
            "SELECT {REPLAY_COLUMNS} FROM replays WHERE account_id = $1 AND endpoint_id = $2
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(account)
        .bind(endpoint_id)
        .bind(i64::from(limit))
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn active_replays(&mut self, limit: u32) -> StoreResult<Vec<ReplayRecord>> {
        sqlx::query_as(&format!(
            "SELECT {REPLAY_COLUMNS} FROM replays WHERE status IN ('queued', 'running')
             ORDER BY updated_at LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn event_before(&mut self, account: &str, at: i64) -> StoreResult<Option<String>> {
        // From the newest back, in the log's order: reads the window, not
        // the whole log.
        sqlx::query_scalar(
            "SELECT id FROM events WHERE account_id = $1 AND NOT is_test AND created_at < $2
             ORDER BY xid DESC, seq DESC LIMIT 1",
        )
        .bind(account)
        .bind(at)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn pending_deliveries(&mut self, endpoint_id: &str, cap: i64) -> StoreResult<i64> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM deliveries
                                   WHERE endpoint_id = $1 AND status = 'pending' LIMIT $2) p",
        )
        .bind(endpoint_id)
        .bind(cap)
        .fetch_one(&mut *self.0)
        .await
        .map_err(backend)
    }
}

#[async_trait]
impl ReplayWrites for Handle<PgTx> {
    async fn insert_replay(&mut self, account: &str, replay: &ReplayRecord) -> StoreResult<()> {
        self.insert(account, replay).await
    }

    async fn advance_replay(
        &mut self,
        account: &str,
        r: &ReplayRecord,
        from: Option<&str>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE replays SET status = $1, sent = $2, cursor = $3, cursor_at = $8, updated_at = $4
             WHERE account_id = $5 AND id = $6 AND status IN ('queued', 'running')
               AND cursor IS NOT DISTINCT FROM $7",
        )
        .bind(&r.status)
        .bind(r.sent)
        .bind(&r.cursor)
        .bind(r.updated_at)
        .bind(account)
        .bind(&r.id)
        .bind(from)
        .bind(r.cursor_at)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn end_replay(
        &mut self,
        account: &str,
        id: &str,
        status: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE replays SET status = $1, updated_at = $2
             WHERE account_id = $3 AND id = $4 AND status IN ('queued', 'running')",
        )
        .bind(status)
        .bind(now)
        .bind(account)
        .bind(id)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_replayed_delivery(
        &mut self,
        account: &str,
        e: &EventRecord,
        endpoint_id: &str,
    ) -> StoreResult<String> {
        // Under the account's shared endpoint lock, like every fan-out: an
        // endpoint being deleted gets no new delivery.
        self.0.lock_endpoints(account, false).await?;
        self.0.claimable = true;
        insert_delivery(&mut self.0, account, e, endpoint_id).await
    }
}
