//! Logging in with an API key, and out; and the throttle that refuses a
//! client guessing keys.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{ConnectInfo, Query, State};
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

/// Failed logins a client may make in [`LOGIN_WINDOW`] before it is refused.
pub const LOGIN_FAILURES_ALLOWED: u32 = 10;
/// The window failed logins are counted in.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Most clients tracked; past it, windows that ended are dropped, and if
/// none has, the older half goes (an attacker with that many addresses is
/// not slowed by a per-address count anyway).
const LOGIN_TRACKED_MAX: usize = 10_000;

/// Counts failed logins per client address (this node's; each node counts
/// its own) in fixed windows. A client past [`LOGIN_FAILURES_ALLOWED`] is
/// refused, right key or not, until its window ends.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl LoginThrottle {
    /// How long `client` must wait, if it is refused now.
    fn refused(&self, client: IpAddr) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (since, count) = failures.get(&client)?;
        let left = LOGIN_WINDOW.checked_sub(since.elapsed())?;
        (*count >= LOGIN_FAILURES_ALLOWED).then_some(left)
    }

    fn failed(&self, client: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= LOGIN_TRACKED_MAX && !failures.contains_key(&client) {
            failures.retain(|_, (since, _)| since.elapsed() < LOGIN_WINDOW);
            if failures.len() >= LOGIN_TRACKED_MAX {
                let mut starts: Vec<Instant> = failures.values().map(|(s, _)| *s).collect();
                starts.sort_unstable();
                let cut = starts[starts.len() / 2];
                failures.retain(|_, (since, _)| *since > cut);
            }
        }
        let entry = failures.entry(client).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= LOGIN_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

pub async fn login(
    State(state): State<Dashboard>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Form,
) -> Response {
    let next = safe_next(form.get("next"));
    let client = peer.ip();
    if let Some(wait) = state.logins.refused(client) {
        let seconds = (wait.as_secs_f64().ceil() as u64).max(1);
        let mut page = render(
            StatusCode::TOO_MANY_REQUESTS,
            &LoginPage {
                chrome: Chrome::anonymous(),
                next,
                error: Some(format!(
                    "Too many failed logins from this address. Try again in {seconds} s."
                )),
            },
        );
        if let Ok(value) = header::HeaderValue::from_str(&seconds.to_string()) {
            page.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return page;
    }
    let key = form.get("api_key").unwrap_or("").trim();
    let account = match state
        .app
        .keys
        .authenticate(state.app.notifly.store(), key)
        .await
    {
        Ok(account) => account,
        Err(e) => return domain_error(e),
    };
    let Some(owner) = account else {
        state.logins.failed(client);
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
    let token = match state
        .sessions
        .create(&owner.account.id, &owner.key_id)
        .await
    {
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
