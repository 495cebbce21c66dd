//! Replays: a webhook sent again the events of its account's log in a time
//! window, batch by batch (see `domain::replays`).

use async_trait::async_trait;

use super::*;

/// Reads of replays, and what the replayer needs to know to pace them.
#[async_trait]
pub trait ReplayReads: Send {
    async fn replay(&mut self, account: &str, id: &str) -> StoreResult<Option<ReplayRecord>>;
    /// An endpoint's replays, newest first, at most `limit`.
    async fn replays_of(
        &mut self,
        account: &str,
        endpoint_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<ReplayRecord>>;
    /// Replays in progress (`queued` or `running`) of every account, the
    /// least recently advanced first, at most `limit`.
    async fn active_replays(&mut self, limit: u32) -> StoreResult<Vec<ReplayRecord>>;
    /// The last event of the account's log (test events aside) created
    /// before `at` (Unix seconds): a replay from `at` reads the log after
    /// it (`None`: from the start).
    async fn event_before(&mut self, account: &str, at: i64) -> StoreResult<Option<String>>;
    /// How many of an endpoint's deliveries are pending, counted up to
    /// `cap`.
    async fn pending_deliveries(&mut self, endpoint_id: &str, cap: i64) -> StoreResult<i64>;
}

/// Writes of replays and of the deliveries they make.
#[async_trait]
pub trait ReplayWrites: Send {
    async fn insert_replay(&mut self, account: &str, replay: &ReplayRecord) -> StoreResult<()>;
    /// Writes a replay's progress (`status`, `sent`, `cursor`,
    /// `updated_at`) if it is still in progress with its cursor at `from`
    /// (another node did not move it meanwhile); returns whether it did.
    async fn advance_replay(
        &mut self,
        account: &str,
        replay: &ReplayRecord,
        from: Option<&str>,
    ) -> StoreResult<bool>;
    /// Ends a replay in progress with `status` (`cancelled`, `failed`);
    /// returns whether it was in progress.
    async fn end_replay(
        &mut self,
        account: &str,
        id: &str,
        status: &str,
        now: i64,
    ) -> StoreResult<bool>;
    /// A pending delivery of the logged event `event` to one of the
    /// account's endpoints, left for a claim; returns its id.
    async fn insert_replayed_delivery(
        &mut self,
        account: &str,
        event: &EventRecord,
        endpoint_id: &str,
    ) -> StoreResult<String>;
}
