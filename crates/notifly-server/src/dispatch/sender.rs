//! The HTTP side of a delivery: build the signed request, send it with one
//! pooled keep-alive client, and read a bounded amount of the answer.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use notifly_webhooks::{
    EndpointKeys, HEADER_NOTIFLY_SIGNATURE, HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE,
    HEADER_WEBHOOK_TIMESTAMP, endpoint_signature_headers,
};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use tracing::Instrument as _;

use super::schedule::MAX_RETRY_AFTER;
use crate::domain::custom_headers;
use crate::ids;
use crate::secrets::{KeySet, Keyring, SealError};
use crate::store::{AttemptRecord, Claimed};
use crate::telemetry;

/// Most bytes of a response body read and kept.
pub const MAX_RESPONSE_BODY: usize = 4096;
/// Most response headers kept.
const MAX_RESPONSE_HEADERS: usize = 64;

/// The `user-agent` of every delivery.
pub const USER_AGENT_VALUE: &str = concat!("Notifly-Webhooks/", env!("CARGO_PKG_VERSION"));

/// Sends deliveries.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    timeout: Duration,
    allow_private: bool,
    /// Opens the endpoints' sealed keys, just before signing.
    keyring: Arc<Keyring>,
}

/// What a delivery's headers are made of.
#[derive(Clone, Copy)]
pub struct Signing<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    /// 1 for the first attempt.
    pub attempt: i64,
    pub delivery_id: &'a str,
    /// The endpoint's current keys.
    pub keys: EndpointKeys<'a>,
    /// During a rotation's overlap window, the keys being replaced.
    pub previous: Option<EndpointKeys<'a>>,
}

impl std::fmt::Debug for Signing<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signing")
            .field("event_id", &self.event_id)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// Every header of a delivery attempt, signed at `now` (Unix seconds).
///
/// During a rotation's overlap window the previous secret signs
/// `x-notifly-signature` (so a consumer that has not switched yet keeps
/// verifying) and both secrets sign `webhook-signature`.
pub fn delivery_headers(s: &Signing<'_>, body: &[u8], now: i64) -> Vec<(&'static str, String)> {
    // The consumer crate owns the signing, so Notifly and its customers'
    // verifiers can never drift apart.
    let sig = endpoint_signature_headers(s.keys, s.previous, s.event_id, now, body);
    let mut headers = vec![
        ("content-type", "application/json".to_owned()),
        ("user-agent", USER_AGENT_VALUE.to_owned()),
        (HEADER_WEBHOOK_ID, s.event_id.to_owned()),
        (HEADER_WEBHOOK_TIMESTAMP, now.to_string()),
    ];
    if let Some(standard) = sig.standard {
        headers.push((HEADER_WEBHOOK_SIGNATURE, standard));
    }
    headers.extend([
        (HEADER_NOTIFLY_SIGNATURE, sig.notifly),
        ("x-notifly-event-type", s.event_type.to_owned()),
        ("x-notifly-attempt", s.attempt.to_string()),
        ("x-notifly-delivery-id", s.delivery_id.to_owned()),
    ]);
    headers
}

/// How long an endpoint that asks to be slowed down without saying for how
/// long (a 429, 502 or 504 without `Retry-After`) gets nothing.
pub const DEFAULT_THROTTLE: Duration = Duration::from_secs(5);

/// A `Retry-After` value, in seconds or as an HTTP date, as a wait from
/// `now` (none if the date is past or the value is neither).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An attempt's request headers.
#[derive(Default)]
struct Headers {
    /// Notifly's own: content type, user agent, ids and signatures.
    signed: Vec<(&'static str, String)>,
    /// The endpoint's custom headers, values in clear.
    custom: Vec<(String, String)>,
}

/// Custom values (and their space-separated parts) shorter than this are
/// not looked for in responses: too likely to occur by chance, and too
/// short to be a credential.
const REDACT_FROM: usize = 8;

impl Headers {
    /// `text` with every custom value in it masked: a receiver that echoes
    /// its request (a test endpoint, a gateway's error page) must not put a
    /// credential in clear into the attempt log. Each value is looked for
    /// whole, by its space-separated parts (the token of `Bearer <token>`),
    /// and as JSON escapes it; a value cut off at the end of `text` (the
    /// body is kept up to a limit) is masked too.
    fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (_, value) in &self.custom {
            for needle in needles(value) {
                if text.contains(needle.as_str()) {
                    text = text.replace(needle.as_str(), &custom_headers::mask(&needle));
                }
                // The start of a value where the text was cut off.
                let cut = (REDACT_FROM..needle.len())
                    .rev()
                    .filter(|&n| needle.is_char_boundary(n))
                    .find(|&n| text.ends_with(&needle[..n]));
                if let Some(n) = cut {
                    text.truncate(text.len() - n);
                    // Without a tail: the last characters of a cut-off
                    // value are not the ones masks show.
                    text.push_str(&custom_headers::mask(""));
                }
            }
        }
        text
    }

