//! `/v1/attachments`: multipart uploads, metadata and the bytes.

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, JsonBody, Query, idempotency, page};
use super::{AppState, List};
use crate::domain::attachments::{NewAttachment, UpdateAttachment};
use crate::store::Attachment;

pub fn router() -> OpenApiRouter<AppState> {
    // Uploads enforce the attachment limit themselves, instead of the JSON
    // body limit every other route has.
    let upload = OpenApiRouter::new()
        .routes(routes!(create_attachment))
        .layer(axum::extract::DefaultBodyLimit::disable());
    OpenApiRouter::new()
        .routes(routes!(list_attachments))
        .merge(upload)
        .routes(routes!(
            get_attachment,
            update_attachment,
            delete_attachment
        ))
        .routes(routes!(attachment_content))
}

/// Query of `GET /v1/attachments`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListAttachments {
    /// 1 to 100, default 10.
    limit: Option<u32>,
    /// An attachment id: return the page after it.
    starting_after: Option<String>,
    /// An attachment id: return the page before it.
    ending_before: Option<String>,
    /// Only attachments of this message.
    message_id: Option<String>,
}

/// The multipart form of `POST /v1/attachments`: exactly these two parts
/// (`Deserialize` only carries `deny_unknown_fields` into the schema, as
/// `additionalProperties: false`; the handler reads the parts itself).
#[derive(Debug, ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct AttachmentUpload {
    /// The message the file belongs to.
    #[schema(schema_with = crate::domain::validate::schema::id)]
    message_id: String,
    /// The file, with its file name and content type.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// List attachments, newest first.
#[utoipa::path(get, path = "/v1/attachments", tag = "attachments", params(ListAttachments),
    security(("api_key" = [])),
    responses((status = 200, body = List<Attachment>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_attachments(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<ListAttachments>,
) -> Result<Json<List<Attachment>>, ApiError> {
    let page = page("attachment", q.limit, q.starting_after, q.ending_before)?;
    Ok(Json(
        s.notifly
            .attachments(&auth.account_id, q.message_id.as_deref(), &page)
            .await?
            .into(),
    ))
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
}

/// Upload an attachment (`multipart/form-data` with `message_id` and `file`).
/// Emits `attachment.created` and `message.updated`.
#[utoipa::path(post, path = "/v1/attachments", tag = "attachments",
    request_body(content = AttachmentUpload, content_type = "multipart/form-data"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a retried request")),
    security(("api_key" = [])),
    responses((status = 201, body = Attachment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_attachment(
    State(s): State<AppState>,
    auth: Auth,
    req: Request,
) -> Result<(StatusCode, Json<Attachment>), ApiError> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if !is_multipart {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "upload attachments as `multipart/form-data` with the fields `message_id` and `file`",
        ));
    }
    let max = s.limits.max_attachment_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("attachments are limited to {max} bytes"),
        )
    };
    let (parts, body) = req.into_parts();
    // Room for the form's own framing beyond the file itself.
    let bytes = axum::body::to_bytes(body, max + 64 * 1024)
        .await
        .map_err(|_| too_large())?;
    let (method, path, headers) = (
        parts.method.clone(),
        parts.uri.path().to_owned(),
        parts.headers.clone(),
    );
    let mut form = Multipart::from_request(Request::from_parts(parts, Body::from(bytes)), &s)
        .await
        .map_err(|e| {
            ApiError::bad_request(format!("malformed multipart body: {}", e.body_text()))
        })?;

    let mut message_id = None;
    let mut file = None;
    while let Some(field) = form.next_field().await.map_err(|e| {
        ApiError::bad_request(format!("malformed multipart body: {}", e.body_text()))
    })? {
        match field.name() {
            Some("message_id") => {
                let text = field
                    .text()
                    .await
                    .map_err(|e| invalid(format!("message_id: {}", e.body_text())))?;
                message_id = Some(text);
            }
            Some("file") => {
                let filename = field.file_name().map(str::to_owned).ok_or_else(|| {
                    invalid(
                        "file: the part needs a file name (`filename=` in its Content-Disposition)",
                    )
                })?;
                let content_type = field.content_type().map(str::to_owned);
                let data = field
                    .bytes()
                    .await
                    .map_err(|e| ApiError::bad_request(format!("file: {}", e.body_text())))?;
                if data.len() > max {
                    return Err(too_large());
                }
                file = Some((filename, content_type, data));
            }
            other => {
                return Err(invalid(format!(
                    "unknown form field `{}`; expected `message_id` and `file`",
                    crate::ids::printable(other.unwrap_or(""))
                )));
            }
        }
    }
    let message_id = message_id.ok_or_else(|| invalid("message_id is required"))?;
    let (filename, file_type, data) = file.ok_or_else(|| invalid("file is required"))?;
    // A retried upload is re-encoded with a new multipart boundary: the
    // idempotency fingerprint is the form's content, not its raw bytes.
    let mut fingerprint = Vec::with_capacity(data.len() + 128);
    for part in [
        message_id.as_bytes(),
        filename.as_bytes(),
        file_type.as_deref().unwrap_or("").as_bytes(),
    ] {
        fingerprint.extend_from_slice(&(part.len() as u64).to_be_bytes());
        fingerprint.extend_from_slice(part);
    }
    fingerprint.extend_from_slice(&data);
    let idem = idempotency(&method, &path, &headers, &fingerprint)?;
    let attachment = s
        .notifly
        .create_attachment(
            &auth.account_id,
            NewAttachment {
                message_id,
                filename,
                file_type,
                bytes: data.to_vec(),
            },
            idem.as_ref(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(attachment)))
}

/// Get an attachment's metadata.
#[utoipa::path(get, path = "/v1/attachments/{id}", tag = "attachments", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = Attachment), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_attachment(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Attachment>, ApiError> {
    Ok(Json(s.notifly.attachment(&auth.account_id, &id).await?))
}

/// Download an attachment's bytes (served as a download, never rendered inline).
#[utoipa::path(get, path = "/v1/attachments/{id}/content", tag = "attachments", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, description = "The file, with its media type", content_type = "application/octet-stream"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn attachment_content(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (attachment, path) = s.notifly.attachment_file(&auth.account_id, &id).await?;
    let file = tokio::fs::File::open(&path).await.map_err(|e| {
        tracing::error!(attachment = %id, error = %e, "attachment file missing");
        ApiError::not_found(format!("the bytes of attachment `{id}` are not available"))
    })?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let safe_name: String = attachment
        .filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut response = body.into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&attachment.file_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(attachment.file_size),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe_name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    Ok(response)
}

/// Rename an attachment. Emits `attachment.updated` and `message.updated`.
#[utoipa::path(put, path = "/v1/attachments/{id}", tag = "attachments", params(("id" = String, Path)),
    request_body = UpdateAttachment, security(("api_key" = [])),
    responses((status = 200, body = Attachment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_attachment(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: JsonBody<UpdateAttachment>,
) -> Result<Json<Attachment>, ApiError> {
    Ok(Json(
        s.notifly
            .update_attachment(&auth.account_id, &id, body.value)
            .await?,
    ))
}

/// Delete an attachment. Emits `attachment.deleted` and `message.updated`.
#[utoipa::path(delete, path = "/v1/attachments/{id}", tag = "attachments", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = Attachment), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_attachment(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Attachment>, ApiError> {
    Ok(Json(
        s.notifly.delete_attachment(&auth.account_id, &id).await?,
    ))
}
