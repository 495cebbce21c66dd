//! The event log (the outbox), its order for readers, and idempotent responses.

use super::deliveries::{fan_out_for_claims, insert_delivery, insert_event_with_deliveries};
use super::*;

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

#[async_trait]
impl<C> EventReads for Handle<C>
where
    C: Scope,
{
    async fn has_notices(&mut self) -> StoreResult<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM notices)")
            .fetch_one(&mut *self.0)
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
        self.get(account, id).await
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
}

/// Appends `e` to the account's log (a test event apart from it) with no
/// fan-out, under the account's endpoint lock the caller took.
async fn insert_plain_event(
    tx: &mut PgTx,
    account: &str,
    e: &EventRecord,
    is_test: bool,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO events (account_id, id, event_type, body, created_at, is_test, traceparent)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(account)
    .bind(&e.id)
    .bind(&e.event_type)
    .bind(&e.body)
    .bind(e.created_at)
    .bind(is_test)
    .bind(&e.traceparent)
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    Ok(())
}

#[async_trait]
impl EventWrites for Handle<PgTx> {
    async fn insert_event(&mut self, account: &str, e: &EventRecord) -> StoreResult<u64> {
        insert_event_with_deliveries(&mut self.0, account, e).await
    }

    async fn insert_operational_event(
        &mut self,
        account: &str,
        e: &EventRecord,
        about: &str,
    ) -> StoreResult<u64> {
        // Rare (a state change of an endpoint): the plain way, its
        // deliveries left for a claim, not the hot path's hand-off.
        self.0.lock_endpoints(account, false).await?;
        insert_plain_event(&mut self.0, account, e, false).await?;
        let subscribed: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT e.id, e.filter FROM endpoints e
             WHERE e.account_id = $1 AND e.enabled AND e.id <> $2
               AND EXISTS (SELECT 1 FROM endpoint_events s WHERE s.endpoint_id = e.id AND s.event_type = $3)",
        )
        .bind(account)
        .bind(about)
        .bind(&e.event_type)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)?;
        fan_out_for_claims(&mut self.0, account, e, subscribed).await
    }

    async fn take_notices(&mut self, limit: u32, types: &[&str]) -> StoreResult<Vec<NoticeRecord>> {
        // One publisher at a time across the nodes, so that notices are
        // published in the order they were written; another node's
        // publisher at work takes nothing.
        let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
            .bind(NS_GLOBAL)
            .bind(KEY_NOTICES)
            .fetch_one(&mut *self.0)
            .await
            .map_err(backend)?;
        if !mine {
            return Ok(Vec::new());
        }
        let mut taken: Vec<NoticeRecord> = sqlx::query_as(
            "DELETE FROM notices WHERE seq IN (
                SELECT seq FROM notices WHERE event_type = ANY($2) ORDER BY seq LIMIT $1)
             RETURNING seq, account_id, endpoint_id, event_type, delivery_id, state, created_at",
        )
        .bind(i64::from(limit))
        .bind(types)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)?;
        taken.sort_by_key(|n| n.seq);
        Ok(taken)
    }

    async fn insert_event_for_endpoint(
        &mut self,
        account: &str,
        e: &EventRecord,
        endpoint_id: &str,
    ) -> StoreResult<String> {
        self.0.lock_endpoints(account, false).await?;
        insert_plain_event(&mut self.0, account, e, true).await?;
        self.0.claimable = true;
        insert_delivery(&mut self.0, account, e, endpoint_id).await
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
}
