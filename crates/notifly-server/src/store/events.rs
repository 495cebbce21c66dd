//! The event log (the outbox) and the responses kept for idempotent
//! requests.

use async_trait::async_trait;

use super::*;

/// Reads of the event log, in its order, and of idempotent responses.
#[async_trait]
pub trait EventReads: Send {
    /// An event of the account's log (`/v1/events`): test events are not.
    async fn event(&mut self, account: &str, id: &str) -> StoreResult<Option<EventRecord>>;
    /// Any event a delivery of the account was made for, test events too.
    async fn delivered_event(
        &mut self,
        account: &str,
        id: &str,
    ) -> StoreResult<Option<EventRecord>>;
    async fn list_events(
        &mut self,
        account: &str,
        event_type: Option<&str>,
        page: &Page,
    ) -> StoreResult<Listed<EventRecord>>;
    /// Up to `limit` events written after the event `after` (from the start of
    /// the log if `None`), oldest first: for streaming the log.
    async fn events_after(
        &mut self,
        account: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>>;
    /// The newest event's id, if any.
    async fn latest_event_id(&mut self, account: &str) -> StoreResult<Option<String>>;

    async fn idempotent_response(
        &mut self,
        account: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotentResponse>>;

    /// Whether operational events are owed (see [`NoticeRecord`]).
    async fn has_notices(&mut self) -> StoreResult<bool>;
}

/// Appends to the event log, fanning each event out to its deliveries,
/// and keeps idempotent responses.
#[async_trait]
pub trait EventWrites: Send {
    /// Appends an event to the account's log (the outbox) and fans it out: one
    /// pending delivery per enabled endpoint subscribed to its type. Returns
    /// how many deliveries it created.
    async fn insert_event(&mut self, account: &str, event: &EventRecord) -> StoreResult<u64>;
    /// Appends an event delivered to one endpoint only (a test event, which
    /// the account's log and its stream do not show); returns the
    /// delivery's id.
    async fn insert_event_for_endpoint(
        &mut self,
        account: &str,
        event: &EventRecord,
        endpoint_id: &str,
    ) -> StoreResult<String>;

    /// Appends an operational event to the account's log and fans it out
    /// to the enabled endpoints subscribed to its type by name (`"*"` does
    /// not select it), except `about`, the endpoint it concerns. Returns
    /// how many deliveries it created (on SQLite handed off like any
    /// others, on PostgreSQL left for a claim).
    async fn insert_operational_event(
        &mut self,
        account: &str,
        event: &EventRecord,
        about: &str,
    ) -> StoreResult<u64>;

    /// Takes up to `limit` owed operational events of these types (those
    /// this node knows), oldest first: deleted in this transaction, so they
    /// are published once if it commits and stay owed if it does not. On
    /// PostgreSQL one transaction at a time takes any (the others take
    /// none), so that they are published in order.
    async fn take_notices(&mut self, limit: u32, types: &[&str]) -> StoreResult<Vec<NoticeRecord>>;

    /// Remembers the response to an idempotent request. A second insert of the
    /// same key is a [`StoreError::Conflict`].
    async fn insert_idempotent_response(
        &mut self,
        account: &str,
        key: &str,
        response: &IdempotentResponse,
    ) -> StoreResult<()>;
}
