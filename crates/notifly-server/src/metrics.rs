//! Prometheus metrics for deliveries, in the text exposition format.
//!
//! Counters and the latency histogram live in this process; queue figures are
//! read from the store at scrape time, so every node reports the shared queue.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use crate::store::{AttemptResult, NextStep, QueueStats};

/// Upper bounds of the attempt-latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process's delivery counters.
#[derive(Debug, Default)]
pub struct Metrics {
    attempts_ok: AtomicU64,
    attempts_failed: AtomicU64,
    succeeded: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    handed_off: AtomicU64,
    claimed: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl Metrics {
    /// Counts one attempt and its latency.
    pub fn observe_attempt(&self, succeeded: bool, elapsed: Duration) {
        let counter = if succeeded {
            &self.attempts_ok
        } else {
            &self.attempts_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts an attempt started, by how the dispatcher got it.
    pub fn observe_start(&self, handed_off: bool) {
        let counter = if handed_off {
            &self.handed_off
        } else {
            &self.claimed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts where written-back deliveries went.
    pub fn observe_outcomes(&self, results: &[AttemptResult]) {
        for r in results {
            let counter = match r.next {
                NextStep::Succeeded => &self.succeeded,
                NextStep::Retry { .. } => &self.retried,
                NextStep::Failed => &self.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The exposition text, with the queue figures read from the store.
    pub fn render(&self, queue: Option<QueueStats>) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::with_capacity(2048);
        let _ = writeln!(
            out,
            "# HELP notifly_delivery_attempts_total HTTP attempts made, by result."
        );
        let _ = writeln!(out, "# TYPE notifly_delivery_attempts_total counter");
        let _ = writeln!(
            out,
            "notifly_delivery_attempts_total{{result=\"success\"}} {}",
            get(&self.attempts_ok)
        );
        let _ = writeln!(
            out,
            "notifly_delivery_attempts_total{{result=\"failure\"}} {}",
            get(&self.attempts_failed)
        );
        let _ = writeln!(
            out,
            "# HELP notifly_delivery_starts_total Attempts started, by how the dispatcher got them: handed off by the write that created the delivery, or claimed from the queue (retries, deliveries that waited for a slot, work of a process that stopped)."
        );
        let _ = writeln!(out, "# TYPE notifly_delivery_starts_total counter");
        let _ = writeln!(
            out,
            "notifly_delivery_starts_total{{path=\"hand_off\"}} {}",
            get(&self.handed_off)
        );
        let _ = writeln!(
            out,
            "notifly_delivery_starts_total{{path=\"claim\"}} {}",
            get(&self.claimed)
        );
        let _ = writeln!(
            out,
            "# HELP notifly_deliveries_total Deliveries by outcome of their latest attempt: succeeded, retry scheduled, or failed for good."
        );
        let _ = writeln!(out, "# TYPE notifly_deliveries_total counter");
        let _ = writeln!(
            out,
            "notifly_deliveries_total{{outcome=\"succeeded\"}} {}",
            get(&self.succeeded)
        );
        let _ = writeln!(
            out,
            "notifly_deliveries_total{{outcome=\"retrying\"}} {}",
            get(&self.retried)
        );
        let _ = writeln!(
            out,
            "notifly_deliveries_total{{outcome=\"failed\"}} {}",
            get(&self.failed)
        );
        let _ = writeln!(
            out,
            "# HELP notifly_delivery_attempt_duration_seconds Time from sending a webhook to its response (or error)."
        );
        let _ = writeln!(
            out,
            "# TYPE notifly_delivery_attempt_duration_seconds histogram"
        );
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "notifly_delivery_attempt_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                get(&self.buckets[i])
            );
        }
        let count = get(&self.latency_count);
        let _ = writeln!(
            out,
            "notifly_delivery_attempt_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "notifly_delivery_attempt_duration_seconds_sum {}",
            get(&self.latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "notifly_delivery_attempt_duration_seconds_count {count}"
        );
        if let Some(q) = queue {
            for (name, help, value) in [
                (
                    "notifly_delivery_queue_depth",
                    "Deliveries pending (waiting, due or in flight).",
                    q.pending,
                ),
                (
                    "notifly_delivery_queue_due",
                    "Pending deliveries whose attempt is due now, including due retries.",
                    q.due,
                ),
                (
                    "notifly_delivery_in_flight",
                    "Deliveries leased by a node and being attempted.",
                    q.in_flight,
                ),
                (
                    "notifly_endpoints_disabled",
                    "Webhook endpoints currently disabled.",
                    q.disabled_endpoints,
                ),
                (
                    "notifly_deliveries_held_by_open_circuits",
                    "Due deliveries not attempted because their endpoint's circuit is open: the attempts it saves.",
                    q.held_by_circuits,
                ),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} gauge");
                let _ = writeln!(out, "{name} {value}");
            }
            let _ = writeln!(
                out,
                "# HELP notifly_endpoint_circuit Endpoints whose circuit is not closed (1 per endpoint, by state)."
            );
            let _ = writeln!(out, "# TYPE notifly_endpoint_circuit gauge");
            for (endpoint, state) in &q.circuits {
                let _ = writeln!(
                    out,
                    "notifly_endpoint_circuit{{endpoint=\"{endpoint}\",state=\"{state}\"}} 1"
                );
            }
        }
        out
    }
}
