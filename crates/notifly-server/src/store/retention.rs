//! Deleting what is past retention.

use async_trait::async_trait;

use super::*;

/// What retention deletes.
#[async_trait]
pub trait Retention: Send + Sync {
    /// Deletes one small batch (at most `batch` rows per table) of what is
    /// past retention: attempts and finished deliveries created before
    /// `before`, events before it that no delivery still needs, idempotency
    /// keys created before `keys_before`, and dashboard sessions expired at
    /// `sessions_at` (`expires_at <= sessions_at`). Returns the rows
    /// deleted; 0 means nothing is left to purge.
    async fn purge(
        &self,
        before: i64,
        keys_before: i64,
        sessions_at: i64,
        batch: u32,
    ) -> StoreResult<u64>;
}
