//! `/v1/webhooks`: endpoints, their secrets, test events, recovery and
//! replays.

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
use crate::domain::deliveries::{Delivery, DeliveryDetail, Recover, Recovered};
use crate::domain::replays::{CreateReplay, Replay};
use crate::domain::webhooks::{
    CreateWebhook, RotateSecret, TestEvent, UpdateWebhook, Webhook, WebhookCustomHeaders,
    WebhookSecret,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(get_secret))
        .routes(routes!(get_headers))
        .routes(routes!(rotate_secret))
        .routes(routes!(send_test))
        .routes(routes!(list_deliveries))
        .routes(routes!(recover))
        .routes(routes!(create_replay))
        .routes(routes!(get_replay, cancel_replay))
}

/// Query of `GET /v1/webhooks`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListWebhooks {
    /// 1 to 100, default 10.
    limit: Option<u32>,
    /// A webhook id: return the page after it.
    starting_after: Option<String>,
    /// A webhook id: return the page before it.
    ending_before: Option<String>,
}

/// List webhooks, newest first.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", params(ListWebhooks),
    security(("api_key" = [])),
    responses((status = 200, body = List<Webhook>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_webhooks(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<ListWebhooks>,
) -> Result<Json<List<Webhook>>, ApiError> {
    let page = page("webhook", q.limit, q.starting_after, q.ending_before)?;
    Ok(Json(
        s.notifly.webhooks(&auth.account_id, &page).await?.into(),
    ))
}

/// Register a webhook. The response carries its `secret`.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a retried request")),
    security(("api_key" = [])),
    responses((status = 201, body = Webhook), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_webhook(
    State(s): State<AppState>,
    auth: Auth,
    body: JsonBody<CreateWebhook>,
) -> Result<(StatusCode, Json<Webhook>), ApiError> {
    let webhook = s
        .notifly
        .create_webhook(&auth.account_id, body.value, body.idempotency.as_ref())
        .await?;
    Ok((StatusCode::CREATED, Json(webhook)))
}

/// Get a webhook (without its secret).
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = Webhook), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_webhook(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Webhook>, ApiError> {
    Ok(Json(s.notifly.webhook(&auth.account_id, &id).await?))
}

/// Update a webhook: name, URL, events, description, `enabled`, delivery
/// controls, custom headers.
#[utoipa::path(put, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    request_body = UpdateWebhook, security(("api_key" = [])),
    responses((status = 200, body = Webhook), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_webhook(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: JsonBody<UpdateWebhook>,
) -> Result<Json<Webhook>, ApiError> {
    Ok(Json(
        s.notifly
            .update_webhook(&auth.account_id, &id, body.value)
            .await?,
    ))
}

/// Delete a webhook; its pending deliveries are cancelled.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = Webhook), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_webhook(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Webhook>, ApiError> {
    Ok(Json(s.notifly.delete_webhook(&auth.account_id, &id).await?))
}

/// Get a webhook's signing secret(s).
#[utoipa::path(get, path = "/v1/webhooks/{id}/secret", tag = "webhooks", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = WebhookSecret), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_secret(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<WebhookSecret>, ApiError> {
    Ok(Json(s.notifly.webhook_secret(&auth.account_id, &id).await?))
}

/// Get a webhook's custom headers, values in clear (other answers mask them).
#[utoipa::path(get, path = "/v1/webhooks/{id}/headers", tag = "webhooks", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = WebhookCustomHeaders), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_headers(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<WebhookCustomHeaders>, ApiError> {
    Ok(Json(
        s.notifly.webhook_headers(&auth.account_id, &id).await?,
    ))
}

/// Rotate a webhook's secret. The old secret keeps signing during the overlap
/// window (default 24 h), so consumers can switch without missing a delivery.
#[utoipa::path(post, path = "/v1/webhooks/{id}/secret/rotate", tag = "webhooks", params(("id" = String, Path)),
    request_body(content = Option<RotateSecret>, description = "Optional: the overlap window"),
    security(("api_key" = [])),
    responses((status = 200, body = WebhookSecret), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn rotate_secret(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    req: axum::extract::Request,
) -> Result<Json<WebhookSecret>, ApiError> {
    // The body is optional: an empty POST (or a JSON `null`) rotates with
    // the default window.
    let bytes = super::extract::read_body(req, &s).await?;
    let text = std::str::from_utf8(&bytes).unwrap_or("-").trim();
    let input = if text.is_empty() || text == "null" {
        RotateSecret::default()
    } else {
        super::extract::parse_json::<RotateSecret>(&bytes)?
    };
    Ok(Json(
        s.notifly
            .rotate_webhook_secret(&auth.account_id, &id, input)
            .await?,
    ))
}

/// Send a sample event of a chosen type to this webhook only. Returns the
/// delivery; its attempts show the outcome.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks", params(("id" = String, Path)),
    request_body = TestEvent, security(("api_key" = [])),
    responses((status = 202, body = DeliveryDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn send_test(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: JsonBody<TestEvent>,
) -> Result<(StatusCode, Json<DeliveryDetail>), ApiError> {
    let delivery = s
        .notifly
        .send_test_event(&auth.account_id, &id, body.value)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(s.notifly.delivery(&auth.account_id, &delivery).await?),
    ))
}

/// Query of `GET /v1/webhooks/{id}/deliveries`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListDeliveries {
    /// 1 to 100, default 10.
    limit: Option<u32>,
    /// A delivery id: return the page after it.
    starting_after: Option<String>,
    /// A delivery id: return the page before it.
    ending_before: Option<String>,
    /// `pending`, `succeeded`, `failed` or `cancelled`.
    status: Option<String>,
}

/// List a webhook's deliveries, newest first.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "deliveries",
    params(("id" = String, Path), ListDeliveries), security(("api_key" = [])),
    responses((status = 200, body = List<Delivery>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn list_deliveries(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<ListDeliveries>,
) -> Result<Json<List<Delivery>>, ApiError> {
    let page = page("delivery", q.limit, q.starting_after, q.ending_before)?;
    Ok(Json(
        s.notifly
            .deliveries(&auth.account_id, &id, q.status.as_deref(), &page)
            .await?
            .into(),
    ))
}

/// Resend every failed delivery of this webhook created since a time.
#[utoipa::path(post, path = "/v1/webhooks/{id}/recover", tag = "deliveries", params(("id" = String, Path)),
    request_body = Recover, security(("api_key" = [])),
    responses((status = 202, body = Recovered), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn recover(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: JsonBody<Recover>,
) -> Result<(StatusCode, Json<Recovered>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(
            s.notifly
                .recover_webhook(&auth.account_id, &id, body.value)
                .await?,
        ),
    ))
}

/// Replay to this webhook every event of the account's log in a time window
/// that its event types and filter select, including events older than the
/// webhook, in log order: each a normal delivery with the event's own
/// `webhook-id` (so a receiver drops what it already has). A replay keeps
/// the webhook's rate limit, ordering and circuit, and its live events
/// never wait behind more than a few of its deliveries.
#[utoipa::path(post, path = "/v1/webhooks/{id}/replay", tag = "deliveries", params(("id" = String, Path)),
    request_body = CreateReplay, security(("api_key" = [])),
    responses((status = 202, body = Replay), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_replay(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: JsonBody<CreateReplay>,
) -> Result<(StatusCode, Json<Replay>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(
            s.notifly
                .create_replay(&auth.account_id, &id, body.value)
                .await?,
        ),
    ))
}

/// A replay and its progress.
#[utoipa::path(get, path = "/v1/webhooks/{id}/replays/{replay_id}", tag = "deliveries",
    params(("id" = String, Path), ("replay_id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = Replay), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_replay(
    State(s): State<AppState>,
    auth: Auth,
    Path((id, replay_id)): Path<(String, String)>,
) -> Result<Json<Replay>, ApiError> {
    Ok(Json(
        s.notifly.replay(&auth.account_id, &id, &replay_id).await?,
    ))
}

/// Cancel a replay in progress: it makes no more deliveries (those it made
/// go on). A replay that has ended is a conflict.
#[utoipa::path(delete, path = "/v1/webhooks/{id}/replays/{replay_id}", tag = "deliveries",
    params(("id" = String, Path), ("replay_id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = Replay), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn cancel_replay(
    State(s): State<AppState>,
    auth: Auth,
    Path((id, replay_id)): Path<(String, String)>,
) -> Result<Json<Replay>, ApiError> {
    Ok(Json(
        s.notifly
            .cancel_replay(&auth.account_id, &id, &replay_id)
            .await?,
    ))
}
