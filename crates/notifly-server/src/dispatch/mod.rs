//! The dispatcher: due deliveries → leases → signed HTTP attempts → results
//! written back in batches → retries scheduled.
//!
//! ```text
//!  hand-off (new deliveries, leased at creation) ───────────┐
//!  wake (claimable work) ─┐                                 ▼
//!  poll (due) ────────────┴─► claim (lease, limits) ─► send tasks (slots)
//!                                                            │ results
//!                    next claim ◄── notify ◄── write-back (one transaction per batch)
//! ```
//!
//! A delivery created on this process is handed off: sent as soon as its
//! commit is durable, with no claim query, by a task of its own (so it never
//! waits for a claim in progress). Claims remain for retries, deliveries
//! that found their endpoint's slots full, other nodes' deliveries
//! (PostgreSQL) and work left by a dead process. Both paths take slots
//! from one [`HandOff`], which keeps to the limits in flight.
//!
//! Nothing is held locked across an HTTP call: deliveries are leased before
//! any request is sent. If this process dies, its leases are handed back at
//! the next start (SQLite) or expire, and the work is sent again
//! (at-least-once delivery).

mod schedule;
mod sender;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use schedule::{RetrySchedule, parse_duration};
pub use sender::{MAX_RESPONSE_BODY, Sender, Signing, USER_AGENT_VALUE, delivery_headers};

use crate::ids;
use crate::metrics::Metrics;
use crate::secrets::Keyring;
use crate::store::{
    AttemptResult, ClaimRequest, Claimed, EndpointPolicy, HandOff, NextStep, Store,
};

/// Most attempts in flight to an endpoint that is currently failing, so that
/// retries to dead endpoints cannot crowd out healthy ones.
const FAILING_ENDPOINT_IN_FLIGHT: u32 = 2;

/// How long a shutting-down node waits for attempts in flight before it
/// abandons them and hands their leases back.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// How soon due work that could not be claimed is looked at again, at most.
const BLOCKED_RECHECK_MS: u64 = 100;

/// How the dispatcher behaves.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    pub schedule: RetrySchedule,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Most attempts in flight in this process.
    pub max_in_flight: u32,
    /// Most attempts in flight to one endpoint, across all nodes.
    pub per_endpoint_in_flight: u32,
    /// An endpoint failing without a success for this long is disabled.
    pub disable_after: Duration,
    /// This many failed attempts in a row open an endpoint's circuit.
    pub circuit_failures: u32,
    /// Longest sleep between looks for due retries.
    pub poll_interval: Duration,
    pub allow_private_urls: bool,
}

/// A running dispatcher.
#[derive(Debug)]
pub struct Dispatcher {
    task: tokio::task::JoinHandle<()>,
}

/// How long a lease lasts: it must outlive the attempt (timeout) and its
/// write-back, which can queue behind API writes and retry: twice the
/// timeout plus 10 s.
fn lease(config: &DispatchConfig) -> Duration {
    config.timeout * 2 + Duration::from_secs(10)
}

/// The slots in flight of the dispatcher of `node`, to hand to
/// [`Dispatcher::spawn`] (and to the domain, which paces writes by them).
pub fn slots(node: &str, config: &DispatchConfig) -> HandOff {
    HandOff::new(
        node,
        lease(config).as_millis() as i64,
        config.per_endpoint_in_flight,
        FAILING_ENDPOINT_IN_FLIGHT,
        config.max_in_flight,
    )
}

