//! The delivery queue, as the dispatcher sees it: claiming due deliveries
//! under a lease, writing back attempt results, and the policies both
//! backends share for them (which candidates a claim leases, the rate
//! limiter, what results do to an endpoint's health and circuit).

use async_trait::async_trait;
use notifly_webhooks::OperationalEventType;

use super::*;

/// A delivery a claim may lease, with what the claim policy needs to know
/// of its endpoint.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct Candidate {
    pub id: String,
    pub endpoint: String,
    /// The endpoint is failing.
    pub failing: bool,
    /// The endpoint's circuit is open and due for a probe (the candidate
    /// queries return no other deliveries of an open circuit).
    pub probe: bool,
    /// The endpoint's rate limit (deliveries per second), if it has one.
    pub rate_limit: Option<i64>,
    /// The endpoint's rate limiter state (see [`rate_allowance`]).
    pub rate_tat_us: Option<i64>,
}

/// What a claim leases: the deliveries, and the rate limiter state each
/// rate-limited endpoint it leased for is left at.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Chosen {
    pub ids: Vec<String>,
    /// `(endpoint, rate_tat_us)`, to write back in the claim's transaction.
    pub rates: Vec<(String, i64)>,
}

/// The claim policy, shared by every backend: from `candidates`, ordered by
/// due time, and the deliveries already in flight per endpoint, the ids to
/// lease at `now_us` (Unix microseconds). Healthy endpoints come first, so
/// that failing ones (mostly old retries) cannot take the global slots from
/// them; each endpoint stays within its limit in flight and its rate limit,
/// and an endpoint whose circuit is open gets one delivery (its probe), and
/// only when nothing of it is in flight.
pub(crate) fn choose_claims(
    candidates: Vec<Candidate>,
    mut in_flight: std::collections::HashMap<String, i64>,
    r: &ClaimRequest,
    now_us: i64,
) -> Chosen {
    let (healthy, failing): (Vec<_>, Vec<_>) = candidates.into_iter().partition(|c| !c.failing);
    // Per rate-limited endpoint: (its rate, its state, how many it may
    // still start now, how many this claim leased).
    let mut rates: std::collections::HashMap<String, (i64, Option<i64>, u32, u32)> =
        std::collections::HashMap::new();
    let mut chosen = Chosen::default();
    for c in healthy.into_iter().chain(failing) {
        if chosen.ids.len() >= r.max as usize {
            break;
        }
        let limit = if c.probe {
            1
        } else if c.failing {
            r.per_failing_endpoint.min(r.per_endpoint)
        } else {
            r.per_endpoint
        };
        let n = in_flight.entry(c.endpoint.clone()).or_insert(0);
        if *n >= i64::from(limit) {
            continue;
        }
        if let Some(rate) = c.rate_limit {
            let (_, _, left, used) = rates.entry(c.endpoint.clone()).or_insert_with(|| {
                let left = rate_allowance(rate, c.rate_tat_us, now_us);
                (rate, c.rate_tat_us, left, 0)
            });
            if *left == 0 {
                continue;
            }
            *left -= 1;
            *used += 1;
        }
        *n += 1;
        chosen.ids.push(c.id);
    }
    let mut rates: Vec<(String, i64)> = rates
        .into_iter()
        .filter(|(_, (_, _, _, used))| *used > 0)
        .map(|(endpoint, (rate, tat, _, used))| (endpoint, rate_after(rate, tat, now_us, used)))
        .collect();
    rates.sort_unstable();
    chosen.rates = rates;
    chosen
}

/// The rate limiter of an endpoint limited to `rate` deliveries a second is
/// a generic cell rate algorithm (virtual scheduling): its state is the
/// theoretical arrival time `tat` of its next delivery, one emission
/// interval (1/rate s) after the last one leased; a delivery may start at
/// `now` if `now >= tat - tolerance`. The tolerance lets a claim lease
/// [`RATE_BURST_MS`]' worth at once (at least one): claims come about every
/// 100 ms while work waits, and without it one delivery a claim would be
/// the most any limit allows. So in any one second an endpoint sees at
/// most `rate` deliveries and that burst (a fifth more). The state lives in the endpoint's row, and
/// claims (one at a time across the nodes) read and advance it, which is
/// what makes the limit hold for the whole cluster.
pub(crate) const RATE_BURST_MS: i64 = 200;

