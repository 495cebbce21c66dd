//! Typed events: the envelope parsed into one enum variant per event type.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::resources::{
    Attachment, Contact, Conversation, ExhaustedDelivery, Group, Message, WebhookEndpoint,
};
use crate::{Action, AnyEventType, EventType, OperationalEventType, ResourceKind};

/// A parsed webhook: the event id and the typed event.
///
/// It (de)serializes as the request body, `{"id", "type", "payload"}`.
///
/// ```
/// use notifly_webhooks::{Event, WebhookEvent};
///
/// let body = br#"{"id": "a056V7R7NmNRjl70", "type": "conversation.updated", "payload": {
///     "id": "WAz8eIbvDR60rouK", "contact_id": "xgQQXg3hrtjh7AvZ", "is_pinned": true,
///     "is_muted": false, "created_at": 692233200}}"#;
/// let event = WebhookEvent::parse(body)?;
/// assert_eq!(event.id, "a056V7R7NmNRjl70");
/// assert_eq!(event.event_type(), "conversation.updated");
/// match event.event {
///     Event::ConversationUpdated(c) => assert!(c.is_pinned),
///     other => panic!("unexpected {other:?}"),
/// }
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WebhookEvent {
    /// The event id: a 16-character base62 string, the same on every retry
    /// and equal to the `webhook-id` header. Use it to deduplicate.
    pub id: String,
    /// What happened, with the resource it happened to.
    pub event: Event,
}

impl WebhookEvent {
    /// An event with this id.
    pub fn new(id: impl Into<String>, event: Event) -> Self {
        WebhookEvent {
            id: id.into(),
            event,
        }
    }

    /// Parses a webhook body, without checking any signature: use
    /// [`Webhook::verify`](crate::Webhook::verify) on requests.
    ///
    /// An event type this version of the crate does not know parses as
    /// [`Event::Unknown`]; a known type whose payload lacks a required field
    /// (or has one of the wrong type) is an error.
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The event type's wire name, e.g. `message.updated`.
    pub fn event_type(&self) -> &str {
        self.event.event_type()
    }
}