impl Dispatcher {
    /// Starts dispatching. It stops when `shutdown` is cancelled: attempts in
    /// flight get a few seconds to finish and be written, and the leases of
    /// those that do not are handed back.
    ///
    /// `node` names this process; each claim's lease token is `<node>:<n>`,
    /// and at shutdown the leases under `node` are handed back. `slots`
    /// (from [`slots`]) counts the attempts in flight; `keyring` opens the
    /// endpoints' sealed signing keys; `notices` is notified when a
    /// write-back notes operational events to publish.
    // Each argument is a handle `crate::run` shares with other parts.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        node: String,
        store: Arc<dyn Store>,
        wake: Arc<Notify>,
        notices: Arc<Notify>,
        config: DispatchConfig,
        slots: Arc<HandOff>,
        metrics: Arc<Metrics>,
        keyring: Arc<Keyring>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let sender = Sender::new(config.timeout, config.allow_private_urls, keyring)?;
        let task = tokio::spawn(run(
            store, wake, notices, config, slots, metrics, shutdown, sender, node,
        ));
        Ok(Dispatcher { task })
    }

    /// Waits until the dispatcher has drained.
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "dispatcher task failed");
        }
    }
}

/// What every send task needs.
struct Sending {
    sender: Sender,
    results: mpsc::Sender<AttemptResult>,
    schedule: RetrySchedule,
    metrics: Arc<Metrics>,
    slots: Arc<HandOff>,
}

impl Sending {
    /// Sends one attempt, queues its result for the write-back and frees its slot.
    fn spawn(
        self: &Arc<Self>,
        sends: &mut JoinSet<()>,
        c: Claimed,
        body: Bytes,
        owner: String,
        handed_off: bool,
    ) {
        self.metrics.observe_start(handed_off);
        let this = self.clone();
        let mut slot = Slot {
            slots: self.slots.clone(),
            endpoint: c.endpoint_id.clone(),
            outcome: None,
        };
        sends.spawn(async move {
            let sent = this.sender.send(&c, body).await;
            if let Some(pause) = sent.throttle {
                this.slots.pause(&c.endpoint_id, pause);
            }
            slot.outcome = Some((sent.record.succeeded, sent.elapsed));
            drop(slot);
            this.metrics
                .observe_attempt(sent.record.succeeded, sent.elapsed);
            let status = sent.record.response_status;
            let (next, disable) = if sent.unsent {
                // Another node (one with the key) may send it; this one
                // tries again later. Its retry schedule is not used up.
                let next = NextStep::Retry {
                    at_ms: ids::now_ms() + UNSENT_RETRY.as_millis() as i64,
                    schedule_pos: c.schedule_pos,
                };
                (next, None)
            } else if sent.record.succeeded {
                (NextStep::Succeeded, None)
            } else if status == Some(410) {
                (
                    NextStep::Failed,
                    Some("the endpoint answered 410 Gone".to_owned()),
                )
            } else {
                let next =
                    this.schedule
                        .after_failure(c.schedule_pos, ids::now_ms(), sent.retry_after);
                (next, None)
            };
            let result = AttemptResult {
                attempt: sent.record,
                endpoint_id: c.endpoint_id,
                owner,
                next,
                disable,
                unsent: sent.unsent,
                throttle_until_ms: sent.throttle.map(|t| ids::now_ms() + t.as_millis() as i64),
                ordered: c.ordered,
            };
            let _ = this.results.send(result).await;
        });
    }
}

/// When a delivery this node could not sign (it lacks the key that sealed
/// its endpoint's keys) is due again.
const UNSENT_RETRY: Duration = Duration::from_secs(60);

