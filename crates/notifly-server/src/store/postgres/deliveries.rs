//! Deliveries: an event's fan-out and hand-off, attempts as the API
//! shows them, retries and recovery.

use super::*;

/// Deliveries an event's insert creates in the same statement (ids made
/// beforehand); an event to more endpoints inserts the rest separately.
const FAN_OUT_IN_ONE: usize = 16;

/// An endpoint an event goes to (see `insert_event`): its place in the
/// fan-out and, if the write leased its delivery, what sending it needs.
#[derive(FromRow)]
struct Target {
    id: String,
    n: i64,
    /// Held for a claim (see `insert_event`).
    held: bool,
    /// Its endpoint orders deliveries per resource (only read if leased).
    ordered: bool,
    url: Option<String>,
    secret: Option<String>,
    previous_secret: Option<String>,
    previous_secret_expires_at: Option<i64>,
    headers: Option<String>,
    /// An endpoint with a content filter: the filter (its delivery is
    /// made only if the event passes it).
    filter: Option<String>,
}

impl PgTx {
    /// Notes a new delivery to `endpoint` that waits for a claim.
    pub(super) fn queued(&mut self, endpoint: &str) {
        self.claimable = true;
        if !self.queued_to.iter().any(|e| e == endpoint) {
            self.queued_to.push(endpoint.to_owned());
        }
        if let Some(h) = &self.staged.hand_off {
            h.queued(endpoint);
            self.staged.queued.push(endpoint.to_owned());
        }
    }
}

/// A pending delivery of `e` to one of the account's endpoints. The endpoint
/// must belong to the account: otherwise nothing is written and it is an
/// error, so one account's event can never go to another's endpoint. So
/// is an event that is gone: the event is read `FOR KEY SHARE`, which keeps
/// the purge from deleting it until this transaction ends (no foreign key
/// checks it: migration 0019; a replay makes deliveries of old events).
pub(super) async fn insert_delivery(
    conn: &mut PgConnection,
    account: &str,
    e: &EventRecord,
    endpoint_id: &str,
) -> StoreResult<String> {
    let id = crate::ids::new_id();
    let done = sqlx::query(
        "WITH event AS MATERIALIZED (SELECT 1 FROM events WHERE id = $2 FOR KEY SHARE)
         INSERT INTO deliveries (id, account_id, endpoint_id, event_id, event_type, status, next_attempt_ms, created_at, updated_at, resource_id)
         SELECT $1, account_id, id, $2, $3, 'pending', $4, $5, $6, $9 FROM endpoints
         WHERE id = $7 AND account_id = $8 AND EXISTS (SELECT 1 FROM event)",
    )
    .bind(&id)
    .bind(&e.id)
    .bind(&e.event_type)
    .bind(crate::ids::now_ms())
    .bind(e.created_at)
    .bind(e.created_at)
    .bind(endpoint_id)
    .bind(account)
    .bind(&e.resource_id)
    .execute(conn)
    .await
    .map_err(backend)?;
    if done.rows_affected() != 1 {
        return Err(StoreError::Backend(sqlx::Error::RowNotFound));
    }
    Ok(id)
}

/// Inserts one pending delivery of `e` per endpoint in `endpoints` (ids of
/// the account's endpoints, just read) with one statement per
/// [`ROWS_PER_STATEMENT`].
pub(super) async fn fan_out(
    conn: &mut PgConnection,
    account: &str,
    e: &EventRecord,
    endpoints: &[String],
) -> StoreResult<()> {
    let now_ms = crate::ids::now_ms();
    for chunk in endpoints.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO deliveries (id, account_id, endpoint_id, event_id, event_type, status, next_attempt_ms, created_at, updated_at, resource_id) ",
        );
        q.push_values(chunk, |mut row, endpoint| {
            row.push_bind(crate::ids::new_id())
                .push_bind(account)
                .push_bind(endpoint)
                .push_bind(&e.id)
                .push_bind(&e.event_type)
                .push_bind("pending")
                .push_bind(now_ms)
                .push_bind(e.created_at)
                .push_bind(e.created_at)
                .push_bind(&e.resource_id);
        });
        q.build().execute(&mut *conn).await.map_err(backend)?;
    }
    Ok(())
}

