//! The dispatcher's side of deliveries: claims (and the slots they take),
//! the write-back of attempt results, when work is next due, leases handed
//! back, and queue figures.

use notifly_webhooks::OperationalEventType;

use super::*;

/// What a claim returns per delivery, in [`Claimed`]'s order.
const CLAIMED_SELECT: &str = "SELECT d.id, d.account_id, d.endpoint_id, d.event_id, d.event_type,
        d.attempts + 1, d.schedule_pos, e.url, e.secret, e.previous_secret,
        e.previous_secret_expires_at, ev.body, e.ordering <> 'none', e.headers, ev.traceparent
     FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id JOIN events ev ON ev.id = d.event_id";

/// Leases due deliveries (see [`Store::claim`]), inside the caller's write.
/// With a hand-off, the claimed deliveries take its slots, and no more are
/// claimed than it has free (hand-offs may have taken some since the
/// dispatcher looked).
fn claim(tx: &WriterGuard, r: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
    let hand_off = tx.hand_off();
    let mut r = r.clone();
    if let Some(h) = &hand_off {
        r.max = r.max.min(h.free());
    }
    if r.max == 0 {
        return Ok(Vec::new());
    }
    let r = &r;
    let tx: &Connection = tx;
    // The lease starts once this node holds the writer, not before it waited.
    let now_ms = crate::ids::now_ms();
    let lease_until_ms = now_ms + r.lease_ms;
    // In flight per endpoint, across every node holding a live lease.
    let used: std::collections::HashMap<String, i64> = all(
        tx,
        "SELECT endpoint_id, COUNT(*) FROM deliveries WHERE lease_until_ms IS NOT NULL AND lease_until_ms > ? GROUP BY endpoint_id",
        [now_ms],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?
    .into_iter()
    .collect();
    // Up to `per_endpoint` due, unleased deliveries of each enabled
    // endpoint: one index range per endpoint, so a backlog on one
    // endpoint never hides another's work.
    let candidates: Vec<Candidate> = all(
        tx,
        // CROSS JOIN makes endpoints the outer loop (SQLite keeps the
        // written order), so each endpoint costs one range of
        // `deliveries_queue` instead of a scan of every delivery. An open
        // circuit's deliveries wait until its next probe is due, a
        // throttled endpoint's until its pause ends, and with
        // `per_resource` ordering a delivery waits while an earlier one
        // about the same resource is pending (`deliveries_resource`).
        "SELECT d.id, d.endpoint_id, e.failing_since IS NOT NULL, e.circuit <> 'closed', e.rate_limit, e.rate_tat_us
         FROM endpoints e CROSS JOIN deliveries d
         WHERE e.enabled = 1 AND (e.circuit = 'closed' OR e.probe_at_ms <= ?1)
           AND (e.throttled_until_ms IS NULL OR e.throttled_until_ms <= ?1) AND d.id IN (
            SELECT q.id FROM deliveries q
            WHERE q.endpoint_id = e.id AND q.status = 'pending' AND q.next_attempt_ms <= ?1
              AND (q.lease_until_ms IS NULL OR q.lease_until_ms <= ?1)
              AND (e.ordering = 'none' OR q.resource_id IS NULL OR NOT EXISTS (
                SELECT 1 FROM deliveries p INDEXED BY deliveries_resource
                WHERE p.endpoint_id = q.endpoint_id AND p.resource_id = q.resource_id
                  AND p.status = 'pending' AND p.seq < q.seq))
            ORDER BY q.next_attempt_ms LIMIT ?2)
         ORDER BY d.next_attempt_ms",
        params![now_ms, i64::from(r.per_endpoint)],
        |row| {
            Ok(Candidate {
                id: row.get(0)?,
                endpoint: row.get(1)?,
                failing: row.get(2)?,
                probe: row.get(3)?,
                rate_limit: row.get(4)?,
                rate_tat_us: row.get(5)?,
            })
        },
    )?;
    let probing: std::collections::HashMap<String, String> = candidates
        .iter()
        .filter(|c| c.probe)
        .map(|c| (c.id.clone(), c.endpoint.clone()))
        .collect();
    let Chosen { ids: chosen, rates } = choose_claims(candidates, used, r, now_ms * 1000);
    // A probe half-opens its circuit; if its result never comes (the node
    // died), another may go once its lease has run out.
    for endpoint in chosen.iter().filter_map(|id| probing.get(id)) {
        exec(
            tx,
            "UPDATE endpoints SET circuit = 'half_open', circuit_since = ?, probe_at_ms = ? WHERE id = ?",
            params![now_ms / 1000, lease_until_ms, endpoint],
        )
        .map_err(sqlite)?;
    }
    for (endpoint, tat_us) in &rates {
        exec(
            tx,
            "UPDATE endpoints SET rate_tat_us = ? WHERE id = ?",
            params![tat_us, endpoint],
        )
        .map_err(sqlite)?;
    }
    let mut claimed: Vec<Claimed> = Vec::with_capacity(chosen.len());
    for ids in chosen.chunks(ROWS_PER_STATEMENT) {
        let list = placeholders(ids.len());
        let mut values: Vec<&dyn ToSql> = vec![&lease_until_ms, &r.owner];
        values.extend(ids.iter().map(|id| id as &dyn ToSql));
        exec(
            tx,
            &format!(
                "UPDATE deliveries SET lease_until_ms = ?, lease_owner = ? WHERE id IN ({list})"
            ),
            params_from_iter(values),
        )
        .map_err(sqlite)?;
        claimed.extend(all(
            tx,
            &format!("{CLAIMED_SELECT} WHERE d.id IN ({list})"),
            params_from_iter(ids),
            Claimed::decode,
        )?);
    }
    if let Some(h) = &hand_off {
        for c in &claimed {
            h.occupy(&c.endpoint_id, c.attempt == 1);
        }
    }
    Ok(claimed)
}

/// Records attempts (see [`Store::record_attempts`]), inside the caller's write.
fn record_attempts(
    tx: &Connection,
    results: &[AttemptResult],
    policy: &EndpointPolicy,
) -> StoreResult<u64> {
    let now = crate::ids::now();
    let now_ms = crate::ids::now_ms();
    let disable_after_secs = policy.disable_after_secs;
    let circuits: std::collections::HashMap<&str, CircuitStep> =
        circuit_steps(results).into_iter().collect();
    let exhausting = exhausting(results);
    let mut exhausted: Vec<String> = Vec::new();
    // A handful of statements for the whole batch, not three per result.
    for chunk in results.chunks(ROWS_PER_STATEMENT) {
        let mut headers = Vec::with_capacity(chunk.len());
        for r in chunk {
            let a = &r.attempt;
            let response_headers = match &a.response_headers {
                Some(h) => Some(to_json(&h.0)?),
                None => None,
            };
            headers.push((to_json(&a.request_headers.0)?, response_headers));
        }
        let mut values: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 11);
        for (r, (request_headers, response_headers)) in chunk.iter().zip(&headers) {
            let a = &r.attempt;
            values.extend([
                &a.id as &dyn ToSql,
                &a.delivery_id,
                &a.attempt,
                &a.started_at_ms,
                &a.duration_ms,
                request_headers,
                &a.response_status,
                response_headers,
                &a.response_body,
                &a.error,
                &a.succeeded,
            ]);
        }
        exec(
            tx,
            &format!(
                "INSERT INTO attempts ({ATTEMPT_COLUMNS}) VALUES {}",
                value_rows(chunk.len(), 11)
            ),
            params_from_iter(values),
        )
        .map_err(sqlite)?;

        // A delivery cancelled (endpoint deleted) or retried by hand while
        // in flight keeps its new state; only the lease holder moves it on.
        let steps: Vec<(&str, Option<i64>, Option<i64>, i64)> = chunk
            .iter()
            .map(|r| {
                let (status, next_ms, pos) = r.next.columns();
                (status, next_ms, pos, r.attempt.started_at_ms / 1000)
            })
            .collect();
        let mut values: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 8 + 1);
        for (r, (status, next_ms, pos, at)) in chunk.iter().zip(&steps) {
            let a = &r.attempt;
            values.extend([
                &a.delivery_id as &dyn ToSql,
                &r.owner,
                status,
                &a.attempt,
                next_ms,
                pos,
                at,
                &a.response_status,
            ]);
        }
        values.push(&now);
        let update = format!(
            "WITH r(id, owner, status, attempt, next_ms, pos, at, code) AS (VALUES {})
             UPDATE deliveries SET status = r.status, attempts = MAX(deliveries.attempts, r.attempt),
                next_attempt_ms = r.next_ms, schedule_pos = COALESCE(r.pos, deliveries.schedule_pos),
                lease_until_ms = NULL, lease_owner = NULL, last_attempt_at = r.at,
                last_status_code = r.code, updated_at = ?
             FROM r WHERE deliveries.id = r.id AND deliveries.status = 'pending'
                AND deliveries.lease_owner = r.owner",
            value_rows(chunk.len(), 8)
        );
        if chunk.iter().any(|r| r.next == NextStep::Failed) {
            // The deliveries this moved to `failed` are owed
            // `delivery.exhausted`; those whose lease was lost are not ours.
            let moved: Vec<(String, String)> = all(
                tx,
                &format!("{update} RETURNING deliveries.id, deliveries.status"),
                params_from_iter(values),
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            exhausted.extend(
                moved
                    .into_iter()
                    .filter(|(id, status)| status == "failed" && exhausting.contains(&id.as_str()))
                    .map(|(id, _)| id),
            );
        } else {
            exec(tx, &update, params_from_iter(values)).map_err(sqlite)?;
        }
    }
    let endpoint_ids = changing_endpoints(results);
    let before = endpoint_states(tx, &endpoint_ids)?;
    // Endpoint health, once per endpoint, from the order of its results.
    for (endpoint_id, health) in endpoint_health(results) {
        match health {
            Health::Recovered => {
                // Healthy again, and its circuit closed (both follow the
                // last result).
                exec(
                    tx,
                    "UPDATE endpoints SET failing_since = NULL, consecutive_failures = 0,
                        circuit_since = CASE WHEN circuit <> 'closed' THEN ?1 ELSE circuit_since END,
                        circuit = 'closed', probe_at_ms = NULL, probe_interval_ms = NULL
                     WHERE id = ?2 AND (failing_since IS NOT NULL OR consecutive_failures <> 0 OR circuit <> 'closed')",
                    params![now, endpoint_id],
                )
                .map_err(sqlite)?;
            }
            Health::Failing { since_now } => {
                let sql = if since_now {
                    "UPDATE endpoints SET failing_since = ? WHERE id = ?"
                } else {
                    "UPDATE endpoints SET failing_since = COALESCE(failing_since, ?) WHERE id = ?"
                };
                exec(tx, sql, params![now, endpoint_id]).map_err(sqlite)?;
                if let Some(CircuitStep::Failed { restart, failures }) = circuits.get(endpoint_id) {
                    exec(
                        tx,
                        "UPDATE endpoints SET consecutive_failures = CASE WHEN ?1 THEN 0 ELSE consecutive_failures END + ?2
                         WHERE id = ?3",
                        params![restart, failures, endpoint_id],
                    )
                    .map_err(sqlite)?;
                    // A closed circuit opens at the threshold; a half-open
                    // one (its probe failed) opens again, its next probe
                    // twice as far off.
                    exec(
                        tx,
                        "UPDATE endpoints SET
                            probe_interval_ms = CASE WHEN circuit = 'half_open'
                                THEN MIN(COALESCE(probe_interval_ms, ?1) * 2, ?2) ELSE ?1 END,
                            probe_at_ms = ?3 + CASE WHEN circuit = 'half_open'
                                THEN MIN(COALESCE(probe_interval_ms, ?1) * 2, ?2) ELSE ?1 END,
                            circuit_since = ?4, circuit = 'open'
                         WHERE id = ?5 AND (circuit = 'half_open' OR (circuit = 'closed' AND consecutive_failures >= ?6))",
                        params![
                            FIRST_PROBE_MS,
                            MAX_PROBE_INTERVAL_MS,
                            now_ms,
                            now,
                            endpoint_id,
                            policy.circuit_failures
                        ],
                    )
                    .map_err(sqlite)?;
                }
                exec(
                    tx,
                    "UPDATE endpoints SET enabled = 0, updated_at = ?,
                        disabled_reason = 'failing continuously since ' || strftime('%Y-%m-%dT%H:%M:%SZ', failing_since, 'unixepoch')
                     WHERE id = ? AND enabled = 1 AND failing_since <= ?",
                    params![now, endpoint_id, now - disable_after_secs],
                )
                .map_err(sqlite)?;
            }
        }
    }
    // A receiver that asked to be slowed down gets nothing until its pause
    // ends, on any node (a later answer never shortens it).
    for (endpoint_id, until_ms) in endpoint_throttles(results) {
        exec(
            tx,
            "UPDATE endpoints SET throttled_until_ms = MAX(COALESCE(throttled_until_ms, 0), ?) WHERE id = ?",
            params![until_ms, endpoint_id],
        )
        .map_err(sqlite)?;
    }
    for r in results {
        if let Some(reason) = &r.disable {
            exec(
                tx,
                "UPDATE endpoints SET enabled = 0, disabled_reason = ?, updated_at = ? WHERE id = ? AND enabled = 1",
                params![reason, now, r.endpoint_id],
            )
            .map_err(sqlite)?;
        }
    }
    // What the account hears of, in the same transaction.
    let after = endpoint_states(tx, &endpoint_ids)?;
    let mut notices = 0;
    for (endpoint, event_type) in endpoint_notices(&before, &after) {
        notices += exec(
            tx,
            "INSERT INTO notices (account_id, endpoint_id, event_type, state, created_at) VALUES (?, ?, ?, ?, ?)",
            params![endpoint.account_id, endpoint.id, event_type.as_str(), endpoint.json(), now],
        )
        .map_err(sqlite)? as u64;
    }
    for id in &exhausted {
        notices += exec(
            tx,
            "INSERT INTO notices (account_id, endpoint_id, event_type, delivery_id, created_at)
             SELECT account_id, endpoint_id, ?, id, ? FROM deliveries WHERE id = ?",
            params![OperationalEventType::DeliveryExhausted.as_str(), now, id],
        )
        .map_err(sqlite)? as u64;
    }
    Ok(notices)
}

