//! The dispatcher's side of deliveries: claims (and the slots they take),
//! the write-back of attempt results, when work is next due, leases handed
//! back, and queue figures.

use notifly_webhooks::OperationalEventType;

use super::*;

/// The dispatcher's look-ups, which run on every wake-up of every node.
/// Each must be a short index range per enabled endpoint, whatever the
/// backlog: `tests/it/postgres_plans.rs` checks their plans over 100,000
/// pending deliveries.
pub mod dispatcher_sql {
    /// The planner settings of the connections that run these (see
    /// `PgStore::open` for why).
    pub const SESSION: [(&str, &str); 6] = [
        ("plan_cache_mode", "force_generic_plan"),
        ("enable_seqscan", "off"),
        ("jit", "off"),
        ("enable_hashjoin", "off"),
        ("enable_mergejoin", "off"),
        ("enable_bitmapscan", "off"),
    ];

    /// When the next delivery is due, or the earliest lease expires (`$1`:
    /// now, ms): per enabled endpoint, its live leases (its slots naming a
    /// delivery and not expired: a few rows of the slots' key, read in its
    /// order so that the planner takes it however small the table) and the head
    /// of its queue (`deliveries_queue`) past them. Not a `MIN` over every
    /// pending row. A delivery whose lease ran out is in its queue again,
    /// due since its own time. An endpoint's head is not due before its
    /// throttle (429, 502, 504) or its open circuit lets it go; with
    /// per-resource ordering it is the first delivery not waiting for an
    /// earlier one (whose end wakes the dispatcher).
    pub const NEXT_DUE: &str = "SELECT LEAST(MIN(head.due), MIN(leases.until_ms))
         FROM endpoints e
         CROSS JOIN LATERAL (
            SELECT COALESCE(array_agg(s.delivery_id), '{}') AS ids, MIN(s.until_ms) AS until_ms
            FROM (SELECT s.delivery_id, s.until_ms FROM endpoint_slots s
                  WHERE s.endpoint_id = e.id AND s.until_ms > $1 AND s.delivery_id IS NOT NULL
                  ORDER BY s.n) s) leases
         LEFT JOIN LATERAL (
            SELECT GREATEST(d.next_attempt_ms, e.throttled_until_ms,
                        CASE WHEN e.circuit = 'open' THEN e.probe_at_ms END) AS due
            FROM deliveries d
            WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.id <> ALL(leases.ids)
              AND (e.ordering = 'none' OR d.resource_id IS NULL OR NOT EXISTS (
                SELECT 1 FROM deliveries p
                WHERE p.resource_id = d.resource_id AND p.endpoint_id = d.endpoint_id
                  AND p.status = 'pending' AND p.seq < d.seq))
            ORDER BY d.next_attempt_ms LIMIT 1) head ON true
         WHERE e.enabled";

    /// The free slots (`endpoint_slots`, migration 0008) of each endpoint
    /// `$1[i]` below its limit `$2[i]` (`$3`: now, ms), locked for the
    /// claim: a few rows of the primary key each. Slots another transaction
    /// holds are skipped, not waited for (and count as taken).
    ///
    /// Only endpoints that may still be sent to have free slots: each
    /// statement reads its own snapshot (READ COMMITTED), and a write-back
    /// that committed after [`CANDIDATES`] read the endpoint may have
    /// throttled it (429), opened its circuit or disabled it (410) in the
    /// same transaction that freed its slot. Without the check, the slot
    /// would go to a delivery the endpoint now holds.
    pub const FREE_SLOTS: &str = "SELECT w.e, s.n FROM unnest($1::text[], $2::int[]) AS w(e, lim)
         JOIN endpoints e ON e.id = w.e AND e.enabled
            AND (e.throttled_until_ms IS NULL OR e.throttled_until_ms <= $3)
            AND (e.circuit = 'closed' OR e.probe_at_ms <= $3)
         CROSS JOIN LATERAL (
            SELECT s.n FROM endpoint_slots s
            WHERE s.endpoint_id = w.e AND s.n < w.lim AND (s.delivery_id IS NULL OR s.until_ms <= $3)
            ORDER BY s.n
            FOR UPDATE SKIP LOCKED) s";

