//! Dashboard sessions: who is logged in, their CSRF token, and one-shot
//! messages ("flash") shown after a redirect.
//!
//! A session is created by logging in with an API key. The browser holds a
//! random token in an `HttpOnly; SameSite=Strict; Path=/dashboard` cookie
//! (`Secure` over https); the server keeps only the token's SHA-256, so a
//! leaked session table does not yield usable cookies. Sessions live in this
//! process's memory: they end when the server restarts, and with several
//! nodes behind a load balancer a session is known only to the node that
//! created it (use sticky sessions, or log in again).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Dashboard;

/// The session cookie's name.
pub const COOKIE: &str = "notifly_session";
/// A session unused this long ends.
const IDLE: Duration = Duration::from_secs(8 * 60 * 60);
/// A session ends this long after login, used or not.
const LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Most sessions kept; past it the oldest are dropped.
const MAX_SESSIONS: usize = 10_000;

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
}

#[derive(Debug, Clone)]
struct Session {
    account_id: String,
    account_name: String,
    csrf: String,
    created: Instant,
    last_seen: Instant,
    flash: Option<Flash>,
}

/// The live sessions, by the SHA-256 of their token.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Sessions {
    /// Starts a session for an account; returns the cookie token.
    pub fn create(&self, account_id: &str, account_name: &str) -> String {
        let token = random_token();
        let now = Instant::now();
        let session = Session {
            account_id: account_id.to_owned(),
            account_name: account_name.to_owned(),
            csrf: random_token(),
            created: now,
            last_seen: now,
            flash: None,
        };
        if let Ok(mut map) = self.map.lock() {
            map.retain(|_, s| live(s, now));
            if map.len() >= MAX_SESSIONS {
                // Drop the least recently used tenth.
                let mut by_age: Vec<(Instant, String)> =
                    map.iter().map(|(k, s)| (s.last_seen, k.clone())).collect();
                by_age.sort();
                for (_, k) in by_age.into_iter().take(MAX_SESSIONS / 10) {
                    map.remove(&k);
                }
            }
            map.insert(hash(&token), session);
        }
        token
    }

    /// The session of a cookie token, if it is live; takes its flash.
    fn touch(&self, token: &str) -> Option<Current> {
        let key = hash(token);
        let now = Instant::now();
        let mut map = self.map.lock().ok()?;
        let session = map.get_mut(&key)?;
        if !live(session, now) {
            map.remove(&key);
            return None;
        }
        session.last_seen = now;
        Some(Current {
            key,
            account_id: session.account_id.clone(),
            account_name: session.account_name.clone(),
            csrf: session.csrf.clone(),
            flash: session.flash.take(),
        })
    }

    /// Whether a cookie token names a live session (without using it).
    pub fn is_live(&self, token: &str) -> bool {
        let now = Instant::now();
        self.map
            .lock()
            .is_ok_and(|map| map.get(&hash(token)).is_some_and(|s| live(s, now)))
    }

    /// Leaves a message for the session's next page.
    pub fn flash(&self, current: &Current, flash: Flash) {
        if let Ok(mut map) = self.map.lock()
            && let Some(s) = map.get_mut(&current.key)
        {
            s.flash = Some(flash);
        }
    }

    /// Ends a session.
    pub fn remove(&self, current: &Current) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(&current.key);
        }
    }
}

fn live(s: &Session, now: Instant) -> bool {
    now.duration_since(s.last_seen) < IDLE && now.duration_since(s.created) < LIFETIME
}

/// The logged-in session of a request. Extracting it from a request without
/// one redirects to the login page.
#[derive(Clone)]
pub struct Current {
    key: String,
    pub account_id: String,
    pub account_name: String,
    pub csrf: String,
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
        if let Some(current) = cookie_token(&parts.headers).and_then(|t| state.sessions.touch(t)) {
            return Ok(current);
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
    fn sessions_keep_only_hashes_and_flash_once() {
        let sessions = Sessions::default();
        let token = sessions.create("acct", "default");
        assert!(
            !sessions
                .map
                .lock()
                .unwrap()
                .keys()
                .any(|k| k.contains(&token))
        );
        let current = sessions.touch(&token).expect("a live session");
        assert_eq!(current.account_id, "acct");
        assert!(current.csrf_ok(Some(&current.csrf)));
        assert!(!current.csrf_ok(Some("nope")));
        assert!(!current.csrf_ok(None));
        sessions.flash(&current, Flash::ok("done"));
        assert_eq!(
            sessions.touch(&token).unwrap().flash,
            Some(Flash::ok("done"))
        );
        assert_eq!(sessions.touch(&token).unwrap().flash, None);
        sessions.remove(&current);
        assert!(sessions.touch(&token).is_none());
        assert!(sessions.touch("unknown").is_none());
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