/// The state of these endpoints that operational events follow.
fn endpoint_states(tx: &Connection, ids: &[&str]) -> StoreResult<Vec<EndpointState>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        out.extend(all(
            tx,
            &format!(
                "SELECT {ENDPOINT_STATE_COLUMNS} FROM endpoints WHERE id IN ({})",
                placeholders(chunk.len())
            ),
            params_from_iter(chunk),
            |row| {
                Ok(EndpointState {
                    id: row.get(0)?,
                    account_id: row.get(1)?,
                    enabled: row.get(2)?,
                    circuit: row.get(3)?,
                    disabled_reason: row.get(4)?,
                    circuit_since: row.get(5)?,
                })
            },
        )?);
    }
    Ok(out)
}

#[async_trait]
impl DeliveryQueue for SqliteStore {
    async fn claim(&self, r: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
        let tx = self.writer.begin().await?;
        let hand_off = tx.hand_off();
        let claimed = claim(&tx, r)?;
        if let Err(e) = tx.commit().await {
            // The leases were rolled back: so are the slots they took.
            if let Some(h) = hand_off {
                for c in &claimed {
                    h.unoccupy(&c.endpoint_id, c.attempt == 1);
                }
            }
            return Err(e);
        }
        Ok(claimed)
    }

    async fn record_attempts(
        &self,
        results: &[AttemptResult],
        policy: &EndpointPolicy,
    ) -> StoreResult<u64> {
        let tx = self.writer.begin().await?;
        let notices = record_attempts(&tx, results, policy)?;
        tx.commit().await?;
        Ok(notices)
    }