#[async_trait]
impl<C> AttemptReads for Handle<C>
where
    C: Scope,
{
    async fn attempts(
        &mut self,
        account: &str,
        delivery_id: &str,
    ) -> StoreResult<Vec<AttemptRecord>> {
        let columns = qualified(ATTEMPT_COLUMNS, "a");
        sqlx::query_as(&format!(
            "SELECT {columns} FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
             WHERE d.account_id = $1 AND a.delivery_id = $2 ORDER BY a.seq"
        ))
        .bind(account)
        .bind(delivery_id)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn attempt_buckets(
        &mut self,
        account: &str,
        endpoint_id: &str,
        since_ms: i64,
        bucket_ms: i64,
    ) -> StoreResult<Vec<AttemptBucket>> {
        sqlx::query_as(
            "SELECT (a.started_at_ms - $1) / $2 AS bucket, COUNT(*) AS attempts,
                    SUM(CASE WHEN a.succeeded THEN 1 ELSE 0 END)::BIGINT AS succeeded,
                    SUM(a.duration_ms)::BIGINT AS total_duration_ms,
                    MAX(a.duration_ms) AS max_duration_ms
             FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
             WHERE d.account_id = $3 AND d.endpoint_id = $4 AND a.started_at_ms >= $5
             GROUP BY 1 ORDER BY 1",
        )
        .bind(since_ms)
        .bind(bucket_ms.max(1))
        .bind(account)
        .bind(endpoint_id)
        .bind(since_ms)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn last_attempt_at(
        &mut self,
        account: &str,
        endpoint_id: &str,
    ) -> StoreResult<Option<i64>> {
        sqlx::query_scalar(
            "SELECT MAX(last_attempt_at) FROM deliveries WHERE account_id = $1 AND endpoint_id = $2",
        )
        .bind(account)
        .bind(endpoint_id)
        .fetch_one(&mut *self.0)
        .await
        .map_err(backend)
    }
}

#[async_trait]
impl DeliveryWrites for Handle<PgTx> {
    async fn retry_delivery(&mut self, account: &str, id: &str, now_ms: i64) -> StoreResult<bool> {
        // Not while a lease holds it; a slot still naming it from a lease
        // that ran out is freed, so that lease's late result cannot undo
        // the retry (see `dispatcher_sql::PLAIN_WRITE_BACK`).
        let retried: i64 = sqlx::query_scalar(&format!(
            "WITH retried AS (
                UPDATE deliveries d SET status = 'pending', next_attempt_ms = $1, schedule_pos = 0, updated_at = $2
                WHERE d.account_id = $3 AND d.id = $4 AND NOT {}
                RETURNING d.id, d.endpoint_id),
             freed AS (
                UPDATE endpoint_slots s SET delivery_id = NULL, owner = NULL, until_ms = NULL
                FROM retried r WHERE s.endpoint_id = r.endpoint_id AND s.delivery_id = r.id)
             SELECT COUNT(*) FROM retried",
            super::queue::leased("d.endpoint_id", "d.id", "$5")
        ))
        .bind(now_ms)
        .bind(now_ms / 1000)
        .bind(account)
        .bind(id)
        .bind(now_ms)
        .fetch_one(&mut *self.0)
        .await
        .map_err(backend)?;
        self.0.claimable |= retried > 0;
        Ok(retried > 0)
    }

    async fn recover_deliveries(
        &mut self,
        account: &str,
        endpoint_id: &str,
        since: i64,
        now_ms: i64,
    ) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'pending', next_attempt_ms = $1, schedule_pos = 0, updated_at = $2
             WHERE account_id = $3 AND endpoint_id = $4 AND status = 'failed' AND created_at >= $5",
        )
        .bind(now_ms)
        .bind(now_ms / 1000)
        .bind(account)
        .bind(endpoint_id)
        .bind(since)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        self.0.claimable |= done.rows_affected() > 0;
        Ok(done.rows_affected())
    }
}