/// The emission interval and tolerance of a limit of `rate` per second, in
/// microseconds.
fn rate_terms(rate: i64) -> (i64, i64) {
    let rate = rate.max(1);
    // Rounded up: never faster than the limit.
    let interval = (1_000_000 + rate - 1) / rate;
    let burst = ((rate * RATE_BURST_MS + 999) / 1000).max(1);
    // At least a claim interval's slack (under one emission interval, so
    // the burst stays one), so that claims a little late do not leave a
    // low limit short.
    (interval, ((burst - 1) * interval).max(RATE_SLACK_US))
}

/// The least tolerance: the dispatcher's recheck interval while work waits.
const RATE_SLACK_US: i64 = 100_000;

/// How many deliveries an endpoint limited to `rate` per second, its
/// limiter at `tat_us`, may start at `now_us` (see [`RATE_BURST_MS`]).
pub(crate) fn rate_allowance(rate: i64, tat_us: Option<i64>, now_us: i64) -> u32 {
    let (interval, tolerance) = rate_terms(rate);
    let tat = tat_us.unwrap_or(i64::MIN).max(now_us);
    let room = now_us + tolerance - tat;
    if room < 0 {
        0
    } else {
        u32::try_from(room / interval + 1).unwrap_or(u32::MAX)
    }
}

/// The limiter state after `n` deliveries start at `now_us`.
pub(crate) fn rate_after(rate: i64, tat_us: Option<i64>, now_us: i64, n: u32) -> i64 {
    let (interval, _) = rate_terms(rate);
    tat_us.unwrap_or(i64::MIN).max(now_us) + i64::from(n) * interval
}

/// What a batch of attempt results does to one endpoint's health (see
/// [`endpoint_health`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// Its last result in the batch succeeded: it is not failing.
    Recovered,
    /// Its last result failed. `since_now`: an earlier result of the batch
    /// succeeded, so its run of failures starts now; otherwise a run already
    /// under way goes on (or starts now if there was none).
    Failing { since_now: bool },
}

/// The health policy of a write-back, shared by every backend: each endpoint
/// of `results` once (in the order they first appear), with what its results,
/// taken in order, leave it at. Applying that once per endpoint gives the
/// same `failing_since` as applying every result one by one, with one
/// statement per endpoint instead of one per result.
pub(crate) fn endpoint_health(results: &[AttemptResult]) -> Vec<(&str, Health)> {
    let mut out: Vec<(&str, Health)> = Vec::new();
    let mut succeeded: Vec<bool> = Vec::new();
    for r in results.iter().filter(|r| !r.unsent) {
        let endpoint = r.endpoint_id.as_str();
        let at = match out.iter().position(|(id, _)| *id == endpoint) {
            Some(at) => at,
            None => {
                out.push((endpoint, Health::Recovered));
                succeeded.push(false);
                out.len() - 1
            }
        };
        if r.attempt.succeeded {
            out[at].1 = Health::Recovered;
            succeeded[at] = true;
        } else if out[at].1 == Health::Recovered {
            out[at].1 = Health::Failing {
                since_now: succeeded[at],
            };
        }
    }
    out
}

/// Each endpoint of `results` that asked to be slowed down (429, 502, 504),
/// once, in id order, with the latest time its results pause it until.
pub(crate) fn endpoint_throttles(results: &[AttemptResult]) -> Vec<(&str, i64)> {
    let mut out: Vec<(&str, i64)> = Vec::new();
    for r in results {
        let Some(until) = r.throttle_until_ms else {
            continue;
        };
        match out.iter_mut().find(|(id, _)| *id == r.endpoint_id) {
            Some((_, at)) => *at = (*at).max(until),
            None => out.push((&r.endpoint_id, until)),
        }
    }
    out.sort_unstable();
    out
}

/// The first probe of an open circuit goes this long after it opened.
pub(crate) const FIRST_PROBE_MS: i64 = 5_000;
/// Probes of a circuit that stays open are at most this far apart.
pub(crate) const MAX_PROBE_INTERVAL_MS: i64 = 5 * 60 * 1000;

/// What a batch of attempt results does to one endpoint's circuit breaker
/// (see [`circuit_steps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CircuitStep {
    /// Its last result succeeded: the circuit closes, the count restarts.
    Closed,
    /// Its last result failed: `failures` more in a row, counted from zero
    /// if `restart` (an earlier result of the batch succeeded). A closed
    /// circuit opens once the count reaches the threshold; a half-open one
    /// (its probe failed) opens again, its next probe twice as far off.
    Failed { restart: bool, failures: i64 },
}

