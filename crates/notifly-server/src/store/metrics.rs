//! What the store measures of its own work: write transactions, their
//! commits, how many writes each commit made durable, and waits for a
//! connection or the writer.
//!
//! The store only observes; [`crate::metrics`] registers these beside the
//! rest and encodes them. Every observation is a clock read and a histogram
//! update (a short lock, no allocation): they run once per write.

use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Upper bounds of the database timing buckets, in seconds: from a
/// statement's microseconds to a stuck lock's seconds.
const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The connections a caller waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pool {
    /// SQLite's single writer connection (its queue of writes).
    Writer,
    /// SQLite's read-only connections.
    Readers,
    /// PostgreSQL's pool for API requests (reads and writes).
    Api,
    /// PostgreSQL's pool for the node's background work (claims,
    /// write-backs, retention).
    Background,
}

impl Pool {
    /// Its `pool` label value.
    fn label(self) -> [(&'static str, &'static str); 1] {
        let name = match self {
            Pool::Writer => "writer",
            Pool::Readers => "readers",
            Pool::Api => "api",
            Pool::Background => "background",
        };
        [("pool", name)]
    }
}

/// The store's metrics. A store opened without a registered one (tools,
/// tests) observes into a [`Default`] one that nobody reads.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    write_duration: Histogram,
    commit_duration: Histogram,
    group_size: Histogram,
    waits: Family<[(&'static str, &'static str); 1], Histogram>,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            write_duration: Histogram::new(DURATION_BUCKETS),
            commit_duration: Histogram::new(DURATION_BUCKETS),
            group_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            waits: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
        }
    }
}

impl StoreMetrics {
    /// Adds these metrics to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "notifly_db_write_duration_seconds",
            "Write transactions that committed, from their start (once they had a connection, or SQLite's writer) until their commit returned, durable",
            self.write_duration.clone(),
        );
        registry.register(
            "notifly_db_commit_duration_seconds",
            "The COMMIT statement of each committed transaction (SQLite: of each group of writes), which waits for the disk",
            self.commit_duration.clone(),
        );
        registry.register(
            "notifly_db_commit_group_size",
            "Write transactions made durable by one commit: SQLite commits its writes in groups; on PostgreSQL each transaction commits alone (1)",
            self.group_size.clone(),
        );
        registry.register(
            "notifly_db_acquire_wait_seconds",
            "Time spent waiting for a connection, by pool: SQLite's writer (behind the writes queued before) and readers; PostgreSQL's api and background pools (including the BEGIN of a write)",
            self.waits.clone(),
        );
    }

    /// A caller waited `waited` for a connection of `pool`.
    pub(crate) fn waited(&self, pool: Pool, waited: Duration) {
        self.waits
            .get_or_create(&pool.label())
            .observe(waited.as_secs_f64());
    }

    /// A write transaction committed, `took` after it started.
    pub(crate) fn wrote(&self, took: Duration) {
        self.write_duration.observe(took.as_secs_f64());
    }

    /// A `COMMIT` that took `took` made `writes` write transactions durable.
    pub(crate) fn committed(&self, took: Duration, writes: u64) {
        self.commit_duration.observe(took.as_secs_f64());
        self.group_size.observe(writes as f64);
    }
}
