//! `/v1/messages`

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
use crate::domain::messages::{CreateMessage, Message, UpdateMessage};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_messages, create_message))
        .routes(routes!(get_message, update_message, delete_message))
}

/// Query of `GET /v1/messages`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListMessages {
    /// 1 to 100, default 10.
    limit: Option<u32>,
    /// A message id: return the page after it.
    starting_after: Option<String>,
    /// A message id: return the page before it.
    ending_before: Option<String>,
    /// Only messages of this conversation.
    conversation_id: Option<String>,
}

/// List messages, newest first.
#[utoipa::path(get, path = "/v1/messages", tag = "messages", params(ListMessages),
    security(("api_key" = [])),
    responses((status = 200, body = List<Message>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_messages(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<ListMessages>,
) -> Result<Json<List<Message>>, ApiError> {
    let page = page("message", q.limit, q.starting_after, q.ending_before)?;
    Ok(Json(
        s.notifly
            .messages(&auth.account_id, q.conversation_id.as_deref(), &page)
            .await?
            .into(),
    ))
}

/// Create a message. Emits `message.created`.
#[utoipa::path(post, path = "/v1/messages", tag = "messages", request_body = CreateMessage,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a retried request")),
    security(("api_key" = [])),
    responses((status = 201, body = Message), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_message(
    State(s): State<AppState>,
    auth: Auth,
    body: JsonBody<CreateMessage>,
) -> Result<(StatusCode, Json<Message>), ApiError> {
    let message = s
        .notifly
        .create_message(&auth.account_id, body.value, body.idempotency.as_ref())
        .await?;
    Ok((StatusCode::CREATED, Json(message)))
}

/// Get a message.
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = Message), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_message(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Message>, ApiError> {
    Ok(Json(s.notifly.message(&auth.account_id, &id).await?))
}

/// Update a message: text, `read_at` or reactions. Emits `message.updated` if anything changed.
#[utoipa::path(put, path = "/v1/messages/{id}", tag = "messages", params(("id" = String, Path)),
    request_body = UpdateMessage, security(("api_key" = [])),
    responses((status = 200, body = Message), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_message(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: JsonBody<UpdateMessage>,
) -> Result<Json<Message>, ApiError> {
    Ok(Json(
        s.notifly
            .update_message(&auth.account_id, &id, body.value)
            .await?,
    ))
}

/// Delete a message and its attachments. Emits `attachment.deleted` for each,
/// `conversation.updated` if it was pinned, then `message.deleted`.
#[utoipa::path(delete, path = "/v1/messages/{id}", tag = "messages", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = Message), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_message(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Message>, ApiError> {
    Ok(Json(s.notifly.delete_message(&auth.account_id, &id).await?))
}