/// An attempt's slot, freed when the attempt ends, however it ends (an
/// aborted or panicked task too).
struct Slot {
    slots: Arc<HandOff>,
    endpoint: String,
    /// Whether it succeeded, and how long it took, once it has ended.
    outcome: Option<(bool, Duration)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        match self.outcome {
            Some((succeeded, elapsed)) => {
                self.slots.attempt_ended(&self.endpoint, succeeded, elapsed);
            }
            None => self.slots.release(&self.endpoint),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
    notices: Arc<Notify>,
    config: DispatchConfig,
    slots: Arc<HandOff>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    sender: Sender,
    node: String,
) {
    let lease = lease(&config);
    // Whether the store takes slots for its claims and hand-offs itself.
    let handed_off = store.hand_off(slots.clone()).await;
    // Due work is waiting that the last claim could not take (its endpoints
    // were at their limits): a recorded result frees a slot for it. Without
    // a hand-off every new delivery waits for a claim, so it is always so.
    // (Work another node leaves for a claim after this one's last look is
    // announced, and wakes this dispatcher: see `Notifly::peer_committed`.)
    let blocked = Arc::new(AtomicBool::new(!handed_off));
    let (results_tx, results_rx) = mpsc::channel::<AttemptResult>(4096);
    let policy = EndpointPolicy {
        disable_after_secs: config.disable_after.as_secs() as i64,
        circuit_failures: config.circuit_failures,
    };
    let writer = tokio::spawn(write_back(
        store.clone(),
        results_rx,
        WakeAfterWrite {
            wake: wake.clone(),
            blocked: blocked.clone(),
            notices,
        },
        policy,
        metrics.clone(),
    ));
    let sending = Arc::new(Sending {
        sender,
        results: results_tx,
        schedule: config.schedule.clone(),
        metrics: metrics.clone(),
        slots: slots.clone(),
    });
    // Handed-off deliveries are sent by a task of their own, so that none
    // waits for a claim in progress (a few round trips on PostgreSQL).
    let hand_offs = tokio::spawn(send_handed_off(
        sending.clone(),
        slots.clone(),
        config.timeout,
        shutdown.clone(),
    ));
    let mut sends = JoinSet::new();
    let mut claims: u64 = 0;
    // Claim at start: work may be waiting (retries, a dead process's).
    let mut need_claim = true;
    let mut next_look = tokio::time::Instant::now();

    while !shutdown.is_cancelled() {
        while sends.try_join_next().is_some() {}
        if need_claim {
            need_claim = false;
            let free = slots.free();
            let mut claimed = Vec::new();
            // Each claim has its own lease token: a result is only applied by the
            // claim that still holds the delivery.
            let owner = format!("{node}:{claims}");
            claims += 1;
            if free > 0 {
                let request = ClaimRequest {
                    lease_ms: lease.as_millis() as i64,
                    owner: owner.clone(),
                    per_endpoint: config.per_endpoint_in_flight,
                    per_failing_endpoint: FAILING_ENDPOINT_IN_FLIGHT,
                    max: free,
                };
                match store.claim(&request).await {
                    Ok(c) => claimed = c,
                    Err(e) => {
                        tracing::warn!(error = ?e, "claiming deliveries failed; retrying");
                        need_claim = true;
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            () = shutdown.cancelled() => {}
                        }
                        continue;
                    }
                }
            }
            let full = claimed.len() as u32 == free && free > 0;
            // One body per event, shared by all its deliveries in this batch.
            let mut bodies: HashMap<String, Bytes> = HashMap::new();
            for mut c in claimed {
                if !handed_off {
                    slots.occupy(&c.endpoint_id, false);
                }
                let body = bodies
                    .entry(c.event_id.clone())
                    .or_insert_with(|| Bytes::from(std::mem::take(&mut c.body)))
                    .clone();
                sending.spawn(&mut sends, c, body, owner.clone(), false);
            }
            if full {
                need_claim = true;
                continue;
            }
            let sleep = match store.next_due_ms().await {
                Ok(Some(due)) => {
                    let wait = (due - ids::now_ms()).max(0) as u64;
                    if handed_off {
                        blocked.store(wait == 0, Ordering::Relaxed);
                    }
                    // Due work that could not be claimed (an endpoint at its
                    // limit, here or on another node) is looked at again when a
                    // result frees a slot (write-back wakes us) or a little later.
                    Duration::from_millis(wait.max(BLOCKED_RECHECK_MS)).min(config.poll_interval)
                }
                Ok(None) => {
                    if handed_off {
                        blocked.store(false, Ordering::Relaxed);
                    }
                    config.poll_interval
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "reading the next due time failed");
                    config.poll_interval
                }
            };
            next_look = tokio::time::Instant::now() + sleep;
        }
        tokio::select! {
            () = wake.notified() => need_claim = true,
            () = tokio::time::sleep_until(next_look) => need_claim = true,
            () = shutdown.cancelled() => {}
        }
    }

    drain(sends, config.timeout).await;
    if let Err(e) = hand_offs.await {
        tracing::error!(error = %e, "hand-off task failed");
    }
    drop(sending);
    if let Err(e) = writer.await {
        tracing::error!(error = %e, "write-back task failed");
    }
    match store.release_leases(&node).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(released = n, "handed back leases");
            // Tell the other nodes the work is theirs now.
            if let Err(e) = store.announce(true).await {
                tracing::debug!(error = ?e, "announcing the handed-back leases failed");
            }
        }
        Err(e) => tracing::warn!(error = ?e, "could not hand back leases; they will expire"),
    }
}