    async fn next_due_ms(&self) -> StoreResult<Option<i64>> {
        let conn = self.readers.get().await?;
        // Per enabled endpoint, the head of its queue (not before its
        // throttle or open circuit lets it go; with per-resource ordering,
        // the first delivery not waiting for an earlier one, which wakes
        // the dispatcher when it ends) and its earliest lease: one short
        // index range each, whatever the backlog.
        let (due, lease): (Option<i64>, Option<i64>) = one(
            &conn,
            "SELECT
                MIN(MAX((SELECT d.next_attempt_ms FROM deliveries d INDEXED BY deliveries_queue
                     WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.lease_until_ms IS NULL
                       AND (e.ordering = 'none' OR d.resource_id IS NULL OR NOT EXISTS (
                         SELECT 1 FROM deliveries p INDEXED BY deliveries_resource
                         WHERE p.resource_id = d.resource_id AND p.endpoint_id = d.endpoint_id
                           AND p.status = 'pending' AND p.seq < d.seq))
                     ORDER BY d.next_attempt_ms LIMIT 1),
                    COALESCE(e.throttled_until_ms, 0),
                    CASE WHEN e.circuit = 'open' THEN COALESCE(e.probe_at_ms, 0) ELSE 0 END)),
                MIN((SELECT d.lease_until_ms FROM deliveries d INDEXED BY deliveries_leased
                     WHERE d.endpoint_id = e.id AND d.lease_until_ms IS NOT NULL AND d.status = 'pending'
                     ORDER BY d.lease_until_ms LIMIT 1))
             FROM endpoints e WHERE e.enabled = 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?
        .unwrap_or_default();
        Ok(match (due, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    async fn release_leases(&self, node: &str) -> StoreResult<u64> {
        let tx = self.writer.begin().await?;
        let done = exec(
            &tx,
            "UPDATE deliveries SET lease_until_ms = NULL, lease_owner = NULL
             WHERE lease_until_ms IS NOT NULL AND substr(lease_owner, 1, length(?1) + 1) = ?1 || ':'",
            [node],
        )
        .map_err(sqlite)?;
        tx.commit().await?;
        Ok(done as u64)
    }

    async fn queue_stats(&self, now_ms: i64) -> StoreResult<QueueStats> {
        let conn = self.readers.get().await?;
        let (pending, due, in_flight) = one(
            &conn,
            "SELECT COUNT(*),
                    COALESCE(SUM(next_attempt_ms <= ?1 AND (lease_until_ms IS NULL OR lease_until_ms <= ?1)), 0),
                    COALESCE(SUM(lease_until_ms IS NOT NULL AND lease_until_ms > ?1), 0)
             FROM deliveries WHERE status = 'pending'",
            [now_ms],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?
        .unwrap_or_default();
        let disabled_endpoints: i64 = scalar(
            &conn,
            "SELECT COUNT(*) FROM endpoints WHERE enabled = 0",
            [],
        )?;
        let circuits: Vec<(String, String)> = all(
            &conn,
            "SELECT id, circuit FROM endpoints WHERE circuit <> 'closed' ORDER BY id",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let held_by_circuits: i64 = scalar(
            &conn,
            "SELECT COUNT(*) FROM endpoints e JOIN deliveries d ON d.endpoint_id = e.id
             WHERE e.circuit <> 'closed' AND d.status = 'pending' AND d.next_attempt_ms <= ?1
               AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= ?1)",
            [now_ms],
        )?;
        // The head of each enabled endpoint's queue (skipping the few it
        // has in flight): one short index range per endpoint.
        let oldest_due_ms: Option<i64> = scalar(
            &conn,
            "SELECT MIN((SELECT d.next_attempt_ms FROM deliveries d INDEXED BY deliveries_queue
                         WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_ms <= ?1
                           AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= ?1)
                         ORDER BY d.next_attempt_ms LIMIT 1))
             FROM endpoints e WHERE e.enabled = 1",
            [now_ms],
        )?;
        Ok(QueueStats {
            pending,
            due,
            in_flight,
            disabled_endpoints,
            held_by_circuits,
            circuits,
            oldest_due_ms,
        })
    }
}
