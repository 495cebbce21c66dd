//! Deliveries and their attempts, as the API shows them; retries and
//! recovery.
//!
//! [`DeliveryReads`] is written once, here, over the backends' [`Tables`];
//! each backend writes [`AttemptReads`] and [`DeliveryWrites`].

use async_trait::async_trait;

use super::*;

/// A delivery by id, and a page of an endpoint's.
#[async_trait]
pub trait DeliveryReads: Send {
    async fn delivery(&mut self, account: &str, id: &str) -> StoreResult<Option<DeliveryRecord>>;
    async fn list_deliveries(
        &mut self,
        account: &str,
        endpoint_id: &str,
        status: Option<&str>,
        page: &Page,
    ) -> StoreResult<Listed<DeliveryRecord>>;
}

/// Attempts, as the API and the dashboard show them.
#[async_trait]
pub trait AttemptReads: Send {
    /// Every attempt of a delivery, oldest first.
    async fn attempts(
        &mut self,
        account: &str,
        delivery_id: &str,
    ) -> StoreResult<Vec<AttemptRecord>>;
    /// An endpoint's attempts started at or after `since_ms`, summed per
    /// bucket of `bucket_ms` (bucket 0 starts at `since_ms`), oldest bucket
    /// first; buckets without attempts are absent.
    async fn attempt_buckets(
        &mut self,
        account: &str,
        endpoint_id: &str,
        since_ms: i64,
        bucket_ms: i64,
    ) -> StoreResult<Vec<AttemptBucket>>;
    /// When a delivery to an endpoint was last attempted (Unix seconds).
    async fn last_attempt_at(
        &mut self,
        account: &str,
        endpoint_id: &str,
    ) -> StoreResult<Option<i64>>;
}

/// Sending deliveries again by hand.
#[async_trait]
pub trait DeliveryWrites: Send {
    /// Makes a delivery pending again, due now, with a fresh retry schedule.
    /// Returns `false` (and changes nothing) while an attempt is in flight.
    async fn retry_delivery(&mut self, account: &str, id: &str, now_ms: i64) -> StoreResult<bool>;
    /// Makes every failed delivery of an endpoint created at or after `since`
    /// pending again, due now. Returns how many.
    async fn recover_deliveries(
        &mut self,
        account: &str,
        endpoint_id: &str,
        since: i64,
        now_ms: i64,
    ) -> StoreResult<u64>;
}

#[async_trait]
impl<H: Tables> DeliveryReads for H {
    async fn delivery(&mut self, account: &str, id: &str) -> StoreResult<Option<DeliveryRecord>> {
        self.get(account, id).await
    }

    async fn list_deliveries(
        &mut self,
        account: &str,
        endpoint_id: &str,
        status: Option<&str>,
        page: &Page,
    ) -> StoreResult<Listed<DeliveryRecord>> {
        let mut filters = vec![Filter::Text("endpoint_id", endpoint_id)];
        filters.extend(Filter::optional("status", status));
        self.list(account, &filters, page).await
    }
}
