//! The hot path for new deliveries: handed to this process's dispatcher in
//! memory, without a claim.
//!
//! The store leases each new delivery to this process in the transaction
//! that creates it, if the endpoint has a free slot, and queues it here once
//! the transaction's `COMMIT` is durable. The dispatcher sends what is queued
//! straight away. Nothing is lost if the process dies between the commit
//! and the send: the rows are leased, not sent, and leases left by a dead
//! process are handed back when the next one starts serving (or expire).
//!
//! The slots are this process's attempts in flight, per endpoint and in
//! all; the dispatcher frees one when an attempt ends. On SQLite (one
//! process serves the database) they are the limits themselves: the store
//! takes them under its writer, both for hand-offs and for claims, so the
//! two paths together never exceed them. On PostgreSQL an endpoint's limit
//! is shared by every node, so its slots are rows of the database
//! (`endpoint_slots`), held by each leased delivery until its result is
//! written: a write or a claim takes a free one there (never waiting for
//! another node's), and counts it here too, with this process's limit in
//! all ([`HandOff::take_total`]).
//!
//! **Pacing.** A delivery that finds its endpoint's slots full waits in the
//! queue for a claim. If the endpoint is keeping up (its recent attempts
//! succeed, quickly), a queue there means the server accepts events faster
//! than it can deliver them, and the write that queued it is paced: its
//! response waits (after the commit) until that endpoint's queue is short
//! again, so clients slow down instead of a backlog, and the time from
//! acknowledgement to delivery, growing without bound. An endpoint that is
//! slow, failing or hanging is not keeping up: its queue is its own, and
//! nobody waits for it.
//!
//! On PostgreSQL each claim also records what it left waiting per endpoint
//! ([`HandOff::left_waiting`]): the queue as every node sees it, including
//! other nodes' deliveries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use tokio::sync::Notify;

use super::Claimed;

/// A delivery ready to send: its claim (with an empty `body`) and the body,
/// shared by all the deliveries of one event.
pub type Ready = (Claimed, Bytes);

/// Slots in flight and the queue of handed-off deliveries.
#[derive(Debug)]
pub struct HandOff {
    owner: String,
    lease_ms: i64,
    per_endpoint: u32,
    per_failing_endpoint: u32,
    max: u32,
    slots: Mutex<Slots>,
    ready: Mutex<Vec<Ready>>,
    arrived: Notify,
    /// A queued delivery was taken by a claim.
    drained: Notify,
}

#[derive(Debug, Default)]
struct Slots {
    by_endpoint: HashMap<String, u32>,
    total: u32,
    flows: HashMap<String, Flow>,
}

/// How one endpoint is doing, for pacing.
#[derive(Debug, Default)]
struct Flow {
    /// Deliveries created here that found no slot and wait for a claim.
    queued: u32,
    /// Moving average of its successful attempts' durations (µs).
    mean_us: f64,
    /// When an attempt to it last succeeded.
    last_success: Option<Instant>,
    /// It asked to be slowed down (429, 502, 504): nothing is handed off
    /// to it before this. The store keeps the pause for every node; this
    /// copy closes the gap until the attempt's result is written.
    paused_until: Option<Instant>,
}

/// An endpoint keeps up if an attempt succeeded this recently…
const KEEPING_UP_WITHIN: Duration = Duration::from_secs(1);
/// …and its successful attempts take less than this on average.
const KEEPING_UP_MEAN: Duration = Duration::from_millis(200);
/// The longest a write is paced: past it, the response goes out anyway.
pub const MAX_PACE: Duration = Duration::from_secs(5);

impl Flow {
    fn paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|until| until > now)
    }

    fn keeping_up(&self, now: Instant) -> bool {
        self.last_success
            .is_some_and(|at| now.duration_since(at) < KEEPING_UP_WITHIN)
            && self.mean_us < KEEPING_UP_MEAN.as_micros() as f64
    }
}

impl HandOff {
    /// Slots for `max` attempts in flight, at most `per_endpoint` to one
    /// endpoint (`per_failing_endpoint` to a failing one). Handed-off
    /// deliveries are leased for `lease_ms` to `<node>:h`.
    pub fn new(
        node: &str,
        lease_ms: i64,
        per_endpoint: u32,
        per_failing_endpoint: u32,
        max: u32,
    ) -> Self {
        HandOff {
            owner: format!("{node}:h"),
            lease_ms,
            per_endpoint,
            per_failing_endpoint: per_failing_endpoint.min(per_endpoint),
            max,
            slots: Mutex::default(),
            ready: Mutex::default(),
            arrived: Notify::new(),
            drained: Notify::new(),
        }
    }

    /// The lease token of handed-off deliveries.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Most attempts in flight to one endpoint.
    pub fn per_endpoint(&self) -> u32 {
        self.per_endpoint
    }

