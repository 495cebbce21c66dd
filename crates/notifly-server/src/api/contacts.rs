//! `/v1/contacts`

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
use crate::domain::contacts::{CreateContact, UpdateContact};
use crate::store::Contact;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_contacts, create_contact))
        .routes(routes!(get_contact, update_contact, delete_contact))
}

/// Query of `GET /v1/contacts`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListContacts {
    /// 1 to 100, default 10.
    limit: Option<u32>,
    /// A contact id: return the page after it.
    starting_after: Option<String>,
    /// A contact id: return the page before it.
    ending_before: Option<String>,
}

/// List contacts, newest first.
#[utoipa::path(get, path = "/v1/contacts", tag = "contacts", params(ListContacts),
    security(("api_key" = [])),
    responses((status = 200, body = List<Contact>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_contacts(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<ListContacts>,
) -> Result<Json<List<Contact>>, ApiError> {
    let page = page("contact", q.limit, q.starting_after, q.ending_before)?;
    Ok(Json(
        s.notifly.contacts(&auth.account_id, &page).await?.into(),
    ))
}

/// Create a contact. Emits `contact.created`.
#[utoipa::path(post, path = "/v1/contacts", tag = "contacts", request_body = CreateContact,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a retried request")),
    security(("api_key" = [])),
    responses((status = 201, body = Contact), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_contact(
    State(s): State<AppState>,
    auth: Auth,
    body: JsonBody<CreateContact>,
) -> Result<(StatusCode, Json<Contact>), ApiError> {
    let contact = s
        .notifly
        .create_contact(&auth.account_id, body.value, body.idempotency.as_ref())
        .await?;
    Ok((StatusCode::CREATED, Json(contact)))
}

/// Get a contact.
#[utoipa::path(get, path = "/v1/contacts/{id}", tag = "contacts", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = Contact), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_contact(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Contact>, ApiError> {
    Ok(Json(s.notifly.contact(&auth.account_id, &id).await?))
}

/// Update a contact: only the fields given change. Emits `contact.updated` if anything changed.
#[utoipa::path(put, path = "/v1/contacts/{id}", tag = "contacts", params(("id" = String, Path)),
    request_body = UpdateContact, security(("api_key" = [])),
    responses((status = 200, body = Contact), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_contact(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: JsonBody<UpdateContact>,
) -> Result<Json<Contact>, ApiError> {
    Ok(Json(
        s.notifly
            .update_contact(&auth.account_id, &id, body.value)
            .await?,
    ))
}

/// Delete a contact. Emits `contact.deleted` with the contact as it was.
#[utoipa::path(delete, path = "/v1/contacts/{id}", tag = "contacts", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = Contact), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn delete_contact(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Contact>, ApiError> {
    Ok(Json(s.notifly.delete_contact(&auth.account_id, &id).await?))
}
