//! `/v1/events`: the account's event log.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, Query, page};
use super::{AppState, List};
use crate::domain::events::Event;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(get_event))
}

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListEvents {
    /// 1 to 100, default 10.
    limit: Option<u32>,
    /// An event id: return the page after it.
    starting_after: Option<String>,
    /// An event id: return the page before it.
    ending_before: Option<String>,
    /// Only events of this type, e.g. `message.created`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    event_type: Option<String>,
}

/// List the account's events, newest first.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(ListEvents),
    security(("api_key" = [])),
    responses((status = 200, body = List<Event>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_events(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<ListEvents>,
) -> Result<Json<List<Event>>, ApiError> {
    let page = page("event", q.limit, q.starting_after, q.ending_before)?;
    Ok(Json(
        s.notifly
            .events(&auth.account_id, q.event_type.as_deref(), &page)
            .await?
            .into(),
    ))
}

/// Get an event.
#[utoipa::path(get, path = "/v1/events/{id}", tag = "events", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = Event), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_event(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Event>, ApiError> {
    Ok(Json(s.notifly.event(&auth.account_id, &id).await?))
}
