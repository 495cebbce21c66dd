//! Deliveries and their attempts: the record of what was sent where.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{DomainError, DomainResult, Notifly, found, list_error, validate};
use crate::ids;
use crate::store::{AttemptBucket, AttemptRecord, DeliveryRecord, Listed, Page};

const KIND: &str = "delivery";

/// The statuses a delivery can have.
pub const STATUSES: [&str; 4] = ["pending", "succeeded", "failed", "cancelled"];

/// One event on its way to one webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    #[schema(example = "message.created")]
    pub event_type: String,
    /// `pending` (waiting or being retried), `succeeded`, `failed` (retries
    /// exhausted, or the endpoint answered 410) or `cancelled` (webhook deleted).
    #[schema(example = "succeeded")]
    pub status: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// When the next attempt is due (Unix seconds), while pending.
    pub next_attempt_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
    /// HTTP status of the last attempt, if it got a response.
    pub last_status_code: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<DeliveryRecord> for Delivery {
    fn from(r: DeliveryRecord) -> Self {
        Delivery {
            id: r.id,
            webhook_id: r.endpoint_id,
            event_id: r.event_id,
            event_type: r.event_type,
            status: r.status,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_ms.map(|ms| ms.div_euclid(1000)),
            last_attempt_at: r.last_attempt_at,
            last_status_code: r.last_status_code,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A header as sent or received.
pub type Header = (String, String);

/// The request of an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttemptRequest {
    #[schema(value_type = Vec<Vec<String>>)]
    pub headers: Vec<Header>,
    /// The exact body sent (the same for every attempt).
    pub body: String,
}

/// The response of an attempt, when one came.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttemptResponse {
    pub status: i64,
    #[schema(value_type = Vec<Vec<String>>)]
    pub headers: Vec<Header>,
    /// The start of the body (at most 4 KiB), as text.
    pub body: String,
}

/// One HTTP attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    pub id: String,
    /// 1 for the first attempt.
    pub attempt: i64,
    /// Unix seconds.
    pub started_at: i64,
    pub duration_ms: i64,
    pub succeeded: bool,
    pub request: AttemptRequest,
    pub response: Option<AttemptResponse>,
    /// Why no response came, or why it was not accepted.
    pub error: Option<String>,
}

/// A delivery with every attempt, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub attempt_log: Vec<Attempt>,
}

/// Body of `POST /v1/webhooks/{id}/recover`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    /// Resend the failed deliveries created at or after this time (Unix seconds).
    #[serde(deserialize_with = "validate::whole")]
    #[schema(schema_with = validate::schema::timestamp_required)]
    pub since: i64,
}

/// Response of a recovery.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Recovered {
    /// How many failed deliveries are pending again.
    pub recovered: u64,
}

/// How an endpoint has been doing over a recent window: its attempts, time
/// bucket by time bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookHealth {
    /// Start of the window (Unix seconds); it ends now.
    pub since: i64,
    /// Width of each bucket, in seconds.
    pub bucket_secs: i64,
    /// Every bucket of the window, oldest first, empty ones included.
    pub buckets: Vec<HealthBucket>,
    /// Attempts in the window.
    pub attempts: i64,
    /// Successful attempts in the window.
    pub succeeded: i64,
    /// Sum of the durations of the window's attempts.
    pub total_duration_ms: i64,
    /// When a delivery to the endpoint was last attempted, in or before the window.
    pub last_attempt_at: Option<i64>,
}

/// The attempts of one time bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthBucket {
    /// Start of the bucket (Unix seconds).
    pub start: i64,
    pub attempts: i64,
    pub succeeded: i64,
    /// Mean duration of the bucket's attempts, if it has any.
    pub avg_duration_ms: Option<i64>,
    pub max_duration_ms: Option<i64>,
}

impl WebhookHealth {
    /// Share of the window's attempts that succeeded (0 to 1), if there were any.
    pub fn success_rate(&self) -> Option<f64> {
        (self.attempts > 0).then(|| self.succeeded as f64 / self.attempts as f64)
    }

    /// Mean attempt duration over the window, if there were attempts.
    pub fn avg_duration_ms(&self) -> Option<i64> {
        (self.attempts > 0).then(|| self.total_duration_ms / self.attempts)
    }
}

/// Longest window [`Notifly::webhook_health`] looks at: 30 days.
pub const MAX_HEALTH_WINDOW_SECS: i64 = 30 * 24 * 60 * 60;
/// Most buckets a health window is cut into.
pub const MAX_HEALTH_BUCKETS: u32 = 240;