    /// What the attempt log keeps: every header, custom values masked.
    fn logged(&self) -> Vec<(String, String)> {
        self.signed
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .chain(
                self.custom
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), custom_headers::mask(v))),
            )
            .collect()
    }
}

/// The forms of a custom value a response may echo, longest first: the
/// value, its JSON-escaped forms, and its space-separated parts, each at
/// least [`REDACT_FROM`] bytes.
fn needles(value: &str) -> Vec<String> {
    let mut out = vec![value.to_owned()];
    let json = serde_json::to_string(value).unwrap_or_default();
    let json = json.trim_matches('"');
    for escaped in [json.to_owned(), json.replace('/', "\\/")] {
        if !out.contains(&escaped) {
            out.push(escaped);
        }
    }
    for part in value.split([' ', '\t']) {
        if part.len() >= REDACT_FROM && !out.iter().any(|o| o == part) {
            out.push(part.to_owned());
        }
    }
    out.retain(|n| n.len() >= REDACT_FROM);
    out
}

/// What one attempt produced.
#[derive(Debug)]
pub struct Sent {
    pub record: AttemptRecord,
    /// How long the attempt took, more precisely than `record.duration_ms`.
    pub elapsed: Duration,
    /// The receiver's `Retry-After` on a 429, 502, 503 or 504.
    pub retry_after: Option<Duration>,
    /// The receiver asked to be slowed down (429, 502 or 504, or 503 with a
    /// `Retry-After`): send it nothing more for this long.
    pub throttle: Option<Duration>,
    /// Nothing was sent: this node could not open the endpoint's keys.
    pub unsent: bool,
}

