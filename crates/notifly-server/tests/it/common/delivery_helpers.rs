//! Helpers shared by the `delivery_*` tests: registering webhooks, waiting
//! for deliveries to reach a status, reading `/metrics`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use notifly_server::Config;
use serde_json::{Value, json};

use crate::common::{Client, TestServer, id_of};

/// The longest any test waits for a delivery to happen.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How often a condition is looked at again.
const POLL: Duration = Duration::from_millis(20);

/// A server for delivery tests: private URLs allowed (the receiver is on
/// loopback), a compressed retry schedule (3 attempts), a short timeout and
/// a short poll interval. `adjust` may change any of it.
pub async fn server(adjust: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.allow_private_urls = true;
        c.retry_schedule = "0s,100ms,200ms".to_owned();
        c.delivery_timeout = "300ms".to_owned();
        c.poll_interval = "50ms".to_owned();
        adjust(c);
    })
    .await
}

/// A registered webhook: its id and secret.
#[derive(Debug, Clone)]
pub struct Hook {
    pub id: String,
    pub secret: String,
    pub body: Value,
}

/// Registers a webhook and asserts that it was created.
pub async fn webhook(c: &Client, name: &str, url: &str, events: &[&str]) -> Hook {
    let (status, body) = c
        .post(
            "/v1/webhooks",
            json!({"name": name, "url": url, "events": events}),
        )
        .await;
    assert_eq!(status, 201, "create webhook {name}: {body}");
    Hook {
        id: id_of(&body).to_owned(),
        secret: body["secret"]
            .as_str()
            .unwrap_or_else(|| panic!("no secret in {body}"))
            .to_owned(),
        body,
    }
}

/// `GET path`, asserting 200.
pub async fn get_ok(c: &Client, path: &str) -> Value {
    let (status, body) = c.get(path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// One delivery with its attempt log.
pub async fn delivery(c: &Client, id: &str) -> Value {
    get_ok(c, &format!("/v1/deliveries/{id}")).await
}

/// A webhook's deliveries (all pages), newest first, optionally of one status.
pub async fn deliveries(c: &Client, webhook_id: &str, status: Option<&str>) -> Vec<Value> {
    let path = match status {
        Some(s) => format!("/v1/webhooks/{webhook_id}/deliveries?status={s}"),
        None => format!("/v1/webhooks/{webhook_id}/deliveries"),
    };
    c.list_all(&path).await
}

/// Polls a delivery until `done` holds for it; fails the test (showing the
/// delivery) after [`DEADLINE`].
pub async fn wait_delivery_until(
    c: &Client,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let end = Instant::now() + DEADLINE;
    loop {
        let d = delivery(c, id).await;
        if done(&d) {
            return d;
        }
        assert!(
            Instant::now() < end,
            "delivery {id} is not {what} within {DEADLINE:?}: {d:#}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls a delivery until its status is `status`.
pub async fn wait_delivery(c: &Client, id: &str, status: &str) -> Value {
    wait_delivery_until(c, id, status, |d| d["status"] == status).await
}

/// Polls a webhook's deliveries until `n` of them have `status`; returns them.
pub async fn wait_deliveries(c: &Client, webhook_id: &str, n: usize, status: &str) -> Vec<Value> {
    let end = Instant::now() + DEADLINE;
    loop {
        let got = deliveries(c, webhook_id, Some(status)).await;
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < end,
            "webhook {webhook_id} has {} of {n} {status} deliveries within {DEADLINE:?}; all: {:#}",
            got.len(),
            Value::Array(deliveries(c, webhook_id, None).await)
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls a webhook until `done` holds for it.
pub async fn wait_webhook(
    c: &Client,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let end = Instant::now() + DEADLINE;
    loop {
        let w = get_ok(c, &format!("/v1/webhooks/{id}")).await;
        if done(&w) {
            return w;
        }
        assert!(
            Instant::now() < end,
            "webhook {id} is not {what} within {DEADLINE:?}: {w:#}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// `PUT /v1/webhooks/{id}` `{"enabled": enabled}`, asserting 200.
pub async fn set_enabled(c: &Client, id: &str, enabled: bool) -> Value {
    let (status, body) = c
        .put(&format!("/v1/webhooks/{id}"), json!({"enabled": enabled}))
        .await;
    assert_eq!(status, 200, "set enabled={enabled}: {body}");
    assert_eq!(body["enabled"], enabled, "{body}");
    body
}

/// The value of a header in an attempt's recorded request or response
/// headers (`[[name, value], ...]`).
pub fn header_in<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    headers
        .as_array()
        .expect("headers are a list")
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str())
}

/// Unix seconds now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The `/metrics` text.
pub async fn metrics(server: &TestServer) -> String {
    let res = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(res.status().as_u16(), 200, "GET /metrics");
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("text/plain"),
        "metrics content type: {content_type}"
    );
    res.text().await.expect("read /metrics")
}

/// The value of the sample `series` (a metric name with its labels, exactly
/// as exposed) in a metrics text; `None` if absent.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse::<f64>().expect("a numeric sample"))
    })
}

/// Like [`sample`], failing the test (with the text) if the series is absent.
#[track_caller]
pub fn sample_of(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no `{series}` in /metrics:\n{text}"))
}
