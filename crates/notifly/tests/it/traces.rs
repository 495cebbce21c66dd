//! OpenTelemetry traces, as an operator turns them on: `notifly serve` with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a real OTLP/HTTP receiver
//! (started here, decoding the protobuf it is sent), and a webhook receiver
//! that reads each delivery's `traceparent`.

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::{Value, json};

use crate::common::{call, create_account, free_port, wait_ready};

const BIN: &str = env!("CARGO_BIN_EXE_notifly");

/// A span as the collector received it, with its resource's service name.
#[derive(Debug, Clone)]
pub struct Got {
    pub service: String,
    pub span: Span,
}

impl Got {
    pub fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }
    pub fn span_id(&self) -> String {
        hex::encode(&self.span.span_id)
    }
    pub fn parent_id(&self) -> String {
        hex::encode(&self.span.parent_span_id)
    }
    pub fn attribute(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                AnyValue::StringValue(s) => s.clone(),
                AnyValue::IntValue(i) => i.to_string(),
                AnyValue::BoolValue(b) => b.to_string(),
                other => format!("{other:?}"),
            })
    }
}

/// The OTLP/HTTP receiver: `POST /v1/traces` with an
/// `ExportTraceServiceRequest` in protobuf.
pub async fn collector() -> (String, Arc<Mutex<Vec<Got>>>) {
    async fn export(
        State(spans): State<Arc<Mutex<Vec<Got>>>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> (StatusCode, [(&'static str, &'static str); 1], Vec<u8>) {
        assert_eq!(headers["content-type"], "application/x-protobuf");
        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
        let mut spans = spans.lock().unwrap();
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push(Got {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        // An empty ExportTraceServiceResponse.
        (
            StatusCode::OK,
            [("content-type", "application/x-protobuf")],
            Vec::new(),
        )
    }
    let spans = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/v1/traces", post(export))
        .with_state(spans.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, spans)
}

/// A webhook receiver that fails every first attempt (so the second comes
/// through a claim, read back from the database) and keeps each attempt's
/// `traceparent`, in order.
async fn hook() -> (String, Arc<Mutex<Vec<String>>>) {
    hook_on(0, true).await
}

/// A webhook receiver on `port` (0: any) that keeps each attempt's
/// `traceparent`; with `fail_first`, it answers 500 to first attempts.
pub async fn hook_on(port: u16, fail_first: bool) -> (String, Arc<Mutex<Vec<String>>>) {
    type Seen = Arc<Mutex<Vec<String>>>;
    async fn receive(
        State((seen, fail_first)): State<(Seen, bool)>,
        headers: HeaderMap,
    ) -> StatusCode {
        let traceparent = headers
            .get("traceparent")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        seen.lock().unwrap().push(traceparent);
        if fail_first && headers["x-notifly-attempt"] == "1" {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state((seen.clone(), fail_first));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

struct Served {
    child: Child,
    base: String,
    auth: String,
    _dir: tempfile::TempDir,
}

impl Served {
    async fn start(otlp_endpoint: &str) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let database = format!("sqlite://{}/notifly.db", dir.path().display());
        let auth = format!("Bearer {}", create_account(&database, "traced"));
        let port = free_port();
        let child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database", &database, "--allow-private-urls"])
            .args(["--retry-schedule", "0s,200ms"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .current_dir(dir.path())
            .env("NOTIFLY_LOG", "warn")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_endpoint)
            .env("OTEL_SERVICE_NAME", "notifly-under-test")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(&reqwest::Client::new(), &base).await;
        Served {
            child,
            base,
            auth,
            _dir: dir,
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, body) = call(
            reqwest::Client::new()
                .post(format!("{}{path}", self.base))
                .json(&body),
            &self.auth,
        )
        .await;
        assert!((200..300).contains(&status), "POST {path}: {status} {body}");
        body
    }

    /// Stops the server (SIGTERM, so it sends its last spans) and returns
    /// what it wrote to stderr.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        stderr
    }
}

async fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_its_commit_and_its_delivery_attempts_are_one_trace() {
    let (otlp, spans) = collector().await;
    let (hook_url, attempts) = hook().await;
    let server = Served::start(&otlp).await;

    let contact = server
        .post(
            "/v1/contacts",
            json!({"username": "kevin", "phone_number": "1-800-759-3000"}),
        )
        .await;
    let conversation = server
        .post("/v1/conversations", json!({"contact_id": contact["id"]}))
        .await;
    server
        .post(
            "/v1/webhooks",
            json!({"name": "traced", "url": hook_url, "events": ["message.created"]}),
        )
        .await;

    // The caller traces too: the request continues its trace.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let (status, _) = call(
        reqwest::Client::new()
            .post(format!("{}/v1/messages", server.base))
            .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
            .json(&json!({"conversation_id": conversation["id"], "message": "I hate meetings."})),
        &server.auth,
    )
    .await;
    assert_eq!(status, 201);

    // Two attempts (the first answered 500, the second a retry that a
    // claim read back from the database), each with a traceparent in the
    // caller's trace.
    let seen = wait_until("two attempts", || {
        let seen = attempts.lock().unwrap().clone();
        (seen.len() >= 2).then_some(seen)
    })
    .await;
    for traceparent in &seen {
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "a W3C traceparent: {traceparent:?}");
        assert_eq!(parts[0], "00");
        assert_eq!(
            parts[1], caller_trace,
            "the delivery continues the caller's trace"
        );
        assert_eq!(parts[3], "01", "sampled");
    }

    let found = |f: &dyn Fn(&Got) -> bool| spans.lock().unwrap().iter().find(|s| f(s)).cloned();
    let request = wait_until("the request's span", || {
        found(&|s| s.span.name == "POST /v1/messages" && s.trace_id() == caller_trace)
    })
    .await;
    assert_eq!(request.service, "notifly-under-test");
    assert_eq!(
        request.parent_id(),
        caller_span,
        "child of the caller's span"
    );
    assert_eq!(
        request.attribute("http.response.status_code").as_deref(),
        Some("201")
    );

    let commit = wait_until("the commit's span", || {
        found(&|s| s.span.name == "db commit" && s.parent_id() == request.span_id())
    })
    .await;
    assert_eq!(commit.trace_id(), caller_trace);

    for (n, traceparent) in seen.iter().take(2).enumerate() {
        let attempt_number = (n + 1).to_string();
        let attempt = wait_until("an attempt's span", || {
            found(&|s| {
                s.span.name == "webhook attempt"
                    && s.attribute("notifly.attempt").as_deref() == Some(attempt_number.as_str())
            })
        })
        .await;
        assert_eq!(attempt.trace_id(), caller_trace);
        assert_eq!(
            attempt.parent_id(),
            request.span_id(),
            "attempt {attempt_number} is a child of the request that wrote its event"
        );
        assert!(
            attempt
                .span
                .links
                .iter()
                .any(|l| hex::encode(&l.span_id) == request.span_id()),
            "attempt {attempt_number} links to the request"
        );
        assert!(
            traceparent.contains(&attempt.span_id()),
            "the delivery's traceparent names the attempt's span"
        );
        assert_eq!(
            attempt.attribute("notifly.event.type").as_deref(),
            Some("message.created")
        );
        let status = if n == 0 { "500" } else { "200" };
        assert_eq!(
            attempt.attribute("http.response.status_code").as_deref(),
            Some(status)
        );
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_slows_nothing_and_is_logged_once_a_minute() {
    // Nothing listens there.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let server = Served::start(&dead).await;
    // Every write is answered as usual.
    for n in 0..20 {
        server
            .post(
                "/v1/contacts",
                json!({"username": format!("kevin_{n}"), "phone_number": "1-800-759-3000"}),
            )
            .await;
    }
    // Several batches fail meanwhile (one every 100 ms).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let stderr = server.stop();
    let warnings = stderr.matches("traces: cannot send spans").count();
    assert_eq!(
        warnings, 1,
        "one warning for a minute of failures:\n{stderr}"
    );
}

#[test]
fn a_protocol_other_than_http_protobuf_stops_the_start() {
    for (variable, value) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
            .current_dir(dir.path())
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
            .env(variable, value)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > end {
                child.kill().unwrap();
                panic!("{variable}={value}: the server started");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(!status.success());
        assert!(
            stderr.contains(&format!("{variable}={value} is not supported")),
            "{stderr}"
        );
        assert!(stderr.contains("http/protobuf"), "{stderr}");
    }
}
