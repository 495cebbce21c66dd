//! Logging in with an API key, and out.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::form::Form;
use super::session::{self, Current};
use super::view::Chrome;
use super::{Dashboard, domain_error, render};

#[derive(Template)]
#[template(path = "dashboard/login.html")]
struct LoginPage {
    chrome: Chrome,
    next: String,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Where to go after login: a dashboard page, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/dashboard/")
                && !n.starts_with("/dashboard/login")
                && !n.contains("//")
                && !n.contains('\\')
                && n.chars().all(|c| !c.is_control()) =>
        {
            n.to_owned()
        }
        _ => "/dashboard/webhooks".to_owned(),
    }
}

pub async fn login_page(
    State(state): State<Dashboard>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    // Already logged in: straight on.
    if let Some(token) = session::cookie_token(&headers)
        && state.sessions.is_live(token).await
    {
        return Redirect::to(&safe_next(q.next.as_deref())).into_response();
    }
    render(
        StatusCode::OK,
        &LoginPage {
            chrome: Chrome::anonymous(),
            next: safe_next(q.next.as_deref()),
            error: None,
        },
    )
}

pub async fn login(State(state): State<Dashboard>, headers: HeaderMap, form: Form) -> Response {
    let next = safe_next(form.get("next"));
    let key = form.get("api_key").unwrap_or("").trim();
    let account = match state
        .app
        .keys
        .authenticate(state.app.notifly.store().as_ref(), key)
        .await
    {
        Ok(account) => account,
        Err(e) => return domain_error(e),
    };
    let Some(account) = account else {
        let error = if key.is_empty() {
            "Enter an API key."
        } else {
            "That API key is not valid. Check that you copied all of it (it starts with nfly_sk_)."
        };
        return render(
            StatusCode::UNAUTHORIZED,
            &LoginPage {
                chrome: Chrome::anonymous(),
                next,
                error: Some(error.to_owned()),
            },
        );
    };
    let token = match state.sessions.create(&account.id).await {
        Ok(token) => token,
        Err(e) => return domain_error(e),
    };
    let secure = session::is_https(&state, &headers);
    (
        [(
            header::SET_COOKIE,
            session::set_cookie(Some(&token), secure),
        )],
        Redirect::to(&next),
    )
        .into_response()
}

pub async fn logout(
    State(state): State<Dashboard>,
    headers: HeaderMap,
    current: Current,
    form: Form,
) -> Response {
    if let Some(refused) = form.csrf_refusal(&current) {
        return refused;
    }
    if let Err(e) = state.sessions.remove(&current).await {
        return domain_error(e);
    }
    let secure = session::is_https(&state, &headers);
    (
        [(header::SET_COOKIE, session::set_cookie(None, secure))],
        Redirect::to("/dashboard/login"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dashboard_pages_are_followed_after_login() {
        assert_eq!(
            safe_next(Some("/dashboard/webhooks/abc?status=failed")),
            "/dashboard/webhooks/abc?status=failed"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/dashboard//evil.example",
            "/dashboard/login",
            "/v1/webhooks",
            "/dashboard/\\evil",
        ] {
            assert_eq!(safe_next(Some(bad)), "/dashboard/webhooks", "{bad}");
        }
        assert_eq!(safe_next(None), "/dashboard/webhooks");
    }
}
