//! Dashboard sessions: who is logged in, their CSRF token, and one-shot
//! messages ("flash") shown after a redirect.
//!
//! A session is created by logging in with an API key. The browser holds a
//! random token in an `HttpOnly; SameSite=Strict; Path=/dashboard` cookie
//! (`Secure` over https); the database keeps only the token's SHA-256, so a
//! leaked session table does not yield usable cookies. Sessions are rows of
//! the shared database, kept by the domain
//! ([`crate::domain::sessions`]): any node behind a load balancer serves any
//! session, and a restart logs nobody out. A session ends after 8 hours
//! unused, 7 days after login, or on logout. Page views only read, except to
//! record a use at most once a minute and to take a waiting message.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq;

use super::{Dashboard, domain_error};
use crate::domain::sessions::SessionFlash;
use crate::domain::{DomainResult, Notifly};

/// The session cookie's name.
pub const COOKIE: &str = "notifly_session";

/// A message for the next page the person sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    /// `ok` or `error`: how it is shown.
    pub kind: &'static str,
    pub message: String,
}

impl Flash {
    pub fn ok(message: impl Into<String>) -> Self {
        Flash {
            kind: "ok",
            message: message.into(),
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Flash {
            kind: "error",
            message: message.into(),
        }
    }

    /// A message as stored; any kind but `error` shows as `ok`.
    fn from_stored(stored: SessionFlash) -> Self {
        match stored.kind.as_str() {
            "error" => Flash::error(stored.message),
            _ => Flash::ok(stored.message),
        }
    }
}

/// The dashboard's handle on sessions, which live in the database.
#[derive(Debug, Clone)]
pub struct Sessions {
    notifly: Notifly,
}

impl Sessions {
    pub fn new(notifly: Notifly) -> Self {
        Sessions { notifly }
    }

    /// Starts a session for an account; returns the cookie token.
    pub async fn create(&self, account_id: &str, key_id: &str) -> DomainResult<String> {
        self.notifly.start_session(account_id, key_id).await
    }

    /// The session of a cookie token, if it is live; takes its flash.
    async fn touch(&self, token: &str) -> DomainResult<Option<Current>> {
        Ok(self.notifly.session(token).await?.map(|s| Current {
            key: s.token_hash,
            account_id: s.account_id,
            account_name: s.account_name,
            csrf: s.csrf,
            key_id: s.key_id,
            flash: s.flash.map(Flash::from_stored),
        }))
    }

    /// Whether a cookie token names a live session (without using it). A
    /// database that cannot answer counts as no.
    pub async fn is_live(&self, token: &str) -> bool {
        match self.notifly.session_is_live(token).await {
            Ok(live) => live,
            Err(e) => {
                tracing::warn!(error = ?e, "could not look a dashboard session up");
                false
            }
        }
    }

    /// Leaves a message for the session's next page. The action it reports
    /// is already done, so a failure to store it is logged, not answered.
    pub async fn flash(&self, current: &Current, flash: Flash) {
        let stored = SessionFlash {
            kind: flash.kind.to_owned(),
            message: flash.message,
        };
        if let Err(e) = self
            .notifly
            .set_session_flash(&current.account_id, &current.key, &stored)
            .await
        {
            tracing::warn!(error = ?e, "could not store a dashboard message");
        }
    }

    /// Ends a session.
    pub async fn remove(&self, current: &Current) -> DomainResult<()> {
        self.notifly
            .end_session(&current.account_id, &current.key)
            .await
    }
}

/// The logged-in session of a request. Extracting it from a request without
/// one redirects to the login page.
#[derive(Clone)]
pub struct Current {
    key: String,
    pub account_id: String,
    pub account_name: String,
    pub csrf: String,
    /// The API key the session was opened with, if known.
    pub key_id: Option<String>,
    /// The message left by the previous request, shown once.
    pub flash: Option<Flash>,
}

impl std::fmt::Debug for Current {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Current")
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

impl Current {
    /// Whether `token` (from a submitted form) is this session's CSRF token.
    pub fn csrf_ok(&self, token: Option<&str>) -> bool {
        token.is_some_and(|t| bool::from(t.as_bytes().ct_eq(self.csrf.as_bytes())))
    }
}

/// The session token in a request's cookies.
pub fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// Whether the request came over https (directly per the configuration, or
/// through a proxy that says so).
pub fn is_https(state: &Dashboard, headers: &HeaderMap) -> bool {
    state.secure_cookies
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` value that stores `token`, or clears the cookie for `None`.
pub fn set_cookie(token: Option<&str>, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let value = match token {
        Some(t) => format!("{COOKIE}={t}; Path=/dashboard; HttpOnly; SameSite=Strict{secure}"),
        None => format!("{COOKIE}=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl FromRequestParts<Dashboard> for Current {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Dashboard) -> Result<Self, Response> {
        if let Some(token) = cookie_token(&parts.headers) {
            match state.sessions.touch(token).await {
                Ok(Some(current)) => return Ok(current),
                Ok(None) => {}
                // The database is down: say so, rather than ask for a login
                // that would fail too.
                Err(e) => return Err(domain_error(e)),
            }
        }
        // Back to where the person was going after login, for page reads.
        let target = if parts.method == axum::http::Method::GET {
            // Inside the nested router the URI lacks `/dashboard`.
            let uri = parts
                .extensions
                .get::<axum::extract::OriginalUri>()
                .map_or(&parts.uri, |o| &o.0);
            let path = uri
                .path_and_query()
                .map_or("/dashboard/webhooks", |p| p.as_str());
            format!("/dashboard/login?next={}", super::view::urlencode(path))
        } else {
            "/dashboard/login".to_owned()
        };
        Err(Redirect::to(&target).into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_session_csrf_token_passes() {
        let current = Current {
            key: "hash".into(),
            account_id: "acct".into(),
            account_name: "default".into(),
            csrf: "token".into(),
            key_id: None,
            flash: None,
        };
        assert!(current.csrf_ok(Some("token")));
        assert!(!current.csrf_ok(Some("nope")));
        assert!(!current.csrf_ok(Some("")));
        assert!(!current.csrf_ok(None));
        assert!(!format!("{current:?}").contains("token"));
    }

    #[test]
    fn stored_messages_keep_their_kind() {
        let stored = |kind: &str| SessionFlash {
            kind: kind.into(),
            message: "m".into(),
        };
        assert_eq!(Flash::from_stored(stored("error")), Flash::error("m"));
        assert_eq!(Flash::from_stored(stored("ok")), Flash::ok("m"));
        assert_eq!(Flash::from_stored(stored("<script>")), Flash::ok("m"));
    }

    #[test]
    fn the_cookie_is_read_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; notifly_session=tok; b=2"),
        );
        assert_eq!(cookie_token(&h), Some("tok"));
        let c = set_cookie(Some("tok"), true);
        let c = c.to_str().unwrap();
        for part in ["HttpOnly", "SameSite=Strict", "Path=/dashboard", "Secure"] {
            assert!(c.contains(part), "{c}");
        }
        assert!(
            !set_cookie(Some("tok"), false)
                .to_str()
                .unwrap()
                .contains("Secure")
        );
    }
}
