//! Extractors that turn requests into typed input or a clear 4xx.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use crate::domain::{Idempotency, validate};
use crate::ids;
use crate::store::{Cursor, Page};

/// The account that the request's API key belongs to.
#[derive(Debug, Clone)]
pub struct Auth {
    pub account_id: String,
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        let owner = state
            .keys
            .authenticate(state.notifly.store(), key)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Auth {
            account_id: owner.account.id,
        })
    }
}

/// A JSON body parsed into `T`, with the `Idempotency-Key` of a `POST`.
///
/// Rejections: 415 without `content-type: application/json`, 400 for
/// malformed JSON, 422 for JSON of the wrong shape (missing or unknown
/// fields, wrong types), 413 past the body limit.
#[derive(Debug)]
pub struct JsonBody<T> {
    pub value: T,
    pub idempotency: Option<Idempotency>,
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with `content-type: application/json`",
            ));
        }
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let headers = req.headers().clone();
        let bytes = read_body(req, state).await?;
        let idempotency = idempotency(&method, &path, &headers, &bytes)?;
        let value = parse_json(&bytes)?;
        Ok(JsonBody { value, idempotency })
    }
}

/// Reads the whole body, answering 413 past the configured limit.
pub async fn read_body(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body is larger than the limit of {} bytes",
                    state.limits.max_body_bytes
                ),
            )
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
        }
    })
}

/// Parses a JSON object, telling malformed JSON (400) from JSON of the wrong
/// shape (422). Only objects are accepted: serde would otherwise fill a struct
/// from an array, positionally.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let syntax = |e: serde_json::Error| ApiError::bad_request(format!("malformed JSON: {e}"));
    let shape = |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message);
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Malformed input stays a 400 even when it does not start with `{`.
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map_err(syntax)?;
        return Err(shape("the request body must be a JSON object".into()));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        use serde_json::error::Category;
        let field = e.path().to_string();
        let e = e.into_inner();
        match e.classify() {
            // serde stops at the first problem; a wrong type early in a
            // document that is also malformed is still malformed.
            Category::Data => match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Err(syntax_error) => syntax(syntax_error),
                // The path is `.` when the problem is the whole body
                // (a missing or unknown field).
                Ok(_) if field == "." => shape(format!("invalid request body: {e}")),
                Ok(_) => shape(format!("invalid request body: `{field}`: {e}")),
            },
            Category::Syntax | Category::Eof | Category::Io => syntax(e),
        }
    })?;
    deserializer.end().map_err(syntax)?;
    if has_nul_escape(bytes) {
        // Not storable as text by every database; no field has a use for it.
        return Err(shape(
            "strings in the request body must not contain the NUL character (\\u0000)".into(),
        ));
    }
    Ok(value)
}

/// Whether valid JSON `bytes` hold a `\u0000` escape (raw control characters
/// are not valid JSON, so this is the only way a NUL gets into a string).
fn has_nul_escape(bytes: &[u8]) -> bool {
    let mut backslashes = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\\' {
            backslashes += 1;
            continue;
        }
        // An odd run of backslashes before `u` makes an escape, not a literal `\`.
        if b == b'u' && backslashes % 2 == 1 && bytes[i + 1..].starts_with(b"0000") {
            return true;
        }
        backslashes = 0;
    }
    false
}

/// The `Idempotency-Key` of a `POST`, with the hash of what it came with.
pub fn idempotency(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<Idempotency>, ApiError> {
    if method != Method::POST {
        return Ok(None);
    }
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| validate::IDEMPOTENCY_KEY.accepts(k))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Idempotency-Key must be {}",
                validate::IDEMPOTENCY_KEY.rule
            ))
        })?;
    let mut hash = Sha256::new();
    hash.update(method.as_str());
    hash.update(b" ");
    hash.update(path);
    hash.update(b"\n");
    hash.update(body);
    Ok(Some(Idempotency {
        key: key.to_owned(),
        request_hash: hex::encode(hash.finalize()),
    }))
}

/// A query string parsed into `T`, or a 400 naming the bad parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::try_from_uri(&parts.uri)
            .map(|q| Query(q.0))
            .map_err(|e| {
                // The innermost cause names the parameter ("limit: invalid
                // digit found in string"); axum's own text would add a second
                // "Failed to deserialize query string" prefix.
                let mut cause: &dyn std::error::Error = &e;
                while let Some(inner) = cause.source() {
                    cause = inner;
                }
                ApiError::bad_request(format!("invalid query string: {cause}"))
            })
    }
}

/// How many items a page may hold.
pub static PAGE_LIMIT: validate::Int = validate::Int {
    min: 1,
    max: Some(100),
};

/// How many items a page holds when `limit` is not given.
pub const DEFAULT_PAGE_LIMIT: u32 = 10;

/// The pagination parameters every list takes (the document describes them
/// from the same rules: see [`super::contract`]).
pub fn page(
    kind: &str,
    limit: Option<u32>,
    starting_after: Option<String>,
    ending_before: Option<String>,
) -> Result<Page, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if PAGE_LIMIT.check("limit", limit.into()).is_err() {
        return Err(ApiError::bad_request(format!(
            "limit must be between {} and {}, not {limit}",
            PAGE_LIMIT.min,
            PAGE_LIMIT.max.unwrap_or(i64::MAX)
        )));
    }
    let cursor = match (starting_after, ending_before) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give starting_after or ending_before, not both",
            ));
        }
        (Some(id), None) => Some(("starting_after", Cursor::After(id))),
        (None, Some(id)) => Some(("ending_before", Cursor::Before(id))),
        (None, None) => None,
    };
    if let Some((field, Cursor::After(id) | Cursor::Before(id))) = &cursor
        && !validate::ID.accepts(id)
    {
        return Err(ApiError::bad_request(format!(
            "{field}: no {kind} with id `{}`",
            ids::printable(id)
        )));
    }
    Ok(Page {
        limit,
        cursor: cursor.map(|(_, c)| c),
    })
}
