//! The replayer: moves replays on (`Notifly::advance_replays`). Woken when
//! a replay is made; while one waits for its webhook's pending deliveries
//! to go it looks again every 50 ms, otherwise every poll interval (for
//! replays made on another node, or whose webhook is disabled).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::Notifly;

/// How soon a replay in progress is looked at again when it could not go
/// on (its webhook has a full window of pending deliveries).
const BUSY_LOOK: Duration = Duration::from_millis(50);

/// Advances replays until `shutdown`.
pub async fn run(notifly: Notifly, poll: Duration, shutdown: CancellationToken) {
    let wake = notifly.replays.clone();
    loop {
        let mut wait = poll;
        while !shutdown.is_cancelled() {
            match notifly.advance_replays().await {
                Ok((true, _)) => {}
                Ok((false, waiting)) => {
                    if waiting {
                        wait = BUSY_LOOK.min(poll);
                    }
                    break;
                }
                Err(e) => {
                    crate::metrics::background_write_failed(
                        "advancing replays",
                        e.is_storage_full(),
                        &e,
                    );
                    break;
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
