//! Prometheus metrics, encoded by `prometheus-client` in the Prometheus text
//! format (version 0.0.4).
//!
//! The process keeps counters and histograms of its deliveries, its HTTP
//! requests and its database writes ([`StoreMetrics`], observed by the
//! store). Queue figures are read from the store at scrape time, so every
//! node reports the shared queue.
//!
//! Label sets are bounded: HTTP requests are labelled by route template
//! (`unmatched` when no route matched, never the raw path), method (the
//! standard ones, or `other`) and status class.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::extract::MatchedPath;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::store::{AttemptResult, NextStep, QueueStats, StoreMetrics};

/// The `Content-Type` of [`Metrics::render`]'s text.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the attempt-latency histogram buckets, in seconds.
const ATTEMPT_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds of the HTTP request duration buckets, in seconds.
const REQUEST_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The route label of a request that matched no route.
const UNMATCHED: &str = "unmatched";

/// One label with a fixed value.
type StaticLabel = [(&'static str, &'static str); 1];

/// The process's metrics, with the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    attempts_ok: Counter,
    attempts_failed: Counter,
    succeeded: Counter,
    retried: Counter,
    failed: Counter,
    handed_off: Counter,
    claimed: Counter,
    attempt_duration: Histogram,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram>,
    requests_in_flight: Gauge,
    store: Arc<StoreMetrics>,
    storage: StorageWatch,
}

/// Logs a failed write of a background task (the dispatcher's write-back,
/// the purge, the notices, the replays), which retries by itself. While the
/// storage is full every such task fails at each retry; that is said once a
/// minute for all of them together (with what failed first), not once per
/// retry per task; `/healthz` tells the state from the API's side
/// ([`StorageWatch`]).
pub fn background_write_failed(task: &str, storage_full: bool, error: &dyn std::fmt::Debug) {
    static FULL_LOGGED: OnceAMinute = OnceAMinute::new();
    if !storage_full {
        tracing::warn!(error = ?error, "{task} failed; retrying");
        return;
    }
    if FULL_LOGGED.allows(crate::ids::now()) {
        tracing::warn!(
            error = ?error,
            "{task} failed: the storage is full; background writes retry until there is space \
             (said at most once a minute)"
        );
    }
}

/// A log line that may come at most once a minute: for a state that a
/// failing disk, database or collector repeats many times a second.
#[derive(Debug)]
pub struct OnceAMinute(std::sync::atomic::AtomicI64);

impl OnceAMinute {
    pub const fn new() -> Self {
        OnceAMinute(std::sync::atomic::AtomicI64::new(i64::MIN))
    }

    /// Whether to log at `now` (Unix seconds): no line was allowed in the
    /// minute before it. One caller wins when several ask at once.
    pub fn allows(&self, now: i64) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let last = self.0.load(SeqCst);
        now.saturating_sub(last) >= 60 && self.0.compare_exchange(last, now, SeqCst, SeqCst).is_ok()
    }
}

impl Default for OnceAMinute {
    fn default() -> Self {
        OnceAMinute::new()
    }
}

/// Whether writes are being refused because the server's storage is full,
/// as its answers show it: set by a request refused for it (an
/// [`crate::api::error::StorageFull`] response), cleared by the next write
/// that succeeds. Each change is logged once, with where the storage is, so
/// that a full disk is one line in the log, not one per request; `/healthz`
/// and `/metrics` show the state.
#[derive(Debug, Default)]
pub struct StorageWatch {
    /// Unix seconds since writes have been refused; 0 while they are not.
    full_since: std::sync::atomic::AtomicI64,
    /// Where the database and the attachments are, for the log.
    location: std::sync::OnceLock<String>,
    /// A disk that has room for small writes but not large ones flips the
    /// state often; the log says so at most once a minute.
    logged: OnceAMinute,
    /// Set from `full_since` when the metrics are rendered.
    full: Gauge,
    refused: Counter,
}

