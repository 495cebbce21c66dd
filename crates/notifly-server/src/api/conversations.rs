//! `/v1/conversations`

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
use crate::domain::conversations::{CreateConversation, UpdateConversation};
use crate::store::{Conversation, ConversationFilter};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_conversations, create_conversation))
        .routes(routes!(
            get_conversation,
            update_conversation,
            delete_conversation
        ))
}

/// Query of `GET /v1/conversations`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListConversations {
    /// 1 to 100, default 10.
    limit: Option<u32>,
    /// A conversation id: return the page after it.
    starting_after: Option<String>,
    /// A conversation id: return the page before it.
    ending_before: Option<String>,
    /// Only muted (`true`) or unmuted (`false`) conversations.
    muted: Option<bool>,
    /// Only archived (`true`) or unarchived (`false`) conversations.
    archived: Option<bool>,
    /// Only pinned (`true`) or unpinned (`false`) conversations.
    pinned: Option<bool>,
    /// Only the conversation of this group.
    group_id: Option<String>,
}

/// List conversations, newest first.
#[utoipa::path(get, path = "/v1/conversations", tag = "conversations", params(ListConversations),
    security(("api_key" = [])),
    responses((status = 200, body = List<Conversation>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_conversations(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<ListConversations>,
) -> Result<Json<List<Conversation>>, ApiError> {
    let page = page("conversation", q.limit, q.starting_after, q.ending_before)?;
    let filter = ConversationFilter {
        muted: q.muted,
        archived: q.archived,
        pinned: q.pinned,
        group_id: q.group_id,
    };
    Ok(Json(
        s.notifly
            .conversations(&auth.account_id, &filter, &page)
            .await?
            .into(),
    ))
}

/// Create a conversation with a contact or a group. Emits `conversation.created`
/// and `contact.updated` or `group.updated` (its `conversation_id` is set).
#[utoipa::path(post, path = "/v1/conversations", tag = "conversations", request_body = CreateConversation,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a retried request")),
    security(("api_key" = [])),
    responses((status = 201, body = Conversation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_conversation(
    State(s): State<AppState>,
    auth: Auth,
    body: JsonBody<CreateConversation>,
) -> Result<(StatusCode, Json<Conversation>), ApiError> {
    let conversation = s
        .notifly
        .create_conversation(&auth.account_id, body.value, body.idempotency.as_ref())
        .await?;
    Ok((StatusCode::CREATED, Json(conversation)))
}

/// Get a conversation.
#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "conversations", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = Conversation), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_conversation(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Conversation>, ApiError> {
    Ok(Json(s.notifly.conversation(&auth.account_id, &id).await?))
}

/// Update a conversation: only the fields given change. Emits `conversation.updated` if anything changed.
#[utoipa::path(put, path = "/v1/conversations/{id}", tag = "conversations", params(("id" = String, Path)),
    request_body = UpdateConversation, security(("api_key" = [])),
    responses((status = 200, body = Conversation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_conversation(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: JsonBody<UpdateConversation>,
) -> Result<Json<Conversation>, ApiError> {
    Ok(Json(
        s.notifly
            .update_conversation(&auth.account_id, &id, body.value)
            .await?,
    ))
}

/// Delete a conversation with its messages and their attachments. Emits
/// `message.deleted` and `attachment.deleted` for each, `contact.updated` or
/// `group.updated`, then `conversation.deleted`.
#[utoipa::path(delete, path = "/v1/conversations/{id}", tag = "conversations", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = Conversation), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_conversation(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Conversation>, ApiError> {
    Ok(Json(
        s.notifly.delete_conversation(&auth.account_id, &id).await?,
    ))
}