impl Sender {
    /// A sender with a per-attempt `timeout`. Unless `allow_private`, names
    /// resolve only to public addresses (see [`crate::ssrf`]).
    pub fn new(
        timeout: Duration,
        allow_private: bool,
        keyring: Arc<Keyring>,
    ) -> reqwest::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .http1_only()
            // A system proxy would resolve targets itself and bypass the
            // SSRF resolver below.
            .no_proxy();
        if !allow_private {
            builder = builder.dns_resolver(crate::ssrf::resolver());
        }
        Ok(Sender {
            client: builder.build()?,
            timeout,
            allow_private,
            keyring,
        })
    }

    /// The headers of an attempt (the signed ones, then the endpoint's
    /// custom ones), or why the endpoint's keys or custom headers could not
    /// be opened (nothing is sent then).
    fn headers(&self, c: &Claimed, body: &[u8], now: i64) -> Result<Headers, SealError> {
        let custom = self
            .keyring
            .open_headers(&c.endpoint_id, c.headers.as_deref())?;
        let keys = self.keyring.open_keys(&c.endpoint_id, &c.secret)?;
        let previous = c
            .previous_secret
            .as_deref()
            .filter(|_| c.previous_secret_expires_at.is_some_and(|t| t > now))
            .map(|sealed| self.keyring.open_keys(&c.endpoint_id, sealed))
            .transpose()?;
        let signed = delivery_headers(
            &Signing {
                event_id: &c.event_id,
                event_type: &c.event_type,
                attempt: c.attempt,
                delivery_id: &c.delivery_id,
                keys: keys.as_keys(),
                previous: previous.as_ref().map(KeySet::as_keys),
            },
            body,
            now,
        );
        Ok(Headers { signed, custom })
    }

    /// Makes one attempt. Never fails: every outcome is an attempt record.
    ///
    /// While traces are exported, the attempt is a span in the trace of the
    /// request that wrote the event, and the request carries the span's
    /// `traceparent` (see [`crate::telemetry`]).
    pub async fn send(&self, c: &Claimed, body: Bytes) -> Sent {
        let span = telemetry::attempt_span(c);
        let traceparent = telemetry::traceparent_of(&span);
        let sent = self
            .send_traced(c, body, traceparent)
            .instrument(span.clone())
            .await;
        if let Some(status) = sent.record.response_status {
            span.record("http.response.status_code", status);
        }
        span.record(
            "otel.status_code",
            if sent.record.succeeded { "ok" } else { "error" },
        );
        sent
    }

    async fn send_traced(&self, c: &Claimed, body: Bytes, traceparent: Option<String>) -> Sent {
        let started_ms = ids::now_ms();
        let started = Instant::now();
        let (headers, unsigned) = match self.headers(c, &body, started_ms / 1000) {
            Ok(mut headers) => {
                // After the custom headers, so it replaces one of that name.
                headers
                    .signed
                    .extend(traceparent.map(|t| (telemetry::TRACEPARENT, t)));
                (headers, None)
            }
            Err(e) => {
                // A node without the key that sealed this endpoint's keys
                // (a misconfigured cluster): the attempt fails, visibly.
                tracing::error!(endpoint = %c.endpoint_id, error = %e, "cannot sign a delivery");
                (
                    Headers::default(),
                    Some(format!(
                        "not sent: this server cannot open the endpoint's signing keys or custom headers ({e})"
                    )),
                )
            }
        };
        let mut record = AttemptRecord {
            id: ids::new_id(),
            delivery_id: c.delivery_id.clone(),
            attempt: c.attempt,
            started_at_ms: started_ms,
            duration_ms: 0,
            request_headers: sqlx::types::Json(headers.logged()),
            response_status: None,
            response_headers: None,
            response_body: None,
            error: None,
            succeeded: false,
        };
        let mut retry_after = None;
        let mut throttle = None;
        let unsent = unsigned.is_some();
        let exchanged = match unsigned {
            Some(reason) => Err(reason),
            None => self.exchange(c, &headers, body).await,
        };
        match exchanged {
            Ok((status, response_headers, response_body)) => {
                record.response_status = Some(i64::from(status));
                record.succeeded = (200..300).contains(&status);
                if (300..400).contains(&status) {
                    record.error = Some(
                        "redirects are not followed; point the webhook at the final URL".into(),
                    );
                } else if !record.succeeded {
                    record.error = Some(format!("the endpoint answered HTTP {status}"));
                }
                if matches!(status, 429 | 502..=504) {
                    retry_after = response_headers
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, SystemTime::now()));
                    if status != 503 || retry_after.is_some() {
                        throttle =
                            Some(retry_after.unwrap_or(DEFAULT_THROTTLE).min(MAX_RETRY_AFTER));
                    }
                }
                record.response_headers = Some(sqlx::types::Json(
                    response_headers
                        .iter()
                        .take(MAX_RESPONSE_HEADERS)
                        .map(|(k, v)| {
                            (
                                k.as_str().to_owned(),
                                headers.redact(&String::from_utf8_lossy(v.as_bytes())),
                            )
                        })
                        .collect(),
                ));
                record.response_body = Some(headers.redact(&response_body));
            }
            Err(error) => record.error = Some(error),
        }
        let elapsed = started.elapsed();
        record.duration_ms = elapsed.as_millis() as i64;
        Sent {
            record,
            elapsed,
            retry_after,
            throttle,
            unsent,
        }
    }

    async fn exchange(
        &self,
        c: &Claimed,
        headers: &Headers,
        body: Bytes,
    ) -> Result<(u16, HeaderMap, String), String> {
        let url = reqwest::Url::parse(&c.url).map_err(|e| format!("invalid URL: {e}"))?;
        if !self.allow_private
            && let Some(host) = url.host_str()
            && let Ok(ip) = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
            && !crate::ssrf::is_public(ip)
        {
            return Err(format!("{ip} is a private address; not connecting"));
        }
        let mut map = HeaderMap::with_capacity(headers.signed.len() + headers.custom.len());
        // Custom names were checked when saved (none is reserved), so they
        // never replace a signed header; one that no longer parses is left out.
        for (name, value) in &headers.custom {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                map.insert(n, v);
            }
        }
        for (name, value) in &headers.signed {
            if let Ok(v) = HeaderValue::from_str(value) {
                map.insert(*name, v);
            }
        }
        debug_assert!(map.contains_key(CONTENT_TYPE) && map.contains_key(USER_AGENT));
        let mut response = self
            .client
            .post(url)
            .headers(map)
            .body(body)
            .send()
            .await
            .map_err(|e| describe(&e, self.timeout))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut kept = Vec::new();
        // Read at most MAX_RESPONSE_BODY bytes; a larger body is cut off (and
        // its connection dropped rather than drained).
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_RESPONSE_BODY - kept.len();
                    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if kept.len() >= MAX_RESPONSE_BODY {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if kept.is_empty() && e.is_timeout() {
                        return Err(describe(&e, self.timeout));
                    }
                    break;
                }
            }
        }
        // Stored as text: invalid UTF-8 and NUL (which PostgreSQL cannot
        // store in text) become U+FFFD.
        let body = String::from_utf8_lossy(&kept).replace('\0', "\u{FFFD}");
        Ok((status, headers, body))
    }
}

/// A transport error as a person reads it, with its causes.
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no response within {} ms", timeout.as_millis());
    }
    let mut text = if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod retry_after_tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_784_000_000);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}

#[cfg(test)]
mod redact_tests {
    use super::*;

    fn with(value: &str) -> Headers {
        Headers {
            signed: Vec::new(),
            custom: vec![("Authorization".to_owned(), value.to_owned())],
        }
    }

    #[test]
    fn echoed_custom_values_are_masked() {
        let h = with("Bearer abc/def-0123456789");
        assert_eq!(
            h.redact("got Bearer abc/def-0123456789 here"),
            "got ••••••••6789 here"
        );
        // The token alone, and escaped by a JSON encoder.
        assert_eq!(
            h.redact("bad token abc/def-0123456789"),
            "bad token ••••••••6789"
        );
        assert_eq!(
            h.redact(r#"{"auth":"Bearer abc\/def-0123456789"}"#),
            r#"{"auth":"••••••••6789"}"#
        );
        // Cut off where the body was cut.
        assert_eq!(h.redact("echo: Bearer abc/d"), "echo: ••••••••");
        // Short values and unrelated text stay.
        assert_eq!(with("t-1").redact("tenant t-1"), "tenant t-1");
        assert_eq!(h.redact("nothing here"), "nothing here");
    }
}