/// Sends the deliveries handed off to this process as they come, until
/// `shutdown`; then drains them like the claimed ones.
async fn send_handed_off(
    sending: Arc<Sending>,
    slots: Arc<HandOff>,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut sends = JoinSet::new();
    loop {
        tokio::select! {
            ready = slots.next() => {
                // New deliveries, leased and durable: send them, no claim.
                while sends.try_join_next().is_some() {}
                for (c, body) in ready {
                    sending.spawn(&mut sends, c, body, slots.owner().to_owned(), true);
                }
            }
            () = shutdown.cancelled() => break,
        }
    }
    drain(sends, timeout).await;
}

/// At shutdown, attempts in flight get a short grace to finish and be
/// written; the rest are abandoned unrecorded and their leases handed back
/// (see `run`), so another node (or this one after a restart) sends them at
/// once instead of waiting for the leases to expire.
async fn drain(mut sends: JoinSet<()>, timeout: Duration) {
    let drained = tokio::time::timeout(DRAIN_GRACE.min(timeout), async {
        while sends.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            abandoned = sends.len(),
            "attempts still in flight at shutdown were abandoned"
        );
        sends.abort_all();
        while sends.join_next().await.is_some() {}
    }
}

/// When a write-back wakes the dispatcher to claim.
struct WakeAfterWrite {
    wake: Arc<Notify>,
    /// Due work is waiting for a slot.
    blocked: Arc<AtomicBool>,
    /// The publisher of operational events (`crate::notices`).
    notices: Arc<Notify>,
}

impl WakeAfterWrite {
    /// After `batch` is recorded: if work waits for the slots it freed, or
    /// a retry is now scheduled (perhaps before the dispatcher's next look),
    /// or a delivery of an endpoint with per-resource ordering ended (the
    /// next about its resource may go now).
    /// The publisher too, if it noted operational events.
    fn after(&self, batch: &[AttemptResult], notices: u64) {
        if notices > 0 {
            self.notices.notify_one();
        }
        let wake = batch
            .iter()
            .any(|r| matches!(r.next, NextStep::Retry { .. }) || (r.ordered && !r.unsent));
        if wake || self.blocked.load(Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }
}

/// Writes attempt results in batches: one transaction (one fsync) for as many
/// results as have arrived, instead of one per delivery.
async fn write_back(
    store: Arc<dyn Store>,
    mut results: mpsc::Receiver<AttemptResult>,
    wake: WakeAfterWrite,
    policy: EndpointPolicy,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::with_capacity(512);
    while results.recv_many(&mut batch, 512).await > 0 {
        let mut backoff = Duration::from_millis(100);
        let mut notices = 0;
        loop {
            match store.record_attempts(&batch, &policy).await {
                Ok(n) => {
                    notices = n;
                    break;
                }
                Err(e) => {
                    // Not lost either way: unrecorded leases expire and the
                    // deliveries are attempted again.
                    crate::metrics::background_write_failed(
                        "writing attempt results",
                        e.is_storage_full(),
                        &e,
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    if backoff == Duration::from_secs(5) && results.is_closed() {
                        tracing::error!(
                            results = batch.len(),
                            "giving up on attempt results at shutdown"
                        );
                        break;
                    }
                }
            }
        }
        metrics.observe_outcomes(&batch);
        wake.after(&batch, notices);
        batch.clear();
    }
}