impl StorageWatch {
    /// Adds its gauge and counter to `registry`.
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "notifly_storage_full",
            "1 while writes are refused because the server's storage (the database's or the attachments') is full: set by a refused write, cleared by the next write that succeeds",
            self.full.clone(),
        );
        registry.register(
            "notifly_storage_full_refusals",
            "Requests answered 503 because the server's storage was full",
            self.refused.clone(),
        );
    }

    /// Says where the storage is (once, at start).
    pub fn locate(&self, location: String) {
        let _ = self.location.set(location);
    }

    /// Where the storage is, as [`StorageWatch::locate`] said.
    pub fn location(&self) -> &str {
        self.location.get().map_or("(unknown)", String::as_str)
    }

    /// Since when (Unix seconds) writes have been refused for want of
    /// space, if they are.
    pub fn full_since(&self) -> Option<i64> {
        match self.full_since.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            since => Some(since),
        }
    }

    /// A request was refused because the storage is full.
    pub fn refused(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.refused.inc();
        let now = crate::ids::now().max(1);
        if self
            .full_since
            .compare_exchange(0, now, SeqCst, SeqCst)
            .is_ok()
            && self.logged.allows(now)
        {
            tracing::error!(
                storage = self.location(),
                "writes are refused (503): the storage is full. Free space there; \
                 writes resume by themselves"
            );
        }
    }

    /// A write succeeded: if writes were being refused, they no longer are.
    pub fn wrote(&self) {
        use std::sync::atomic::Ordering::{Relaxed, SeqCst};
        if self.full_since.load(Relaxed) == 0 {
            return;
        }
        let since = self.full_since.swap(0, SeqCst);
        let now = crate::ids::now();
        if since != 0 && self.logged.allows(now) {
            tracing::warn!(
                storage = self.location(),
                refused_for_secs = now - since,
                "the storage has space again: writes resumed"
            );
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();

        let attempts = Family::<StaticLabel, Counter>::default();
        registry.register(
            "notifly_delivery_attempts",
            "HTTP attempts made, by result",
            attempts.clone(),
        );
        let starts = Family::<StaticLabel, Counter>::default();
        registry.register(
            "notifly_delivery_starts",
            "Attempts started, by how the dispatcher got them: handed off by the write that created the delivery, or claimed from the queue (retries, deliveries that waited for a slot, work of a process that stopped)",
            starts.clone(),
        );
        let outcomes = Family::<StaticLabel, Counter>::default();
        registry.register(
            "notifly_deliveries",
            "Deliveries by outcome of their latest attempt: succeeded, retry scheduled, or failed for good",
            outcomes.clone(),
        );
        let attempt_duration = Histogram::new(ATTEMPT_BUCKETS);
        registry.register(
            "notifly_delivery_attempt_duration_seconds",
            "Time from sending a webhook to its response (or error)",
            attempt_duration.clone(),
        );

        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "notifly_http_requests",
            "HTTP requests answered (API, dashboard and operations), by route template (`unmatched` for none), method and status class",
            requests.clone(),
        );
        let request_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(request_histogram);
        registry.register(
            "notifly_http_request_duration_seconds",
            "Time from receiving an HTTP request to its response's start (an event stream's body is not included), by route template and method",
            request_duration.clone(),
        );
        let requests_in_flight = Gauge::default();
        registry.register(
            "notifly_http_requests_in_flight",
            "HTTP requests received whose response has not started yet",
            requests_in_flight.clone(),
        );

        let store = Arc::new(StoreMetrics::default());
        store.register(&mut registry);

        let storage = StorageWatch::default();
        storage.register(&mut registry);

        // Every series of a fixed label set exists from the start (at 0),
        // and the hot paths increment them without a look-up.
        let label = |family: &Family<StaticLabel, Counter>, name, value| {
            family.get_or_create_owned(&[(name, value)])
        };
        Metrics {
            attempts_ok: label(&attempts, "result", "success"),
            attempts_failed: label(&attempts, "result", "failure"),
            handed_off: label(&starts, "path", "hand_off"),
            claimed: label(&starts, "path", "claim"),
            succeeded: label(&outcomes, "outcome", "succeeded"),
            retried: label(&outcomes, "outcome", "retrying"),
            failed: label(&outcomes, "outcome", "failed"),
            attempt_duration,
            requests,
            request_duration,
            requests_in_flight,
            store,
            storage,
            registry,
        }
    }
}

/// A histogram of request durations (a [`Family`]'s constructor).
fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

impl Metrics {
    /// The store's metrics, to hand to the store when it is opened.
    pub fn store(&self) -> Arc<StoreMetrics> {
        self.store.clone()
    }

    /// Whether writes are being refused for want of storage space.
    pub fn storage(&self) -> &StorageWatch {
        &self.storage
    }

    /// Counts one attempt and its latency.
    pub fn observe_attempt(&self, succeeded: bool, elapsed: Duration) {
        let counter = if succeeded {
            &self.attempts_ok
        } else {
            &self.attempts_failed
        };
        counter.inc();
        self.attempt_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts an attempt started, by how the dispatcher got it.
    pub fn observe_start(&self, handed_off: bool) {
        let counter = if handed_off {
            &self.handed_off
        } else {
            &self.claimed
        };
        counter.inc();
    }

    /// Counts where written-back deliveries went.
    pub fn observe_outcomes(&self, results: &[AttemptResult]) {
        for r in results {
            let counter = match r.next {
                NextStep::Succeeded => &self.succeeded,
                NextStep::Retry { .. } => &self.retried,
                NextStep::Failed => &self.failed,
            };
            counter.inc();
        }
    }

    /// Counts a request in flight until the returned guard is dropped
    /// (however the request ends).
    pub fn request_started(&self) -> InFlight<'_> {
        self.requests_in_flight.inc();
        InFlight(&self.requests_in_flight)
    }

