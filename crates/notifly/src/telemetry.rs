//! OpenTelemetry traces, exported over OTLP/HTTP with protobuf bodies.
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-only
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; configured by the standard
//! variables, most read by the OpenTelemetry SDK and exporter themselves:
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME` (default `notifly`),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `_ARG`, and the
//! batch processor's `OTEL_BSP_SCHEDULE_DELAY`, `_MAX_QUEUE_SIZE` and
//! `_MAX_EXPORT_BATCH_SIZE`. Read here: `OTEL_EXPORTER_OTLP_TIMEOUT` (each
//! export request's limit, since the exporter applies it only to clients
//! it builds) and `OTEL_EXPORTER_OTLP_PROTOCOL`, where anything but
//! `http/protobuf` stops the start (the exporter would otherwise send
//! protobuf to a receiver that asked for something else).
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off.
//!
//! Exporting never holds up the server: finished spans go to the SDK's
//! batch processor, which sends from a thread of its own and drops spans
//! when its queue is full. The requests go through a reqwest client run on
//! the server's runtime; a collector that cannot be reached, or refuses a
//! batch, is logged at most once a minute.

use std::fmt;

use anyhow::Context as _;
use async_trait::async_trait;
use axum::body::Bytes;
use notifly_server::metrics::OnceAMinute;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::WithHttpConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider};

/// An export request's limit when `OTEL_EXPORTER_OTLP_TIMEOUT` is not set
/// (the specification's default).
const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// The first of `names` that is set (and not blank), trimmed.
fn first_env(names: &[&str]) -> Option<(String, String)> {
    names.iter().find_map(|name| {
        let value = std::env::var(name).ok()?;
        let value = value.trim();
        (!value.is_empty()).then(|| ((*name).to_owned(), value.to_owned()))
    })
}

/// Refuses a protocol other than `http/protobuf`, the one spoken here.
fn check_protocol() -> anyhow::Result<()> {
    match first_env(&[
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]) {
        Some((name, value)) if value != "http/protobuf" => anyhow::bail!(
            "{name}={value} is not supported: Notifly exports traces over OTLP/HTTP with protobuf \
             bodies only; set it to http/protobuf (or unset it) and point \
             OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP port (4318 by default)"
        ),
        _ => Ok(()),
    }
}

/// Each export request's limit.
fn export_timeout() -> anyhow::Result<std::time::Duration> {
    let Some((name, value)) = first_env(&[
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]) else {
        return Ok(std::time::Duration::from_millis(DEFAULT_TIMEOUT_MS));
    };
    let ms: u64 = value
        .parse()
        .with_context(|| format!("{name}={value}: expected milliseconds, such as 10000"))?;
    Ok(std::time::Duration::from_millis(ms))
}

/// Whether `OTEL_RESOURCE_ATTRIBUTES` names `key`.
fn resource_attribute_set(key: &str) -> bool {
    std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|attributes| {
        attributes
            .split(',')
            .any(|pair| pair.split('=').next().is_some_and(|k| k.trim() == key))
    })
}

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
        check_protocol()?;
        let client = reqwest::Client::builder()
            .timeout(export_timeout()?)
            .build()
            .context("cannot build the OTLP exporter's HTTP client")?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(OnRuntime {
                client,
                runtime,
                warned: OnceAMinute::new(),
            })
            .build()
            .context("cannot configure the OTLP trace exporter from OTEL_EXPORTER_OTLP_*")?;
        // What the environment does not say: the defaults.
        let mut resource = Resource::builder();
        if !resource_attribute_set("service.version") {
            resource = resource.with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ));
        }
        if first_env(&["OTEL_SERVICE_NAME"]).is_none() && !resource_attribute_set("service.name") {
            resource = resource.with_service_name("notifly");
        }
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter).build())
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("notifly");
        // Per span, no code location, thread or busy/idle times: each is
        // attributes and work on every span of every request (a quarter of
        // what export cost, measured in docs/benchmarks.md).
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false);
        Ok((Traces { provider }, layer))
    }

    /// Sends the spans still queued (the SDK waits for that up to 5 s).
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
    /// Failures are logged at most once a minute.
    warned: OnceAMinute,
}

impl fmt::Debug for OnRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnRuntime").finish_non_exhaustive()
    }
}

impl OnRuntime {
    /// Logs `what` unless a failure was logged in the last minute.
    fn warn(&self, what: &str) {
        if self.warned.allows(notifly_server::ids::now()) {
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