/// An account's enabled endpoints with a content filter, those subscribed
/// to `e`'s type matched against it: the ids of all of them, and of those
/// it passes. Only an account with no filtered endpoint at all is no longer
/// noted as filtering (one whose filtered endpoints take other types stays
/// noted, or it would flip at every event of another type).
async fn filters_first(
    tx: &mut PgTx,
    account: &str,
    e: &EventRecord,
) -> StoreResult<(Vec<String>, Vec<String>)> {
    let filtered: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT f.id, f.filter,
                EXISTS (SELECT 1 FROM endpoint_events s WHERE s.endpoint_id = f.id AND s.event_type IN ($2, '*'))
         FROM endpoints f
         WHERE f.account_id = $1 AND f.enabled AND f.filter IS NOT NULL",
    )
    .bind(account)
    .bind(&e.event_type)
    .fetch_all(&mut **tx)
    .await
    .map_err(backend)?;
    if filtered.is_empty() {
        tx.note_account_filters(account, false);
    }
    let filtered: Vec<(String, String)> = filtered
        .into_iter()
        .filter(|(_, _, subscribed)| *subscribed)
        .map(|(id, filter, _)| (id, filter))
        .collect();
    let matched = filtered.iter().map(|(id, _)| id.clone()).collect();
    let passing = crate::store::passing_filters(filtered, |(id, _)| id, |(_, f)| Some(f), e)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    Ok((matched, passing))
}

impl PgTx {
    /// Does this node know `account` to have endpoints with a filter?
    fn account_filters(&self, account: &str) -> bool {
        self.filtered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(account)
    }

    /// Notes whether `account` has endpoints with a filter.
    fn note_account_filters(&self, account: &str, has: bool) {
        let mut filtered = self.filtered.lock().unwrap_or_else(|e| e.into_inner());
        if has {
            filtered.insert(account.to_owned());
        } else {
            filtered.remove(account);
        }
    }
}

