//! OpenTelemetry traces, exported over OTLP/HTTP with protobuf bodies.
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-only
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; configured by the standard
//! variables, read by the OpenTelemetry SDK and exporter themselves:
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the default; `grpc` is
//! refused at start), `OTEL_SERVICE_NAME` (default `notifly`),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `_ARG`, and the
//! batch processor's `OTEL_BSP_*`. `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none` turn it off.
//!
//! Exporting never holds up the server: finished spans go to the SDK's
//! batch processor, which sends from a thread of its own and drops spans
//! when its queue is full. The requests go through a reqwest client run on
//! the server's runtime; a collector that cannot be reached, or refuses a
//! batch, is logged at most once a minute.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use anyhow::Context as _;
use async_trait::async_trait;
use axum::body::Bytes;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::WithHttpConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider};

/// How often, at most, a failing export is logged.
const WARN_EVERY_SECONDS: i64 = 60;

/// Whether the environment asks for traces.
pub fn requested() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let is = |name: &str, value: &str| {
        std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
}

/// The installed exporter; [`Traces::shutdown`] sends what is left.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Builds the exporter from the environment, with `runtime` to run its
    /// requests on, and the `tracing` layer that feeds it.
    pub fn start<S>(
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<(
        Traces,
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
    )>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        let client = reqwest::Client::builder()
            .build()
            .context("cannot build the OTLP exporter's HTTP client")?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(OnRuntime {
                client,
                runtime,
                warned_at: Arc::new(AtomicI64::new(i64::MIN)),
            })
            .build()
            .context("cannot configure the OTLP trace exporter from OTEL_EXPORTER_OTLP_*")?;
        let mut resource = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ));
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("notifly");
        }
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter).build())
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("notifly");
        Ok((
            Traces { provider },
            tracing_opentelemetry::layer().with_tracer(tracer),
        ))
    }

    /// Sends the spans still queued, waiting at most the export timeout.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "traces: the last spans were not all exported");
        }
    }
}

/// The exporter's HTTP client: requests run on the server's runtime (the
/// batch processor's thread has none) with the server's reqwest.
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    /// When a failure was last logged (Unix seconds).
    warned_at: Arc<AtomicI64>,
}

impl fmt::Debug for OnRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnRuntime").finish_non_exhaustive()
    }
}

impl OnRuntime {
    /// Logs `what` unless a failure was logged in the last minute.
    fn warn(&self, what: &str) {
        let now = notifly_server::ids::now();
        let last = self.warned_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_SECONDS
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                "traces: {what}; spans are dropped while this lasts (logged at most once a minute)"
            );
        }
    }
}

#[async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let url = request.uri().to_string();
        let sent = self
            .runtime
            .spawn(async move {
                let (parts, body) = request.into_parts();
                let response = client
                    .request(parts.method, parts.uri.to_string())
                    .headers(parts.headers)
                    .body(body)
                    .send()
                    .await?;
                let mut answer = Response::builder().status(response.status());
                if let Some(headers) = answer.headers_mut() {
                    headers.extend(response.headers().clone());
                }
                let body = response.bytes().await?;
                Ok::<_, HttpError>(answer.body(body)?)
            })
            .await;
        let result = match sent {
            Ok(result) => result,
            Err(e) => Err(e.into()),
        };
        match &result {
            Err(e) => self.warn(&format!("cannot send spans to {url}: {e}")),
            Ok(r) if !r.status().is_success() => {
                self.warn(&format!("the collector at {url} answered {}", r.status()));
            }
            Ok(_) => {}
        }
        result
    }
}
