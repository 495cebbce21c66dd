//! Webhook endpoints: where events go, which ones, and the secret they are signed with.

use std::collections::BTreeMap;

use notifly_webhooks::{AnyEventType, OperationalEventType};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::contacts::not_null;
use super::custom_headers::{self, CustomHeaders};
use super::validate::{self, double_option};
use super::{
    Begun, DomainError, DomainResult, Idempotency, Notifly, found, list_error, replay, samples,
};
use crate::filter::{Filter, WebhookFilter};
use crate::ids;
use crate::secrets::KeySet;
use crate::store::{EndpointRecord, EventRecord, Listed, Page, StoreError};

const KIND: &str = "webhook";

/// Default overlap window of a secret rotation: the old secret keeps signing
/// for this long.
pub const DEFAULT_OVERLAP_SECS: i64 = 24 * 60 * 60;
/// Longest overlap window a rotation may ask for.
pub const MAX_OVERLAP_SECS: i64 = 7 * 24 * 60 * 60;

/// A webhook endpoint as the API returns it. Its `Debug` output hides the secret.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    pub id: String,
    #[schema(example = "Order sync")]
    pub name: String,
    #[schema(example = "https://example.com/webhooks/notifly")]
    pub url: String,
    pub description: Option<String>,
    /// Subscribed event types; `"*"` (first) stands for every resource
    /// event, and operational event types may follow it.
    #[schema(example = json!(["message.created", "message.updated"]))]
    pub events: Vec<String>,
    pub enabled: bool,
    /// Why the endpoint is disabled (by a person, by a 410 answer, or after
    /// failing continuously).
    pub disabled_reason: Option<String>,
    /// Only in the response to `POST /v1/webhooks`; later through
    /// `GET /v1/webhooks/{id}/secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// How `webhook-signature` is signed: `hmac-sha256` (`v1` entries, with
    /// the secret) or `ed25519` (`v1a` entries, with the endpoint's own
    /// private key; verify with its `public_key`).
    pub signature_scheme: SignatureScheme,
    /// Only in the response to `POST /v1/webhooks` of an `ed25519`
    /// endpoint; later through `GET /v1/webhooks/{id}/secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The circuit breaker: `closed` (deliveries flow), `open` (after a run
    /// of failed attempts nothing is sent but a probe, at growing
    /// intervals; deliveries wait, keeping their retries) or `half_open`
    /// (a probe is in flight).
    pub circuit: Circuit,
    /// When the circuit last changed (Unix seconds); `null` if it never
    /// opened.
    pub circuit_since: Option<i64>,
    /// Most deliveries started per second to this endpoint, across every
    /// node; `null` for no limit. Deliveries over it wait, keeping their
    /// retries.
    #[schema(minimum = 1, maximum = 10000, example = 50)]
    pub rate_limit: Option<i64>,
    /// `none`, or `per_resource`: events about one resource (the payload's
    /// `id`) arrive in the order they were written, each once the one
    /// before it succeeded or finally failed.
    pub ordering: Ordering,
    /// Custom headers sent on every delivery, name to value, values masked
    /// (a long value shows its last four characters). Read them with
    /// `GET /v1/webhooks/{id}/headers`.
    #[schema(example = json!({"Authorization": "••••••••9a7d", "X-Tenant": "••••••••"}))]
    // Responses remembered for idempotent replay before headers existed lack it.
    #[serde(default)]
    #[schema(required = true)]
    pub headers: BTreeMap<String, String>,
    /// The content filter events must pass, besides their type; `null`
    /// for none.
    #[schema(value_type = Option<WebhookFilter>)]
    #[serde(default)]
    pub filter: Option<serde_json::Value>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A webhook's custom headers, values in clear.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookCustomHeaders {
    #[schema(example = json!({"Authorization": "Bearer 8f2c1e0b9a7d", "X-Tenant": "t-1"}))]
    pub headers: BTreeMap<String, String>,
}

impl std::fmt::Debug for WebhookCustomHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.headers.keys()).finish()
    }
}

/// An endpoint's circuit breaker state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

