//! The rows the store keeps. Where a row is exactly what the REST API returns
//! (contacts, conversations, attachments) the same type serves as both.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An account: the owner of API keys and every resource.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

/// An API key as stored: never the key, only its hash (the row's key) and
/// its first characters.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub id: String,
    pub account_id: String,
    pub name: String,
    /// The key's first characters (`nfly_sk_` and four more).
    pub prefix: String,
    pub created_at: i64,
    /// Unix seconds, recorded at most once a minute.
    pub last_used_at: Option<i64>,
}

/// What revoking an API key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRevocation {
    /// The key is gone, and the dashboard sessions opened with it.
    Revoked,
    /// The account has no key with that id.
    NotFound,
    /// It is the account's last key: kept.
    Last,
}

/// A contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Contact {
    /// 16-character base62 id.
    #[schema(example = "WAz8eIbvDR60rouK")]
    pub id: String,
    #[schema(example = "KevinMcCallister")]
    pub username: String,
    #[schema(example = "1-800-759-3000")]
    pub phone_number: String,
    pub avatar_url: Option<String>,
    pub display_name: Option<String>,
    /// The one-to-one conversation with this contact, once one exists.
    pub conversation_id: Option<String>,
    /// Unix seconds.
    pub last_active_at: Option<i64>,
    /// Unix seconds.
    pub created_at: i64,
}

/// A conversation, with one contact or with a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Conversation {
    pub id: String,
    pub contact_id: Option<String>,
    pub group_id: Option<String>,
    pub pinned_message_id: Option<String>,
    pub is_pinned: bool,
    pub is_muted: bool,
    pub last_active_at: Option<i64>,
    pub last_opened_at: Option<i64>,
    pub created_at: i64,
    pub archived_at: Option<i64>,
}

/// Filters for listing conversations.
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    pub muted: Option<bool>,
    pub archived: Option<bool>,
    pub pinned: Option<bool>,
    pub group_id: Option<String>,
}

/// A reaction to a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Reaction {
    /// The reacting contact.
    pub contact_id: String,
    /// The reaction itself, usually one emoji.
    #[schema(example = "👍")]
    pub emoji: String,
    pub created_at: i64,
}

/// A message as stored; the API embeds its sender and attachments.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct MessageRecord {
    pub id: String,
    pub conversation_id: String,
    pub contact_id: Option<String>,
    pub message: String,
    pub reactions: sqlx::types::Json<Vec<Reaction>>,
    pub read_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A group as stored; the API embeds its member contacts.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct GroupRecord {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub avatar_url: Option<String>,
    pub conversation_id: Option<String>,
    pub created_at: i64,
    pub archived_at: Option<i64>,
}

/// A file attached to a message. The bytes live in the attachment directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Attachment {
    pub id: String,
    pub message_id: String,
    #[schema(example = "itinerary.pdf")]
    pub filename: String,
    /// Where the bytes are served (requires the API key). Derived from the
    /// server's public URL when read, never stored.
    #[sqlx(skip)]
    pub file_url: String,
    /// The media type given at upload.
    #[schema(example = "application/pdf")]
    pub file_type: String,
    /// Size in bytes.
    pub file_size: i64,
    pub created_at: i64,
}

/// An event in the account's log. `body` is the exact webhook request body,
/// serialized once when the event is written.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EventRecord {
    pub id: String,
    pub event_type: String,
    pub body: String,
    pub created_at: i64,
    /// The payload's `id`: the resource the event is about (what
    /// `per_resource` ordering keys on). Written with the deliveries, not
    /// read back with the event.
    #[sqlx(skip)]
    pub resource_id: Option<String>,
    /// The W3C `traceparent` of the span that wrote it, while traces are
    /// exported: its deliveries' attempts continue that trace. Written, not
    /// read back with the event.
    #[sqlx(skip)]
    pub traceparent: Option<String>,
}

/// The remembered response to a request sent with an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct IdempotentResponse {
    /// SHA-256 (hex) of the method, path and body of the first request.
    pub request_hash: String,
    pub status: i64,
    pub body: String,
    pub created_at: i64,
}

/// A dashboard login session. The browser holds a random token; the store
/// knows only its hash.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DashboardSession {
    /// Hex SHA-256 of the cookie token.
    pub token_hash: String,
    pub account_id: String,
    /// The account's current name, read with the session (not stored in
    /// it; ignored on insert).
    pub account_name: String,
    /// The token every form of the session carries.
    pub csrf: String,
    /// Unix seconds, like the two below.
    pub created_at: i64,
    pub last_seen_at: i64,
    /// The session is dead from this time on.
    pub expires_at: i64,
    /// The API key the session was opened with (`None` for sessions from
    /// before keys were tracked).
    pub key_id: Option<String>,
    /// The one-shot message for the next page: both set or both `None`.
    pub flash_kind: Option<String>,
    pub flash_message: Option<String>,
}