    /// Counts a request answered `took` after it arrived. The HTTP edge
    /// names its method (a standard one, or `other`) and status class.
    pub fn observe_request(
        &self,
        route: Route,
        method: &'static str,
        status_class: &'static str,
        took: Duration,
    ) {
        self.request_duration
            .get_or_create(&RouteLabels {
                route: route.clone(),
                method,
            })
            .observe(took.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status_class,
            })
            .inc();
    }

    /// The exposition text: this process's metrics and, if the store
    /// answered, the queue figures it read at `now_ms`, with the delivery
    /// lag labelled with this `node`.
    pub fn render(&self, queue: Option<&QueueStats>, node: &str, now_ms: i64) -> String {
        self.storage
            .full
            .set(i64::from(self.storage.full_since().is_some()));
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a `String` cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        if let Some(q) = queue {
            let _ = prometheus_client::encoding::prometheus_text::encode(
                &mut out,
                &queue_registry(q, node, now_ms),
            );
        }
        out
    }
}

/// The queue figures of one scrape, as a registry of their own.
fn queue_registry(q: &QueueStats, node: &str, now_ms: i64) -> Registry {
    let mut registry = Registry::default();
    for (name, help, value) in [
        (
            "notifly_delivery_queue_depth",
            "Deliveries pending (waiting, due or in flight)",
            q.pending,
        ),
        (
            "notifly_delivery_queue_due",
            "Pending deliveries whose attempt is due now, including due retries",
            q.due,
        ),
        (
            "notifly_delivery_in_flight",
            "Deliveries leased by a node and being attempted",
            q.in_flight,
        ),
        (
            "notifly_endpoints_disabled",
            "Webhook endpoints currently disabled",
            q.disabled_endpoints,
        ),
        (
            "notifly_deliveries_held_by_open_circuits",
            "Due deliveries not attempted because their endpoint's circuit is open: the attempts it saves",
            q.held_by_circuits,
        ),
    ] {
        registry.register(name, help, ConstGauge::new(value));
    }
    let circuits = Family::<[(&'static str, String); 2], Gauge>::default();
    for (endpoint, state) in &q.circuits {
        circuits
            .get_or_create(&[("endpoint", endpoint.clone()), ("state", state.clone())])
            .set(1);
    }
    registry.register(
        "notifly_endpoint_circuit",
        "Endpoints whose circuit is not closed (1 per endpoint, by state)",
        circuits,
    );
    let lag = Family::<[(&'static str, String); 1], Gauge<f64, AtomicU64>>::default();
    let behind_ms = q.oldest_due_ms.map_or(0, |due| (now_ms - due).max(0));
    lag.get_or_create(&[("node", node.to_owned())])
        .set(behind_ms as f64 / 1000.0);
    registry.register(
        "notifly_delivery_lag_seconds",
        "How long the longest-waiting due delivery of an enabled endpoint has been due (leased ones aside; 0 when none is), as read by this node",
        lag,
    );
    registry
}

/// Decrements the in-flight gauge when dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A request's route label: the template it matched (`/v1/contacts/{id}`),
/// or `unmatched`. It holds the router's own template, so labelling a
/// request allocates nothing.
#[derive(Debug, Clone)]
pub struct Route(Option<MatchedPath>);

impl Route {
    /// The route of a request that matched `matched` (`None`: no route).
    pub fn new(matched: Option<MatchedPath>) -> Route {
        Route(matched)
    }

    fn as_str(&self) -> &str {
        self.0.as_ref().map_or(UNMATCHED, MatchedPath::as_str)
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Route) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl Hash for Route {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Labels of the request counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    method: &'static str,
    status_class: &'static str,
}

/// Labels of the request duration histogram.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: Route,
    method: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line `name` in `text`.
    fn sample(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} is not in:\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn the_storage_watch_follows_refusals_and_the_next_write() {
        let metrics = Metrics::default();
        let watch = metrics.storage();
        watch.locate("the SQLite database /tmp/x.db".to_owned());
        let text = metrics.render(None, "node-a", 0);
        assert_eq!(sample(&text, "notifly_storage_full"), 0.0);
        assert_eq!(watch.full_since(), None);

        // A write that succeeds while nothing was refused changes nothing.
        watch.wrote();
        assert_eq!(watch.full_since(), None);

        watch.refused();
        let since = watch.full_since().expect("refused");
        watch.refused();
        assert_eq!(
            watch.full_since(),
            Some(since),
            "the first refusal dates it"
        );
        let text = metrics.render(None, "node-a", 0);
        assert_eq!(sample(&text, "notifly_storage_full"), 1.0);
        assert_eq!(sample(&text, "notifly_storage_full_refusals_total"), 2.0);
        assert_eq!(watch.location(), "the SQLite database /tmp/x.db");

        watch.wrote();
        assert_eq!(watch.full_since(), None);
        let text = metrics.render(None, "node-a", 0);
        assert_eq!(sample(&text, "notifly_storage_full"), 0.0);
        assert_eq!(sample(&text, "notifly_storage_full_refusals_total"), 2.0);

        // Full again: a new episode.
        watch.refused();
        assert!(watch.full_since().is_some());
        assert_eq!(
            sample(&metrics.render(None, "node-a", 0), "notifly_storage_full"),
            1.0
        );
    }

    #[test]
    fn state_changes_are_logged_at_most_once_a_minute() {
        let watch = StorageWatch::default();
        assert!(watch.logged.allows(1_000));
        assert!(!watch.logged.allows(1_001));
        assert!(!watch.logged.allows(1_059));
        assert!(watch.logged.allows(1_060));
    }
}
