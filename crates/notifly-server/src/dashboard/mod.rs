//! The dashboard: "API settings → Webhooks", server-rendered HTML at
//! `/dashboard`.
//!
//! Every page and form calls the same [`Notifly`](crate::domain::Notifly)
//! methods as the REST handlers in `api/`; nothing here reads or writes the
//! store directly. A person logs in with an API key (checked by the API's own
//! [`KeyCache`](crate::domain::accounts::KeyCache)) and gets a server-side
//! session ([`session`]); every form that changes something carries the
//! session's CSRF token. Templates (askama, in `templates/dashboard/`) escape
//! everything they print; the CSS and the small script are compiled into the
//! binary and served from `/dashboard/assets/`, and every response carries a
//! strict Content-Security-Policy. Every action works without JavaScript.
//!
//! Beside it, and public, the API reference at `/docs` ([`reference`]).

mod api_keys;
mod auth;
mod event_types;
mod events;
mod form;
pub mod reference;
mod session;
mod view;
mod webhooks;

use askama::Template;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::api::AppState;
use crate::domain::DomainError;
pub use session::Sessions;

/// What the dashboard's handlers reach.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// The API's state: the same service, key cache and limits.
    pub app: AppState,
    /// Logged-in sessions (in the database, shared by every node).
    pub sessions: Sessions,
    /// Whether cookies get the `Secure` attribute: the server's public URL
    /// is `https://`. A request forwarded as https by a proxy
    /// (`X-Forwarded-Proto: https`) gets it too.
    pub secure_cookies: bool,
    /// Failed logins by client address, to refuse guessing.
    pub logins: std::sync::Arc<auth::LoginThrottle>,
}

/// The policy every dashboard response carries: only this origin's
/// stylesheet and script, no inline code, no framing, forms only to here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const APP_CSS: &str = include_str!("assets/app.css");
const APP_JS: &str = include_str!("assets/app.js");
const FAVICON: &str = include_str!("assets/favicon.svg");

/// The dashboard's routes, under `/dashboard`, and the API reference's,
/// under `/docs`.
pub fn router(state: Dashboard) -> Router {
    let limit = axum::extract::DefaultBodyLimit::max(state.app.limits.max_body_bytes);
    let pages = Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard/webhooks") }))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/webhooks/new", get(webhooks::new_form))
        .route("/webhooks/{id}", get(webhooks::show))
        .route(
            "/webhooks/{id}/edit",
            get(webhooks::edit_form).post(webhooks::update),
        )
        .route("/webhooks/{id}/enabled", post(webhooks::set_enabled))
        .route("/webhooks/{id}/rotate", post(webhooks::rotate))
        .route("/webhooks/{id}/test", post(webhooks::send_test))
        .route("/webhooks/{id}/recover", post(webhooks::recover))
        .route("/webhooks/{id}/replay", post(webhooks::replay))
        .route(
            "/webhooks/{id}/replays/{replay_id}/cancel",
            post(webhooks::cancel_replay),
        )
        .route(
            "/webhooks/{id}/delete",
            get(webhooks::delete_page).post(webhooks::delete),
        )
        .route("/deliveries/{id}", get(webhooks::delivery))
        .route("/deliveries/{id}/retry", post(webhooks::retry))
        .route("/events", get(events::list))
        .route("/event-types", get(event_types::page))
        .route("/api-keys", get(api_keys::list).post(api_keys::create))
        .route("/api-keys/{id}/revoke", post(api_keys::revoke))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .route("/assets/favicon.svg", get(favicon))
        .fallback(|| async { not_found() })
        .method_not_allowed_fallback(|| async {
            page_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "This page cannot be used that way.",
            )
        })
        .layer(limit)
        .layer(axum::middleware::from_fn(protect))
        .with_state(state);
    Router::new()
        .nest("/dashboard", pages)
        .merge(reference::router())
}

/// Headers on every dashboard response, and a same-origin check on every
/// `POST` (on top of the CSRF token): a cross-site form post is refused
/// before any handler runs.
async fn protect(req: Request, next: Next) -> Response {
    if req.method() == Method::POST && !same_origin(&req) {
        return page_error(
            StatusCode::FORBIDDEN,
            "This form was sent from another site, so it was refused.",
        );
    }
    let mut res = next.run(req).await;
    security_headers(res.headers_mut(), CONTENT_SECURITY_POLICY);
    res
}

/// The headers every page of this server carries, with `csp` as its
/// Content-Security-Policy; `Cache-Control: no-store` unless the handler
/// chose otherwise.
pub(crate) fn security_headers(h: &mut HeaderMap, csp: &'static str) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

/// Whether a request comes from a page of this server. Browsers say where
/// a request comes from in `Sec-Fetch-Site`, and in `Origin`, which is
/// `null` under this dashboard's `Referrer-Policy: no-referrer`; a request
/// naming another site in either is refused. Clients that send neither
/// (not browsers) still need the session's CSRF token for any change.
fn same_origin(req: &Request) -> bool {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if origin == "null" {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        APP_CSS,
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        APP_JS,
    )
}

async fn favicon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        FAVICON,
    )
}

/// Renders a template as a page with `status`.
pub(crate) fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a dashboard template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// A standalone error page.
#[derive(Template)]
#[template(path = "dashboard/error.html")]
struct ErrorPage<'a> {
    chrome: view::Chrome,
    title: &'a str,
    message: &'a str,
}

pub(crate) fn page_error(status: StatusCode, message: &str) -> Response {
    let page = ErrorPage {
        chrome: view::Chrome::anonymous(),
        title: status.canonical_reason().unwrap_or("Error"),
        message,
    };
    render(status, &page)
}

fn not_found() -> Response {
    page_error(StatusCode::NOT_FOUND, "There is no such page.")
}

/// A domain error as a page: the domain's message for what the person can
/// fix, nothing internal for a server fault.
pub(crate) fn domain_error(e: DomainError) -> Response {
    if e.is_storage_full() {
        tracing::debug!(error = ?e, "dashboard write refused: the storage is full");
        let mut page = page_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server's storage is full, so nothing was changed. Try again once an operator has freed space.",
        );
        crate::api::error::mark_storage_full(&mut page);
        return page;
    }
    let status = match &e {
        DomainError::BadRequest(_) => StatusCode::BAD_REQUEST,
        DomainError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        DomainError::NotFound { .. } => StatusCode::NOT_FOUND,
        DomainError::Conflict(_) => StatusCode::CONFLICT,
        DomainError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        DomainError::Store(s) if s.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
        DomainError::Store(_) | DomainError::Io(_) | DomainError::Sealed(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    if status.is_server_error() {
        tracing::error!(error = ?e, "dashboard request failed");
        return page_error(
            status,
            "Something went wrong on the server; nothing was changed. Try again.",
        );
    }
    page_error(status, &e.to_string())
}
