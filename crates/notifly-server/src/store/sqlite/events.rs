//! The event log (the outbox), its order for readers, and idempotent responses.

use super::deliveries::{fan_out_event, insert_delivery};
use super::*;

#[async_trait]
impl<C> EventReads for Handle<C>
where
    C: DerefMut<Target = Connection> + Send,
{
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
        self.get(account, id).await
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
        let filters: Vec<Filter> = Filter::optional("event_type", event_type)
            .into_iter()
            .chain([Filter::Bool("is_test", false)])
            .collect();
        self.list(account, &filters, page).await
    }

    async fn has_notices(&mut self) -> StoreResult<bool> {
        Ok(one(&self.0, "SELECT 1 FROM notices LIMIT 1", [], |row| {
            row.get::<_, i64>(0)
        })?
        .is_some())
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
}

#[async_trait]
impl EventWrites for Handle<WriterGuard> {
    async fn insert_event(&mut self, account: &str, e: &EventRecord) -> StoreResult<u64> {
        exec(
            &self.0,
            "INSERT INTO events (account_id, id, event_type, body, created_at, traceparent) VALUES (?, ?, ?, ?, ?, ?)",
            params![account, e.id, e.event_type, e.body, e.created_at, e.traceparent],
        )
        .map_err(sqlite)?;
        fan_out_event(&mut self.0, account, e, None)
    }

    async fn insert_operational_event(
        &mut self,
        account: &str,
        e: &EventRecord,
        about: &str,
    ) -> StoreResult<u64> {
        exec(
            &self.0,
            "INSERT INTO events (account_id, id, event_type, body, created_at, traceparent) VALUES (?, ?, ?, ?, ?, ?)",
            params![account, e.id, e.event_type, e.body, e.created_at, e.traceparent],
        )
        .map_err(sqlite)?;
        fan_out_event(&mut self.0, account, e, Some(about))
    }

    async fn take_notices(&mut self, limit: u32, types: &[&str]) -> StoreResult<Vec<NoticeRecord>> {
        let types = serde_json::to_string(types).map_err(StoreError::Corrupt)?;
        all(
            &self.0,
            "DELETE FROM notices WHERE seq IN (
                SELECT seq FROM notices WHERE event_type IN (SELECT value FROM json_each(?2))
                ORDER BY seq LIMIT ?1)
             RETURNING seq, account_id, endpoint_id, event_type, delivery_id, state, created_at",
            params![i64::from(limit), types],
            |row| {
                Ok(NoticeRecord {
                    seq: row.get(0)?,
                    account_id: row.get(1)?,
                    endpoint_id: row.get(2)?,
                    event_type: row.get(3)?,
                    delivery_id: row.get(4)?,
                    state: row.get(5)?,
                    created_at: row.get(6)?,
                })
            },
        )
        .map(|mut taken| {
            // RETURNING's order is not the statement's.
            taken.sort_by_key(|n: &NoticeRecord| n.seq);
            taken
        })
    }

    async fn insert_event_for_endpoint(
        &mut self,
        account: &str,
        e: &EventRecord,
        endpoint_id: &str,
    ) -> StoreResult<String> {
        exec(
            &self.0,
            "INSERT INTO events (account_id, id, event_type, body, created_at, is_test, traceparent) VALUES (?, ?, ?, ?, ?, 1, ?)",
            params![account, e.id, e.event_type, e.body, e.created_at, e.traceparent],
        )
        .map_err(sqlite)?;
        self.0.claimable = true;
        insert_delivery(&self.0, account, e, endpoint_id)
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
}