    /// Up to `$2` due, unleased deliveries of each enabled endpoint (`$1`:
    /// now, ms): one index range per endpoint (LATERAL), so a backlog on one
    /// endpoint never hides another's work. A delivery is leased while a
    /// slot of its endpoint names it and has not expired (read once per
    /// endpoint: a few rows of the slots' key). Rows another transaction holds
    /// are skipped, not waited for.
    /// An open circuit's deliveries wait until its next probe is due, a
    /// throttled endpoint's until its pause ends, and with `per_resource`
    /// ordering a delivery waits while an earlier one about the same
    /// resource is pending (`deliveries_resource`).
    pub const CANDIDATES: &str =
        "SELECT q.id, e.id AS endpoint, e.failing_since IS NOT NULL AS failing,
            e.circuit <> 'closed' AS probe, e.rate_limit, e.rate_tat_us
         FROM endpoints e
         CROSS JOIN LATERAL (
            SELECT COALESCE(array_agg(s.delivery_id), '{}') AS ids
            FROM (SELECT s.delivery_id FROM endpoint_slots s
                  WHERE s.endpoint_id = e.id AND s.until_ms > $1 AND s.delivery_id IS NOT NULL
                  ORDER BY s.n) s) leased
         CROSS JOIN LATERAL (
            SELECT d.id, d.next_attempt_ms FROM deliveries d
            WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_ms <= $1
              AND d.id <> ALL(leased.ids)
              AND (e.ordering = 'none' OR d.resource_id IS NULL OR NOT EXISTS (
                SELECT 1 FROM deliveries p
                WHERE p.endpoint_id = d.endpoint_id AND p.resource_id = d.resource_id
                  AND p.status = 'pending' AND p.seq < d.seq))
            ORDER BY d.next_attempt_ms LIMIT $2
            FOR UPDATE SKIP LOCKED) q
         WHERE e.enabled AND (e.circuit = 'closed' OR e.probe_at_ms <= $1)
           AND (e.throttled_until_ms IS NULL OR e.throttled_until_ms <= $1)
         ORDER BY q.next_attempt_ms";

    /// The statement of `record_plain_attempts`. `$1` to `$6`: per result,
    /// its delivery, lease owner, endpoint, next status, next due time and
    /// schedule position; `$7` to `$16`: its attempt; `$17`: now (s); `$18`:
    /// the endpoints to mark healthy, in id order.
    ///
    /// A delivery moves on only if this result's lease still held it: its
    /// slot, freed here, named it and this owner (`moved` reads what
    /// `slots` freed). A lease that ran out and lost its slot to other
    /// work, or whose delivery was retried by hand (which frees the slot),
    /// has its attempt logged and changes nothing: the delivery is sent
    /// again (at least once). Rows are locked in the order every write-back, claim and endpoint
    /// change takes them: deliveries (in id order), then slots and
    /// endpoints. The sub-statements of a data-modifying `WITH` run in no
    /// set order (PostgreSQL runs those the main query does not read last,
    /// in reverse), so each one that locks rows reads `locked` in a
    /// condition it must pass before it locks any: `locked` has then locked
    /// every delivery of the batch. A deadlock that got past that fails the
    /// statement, and the dispatcher writes the batch again.
    pub const PLAIN_WRITE_BACK: &str = "WITH r AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
                             $8::bigint[], $9::bigint[], $12::bigint[])
            AS r(id, owner, endpoint, status, next_ms, pos, attempt, started_ms, code)),
     locked AS MATERIALIZED (
        SELECT d.id FROM deliveries d WHERE d.id = ANY($1) ORDER BY d.id FOR UPDATE),
     slots AS (
        UPDATE endpoint_slots s SET delivery_id = NULL, owner = NULL, until_ms = NULL
        FROM r
        WHERE s.endpoint_id = ANY($3) AND s.delivery_id = ANY($1)
          AND s.endpoint_id = r.endpoint AND s.delivery_id = r.id AND s.owner = r.owner
          AND (SELECT COUNT(*) FROM locked) >= 0
        RETURNING r.id AS delivery_id),
     attempts AS (
        INSERT INTO attempts (id, delivery_id, attempt, started_at_ms, duration_ms, request_headers,
                              response_status, response_headers, response_body, error, succeeded)
        SELECT * FROM unnest($7::text[], $1::text[], $8::bigint[], $9::bigint[], $10::bigint[],
                             $11::jsonb[], $12::bigint[], $13::jsonb[], $14::text[], $15::text[], $16::bool[])
            AS a(id, delivery_id)
        WHERE a.delivery_id IN (SELECT id FROM locked)),
     moved AS (
        UPDATE deliveries SET status = r.status, attempts = GREATEST(deliveries.attempts, r.attempt),
            next_attempt_ms = r.next_ms, schedule_pos = COALESCE(r.pos, deliveries.schedule_pos),
            last_attempt_at = r.started_ms / 1000, last_status_code = r.code, updated_at = $17
        FROM r
        WHERE deliveries.id = r.id AND deliveries.status = 'pending'
          AND r.id IN (SELECT delivery_id FROM slots) AND r.id IN (SELECT id FROM locked)),
     -- The endpoints to clear, locked, as they are now (a locking read sees
     -- the latest version: a circuit another write-back opened since this
     -- statement's snapshot is seen open, and its closing told).
     failing AS MATERIALIZED (
        SELECT id, circuit FROM endpoints
        WHERE id = ANY($18) AND (failing_since IS NOT NULL OR consecutive_failures <> 0 OR circuit <> 'closed')
          AND (SELECT COUNT(*) FROM locked) >= 0
        ORDER BY id FOR NO KEY UPDATE),
     healthy AS (
        UPDATE endpoints SET failing_since = NULL, consecutive_failures = 0,
            circuit_since = CASE WHEN failing.circuit <> 'closed' THEN $17 ELSE endpoints.circuit_since END,
            circuit = 'closed', probe_at_ms = NULL, probe_interval_ms = NULL
        FROM failing WHERE endpoints.id = failing.id
        RETURNING endpoints.id, endpoints.account_id, endpoints.enabled, endpoints.disabled_reason,
                  endpoints.circuit_since, failing.circuit AS was),
     noticed AS (
        INSERT INTO notices (account_id, endpoint_id, event_type, state, created_at)
        SELECT account_id, id, 'webhook.circuit_closed',
               json_build_object('enabled', enabled, 'disabled_reason', disabled_reason,
                                 'circuit', 'closed', 'circuit_since', circuit_since)::text, $17
        FROM healthy WHERE was <> 'closed')
     SELECT COUNT(*) FROM healthy WHERE was <> 'closed'";
}
/// The condition that the delivery `delivery` of the endpoint `endpoint`
/// (SQL expressions) is leased at `now` (ms): a slot of the endpoint names
/// it and has not expired (migration 0014). A few rows of the slots' key;
/// the dispatcher's look-ups read each endpoint's live leases once instead
/// (`NEXT_DUE`, `CANDIDATES`).
pub(super) fn leased(endpoint: &str, delivery: &str, now: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM endpoint_slots s
                 WHERE s.endpoint_id = {endpoint} AND s.delivery_id = {delivery} AND s.until_ms > {now})"
    )
}

