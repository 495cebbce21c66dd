//! Replays: a webhook sent again every event of its account's log in a time
//! window that its event types (and filter) select, in log order, each as
//! a normal delivery carrying the event's own id.
//!
//! A replay is a row with a cursor in the log. The replayer
//! ([`Notifly::advance_replays`], run by `crate::replays`) reads the log
//! after the cursor and, in one transaction, makes the deliveries of the
//! events the webhook selects and moves the cursor past them (only if no
//! other node moved it meanwhile). So a restart, `kill -9` included,
//! resumes where the last committed step left off, and no event is
//! replayed twice. It ends at the newest event of the log when it was made
//! (later ones the webhook gets live). It adds deliveries only while the
//! webhook has fewer than [`WINDOW`] pending (fewer than its rate limit,
//! if lower): its live events never queue behind more than that, about a
//! second of its own rate at most, and the claims that send them keep its
//! rate limit, ordering and circuit.

use notifly_webhooks::AnyEventType;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{DomainError, DomainResult, Notifly, found, validate};
use crate::filter::Filter;
use crate::ids;
use crate::store::{Conn, EndpointRecord, EventRecord, ReplayRecord, StoreError};

const KIND: &str = "replay";

/// A replay adds deliveries while its webhook has fewer than this many
/// pending (or than its rate limit, if lower).
pub const WINDOW: i64 = 32;
/// Writers in parallel (and nodes' clocks) may put an event this many
/// seconds out of time order in the log: a replay starts looking this far
/// before its window, and stops this far after it.
const SKEW_SECS: i64 = 60;
/// Replays the replayer looks at per pass, the least recently moved first.
const PER_PASS: u32 = 100;
/// Events of the log read per look.
const READ: u32 = 200;

/// The statuses a replay can have.
pub const STATUSES: [&str; 5] = ["queued", "running", "completed", "cancelled", "failed"];

/// Body of `POST /v1/webhooks/{id}/replay`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReplay {
    /// Replay the events created at or after this time (Unix seconds).
    #[serde(deserialize_with = "validate::whole")]
    #[schema(schema_with = validate::schema::timestamp_required)]
    pub since: i64,
    /// …and at or before this one (default: now; a later time is now).
    #[serde(default, deserialize_with = "validate::whole_option")]
    #[schema(schema_with = validate::schema::timestamp)]
    pub until: Option<i64>,
}