impl Circuit {
    /// The name the API and the database use.
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half_open",
        }
    }

    fn of(stored: &str) -> Self {
        match stored {
            "open" => Circuit::Open,
            "half_open" => Circuit::HalfOpen,
            _ => Circuit::Closed,
        }
    }
}

/// Most deliveries per second a rate limit may allow.
pub const MAX_RATE_LIMIT: i64 = 10_000;

/// In what order an endpoint receives events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// As fast as possible, several at once: events may arrive out of order.
    #[default]
    None,
    /// Events about one resource arrive in the order they were written:
    /// the next is sent once the one before it succeeded or finally failed.
    /// Events about other resources go on in parallel.
    PerResource,
}

impl Ordering {
    /// The name the API and the database use.
    pub fn as_str(self) -> &'static str {
        match self {
            Ordering::None => "none",
            Ordering::PerResource => "per_resource",
        }
    }

    /// Parses an API value, naming the field when it is neither.
    pub fn parse(value: &str) -> DomainResult<Self> {
        match value {
            "none" => Ok(Ordering::None),
            "per_resource" => Ok(Ordering::PerResource),
            other => Err(DomainError::Invalid(format!(
                "ordering must be `none` or `per_resource`, not `{}`",
                ids::printable(other)
            ))),
        }
    }

    fn of(stored: &str) -> Self {
        Self::parse(stored).unwrap_or_default()
    }
}

/// Checks a rate limit: a whole number of deliveries per second, 1 to
/// [`MAX_RATE_LIMIT`].
pub fn rate_limit(value: i64) -> DomainResult<i64> {
    if RATE_LIMIT.check("rate_limit", value).is_ok() {
        Ok(value)
    } else {
        Err(DomainError::Invalid(format!(
            "rate_limit must be a whole number of deliveries per second from 1 to {MAX_RATE_LIMIT}, or null for no limit; got {value}"
        )))
    }
}

