//! Operational events: what the delivery system did to an account's
//! webhooks and deliveries (`webhook.disabled`, `webhook.circuit_opened`,
//! `webhook.circuit_closed`, `delivery.exhausted`), told to the account's
//! other webhooks that subscribe to them by name.
//!
//! A write-back notes them in its own transaction (`notices` rows, see
//! `store::endpoint_notices`), with the endpoint's state it left;
//! [`Notifly::publish_notice`] turns each into an event of the account's
//! log, and deletes it, in one transaction. The payload is the webhook as
//! the API shows it, with that state, or the delivery with its last
//! attempt.

use notifly_webhooks::{Envelope, OperationalEventType};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::deliveries::Delivery;
use super::{DomainResult, Notifly};
use crate::ids;
use crate::store::{AttemptRecord, EventRecord, NoticeRecord, StoreError};

/// The last attempt of an exhausted delivery (the whole log is at
/// `GET /v1/deliveries/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LastAttempt {
    pub id: String,
    /// 1 for the first attempt.
    pub attempt: i64,
    /// Unix seconds.
    pub started_at: i64,
    pub duration_ms: i64,
    /// The HTTP status the endpoint answered, if it answered.
    pub status_code: Option<i64>,
    /// Why no response came, or why it was not accepted.
    pub error: Option<String>,
}

impl From<AttemptRecord> for LastAttempt {
    fn from(a: AttemptRecord) -> Self {
        LastAttempt {
            id: a.id,
            attempt: a.attempt,
            started_at: a.started_at_ms.div_euclid(1000),
            duration_ms: a.duration_ms,
            status_code: a.response_status,
            error: a.error,
        }
    }
}

/// The payload of `delivery.exhausted`: the delivery, with its last attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExhaustedDelivery {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub last_attempt: Option<LastAttempt>,
}

impl Notifly {
    /// Publishes the oldest owed operational event, in one transaction: it
    /// becomes an event of its account's log, fanned out to the account's
    /// webhooks subscribed to its type by name, the webhook it is about
    /// aside. Returns whether it took one (`false`: none is owed, or
    /// another node is publishing).
    ///
    /// Nothing is published about a webhook deleted since, nor
    /// `delivery.exhausted` for the delivery of a test event or of an
    /// operational event (two failing webhooks subscribed to each other's
    /// exhaustions would otherwise tell each other forever). A notice of a
    /// type this node does not know (written by a newer one) stays owed.
    pub async fn publish_notice(&self) -> DomainResult<bool> {
        let known = OperationalEventType::ALL.map(OperationalEventType::as_str);
        let mut tx = self.write_tx().await?;
        let Some(notice) = tx.take_notices(1, &known).await?.pop() else {
            return Ok(false);
        };
        // Read apart from the transaction (which then takes only the
        // account's shared endpoint lock, for the fan-out).
        if let Some(event) = self.operational_event(&notice).await? {
            tx.insert_operational_event(&notice.account_id, &event, &notice.endpoint_id)
                .await?;
        }
        // Not paced: nobody waits for this write.
        self.commit_unpaced(tx).await?;
        Ok(true)
    }

