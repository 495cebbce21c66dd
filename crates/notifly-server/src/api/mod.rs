//! The HTTP edge: routing, extraction, the OpenAPI document and error bodies.
//!
//! Only this module knows HTTP status codes. Handlers parse, call one
//! [`Notifly`] method, and serialize.

mod api_keys;
mod attachments;
pub mod catalogue;
mod contacts;
mod contract;
mod conversations;
mod deliveries;
pub mod error;
mod events;
mod extract;
mod groups;
mod health;
mod http_metrics;
mod messages;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::{HeaderName, Request, Response, StatusCode};
use serde::Serialize;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use tracing::Span;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::domain::Notifly;
use crate::store::Listed;
use error::ApiError;

/// What an unknown route answers: the JSON 404, except for a browser
/// opening the server's root (`Accept: text/html`), which is sent to the
/// dashboard.
async fn not_found(request: axum::extract::Request) -> axum::response::Response {
    use axum::response::{IntoResponse, Redirect};
    let wants_html = request
        .headers()
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if request.uri().path() == "/" && request.method() == axum::http::Method::GET && wants_html {
        return Redirect::to("/dashboard").into_response();
    }
    ApiError::not_found("no such route; see /openapi.json for the API").into_response()
}

/// Size limits for request bodies.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// JSON bodies.
    pub max_body_bytes: usize,
    /// Attachment files.
    pub max_attachment_bytes: usize,
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub notifly: Notifly,
    pub limits: Limits,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Cancelled when the server begins to shut down (ends event streams).
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Recently authenticated API keys.
    pub keys: Arc<crate::domain::accounts::KeyCache>,
    /// This process's node id (see [`crate::dispatch::Dispatcher::spawn`]).
    pub node: Arc<str>,
}

/// A page of a list: `{"has_more", "data"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    /// Whether more items lie beyond this page in the direction of travel.
    pub has_more: bool,
    pub data: Vec<T>,
}

impl<T> From<Listed<T>> for List<T> {
    fn from(l: Listed<T>) -> Self {
        List {
            has_more: l.has_more,
            data: l.items,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Notifly API",
        description = "Contacts, conversations, messages, groups and attachments, with every change delivered to your webhooks as a signed event.",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "contacts", description = "People the account talks to"),
        (name = "conversations", description = "A thread with one contact or with a group"),
        (name = "messages", description = "What is said in a conversation, with reactions and attachments"),
        (name = "groups", description = "Named sets of contacts"),
        (name = "attachments", description = "Files attached to messages"), (name = "events", description = "The account's event log"),
        (name = "webhooks", description = "Endpoints that receive events"),
        (name = "deliveries", description = "Each event's way to each endpoint, attempt by attempt"),
        (name = "api-keys", description = "The account's API keys"),
        (name = "operations", description = "Health, readiness and metrics"),
        (name = "event-types", description = "What Notifly sends to your webhooks: one request per event type, under `webhooks`"),
    ),
    components(schemas(crate::domain::notices::ExhaustedDelivery)),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key from `notifly accounts create`"))
                    .build(),
            ),
        );
    }
}

/// The API routes with their OpenAPI description.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(contacts::router())
        .merge(conversations::router())
        .merge(messages::router())
        .merge(groups::router())
        .merge(attachments::router())
        .merge(events::router())
        .merge(webhooks::router())
        .merge(deliveries::router())
        .merge(api_keys::router())
        .merge(health::router())
}

/// The OpenAPI document, as served at `/openapi.json`.
pub fn openapi() -> serde_json::Value {
    contract::complete(api_routes().split_for_parts().1)
}

#[derive(Clone, Copy)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        crate::ids::new_id().parse().ok().map(RequestId::new)
    }
}

/// The whole HTTP application: the API, and `pages` (the dashboard) beside it
/// under the same request ids, tracing and request metrics.
pub fn router(state: AppState, pages: Router) -> Router {
    let metrics = state.metrics.clone();
    let (routes, doc) = api_routes().split_for_parts();
    let doc = Arc::new(contract::complete(doc).to_string());
    let request_id = HeaderName::from_static("x-request-id");
    let trace = TraceLayer::new_for_http()
        .make_span_with(|req: &Request<_>| {
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map_or("-", MatchedPath::as_str)
                .to_owned();
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            let span = tracing::info_span!(
                "request",
                request_id = %id,
                method = %req.method(),
                route = %route,
                otel.name = tracing::field::Empty,
                otel.kind = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
            );
            if crate::telemetry::enabled() {
                span.record("otel.name", format!("{} {route}", req.method()));
                span.record("otel.kind", "server");
                crate::telemetry::continue_trace(&span, req.headers());
            }
            span
        })
        .on_request(())
        .on_response(|res: &Response<_>, latency: Duration, span: &Span| {
            if crate::telemetry::enabled() {
                span.record("http.response.status_code", res.status().as_u16());
            }
            tracing::info!(
                status = res.status().as_u16(),
                latency_ms = latency.as_secs_f64() * 1000.0,
                "response"
            );
        });
    routes
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { ([("content-type", "application/json")], (*doc).clone()) }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .with_state(state)
        .merge(pages)
        .layer(axum::middleware::from_fn(refuse_nul_in_url))
        // `layer` (not `route_layer`): it wraps each route after routing,
        // where the matched template is known, and the fallback too.
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            http_metrics::track,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(trace)
        .layer(SetRequestIdLayer::new(request_id, NewRequestId))
}

/// Refuses a URL whose path or query holds an encoded NUL (`%00`): no id or
/// filter contains one, and PostgreSQL cannot compare text with it, so both
/// stores answer the same 400 instead of one of them failing.
async fn refuse_nul_in_url(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let uri = req.uri();
    let has_nul = |s: &str| {
        s.as_bytes()
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"%00"))
    };
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        return ApiError::bad_request("URLs must not contain the NUL character (%00)")
            .into_response();
    }
    next.run(req).await
}