/// Appends an event and fans it out (see [`EventWrites::insert_event`]).
pub(super) async fn insert_event_with_deliveries(
    tx: &mut PgTx,
    account: &str,
    e: &EventRecord,
) -> StoreResult<u64> {
    // The event, the endpoints it goes to and (for the first
    // `FAN_OUT_IN_ONE` of them) their deliveries, in one round trip: the
    // sub-statements of a data-modifying WITH all run, and the
    // deliveries' reference to the event is checked at the end of the
    // statement. Under the account's endpoint lock (shared with other
    // fan-outs): an endpoint being deleted meanwhile either waits for
    // this write (and then cancels the delivery it made) or is gone
    // before it (and gets none).
    //
    // With a hand-off, each of those deliveries whose endpoint is
    // healthy and not held for claims (circuit not closed, rate-limited,
    // throttled, or an earlier delivery about the same resource pending
    // with per-resource ordering), has a free slot and no deliveries
    // waiting before it
    // takes the slot and is leased to this node in the same statement
    // (as many as the node has slots free in all): its dispatcher
    // sends it once this transaction commits, with no claim.
    //
    // Endpoints with a content filter: in an account this node knows to
    // have some, they are read and matched first (under the lock, so they
    // cannot change before the fan-out), and those the event passes are
    // fanned out like the others. Otherwise the fan-out leaves them out
    // and returns them: their deliveries, if the event passes, are made
    // after it, for a claim, and the account is noted for next time.
    tx.lock_endpoints(account, false).await?;
    let fan_out_was = tx
        .fan_outs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(account)
        .copied()
        .unwrap_or(1);
    if fan_out_was == 0 && !tx.account_filters(account) {
        return insert_event_alone(tx, account, e).await;
    }
    let (matched, passing) = if tx.account_filters(account) {
        filters_first(tx, account, e).await?
    } else {
        (Vec::new(), Vec::new())
    };
    let ids: Vec<String> = (0..FAN_OUT_IN_ONE).map(|_| crate::ids::new_id()).collect();
    let hand_off = tx.staged.hand_off.clone();
    let (took, blocked, owner, lease_ms) = match &hand_off {
        Some(h) => (
            h.take_total(fan_out_was.min(FAN_OUT_IN_ONE as u32)),
            h.queued_endpoints(),
            Some(h.owner().to_owned()),
            h.lease_ms(),
        ),
        None => (0, Vec::new(), None, 0),
    };
    let per_endpoint = hand_off.as_ref().map_or(0, |h| h.per_endpoint() as i32);
    let now_ms = crate::ids::now_ms();
    let lease_until_ms = now_ms + lease_ms;
    let targets: StoreResult<Vec<Target>> = sqlx::query_as(
        "WITH event AS (
            INSERT INTO events (account_id, id, event_type, body, created_at, traceparent)
            VALUES ($1, $2, $3, $4, $5, $16)),
         targets AS (
            SELECT id, held, row_number() OVER (ORDER BY seq) AS n FROM (
                SELECT e.id, e.seq,
                    (e.failing_since IS NOT NULL OR e.circuit <> 'closed' OR e.rate_limit IS NOT NULL
                     OR COALESCE(e.throttled_until_ms, 0) > $7
                     OR (e.ordering <> 'none' AND EXISTS (
                        SELECT 1 FROM deliveries p
                        WHERE p.endpoint_id = e.id AND p.resource_id = $13 AND p.status = 'pending'))) AS held
                FROM endpoints e
                WHERE e.account_id = $1 AND e.enabled AND (e.filter IS NULL OR e.id = ANY($14::text[]))
                  AND EXISTS (SELECT 1 FROM endpoint_events s WHERE s.endpoint_id = e.id AND s.event_type IN ($3, '*'))) t),
         slot AS (
            SELECT t.id, t.n, s.n AS slot FROM targets t CROSS JOIN LATERAL (
                SELECT s.n FROM endpoint_slots s
                WHERE s.endpoint_id = t.id AND s.n < $9 AND (s.delivery_id IS NULL OR s.until_ms <= $7)
                ORDER BY s.n LIMIT 1
                FOR UPDATE SKIP LOCKED) s
            WHERE t.n <= $10 AND NOT t.held AND t.id <> ALL($11::text[])),
         took AS (
            UPDATE endpoint_slots s SET delivery_id = ($6::text[])[slot.n], owner = $8, until_ms = $12
            FROM slot WHERE s.endpoint_id = slot.id AND s.n = slot.slot),
         made AS (
            INSERT INTO deliveries (id, account_id, endpoint_id, event_id, event_type, status, next_attempt_ms,
                                    created_at, updated_at, resource_id)
            SELECT ($6::text[])[t.n], $1, t.id, $2, $3, 'pending', $7, $5, $5, $13
            FROM targets t WHERE t.n <= cardinality($6::text[]))
         SELECT * FROM (
            SELECT t.id, t.n, t.held, e.url, e.secret, e.previous_secret, e.previous_secret_expires_at, e.headers,
                   COALESCE(e.ordering <> 'none', FALSE) AS ordered, NULL AS filter
            FROM targets t LEFT JOIN slot ON slot.id = t.id LEFT JOIN endpoints e ON e.id = slot.id
            UNION ALL
            -- Endpoints with a content filter, which the caller matches.
            SELECT f.id, 0, TRUE, NULL, NULL, NULL, NULL, NULL, FALSE, f.filter
            FROM endpoints f
            WHERE f.account_id = $1 AND f.enabled AND f.filter IS NOT NULL AND f.id <> ALL($15::text[])
              AND EXISTS (SELECT 1 FROM endpoint_events s WHERE s.endpoint_id = f.id AND s.event_type IN ($3, '*'))) r
         ORDER BY n",
    )
    .bind(account)
    .bind(&e.id)
    .bind(&e.event_type)
    .bind(&e.body)
    .bind(e.created_at)
    .bind(&ids)
    .bind(now_ms)
    .bind(&owner)
    .bind(per_endpoint)
    .bind(i64::from(took))
    .bind(&blocked)
    .bind(lease_until_ms)
    .bind(&e.resource_id)
    .bind(&passing)
    .bind(&matched)
    .bind(&e.traceparent)
    .fetch_all(&mut **tx)
    .await
    .map_err(backend);
    let targets = match targets {
        Ok(t) => t,
        Err(err) => {
            if let Some(h) = &hand_off {
                h.give_back(took);
            }
            return Err(err);
        }
    };
    // Endpoints with a content filter get a delivery (left to a claim) if
    // the event passes their filter.
    let (filtered, targets): (Vec<Target>, Vec<Target>) =
        targets.into_iter().partition(|t| t.filter.is_some());
    let filtered_count = filtered.len();
    if !filtered.is_empty() {
        tx.note_account_filters(account, true);
    }
    let passed = crate::store::passing_filters(filtered, |t| &t.id, |t| t.filter.as_deref(), e);
    let body = axum::body::Bytes::from(e.body.clone());
    let mut handed = 0;
    let mut rest = Vec::new();
    rest.extend(passed.iter().map(|t| t.id.clone()));
    tx.claimable |= !passed.is_empty();
    for t in &targets {
        let leased = match (&hand_off, &t.url, &t.secret) {
            (Some(h), Some(url), Some(secret)) => {
                h.took_slot(&t.id);
                handed += 1;
                let claimed = Claimed {
                    delivery_id: ids[t.n as usize - 1].clone(),
                    account_id: account.to_owned(),
                    endpoint_id: t.id.clone(),
                    event_id: e.id.clone(),
                    event_type: e.event_type.clone(),
                    attempt: 1,
                    schedule_pos: 0,
                    url: url.clone(),
                    secret: secret.clone(),
                    previous_secret: t.previous_secret.clone(),
                    previous_secret_expires_at: t.previous_secret_expires_at,
                    headers: t.headers.clone(),
                    body: String::new(),
                    ordered: t.ordered,
                    traceparent: e.traceparent.clone(),
                };
                tx.staged.ready.push((claimed, body.clone()));
                true
            }
            _ => false,
        };
        if t.n as usize > FAN_OUT_IN_ONE {
            rest.push(t.id.clone());
        }
        if !leased {
            // One held for a claim (rate limit, throttle, order) is
            // not waiting for a slot: it does not pace the writer.
            if t.held {
                tx.claimable = true;
            } else {
                tx.queued(&t.id);
            }
        }
    }
    if let Some(h) = &hand_off {
        h.give_back(took - handed);
    }
    // Endpoints with a filter count even when the event did not pass it:
    // the next event may.
    let unpassed = matched.len() - passing.len();
    note_fan_out(
        tx,
        account,
        fan_out_was,
        targets.len() + filtered_count + unpassed,
    );
    if !rest.is_empty() {
        fan_out(tx, account, e, &rest).await?;
    }
    Ok((targets.len() + passed.len()) as u64)
}

