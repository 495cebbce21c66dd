//! Deliveries and their attempts: the record of what was sent where.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{DomainError, DomainResult, Notifly, found, list_error};
use crate::ids;
use crate::store::{AttemptRecord, DeliveryRecord, Listed, Page};

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
    pub since: i64,
}

/// Response of a recovery.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Recovered {
    /// How many failed deliveries are pending again.
    pub recovered: u64,
}

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
            conn.event(account, &record.event_id).await,
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
        let mut tx = self.store.write().await?;
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
        let mut tx = self.store.write().await?;
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
}