/// The circuit policy of a write-back, shared by every backend: each
/// endpoint of `results` (requests actually sent) once, with what its
/// results, in order, do to its circuit.
pub(crate) fn circuit_steps(results: &[AttemptResult]) -> Vec<(&str, CircuitStep)> {
    let mut out: Vec<(&str, CircuitStep)> = Vec::new();
    for r in results.iter().filter(|r| !r.unsent) {
        let endpoint = r.endpoint_id.as_str();
        let at = match out.iter().position(|(id, _)| *id == endpoint) {
            Some(at) => at,
            None => {
                out.push((
                    endpoint,
                    CircuitStep::Failed {
                        restart: false,
                        failures: 0,
                    },
                ));
                out.len() - 1
            }
        };
        out[at].1 = match (out[at].1, r.attempt.succeeded) {
            (_, true) => CircuitStep::Closed,
            (CircuitStep::Closed, false) => CircuitStep::Failed {
                restart: true,
                failures: 1,
            },
            (CircuitStep::Failed { restart, failures }, false) => CircuitStep::Failed {
                restart,
                failures: failures + 1,
            },
        };
    }
    out
}

/// An endpoint's state as far as operational events go, read before and
/// after a write-back's changes (in its transaction, the rows locked).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct EndpointState {
    pub id: String,
    pub account_id: String,
    pub enabled: bool,
    pub circuit: String,
    pub disabled_reason: Option<String>,
    pub circuit_since: Option<i64>,
}

/// The columns of [`EndpointState`], in its order.
pub(crate) const ENDPOINT_STATE_COLUMNS: &str =
    "id, account_id, enabled, circuit, disabled_reason, circuit_since";

impl EndpointState {
    /// What a notice keeps of it (see [`NoticeRecord::state`]).
    pub(crate) fn json(&self) -> String {
        serde_json::json!({
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
            "circuit": self.circuit,
            "circuit_since": self.circuit_since,
        })
        .to_string()
    }
}

/// The notices policy, shared by every backend: from each endpoint's state
/// before and after a write-back, the operational events its account is
/// owed, each with the endpoint's state after it: a circuit that was
/// closed and is open opened; one that was not closed and is closed
/// closed; an enabled endpoint now disabled was disabled. A probe failing
/// again (from half-open to open) is no news.
pub(crate) fn endpoint_notices<'a>(
    before: &[EndpointState],
    after: &'a [EndpointState],
) -> Vec<(&'a EndpointState, OperationalEventType)> {
    let mut out = Vec::new();
    for a in after {
        let Some(b) = before.iter().find(|b| b.id == a.id) else {
            continue;
        };
        if b.circuit == "closed" && a.circuit == "open" {
            out.push((a, OperationalEventType::WebhookCircuitOpened));
        }
        if b.circuit != "closed" && a.circuit == "closed" {
            out.push((a, OperationalEventType::WebhookCircuitClosed));
        }
        if b.enabled && !a.enabled {
            out.push((a, OperationalEventType::WebhookDisabled));
        }
    }
    out
}