macro_rules! events {
    (resource {$(
        $(#[doc = $doc:literal])*
        $variant:ident($payload:ident) = $resource:ident . $action:ident;
    )*}
    operational {$(
        $(#[doc = $odoc:literal])*
        $ovariant:ident($opayload:ident) = $otype:ident;
    )*}) => {
        /// What happened: one variant per event type, carrying the resource.
        ///
        /// For a `*.deleted` event the resource is as it was just before
        /// deletion. Match with a wildcard arm: new event types become new
        /// variants, and until this crate knows them they arrive as
        /// [`Event::Unknown`].
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub enum Event {
            $(
                $(#[doc = $doc])*
                $variant($payload),
            )*
            $(
                $(#[doc = $odoc])*
                $ovariant($opayload),
            )*
            /// An event type this version of the crate does not know, with
            /// its payload as raw JSON.
            Unknown {
                /// The event type's wire name.
                event_type: String,
                /// The payload, unparsed.
                payload: Value,
            },
        }

        impl Event {
            /// The resource event type, or `None` for an operational event
            /// and for [`Event::Unknown`].
            pub fn known_type(&self) -> Option<EventType> {
                match self.any_type()? {
                    AnyEventType::Resource(t) => Some(t),
                    AnyEventType::Operational(_) => None,
                }
            }

            /// The event type, resource or operational, or `None` for
            /// [`Event::Unknown`].
            pub fn any_type(&self) -> Option<AnyEventType> {
                match self {
                    $(Event::$variant(_) => {
                        Some(EventType::new(ResourceKind::$resource, Action::$action).into())
                    })*
                    $(Event::$ovariant(_) => Some(OperationalEventType::$otype.into()),)*
                    Event::Unknown { .. } => None,
                }
            }

            /// The event type's wire name, e.g. `message.updated`; for
            /// [`Event::Unknown`], the name it arrived with.
            pub fn event_type(&self) -> &str {
                match self {
                    $(Event::$variant(_) => {
                        EventType::new(ResourceKind::$resource, Action::$action).as_str()
                    })*
                    $(Event::$ovariant(_) => OperationalEventType::$otype.as_str(),)*
                    Event::Unknown { event_type, .. } => event_type,
                }
            }

            /// The id of the resource the event is about (for an
            /// operational event, of the webhook or the delivery), if it
            /// has one.
            pub fn resource_id(&self) -> Option<&str> {
                match self {
                    $(Event::$variant(p) => Some(&p.id),)*
                    $(Event::$ovariant(p) => Some(&p.id),)*
                    Event::Unknown { payload, .. } => payload.get("id").and_then(Value::as_str),
                }
            }

            /// Builds the event from an envelope's `type` and `payload`.
            ///
            /// An event type this crate does not know gives
            /// [`Event::Unknown`]; a known one whose payload does not have
            /// its resource's shape is an error.
            pub fn from_parts(event_type: &str, payload: Value) -> Result<Self, serde_json::Error> {
                let Ok(known) = event_type.parse::<AnyEventType>() else {
                    return Ok(Event::Unknown {
                        event_type: event_type.to_owned(),
                        payload,
                    });
                };
                match known {
                    AnyEventType::Resource(known) => match (known.resource(), known.action()) {
                        $((ResourceKind::$resource, Action::$action) => {
                            serde_json::from_value(payload).map(Event::$variant)
                        })*
                    },
                    AnyEventType::Operational(known) => match known {
                        $(OperationalEventType::$otype => {
                            serde_json::from_value(payload).map(Event::$ovariant)
                        })*
                    },
                }
            }
        }

        /// Serializes an event's payload.
        struct PayloadRef<'a>(&'a Event);

        impl Serialize for PayloadRef<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self.0 {
                    $(Event::$variant(p) => p.serialize(serializer),)*
                    $(Event::$ovariant(p) => p.serialize(serializer),)*
                    Event::Unknown { payload, .. } => payload.serialize(serializer),
                }
            }
        }
    };
}

events! {
    resource {
    /// `contact.created`: a new contact was created.
    ContactCreated(Contact) = Contact.Created;
    /// `contact.updated`: an existing contact was updated.
    ContactUpdated(Contact) = Contact.Updated;
    /// `contact.deleted`: a contact was deleted.
    ContactDeleted(Contact) = Contact.Deleted;
    /// `conversation.created`: a new conversation was created.
    ConversationCreated(Conversation) = Conversation.Created;
    /// `conversation.updated`: an existing conversation was updated.
    ConversationUpdated(Conversation) = Conversation.Updated;
    /// `conversation.deleted`: a conversation was deleted.
    ConversationDeleted(Conversation) = Conversation.Deleted;
    /// `message.created`: a new message was created.
    MessageCreated(Message) = Message.Created;
    /// `message.updated`: an existing message was updated.
    MessageUpdated(Message) = Message.Updated;
    /// `message.deleted`: a message was deleted.
    MessageDeleted(Message) = Message.Deleted;
    /// `group.created`: a new group was created.
    GroupCreated(Group) = Group.Created;
    /// `group.updated`: an existing group was updated.
    GroupUpdated(Group) = Group.Updated;
    /// `group.deleted`: a group was deleted.
    GroupDeleted(Group) = Group.Deleted;
    /// `attachment.created`: a new attachment was created.
    AttachmentCreated(Attachment) = Attachment.Created;
    /// `attachment.updated`: an existing attachment was updated.
    AttachmentUpdated(Attachment) = Attachment.Updated;
    /// `attachment.deleted`: an attachment was deleted.
    AttachmentDeleted(Attachment) = Attachment.Deleted;
    }
    operational {
        /// `webhook.disabled`: Notifly disabled one of the account's
        /// webhooks (see `disabled_reason`).
        WebhookDisabled(WebhookEndpoint) = WebhookDisabled;
        /// `webhook.circuit_opened`: a webhook's circuit opened.
        WebhookCircuitOpened(WebhookEndpoint) = WebhookCircuitOpened;
        /// `webhook.circuit_closed`: a webhook's circuit closed again.
        WebhookCircuitClosed(WebhookEndpoint) = WebhookCircuitClosed;
        /// `delivery.exhausted`: a delivery failed its last retry.
        DeliveryExhausted(ExhaustedDelivery) = DeliveryExhausted;
    }
}

impl Serialize for WebhookEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            id: &'a str,
            #[serde(rename = "type")]
            event_type: &'a str,
            payload: PayloadRef<'a>,
        }
        Wire {
            id: &self.id,
            event_type: self.event.event_type(),
            payload: PayloadRef(&self.event),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for WebhookEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            id: String,
            #[serde(rename = "type")]
            event_type: String,
            payload: Value,
        }
        let wire = Wire::deserialize(deserializer)?;
        let event = Event::from_parts(&wire.event_type, wire.payload).map_err(|e| {
            D::Error::custom(format_args!("invalid `{}` payload: {e}", wire.event_type))
        })?;
        Ok(WebhookEvent { id: wire.id, event })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_has_its_variant() {
        let contact = serde_json::json!({
            "id": "WAz8eIbvDR60rouK", "username": "k", "phone_number": "1", "created_at": 1
        });
        let conversation = serde_json::json!({
            "id": "xgQQXg3hrtjh7AvZ", "is_pinned": false, "is_muted": false, "created_at": 1
        });
        let message = serde_json::json!({
            "id": "SIuAFUNKdSYHZF2w", "conversation_id": "xgQQXg3hrtjh7AvZ", "message": "hi",
            "created_at": 1, "updated_at": 1
        });
        let group = serde_json::json!({"id": "g", "name": "Family", "created_at": 1});
        let attachment = serde_json::json!({
            "id": "a", "message_id": "m", "filename": "f", "file_url": "u", "file_type": "t",
            "file_size": 1, "created_at": 1
        });
        for t in EventType::ALL {
            let payload = match t.resource() {
                ResourceKind::Contact => contact.clone(),
                ResourceKind::Conversation => conversation.clone(),
                ResourceKind::Message => message.clone(),
                ResourceKind::Group => group.clone(),
                ResourceKind::Attachment => attachment.clone(),
            };
            let event = Event::from_parts(t.as_str(), payload).unwrap();
            assert_eq!(event.known_type(), Some(t));
            assert_eq!(event.event_type(), t.as_str());
        }
        let webhook = serde_json::json!({
            "id": "w", "name": "Ops", "url": "https://example.com/h", "events": ["*"],
            "enabled": false, "disabled_reason": "the endpoint answered 410 Gone",
            "created_at": 1, "updated_at": 2
        });
        let delivery = serde_json::json!({
            "id": "d", "webhook_id": "w", "event_id": "e", "event_type": "message.created",
            "status": "failed", "attempts": 9, "created_at": 1, "updated_at": 2,
            "last_attempt": {"id": "a", "attempt": 9, "started_at": 2, "duration_ms": 10,
                             "status_code": 500}
        });
        for t in OperationalEventType::ALL {
            let payload = match t {
                OperationalEventType::DeliveryExhausted => delivery.clone(),
                _ => webhook.clone(),
            };
            let event = Event::from_parts(t.as_str(), payload.clone()).unwrap();
            assert_eq!(event.any_type(), Some(t.into()));
            assert_eq!(event.known_type(), None);
            assert_eq!(event.event_type(), t.as_str());
            assert_eq!(
                serde_json::to_value(PayloadRef(&event)).unwrap()["id"],
                payload["id"]
            );
        }
    }
}
