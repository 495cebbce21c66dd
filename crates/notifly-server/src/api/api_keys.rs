//! `/v1/api-keys`: an account's API keys, created, listed and revoked.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, JsonBody};
use super::{AppState, List};
use crate::domain::accounts::{ApiKey, CreateApiKey};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(revoke_api_key))
}

/// List the account's API keys, oldest first (at most 100: all of them,
/// `has_more` is always `false`). Never the keys themselves.
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys",
    security(("api_key" = [])),
    responses((status = 200, body = List<ApiKey>), (status = 401, body = ErrorBody)))]
async fn list_api_keys(
    State(s): State<AppState>,
    auth: Auth,
) -> Result<Json<List<ApiKey>>, ApiError> {
    Ok(Json(List {
        has_more: false,
        data: s.notifly.api_keys(&auth.account_id).await?,
    }))
}

/// Create an API key. The response carries the `key`, shown this once:
/// only its hash is stored. An account holds at most 100 keys (409 beyond).
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = CreateApiKey,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response (without the key) for a retried request")),
    security(("api_key" = [])),
    responses((status = 201, body = ApiKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_api_key(
    State(s): State<AppState>,
    auth: Auth,
    body: JsonBody<CreateApiKey>,
) -> Result<(StatusCode, Json<ApiKey>), ApiError> {
    let key = s
        .notifly
        .create_api_key(&auth.account_id, body.value, body.idempotency.as_ref())
        .await?;
    Ok((StatusCode::CREATED, Json(key)))
}

/// Revoke an API key: within a second every node refuses it with 401, and
/// the dashboard sessions opened with it end. The account's last key
/// cannot be revoked (409).
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = ApiKey), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn revoke_api_key(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<ApiKey>, ApiError> {
    Ok(Json(s.notifly.revoke_api_key(&auth.account_id, &id).await?))
}
