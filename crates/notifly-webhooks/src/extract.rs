//! An axum extractor that yields a verified event (feature `axum`).
//!
//! Put a [`Webhook`] in your router's state (or make it reachable from the
//! state with [`FromRef`]), and take [`VerifiedEvent`] as a handler argument:
//! the handler runs only for requests that verify and parse, and others get
//! `400 Bad Request` (missing or malformed headers or body) or
//! `401 Unauthorized` (signature or timestamp) with a short plain-text reason.
//!
//! ```
//! # extern crate axum_minimal as axum;
//! use axum::{Router, http::StatusCode, routing::post};
//! use notifly_webhooks::{Event, VerifiedEvent, Webhook};
//!
//! async fn notifly(VerifiedEvent(event): VerifiedEvent) -> StatusCode {
//!     match event.event {
//!         Event::MessageCreated(message) => println!("new message: {}", message.message),
//!         Event::ContactDeleted(contact) => println!("{} is gone", contact.id),
//!         other => println!("ignoring {}", other.event_type()),
//!     }
//!     StatusCode::NO_CONTENT
//! }
//!
//! let webhook = Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! let app: Router = Router::new()
//!     .route("/webhooks/notifly", post(notifly))
//!     .with_state(webhook);
//! # Ok::<(), notifly_webhooks::InvalidSecret>(())
//! ```
//!
//! With a larger state, implement [`FromRef`] for [`Webhook`]:
//!
//! ```
//! # extern crate axum_minimal as axum;
//! use axum::extract::FromRef;
//! use notifly_webhooks::Webhook;
//!
//! #[derive(Clone)]
//! struct AppState {
//!     webhook: Webhook,
//!     // database pool, settings, …
//! }
//!
//! impl FromRef<AppState> for Webhook {
//!     fn from_ref(state: &AppState) -> Webhook {
//!         state.webhook.clone()
//!     }
//! }
//! ```

use std::fmt;

use axum_minimal::body::Bytes;
use axum_minimal::extract::rejection::BytesRejection;
use axum_minimal::extract::{FromRef, FromRequest, Request};
use axum_minimal::response::{IntoResponse, Response};
use http::StatusCode;

use crate::{Webhook, WebhookError, WebhookEvent};

/// A webhook request whose signature verified and whose body parsed.
///
/// Extracting it reads the whole body (within axum's body limit) and verifies
/// it with the [`Webhook`] taken from the router state through [`FromRef`],
/// as [`Webhook::verify`] does. It must be the last extractor of a handler.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedEvent(pub WebhookEvent);

impl<S> FromRequest<S> for VerifiedEvent
where
    Webhook: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = WebhookRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let webhook = Webhook::from_ref(state);
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(WebhookRejection::Body)?;
        Ok(VerifiedEvent(webhook.verify(&headers, &body)?))
    }
}

/// Why [`VerifiedEvent`] refused a request. As a response it is the status
/// and a short plain-text reason.
#[derive(Debug)]
#[non_exhaustive]
pub enum WebhookRejection {
    /// The body could not be read (for example it exceeds the body limit).
    /// Answered as axum answers it.
    Body(BytesRejection),
    /// The request did not verify or did not parse.
    Webhook(WebhookError),
}

impl WebhookRejection {
    /// The HTTP status of the response.
    pub fn status(&self) -> StatusCode {
        match self {
            WebhookRejection::Body(r) => r.status(),
            WebhookRejection::Webhook(e) => e.status_code(),
        }
    }
}

impl From<WebhookError> for WebhookRejection {
    fn from(e: WebhookError) -> Self {
        WebhookRejection::Webhook(e)
    }
}

impl fmt::Display for WebhookRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebhookRejection::Body(r) => fmt::Display::fmt(r, f),
            WebhookRejection::Webhook(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for WebhookRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WebhookRejection::Body(r) => Some(r),
            WebhookRejection::Webhook(e) => Some(e),
        }
    }
}

impl IntoResponse for WebhookRejection {
    fn into_response(self) -> Response {
        match self {
            WebhookRejection::Body(r) => r.into_response(),
            WebhookRejection::Webhook(e) => e.into_response(),
        }
    }
}

/// `400` or `401` (see [`WebhookError::status_code`]) with the error's
/// message as a plain-text body, for handlers that call
/// [`Webhook::verify`] themselves.
impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        (self.status_code(), self.to_string()).into_response()
    }
}
