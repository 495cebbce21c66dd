//! Submitted HTML forms, and the CSRF check every state-changing one passes.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::Response;

use super::session::Current;
use super::{Dashboard, page_error};

/// An `application/x-www-form-urlencoded` body: its fields in order (a
/// field may repeat, as checkboxes do).
#[derive(Debug, Default)]
pub struct Form(pub Vec<(String, String)>);

impl Form {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// `None` when the form carries the session's CSRF token; otherwise the
    /// 403 page to answer with (and nothing may be written).
    pub fn csrf_refusal(&self, current: &Current) -> Option<Response> {
        if current.csrf_ok(self.get("csrf")) {
            None
        } else {
            Some(page_error(
                StatusCode::FORBIDDEN,
                "This form has expired or did not come from this dashboard, so nothing was changed. Go back, reload the page and try again.",
            ))
        }
    }
}

impl FromRequest<Dashboard> for Form {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Dashboard) -> Result<Self, Response> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(page_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Send this form from the dashboard page.",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| page_error(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large."))?;
        Ok(Form(
            form_urlencoded::parse(&bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }
}