/// Remembers how many endpoints `account`'s latest event found (see
/// `PgTx::fan_outs`).
fn note_fan_out(tx: &PgTx, account: &str, was: u32, found: usize) {
    let n = u32::try_from(found).unwrap_or(u32::MAX);
    if n != was {
        let mut fan_outs = tx.fan_outs.lock().unwrap_or_else(|e| e.into_inner());
        fan_outs.insert(account.to_owned(), n);
    }
}

/// [`insert_event_with_deliveries`] for an account whose latest event on
/// this node went to no endpoint (every write of an account without
/// webhooks): the event, and the endpoints it goes to read in the same
/// statement. The full statement's plan (slots, hand-off, filters) costs
/// PostgreSQL more to start than the insert does to run
/// (docs/benchmarks.md, twelfth round). An endpoint made since, on any
/// node, is found under the same endpoint lock and gets its delivery,
/// made after the event for a claim; the account's next event takes the
/// full statement again.
async fn insert_event_alone(tx: &mut PgTx, account: &str, e: &EventRecord) -> StoreResult<u64> {
    let found: Vec<(String, Option<String>)> = sqlx::query_as(
        "WITH event AS (
            INSERT INTO events (account_id, id, event_type, body, created_at, traceparent)
            VALUES ($1, $2, $3, $4, $5, $6))
         SELECT e.id, e.filter FROM endpoints e
         WHERE e.account_id = $1 AND e.enabled
           AND EXISTS (SELECT 1 FROM endpoint_events s WHERE s.endpoint_id = e.id AND s.event_type IN ($3, '*'))
         ORDER BY e.seq",
    )
    .bind(account)
    .bind(&e.id)
    .bind(&e.event_type)
    .bind(&e.body)
    .bind(e.created_at)
    .bind(&e.traceparent)
    .fetch_all(&mut **tx)
    .await
    .map_err(backend)?;
    if found.is_empty() {
        return Ok(0);
    }
    note_fan_out(tx, account, 0, found.len());
    if found.iter().any(|(_, filter)| filter.is_some()) {
        tx.note_account_filters(account, true);
    }
    fan_out_for_claims(tx, account, e, found).await
}

/// Makes `e`'s deliveries, left for a claim, to those of the `endpoints`
/// (each an id and its content filter) whose filter it passes; returns how
/// many it made.
pub(super) async fn fan_out_for_claims(
    tx: &mut PgTx,
    account: &str,
    e: &EventRecord,
    endpoints: Vec<(String, Option<String>)>,
) -> StoreResult<u64> {
    let ids: Vec<String> =
        crate::store::passing_filters(endpoints, |(id, _)| id, |(_, f)| f.as_deref(), e)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
    fan_out(tx, account, e, &ids).await?;
    for id in &ids {
        tx.queued(id);
    }
    Ok(ids.len() as u64)
}