/// How an endpoint signs `webhook-signature` (`x-notifly-signature` is
/// always HMAC-SHA256 with the `whsec_` secret, as the guide says).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum SignatureScheme {
    /// `v1,<base64>`: HMAC-SHA256 with the `whsec_` secret.
    #[default]
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    /// `v1a,<base64>`: Ed25519 with the endpoint's private key.
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl SignatureScheme {
    /// The name the API and the database use.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureScheme::HmacSha256 => "hmac-sha256",
            SignatureScheme::Ed25519 => "ed25519",
        }
    }

    /// Parses an API value, naming the field when it is none of the schemes.
    pub fn parse(value: &str) -> DomainResult<Self> {
        match value {
            "hmac-sha256" => Ok(SignatureScheme::HmacSha256),
            "ed25519" => Ok(SignatureScheme::Ed25519),
            other => Err(DomainError::Invalid(format!(
                "signature_scheme must be `hmac-sha256` or `ed25519`, not `{}`",
                ids::printable(other)
            ))),
        }
    }

    /// The scheme a stored endpoint names (the default for anything else,
    /// which only a hand-edited database could hold).
    fn of(record: &EndpointRecord) -> Self {
        Self::parse(&record.signature_scheme).unwrap_or_default()
    }
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("url", &self.url)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// A stored endpoint as the API shows it, with its custom headers
    /// (opened) masked.
    fn of(r: EndpointRecord, headers: &[(String, String)]) -> Self {
        let signature_scheme = SignatureScheme::of(&r);
        Webhook {
            headers: custom_headers::masked(headers),
            // Checked when saved; a hand-edited one that is not JSON shows as none.
            filter: r
                .filter
                .as_deref()
                .and_then(|f| serde_json::from_str(f).ok()),
            id: r.id,
            name: r.name,
            url: r.url,
            description: r.description,
            events: r.events.0,
            enabled: r.enabled,
            signature_scheme,
            circuit: Circuit::of(&r.circuit),
            circuit_since: r.circuit_since,
            rate_limit: r.rate_limit,
            ordering: Ordering::of(&r.ordering),
            disabled_reason: r.disabled_reason,
            secret: None,
            public_key: None,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// An endpoint's signing secrets.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookSecret {
    /// The current secret (`whsec_…`). Standard Webhooks signatures use it
    /// at once; `x-notifly-signature` uses it once the overlap window ends.
    pub secret: String,
    /// During a rotation's overlap window: the secret being replaced, which
    /// still signs `x-notifly-signature` and a second `webhook-signature` entry.
    pub previous_secret: Option<String>,
    /// When the previous secret (and public key) stops being used (Unix seconds).
    pub previous_secret_expires_at: Option<i64>,
    /// For an `ed25519` endpoint: the public key (`whpk_` + base64 of the
    /// raw 32-byte key) that verifies its `v1a` signatures. `null` for
    /// `hmac-sha256`.
    #[schema(example = "whpk_2m+6e8j4FZYGM3sW17Ucv/IDiELCfhkTyPxA/ILm8zc=")]
    pub public_key: Option<String>,
    /// During a rotation's overlap window: the public key being replaced,
    /// whose private key still signs a second `v1a` entry.
    pub previous_public_key: Option<String>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// Body of `POST /v1/webhooks`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    #[schema(schema_with = validate::schema::name)]
    pub name: String,
    /// Where deliveries are POSTed.
    #[schema(schema_with = validate::schema::url)]
    pub url: String,
    /// Event types to receive: names, or `["*"]` for every resource event
    /// (operational event types may follow `"*"`; it does not include
    /// them).
    #[schema(schema_with = events_schema)]
    pub events: Vec<String>,
    #[schema(schema_with = validate::schema::description)]
    pub description: Option<String>,
    /// `hmac-sha256` (the default) or `ed25519`.
    #[schema(value_type = Option<SignatureScheme>)]
    pub signature_scheme: Option<String>,
    /// Most deliveries started per second; none by default.
    #[schema(schema_with = rate_limit_schema)]
    #[serde(default, deserialize_with = "validate::whole_option")]
    pub rate_limit: Option<i64>,
    /// `none` (the default) or `per_resource`.
    #[schema(value_type = Option<Ordering>)]
    pub ordering: Option<String>,
    #[schema(schema_with = custom_headers::create_schema)]
    pub headers: Option<CustomHeaders>,
    /// Only events that pass it are sent (besides their type); none by
    /// default.
    #[schema(value_type = Option<WebhookFilter>)]
    pub filter: Option<serde_json::Value>,
}

/// Body of `PUT /v1/webhooks/{id}`: only the fields given change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = validate::schema::name)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = validate::schema::url)]
    pub url: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = events_schema)]
    pub events: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = validate::schema::description)]
    pub description: Option<Option<String>>,
    /// `false` stops deliveries (they wait); `true` resumes them.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = validate::schema::boolean)]
    pub enabled: Option<Option<bool>>,
    /// Changing it to `ed25519` gives the endpoint a new key pair (fetch its
    /// public key with `GET /v1/webhooks/{id}/secret`); changing it back
    /// drops the key pair. The `whsec_` secret stays either way.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = SignatureScheme, required = false)]
    pub signature_scheme: Option<Option<String>>,
    /// Most deliveries started per second, or `null` to remove the limit.
    #[serde(default, deserialize_with = "validate::whole_double_option")]
    #[schema(schema_with = rate_limit_schema)]
    pub rate_limit: Option<Option<i64>>,
    /// `none` or `per_resource`. Deliveries already sent are not affected.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Ordering, required = false)]
    pub ordering: Option<Option<String>>,
    /// Replaces every custom header (`{}` or `null` removes them all). A
    /// value equal to the masked one this webhook shows keeps its value.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = custom_headers::update_schema)]
    pub headers: Option<Option<CustomHeaders>>,
    /// Replaces the content filter; `null` removes it. Events already
    /// fanned out are not affected.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<WebhookFilter>)]
    pub filter: Option<Option<serde_json::Value>>,
}

/// Body of `POST /v1/webhooks/{id}/secret/rotate` (optional).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the old secret keeps signing, in seconds (default 86400).
    #[schema(schema_with = overlap_schema)]
    #[serde(default, deserialize_with = "validate::whole_option")]
    pub overlap_seconds: Option<i64>,
}

