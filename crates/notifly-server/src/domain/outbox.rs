//! The transactional outbox: events are rows written in the transaction of the
//! change that caused them, so an acknowledged write always has its event and a
//! rolled-back write never does.

use notifly_webhooks::{Action, Envelope, EventType, ResourceKind};
use serde::Serialize;

use super::DomainResult;
use crate::ids;
use crate::store::{EventRecord, StoreError, WriteTx};

/// Appends the event `resource.action` with `payload` (the resource exactly as
/// the REST API returns it) to the account's log, inside `tx`.
///
/// The webhook body is serialized here, once; deliveries send these bytes.
pub async fn emit<P: Serialize + Sync>(
    tx: &mut dyn WriteTx,
    account: &str,
    resource: ResourceKind,
    action: Action,
    payload: &P,
) -> DomainResult<()> {
    let envelope = Envelope {
        id: ids::new_id(),
        event_type: EventType::new(resource, action),
        payload,
    };
    let body = serde_json::to_string(&envelope).map_err(StoreError::Corrupt)?;
    let record = EventRecord {
        id: envelope.id,
        event_type: envelope.event_type.as_str().to_owned(),
        body,
        created_at: ids::now(),
    };
    tx.insert_event(account, &record).await?;
    Ok(())
}
