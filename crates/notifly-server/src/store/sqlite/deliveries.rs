//! Deliveries: an event's fan-out and hand-off, attempts as the API
//! shows them, retries and recovery.

use super::*;

/// A pending delivery of `e` to one of the account's endpoints. The endpoint
/// must belong to the account: otherwise nothing is written and it is an
/// error, so one account's event can never go to another's endpoint.
pub(super) fn insert_delivery(
    c: &Connection,
    account: &str,
    e: &EventRecord,
    endpoint_id: &str,
) -> StoreResult<String> {
    let id = crate::ids::new_id();
    let done = exec(
        c,
        "INSERT INTO deliveries (id, account_id, endpoint_id, event_id, event_type, status, next_attempt_ms, created_at, updated_at, resource_id)
         SELECT ?, account_id, id, ?, ?, 'pending', ?, ?, ?, ? FROM endpoints WHERE id = ? AND account_id = ?",
        params![
            id,
            e.id,
            e.event_type,
            crate::ids::now_ms(),
            e.created_at,
            e.created_at,
            e.resource_id,
            endpoint_id,
            account,
        ],
    )
    .map_err(sqlite)?;
    if done != 1 {
        return Err(StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows));
    }
    Ok(id)
}

/// An endpoint an event goes to, with what sending to it needs.
struct Target {
    id: String,
    url: String,
    secret: String,
    previous_secret: Option<String>,
    previous_secret_expires_at: Option<i64>,
    headers: Option<String>,
    /// Its content filter, as stored.
    filter: Option<String>,
    ordered: bool,
    failing: bool,
    /// Its deliveries wait for a claim: its circuit is not closed, it is
    /// rate-limited or throttled, or an earlier delivery it must follow is
    /// pending.
    held: bool,
}

/// Inserts one pending delivery of `e` per endpoint in `endpoints` (the
/// account's endpoints, just read), in as few statements as SQLite's
/// variable limit allows. With a hand-off, each delivery whose endpoint has
/// a free slot is leased to this process and staged for the dispatcher;
/// the others are left for claims.
fn fan_out(
    tx: &mut WriterGuard,
    account: &str,
    e: &EventRecord,
    endpoints: &[Target],
) -> StoreResult<()> {
    let now_ms = crate::ids::now_ms();
    let hand_off = tx.hand_off();
    let (lease_until_ms, owner) = match &hand_off {
        Some(h) => (Some(now_ms + h.lease_ms()), Some(h.owner().to_owned())),
        None => (None, None),
    };
    let body = axum::body::Bytes::from(e.body.clone());
    let mut ready = Vec::new();
    for chunk in endpoints.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<(String, bool)> = chunk
            .iter()
            .map(|t| {
                let leased = hand_off
                    .as_ref()
                    .is_some_and(|h| !t.held && h.reserve(&t.id, t.failing));
                (crate::ids::new_id(), leased)
            })
            .collect();
        let mut values: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 12);
        for ((id, leased), t) in rows.iter().zip(chunk) {
            let (lease_until_ms, owner): (&dyn ToSql, &dyn ToSql) = if *leased {
                (&lease_until_ms, &owner)
            } else {
                (&rusqlite::types::Null, &rusqlite::types::Null)
            };
            values.extend([
                id as &dyn ToSql,
                &account,
                &t.id,
                &e.id,
                &e.event_type,
                &"pending",
                &now_ms,
                &e.created_at,
                &e.created_at,
                lease_until_ms,
                owner,
                &e.resource_id,
            ]);
        }
        let done = exec(
            tx,
            &format!(
                "INSERT INTO deliveries (id, account_id, endpoint_id, event_id, event_type, status, next_attempt_ms, created_at, updated_at, lease_until_ms, lease_owner, resource_id) VALUES {}",
                value_rows(chunk.len(), 12)
            ),
            params_from_iter(values),
        );
        for ((id, leased), t) in rows.into_iter().zip(chunk) {
            if !leased {
                // One held for a claim (rate limit, throttle, order) is
                // not waiting for a slot: it leaves work for a claim but
                // does not count towards pacing the writer.
                if hand_off.is_some() && !t.held {
                    tx.stage_queued(&t.id);
                } else {
                    tx.claimable = true;
                }
                continue;
            }
            let claimed = Claimed {
                delivery_id: id,
                account_id: account.to_owned(),
                endpoint_id: t.id.clone(),
                event_id: e.id.clone(),
                event_type: e.event_type.clone(),
                attempt: 1,
                schedule_pos: 0,
                url: t.url.clone(),
                secret: t.secret.clone(),
                previous_secret: t.previous_secret.clone(),
                previous_secret_expires_at: t.previous_secret_expires_at,
                headers: t.headers.clone(),
                body: String::new(),
                ordered: t.ordered,
                traceparent: e.traceparent.clone(),
            };
            ready.push((claimed, body.clone()));
        }
        // Staged even on failure, so that rolling the write back frees the slots.
        tx.stage(std::mem::take(&mut ready));
        done.map_err(sqlite)?;
    }
    Ok(())
}

