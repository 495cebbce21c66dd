//! The account's API keys: listed, created (the key shown once, on the
//! response page itself, never stored in a message) and revoked.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::form::Form;
use super::session::{Current, Flash};
use super::view::{self, Chrome};
use super::{Dashboard, domain_error, render};
use crate::domain::DomainError;
use crate::domain::accounts::{ApiKey, CreateApiKey};
use crate::ids;

struct KeyRow {
    id: String,
    name: String,
    prefix: String,
    created: String,
    last_used: Option<(String, String)>,
    /// The key this session was opened with.
    current: bool,
}

struct NewKey {
    name: String,
    key: String,
}

#[derive(Template)]
#[template(path = "dashboard/api_keys.html")]
struct KeysPage {
    chrome: Chrome,
    rows: Vec<KeyRow>,
    created: Option<NewKey>,
    name: String,
    error: Option<String>,
}

async fn page(
    state: &Dashboard,
    current: &Current,
    status: StatusCode,
    created: Option<NewKey>,
    name: String,
    error: Option<String>,
) -> Response {
    let keys = match state.app.notifly.api_keys(&current.account_id).await {
        Ok(keys) => keys,
        Err(e) => return domain_error(e),
    };
    let now = ids::now();
    let rows = keys
        .into_iter()
        .map(|k: ApiKey| KeyRow {
            current: current.key_id.as_deref() == Some(k.id.as_str()),
            created: view::time(k.created_at),
            last_used: k.last_used_at.map(|t| (view::ago(t, now), view::time(t))),
            id: k.id,
            name: k.name,
            prefix: k.prefix,
        })
        .collect();
    render(
        status,
        &KeysPage {
            chrome: Chrome::of(current, "api-keys"),
            rows,
            created,
            name,
            error,
        },
    )
}

pub async fn list(State(state): State<Dashboard>, current: Current) -> Response {
    page(&state, &current, StatusCode::OK, None, String::new(), None).await
}

pub async fn create(State(state): State<Dashboard>, current: Current, form: Form) -> Response {
    if let Some(refused) = form.csrf_refusal(&current) {
        return refused;
    }
    let name = form.get("name").unwrap_or("").to_owned();
    let input = CreateApiKey { name: name.clone() };
    match state
        .app
        .notifly
        .create_api_key(&current.account_id, input, None)
        .await
    {
        Ok(key) => {
            let created = key.key.map(|k| NewKey {
                name: key.name,
                key: k,
            });
            // Not a redirect: the key is on this response alone.
            page(
                &state,
                &current,
                StatusCode::OK,
                created,
                String::new(),
                None,
            )
            .await
        }
        Err(DomainError::Invalid(m) | DomainError::Conflict(m)) => {
            page(
                &state,
                &current,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                name,
                Some(m),
            )
            .await
        }
        Err(e) => domain_error(e),
    }
}

pub async fn revoke(
    State(state): State<Dashboard>,
    current: Current,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    if let Some(refused) = form.csrf_refusal(&current) {
        return refused;
    }
    match state
        .app
        .notifly
        .revoke_api_key(&current.account_id, &id)
        .await
    {
        // This session's own key: the session ended with it.
        Ok(_) if current.key_id.as_deref() == Some(id.as_str()) => {
            Redirect::to("/dashboard/login").into_response()
        }
        Ok(key) => {
            state
                .sessions
                .flash(
                    &current,
                    Flash::ok(format!(
                        "Key “{}” ({}…) revoked: it no longer authenticates anything.",
                        key.name, key.prefix
                    )),
                )
                .await;
            Redirect::to("/dashboard/api-keys").into_response()
        }
        Err(DomainError::Conflict(m)) => {
            state.sessions.flash(&current, Flash::error(m)).await;
            Redirect::to("/dashboard/api-keys").into_response()
        }
        Err(e) => domain_error(e),
    }
}