    /// The event a notice tells, if there is one to tell.
    async fn operational_event(&self, notice: &NoticeRecord) -> DomainResult<Option<EventRecord>> {
        let account = notice.account_id.as_str();
        let Ok(event_type) = notice.event_type.parse::<OperationalEventType>() else {
            return Ok(None);
        };
        let mut conn = self.store.read().await?;
        let Some(endpoint) = conn.endpoint(account, &notice.endpoint_id).await? else {
            return Ok(None);
        };
        let payload = if event_type == OperationalEventType::DeliveryExhausted {
            let Some(id) = notice.delivery_id.as_deref() else {
                return Ok(None);
            };
            let Some(delivery) = conn.delivery(account, id).await? else {
                return Ok(None);
            };
            let operational = delivery.event_type.parse::<OperationalEventType>().is_ok();
            // A test event is a delivered event that is not in the log.
            let test = conn.event(account, &delivery.event_id).await?.is_none()
                && conn
                    .delivered_event(account, &delivery.event_id)
                    .await?
                    .is_some();
            if operational || test {
                return Ok(None);
            }
            let last_attempt = conn
                .attempts(account, id)
                .await?
                .pop()
                .map(LastAttempt::from);
            let mut delivery = Delivery::from(delivery);
            // As it ended, even if retried by hand since.
            delivery.status = "failed".to_owned();
            delivery.next_attempt_at = None;
            serde_json::to_value(ExhaustedDelivery {
                delivery,
                last_attempt,
            })
        } else {
            let mut webhook = serde_json::to_value(self.view(endpoint));
            // As the change left it, even if it changed again since.
            if let (Ok(serde_json::Value::Object(w)), Some(state)) = (&mut webhook, &notice.state)
                && let Ok(serde_json::Value::Object(state)) = serde_json::from_str(state)
            {
                w.extend(state);
            }
            webhook
        }
        .map_err(StoreError::Corrupt)?;
        let envelope = Envelope {
            id: ids::new_id(),
            event_type: event_type.into(),
            payload,
        };
        let body = serde_json::to_string(&envelope).map_err(StoreError::Corrupt)?;
        Ok(Some(EventRecord {
            resource_id: envelope.payload["id"].as_str().map(str::to_owned),
            id: envelope.id,
            event_type: event_type.as_str().to_owned(),
            body,
            created_at: ids::now(),
            // Written by a background task, for no request.
            traceparent: None,
        }))
    }
}

/// An operational event as the dashboard shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub event_id: String,
    pub event_type: OperationalEventType,
    pub created_at: i64,
    /// The webhook it is about (for `delivery.exhausted`, the delivery's).
    pub webhook_id: String,
    /// Its name then, for `webhook.*`.
    pub webhook_name: Option<String>,
    /// `webhook.disabled`'s reason.
    pub disabled_reason: Option<String>,
    /// `delivery.exhausted`'s delivery, with the type of the event it
    /// carried and the attempts it made.
    pub delivery: Option<(String, String, i64)>,
}

impl Notice {
    fn of(event_id: String, t: OperationalEventType, created_at: i64, body: &str) -> Option<Self> {
        let envelope: Envelope<serde_json::Value> = serde_json::from_str(body).ok()?;
        let p = &envelope.payload;
        let text = |key: &str| p[key].as_str().map(str::to_owned);
        let exhausted = t == OperationalEventType::DeliveryExhausted;
        Some(Notice {
            event_id,
            event_type: t,
            created_at,
            webhook_id: text(if exhausted { "webhook_id" } else { "id" })?,
            webhook_name: text("name").filter(|_| !exhausted),
            disabled_reason: text("disabled_reason").filter(|_| !exhausted),
            delivery: exhausted
                .then(|| Some((text("id")?, text("event_type")?, p["attempts"].as_i64()?)))
                .flatten(),
        })
    }
}

impl Notifly {
    /// The account's most recent operational events, newest first, at most
    /// `limit`; with `webhook`, only those about it.
    pub async fn recent_notices(
        &self,
        account: &str,
        webhook: Option<&str>,
        limit: usize,
    ) -> DomainResult<Vec<Notice>> {
        // Enough of each type that those about one webhook fill `limit` in
        // all but accounts with many failing webhooks.
        let page = crate::store::Page {
            limit: if webhook.is_some() { 50 } else { limit as u32 },
            cursor: None,
        };
        let mut conn = self.store.read().await?;
        let mut notices = Vec::new();
        for t in OperationalEventType::ALL {
            let listed = conn.list_events(account, Some(t.as_str()), &page).await?;
            notices.extend(
                listed
                    .items
                    .into_iter()
                    .filter_map(|e| Notice::of(e.id, t, e.created_at, &e.body))
                    .filter(|n| webhook.is_none_or(|w| n.webhook_id == w)),
            );
        }
        notices.sort_by_key(|n| std::cmp::Reverse(n.created_at));
        notices.truncate(limit);
        Ok(notices)
    }
}