impl std::fmt::Debug for DashboardSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardSession")
            .field("account_id", &self.account_id)
            .field("created_at", &self.created_at)
            .field("last_seen_at", &self.last_seen_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A dashboard session's one-shot message.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionFlash {
    /// How it is shown (`ok` or `error`).
    pub kind: String,
    pub message: String,
}

/// Which slice of a list to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// How many items at most (1..=100).
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

/// A keyset cursor: an id of the list's own kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// Items older than this one.
    After(String),
    /// Items newer than this one.
    Before(String),
}

/// A slice of a list, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

impl<T> Listed<T> {
    /// A page from `items`, read with a limit of `limit + 1` to learn whether
    /// more lie beyond; rows read backwards (`ending_before`) are put back
    /// newest first.
    pub(crate) fn from_probe(mut items: Vec<T>, limit: u32, backwards: bool) -> Self {
        let has_more = items.len() > limit as usize;
        items.truncate(limit as usize);
        if backwards {
            items.reverse();
        }
        Listed { items, has_more }
    }

    /// Maps every item, keeping `has_more`.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Listed<U> {
        Listed {
            items: self.items.into_iter().map(f).collect(),
            has_more: self.has_more,
        }
    }
}

/// A webhook endpoint as stored. Its `Debug` output hides the secrets.
#[derive(Clone, PartialEq, sqlx::FromRow)]
pub struct EndpointRecord {
    pub id: String,
    pub name: String,
    pub url: String,
    pub description: Option<String>,
    /// Subscribed event types; `"*"` (first) for every resource event,
    /// optionally followed by operational types.
    pub events: sqlx::types::Json<Vec<String>>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// The endpoint's signing keys: its `whsec_` secret, and for an
    /// `ed25519` endpoint its `whsk_` private key after a space.
    pub secret: String,
    /// During a rotation's overlap window, the keys being replaced.
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<i64>,
    pub failing_since: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// `hmac-sha256` or `ed25519`.
    pub signature_scheme: String,
    /// The circuit breaker: `closed`, `open` or `half_open`. Written by an
    /// update only to close it (the write-back opens it).
    pub circuit: String,
    /// When the circuit last changed (Unix seconds); `None` if never.
    pub circuit_since: Option<i64>,
    /// Most deliveries started per second, across nodes; `None`: no limit.
    pub rate_limit: Option<i64>,
    /// `none` or `per_resource`.
    pub ordering: String,
    /// Custom headers sent on every delivery, sealed (see
    /// [`crate::secrets::Keyring::seal_headers`]); `None`: none.
    pub headers: Option<String>,
    /// The content filter, as JSON (see [`crate::filter`]); `None`: none.
    pub filter: Option<String>,
}

/// An endpoint's stored signing keys as the database holds them: sealed
/// (see [`crate::secrets::Keyring`]), or plaintext from before sealing. Its
/// `Debug` output shows only the id.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredKeys {
    pub endpoint_id: String,
    pub secret: String,
    pub previous_secret: Option<String>,
    /// The custom headers, sealed the same way.
    pub headers: Option<String>,
}

impl std::fmt::Debug for StoredKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKeys")
            .field("endpoint_id", &self.endpoint_id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for EndpointRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("url", &self.url)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// A delivery: one event to one endpoint.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DeliveryRecord {
    pub id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_ms: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub last_status_code: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One HTTP attempt of a delivery.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AttemptRecord {
    pub id: String,
    pub delivery_id: String,
    pub attempt: i64,
    pub started_at_ms: i64,
    pub duration_ms: i64,
    pub request_headers: sqlx::types::Json<Vec<(String, String)>>,
    pub response_status: Option<i64>,
    pub response_headers: Option<sqlx::types::Json<Vec<(String, String)>>>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub succeeded: bool,
}

/// An endpoint's attempts in one time bucket (see [`super::Conn::attempt_buckets`]).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AttemptBucket {
    /// The bucket's position: 0 for the one starting at `since_ms`.
    pub bucket: i64,
    pub attempts: i64,
    pub succeeded: i64,
    /// Sum of the attempts' durations.
    pub total_duration_ms: i64,
    pub max_duration_ms: i64,
}

/// What the dispatcher asks for when it claims work.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// How long the lease lasts, from the moment the claim holds the
    /// database; past it, any node may claim the work again.
    pub lease_ms: i64,
    /// This claim's lease token: `<node>:<n>`. Only its holder records the
    /// attempt's outcome.
    pub owner: String,
    /// Most deliveries in flight to one endpoint, across all nodes.
    pub per_endpoint: u32,
    /// The same for an endpoint that is currently failing.
    pub per_failing_endpoint: u32,
    /// Most deliveries to claim now.
    pub max: u32,
}