#[async_trait]
impl<C> AttemptReads for Handle<C>
where
    C: DerefMut<Target = Connection> + Send,
{
    async fn attempts(
        &mut self,
        account: &str,
        delivery_id: &str,
    ) -> StoreResult<Vec<AttemptRecord>> {
        let columns = qualified(ATTEMPT_COLUMNS, "a");
        all(
            &self.0,
            &format!(
                "SELECT {columns} FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
                 WHERE d.account_id = ? AND a.delivery_id = ? ORDER BY a.seq"
            ),
            [account, delivery_id],
            AttemptRecord::decode,
        )
    }

    async fn attempt_buckets(
        &mut self,
        account: &str,
        endpoint_id: &str,
        since_ms: i64,
        bucket_ms: i64,
    ) -> StoreResult<Vec<AttemptBucket>> {
        all(
            &self.0,
            "SELECT (a.started_at_ms - ?1) / ?2 AS bucket, COUNT(*) AS attempts,
                    SUM(CASE WHEN a.succeeded THEN 1 ELSE 0 END) AS succeeded,
                    SUM(a.duration_ms) AS total_duration_ms,
                    MAX(a.duration_ms) AS max_duration_ms
             FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
             WHERE d.account_id = ?3 AND d.endpoint_id = ?4 AND a.started_at_ms >= ?1
             GROUP BY 1 ORDER BY 1",
            params![since_ms, bucket_ms.max(1), account, endpoint_id],
            AttemptBucket::decode,
        )
    }

    async fn last_attempt_at(
        &mut self,
        account: &str,
        endpoint_id: &str,
    ) -> StoreResult<Option<i64>> {
        scalar(
            &self.0,
            "SELECT MAX(last_attempt_at) FROM deliveries WHERE account_id = ? AND endpoint_id = ?",
            [account, endpoint_id],
        )
    }
}

#[async_trait]
impl DeliveryWrites for Handle<WriterGuard> {
    async fn retry_delivery(&mut self, account: &str, id: &str, now_ms: i64) -> StoreResult<bool> {
        let done = exec(
            &self.0,
            "UPDATE deliveries SET status = 'pending', next_attempt_ms = ?1, schedule_pos = 0,
                lease_until_ms = NULL, lease_owner = NULL, updated_at = ?2
             WHERE account_id = ?3 AND id = ?4 AND (lease_until_ms IS NULL OR lease_until_ms <= ?1)",
            params![now_ms, now_ms / 1000, account, id],
        )
        .map_err(sqlite)?;
        self.0.claimable |= done > 0;
        Ok(done > 0)
    }

    async fn recover_deliveries(
        &mut self,
        account: &str,
        endpoint_id: &str,
        since: i64,
        now_ms: i64,
    ) -> StoreResult<u64> {
        let done = exec(
            &self.0,
            "UPDATE deliveries SET status = 'pending', next_attempt_ms = ?, schedule_pos = 0,
                lease_until_ms = NULL, lease_owner = NULL, updated_at = ?
             WHERE account_id = ? AND endpoint_id = ? AND status = 'failed' AND created_at >= ?",
            params![now_ms, now_ms / 1000, account, endpoint_id, since],
        )
        .map_err(sqlite)?;
        self.0.claimable |= done > 0;
        Ok(done as u64)
    }
}

/// Fans out an event just appended (see [`EventWrites::insert_event`]):
/// one pending delivery per enabled endpoint subscribed to its type.
/// Returns how many.
/// to the account's enabled endpoints subscribed to its type.
/// A resource event goes to those subscribed by name or to `"*"`; an
/// operational event (`about` names the endpoint it concerns) to those
/// subscribed by name, that endpoint aside.
pub(super) fn fan_out_event(
    c: &mut WriterGuard,
    account: &str,
    e: &EventRecord,
    about: Option<&str>,
) -> StoreResult<u64> {
    let audience = match about {
        None => "s.event_type IN (?2, '*')",
        Some(_) => "s.event_type = ?2 AND e.id <> ?5",
    };
    let now_ms = crate::ids::now_ms();
    let mut values: Vec<&dyn ToSql> = vec![&account, &e.event_type, &now_ms, &e.resource_id];
    if let Some(about) = &about {
        values.push(about);
    }
    let endpoints: Vec<Target> = all(
        c,
        // Held for a claim: an endpoint whose circuit is not closed,
        // that is rate-limited or throttled (claims keep count), or
        // ordered with a delivery about the same resource pending.
        &format!("SELECT e.id, e.url, e.secret, e.previous_secret, e.previous_secret_expires_at,
                e.ordering <> 'none', e.failing_since IS NOT NULL,
                e.circuit <> 'closed' OR e.rate_limit IS NOT NULL OR COALESCE(e.throttled_until_ms, 0) > ?3
                OR (e.ordering <> 'none' AND EXISTS (
                    SELECT 1 FROM deliveries p INDEXED BY deliveries_resource
                    WHERE p.endpoint_id = e.id AND p.resource_id = ?4 AND p.status = 'pending')),
                e.headers, e.filter
         FROM endpoints e WHERE e.account_id = ?1 AND e.enabled = 1
           AND EXISTS (SELECT 1 FROM endpoint_events s WHERE s.endpoint_id = e.id AND {audience})"),
        params_from_iter(values),
        |row| {
            Ok(Target {
                id: row.get(0)?,
                url: row.get(1)?,
                secret: row.get(2)?,
                previous_secret: row.get(3)?,
                previous_secret_expires_at: row.get(4)?,
                ordered: row.get(5)?,
                failing: row.get(6)?,
                held: row.get(7)?,
                headers: row.get(8)?,
                filter: row.get(9)?,
            })
        },
    )?;
    let endpoints = crate::store::passing_filters(endpoints, |t| &t.id, |t| t.filter.as_deref(), e);
    fan_out(c, account, e, &endpoints)?;
    Ok(endpoints.len() as u64)
}
