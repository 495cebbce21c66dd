//! The retry schedule: when each attempt of a delivery is due.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;

use crate::store::NextStep;

/// Delays between attempts. Entry `k` is how long after attempt `k` fails
/// attempt `k + 1` is made; entry 0 is the delay of the first attempt
/// (normally none). After the last entry's attempt fails, the delivery fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

/// Longest `Retry-After` honoured: a receiver cannot park a delivery for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

impl Default for RetrySchedule {
    /// Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    fn default() -> Self {
        let m = 60;
        let h = 60 * m;
        RetrySchedule(
            [0, 5, 5 * m, 30 * m, 2 * h, 5 * h, 10 * h, 10 * h]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        )
    }
}

impl RetrySchedule {
    /// A schedule from its delays; at least one.
    pub fn new(delays: Vec<Duration>) -> Option<Self> {
        (!delays.is_empty()).then_some(RetrySchedule(delays))
    }

    /// How many attempts a delivery gets.
    pub fn attempts(&self) -> usize {
        self.0.len()
    }

    /// What follows a failed attempt made at schedule position `pos`, at
    /// `now_ms`, given the receiver's `Retry-After` if any. Delays get ±20 %
    /// jitter so that retries of many deliveries do not arrive together.
    pub fn after_failure(&self, pos: i64, now_ms: i64, retry_after: Option<Duration>) -> NextStep {
        let next = usize::try_from(pos).unwrap_or(0) + 1;
        let Some(&delay) = self.0.get(next) else {
            return NextStep::Failed;
        };
        let mut delay = jitter(delay);
        if let Some(after) = retry_after {
            delay = delay.max(after.min(MAX_RETRY_AFTER));
        }
        NextStep::Retry {
            at_ms: now_ms + delay.as_millis() as i64,
            schedule_pos: next as i64,
        }
    }
}

fn jitter(d: Duration) -> Duration {
    if d.is_zero() {
        return d;
    }
    d.mul_f64(rand::rng().random_range(0.8..=1.2))
}

/// Parses `500ms`, `15s`, `5m`, `2h` or `5d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 500ms, 15s, 5m, 2h or 5d"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{s}` has no unit; use ms, s, m, h or d")),
    };
    Ok(Duration::from_millis(n.saturating_mul(ms)))
}

impl FromStr for RetrySchedule {
    type Err = String;

    /// `0s,5s,5m,30m,2h,5h,10h,10h`
    fn from_str(s: &str) -> Result<Self, String> {
        let delays = s
            .split(',')
            .map(parse_duration)
            .collect::<Result<Vec<_>, _>>()?;
        if delays.len() > 50 {
            return Err("a retry schedule has at most 50 attempts".into());
        }
        RetrySchedule::new(delays).ok_or_else(|| "the retry schedule is empty".into())
    }
}

impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|d| format!("{}ms", d.as_millis()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_schedule_is_the_documented_one() {
        let s = RetrySchedule::default();
        assert_eq!(s, "0s,5s,5m,30m,2h,5h,10h,10h".parse().unwrap());
        assert_eq!(s.attempts(), 8);
        assert_eq!(s.after_failure(7, 0, None), NextStep::Failed);
    }

    #[test]
    fn bad_schedules_are_refused() {
        for bad in ["", "5", "5x", "-1s", "1s,,2s"] {
            assert!(bad.parse::<RetrySchedule>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn retry_after_is_a_floor_with_a_ceiling() {
        let s: RetrySchedule = "0s,1s".parse().unwrap();
        let NextStep::Retry { at_ms, .. } = s.after_failure(0, 0, Some(Duration::from_secs(30)))
        else {
            panic!("expected a retry");
        };
        assert_eq!(at_ms, 30_000);
        let NextStep::Retry { at_ms, .. } =
            s.after_failure(0, 0, Some(Duration::from_secs(86_400)))
        else {
            panic!("expected a retry");
        };
        assert_eq!(at_ms, MAX_RETRY_AFTER.as_millis() as i64);
    }

    proptest! {
        #[test]
        fn retries_follow_the_schedule_within_jitter(
            delays in proptest::collection::vec(0u64..100_000, 1..12),
            now in 0i64..1_000_000_000,
        ) {
            let s = RetrySchedule::new(delays.iter().map(|d| Duration::from_millis(*d)).collect()).unwrap();
            for pos in 0..delays.len() as i64 {
                match s.after_failure(pos, now, None) {
                    NextStep::Retry { at_ms, schedule_pos } => {
                        prop_assert_eq!(schedule_pos, pos + 1);
                        let d = delays[schedule_pos as usize] as f64;
                        let waited = (at_ms - now) as f64;
                        prop_assert!(waited >= d * 0.8 - 1.0 && waited <= d * 1.2 + 1.0);
                    }
                    NextStep::Failed => prop_assert_eq!(pos as usize, delays.len() - 1),
                    NextStep::Succeeded => prop_assert!(false),
                }
            }
        }
    }
}