/// A claimed delivery with everything needed to send it.
#[derive(Clone, sqlx::FromRow)]
pub struct Claimed {
    pub delivery_id: String,
    pub account_id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    /// The attempt about to be made, counting from 1.
    pub attempt: i64,
    pub schedule_pos: i64,
    pub url: String,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<i64>,
    /// The endpoint's custom headers, sealed.
    pub headers: Option<String>,
    /// The exact request body.
    pub body: String,
    /// Its endpoint orders deliveries per resource: when this one ends,
    /// the next about the same resource may go.
    pub ordered: bool,
    /// The event's `traceparent` (see [`EventRecord::traceparent`]).
    pub traceparent: Option<String>,
}

impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("delivery_id", &self.delivery_id)
            .field("endpoint_id", &self.endpoint_id)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// Where a delivery goes after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum NextStep {
    Succeeded,
    /// Try again at `at_ms`, at this position of the schedule.
    Retry {
        at_ms: i64,
        schedule_pos: i64,
    },
    /// No more tries.
    Failed,
}

impl NextStep {
    /// What the write-back sets on the delivery: its status, when it is due
    /// next and its position in the retry schedule (`None`: unchanged).
    pub(crate) fn columns(&self) -> (&'static str, Option<i64>, Option<i64>) {
        match self {
            NextStep::Succeeded => ("succeeded", None, None),
            NextStep::Retry {
                at_ms,
                schedule_pos,
            } => ("pending", Some(*at_ms), Some(*schedule_pos)),
            NextStep::Failed => ("failed", None, None),
        }
    }
}

/// The outcome of one attempt, to be written back.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub attempt: AttemptRecord,
    pub endpoint_id: String,
    pub owner: String,
    pub next: NextStep,
    /// Disable the endpoint at once with this reason (e.g. it answered 410).
    pub disable: Option<String>,
    /// No request was sent (this node could not open the endpoint's signing
    /// keys): the result says nothing of the endpoint's health.
    pub unsent: bool,
    /// The endpoint asked to be slowed down (429, 502 or 504): nothing more
    /// is sent to it before this time (Unix ms).
    pub throttle_until_ms: Option<i64>,
    /// Its endpoint orders deliveries per resource (see [`Claimed::ordered`]).
    pub ordered: bool,
}

/// An operational event owed (migration `notices`): what a write-back did
/// to an endpoint or a delivery that its account hears of.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NoticeRecord {
    pub seq: i64,
    pub account_id: String,
    pub endpoint_id: String,
    /// An operational event type, e.g. `webhook.disabled`.
    pub event_type: String,
    /// The exhausted delivery, for `delivery.exhausted`.
    pub delivery_id: Option<String>,
    /// For `webhook.*`: what the change left the endpoint at (JSON with
    /// `enabled`, `disabled_reason`, `circuit`, `circuit_since`).
    pub state: Option<String>,
    pub created_at: i64,
}

/// A replay (migration `replays`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReplayRecord {
    pub id: String,
    pub account_id: String,
    pub endpoint_id: String,
    /// The window, Unix seconds, both ends included.
    pub since: i64,
    pub until: i64,
    /// `queued`, `running`, `completed`, `cancelled` or `failed`.
    pub status: String,
    /// Events of the window the endpoint selects, counted when it was made.
    pub total: i64,
    /// Deliveries made so far.
    pub sent: i64,
    /// The last event of the log looked at (`None`: the start of the log).
    pub cursor: Option<String>,
    /// When the cursor's event was written.
    pub cursor_at: Option<i64>,
    /// The newest event of the log when the replay was made: where it ends.
    pub last_event: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What the write-back does to an endpoint that keeps failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// An endpoint failing without a success this long is disabled.
    pub disable_after_secs: i64,
    /// This many failed attempts in a row open its circuit.
    pub circuit_failures: u32,
}

/// Queue figures for metrics.
#[derive(Debug, Clone, Default)]
pub struct QueueStats {
    pub pending: i64,
    pub due: i64,
    pub in_flight: i64,
    pub disabled_endpoints: i64,
    /// Due deliveries an open circuit holds back: the attempts it saves.
    pub held_by_circuits: i64,
    /// The endpoints whose circuit is not closed, with its state.
    pub circuits: Vec<(String, String)>,
    /// When the longest-waiting due delivery of an enabled endpoint became
    /// due (Unix ms), leased ones aside: how far the queue is behind is now
    /// minus this. `None` when nothing is due.
    pub oldest_due_ms: Option<i64>,
}
