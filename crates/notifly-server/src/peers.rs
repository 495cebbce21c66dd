//! Signals between nodes sharing one database.
//!
//! Within a process, a commit wakes the dispatcher and the event streams
//! directly. Other nodes hear of it through the store ([`Store::announce`],
//! [`Store::follow`]; `LISTEN/NOTIFY` on PostgreSQL, nothing on SQLite,
//! which has one process). Announcements are a latency optimisation only:
//! every node also polls, so a lost one delays work, never loses it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain::Notifly;
use crate::store::Store;

/// At most one announcement per this long: under load many commits share one.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(5);

/// Announces this process's commits until `stop` is cancelled.
pub async fn announce(
    store: Arc<dyn Store>,
    (committed, claimable): (Arc<Notify>, Arc<AtomicBool>),
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = committed.notified() => {}
            () = stop.cancelled() => return,
        }
        let claimable = claimable.swap(false, Ordering::AcqRel);
        if let Err(e) = store.announce(claimable).await {
            tracing::debug!(error = ?e, "announcing a commit to other nodes failed");
        }
        tokio::select! {
            () = tokio::time::sleep(ANNOUNCE_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Wakes this process's dispatcher and event streams when another node
/// announces commits, until `stop` is cancelled.
pub async fn follow(store: Arc<dyn Store>, notifly: Notifly, stop: CancellationToken) {
    store
        .follow(
            Box::new(move |claimable| notifly.peer_committed(claimable)),
            stop,
        )
        .await;
}