/// Body of `POST /v1/webhooks/{id}/test`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestEvent {
    /// The event type to send a sample of.
    #[serde(rename = "type")]
    #[schema(schema_with = validate::schema::event_type)]
    pub event_type: String,
}

/// A rate limit, in deliveries started per second.
pub static RATE_LIMIT: validate::Int = validate::Int {
    min: 1,
    max: Some(MAX_RATE_LIMIT),
};

/// A rotation's overlap window, in seconds.
static OVERLAP: validate::Int = validate::Int {
    min: 0,
    max: Some(MAX_OVERLAP_SECS),
};

fn rate_limit_schema() -> utoipa::openapi::Object {
    RATE_LIMIT.nullable_schema()
}

fn overlap_schema() -> utoipa::openapi::Object {
    OVERLAP.nullable_schema()
}

/// What [`events`] accepts: event types (repeats are dropped), or `"*"`
/// followed by operational event types only.
fn events_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
    let one_of = OneOfBuilder::new()
        .item(
            ArrayBuilder::new()
                .title(Some("Event types"))
                .items(validate::schema::event_type())
                .min_items(Some(1)),
        )
        .item(
            ArrayBuilder::new()
                .title(Some("Every resource event type, and operational ones"))
                .prefix_items([ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["*"]))])
                .items(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(
                            std::iter::once("*")
                                .chain(OperationalEventType::ALL.map(OperationalEventType::as_str)),
                        )),
                )
                .min_items(Some(1)),
        )
        .examples([serde_json::json!(["message.created", "message.updated"])])
        .build();
    Schema::OneOf(one_of)
}

fn name(value: &str) -> DomainResult<String> {
    validate::NAME.check("name", value)
}

