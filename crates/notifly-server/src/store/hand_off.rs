//! The hot path for new deliveries: handed to this process's dispatcher in
//! memory, without a claim.
//!
//! A store that supports it (SQLite, where one process serves the database)
//! leases each new delivery to this process in the transaction that creates
//! it, if the endpoint has a free slot, and queues it here once the
//! transaction's `COMMIT` is durable. The dispatcher sends what is queued
//! straight away. Nothing is lost if the process dies between the commit
//! and the send: the rows are leased, not sent, and leases left by a dead
//! process are handed back when the next one starts serving (or expire).
//!
//! The slots are this process's attempts in flight, per endpoint and in
//! all. The store takes them under its writer, both for hand-offs and for
//! claims, so the two paths together never exceed the limits; the
//! dispatcher frees one when an attempt ends.

use std::collections::HashMap;
use std::sync::Mutex;

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
}

#[derive(Debug, Default)]
struct Slots {
    by_endpoint: HashMap<String, u32>,
    total: u32,
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
        }
    }

    /// The lease token of handed-off deliveries.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// How long a handed-off delivery is leased.
    pub fn lease_ms(&self) -> i64 {
        self.lease_ms
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for a new delivery to `endpoint`, if both limits allow.
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
        let n = slots.by_endpoint.get(endpoint).copied().unwrap_or(0);
        if n >= limit {
            return false;
        }
        slots.by_endpoint.insert(endpoint.to_owned(), n + 1);
        slots.total += 1;
        true
    }

    /// Takes a slot for a claimed delivery (the claim already kept to the limits).
    pub(crate) fn occupy(&self, endpoint: &str) {
        let mut slots = self.slots();
        *slots.by_endpoint.entry(endpoint.to_owned()).or_insert(0) += 1;
        slots.total += 1;
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
        h.occupy("e1");
        assert!(!h.reserve("e1", false));
        h.release("unknown");
        assert_eq!(h.free(), 0);
    }
}