/// A replay and its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Replay {
    pub id: String,
    pub webhook_id: String,
    /// The window replayed (Unix seconds, both included).
    pub since: i64,
    pub until: i64,
    /// `queued` (nothing sent yet), `running`, `completed` (every event of
    /// the window is a delivery: see the webhook's deliveries for how they
    /// went), `cancelled` or `failed` (the webhook was deleted, or the
    /// log's retention purged the replay's place in it).
    #[schema(example = "running")]
    pub status: String,
    /// Events of the window that the webhook selects (its types and
    /// filter), counted when the replay was made.
    pub total: i64,
    /// Of those, how many are deliveries so far.
    pub sent: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<ReplayRecord> for Replay {
    fn from(r: ReplayRecord) -> Self {
        Replay {
            id: r.id,
            webhook_id: r.endpoint_id,
            since: r.since,
            until: r.until,
            status: r.status,
            total: r.total,
            sent: r.sent,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// What one look at a replay did.
enum Step {
    /// It moved on (or ended).
    Moved,
    /// Its webhook has a full window of pending deliveries.
    Full,
    /// Nothing to do now (its webhook is disabled, or another node moved it).
    Idle,
}

fn active(status: &str) -> bool {
    status == "queued" || status == "running"
}

/// Whether a replay to `endpoint` sends `e`: its types select it (`"*"`
/// only resource events), it is not an operational event about the
/// endpoint itself, and it passes the endpoint's filter.
fn selects(endpoint: &EndpointRecord, e: &EventRecord) -> bool {
    let Ok(t) = e.event_type.parse::<AnyEventType>() else {
        return false;
    };
    let subscribed = endpoint
        .events
        .0
        .iter()
        .any(|s| s == t.as_str() || (s == "*" && !t.is_operational()));
    if !subscribed {
        return false;
    }
    let envelope: serde_json::Value = serde_json::from_str(&e.body).unwrap_or_default();
    if t.is_operational() {
        let payload = &envelope["payload"];
        let about = payload["webhook_id"].as_str().or(payload["id"].as_str());
        if about == Some(endpoint.id.as_str()) {
            return false;
        }
    }
    match endpoint.filter.as_deref().map(Filter::from_stored) {
        None => true,
        Some(Ok(f)) => f.matches(&envelope),
        // Passes nothing, as at fan-out (which warns).
        Some(Err(_)) => false,
    }
}

impl Notifly {
    /// Starts replaying a webhook's window of the log. Its `total` is
    /// counted now, by reading the window once.
    pub async fn create_replay(
        &self,
        account: &str,
        webhook_id: &str,
        input: CreateReplay,
    ) -> DomainResult<Replay> {
        let now = ids::now();
        let since = validate::timestamp("since", input.since)?;
        let until = match input.until {
            Some(u) => validate::timestamp("until", u)?.min(now),
            None => now,
        };
        if since > now {
            return Err(DomainError::Invalid(
                "since is in the future: a replay sends events already written".into(),
            ));
        }
        if until < since {
            return Err(DomainError::Invalid(
                "until must not be before since".into(),
            ));
        }
        let mut conn = self.store.read().await?;
        let endpoint = found(
            conn.endpoint(account, webhook_id).await,
            "webhook",
            webhook_id,
        )?;
        self.replayable(conn.as_mut(), account, &endpoint).await?;
        let start = conn.event_before(account, since - SKEW_SECS).await?;
        let last_event = conn.latest_event_id(account).await?;
        let window = Window {
            since,
            until,
            last_event: last_event.as_deref(),
        };
        let total = count(conn.as_mut(), account, &endpoint, start.clone(), &window).await?;
        drop(conn);
        let mut tx = self.write_tx().await?;
        // Again in the write, which orders it after any other replay made
        // of this webhook meanwhile.
        let endpoint = found(
            tx.endpoint(account, webhook_id).await,
            "webhook",
            webhook_id,
        )?;
        self.replayable(tx.as_mut(), account, &endpoint).await?;
        let record = ReplayRecord {
            id: ids::new_id(),
            account_id: account.to_owned(),
            endpoint_id: endpoint.id,
            since,
            until,
            status: "queued".to_owned(),
            total,
            sent: 0,
            cursor: start,
            cursor_at: None,
            last_event,
            created_at: now,
            updated_at: now,
        };
        tx.insert_replay(account, &record).await?;
        self.commit_unpaced(tx).await?;
        self.replays.notify_one();
        Ok(record.into())
    }

    /// Refuses a replay to a disabled webhook, or to one with a replay in
    /// progress.
    async fn replayable(
        &self,
        conn: &mut dyn Conn,
        account: &str,
        endpoint: &EndpointRecord,
    ) -> DomainResult<()> {
        if !endpoint.enabled {
            return Err(DomainError::Conflict(format!(
                "webhook `{}` is disabled; enable it to replay events to it",
                endpoint.id
            )));
        }
        if let Some(r) = conn
            .replays_of(account, &endpoint.id, 10)
            .await?
            .into_iter()
            .find(|r| active(&r.status))
        {
            return Err(DomainError::Conflict(format!(
                "webhook `{}` has a replay in progress (`{}`); wait for it or cancel it",
                endpoint.id, r.id
            )));
        }
        Ok(())
    }

    /// One replay of a webhook.
    pub async fn replay(&self, account: &str, webhook_id: &str, id: &str) -> DomainResult<Replay> {
        let mut conn = self.store.read().await?;
        found(
            conn.endpoint(account, webhook_id).await,
            "webhook",
            webhook_id,
        )?;
        let r = found(conn.replay(account, id).await, KIND, id)?;
        if r.endpoint_id != webhook_id {
            return Err(DomainError::not_found(KIND, id));
        }
        Ok(r.into())
    }

    /// A webhook's latest replays, newest first.
    pub async fn replays(
        &self,
        account: &str,
        webhook_id: &str,
        limit: u32,
    ) -> DomainResult<Vec<Replay>> {
        let mut conn = self.store.read().await?;
        found(
            conn.endpoint(account, webhook_id).await,
            "webhook",
            webhook_id,
        )?;
        Ok(conn
            .replays_of(account, webhook_id, limit)
            .await?
            .into_iter()
            .map(Replay::from)
            .collect())
    }

    /// Cancels a replay in progress: it makes no more deliveries (those it
    /// made go on). A replay that has ended is a conflict.
    pub async fn cancel_replay(
        &self,
        account: &str,
        webhook_id: &str,
        id: &str,
    ) -> DomainResult<Replay> {
        let current = self.replay(account, webhook_id, id).await?;
        let mut tx = self.write_tx().await?;
        if !tx.end_replay(account, id, "cancelled", ids::now()).await? {
            return Err(DomainError::Conflict(format!(
                "replay `{id}` is {} already",
                current.status
            )));
        }
        let r = found(tx.replay(account, id).await, KIND, id)?;
        self.commit_unpaced(tx).await?;
        Ok(r.into())
    }

    /// One step of every replay in progress (up to 10, the least recently
    /// advanced first). Returns whether any made progress, and whether any
    /// waits only for its webhook's pending deliveries to go (so that a
    /// look soon would find room).
    pub async fn advance_replays(&self) -> DomainResult<(bool, bool)> {
        let active = self.store.read().await?.active_replays(PER_PASS).await?;
        let (mut progressed, mut waiting) = (false, false);
        for r in &active {
            match self.advance_replay(r).await {
                Ok(Step::Moved) => progressed = true,
                Ok(Step::Full) => waiting = true,
                Ok(Step::Idle) => {}
                // One replay's trouble holds up no other; it is looked at
                // again next pass.
                Err(e) => {
                    tracing::warn!(replay = %r.id, error = ?e, "advancing a replay failed");
                }
            }
        }
        Ok((progressed, waiting))
    }

    async fn advance_replay(&self, r: &ReplayRecord) -> DomainResult<Step> {
        let account = r.account_id.as_str();
        let mut conn = self.store.read().await?;
        let Some(endpoint) = conn.endpoint(account, &r.endpoint_id).await? else {
            return self.end_replay(r, "failed").await;
        };
        if !endpoint.enabled || endpoint.circuit != "closed" {
            // Waits until it is enabled again, or its circuit closes (or
            // the replay is cancelled).
            return Ok(Step::Idle);
        }
        let window = endpoint.rate_limit.map_or(WINDOW, |r| r.clamp(1, WINDOW));
        let room = window - conn.pending_deliveries(&endpoint.id, window).await?;
        if room <= 0 {
            return Ok(Step::Full);
        }
        let mut from = r.cursor.clone();
        let events = match conn.events_after(account, from.as_deref(), READ).await {
            Ok(events) => events,
            Err(StoreError::UnknownCursor) => {
                // Retention purged the cursor's event (and so everything
                // older): look again from where it was written. What lies
                // between may be sent twice; nothing is skipped.
                tracing::warn!(replay = %r.id, "the replay's place in the log was purged; it goes on from the oldest event left");
                from = match r.cursor_at {
                    Some(at) => conn.event_before(account, at).await?,
                    None => None,
                };
                conn.events_after(account, from.as_deref(), READ).await?
            }
            Err(e) => return Err(e.into()),
        };
        // Nothing after the cursor, its last event not reached: not settled
        // yet (PostgreSQL), or retention purged it, which ends the replay.
        let purged_end = match (&r.last_event, events.is_empty()) {
            (Some(last), true) => conn.event(account, last).await?.is_none(),
            _ => false,
        };
        drop(conn);
        let window = Window {
            since: r.since,
            until: r.until,
            last_event: r.last_event.as_deref(),
        };
        let mut next = r.clone();
        next.cursor = from;
        let mut chosen = Vec::new();
        let mut done = r.last_event.is_none() || purged_end;
        for e in events {
            if window.is_past(&e) {
                done = true;
                break;
            }
            next.cursor = Some(e.id.clone());
            next.cursor_at = Some(e.created_at);
            let last = window.is_last(&e);
            if window.holds(&e) && selects(&endpoint, &e) {
                chosen.push(e);
            }
            if last {
                done = true;
                break;
            }
            if chosen.len() as i64 == room {
                break;
            }
        }
        next.sent += chosen.len() as i64;
        next.status = if done { "completed" } else { "running" }.to_owned();
        next.updated_at = ids::now();
        if next.cursor == r.cursor && next.status == r.status {
            return Ok(Step::Idle);
        }
        let mut tx = self.write_tx().await?;
        if !tx
            .advance_replay(account, &next, r.cursor.as_deref())
            .await?
        {
            // Cancelled, or another node took this step.
            return Ok(Step::Idle);
        }
        for mut e in chosen {
            let envelope: serde_json::Value = serde_json::from_str(&e.body).unwrap_or_default();
            e.resource_id = envelope["payload"]["id"].as_str().map(str::to_owned);
            // The delivery is made now (retention and recovery go by it).
            e.created_at = ids::now();
            tx.insert_replayed_delivery(account, &e, &endpoint.id)
                .await?;
        }
        self.commit_unpaced(tx).await?;
        Ok(Step::Moved)
    }

    async fn end_replay(&self, r: &ReplayRecord, status: &str) -> DomainResult<Step> {
        let mut tx = self.write_tx().await?;
        let ended = tx
            .end_replay(&r.account_id, &r.id, status, ids::now())
            .await?;
        self.commit_unpaced(tx).await?;
        Ok(if ended { Step::Moved } else { Step::Idle })
    }
}

/// A replay's window in the log.
struct Window<'a> {
    since: i64,
    until: i64,
    /// The newest event when the replay was made, where it ends.
    last_event: Option<&'a str>,
}

impl Window<'_> {
    /// Whether `e` was written in the window.
    fn holds(&self, e: &EventRecord) -> bool {
        (self.since..=self.until).contains(&e.created_at)
    }

    /// Whether `e` is the replay's last event.
    fn is_last(&self, e: &EventRecord) -> bool {
        self.last_event == Some(e.id.as_str())
    }

    /// Whether `e`, and so (but for skew) everything after it, is past the
    /// window: the replay can end before its last event.
    fn is_past(&self, e: &EventRecord) -> bool {
        e.created_at > self.until.saturating_add(SKEW_SECS)
    }
}

/// How many events of the log after `cursor`, in `window`, `endpoint`
/// selects.
async fn count(
    conn: &mut dyn Conn,
    account: &str,
    endpoint: &EndpointRecord,
    mut cursor: Option<String>,
    window: &Window<'_>,
) -> DomainResult<i64> {
    let mut total = 0;
    if window.last_event.is_none() {
        return Ok(0);
    }
    loop {
        let events = conn.events_after(account, cursor.as_deref(), 500).await?;
        for e in &events {
            if window.is_past(e) {
                return Ok(total);
            }
            total += i64::from(window.holds(e) && selects(endpoint, e));
            if window.is_last(e) {
                return Ok(total);
            }
        }
        match events.last() {
            Some(e) => cursor = Some(e.id.clone()),
            // Not settled yet (PostgreSQL), or purged: counted so far.
            None => return Ok(total),
        }
    }
}
