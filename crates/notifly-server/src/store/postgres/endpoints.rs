//! Webhook endpoints, their subscriptions and their stored keys.

use super::*;

/// Rewrites an endpoint's subscription rows from its `events`.
async fn set_subscription(conn: &mut PgConnection, ep: &EndpointRecord) -> StoreResult<()> {
    sqlx::query("DELETE FROM endpoint_events WHERE endpoint_id = $1")
        .bind(&ep.id)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    for event_type in ep.events.iter() {
        sqlx::query("INSERT INTO endpoint_events (endpoint_id, event_type) VALUES ($1, $2)")
            .bind(&ep.id)
            .bind(event_type)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    Ok(())
}

#[async_trait]
impl EndpointKeys for PgStore {
    async fn endpoint_keys(&self, after: &str, limit: u32) -> StoreResult<Vec<StoredKeys>> {
        sqlx::query_as(
            "SELECT id AS endpoint_id, secret, previous_secret, headers FROM endpoints
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.work)
        .await
        .map_err(backend)
    }

    async fn replace_endpoint_keys(
        &self,
        before: &StoredKeys,
        after: &StoredKeys,
    ) -> StoreResult<bool> {
        let replaced = sqlx::query(
            "UPDATE endpoints SET secret = $1, previous_secret = $2, headers = $6
             WHERE id = $3 AND secret = $4 AND previous_secret IS NOT DISTINCT FROM $5
               AND headers IS NOT DISTINCT FROM $7",
        )
        .bind(&after.secret)
        .bind(&after.previous_secret)
        .bind(&before.endpoint_id)
        .bind(&before.secret)
        .bind(&before.previous_secret)
        .bind(&after.headers)
        .bind(&before.headers)
        .execute(&self.work)
        .await
        .map_err(backend)?;
        Ok(replaced.rows_affected() == 1)
    }
}

#[async_trait]
impl<C> EndpointReads for Handle<C>
where
    C: Scope,
{
    async fn endpoint(&mut self, account: &str, id: &str) -> StoreResult<Option<EndpointRecord>> {
        // In a write transaction the account's endpoint lock stands in for
        // a row lock: a write-back locks deliveries, then endpoints, and a
        // row lock taken here first (before cancelling deliveries) would
        // be the opposite order.
        self.0.lock_endpoints(account, true).await?;
        get_locked(&mut self.0, "endpoints", ENDPOINT_COLUMNS, account, id, "").await
    }

    async fn list_endpoints(
        &mut self,
        account: &str,
        page: &Page,
    ) -> StoreResult<Listed<EndpointRecord>> {
        self.list(account, &[], page).await
    }
}

#[async_trait]
impl EndpointWrites for Handle<PgTx> {
    async fn insert_endpoint(&mut self, account: &str, ep: &EndpointRecord) -> StoreResult<()> {
        self.0.lock_endpoints(account, true).await?;
        sqlx::query(&format!(
            "INSERT INTO endpoints (account_id, {ENDPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
        ))
        .bind(account)
        .bind(&ep.id)
        .bind(&ep.name)
        .bind(&ep.url)
        .bind(&ep.description)
        .bind(&ep.events)
        .bind(ep.enabled)
        .bind(&ep.disabled_reason)
        .bind(&ep.secret)
        .bind(&ep.previous_secret)
        .bind(ep.previous_secret_expires_at)
        .bind(ep.failing_since)
        .bind(ep.created_at)
        .bind(ep.updated_at)
        .bind(&ep.signature_scheme)
        .bind(&ep.circuit)
        .bind(ep.circuit_since)
        .bind(ep.rate_limit)
        .bind(&ep.ordering)
        .bind(&ep.headers)
        .bind(&ep.filter)
        .execute(&mut *self.0)
        .await
        .map_err(unique("endpoint name"))?;
        // Its slots, so that its first deliveries can be handed off.
        if let Some(h) = &self.0.staged.hand_off {
            sqlx::query(
                "INSERT INTO endpoint_slots (endpoint_id, n) SELECT $1, g FROM generate_series(0, $2 - 1) g",
            )
            .bind(&ep.id)
            .bind(h.per_endpoint() as i32)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        }
        set_subscription(&mut self.0, ep).await
    }

    async fn update_endpoint(&mut self, account: &str, ep: &EndpointRecord) -> StoreResult<()> {
        self.0.lock_endpoints(account, true).await?;
        let updated = sqlx::query(
            "UPDATE endpoints SET name = $1, url = $2, description = $3, events = $4, enabled = $5, disabled_reason = $6,
                secret = $7, previous_secret = $8, previous_secret_expires_at = $9, failing_since = $10, updated_at = $11,
                signature_scheme = $12, rate_limit = $17, ordering = $18, headers = $19, filter = $20,
                -- A new URL, or enabling it again, ends a pause its old
                -- answers asked for.
                throttled_until_ms = CASE WHEN url <> $2 OR (NOT enabled AND $5) THEN NULL ELSE throttled_until_ms END,
                -- An update only closes the circuit (URL changed, enabled
                -- again), and closing it starts its count over.
                consecutive_failures = CASE WHEN $15 = 'closed' AND circuit <> 'closed' THEN 0 ELSE consecutive_failures END,
                probe_at_ms = CASE WHEN $15 = 'closed' AND circuit <> 'closed' THEN NULL ELSE probe_at_ms END,
                probe_interval_ms = CASE WHEN $15 = 'closed' AND circuit <> 'closed' THEN NULL ELSE probe_interval_ms END,
                circuit_since = CASE WHEN $15 = 'closed' AND circuit <> 'closed' THEN $16 ELSE circuit_since END,
                circuit = CASE WHEN $15 = 'closed' THEN 'closed' ELSE circuit END
             WHERE account_id = $13 AND id = $14",
        )
        .bind(&ep.name)
        .bind(&ep.url)
        .bind(&ep.description)
        .bind(&ep.events)
        .bind(ep.enabled)
        .bind(&ep.disabled_reason)
        .bind(&ep.secret)
        .bind(&ep.previous_secret)
        .bind(ep.previous_secret_expires_at)
        .bind(ep.failing_since)
        .bind(ep.updated_at)
        .bind(&ep.signature_scheme)
        .bind(account)
        .bind(&ep.id)
        .bind(&ep.circuit)
        .bind(ep.circuit_since)
        .bind(ep.rate_limit)
        .bind(&ep.ordering)
        .bind(&ep.headers)
        .bind(&ep.filter)
        .execute(&mut *self.0)
        .await
        .map_err(unique("endpoint name"))?;
        // Another account's endpoint id matches nothing, and keeps its subscription.
        if updated.rows_affected() == 0 {
            return Ok(());
        }
        // Enabled again, its pending deliveries are claimable.
        self.0.claimable |= ep.enabled;
        set_subscription(&mut self.0, ep).await
    }

    async fn delete_endpoint(&mut self, account: &str, id: &str) -> StoreResult<()> {
        self.0.lock_endpoints(account, true).await?;
        sqlx::query(
            "UPDATE deliveries SET status = 'cancelled', next_attempt_ms = NULL, updated_at = $1
             WHERE account_id = $2 AND endpoint_id = $3 AND status = 'pending'",
        )
        .bind(crate::ids::now())
        .bind(account)
        .bind(id)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        // Its subscription goes with it (ON DELETE CASCADE).
        sqlx::query("DELETE FROM endpoints WHERE account_id = $1 AND id = $2")
            .bind(account)
            .bind(id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
