//! The account's event log: the outbox, read back.

use notifly_webhooks::{AnyEventType, Envelope};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{DomainError, DomainResult, Notifly, found, list_error};
use crate::ids;
use crate::store::{EventRecord, Listed, Page, StoreError};

const KIND: &str = "event";

/// An event as the log returns it. `id`, `type` and `payload` are exactly the
/// webhook body's.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Event {
    #[schema(example = "a056V7R7NmNRjl70")]
    pub id: String,
    #[serde(rename = "type")]
    #[schema(example = "conversation.updated")]
    pub event_type: String,
    /// The resource as the REST API returned it when the event happened,
    /// byte for byte as in the webhook body.
    #[schema(value_type = Object)]
    pub payload: Box<serde_json::value::RawValue>,
    pub created_at: i64,
}

impl TryFrom<EventRecord> for Event {
    type Error = DomainError;

    fn try_from(r: EventRecord) -> DomainResult<Event> {
        let envelope: Envelope<Box<serde_json::value::RawValue>> =
            serde_json::from_str(&r.body).map_err(StoreError::Corrupt)?;
        Ok(Event {
            id: r.id,
            event_type: r.event_type,
            payload: envelope.payload,
            created_at: r.created_at,
        })
    }
}

impl Notifly {
    /// One event of the account's log.
    pub async fn event(&self, account: &str, id: &str) -> DomainResult<Event> {
        let mut conn = self.store.read().await?;
        found(conn.event(account, id).await, KIND, id)?.try_into()
    }

    /// A page of the account's log, newest first, optionally of one type.
    pub async fn events(
        &self,
        account: &str,
        event_type: Option<&str>,
        page: &Page,
    ) -> DomainResult<Listed<Event>> {
        if let Some(t) = event_type {
            t.parse::<AnyEventType>().map_err(|_| {
                DomainError::BadRequest(format!(
                    "type: unknown event type `{}`; expected one of {}",
                    ids::printable(t),
                    AnyEventType::ALL.map(AnyEventType::as_str).join(", ")
                ))
            })?;
        }
        let mut conn = self.store.read().await?;
        let listed = conn
            .list_events(account, event_type, page)
            .await
            .map_err(list_error(KIND, page))?;
        let items = listed
            .items
            .into_iter()
            .map(Event::try_from)
            .collect::<DomainResult<Vec<_>>>()?;
        Ok(Listed {
            items,
            has_more: listed.has_more,
        })
    }
}

/// Where an event stream starts.
#[derive(Debug, Clone)]
pub enum StreamStart {
    /// After this event (a resumed stream).
    After(String),
    /// With the next event written.
    Now,
}

impl Notifly {
    /// The position a stream starting at `start` reads after: `None` means
    /// the beginning of the log. An unknown event id is a 400.
    pub async fn stream_position(
        &self,
        account: &str,
        start: StreamStart,
    ) -> DomainResult<Option<String>> {
        let mut conn = self.store.read().await?;
        match start {
            StreamStart::After(id) => {
                if conn.event(account, &id).await?.is_none() {
                    return Err(DomainError::BadRequest(format!(
                        "cannot resume after event `{}`: no such event in this account",
                        ids::printable(&id)
                    )));
                }
                Ok(Some(id))
            }
            StreamStart::Now => Ok(conn.latest_event_id(account).await?),
        }
    }

    /// Events written after `after` (or from the start), oldest first, at most `limit`.
    pub async fn events_after(
        &self,
        account: &str,
        after: Option<&str>,
        limit: u32,
    ) -> DomainResult<Vec<EventRecord>> {
        let mut conn = self.store.read().await?;
        Ok(conn.events_after(account, after, limit).await?)
    }
}
