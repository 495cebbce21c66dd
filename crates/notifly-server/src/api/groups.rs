//! `/v1/groups`

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, JsonBody, Query, page};
use super::{AppState, List};
use crate::domain::groups::{CreateGroup, Group, UpdateGroup};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_groups, create_group))
        .routes(routes!(get_group, update_group, delete_group))
}

/// Query of `GET /v1/groups`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListGroups {
    /// 1 to 100, default 10.
    limit: Option<u32>,
    /// A group id: return the page after it.
    starting_after: Option<String>,
    /// A group id: return the page before it.
    ending_before: Option<String>,
}

/// List groups, newest first.
#[utoipa::path(get, path = "/v1/groups", tag = "groups", params(ListGroups),
    security(("api_key" = [])),
    responses((status = 200, body = List<Group>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_groups(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<ListGroups>,
) -> Result<Json<List<Group>>, ApiError> {
    let page = page("group", q.limit, q.starting_after, q.ending_before)?;
    Ok(Json(
        s.notifly.groups(&auth.account_id, &page).await?.into(),
    ))
}

/// Create a group. Emits `group.created`.
#[utoipa::path(post, path = "/v1/groups", tag = "groups", request_body = CreateGroup,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a retried request")),
    security(("api_key" = [])),
    responses((status = 201, body = Group), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_group(
    State(s): State<AppState>,
    auth: Auth,
    body: JsonBody<CreateGroup>,
) -> Result<(StatusCode, Json<Group>), ApiError> {
    let group = s
        .notifly
        .create_group(&auth.account_id, body.value, body.idempotency.as_ref())
        .await?;
    Ok((StatusCode::CREATED, Json(group)))
}

/// Get a group.
#[utoipa::path(get, path = "/v1/groups/{id}", tag = "groups", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = Group), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_group(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Group>, ApiError> {
    Ok(Json(s.notifly.group(&auth.account_id, &id).await?))
}

/// Update a group: only the fields given change; `contacts` replaces the
/// member list. Emits `group.updated` if anything changed.
#[utoipa::path(put, path = "/v1/groups/{id}", tag = "groups", params(("id" = String, Path)),
    request_body = UpdateGroup, security(("api_key" = [])),
    responses((status = 200, body = Group), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_group(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: JsonBody<UpdateGroup>,
) -> Result<Json<Group>, ApiError> {
    Ok(Json(
        s.notifly
            .update_group(&auth.account_id, &id, body.value)
            .await?,
    ))
}

/// Delete a group and its conversation. Emits the conversation's cascade of
/// `*.deleted` events, then `group.deleted`.
#[utoipa::path(delete, path = "/v1/groups/{id}", tag = "groups", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = Group), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_group(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Group>, ApiError> {
    Ok(Json(s.notifly.delete_group(&auth.account_id, &id).await?))
}
