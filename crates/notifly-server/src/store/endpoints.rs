//! Webhook endpoints, and their stored keys (for sealing them at rest).

use async_trait::async_trait;

use super::*;

/// Every endpoint's stored keys, across accounts, for sealing them at
/// rest (see `secrets.rs`).
#[async_trait]
pub trait EndpointKeys: Send + Sync {
    /// Every account's endpoints' stored keys with ids after `after`, in id
    /// order, at most `limit`: for sealing them at start-up and sealing
    /// them again under a new key.
    async fn endpoint_keys(&self, after: &str, limit: u32) -> StoreResult<Vec<StoredKeys>>;

    /// Replaces an endpoint's stored keys with `after`'s if they are still
    /// `before`'s (a rotation in between wins); whether they were.
    async fn replace_endpoint_keys(
        &self,
        before: &StoredKeys,
        after: &StoredKeys,
    ) -> StoreResult<bool>;
}

/// Reads of an account's endpoints.
#[async_trait]
pub trait EndpointReads: Send {
    async fn endpoint(&mut self, account: &str, id: &str) -> StoreResult<Option<EndpointRecord>>;
    async fn list_endpoints(
        &mut self,
        account: &str,
        page: &Page,
    ) -> StoreResult<Listed<EndpointRecord>>;
}

/// Writes of an account's endpoints.
#[async_trait]
pub trait EndpointWrites: Send {
    async fn insert_endpoint(
        &mut self,
        account: &str,
        endpoint: &EndpointRecord,
    ) -> StoreResult<()>;
    async fn update_endpoint(
        &mut self,
        account: &str,
        endpoint: &EndpointRecord,
    ) -> StoreResult<()>;
    /// Deletes an endpoint and cancels its pending deliveries.
    async fn delete_endpoint(&mut self, account: &str, id: &str) -> StoreResult<()>;
}