fn attempt(r: AttemptRecord, body: &str) -> Attempt {
    Attempt {
        id: r.id,
        attempt: r.attempt,
        started_at: r.started_at_ms.div_euclid(1000),
        duration_ms: r.duration_ms,
        succeeded: r.succeeded,
        request: AttemptRequest {
            headers: r.request_headers.0,
            body: body.to_owned(),
        },
        response: r.response_status.map(|status| AttemptResponse {
            status,
            headers: r.response_headers.map(|h| h.0).unwrap_or_default(),
            body: r.response_body.unwrap_or_default(),
        }),
        error: r.error,
    }
}

impl Notifly {
    /// A page of an endpoint's deliveries, newest first, optionally of one status.
    pub async fn deliveries(
        &self,
        account: &str,
        webhook_id: &str,
        status: Option<&str>,
        page: &Page,
    ) -> DomainResult<Listed<Delivery>> {
        if let Some(s) = status
            && !STATUSES.contains(&s)
        {
            return Err(DomainError::BadRequest(format!(
                "status must be one of {}, not `{}`",
                STATUSES.join(", "),
                ids::printable(s)
            )));
        }
        let mut conn = self.store.read().await?;
        found(
            conn.endpoint(account, webhook_id).await,
            "webhook",
            webhook_id,
        )?;
        let listed = conn
            .list_deliveries(account, webhook_id, status, page)
            .await
            .map_err(list_error(KIND, page))?;
        Ok(listed.map(Delivery::from))
    }

    /// One delivery with its attempts.
    pub async fn delivery(&self, account: &str, id: &str) -> DomainResult<DeliveryDetail> {
        let mut conn = self.store.read().await?;
        let record = found(conn.delivery(account, id).await, KIND, id)?;
        let event = found(
            conn.delivered_event(account, &record.event_id).await,
            "event",
            &record.event_id,
        )?;
        let attempts = conn.attempts(account, id).await?;
        Ok(DeliveryDetail {
            attempt_log: attempts
                .into_iter()
                .map(|a| attempt(a, &event.body))
                .collect(),
            delivery: record.into(),
        })
    }

    /// Sends a delivery again now, with a fresh retry schedule, whatever its
    /// status (a succeeded one is sent once more).
    pub async fn retry_delivery(&self, account: &str, id: &str) -> DomainResult<Delivery> {
        let mut tx = self.write_tx().await?;
        let record = found(tx.delivery(account, id).await, KIND, id)?;
        let Some(endpoint) = tx.endpoint(account, &record.endpoint_id).await? else {
            return Err(DomainError::Conflict(format!(
                "the webhook of delivery `{id}` was deleted"
            )));
        };
        if !endpoint.enabled {
            return Err(DomainError::Conflict(format!(
                "webhook `{}` is disabled; enable it to retry its deliveries",
                endpoint.id
            )));
        }
        if !tx.retry_delivery(account, id, ids::now_ms()).await? {
            return Err(DomainError::Conflict(format!(
                "delivery `{id}` is being attempted right now; retry it once that attempt is recorded"
            )));
        }
        let updated = found(tx.delivery(account, id).await, KIND, id)?;
        self.commit(tx).await?;
        Ok(updated.into())
    }

    /// Makes every failed delivery of a webhook created since `since` pending again.
    pub async fn recover_webhook(
        &self,
        account: &str,
        webhook_id: &str,
        input: Recover,
    ) -> DomainResult<Recovered> {
        if input.since < 0 {
            return Err(DomainError::Invalid("since must be Unix seconds".into()));
        }
        let mut tx = self.write_tx().await?;
        found(
            tx.endpoint(account, webhook_id).await,
            "webhook",
            webhook_id,
        )?;
        let recovered = tx
            .recover_deliveries(account, webhook_id, input.since, ids::now_ms())
            .await?;
        self.commit(tx).await?;
        Ok(Recovered { recovered })
    }

