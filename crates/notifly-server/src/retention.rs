//! Retention: events, finished deliveries and their attempts older than the
//! configured period are deleted in small batches, so that the tables stay
//! bounded without a long-running delete ever holding the database. Each
//! run is one round ([`PurgeRound`]): it ends when the store has gone
//! through every table, not at the first batch that deleted nothing (a
//! batch may only have moved past rows that must be kept).
//! Idempotency keys are kept for 24 hours; expired dashboard sessions are
//! deleted on the same rounds.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::ids;
use crate::store::{PurgeRound, Store};

/// Rows per table per batch.
const BATCH: u32 = 500;
/// How long an `Idempotency-Key` replays its response.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Purges every `every` until `stop` is cancelled.
pub async fn run(store: Arc<dyn Store>, keep: Duration, every: Duration, stop: CancellationToken) {
    loop {
        let now = ids::now();
        let before = now - keep.as_secs() as i64;
        let keys_before = now - IDEMPOTENCY_TTL.as_secs() as i64;
        let mut round = PurgeRound::new(before, keys_before, now);
        let mut total = 0;
        while !round.finished() {
            let started = std::time::Instant::now();
            match store.purge(&mut round, BATCH).await {
                Ok(n) => total += n,
                Err(e) => {
                    crate::metrics::background_write_failed(
                        "purging old data",
                        e.is_storage_full(),
                        &e,
                    );
                    break;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(store.purge_pause(started.elapsed())) => {}
                () = stop.cancelled() => return,
            }
        }
        if total > 0 {
            tracing::info!(rows = total, "purged data past retention");
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
    }
}
