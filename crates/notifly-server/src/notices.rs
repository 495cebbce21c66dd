//! The publisher of operational events: turns the notices that write-backs
//! leave into events (`Notifly::publish_notice`). Woken by the write-back
//! that left them; it also looks every poll interval, for notices a node
//! that stopped or died left behind (another node's, on PostgreSQL).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain::Notifly;

/// Publishes notices until `shutdown`: at once when `wake` is notified, and
/// after a look every `poll`.
pub async fn run(notifly: Notifly, wake: Arc<Notify>, poll: Duration, shutdown: CancellationToken) {
    // At start-up, whatever an earlier run left.
    let mut look_first = true;
    loop {
        if !look_first || owed(&notifly).await {
            publish(&notifly, &shutdown).await;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => look_first = false,
            () = tokio::time::sleep(poll) => look_first = true,
        }
    }
}

/// Whether notices are owed: a read, so that an idle poll writes nothing.
async fn owed(notifly: &Notifly) -> bool {
    let read = async { notifly.store().read().await?.has_notices().await };
    match read.await {
        Ok(owed) => owed,
        Err(e) => {
            tracing::warn!(error = ?e, "looking for operational events to publish failed");
            false
        }
    }
}

/// Publishes every owed notice, one per transaction. A failed one stays
/// owed (its transaction rolled back) for the next look.
async fn publish(notifly: &Notifly, shutdown: &CancellationToken) {
    while !shutdown.is_cancelled() {
        match notifly.publish_notice().await {
            Ok(false) => return,
            Ok(true) => {}
            Err(e) => {
                crate::metrics::background_write_failed(
                    "publishing operational events",
                    e.is_storage_full(),
                    &e,
                );
                return;
            }
        }
    }
}
