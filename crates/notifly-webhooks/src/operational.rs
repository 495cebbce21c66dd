//! Operational events: about the account's own webhooks, not its resources.
//!
//! They are a family of their own: a webhook receives one only if it
//! subscribes to its type by name (`"*"` means every resource event and does
//! not include them), and never one about itself.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{EventType, ParseEventTypeError};

/// One of the operational event types, such as `webhook.disabled`.
///
/// It displays and (de)serializes as its wire name.
///
/// ```
/// use notifly_webhooks::OperationalEventType;
///
/// let t: OperationalEventType = "delivery.exhausted".parse().unwrap();
/// assert_eq!(t, OperationalEventType::DeliveryExhausted);
/// assert_eq!(t.to_string(), "delivery.exhausted");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum OperationalEventType {
    /// `webhook.disabled`: Notifly disabled a webhook (it answered `410`,
    /// or kept failing); the payload is the webhook, with `disabled_reason`.
    WebhookDisabled,
    /// `webhook.circuit_opened`: a run of failed attempts opened a webhook's
    /// circuit; the payload is the webhook.
    WebhookCircuitOpened,
    /// `webhook.circuit_closed`: a webhook's circuit closed again after a
    /// success; the payload is the webhook.
    WebhookCircuitClosed,
    /// `delivery.exhausted`: a delivery failed its last retry; the payload
    /// is the delivery, with its last attempt.
    DeliveryExhausted,
}

impl OperationalEventType {
    /// Every operational event type, in catalogue order.
    pub const ALL: [OperationalEventType; 4] = [
        OperationalEventType::WebhookDisabled,
        OperationalEventType::WebhookCircuitOpened,
        OperationalEventType::WebhookCircuitClosed,
        OperationalEventType::DeliveryExhausted,
    ];

    /// The wire name, e.g. `webhook.disabled`.
    pub const fn as_str(self) -> &'static str {
        match self {
            OperationalEventType::WebhookDisabled => "webhook.disabled",
            OperationalEventType::WebhookCircuitOpened => "webhook.circuit_opened",
            OperationalEventType::WebhookCircuitClosed => "webhook.circuit_closed",
            OperationalEventType::DeliveryExhausted => "delivery.exhausted",
        }
    }

    /// What the event means.
    pub const fn description(self) -> &'static str {
        match self {
            OperationalEventType::WebhookDisabled => {
                "A webhook was disabled: it answered 410 Gone, or kept failing for the disabling period."
            }
            OperationalEventType::WebhookCircuitOpened => {
                "A webhook's circuit opened after failed attempts in a row: only probes are sent to it until one succeeds."
            }
            OperationalEventType::WebhookCircuitClosed => {
                "A webhook's circuit closed again: a probe succeeded and its deliveries flow."
            }
            OperationalEventType::DeliveryExhausted => {
                "A delivery failed its last retry and will not be attempted again unless retried by hand."
            }
        }
    }
}

impl fmt::Display for OperationalEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Any event type a webhook can subscribe to: one of the 15 resource event
/// types or an operational one.
///
/// ```
/// use notifly_webhooks::{AnyEventType, EventType, OperationalEventType};
///
/// let t: AnyEventType = "webhook.circuit_opened".parse().unwrap();
/// assert_eq!(t, AnyEventType::Operational(OperationalEventType::WebhookCircuitOpened));
/// let m: AnyEventType = "message.created".parse().unwrap();
/// assert!(matches!(m, AnyEventType::Resource(_)));
/// assert_eq!(AnyEventType::ALL.len(), EventType::ALL.len() + OperationalEventType::ALL.len());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnyEventType {
    /// A resource was created, updated or deleted.
    Resource(EventType),
    /// Something happened to one of the account's webhooks or deliveries.
    Operational(OperationalEventType),
}

impl AnyEventType {
    /// Every event type: the resource events, then the operational ones.
    pub const ALL: [AnyEventType; 19] = {
        let mut all = [AnyEventType::Operational(OperationalEventType::WebhookDisabled); 19];
        let mut i = 0;
        while i < EventType::ALL.len() {
            all[i] = AnyEventType::Resource(EventType::ALL[i]);
            i += 1;
        }
        let mut j = 0;
        while j < OperationalEventType::ALL.len() {
            all[i + j] = AnyEventType::Operational(OperationalEventType::ALL[j]);
            j += 1;
        }
        all
    };

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            AnyEventType::Resource(t) => t.as_str(),
            AnyEventType::Operational(t) => t.as_str(),
        }
    }

    /// What the event means.
    pub const fn description(self) -> &'static str {
        match self {
            AnyEventType::Resource(t) => t.description(),
            AnyEventType::Operational(t) => t.description(),
        }
    }

    /// Whether it is an operational event (not selected by `"*"`).
    pub const fn is_operational(self) -> bool {
        matches!(self, AnyEventType::Operational(_))
    }
}

impl From<EventType> for AnyEventType {
    fn from(t: EventType) -> Self {
        AnyEventType::Resource(t)
    }
}

impl From<OperationalEventType> for AnyEventType {
    fn from(t: OperationalEventType) -> Self {
        AnyEventType::Operational(t)
    }
}

impl fmt::Display for AnyEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OperationalEventType {
    type Err = ParseEventTypeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OperationalEventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| ParseEventTypeError::new(s))
    }
}

impl FromStr for AnyEventType {
    type Err = ParseEventTypeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AnyEventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| ParseEventTypeError::new(s))
    }
}

macro_rules! wire_name {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

wire_name!(OperationalEventType, AnyEventType);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for t in AnyEventType::ALL {
            assert_eq!(t.as_str().parse::<AnyEventType>(), Ok(t));
            assert!(seen.insert(t.as_str()), "{t}");
        }
        for t in OperationalEventType::ALL {
            assert_eq!(t.as_str().parse::<OperationalEventType>(), Ok(t));
            assert!(t.as_str().parse::<EventType>().is_err());
        }
        assert!("webhook.created".parse::<AnyEventType>().is_err());
        assert!("*".parse::<AnyEventType>().is_err());
    }
}
