use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The kind of resource an event is about: the part of the event type before the dot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    /// A contact.
    Contact,
    /// A conversation with a contact or a group.
    Conversation,
    /// A message in a conversation.
    Message,
    /// A group of contacts.
    Group,
    /// A file attached to a message.
    Attachment,
}

impl ResourceKind {
    /// All resource kinds, in catalogue order.
    pub const ALL: [ResourceKind; 5] = [
        ResourceKind::Contact,
        ResourceKind::Conversation,
        ResourceKind::Message,
        ResourceKind::Group,
        ResourceKind::Attachment,
    ];

    /// The lowercase name used in event types, e.g. `conversation`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Contact => "contact",
            ResourceKind::Conversation => "conversation",
            ResourceKind::Message => "message",
            ResourceKind::Group => "group",
            ResourceKind::Attachment => "attachment",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to the resource: the part of the event type after the dot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// The resource was created.
    Created,
    /// The resource was changed.
    Updated,
    /// The resource was deleted.
    Deleted,
}

impl Action {
    /// All actions, in catalogue order.
    pub const ALL: [Action; 3] = [Action::Created, Action::Updated, Action::Deleted];

    /// The lowercase name used in event types, e.g. `updated`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
        }
    }
}

/// One of the 15 resource event types, such as `message.updated` (the
/// operational ones are [`OperationalEventType`](crate::OperationalEventType)).
///
/// It displays and (de)serializes as its wire name.
///
/// ```
/// use notifly_webhooks::{Action, EventType, ResourceKind};
///
/// let t: EventType = "message.updated".parse().unwrap();
/// assert_eq!(t, EventType::new(ResourceKind::Message, Action::Updated));
/// assert_eq!(t.to_string(), "message.updated");
/// assert_eq!(EventType::ALL.len(), 15);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType {
    resource: ResourceKind,
    action: Action,
}

impl EventType {
    /// Every resource event type, grouped by resource.
    pub const ALL: [EventType; 15] = {
        let mut all = [EventType::new(ResourceKind::Contact, Action::Created); 15];
        let mut i = 0;
        while i < 15 {
            all[i] = EventType::new(ResourceKind::ALL[i / 3], Action::ALL[i % 3]);
            i += 1;
        }
        all
    };

    /// The event type for `action` on a `resource`.
    pub const fn new(resource: ResourceKind, action: Action) -> Self {
        EventType { resource, action }
    }

    /// The resource the payload is, e.g. [`ResourceKind::Conversation`].
    pub const fn resource(self) -> ResourceKind {
        self.resource
    }

    /// What happened to it.
    pub const fn action(self) -> Action {
        self.action
    }

    /// The wire name, e.g. `conversation.updated`.
    pub const fn as_str(self) -> &'static str {
        const NAMES: [&str; 15] = [
            "contact.created",
            "contact.updated",
            "contact.deleted",
            "conversation.created",
            "conversation.updated",
            "conversation.deleted",
            "message.created",
            "message.updated",
            "message.deleted",
            "group.created",
            "group.updated",
            "group.deleted",
            "attachment.created",
            "attachment.updated",
            "attachment.deleted",
        ];
        NAMES[self.resource as usize * 3 + self.action as usize]
    }
}

impl EventType {
    /// What the event means, as the webhooks guide describes it.
    ///
    /// ```
    /// use notifly_webhooks::EventType;
    ///
    /// let t: EventType = "message.created".parse().unwrap();
    /// assert_eq!(t.description(), "A new message was created.");
    /// ```
    pub const fn description(self) -> &'static str {
        const DESCRIPTIONS: [&str; 15] = [
            "A new contact was created.",
            "An existing contact was updated.",
            "A contact was successfully deleted.",
            "A new conversation was created.",
            "An existing conversation was updated.",
            "A conversation was successfully deleted.",
            "A new message was created.",
            "An existing message was updated.",
            "A message was successfully deleted.",
            "A new group was created.",
            "An existing group was updated.",
            "A group was successfully deleted.",
            "A new attachment was created.",
            "An existing attachment was updated.",
            "An attachment was successfully deleted.",
        ];
        DESCRIPTIONS[self.resource as usize * 3 + self.action as usize]
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a string that is not a known event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseEventTypeError(String);

impl ParseEventTypeError {
    pub(crate) fn new(name: &str) -> Self {
        ParseEventTypeError(name.chars().take(64).collect())
    }
}

impl fmt::Display for ParseEventTypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown event type `{}`; expected `<resource>.<action>` with resource one of contact, conversation, message, group, attachment and action one of created, updated, deleted, or an operational event type ({})",
            self.0,
            crate::OperationalEventType::ALL
                .map(crate::OperationalEventType::as_str)
                .join(", ")
        )
    }
}

impl std::error::Error for ParseEventTypeError {}

impl FromStr for EventType {
    type Err = ParseEventTypeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| ParseEventTypeError::new(s))
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_names_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
            assert_eq!(
                t.as_str(),
                format!("{}.{}", t.resource().as_str(), t.action().as_str())
            );
            assert!(seen.insert(t.as_str()));
        }
        assert_eq!(seen.len(), 15);
    }

    #[test]
    fn rejects_near_misses() {
        for bad in [
            "",
            "contact",
            "contact.",
            ".created",
            "Contact.created",
            "contact.created ",
        ] {
            assert!(bad.parse::<EventType>().is_err(), "{bad:?}");
        }
    }
}
