//! Trace context through the outbox, for OpenTelemetry traces.
//!
//! The binary installs the exporter (`notifly::telemetry`, only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set) and calls [`enable`]; until then nothing here does any work, and the
//! spans below are not even created. Once enabled:
//!
//! - an API request's span continues the caller's trace when the request
//!   carries a W3C `traceparent` ([`continue_trace`]);
//! - each event stores the `traceparent` of the span that wrote it
//!   ([`current_traceparent`], in `domain::outbox`), so a delivery attempt,
//!   handed off in memory or claimed later by any node, is a child of the
//!   request that wrote its event, with a link to it ([`attempt_span`]);
//! - each delivery carries the attempt's own `traceparent`, so a receiver
//!   that traces continues the same trace.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::store::Claimed;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The W3C header that carries trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Turns trace context on: called once the exporter is installed.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether traces are exported, so that spans are worth making.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Parents `span` on the trace context in `headers`, if they carry one.
pub fn continue_trace(span: &Span, headers: &axum::http::HeaderMap) {
    if !enabled() {
        return;
    }
    let context =
        TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// The `traceparent` of `span`, if it is part of an exported trace.
pub fn traceparent_of(span: &Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The `traceparent` of the current span: what an event stores.
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    traceparent_of(&Span::current())
}

/// The span of one delivery attempt (none while traces are off): a client
/// span, child of the span that wrote the event (when the event stored
/// one) and linked to it, so the attempt shows in the request's trace
/// however long after and on whichever node it runs.
pub fn attempt_span(c: &Claimed) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "webhook attempt",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = "POST",
        http.response.status_code = tracing::field::Empty,
        notifly.event.id = %c.event_id,
        notifly.event.type = %c.event_type,
        notifly.delivery.id = %c.delivery_id,
        notifly.endpoint.id = %c.endpoint_id,
        notifly.attempt = c.attempt,
    );
    if let Some(traceparent) = c.traceparent.as_deref() {
        let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
        let context = TraceContextPropagator::new().extract(&carrier);
        let written = context.span().span_context().clone();
        if written.is_valid() {
            let _ = span.set_parent(context);
            span.add_link(written);
        }
    }
    span
}

/// A span around a database commit (none while traces are off).
pub fn commit_span() -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!("db commit", otel.kind = "client")
}

/// A span around a write transaction's start (none while traces are off).
pub fn begin_span() -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!("db begin", otel.kind = "client")
}