    /// How long a handed-off delivery is leased.
    pub fn lease_ms(&self) -> i64 {
        self.lease_ms
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for a new delivery to `endpoint`, if both limits allow
    /// and no older delivery to it waits in the queue (it goes first: a new
    /// one must not take the slot it waits for, nor overtake it).
    pub(crate) fn reserve(&self, endpoint: &str, failing: bool) -> bool {
        let limit = if failing {
            self.per_failing_endpoint
        } else {
            self.per_endpoint
        };
        let mut slots = self.slots();
        if slots.total >= self.max {
            return false;
        }
        let now = Instant::now();
        if slots
            .flows
            .get(endpoint)
            .is_some_and(|f| f.queued > 0 || f.paused(now))
        {
            return false;
        }
        let n = slots.by_endpoint.get(endpoint).copied().unwrap_or(0);
        if n >= limit {
            return false;
        }
        slots.by_endpoint.insert(endpoint.to_owned(), n + 1);
        slots.total += 1;
        true
    }

    /// Takes a slot for a claimed delivery (the claim already kept to the
    /// limits). `first`: its first attempt, so it may be one that waited in
    /// the queue.
    pub(crate) fn occupy(&self, endpoint: &str, first: bool) {
        let mut slots = self.slots();
        *slots.by_endpoint.entry(endpoint.to_owned()).or_insert(0) += 1;
        slots.total += 1;
        if first && let Some(flow) = slots.flows.get_mut(endpoint) {
            flow.queued = flow.queued.saturating_sub(1);
            drop(slots);
            self.drained.notify_waiters();
        }
    }

    /// Takes up to `n` of this process's slots in all, for the hand-offs of
    /// one write whose endpoints' own slots are held in the database
    /// (PostgreSQL, whose nodes share them): returns how many it took.
    /// Each that the write hands off becomes one endpoint's slot
    /// ([`HandOff::took_slot`]); the rest go back ([`HandOff::give_back`]).
    pub(crate) fn take_total(&self, n: u32) -> u32 {
        let mut slots = self.slots();
        let took = n.min(self.max.saturating_sub(slots.total));
        slots.total += took;
        took
    }

    /// One slot taken by [`HandOff::take_total`] went to a delivery to
    /// `endpoint`, which holds one of the endpoint's slots in the database.
    pub(crate) fn took_slot(&self, endpoint: &str) {
        *self
            .slots()
            .by_endpoint
            .entry(endpoint.to_owned())
            .or_insert(0) += 1;
    }

    /// Gives back `n` slots taken by [`HandOff::take_total`] and not used.
    pub(crate) fn give_back(&self, n: u32) {
        let mut slots = self.slots();
        slots.total = slots.total.saturating_sub(n);
    }

    /// The endpoints with deliveries waiting in their queue, or paused: a
    /// new delivery to one of them is not handed off (it would overtake
    /// them, or go before the pause ends).
    pub(crate) fn queued_endpoints(&self) -> Vec<String> {
        let now = Instant::now();
        self.slots()
            .flows
            .iter()
            .filter(|(_, f)| f.queued > 0 || f.paused(now))
            .map(|(e, _)| e.clone())
            .collect()
    }

    /// The endpoint asked to be slowed down: hand nothing off to it for
    /// `pause` (claims keep to the pause the attempt's result records).
    /// Called before the attempt's slot is freed.
    pub fn pause(&self, endpoint: &str, pause: Duration) {
        let until = Instant::now() + pause;
        let mut slots = self.slots();
        let flow = slots.flows.entry(endpoint.to_owned()).or_default();
        flow.paused_until = Some(flow.paused_until.map_or(until, |u| u.max(until)));
    }

    /// Undoes [`HandOff::occupy`]: the claim was rolled back, so the
    /// delivery waits in the queue again.
    pub(crate) fn unoccupy(&self, endpoint: &str, first: bool) {
        self.release(endpoint);
        if first {
            self.queued(endpoint);
        }
    }

    /// Counts a delivery that found no slot and waits for a claim. Called
    /// under the writer when the row is written, so before any claim can
    /// take it; [`HandOff::unqueue`] undoes it if the write is rolled back.
    pub(crate) fn queued(&self, endpoint: &str) {
        self.slots()
            .flows
            .entry(endpoint.to_owned())
            .or_default()
            .queued += 1;
    }

    /// Where claims alone start deliveries (PostgreSQL): records what the
    /// latest claim left waiting, per endpoint: due deliveries it did not
    /// take because the endpoint (or this node) was at its limit. They count
    /// as queued for pacing, in place of what earlier claims left.
    pub(crate) fn left_waiting(&self, waiting: HashMap<String, u32>) {
        let mut slots = self.slots();
        for (endpoint, flow) in &mut slots.flows {
            flow.queued = waiting.get(endpoint).copied().unwrap_or(0);
        }
        for (endpoint, n) in waiting {
            slots.flows.entry(endpoint).or_default().queued = n;
        }
        drop(slots);
        self.drained.notify_waiters();
    }

    /// The write that queued a delivery to `endpoint` was rolled back.
    pub(crate) fn unqueue(&self, endpoint: &str) {
        if let Some(flow) = self.slots().flows.get_mut(endpoint) {
            flow.queued = flow.queued.saturating_sub(1);
        }
    }

    /// An attempt ended: frees its slot and notes how the endpoint is doing.
    pub fn attempt_ended(&self, endpoint: &str, succeeded: bool, elapsed: Duration) {
        if succeeded {
            let mut slots = self.slots();
            let flow = slots.flows.entry(endpoint.to_owned()).or_default();
            let us = elapsed.as_micros() as f64;
            flow.mean_us = if flow.last_success.is_none() {
                us
            } else {
                0.9 * flow.mean_us + 0.1 * us
            };
            flow.last_success = Some(Instant::now());
        }
        self.release(endpoint);
    }

    /// Whether a write that queued deliveries to `endpoints` should wait:
    /// one of them keeps up and has a full slot's worth queued already.
    fn backed_up(&self, endpoints: &[String]) -> bool {
        let now = Instant::now();
        let slots = self.slots();
        endpoints.iter().any(|e| {
            slots
                .flows
                .get(e)
                .is_some_and(|f| f.queued >= self.per_endpoint && f.keeping_up(now))
        })
    }

    /// Waits, at most [`MAX_PACE`], while the endpoints a write queued
    /// deliveries to are backed up (see the module's documentation).
    /// Returns whether it waited.
    pub async fn pace(&self, endpoints: &[String]) -> bool {
        let deadline = tokio::time::Instant::now() + MAX_PACE;
        let mut waited = false;
        loop {
            let drained = self.drained.notified();
            if !self.backed_up(endpoints) {
                return waited;
            }
            waited = true;
            // A claim that takes queued work wakes us; the short sleep
            // covers an endpoint that stops keeping up meanwhile.
            tokio::select! {
                () = drained => {}
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return waited;
            }
        }
    }

    /// Frees the slot of an attempt that ended, or of a hand-off that was
    /// rolled back.
    pub fn release(&self, endpoint: &str) {
        let mut slots = self.slots();
        if let Some(n) = slots.by_endpoint.get_mut(endpoint) {
            *n -= 1;
            if *n == 0 {
                slots.by_endpoint.remove(endpoint);
            }
            slots.total = slots.total.saturating_sub(1);
        }
    }

    /// Slots free in all.
    pub fn free(&self) -> u32 {
        self.max.saturating_sub(self.slots().total)
    }

    /// Queues deliveries whose creation is durable.
    pub(crate) fn deliver(&self, batch: Vec<Ready>) {
        if batch.is_empty() {
            return;
        }
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(batch);
        self.arrived.notify_one();
    }

    /// Waits for queued deliveries and takes them all.
    pub async fn next(&self) -> Vec<Ready> {
        loop {
            let batch = std::mem::take(&mut *self.ready.lock().unwrap_or_else(|e| e.into_inner()));
            if !batch.is_empty() {
                return batch;
            }
            self.arrived.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_keep_to_both_limits_and_come_back() {
        let h = HandOff::new("node-a", 1000, 2, 1, 3);
        assert_eq!(h.owner(), "node-a:h");
        assert!(h.reserve("e1", false));
        assert!(h.reserve("e1", false));
        assert!(!h.reserve("e1", false), "per-endpoint limit");
        assert!(h.reserve("e2", true));
        assert!(!h.reserve("e3", false), "global limit");
        assert_eq!(h.free(), 0);
        h.release("e2");
        assert!(h.reserve("e2", true));
        assert!(!h.reserve("e2", true), "failing endpoints get fewer slots");
        h.release("e1");
        h.occupy("e1", false);
        assert!(!h.reserve("e1", false));
        h.release("unknown");
        assert_eq!(h.free(), 0);
    }

    #[tokio::test]
    async fn writes_are_paced_only_for_endpoints_that_keep_up() {
        let h = HandOff::new("node-a", 1000, 2, 1, 100);
        let fast = vec!["fast".to_owned()];
        let slow = vec!["slow".to_owned()];
        let failing = vec!["failing".to_owned()];
        // Two queued to each (the per-endpoint limit): only now is a queue long.
        for _ in 0..2 {
            for endpoint in ["fast", "slow", "failing"] {
                h.queued(endpoint);
            }
        }
        assert!(
            !h.reserve("fast", false),
            "a new delivery does not overtake queued ones"
        );
        // Nothing is known of them yet: nobody waits.
        assert!(!h.pace(&fast).await);
        for _ in 0..3 {
            h.occupy("fast", false);
            h.attempt_ended("fast", true, Duration::from_millis(2));
            h.occupy("slow", false);
            h.attempt_ended("slow", true, Duration::from_secs(2));
            h.occupy("failing", false);
            h.attempt_ended("failing", false, Duration::from_millis(1));
        }
        assert_eq!(h.free(), 100, "every slot came back");
        assert!(!h.pace(&slow).await, "a slow endpoint's queue is its own");
        assert!(!h.pace(&failing).await, "so is a failing one's");
        // The fast one is backed up: the write waits until a claim takes
        // from its queue.
        let h = std::sync::Arc::new(h);
        let waiter = tokio::spawn({
            let h = h.clone();
            async move { h.pace(&fast).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "paced while the queue is long");
        h.occupy("fast", true);
        let waited = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("released once the queue is short")
            .unwrap();
        assert!(waited);
    }
}
