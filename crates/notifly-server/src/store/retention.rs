//! Deleting what is past retention.

use std::time::Duration;

use async_trait::async_trait;

use super::*;

/// What retention deletes.
#[async_trait]
pub trait Retention: Send + Sync {
    /// Deletes one small batch (at most `batch` rows per table, each
    /// delivery with all its attempts) of what is past `round`'s cutoffs
    /// (see [`PurgeRound::new`]): finished deliveries with their attempts, events that no delivery still needs,
    /// idempotency keys and expired dashboard sessions. Returns the rows
    /// deleted, and moves `round` on if the batch committed. A batch may
    /// delete nothing and still have work left (it examined rows that are
    /// still needed): the round is over once [`PurgeRound::finished`].
    async fn purge(&self, round: &mut PurgeRound, batch: u32) -> StoreResult<u64>;

    /// How long to wait after a batch that took `took` before the next
    /// one. By default a fixed 50 ms, so that API writes get the database
    /// in between: on SQLite a batch holds the one writer.
    fn purge_pause(&self, _took: Duration) -> Duration {
        Duration::from_millis(50)
    }
}

/// [`Retention::purge_pause`] for a store whose purge holds no lock that
/// API writes wait for (PostgreSQL: row locks on rows past retention, on
/// a background connection; only a retry by hand or a replay of such a
/// row waits, for one batch): twice the batch's time, between 2 and 50 ms,
/// so that the purge keeps a third of one connection busy (more once
/// batches take over 25 ms) and goes as fast as the database lets it. A fixed pause would cap it whatever the hardware:
/// 50 ms after 10 ms batches is ~4,000 deliveries/s with one endpoint per
/// event (docs/scaling.md).
pub(crate) fn pause_in_proportion(took: Duration) -> Duration {
    (took * 2).clamp(Duration::from_millis(2), Duration::from_millis(50))
}

/// One round of the purge, made of batches: where it has got to in each
/// table, and its cutoffs, fixed for the round.
///
/// The big tables (`deliveries`, then `events`) are walked by `seq`, one
/// window of `batch` rows a batch, from the start of the table: a batch
/// deletes what in its window is past retention and no longer needed, and
/// the walk moves past the window whatever it kept. So the rows the purge
/// must keep (pending deliveries, the events they hold) cost one look per
/// round, not a scan per batch, and can never stop it (rows whose
/// `created_at` is older than their `seq`'s neighbours, such as a replay's
/// deliveries, dated by their event, cost a window each while they are
/// held). The first window of a round also crosses the index entries of
/// the rows deleted since the last `VACUUM`. A walk ends at the
/// first window none of whose rows is past the cutoff (it has reached the
/// rows being written now), or at the end of the table; the next round
/// starts again from the start, and takes what was freed meanwhile.
/// `created_at` follows `seq` only roughly (each node dates its rows by
/// its own clock): a few rows dated ahead, by a node whose clock ran
/// fast, do not end a walk (they are kept like held rows, until they are
/// past the cutoff), and a row past the cutoff beyond where a walk ended
/// goes in a later round. Events are walked once
/// the deliveries' walk is over, so that the events whose last deliveries
/// this round deleted go in the same round.
///
/// The small tables (idempotency keys, dashboard sessions) are asked until
/// a batch finds fewer rows than it may delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeRound {
    /// Deliveries (with their attempts) and events created before this
    /// (Unix seconds) are past retention.
    pub(crate) before: i64,
    /// Idempotency keys created before this are.
    pub(crate) keys_before: i64,
    /// Dashboard sessions that expire at or before this are.
    pub(crate) sessions_at: i64,
    /// The walk of `deliveries`.
    pub(crate) deliveries: Walk,
    /// The walk of `events`.
    pub(crate) events: Walk,
    /// Whether the idempotency keys past their cutoff are gone.
    pub(crate) keys_done: bool,
    /// Whether the expired dashboard sessions are gone.
    pub(crate) sessions_done: bool,
}

impl PurgeRound {
    /// A round that deletes deliveries, attempts and events created before
    /// `before`, idempotency keys created before `keys_before` and
    /// dashboard sessions expired at `sessions_at` (`expires_at <=
    /// sessions_at`), all Unix seconds.
    pub fn new(before: i64, keys_before: i64, sessions_at: i64) -> PurgeRound {
        PurgeRound {
            before,
            keys_before,
            sessions_at,
            deliveries: Walk::START,
            events: Walk::START,
            keys_done: false,
            sessions_done: false,
        }
    }

    /// Whether every table has been gone through: a further batch of this
    /// round would delete nothing.
    pub fn finished(&self) -> bool {
        self.deliveries == Walk::Done
            && self.events == Walk::Done
            && self.keys_done
            && self.sessions_done
    }
}

/// Where a round's walk of one table by `seq` has got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walk {
    /// Its next window starts after this `seq`: every row up to it has
    /// been looked at this round.
    After(i64),
    /// Over for this round.
    Done,
}

impl Walk {
    /// Before the first row (`seq` starts at 1).
    pub(crate) const START: Walk = Walk::After(0);

    /// Where the walk goes after a window of `rows` rows (at most `batch`)
    /// whose last `seq` is `last`, and which `reached` the rows not yet
    /// past the cutoff (none of its rows is): over if it did, or if the
    /// window was short (the end of the table); otherwise past the window.
    pub(crate) fn past(last: Option<i64>, rows: i64, reached: bool, batch: u32) -> Walk {
        debug_assert!(batch > 0, "a purge batch of no rows never ends a round");
        match last {
            Some(last) if !reached && rows >= i64::from(batch) => Walk::After(last),
            _ => Walk::Done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_moves_past_full_windows_and_ends_at_the_rows_being_written() {
        assert_eq!(Walk::past(Some(500), 500, false, 500), Walk::After(500));
        assert_eq!(
            Walk::past(Some(900), 500, false, 500),
            Walk::After(900),
            "seq has gaps"
        );
        assert_eq!(Walk::past(Some(500), 500, true, 500), Walk::Done, "reached");
        assert_eq!(Walk::past(Some(7), 7, false, 500), Walk::Done, "the end");
        assert_eq!(Walk::past(None, 0, false, 500), Walk::Done, "empty");
    }

    #[test]
    fn a_pause_in_proportion_to_the_batch_stays_between_2_and_50_ms() {
        let ms = Duration::from_millis;
        assert_eq!(pause_in_proportion(ms(10)), ms(20));
        assert_eq!(pause_in_proportion(Duration::ZERO), ms(2));
        assert_eq!(pause_in_proportion(ms(400)), ms(50));
    }

    #[test]
    fn a_round_is_finished_once_every_table_is_gone_through() {
        let mut round = PurgeRound::new(10, 20, 30);
        assert!(!round.finished());
        round.deliveries = Walk::Done;
        round.events = Walk::Done;
        round.keys_done = true;
        assert!(!round.finished(), "the sessions are left");
        round.sessions_done = true;
        assert!(round.finished());
    }
}