    /// An endpoint's attempts over the last `window_secs` seconds, cut into
    /// `buckets` equal time buckets, and when it was last attempted.
    pub async fn webhook_health(
        &self,
        account: &str,
        webhook_id: &str,
        window_secs: i64,
        buckets: u32,
    ) -> DomainResult<WebhookHealth> {
        if !(1..=MAX_HEALTH_WINDOW_SECS).contains(&window_secs) {
            return Err(DomainError::BadRequest(format!(
                "the window must be between 1 and {MAX_HEALTH_WINDOW_SECS} seconds"
            )));
        }
        if !(1..=MAX_HEALTH_BUCKETS).contains(&buckets) {
            return Err(DomainError::BadRequest(format!(
                "buckets must be between 1 and {MAX_HEALTH_BUCKETS}"
            )));
        }
        let n = i64::from(buckets);
        let bucket_ms = ((window_secs * 1000 + n - 1) / n).max(1);
        let since_ms = ids::now_ms() - bucket_ms * i64::from(buckets);
        let mut conn = self.store.read().await?;
        found(
            conn.endpoint(account, webhook_id).await,
            "webhook",
            webhook_id,
        )?;
        let rows = conn
            .attempt_buckets(account, webhook_id, since_ms, bucket_ms)
            .await?;
        let last_attempt_at = conn.last_attempt_at(account, webhook_id).await?;
        Ok(health(since_ms, bucket_ms, buckets, &rows, last_attempt_at))
    }
}

/// Fills the window's buckets from the store's (which omit empty ones).
fn health(
    since_ms: i64,
    bucket_ms: i64,
    buckets: u32,
    rows: &[AttemptBucket],
    last_attempt_at: Option<i64>,
) -> WebhookHealth {
    let mut out: Vec<HealthBucket> = (0..i64::from(buckets))
        .map(|i| HealthBucket {
            start: (since_ms + i * bucket_ms).div_euclid(1000),
            attempts: 0,
            succeeded: 0,
            avg_duration_ms: None,
            max_duration_ms: None,
        })
        .collect();
    let (mut attempts, mut succeeded, mut total) = (0, 0, 0);
    for row in rows {
        // An attempt recorded in the last instant may land one past the end.
        let i = row.bucket.clamp(0, i64::from(buckets) - 1) as usize;
        let b = &mut out[i];
        let before = b.avg_duration_ms.unwrap_or(0) * b.attempts;
        b.attempts += row.attempts;
        b.succeeded += row.succeeded;
        b.avg_duration_ms = Some((before + row.total_duration_ms) / b.attempts.max(1));
        b.max_duration_ms = Some(b.max_duration_ms.unwrap_or(0).max(row.max_duration_ms));
        attempts += row.attempts;
        succeeded += row.succeeded;
        total += row.total_duration_ms;
    }
    WebhookHealth {
        since: since_ms.div_euclid(1000),
        bucket_secs: bucket_ms / 1000,
        buckets: out,
        attempts,
        succeeded,
        total_duration_ms: total,
        last_attempt_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(bucket: i64, attempts: i64, succeeded: i64, total: i64, max: i64) -> AttemptBucket {
        AttemptBucket {
            bucket,
            attempts,
            succeeded,
            total_duration_ms: total,
            max_duration_ms: max,
        }
    }

    #[test]
    fn health_fills_empty_buckets_and_sums_the_window() {
        let h = health(
            3_600_000,
            1_800_000,
            4,
            &[row(1, 4, 3, 400, 250), row(3, 2, 0, 1000, 600)],
            Some(42),
        );
        assert_eq!(h.since, 3600);
        assert_eq!(h.bucket_secs, 1800);
        assert_eq!(h.buckets.len(), 4);
        assert_eq!(h.buckets[0].attempts, 0);
        assert_eq!(h.buckets[0].avg_duration_ms, None);
        assert_eq!(h.buckets[1].start, 3600 + 1800);
        assert_eq!(h.buckets[1].avg_duration_ms, Some(100));
        assert_eq!(h.buckets[3].max_duration_ms, Some(600));
        assert_eq!((h.attempts, h.succeeded), (6, 3));
        assert_eq!(h.success_rate(), Some(0.5));
        assert_eq!(h.avg_duration_ms(), Some(233));
        assert_eq!(h.last_attempt_at, Some(42));
    }

    #[test]
    fn an_idle_endpoint_has_no_rate() {
        let h = health(0, 1000, 2, &[], None);
        assert_eq!(h.success_rate(), None);
        assert_eq!(h.avg_duration_ms(), None);
        // A late row is kept in the last bucket rather than dropped.
        let h = health(0, 1000, 2, &[row(2, 1, 1, 5, 5)], None);
        assert_eq!(h.buckets[1].attempts, 1);
    }
}