/// The endpoints a write-back of `results` may change in a way their
/// accounts hear of: those it sent to (health, circuit) and those it
/// disables; each once, in id order (the order rows are locked in).
pub(crate) fn changing_endpoints(results: &[AttemptResult]) -> Vec<&str> {
    let mut ids: Vec<&str> = results
        .iter()
        .filter(|r| !r.unsent || r.disable.is_some())
        .map(|r| r.endpoint_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The deliveries of `results` whose retries ran out (`NextStep::Failed`,
/// not by a `410`, which disables the endpoint and is told as
/// `webhook.disabled`): those the write-back moves to `failed` are owed
/// `delivery.exhausted`.
pub(crate) fn exhausting(results: &[AttemptResult]) -> Vec<&str> {
    results
        .iter()
        .filter(|r| r.next == NextStep::Failed && r.disable.is_none())
        .map(|r| r.attempt.delivery_id.as_str())
        .collect()
}

/// The dispatcher's work on the pool: claims, the write-back of attempt
/// results, when work is next due, leases and queue figures.
#[async_trait]
pub trait DeliveryQueue: Send + Sync {
    /// Leases due deliveries, at most `per_endpoint` in flight per endpoint
    /// across all nodes, and returns them ready to send.
    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Vec<Claimed>>;
    /// Records attempts and moves their deliveries on, in one transaction.
    /// An endpoint failing without a success for `policy.disable_after_secs`
    /// is disabled; `policy.circuit_failures` failures in a row open its
    /// circuit (see [`circuit_steps`]). What that does to endpoints and
    /// deliveries that their accounts hear of is noted in the same
    /// transaction (see [`endpoint_notices`], [`exhausting`]); returns how
    /// many notices it wrote.
    async fn record_attempts(
        &self,
        results: &[AttemptResult],
        policy: &EndpointPolicy,
    ) -> StoreResult<u64>;
    /// When the next pending delivery is due (Unix ms), if any.
    async fn next_due_ms(&self) -> StoreResult<Option<i64>>;
    /// Hands back the leases a node holds (tokens `<node>:…`), so other nodes
    /// can take the work.
    async fn release_leases(&self, node: &str) -> StoreResult<u64>;
    /// Queue figures for metrics.
    async fn queue_stats(&self, now_ms: i64) -> StoreResult<QueueStats>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(per_endpoint: u32, per_failing_endpoint: u32, max: u32) -> ClaimRequest {
        ClaimRequest {
            lease_ms: 1000,
            owner: "node:0".into(),
            per_endpoint,
            per_failing_endpoint,
            max,
        }
    }

    fn candidate(id: &str, endpoint: &str, failing: bool) -> Candidate {
        Candidate {
            id: id.into(),
            endpoint: endpoint.into(),
            failing,
            probe: false,
            rate_limit: None,
            rate_tat_us: None,
        }
    }

    fn ids(chosen: &Chosen) -> Vec<&str> {
        chosen.ids.iter().map(String::as_str).collect()
    }

    #[test]
    fn claims_respect_limits_and_serve_healthy_endpoints_first() {
        let candidates = vec![
            candidate("f1", "down", true),
            candidate("f2", "down", true),
            candidate("f3", "down", true),
            candidate("h1", "up", false),
            candidate("h2", "up", false),
            candidate("h3", "up", false),
        ];
        let in_flight = [("up".to_owned(), 1)].into_iter().collect();
        let chosen = choose_claims(candidates.clone(), in_flight, &request(3, 2, 10), 0);
        assert_eq!(ids(&chosen), ["h1", "h2", "f1", "f2"]);
        assert!(chosen.rates.is_empty());
        let chosen = choose_claims(candidates, Default::default(), &request(3, 2, 2), 0);
        assert_eq!(ids(&chosen), ["h1", "h2"]);
        // An open circuit: one probe, and none while something is in flight.
        let probe = |id: &str| Candidate {
            probe: true,
            ..candidate(id, "open", true)
        };
        let probes = vec![probe("p1"), probe("p2")];
        let chosen = choose_claims(probes.clone(), Default::default(), &request(3, 2, 10), 0);
        assert_eq!(ids(&chosen), ["p1"]);
        let busy = [("open".to_owned(), 1)].into_iter().collect();
        assert!(
            choose_claims(probes, busy, &request(3, 2, 10), 0)
                .ids
                .is_empty()
        );
    }

    #[test]
    fn claims_keep_to_rate_limits_and_advance_the_limiter() {
        let limited = |id: &str, tat: Option<i64>| Candidate {
            rate_limit: Some(20),
            rate_tat_us: tat,
            ..candidate(id, "slow", false)
        };
        let now = 10_000_000;
        // 20 a second: 50 ms apart, four at once (200 ms' worth).
        let candidates: Vec<Candidate> = (0..9).map(|i| limited(&format!("s{i}"), None)).collect();
        let chosen = choose_claims(candidates, Default::default(), &request(10, 2, 10), now);
        assert_eq!(ids(&chosen), ["s0", "s1", "s2", "s3"]);
        assert_eq!(chosen.rates, [("slow".to_owned(), now + 200_000)]);
        // 60 ms later, one more interval has passed.
        let later: Vec<Candidate> = (0..5)
            .map(|i| limited(&format!("s{i}"), Some(now + 200_000)))
            .collect();
        let chosen = choose_claims(
            later.clone(),
            Default::default(),
            &request(10, 2, 10),
            now + 60_000,
        );
        assert_eq!(ids(&chosen), ["s0"]);
        assert_eq!(chosen.rates, [("slow".to_owned(), now + 250_000)]);
        // Other endpoints are not held back by it.
        let mut mixed = later;
        mixed.push(candidate("f0", "fast", false));
        let chosen = choose_claims(mixed, Default::default(), &request(10, 2, 10), now + 10_000);
        assert_eq!(ids(&chosen), ["f0"]);
        assert!(chosen.rates.is_empty());
    }

    #[test]
    fn a_rate_limit_holds_over_time_whatever_the_claim_cadence() {
        for rate in [1, 3, 20, 250, 1000] {
            for cadence_us in [7_000, 50_000, 100_000, 190_000, 330_000] {
                let (mut tat, mut now, mut started) = (None, 0_i64, Vec::new());
                while now < 10_000_000 {
                    let n = rate_allowance(rate, tat, now);
                    if n > 0 {
                        started.extend(std::iter::repeat_n(now, n as usize));
                        tat = Some(rate_after(rate, tat, now, n));
                    }
                    now += cadence_us;
                }
                let burst = ((rate * RATE_BURST_MS + 999) / 1000).max(1) as usize;
                // In any one second: at most the rate and one burst.
                for (i, t) in started.iter().enumerate() {
                    let within = started[i..]
                        .iter()
                        .take_while(|u| **u < t + 1_000_000)
                        .count();
                    assert!(
                        within <= rate as usize + burst,
                        "{rate}/s every {cadence_us} us: {within}"
                    );
                }
                // And, claimed at least every 200 ms, no slower than the
                // rate, less what the cadence rounds off.
                if cadence_us <= 200_000 && rate >= 20 {
                    assert!(
                        started.len() as i64 >= rate * 9,
                        "{rate}/s every {cadence_us} us: {}",
                        started.len()
                    );
                }
            }
        }
    }

    fn result(endpoint: &str, succeeded: bool) -> AttemptResult {
        AttemptResult {
            attempt: AttemptRecord {
                id: String::new(),
                delivery_id: String::new(),
                attempt: 1,
                started_at_ms: 0,
                duration_ms: 0,
                request_headers: sqlx::types::Json(Vec::new()),
                response_status: None,
                response_headers: None,
                response_body: None,
                error: None,
                succeeded,
            },
            endpoint_id: endpoint.into(),
            owner: String::new(),
            next: NextStep::Failed,
            disable: None,
            unsent: false,
            throttle_until_ms: None,
            ordered: false,
        }
    }

    #[test]
    fn changing_endpoints_are_each_once_in_id_order_and_leave_out_unsent_results() {
        let mut unsent = result("c", false);
        unsent.unsent = true;
        let mut gone = result("d", false);
        gone.unsent = true;
        gone.disable = Some("gone".into());
        let results = [
            result("b", true),
            unsent,
            result("a", false),
            result("b", false),
            gone,
        ];
        assert_eq!(changing_endpoints(&results), ["a", "b", "d"]);
    }

    #[test]
    fn circuit_steps_count_failures_since_the_last_success() {
        let mut unsent = result("d", false);
        unsent.unsent = true;
        let results = [
            result("a", false),
            result("a", false),
            result("b", false),
            result("b", true),
            result("c", true),
            result("c", false),
            result("c", false),
            unsent,
        ];
        assert_eq!(
            circuit_steps(&results),
            [
                (
                    "a",
                    CircuitStep::Failed {
                        restart: false,
                        failures: 2
                    }
                ),
                ("b", CircuitStep::Closed),
                (
                    "c",
                    CircuitStep::Failed {
                        restart: true,
                        failures: 2
                    }
                ),
            ]
        );
    }

    #[test]
    fn endpoint_health_is_what_the_results_leave_in_order() {
        let results = [
            result("a", false),
            result("b", false),
            result("c", true),
            result("b", true),
            result("d", true),
            result("a", false),
            result("d", false),
            result("c", false),
            result("c", true),
        ];
        assert_eq!(
            endpoint_health(&results),
            [
                ("a", Health::Failing { since_now: false }),
                ("b", Health::Recovered),
                ("c", Health::Recovered),
                ("d", Health::Failing { since_now: true }),
            ]
        );
        assert!(endpoint_health(&[]).is_empty());
        // A request never sent says nothing of the endpoint.
        let mut unsent = result("e", false);
        unsent.unsent = true;
        assert!(endpoint_health(&[unsent]).is_empty());
    }
}