/// Event types: at least one, each one of the 15 resource event types or
/// an operational one; or `"*"` (every resource event), first, followed
/// by operational event types only. Duplicates are dropped.
fn events(list: &[String]) -> DomainResult<Vec<String>> {
    if list.is_empty() {
        return Err(DomainError::Invalid(
            "events must list at least one event type, or [\"*\"] for every resource event".into(),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    if list.iter().any(|e| e == "*") {
        if list[0] != "*" {
            return Err(DomainError::Invalid(
                "events: put \"*\" first, followed by operational event types if you want any"
                    .into(),
            ));
        }
        out.push("*".to_owned());
        for e in list.iter().filter(|e| *e != "*") {
            match e.parse::<AnyEventType>() {
                Ok(AnyEventType::Operational(t)) => {
                    if !out.iter().any(|o| o == t.as_str()) {
                        out.push(t.as_str().to_owned());
                    }
                }
                _ => {
                    return Err(DomainError::Invalid(format!(
                        "events: \"*\" already means every resource event type; only operational event types ({}) may follow it, not `{}`",
                        OperationalEventType::ALL
                            .map(OperationalEventType::as_str)
                            .join(", "),
                        ids::printable(e)
                    )));
                }
            }
        }
        return Ok(out);
    }
    for e in list {
        let t: AnyEventType = e.parse().map_err(|_| {
            DomainError::Invalid(format!(
                "events: unknown event type `{}`; expected one of {}",
                ids::printable(e),
                AnyEventType::ALL.map(AnyEventType::as_str).join(", ")
            ))
        })?;
        if !out.iter().any(|o| o == t.as_str()) {
            out.push(t.as_str().to_owned());
        }
    }
    Ok(out)
}

/// A content filter to store: checked, as compact JSON; `None` for none
/// (an empty object passes everything, so it is none too).
fn content_filter(value: Option<serde_json::Value>) -> DomainResult<Option<String>> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    Filter::parse(&value).map_err(|m| DomainError::Invalid(format!("filter: {m}")))?;
    if value.as_object().is_some_and(serde_json::Map::is_empty) {
        return Ok(None);
    }
    Ok(Some(value.to_string()))
}

fn conflict(name: &str) -> impl FnOnce(StoreError) -> DomainError + '_ {
    move |e| match e {
        StoreError::Conflict(_) => DomainError::Conflict(format!(
            "a webhook named `{}` already exists",
            ids::printable(name)
        )),
        e => e.into(),
    }
}

impl Notifly {
    /// Checks a webhook URL: absolute `http(s)`, no credentials, at most 2048
    /// characters, and (unless private networks are allowed) a public host.
    pub(crate) async fn webhook_url(&self, value: &str) -> DomainResult<String> {
        // The specific refusals first, for their messages; then the rule
        // the document states, which also bounds what the parser took.
        let url = reqwest::Url::parse(value).map_err(|e| {
            DomainError::Invalid(format!(
                "url is not a valid URL ({e}); use an absolute https:// URL"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(DomainError::Invalid(format!(
                "url must use http or https, not `{}`",
                ids::printable(url.scheme())
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(DomainError::Invalid(
                "url must not contain credentials; authenticate deliveries with the signature instead".into(),
            ));
        }
        let Some(host) = url.host_str() else {
            return Err(DomainError::Invalid("url must name a host".into()));
        };
        validate::URL.check("url", value)?;
        if !self.allow_private_urls {
            let port = url.port_or_known_default().unwrap_or(443);
            if let Some(reason) = crate::ssrf::check_host(host, port).await {
                return Err(DomainError::Invalid(format!(
                    "url is not allowed: {reason} (for local development, start the server with `notifly serve --dev`; operators can allow private networks with --allow-private-urls or NOTIFLY_ALLOW_PRIVATE_URLS=true)"
                )));
            }
        }
        Ok(url.to_string())
    }

    /// Every problem with a webhook's fields, each with the field it is
    /// about (`name`, `url`, `events`, `description`), checked by the same
    /// rules as [`Notifly::create_webhook`] and [`Notifly::update_webhook`],
    /// which stop at the first: for a form that shows them all at once.
    pub async fn webhook_field_errors(
        &self,
        name_value: &str,
        url: &str,
        event_list: &[String],
        description: Option<&str>,
    ) -> Vec<(&'static str, String)> {
        let mut errors = Vec::new();
        if let Err(e) = name(name_value) {
            errors.push(("name", e.to_string()));
        }
        if let Err(e) = self.webhook_url(url).await {
            errors.push(("url", e.to_string()));
        }
        if let Err(e) = events(event_list) {
            errors.push(("events", e.to_string()));
        }
        if let Err(e) = validate::description(description) {
            errors.push(("description", e.to_string()));
        }
        errors
    }

    /// Registers an endpoint. The response carries its secret.
    pub async fn create_webhook(
        &self,
        account: &str,
        input: CreateWebhook,
        idempotency: Option<&Idempotency>,
    ) -> DomainResult<Webhook> {
        let now = ids::now();
        let scheme = match input.signature_scheme.as_deref() {
            Some(s) => SignatureScheme::parse(s)?,
            None => SignatureScheme::default(),
        };
        let ordering = match input.ordering.as_deref() {
            Some(o) => Ordering::parse(o)?,
            None => Ordering::default(),
        };
        let rate = input.rate_limit.map(rate_limit).transpose()?;
        let headers = match input.headers {
            Some(given) => custom_headers::check(given, &[])?,
            None => Vec::new(),
        };
        let filter = content_filter(input.filter)?;
        let id = ids::new_id();
        let keys = KeySet::generate(scheme == SignatureScheme::Ed25519);
        let record = EndpointRecord {
            headers: self.keyring.seal_headers(&id, &headers),
            filter,
            secret: self.seal_keys(&id, &keys)?,
            id,
            name: name(&input.name)?,
            url: self.webhook_url(&input.url).await?,
            description: validate::description(input.description.as_deref())?,
            events: sqlx::types::Json(events(&input.events)?),
            enabled: true,
            disabled_reason: None,
            previous_secret: None,
            previous_secret_expires_at: None,
            failing_since: None,
            created_at: now,
            updated_at: now,
            signature_scheme: scheme.as_str().to_owned(),
            circuit: Circuit::Closed.as_str().to_owned(),
            circuit_since: None,
            rate_limit: rate,
            ordering: ordering.as_str().to_owned(),
        };
        let mut tx = match self.begin(account, idempotency).await? {
            Begun::Replay(body) => return replay(&body),
            Begun::Fresh(tx) => tx,
        };
        tx.insert_endpoint(account, &record)
            .await
            .map_err(conflict(&record.name))?;
        let mut webhook = Webhook::of(record, &headers);
        // The remembered response omits the secret, which is not kept
        // anywhere but the endpoint: a replay answers without it (fetch it
        // with GET /v1/webhooks/{id}/secret).
        self.finish(tx, account, idempotency, &webhook).await?;
        webhook.public_key = keys.public_key();
        webhook.secret = Some(keys.secret);
        Ok(webhook)
    }

    /// One endpoint (without its secret).
    pub async fn webhook(&self, account: &str, id: &str) -> DomainResult<Webhook> {
        let mut conn = self.store.read().await?;
        Ok(self.view(found(conn.endpoint(account, id).await, KIND, id)?))
    }

    /// An endpoint's custom headers, values in clear.
    pub async fn webhook_headers(
        &self,
        account: &str,
        id: &str,
    ) -> DomainResult<WebhookCustomHeaders> {
        let mut conn = self.store.read().await?;
        let record = found(conn.endpoint(account, id).await, KIND, id)?;
        Ok(WebhookCustomHeaders {
            headers: self.open_headers(&record)?.into_iter().collect(),
        })
    }

    /// A page of endpoints, newest first.
    pub async fn webhooks(&self, account: &str, page: &Page) -> DomainResult<Listed<Webhook>> {
        let mut conn = self.store.read().await?;
        let listed = conn
            .list_endpoints(account, page)
            .await
            .map_err(list_error(KIND, page))?;
        Ok(listed.map(|r| self.view(r)))
    }

    /// Changes an endpoint. Enabling one clears its failure history so that it
    /// gets a fresh start; its waiting deliveries resume.
    pub async fn update_webhook(
        &self,
        account: &str,
        id: &str,
        input: UpdateWebhook,
    ) -> DomainResult<Webhook> {
        let url = match not_null("url", input.url)? {
            Some(u) => Some(self.webhook_url(&u).await?),
            None => None,
        };
        let rate = match input.rate_limit {
            Some(Some(r)) => Some(Some(rate_limit(r)?)),
            other => other,
        };
        let ordering = match not_null("ordering", input.ordering)? {
            Some(o) => Some(Ordering::parse(&o)?),
            None => None,
        };
        let mut tx = self.write_tx().await?;
        let before = found(tx.endpoint(account, id).await, KIND, id)?;
        let mut after = before.clone();
        if let Some(n) = not_null("name", input.name)? {
            after.name = name(&n)?;
        }
        if let Some(u) = url
            && u != before.url
        {
            // A new URL gets a fresh start: its circuit closes at once.
            after.url = u;
            after.circuit = Circuit::Closed.as_str().to_owned();
        }
        if let Some(e) = not_null("events", input.events)? {
            after.events = sqlx::types::Json(events(&e)?);
        }
        if let Some(d) = input.description {
            after.description = validate::description(d.as_deref())?;
        }
        match not_null("enabled", input.enabled)? {
            Some(true) if !before.enabled => {
                after.enabled = true;
                after.disabled_reason = None;
                after.failing_since = None;
                after.circuit = Circuit::Closed.as_str().to_owned();
            }
            Some(false) if before.enabled => {
                after.enabled = false;
                after.disabled_reason = Some("disabled through the API".into());
            }
            _ => {}
        }
        if let Some(s) = not_null("signature_scheme", input.signature_scheme)? {
            let scheme = SignatureScheme::parse(&s)?;
            if scheme != SignatureScheme::of(&before) {
                let keys = self.open_keys(&before.id, &before.secret)?;
                let keys = keys.with_scheme(scheme == SignatureScheme::Ed25519);
                after.secret = self.seal_keys(&before.id, &keys)?;
                after.signature_scheme = scheme.as_str().to_owned();
            }
        }
        if let Some(r) = rate {
            after.rate_limit = r;
        }
        if let Some(o) = ordering {
            after.ordering = o.as_str().to_owned();
        }
        if let Some(f) = input.filter {
            after.filter = content_filter(f)?;
        }
        // The stored values are opened only to keep masked ones: removing
        // them all works even if they cannot be opened.
        match input.headers {
            Some(Some(given)) if !given.0.is_empty() => {
                let current = if given.0.values().any(|v| custom_headers::is_masked(v)) {
                    self.open_headers(&before)?
                } else {
                    Vec::new()
                };
                let headers = custom_headers::check(given, &current)?;
                if headers != current {
                    after.headers = self.keyring.seal_headers(id, &headers);
                }
            }
            Some(_) => after.headers = None,
            None => {}
        }
        if after == before {
            // Nothing changed; still answer only from durable state.
            self.commit(tx).await?;
            return Ok(self.view(before));
        }
        after.updated_at = ids::now();
        if after.circuit != before.circuit {
            after.circuit_since = Some(after.updated_at);
        }
        tx.update_endpoint(account, &after)
            .await
            .map_err(conflict(&after.name))?;
        self.commit(tx).await?;
        Ok(self.view(after))
    }

    /// Deletes an endpoint; its pending deliveries are cancelled.
    pub async fn delete_webhook(&self, account: &str, id: &str) -> DomainResult<Webhook> {
        let mut tx = self.write_tx().await?;
        let record = found(tx.endpoint(account, id).await, KIND, id)?;
        tx.delete_endpoint(account, id).await?;
        self.commit(tx).await?;
        Ok(self.view(record))
    }

    /// An endpoint's secrets.
    pub async fn webhook_secret(&self, account: &str, id: &str) -> DomainResult<WebhookSecret> {
        let mut conn = self.store.read().await?;
        let record = found(conn.endpoint(account, id).await, KIND, id)?;
        self.secrets_of(&record, ids::now())
    }

    /// Replaces an endpoint's secret. The old one keeps signing for the overlap
    /// window (see [`WebhookSecret`]); a rotation during a window ends the
    /// previous window at once.
    pub async fn rotate_webhook_secret(
        &self,
        account: &str,
        id: &str,
        input: RotateSecret,
    ) -> DomainResult<WebhookSecret> {
        let overlap = OVERLAP.check(
            "overlap_seconds",
            input.overlap_seconds.unwrap_or(DEFAULT_OVERLAP_SECS),
        )?;
        let mut tx = self.write_tx().await?;
        let mut record = found(tx.endpoint(account, id).await, KIND, id)?;
        let now = ids::now();
        let keys = KeySet::generate(SignatureScheme::of(&record) == SignatureScheme::Ed25519);
        let old = std::mem::replace(&mut record.secret, self.seal_keys(id, &keys)?);
        (record.previous_secret, record.previous_secret_expires_at) = if overlap > 0 {
            (Some(old), Some(now + overlap))
        } else {
            (None, None)
        };
        record.updated_at = now;
        tx.update_endpoint(account, &record).await?;
        self.commit(tx).await?;
        self.secrets_of(&record, now)
    }

    /// Sends a sample event of `input.event_type` to this endpoint only.
    /// Returns the id of the delivery, whose attempts show what happened.
    pub async fn send_test_event(
        &self,
        account: &str,
        id: &str,
        input: TestEvent,
    ) -> DomainResult<String> {
        let event_type: AnyEventType = input.event_type.parse().map_err(|_| {
            DomainError::Invalid(format!(
                "type: unknown event type `{}`; expected one of {}",
                ids::printable(&input.event_type),
                AnyEventType::ALL.map(AnyEventType::as_str).join(", ")
            ))
        })?;
        let mut tx = self.write_tx().await?;
        let record = found(tx.endpoint(account, id).await, KIND, id)?;
        if !record.enabled {
            return Err(DomainError::Conflict(format!(
                "webhook `{id}` is disabled; enable it to send a test event"
            )));
        }
        let envelope = notifly_webhooks::Envelope {
            id: ids::new_id(),
            event_type,
            payload: samples::any_payload(event_type, &self.public_url),
        };
        let body = serde_json::to_string(&envelope).map_err(StoreError::Corrupt)?;
        let event = EventRecord {
            id: envelope.id,
            event_type: event_type.as_str().to_owned(),
            created_at: ids::now(),
            resource_id: envelope.payload["id"].as_str().map(str::to_owned),
            body,
            traceparent: crate::telemetry::current_traceparent(),
        };
        let delivery = tx.insert_event_for_endpoint(account, &event, id).await?;
        self.commit(tx).await?;
        Ok(delivery)
    }
}

impl Notifly {
    /// The secrets an endpoint signs with at `now`.
    fn secrets_of(&self, r: &EndpointRecord, now: i64) -> DomainResult<WebhookSecret> {
        let current = self.open_keys(&r.id, &r.secret)?;
        let previous = match &r.previous_secret {
            Some(sealed) if r.previous_secret_expires_at.is_some_and(|t| t > now) => {
                Some(self.open_keys(&r.id, sealed)?)
            }
            _ => None,
        };
        Ok(WebhookSecret {
            public_key: current.public_key(),
            previous_public_key: previous.as_ref().and_then(KeySet::public_key),
            previous_secret_expires_at: previous.as_ref().and(r.previous_secret_expires_at),
            previous_secret: previous.map(|k| k.secret),
            secret: current.secret,
        })
    }

    /// A stored endpoint as the API shows it. Custom headers this server
    /// cannot open (sealed with a key it lacks, which its start-up would
    /// have refused unless another node sealed them since) show as one
    /// entry that says so, under a name no header can have: the webhook can
    /// still be read, deleted, or given new headers, but writing back what
    /// was read is refused rather than taken as "no headers". Its
    /// deliveries fail visibly meanwhile (see the sender).
    pub(super) fn view(&self, r: EndpointRecord) -> Webhook {
        match self.open_headers(&r) {
            Ok(headers) => Webhook::of(r, &headers),
            Err(e) => {
                tracing::warn!(endpoint = %r.id, error = %e, "cannot open the webhook's custom headers");
                let mut w = Webhook::of(r, &[]);
                w.headers = BTreeMap::from([(
                    custom_headers::UNREADABLE.to_owned(),
                    custom_headers::mask(""),
                )]);
                w
            }
        }
    }

    /// An endpoint's custom headers, opened.
    fn open_headers(&self, r: &EndpointRecord) -> DomainResult<Vec<(String, String)>> {
        Ok(self.keyring.open_headers(&r.id, r.headers.as_deref())?)
    }

    /// The text an endpoint's keys are stored as: sealed.
    fn seal_keys(&self, endpoint_id: &str, keys: &KeySet) -> DomainResult<String> {
        Ok(self.keyring.seal_keys(endpoint_id, keys))
    }

    /// An endpoint's keys, from what [`Notifly::seal_keys`] stored.
    fn open_keys(&self, endpoint_id: &str, stored: &str) -> DomainResult<KeySet> {
        Ok(self.keyring.open_keys(endpoint_id, stored)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn event_lists_are_checked() {
        assert!(events(&[]).is_err());
        assert!(events(&list(&["message.sent"])).is_err());
        assert!(events(&list(&["*", "message.created"])).is_err());
        assert!(events(&list(&["webhook.disabled", "*"])).is_err());
        assert_eq!(events(&list(&["*", "*"])).unwrap(), list(&["*"]));
        assert_eq!(
            events(&list(&["*", "webhook.disabled", "*", "webhook.disabled"])).unwrap(),
            list(&["*", "webhook.disabled"])
        );
        assert_eq!(
            events(&list(&["delivery.exhausted", "message.created"])).unwrap(),
            list(&["delivery.exhausted", "message.created"])
        );
        assert_eq!(
            events(&list(&[
                "message.created",
                "message.created",
                "contact.deleted"
            ]))
            .unwrap(),
            list(&["message.created", "contact.deleted"])
        );
    }
}