#[async_trait]
impl DeliveryQueue for PgStore {
    async fn claim(&self, r: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
        let hand_off = self.hand_off.get();
        let mut r = r.clone();
        if let Some(h) = hand_off {
            // Hand-offs may have taken some since the dispatcher looked.
            r.max = r.max.min(h.free());
        }
        if r.max == 0 {
            return Ok(Vec::new());
        }
        let r = &r;
        let mut tx = self.begin_work().await?;
        // One claim at a time across the nodes. Claims that ran together
        // would each lock part of the candidates and part of the free slots
        // (`SKIP LOCKED`), and one could leave a delivery it locked for want
        // of the slots the other locked, for want of work (on 3 nodes that
        // cost both rate and latency: docs/benchmarks.md). Writes do not take
        // this lock: their hand-offs take free slots beside it.
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(NS_GLOBAL)
            .bind(KEY_CLAIM)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        // The lease starts once this node holds the lock, not before it waited.
        let now_ms = crate::ids::now_ms();
        let lease_until_ms = now_ms + r.lease_ms;
        // Due, unleased deliveries of each enabled endpoint. Twice the
        // limit, so that what the claim leaves tells a queue of a full
        // slot's worth (pacing) from a few stragglers.
        let candidates: Vec<Candidate> = sqlx::query_as(dispatcher_sql::CANDIDATES)
            .bind(now_ms)
            .bind(2 * i64::from(r.per_endpoint))
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        if candidates.is_empty() {
            if let Some(h) = hand_off {
                h.left_waiting(HashMap::new());
            }
            tx.commit().await.map_err(backend)?;
            return Ok(Vec::new());
        }
        let mut endpoints: Vec<String> = candidates.iter().map(|c| c.endpoint.clone()).collect();
        endpoints.sort_unstable();
        endpoints.dedup();
        let limit = r.per_endpoint as i32;
        let to_make: Vec<&str> = {
            let made = self.slots_made.lock().unwrap_or_else(|e| e.into_inner());
            endpoints
                .iter()
                .map(String::as_str)
                .filter(|e| made.get(*e).is_none_or(|n| *n < r.per_endpoint))
                .collect()
        };
        if !to_make.is_empty() {
            // In id order, so that two nodes making the same rows cannot
            // deadlock.
            sqlx::query(
                "INSERT INTO endpoint_slots (endpoint_id, n)
                 SELECT e.id, g FROM endpoints e CROSS JOIN generate_series(0, $2 - 1) g
                 WHERE e.id = ANY($1) ORDER BY e.id, g
                 ON CONFLICT DO NOTHING",
            )
            .bind(&to_make)
            .bind(limit)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        // Each endpoint's free slots: the rest are in flight, on any node.
        let free: Vec<(String, i32)> = sqlx::query_as(dispatcher_sql::FREE_SLOTS)
            .bind(&endpoints)
            .bind(vec![limit; endpoints.len()])
            .bind(now_ms)
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        let mut free_slots: HashMap<&str, Vec<i32>> = HashMap::new();
        for (endpoint, n) in &free {
            free_slots.entry(endpoint.as_str()).or_default().push(*n);
        }
        let in_flight: HashMap<String, i64> = endpoints
            .iter()
            .map(|e| {
                let free = free_slots.get(e.as_str()).map_or(0, Vec::len) as i64;
                (e.clone(), i64::from(limit) - free)
            })
            .collect();
        // What the claim leaves waiting per endpoint, for pacing writes.
        let mut waiting: HashMap<String, u32> = HashMap::new();
        let mut endpoint_of: HashMap<String, String> = HashMap::new();
        let mut probing: Vec<&str> = Vec::new();
        for c in &candidates {
            // What a rate limit holds back waits for time, not for slots:
            // it does not pace writers.
            if c.rate_limit.is_none() {
                *waiting.entry(c.endpoint.clone()).or_insert(0) += 1;
            }
            endpoint_of.insert(c.id.clone(), c.endpoint.clone());
            if c.probe {
                probing.push(&c.id);
            }
        }
        let probing: Vec<String> = probing.into_iter().map(str::to_owned).collect();
        let Chosen { ids: chosen, rates } = choose_claims(candidates, in_flight, r, now_ms * 1000);
        // A probe half-opens its circuit; if its result never comes (the
        // node died), another may go once its lease has run out.
        let probes: Vec<&str> = chosen
            .iter()
            .filter(|id| probing.contains(id))
            .map(|id| endpoint_of[id].as_str())
            .collect();
        if !probes.is_empty() {
            sqlx::query(
                "UPDATE endpoints SET circuit = 'half_open', circuit_since = $1, probe_at_ms = $2 WHERE id = ANY($3)",
            )
            .bind(now_ms / 1000)
            .bind(lease_until_ms)
            .bind(&probes)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        // Rate-limited endpoints' limiters advance by what this claim leased
        // (claims run one at a time, so the limit holds across nodes).
        if !rates.is_empty() {
            let (endpoints, tats): (Vec<&str>, Vec<i64>) =
                rates.iter().map(|(e, t)| (e.as_str(), *t)).unzip();
            sqlx::query(
                "UPDATE endpoints e SET rate_tat_us = r.t
                 FROM unnest($1::text[], $2::bigint[]) AS r(id, t) WHERE e.id = r.id",
            )
            .bind(&endpoints)
            .bind(&tats)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        // Each chosen delivery takes one of its endpoint's free slots.
        let (mut slot_endpoints, mut slot_numbers) = (Vec::new(), Vec::new());
        for id in &chosen {
            let endpoint = &endpoint_of[id];
            if let Some(n) = waiting.get_mut(endpoint) {
                *n -= 1;
            }
            let n = free_slots
                .get_mut(endpoint.as_str())
                .and_then(Vec::pop)
                .expect("a claim chooses no more than its endpoint's free slots");
            slot_endpoints.push(endpoint.as_str());
            slot_numbers.push(n);
        }
        if let Some(h) = hand_off {
            h.left_waiting(waiting);
        }
        if chosen.is_empty() {
            tx.commit().await.map_err(backend)?;
            return Ok(Vec::new());
        }
        // The slots are the leases. A slot that still names a chosen
        // delivery from a lease that ran out is freed, so that only the new
        // lease's slot names it (a late result of the old one then frees
        // nothing and moves nothing); `FREE_SLOTS` locked it, as it locks
        // every expired slot of these endpoints.
        sqlx::query(
            "WITH leased AS (
                UPDATE endpoint_slots s SET delivery_id = w.d, owner = $2, until_ms = $1
                FROM unnest($3::text[], $4::text[], $5::int[]) AS w(d, e, n)
                WHERE s.endpoint_id = w.e AND s.n = w.n)
             UPDATE endpoint_slots s SET delivery_id = NULL, owner = NULL, until_ms = NULL
             WHERE s.endpoint_id = ANY($4) AND s.delivery_id = ANY($3)
               AND (s.endpoint_id, s.n) NOT IN (SELECT * FROM unnest($4::text[], $5::int[]))",
        )
        .bind(lease_until_ms)
        .bind(&r.owner)
        .bind(&chosen)
        .bind(&slot_endpoints)
        .bind(&slot_numbers)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let claimed: Vec<Claimed> = sqlx::query_as(
            "SELECT d.id AS delivery_id, d.account_id, d.endpoint_id, d.event_id, d.event_type,
                    d.attempts + 1 AS attempt, d.schedule_pos, e.url, e.secret, e.previous_secret,
                    e.previous_secret_expires_at, e.headers, ev.body, e.ordering <> 'none' AS ordered,
                    ev.traceparent
             FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id JOIN events ev ON ev.id = d.event_id
             WHERE d.id = ANY($1)
             ORDER BY d.next_attempt_ms",
        )
        .bind(&chosen)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        // Their slots here (what they leave queued is told above).
        if let Some(h) = hand_off {
            for c in &claimed {
                h.occupy(&c.endpoint_id, false);
            }
        }
        if let Err(e) = tx.commit().await {
            // The leases were rolled back: so are the slots they took.
            if let Some(h) = hand_off {
                for c in &claimed {
                    h.release(&c.endpoint_id);
                }
            }
            return Err(backend(e));
        }
        if !to_make.is_empty() {
            let mut made = self.slots_made.lock().unwrap_or_else(|e| e.into_inner());
            for e in to_make {
                made.insert(e.to_owned(), r.per_endpoint);
            }
        }
        Ok(claimed)
    }

    async fn record_attempts(
        &self,
        results: &[AttemptResult],
        policy: &EndpointPolicy,
    ) -> StoreResult<u64> {
        if is_plain(results) {
            return record_plain_attempts(&self.work, &self.metrics, results).await;
        }
        let mut tx = self.begin_work().await?;
        let now = crate::ids::now();
        let now_ms = crate::ids::now_ms();
        let disable_after_secs = policy.disable_after_secs;
        let circuits: HashMap<&str, CircuitStep> = circuit_steps(results).into_iter().collect();
        let exhausting = exhausting(results);
        let mut exhausted: Vec<String> = Vec::new();
        // Rows are locked in one order by every write-back (deliveries by
        // id, then endpoints by id), so that two nodes' batches cannot
        // deadlock each other. A handful of statements per batch, not
        // three or more per result: each is a round trip.
        let mut ids: Vec<&str> = results
            .iter()
            .map(|r| r.attempt.delivery_id.as_str())
            .collect();
        ids.sort_unstable();
        // Locked, and so kept: attempts are recorded only for deliveries that
        // are still there (a late result's delivery may have been finished by
        // another lease and purged since), as nothing else checks it
        // (migration 0019).
        let existing: std::collections::HashSet<String> = sqlx::query_scalar(
            "SELECT id FROM deliveries WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?
        .into_iter()
        .collect();
        // Each attempt's slot is free again, if its lease still holds it (a
        // lease that ran out may have been taken, with its slot, by another);
        // only the deliveries whose slot it freed move on.
        let (endpoints, owners): (Vec<&str>, Vec<&str>) = results
            .iter()
            .map(|r| (r.endpoint_id.as_str(), r.owner.as_str()))
            .unzip();
        let deliveries: Vec<&str> = results
            .iter()
            .map(|r| r.attempt.delivery_id.as_str())
            .collect();
        let held: Vec<String> = sqlx::query_scalar(
            "UPDATE endpoint_slots s SET delivery_id = NULL, owner = NULL, until_ms = NULL
             FROM unnest($1::text[], $2::text[], $3::text[]) AS r(e, d, o)
             WHERE s.endpoint_id = r.e AND s.delivery_id = r.d AND s.owner = r.o
             RETURNING r.d",
        )
        .bind(&endpoints)
        .bind(&deliveries)
        .bind(&owners)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let recorded: Vec<_> = results
            .iter()
            .filter(|r| existing.contains(&r.attempt.delivery_id))
            .collect();
        for chunk in recorded.chunks(ROWS_PER_STATEMENT) {
            let mut q =
                QueryBuilder::<Postgres>::new(format!("INSERT INTO attempts ({ATTEMPT_COLUMNS}) "));
            q.push_values(chunk, |mut row, r| {
                let a = &r.attempt;
                row.push_bind(&a.id)
                    .push_bind(&a.delivery_id)
                    .push_bind(a.attempt)
                    .push_bind(a.started_at_ms)
                    .push_bind(a.duration_ms)
                    .push_bind(&a.request_headers)
                    .push_bind(a.response_status)
                    .push_bind(&a.response_headers)
                    .push_bind(&a.response_body)
                    .push_bind(&a.error)
                    .push_bind(a.succeeded);
            });
            q.build().execute(&mut *tx).await.map_err(backend)?;

            // A delivery cancelled (endpoint deleted) while in flight keeps
            // its new state; only the lease holder moves it on.
            let mut q = QueryBuilder::<Postgres>::new(
                "UPDATE deliveries SET status = r.status, attempts = GREATEST(deliveries.attempts, r.attempt),
                    next_attempt_ms = r.next_ms, schedule_pos = COALESCE(r.pos, deliveries.schedule_pos),
                    last_attempt_at = r.at, last_status_code = r.code, updated_at = ",
            );
            q.push_bind(now).push(" FROM (");
            q.push_values(chunk, |mut row, r| {
                let a = &r.attempt;
                let (status, next_ms, pos) = r.next.columns();
                row.push_bind(&a.delivery_id)
                    .push_bind(status)
                    .push_bind(a.attempt)
                    .push_bind(next_ms)
                    .push_bind(pos)
                    .push_bind(a.started_at_ms / 1000)
                    .push_bind(a.response_status);
            });
            // As in `PLAIN_WRITE_BACK`: only where its lease's slot was
            // freed. The conditions on `r`, not on `deliveries`: the planner
            // then reads each delivery by id, where a condition on the
            // table's rows had it scan every pending one.
            q.push(
                ") AS r(id, status, attempt, next_ms, pos, at, code)
                 WHERE deliveries.id = r.id AND deliveries.status = 'pending' AND r.id = ANY(",
            )
            .push_bind(&held)
            .push(")");
            if chunk.iter().any(|r| r.next == NextStep::Failed) {
                // The deliveries this moved to `failed` are owed
                // `delivery.exhausted`.
                q.push(" RETURNING deliveries.id, deliveries.status");
                let moved: Vec<(String, String)> = q
                    .build_query_as()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(backend)?;
                exhausted.extend(
                    moved
                        .into_iter()
                        .filter(|(id, status)| {
                            status == "failed" && exhausting.contains(&id.as_str())
                        })
                        .map(|(id, _)| id),
                );
            } else {
                q.build().execute(&mut *tx).await.map_err(backend)?;
            }
        }
        // The endpoints' state before this batch changes it, their rows
        // locked (after the deliveries and slots, in id order, as every
        // write-back takes them), so no other write-back can change it
        // before this one commits.
        let endpoint_ids = changing_endpoints(results);
        let before: Vec<EndpointState> = sqlx::query_as(&format!(
            "SELECT {ENDPOINT_STATE_COLUMNS} FROM endpoints WHERE id = ANY($1)
             ORDER BY id FOR NO KEY UPDATE"
        ))
        .bind(&endpoint_ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        // Endpoint health, once per endpoint, from the order of its results.
        let mut health = endpoint_health(results);
        health.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (endpoint_id, health) in health {
            match health {
                Health::Recovered => {
                    // Healthy again, and its circuit closed (both follow
                    // the last result).
                    sqlx::query(
                        "UPDATE endpoints SET failing_since = NULL, consecutive_failures = 0,
                            circuit_since = CASE WHEN circuit <> 'closed' THEN $1 ELSE circuit_since END,
                            circuit = 'closed', probe_at_ms = NULL, probe_interval_ms = NULL
                         WHERE id = $2 AND (failing_since IS NOT NULL OR consecutive_failures <> 0 OR circuit <> 'closed')",
                    )
                    .bind(now)
                    .bind(endpoint_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                }
                Health::Failing { since_now } => {
                    let sql = if since_now {
                        "UPDATE endpoints SET failing_since = $1 WHERE id = $2"
                    } else {
                        "UPDATE endpoints SET failing_since = COALESCE(failing_since, $1) WHERE id = $2"
                    };
                    sqlx::query(sql)
                        .bind(now)
                        .bind(endpoint_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                    if let Some(CircuitStep::Failed { restart, failures }) =
                        circuits.get(endpoint_id)
                    {
                        // A closed circuit opens at the threshold; a
                        // half-open one (its probe failed) opens again, its
                        // next probe twice as far off.
                        sqlx::query(
                            "UPDATE endpoints SET consecutive_failures =
                                CASE WHEN $1 THEN 0 ELSE consecutive_failures END + $2
                             WHERE id = $3",
                        )
                        .bind(restart)
                        .bind(failures)
                        .bind(endpoint_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                        sqlx::query(
                            "UPDATE endpoints SET
                                probe_interval_ms = CASE WHEN circuit = 'half_open'
                                    THEN LEAST(COALESCE(probe_interval_ms, $1) * 2, $2) ELSE $1 END,
                                probe_at_ms = $3 + CASE WHEN circuit = 'half_open'
                                    THEN LEAST(COALESCE(probe_interval_ms, $1) * 2, $2) ELSE $1 END,
                                circuit_since = $4, circuit = 'open'
                             WHERE id = $5 AND (circuit = 'half_open'
                                OR (circuit = 'closed' AND consecutive_failures >= $6))",
                        )
                        .bind(FIRST_PROBE_MS)
                        .bind(MAX_PROBE_INTERVAL_MS)
                        .bind(now_ms)
                        .bind(now)
                        .bind(endpoint_id)
                        .bind(i64::from(policy.circuit_failures))
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                    }
                    sqlx::query(
                        "UPDATE endpoints SET enabled = FALSE, updated_at = $1,
                            disabled_reason = 'failing continuously since '
                                || to_char(to_timestamp(failing_since) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                         WHERE id = $2 AND enabled AND failing_since <= $3",
                    )
                    .bind(now)
                    .bind(endpoint_id)
                    .bind(now - disable_after_secs)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                }
            }
        }
        // A receiver that asked to be slowed down gets nothing until its
        // pause ends, on any node (a later answer never shortens it).
        let (throttled, until): (Vec<&str>, Vec<i64>) =
            endpoint_throttles(results).into_iter().unzip();
        if !throttled.is_empty() {
            sqlx::query(
                "UPDATE endpoints e SET throttled_until_ms = GREATEST(e.throttled_until_ms, t.until_ms)
                 FROM (SELECT * FROM unnest($1::text[], $2::bigint[]) AS t(id, until_ms) ORDER BY id) t
                 WHERE e.id = t.id",
            )
            .bind(&throttled)
            .bind(&until)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        let mut disabled: Vec<&AttemptResult> =
            results.iter().filter(|r| r.disable.is_some()).collect();
        disabled.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
        for r in disabled {
            sqlx::query("UPDATE endpoints SET enabled = FALSE, disabled_reason = $1, updated_at = $2 WHERE id = $3 AND enabled")
                .bind(&r.disable)
                .bind(now)
                .bind(&r.endpoint_id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        // What the accounts hear of, in the same transaction.
        let after: Vec<EndpointState> = sqlx::query_as(&format!(
            "SELECT {ENDPOINT_STATE_COLUMNS} FROM endpoints WHERE id = ANY($1)"
        ))
        .bind(&endpoint_ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let (mut accounts, mut endpoints, mut types, mut states) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (endpoint, event_type) in endpoint_notices(&before, &after) {
            accounts.push(endpoint.account_id.as_str());
            endpoints.push(endpoint.id.as_str());
            types.push(event_type.as_str());
            states.push(endpoint.json());
        }
        let mut notices = 0;
        if !types.is_empty() {
            notices += sqlx::query(
                "INSERT INTO notices (account_id, endpoint_id, event_type, state, created_at)
                 SELECT a, e, t, s, $5 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS n(a, e, t, s)",
            )
            .bind(&accounts)
            .bind(&endpoints)
            .bind(&types)
            .bind(&states)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        }
        if !exhausted.is_empty() {
            notices += sqlx::query(
                "INSERT INTO notices (account_id, endpoint_id, event_type, delivery_id, created_at)
                 SELECT account_id, endpoint_id, $1, id, $2 FROM deliveries WHERE id = ANY($3) ORDER BY id",
            )
            .bind(OperationalEventType::DeliveryExhausted.as_str())
            .bind(now)
            .bind(&exhausted)
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        }
        tx.commit().await.map_err(backend)?;
        Ok(notices)
    }

    async fn next_due_ms(&self) -> StoreResult<Option<i64>> {
        sqlx::query_scalar(dispatcher_sql::NEXT_DUE)
            .bind(crate::ids::now_ms())
            .fetch_one(&self.work)
            .await
            .map_err(backend)
    }

    async fn release_leases(&self, node: &str) -> StoreResult<u64> {
        // The leases are the slots' (migration 0014).
        let done = sqlx::query(
            "UPDATE endpoint_slots SET delivery_id = NULL, owner = NULL, until_ms = NULL
             WHERE starts_with(owner, $1 || ':')",
        )
        .bind(node)
        .execute(&self.work)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn queue_stats(&self, now_ms: i64) -> StoreResult<QueueStats> {
        let (pending, due, in_flight): (i64, i64, i64) = sqlx::query_as(
            "WITH leased AS MATERIALIZED (
                SELECT l.next_attempt_ms FROM endpoint_slots s JOIN deliveries l ON l.id = s.delivery_id
                WHERE s.until_ms > $1 AND l.status = 'pending')
             SELECT COUNT(*),
                    COUNT(*) FILTER (WHERE d.next_attempt_ms <= $1)
                      - (SELECT COUNT(*) FROM leased WHERE next_attempt_ms <= $1),
                    (SELECT COUNT(*) FROM leased)
             FROM deliveries d WHERE d.status = 'pending'",
        )
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        let disabled_endpoints: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM endpoints WHERE NOT enabled")
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
        let circuits: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, circuit FROM endpoints WHERE circuit <> 'closed' ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let held_by_circuits: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM endpoints e JOIN deliveries d ON d.endpoint_id = e.id
             WHERE e.circuit <> 'closed' AND d.status = 'pending' AND d.next_attempt_ms <= $1
               AND NOT {}",
            leased("e.id", "d.id", "$1")
        ))
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        // The head of each enabled endpoint's queue (`deliveries_queue`,
        // skipping the few it has in flight): one short index range each.
        let oldest_due_ms: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT MIN((SELECT d.next_attempt_ms FROM deliveries d
                         WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_ms <= $1
                           AND NOT {}
                         ORDER BY d.next_attempt_ms LIMIT 1))
             FROM endpoints e WHERE e.enabled",
            leased("e.id", "d.id", "$1")
        ))
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
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

/// Results that change nothing of their endpoints but, at most, close a
/// circuit or end a failing streak: no endpoint failed in them (the last
/// result of each succeeded), none throttles or disables its endpoint or
/// ends its delivery as failed, and they fit one statement. Nearly every batch,
/// when receivers are healthy.
fn is_plain(results: &[AttemptResult]) -> bool {
    results.len() <= ROWS_PER_STATEMENT
        && results.iter().all(|r| {
            r.disable.is_none() && r.throttle_until_ms.is_none() && r.next != NextStep::Failed
        })
        && endpoint_health(results)
            .iter()
            .all(|(_, h)| *h == Health::Recovered)
}

/// Writes back plain results (see [`is_plain`]) in one statement, run on
/// its own: one round trip and one implicit transaction, where the general
/// write-back takes `BEGIN`, five statements or more and `COMMIT`. It does
/// what they do: locks the deliveries in id order (the order every
/// write-back takes them in), frees the slots their leases still hold,
/// inserts the attempts, moves on the deliveries this node still leases,
/// and clears the failing state of endpoints that had any.
async fn record_plain_attempts(
    pool: &PgPool,
    metrics: &StoreMetrics,
    results: &[AttemptResult],
) -> StoreResult<u64> {
    let now = crate::ids::now();
    // One array per column, one element per result.
    let column = |f: fn(&AttemptResult) -> &str| -> Vec<&str> { results.iter().map(f).collect() };
    let steps: Vec<_> = results.iter().map(|r| r.next.columns()).collect();
    let statuses: Vec<&str> = steps.iter().map(|s| s.0).collect();
    let next_ms: Vec<Option<i64>> = steps.iter().map(|s| s.1).collect();
    let positions: Vec<Option<i64>> = steps.iter().map(|s| s.2).collect();
    let ids = column(|r| &r.attempt.delivery_id);
    let owners = column(|r| &r.owner);
    let endpoints = column(|r| &r.endpoint_id);
    let attempt_ids = column(|r| &r.attempt.id);
    let attempts = results.iter().map(|r| &r.attempt);
    let attempt_no: Vec<i64> = attempts.clone().map(|a| a.attempt).collect();
    let started: Vec<i64> = attempts.clone().map(|a| a.started_at_ms).collect();
    let durations: Vec<i64> = attempts.clone().map(|a| a.duration_ms).collect();
    let request_headers: Vec<_> = attempts.clone().map(|a| &a.request_headers).collect();
    let response_status: Vec<Option<i64>> = attempts.clone().map(|a| a.response_status).collect();
    let response_headers: Vec<_> = attempts
        .clone()
        .map(|a| a.response_headers.as_ref())
        .collect();
    let bodies: Vec<Option<&str>> = attempts
        .clone()
        .map(|a| a.response_body.as_deref())
        .collect();
    let errors: Vec<Option<&str>> = attempts.clone().map(|a| a.error.as_deref()).collect();
    let succeeded: Vec<bool> = attempts.map(|a| a.succeeded).collect();
    let mut recovered: Vec<&str> = endpoint_health(results)
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    recovered.sort_unstable();
    let asked = Instant::now();
    let mut conn = pool.acquire().await.map_err(backend)?;
    let began = Instant::now();
    metrics.waited(Pool::Background, began - asked);
    let notices: i64 = sqlx::query_scalar(dispatcher_sql::PLAIN_WRITE_BACK)
        .bind(&ids)
        .bind(&owners)
        .bind(&endpoints)
        .bind(&statuses)
        .bind(&next_ms)
        .bind(&positions)
        .bind(&attempt_ids)
        .bind(&attempt_no)
        .bind(&started)
        .bind(&durations)
        .bind(&request_headers)
        .bind(&response_status)
        .bind(&response_headers)
        .bind(&bodies)
        .bind(&errors)
        .bind(&succeeded)
        .bind(now)
        .bind(&recovered)
        .fetch_one(&mut *conn)
        .await
        .map_err(backend)?;
    // One statement, committed as it ends: a write with no `COMMIT` of its
    // own to observe.
    metrics.wrote(began.elapsed());
    Ok(notices as u64)
}
