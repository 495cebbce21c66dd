//! What templates print, prepared in Rust: the page chrome, times, the
//! event-type catalogue grouped by resource, pretty JSON and the health chart.
//! Templates only lay it out (and escape it).

use notifly_webhooks::{EventType, OperationalEventType, ResourceKind};

use super::session::{Current, Flash};
use crate::domain::deliveries::WebhookHealth;

/// What the layout around every page needs.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// The logged-in account's name; `None` on the login and error pages.
    pub account_name: Option<String>,
    /// The session's CSRF token, for the logout form.
    pub csrf: String,
    pub flash: Option<Flash>,
    /// Which navigation entry is current: `webhooks`, `events` or `api-keys`.
    pub section: &'static str,
}

impl Chrome {
    pub fn anonymous() -> Self {
        Chrome {
            account_name: None,
            csrf: String::new(),
            flash: None,
            section: "",
        }
    }

    pub fn of(current: &Current, section: &'static str) -> Self {
        Chrome {
            account_name: Some(current.account_name.clone()),
            csrf: current.csrf.clone(),
            flash: current.flash.clone(),
            section,
        }
    }
}

/// Percent-encodes a query-string value.
pub fn urlencode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds as `2026-11-26 23:55:02 UTC`.
pub fn time(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Unix seconds as `HH:MM` (UTC), for chart ticks.
pub fn clock(secs: i64) -> String {
    let s = secs.rem_euclid(86_400);
    format!("{:02}:{:02}", s / 3600, s / 60 % 60)
}

/// How long ago `secs` was, from `now`: `just now`, `5 min ago`, `3 h ago`,
/// `2 days ago`.
pub fn ago(secs: i64, now: i64) -> String {
    let d = (now - secs).max(0);
    match d {
        0..=9 => "just now".to_owned(),
        10..=59 => format!("{d} s ago"),
        60..=3599 => format!("{} min ago", d / 60),
        3600..=86_399 => format!("{} h ago", d / 3600),
        _ => {
            let days = d / 86_400;
            format!("{days} day{} ago", if days == 1 { "" } else { "s" })
        }
    }
}

/// Parses `YYYY-MM-DDTHH:MM` (what an `<input type="datetime-local">`
/// sends; also with a space, or seconds) as UTC Unix seconds.
pub fn parse_utc(value: &str) -> Option<i64> {
    let value = value.trim();
    let (date, clock) = value.split_once(['T', ' ']).unwrap_or((value, "00:00"));
    let mut ymd = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    if ymd.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut hms = clock.split(':').map(|p| p.parse::<i64>().ok());
    let h = hms.next()??;
    let min = hms.next()??;
    let sec = hms.next().unwrap_or(Some(0))?;
    if !(0..24).contains(&h) || !(0..60).contains(&min) || !(0..60).contains(&sec) {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + h * 3600 + min * 60 + sec)
}

/// Pretty-prints JSON text; other text is returned as it is.
pub fn pretty_json(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

/// The event types of one resource, for checkboxes and pickers.
#[derive(Debug, Clone)]
pub struct EventGroup {
    /// `Contact`, `Message`, …
    pub label: String,
    pub types: Vec<EventChoice>,
}

/// One event type in a form.
#[derive(Debug, Clone)]
pub struct EventChoice {
    pub name: &'static str,
    pub description: &'static str,
    pub checked: bool,
}

/// The 15 event types grouped by resource, those in `selected` checked.
pub fn event_groups(selected: &[String]) -> Vec<EventGroup> {
    ResourceKind::ALL
        .iter()
        .map(|kind| {
            let name = kind.as_str();
            let mut label = name.to_owned();
            if let Some(first) = label.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            EventGroup {
                label,
                types: EventType::ALL
                    .iter()
                    .filter(|t| t.resource() == *kind)
                    .map(|t| EventChoice {
                        name: t.as_str(),
                        description: t.description(),
                        checked: selected.iter().any(|s| s == t.as_str()),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The operational event types, those in `selected` checked.
pub fn operational_choices(selected: &[String]) -> Vec<EventChoice> {
    OperationalEventType::ALL
        .iter()
        .map(|t| EventChoice {
            name: t.as_str(),
            description: t.description(),
            checked: selected.iter().any(|s| s == t.as_str()),
        })
        .collect()
}

/// A webhook's subscription for a list: `All resource events` (with the
/// operational types it adds), or the types.
pub fn events_summary(events: &[String]) -> String {
    if events.iter().any(|e| e == "*") {
        let mut summary = "All resource events".to_owned();
        for e in events.iter().filter(|e| *e != "*") {
            summary.push_str(", ");
            summary.push_str(e);
        }
        return summary;
    }
    if events.len() > 4 {
        return format!("{} event types", events.len());
    }
    events.join(", ")
}

/// A share as a whole percentage: `97%`.
pub fn percent(rate: Option<f64>) -> String {
    match rate {
        Some(r) => {
            let p = r * 100.0;
            if p > 99.0 && p < 100.0 {
                // Never round a failure away.
                "99%".to_owned()
            } else {
                format!("{:.0}%", p)
            }
        }
        None => "–".to_owned(),
    }
}

/// The health chart as SVG shapes: a bar per time bucket for the success
/// rate (its height) and a line for the mean latency.
#[derive(Debug, Clone)]
pub struct Chart {
    pub width: i64,
    pub height: i64,
    pub bars: Vec<Bar>,
    /// `points` of the latency polyline (empty when nothing was attempted).
    pub latency_points: String,
    /// Dots on the latency line, one per bucket with attempts.
    pub latency_dots: Vec<Dot>,
    pub ticks: Vec<Tick>,
    /// The latency axis' top value.
    pub latency_max_label: String,
    /// Where plotting starts and ends, horizontally and vertically.
    pub left: i64,
    pub right: i64,
    pub top: i64,
    pub bottom: i64,
    /// The y of the 50 % guide.
    pub middle: i64,
    /// One sentence saying what the chart shows, for screen readers.
    pub summary: String,
}

/// One bucket's bar.
#[derive(Debug, Clone)]
pub struct Bar {
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
    /// `good`, `mixed`, `bad` or `idle`.
    pub class: &'static str,
    /// The tooltip: the bucket's time, attempts, rate and latency.
    pub title: String,
}

#[derive(Debug, Clone)]
pub struct Dot {
    pub x: i64,
    pub y: i64,
}

#[derive(Debug, Clone)]
pub struct Tick {
    pub x: i64,
    pub label: String,
}

impl Chart {
    pub fn new(h: &WebhookHealth) -> Chart {
        let (width, height) = (720_i64, 200_i64);
        let (left, right, top, bottom) = (52_i64, 652_i64, 12_i64, 164_i64);
        let n = h.buckets.len().max(1) as i64;
        let slot = (right - left) / n;
        let bar_w = (slot - 2).max(1);
        let plot_h = bottom - top;
        let max_latency = h
            .buckets
            .iter()
            .filter_map(|b| b.avg_duration_ms)
            .max()
            .unwrap_or(0)
            .max(1);
        // A round top for the latency axis.
        let latency_top = nice_ceiling(max_latency);
        let mut bars = Vec::new();
        let mut points = Vec::new();
        let mut dots = Vec::new();
        for (i, b) in h.buckets.iter().enumerate() {
            let x = left + i as i64 * slot + 1;
            let end = b.start + h.bucket_secs;
            let when = format!("{}–{} UTC", clock(b.start), clock(end));
            if b.attempts == 0 {
                bars.push(Bar {
                    x,
                    y: bottom - 2,
                    w: bar_w,
                    h: 2,
                    class: "idle",
                    title: format!("{when}: no attempts"),
                });
                continue;
            }
            let rate = b.succeeded as f64 / b.attempts as f64;
            let bar_h = ((rate * plot_h as f64).round() as i64).max(2);
            let avg = b.avg_duration_ms.unwrap_or(0);
            bars.push(Bar {
                x,
                y: bottom - bar_h,
                w: bar_w,
                h: bar_h,
                class: if rate >= 0.99 {
                    "good"
                } else if rate >= 0.5 {
                    "mixed"
                } else {
                    "bad"
                },
                title: format!(
                    "{when}: {} of {} attempts succeeded ({}), mean {} ms, slowest {} ms",
                    b.succeeded,
                    b.attempts,
                    percent(Some(rate)),
                    avg,
                    b.max_duration_ms.unwrap_or(0)
                ),
            });
            let cx = x + bar_w / 2;
            let cy = bottom - (avg * plot_h / latency_top).min(plot_h);
            points.push(format!("{cx},{cy}"));
            dots.push(Dot { x: cx, y: cy });
        }
        let every = (n / 4).max(1);
        let ticks = h
            .buckets
            .iter()
            .enumerate()
            .filter(|(i, _)| (*i as i64) % every == 0)
            .map(|(i, b)| Tick {
                x: left + i as i64 * slot,
                label: clock(b.start),
            })
            .collect();
        let summary = match h.success_rate() {
            Some(rate) => format!(
                "Over the last {} hours, {} of {} attempts succeeded ({}); mean latency {} ms.",
                h.bucket_secs * n / 3600,
                h.succeeded,
                h.attempts,
                percent(Some(rate)),
                h.avg_duration_ms().unwrap_or(0)
            ),
            None => format!(
                "No delivery attempts in the last {} hours.",
                h.bucket_secs * n / 3600
            ),
        };
        Chart {
            width,
            height,
            bars,
            latency_points: points.join(" "),
            latency_dots: dots,
            ticks,
            latency_max_label: format!("{latency_top} ms"),
            left,
            right,
            top,
            bottom,
            middle: top + plot_h / 2,
            summary,
        }
    }
}

/// The smallest of 1, 2, 5 × 10ⁿ at or above `v`.
fn nice_ceiling(v: i64) -> i64 {
    let mut step = 1;
    loop {
        for m in [1, 2, 5] {
            if m * step >= v {
                return m * step;
            }
        }
        step *= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::deliveries::HealthBucket;

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(1_795_700_000), "2026-11-26 13:33:20 UTC");
        assert_eq!(time(951_825_600), "2000-02-29 12:00:00 UTC");
        assert_eq!(parse_utc("2026-11-26T13:33"), Some(1_795_700_000 - 20));
        assert_eq!(parse_utc("2000-02-29 12:00:00"), Some(951_825_600));
        assert_eq!(parse_utc("1970-01-01"), Some(0));
        for bad in [
            "",
            "2026-13-01T00:00",
            "2026-11-25T25:00",
            "yesterday",
            "2026-11",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(ago(100, 100), "just now");
        assert_eq!(ago(100, 130), "30 s ago");
        assert_eq!(ago(0, 600), "10 min ago");
        assert_eq!(ago(0, 7200), "2 h ago");
        assert_eq!(ago(0, 86_400), "1 day ago");
        assert_eq!(ago(0, 3 * 86_400), "3 days ago");
    }

    #[test]
    fn rates_never_round_a_failure_away() {
        assert_eq!(percent(Some(0.999)), "99%");
        assert_eq!(percent(Some(1.0)), "100%");
        assert_eq!(percent(Some(0.5)), "50%");
        assert_eq!(percent(None), "–");
    }

    #[test]
    fn the_chart_has_a_bar_per_bucket() {
        let bucket = |attempts, succeeded, avg| HealthBucket {
            start: 0,
            attempts,
            succeeded,
            avg_duration_ms: (attempts > 0).then_some(avg),
            max_duration_ms: (attempts > 0).then_some(avg),
        };
        let h = WebhookHealth {
            since: 0,
            bucket_secs: 3600,
            buckets: vec![bucket(0, 0, 0), bucket(4, 4, 120), bucket(4, 1, 480)],
            attempts: 8,
            succeeded: 5,
            total_duration_ms: 2400,
            last_attempt_at: Some(10),
        };
        let chart = Chart::new(&h);
        let classes: Vec<_> = chart.bars.iter().map(|b| b.class).collect();
        assert_eq!(classes, ["idle", "good", "bad"]);
        assert_eq!(chart.latency_dots.len(), 2);
        assert_eq!(chart.latency_max_label, "500 ms");
        assert!(chart.summary.contains("5 of 8"), "{}", chart.summary);
        assert_eq!(nice_ceiling(1), 1);
        assert_eq!(nice_ceiling(130), 200);
        assert_eq!(nice_ceiling(2001), 5000);
    }
}

/// An operational event as a notice: when, what, and about which webhook.
#[derive(Debug, Clone)]
pub struct NoticeRow {
    pub ago: String,
    pub at: String,
    /// `off` (bad news) or `ok`.
    pub badge: &'static str,
    pub label: &'static str,
    pub webhook_id: String,
    pub webhook_name: String,
    /// What happened, in a sentence.
    pub detail: String,
    /// The exhausted delivery's page.
    pub delivery_href: Option<String>,
}

/// The notices to show; `names` gives the webhooks' current names where the
/// event does not carry one.
pub fn notice_rows(
    notices: Vec<crate::domain::notices::Notice>,
    names: &std::collections::HashMap<String, String>,
    now: i64,
) -> Vec<NoticeRow> {
    notices
        .into_iter()
        .map(|n| {
            let (badge, label) = match n.event_type {
                OperationalEventType::WebhookDisabled => ("off", "Disabled"),
                OperationalEventType::WebhookCircuitOpened => ("off", "Circuit opened"),
                OperationalEventType::WebhookCircuitClosed => ("ok", "Circuit closed"),
                _ => ("off", "Delivery exhausted"),
            };
            let detail = match (n.event_type, &n.delivery) {
                (OperationalEventType::WebhookDisabled, _) => n
                    .disabled_reason
                    .clone()
                    .unwrap_or_else(|| "disabled".to_owned()),
                (OperationalEventType::WebhookCircuitOpened, _) => {
                    "failed attempts in a row: only probes are sent until one succeeds".to_owned()
                }
                (OperationalEventType::WebhookCircuitClosed, _) => {
                    "a probe succeeded: deliveries flow again".to_owned()
                }
                (_, Some((_, event_type, attempts))) => {
                    format!("a {event_type} delivery failed all {attempts} attempts")
                }
                _ => String::new(),
            };
            NoticeRow {
                ago: ago(n.created_at, now),
                at: time(n.created_at),
                badge,
                label,
                webhook_name: n
                    .webhook_name
                    .clone()
                    .or_else(|| names.get(&n.webhook_id).cloned())
                    .unwrap_or_else(|| n.webhook_id.clone()),
                delivery_href: n
                    .delivery
                    .as_ref()
                    .map(|(id, _, _)| format!("/dashboard/deliveries/{id}")),
                webhook_id: n.webhook_id,
                detail,
            }
        })
        .collect()
}
