//! The one place that turns errors into HTTP responses.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::DomainError;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// `invalid_request` for a 4xx the caller can fix, `api_error` for a 5xx.
    #[serde(rename = "type")]
    #[schema(schema_with = kind_schema)]
    pub kind: &'static str,
    /// What went wrong, for a person.
    #[schema(example = "username must not be empty")]
    pub message: String,
}

/// The two values of `ErrorBody.type`.
fn kind_schema() -> utoipa::openapi::Object {
    crate::domain::validate::schema::one_of(&["invalid_request", "api_error"])
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// A write refused for want of storage space (see [`StorageFull`]).
    storage_full: bool,
}

/// Marks a response that refused a write because the server's storage is
/// full. The metrics middleware notes it (`/metrics`, `/healthz`, one log
/// line with where the storage is: `metrics::StorageWatch`).
#[derive(Debug, Clone, Copy)]
pub struct StorageFull;

/// What a client is told when the server's storage is full.
pub const STORAGE_FULL: &str = "the server's storage is full, so nothing was written; \
    retry later (with the same Idempotency-Key): writes resume once an operator frees space";

/// How long a client should wait before retrying a write refused for want
/// of space: freeing it takes a person.
const STORAGE_FULL_RETRY_AFTER: HeaderValue = HeaderValue::from_static("30");

/// Marks `response` as a write refused for want of storage space: a
/// `Retry-After` for a person's time, and the [`StorageFull`] mark.
pub(crate) fn mark_storage_full(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, STORAGE_FULL_RETRY_AFTER);
    response.extensions_mut().insert(StorageFull);
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            storage_full: false,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "missing or invalid API key: send `Authorization: Bearer <api key>`",
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        if e.is_storage_full() {
            // The cause and where the storage is are logged once, by the
            // metrics middleware that sees the mark.
            tracing::debug!(error = ?e, "write refused: the storage is full");
            return ApiError {
                storage_full: true,
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, STORAGE_FULL)
            };
        }
        let status = match &e {
            DomainError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DomainError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            DomainError::NotFound { .. } => StatusCode::NOT_FOUND,
            DomainError::Conflict(_) => StatusCode::CONFLICT,
            DomainError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            DomainError::Store(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            DomainError::Store(e) if e.is_invalid_text() => {
                return ApiError::bad_request(
                    "the request contains the NUL character (\\u0000 or %00), which cannot be stored",
                );
            }
            DomainError::Store(_) | DomainError::Io(_) | DomainError::Sealed(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(error = ?e, "request failed: the database is unavailable");
            return ApiError::new(
                status,
                "the database is unavailable; retry shortly (with the same Idempotency-Key, in case the write was applied)",
            );
        }
        if status.is_server_error() {
            // The cause goes to the log with its chain; the client gets no internals.
            tracing::error!(error = ?e, "request failed");
            return ApiError::new(status, "internal error; the request was not applied");
        }
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_server_error() {
            "api_error"
        } else {
            "invalid_request"
        };
        let mut response = (
            self.status,
            Json(ErrorBody {
                kind,
                message: self.message,
            }),
        )
            .into_response();
        if self.storage_full {
            mark_storage_full(&mut response);
        } else if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
