//! `/v1/deliveries`: one delivery with its attempts, and manual retry.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::Auth;
use crate::domain::deliveries::{Delivery, DeliveryDetail};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_delivery))
        .routes(routes!(retry_delivery))
}

/// Get a delivery with every attempt: request headers and body, response
/// status, headers and (truncated) body, duration, error.
#[utoipa::path(get, path = "/v1/deliveries/{id}", tag = "deliveries", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = DeliveryDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_delivery(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<DeliveryDetail>, ApiError> {
    Ok(Json(s.notifly.delivery(&auth.account_id, &id).await?))
}

/// Send a delivery again now, with a fresh retry schedule.
#[utoipa::path(post, path = "/v1/deliveries/{id}/retry", tag = "deliveries", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 202, body = Delivery), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn retry_delivery(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Delivery>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(s.notifly.retry_delivery(&auth.account_id, &id).await?),
    ))
}
