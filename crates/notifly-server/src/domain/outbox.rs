//! The transactional outbox: events are rows written in the transaction of the
//! change that caused them, so an acknowledged write always has its event and a
//! rolled-back write never does.

use notifly_webhooks::{Action, Envelope, EventType, ResourceKind};
use serde::Serialize;

use super::DomainResult;
use crate::ids;
use crate::store::{EventRecord, StoreError, WriteTx};

/// A resource an event is about: its payload, with the id that
/// `per_resource` ordering keys on.
pub trait Resource: Serialize + Sync {
    /// The payload's `id`.
    fn resource_id(&self) -> &str;
}

/// Appends the event `resource.action` with `payload` (the resource exactly as
/// the REST API returns it) to the account's log, inside `tx`.
///
/// The webhook body is serialized here, once; deliveries send these bytes.
pub async fn emit<P: Resource>(
    tx: &mut dyn WriteTx,
    account: &str,
    resource: ResourceKind,
    action: Action,
    payload: &P,
) -> DomainResult<()> {
    let envelope = Envelope {
        id: ids::new_id(),
        event_type: EventType::new(resource, action).into(),
        payload,
    };
    let body = serde_json::to_string(&envelope).map_err(StoreError::Corrupt)?;
    let record = EventRecord {
        id: envelope.id,
        event_type: envelope.event_type.as_str().to_owned(),
        body,
        created_at: ids::now(),
        resource_id: Some(payload.resource_id().to_owned()),
        traceparent: crate::telemetry::current_traceparent(),
    };
    tx.insert_event(account, &record).await?;
    Ok(())
}

macro_rules! resources {
    ($($t:ty),*) => {$(
        impl Resource for $t {
            fn resource_id(&self) -> &str {
                &self.id
            }
        }
    )*};
}

resources!(
    crate::store::Contact,
    crate::store::Conversation,
    crate::store::Attachment,
    super::messages::Message,
    super::groups::Group
);
