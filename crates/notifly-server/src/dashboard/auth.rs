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
/// Most clients tracked. Past it, windows that ended are dropped first,
/// then clients that are not refused; refused ones stay until their
/// window ends.
const LOGIN_TRACKED_MAX: usize = 10_000;

/// Counts login attempts per client (this node's; each node counts its
/// own) in fixed windows. An attempt is counted before the key is checked
/// and taken back if it succeeds, so parallel attempts cannot slip past
/// the count; a client with [`LOGIN_FAILURES_ALLOWED`] failures is refused,
/// right key or not, until its window ends. IPv6 clients are counted by
/// their /64, which one host usually holds whole.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// The address a client is counted under.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl LoginThrottle {
    /// Counts an attempt of `client`, or says how long it must wait.
    fn attempt(&self, client: IpAddr) -> Result<(), Duration> {
        let client = client_of(client);
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= LOGIN_TRACKED_MAX && !failures.contains_key(&client) {
            failures.retain(|_, (since, _)| since.elapsed() < LOGIN_WINDOW);
            if failures.len() >= LOGIN_TRACKED_MAX {
                failures.retain(|_, (_, count)| *count >= LOGIN_FAILURES_ALLOWED);
            }
        }
        let entry = failures.entry(client).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= LOGIN_WINDOW {
            *entry = (Instant::now(), 0);
        }
        if entry.1 >= LOGIN_FAILURES_ALLOWED {
            return Err(LOGIN_WINDOW.saturating_sub(entry.0.elapsed()));
        }
        entry.1 += 1;
        Ok(())
    }

    /// Takes back the attempt of a client that logged in.
    fn take_back(&self, client: IpAddr) {
        let client = client_of(client);
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = failures.get_mut(&client) {
            entry.1 = entry.1.saturating_sub(1);
        }
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
    if let Err(wait) = state.logins.attempt(client) {
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
        Err(e) => {
            // Not the client's failure: the attempt does not count.
            state.logins.take_back(client);
            return domain_error(e);
        }
    };
    let Some(owner) = account else {
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
    state.logins.take_back(client);
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
    fn the_throttle_counts_failures_per_client_and_ipv6_per_slash_64() {
        let throttle = LoginThrottle::default();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        // Successes are taken back.
        for _ in 0..20 {
            throttle.attempt(a).unwrap();
            throttle.take_back(a);
        }
        for _ in 0..LOGIN_FAILURES_ALLOWED {
            throttle.attempt(same_64).unwrap();
        }
        let wait = throttle.attempt(a).unwrap_err();
        assert!(wait <= LOGIN_WINDOW && wait > Duration::ZERO);
        assert!(throttle.attempt(other_64).is_ok());
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        for _ in 0..LOGIN_FAILURES_ALLOWED {
            throttle.attempt(v4).unwrap();
        }
        assert!(throttle.attempt(mapped).is_err());
    }

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
