//! Webhook endpoints, their subscriptions and their stored keys.

use super::*;

/// Rewrites an endpoint's subscription rows from its `events`.
fn set_subscription(c: &Connection, ep: &EndpointRecord) -> StoreResult<()> {
    exec(
        c,
        "DELETE FROM endpoint_events WHERE endpoint_id = ?",
        [&ep.id],
    )
    .map_err(sqlite)?;
    for event_type in ep.events.iter() {
        exec(
            c,
            "INSERT INTO endpoint_events (endpoint_id, event_type) VALUES (?, ?)",
            [&ep.id, event_type],
        )
        .map_err(sqlite)?;
    }
    Ok(())
}

#[async_trait]
impl EndpointKeys for SqliteStore {
    async fn endpoint_keys(&self, after: &str, limit: u32) -> StoreResult<Vec<StoredKeys>> {
        let conn = self.readers.get().await?;
        all(
            &conn,
            "SELECT id, secret, previous_secret, headers FROM endpoints WHERE id > ? ORDER BY id LIMIT ?",
            params![after, limit],
            |row| {
                Ok(StoredKeys {
                    endpoint_id: row.get(0)?,
                    secret: row.get(1)?,
                    previous_secret: row.get(2)?,
                    headers: row.get(3)?,
                })
            },
        )
    }

    async fn replace_endpoint_keys(
        &self,
        before: &StoredKeys,
        after: &StoredKeys,
    ) -> StoreResult<bool> {
        let tx = self.writer.begin().await?;
        let replaced = exec(
            &tx,
            "UPDATE endpoints SET secret = ?1, previous_secret = ?2, headers = ?6
             WHERE id = ?3 AND secret = ?4 AND previous_secret IS ?5 AND headers IS ?7",
            params![
                after.secret,
                after.previous_secret,
                before.endpoint_id,
                before.secret,
                before.previous_secret,
                after.headers,
                before.headers,
            ],
        )
        .map_err(sqlite)?;
        tx.commit().await?;
        Ok(replaced == 1)
    }
}

#[async_trait]
impl<C> EndpointReads for Handle<C>
where
    C: DerefMut<Target = Connection> + Send,
{
    async fn endpoint(&mut self, account: &str, id: &str) -> StoreResult<Option<EndpointRecord>> {
        self.get(account, id).await
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
impl EndpointWrites for Handle<WriterGuard> {
    async fn insert_endpoint(&mut self, account: &str, ep: &EndpointRecord) -> StoreResult<()> {
        exec(
            &self.0,
            &format!(
                "INSERT INTO endpoints (account_id, {ENDPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            params![
                account,
                ep.id,
                ep.name,
                ep.url,
                ep.description,
                to_json(&ep.events.0)?,
                ep.enabled,
                ep.disabled_reason,
                ep.secret,
                ep.previous_secret,
                ep.previous_secret_expires_at,
                ep.failing_since,
                ep.created_at,
                ep.updated_at,
                ep.signature_scheme,
                ep.circuit,
                ep.circuit_since,
                ep.rate_limit,
                ep.ordering,
                ep.headers,
                ep.filter,
            ],
        )
        .map_err(unique_sqlite("endpoint name"))?;
        set_subscription(&self.0, ep)
    }

    async fn update_endpoint(&mut self, account: &str, ep: &EndpointRecord) -> StoreResult<()> {
        let updated = exec(
            &self.0,
            "UPDATE endpoints SET name = ?1, url = ?2, description = ?3, events = ?4, enabled = ?5, disabled_reason = ?6,
                secret = ?7, previous_secret = ?8, previous_secret_expires_at = ?9, failing_since = ?10, updated_at = ?11,
                signature_scheme = ?12, rate_limit = ?17, ordering = ?18, headers = ?19, filter = ?20,
                -- A new URL, or enabling it again, ends a pause its old
                -- answers asked for.
                throttled_until_ms = CASE WHEN url <> ?2 OR (NOT enabled AND ?5) THEN NULL ELSE throttled_until_ms END,
                -- An update only closes the circuit (URL changed, enabled
                -- again), and closing it starts its count over.
                consecutive_failures = CASE WHEN ?15 = 'closed' AND circuit <> 'closed' THEN 0 ELSE consecutive_failures END,
                probe_at_ms = CASE WHEN ?15 = 'closed' AND circuit <> 'closed' THEN NULL ELSE probe_at_ms END,
                probe_interval_ms = CASE WHEN ?15 = 'closed' AND circuit <> 'closed' THEN NULL ELSE probe_interval_ms END,
                circuit_since = CASE WHEN ?15 = 'closed' AND circuit <> 'closed' THEN ?16 ELSE circuit_since END,
                circuit = CASE WHEN ?15 = 'closed' THEN 'closed' ELSE circuit END
             WHERE account_id = ?13 AND id = ?14",
            params![
                ep.name,
                ep.url,
                ep.description,
                to_json(&ep.events.0)?,
                ep.enabled,
                ep.disabled_reason,
                ep.secret,
                ep.previous_secret,
                ep.previous_secret_expires_at,
                ep.failing_since,
                ep.updated_at,
                ep.signature_scheme,
                account,
                ep.id,
                ep.circuit,
                ep.circuit_since,
                ep.rate_limit,
                ep.ordering,
                ep.headers,
                ep.filter,
            ],
        )
        .map_err(unique_sqlite("endpoint name"))?;
        // Another account's endpoint id matches nothing, and keeps its subscription.
        if updated == 0 {
            return Ok(());
        }
        // Enabled again, its pending deliveries are claimable.
        self.0.claimable |= ep.enabled;
        set_subscription(&self.0, ep)
    }

    async fn delete_endpoint(&mut self, account: &str, id: &str) -> StoreResult<()> {
        exec(
            &self.0,
            "UPDATE deliveries SET status = 'cancelled', next_attempt_ms = NULL, lease_until_ms = NULL, lease_owner = NULL, updated_at = ?
             WHERE account_id = ? AND endpoint_id = ? AND status = 'pending'",
            params![crate::ids::now(), account, id],
        )
        .map_err(sqlite)?;
        // Its subscription goes with it (ON DELETE CASCADE).
        self.delete::<EndpointRecord>(account, id).await
    }
}
