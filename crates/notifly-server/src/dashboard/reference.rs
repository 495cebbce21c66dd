//! The API reference at `/docs`: Redoc renders the server's own
//! `/openapi.json` in the browser.
//!
//! Redoc's standalone bundle is vendored at a pinned version in
//! `assets/redoc/`, with its licences and `update.sh`, which fetches it
//! again, checks it against the recorded sha256 and makes the one change the
//! vendored copy has (the side menu's Redocly logo, which Redoc loads from a
//! CDN, is left out). It is compiled into the binary: the page loads nothing
//! from another host. The page has no inline script; it loads the bundle and
//! `reference.js`, our own few lines that start Redoc. Like `/openapi.json`,
//! the reference is public: no login.

use askama::Template;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The vendored Redoc's version, as pinned by `assets/redoc/update.sh`
/// (a test checks that the two agree).
macro_rules! redoc_version {
    () => {
        "2.5.4"
    };
}

/// The Redoc version served at `/docs`.
pub const REDOC_VERSION: &str = redoc_version!();

/// Where the bundle is served: its path names the version, so browsers may
/// keep it for a year and a new version is a new URL.
pub const REDOC_PATH: &str = concat!("/docs/redoc-", redoc_version!(), ".standalone.js");

/// The policy of the reference's responses. Relative to the dashboard's
/// ([`super::CONTENT_SECURITY_POLICY`]):
/// - `style-src` adds `'unsafe-inline'`: Redoc styles its components with
///   styled-components, which writes `<style>` elements at run time, and sets
///   a few inline `style` attributes; without it Redoc fails to render.
///   (Redoc's `nonce` option is no way out: the bundle writes styles before
///   it is read, and a nonce does not cover style attributes.) The page shows
///   nothing but the public API document, and `img-src` still allows this
///   origin only (and `data:`), so a style could not send anything elsewhere.
/// - `worker-src blob:` is added: Redoc's search runs in a Web Worker that
///   it starts from a `blob:` URL of code inside the (same-origin) bundle;
///   without it the search box finds nothing.
/// - `form-action 'none'` (the dashboard has `'self'`): the page has no form.
///
/// No font is fetched (`font-src` falls back to `'none'`): the theme in
/// `reference.js` names only fonts already on the reader's machine.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; worker-src blob:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

const REDOC_JS: &[u8] = include_bytes!("../../assets/redoc/redoc.standalone.js");
const REFERENCE_JS: &str = include_str!("assets/reference.js");

/// The page: Redoc's bundle and `reference.js`, and the element Redoc
/// renders into.
#[derive(Template)]
#[template(path = "dashboard/reference.html")]
struct Page {
    redoc_path: &'static str,
}

/// The reference's routes: `/docs`, its script and Redoc's bundle.
pub fn router() -> Router {
    Router::new()
        .route("/docs", get(page))
        .route("/docs/", get(|| async { Redirect::permanent("/docs") }))
        .route("/docs/reference.js", get(script))
        .route(REDOC_PATH, get(redoc))
        .layer(axum::middleware::map_response(|mut res: Response| async {
            super::security_headers(res.headers_mut(), CONTENT_SECURITY_POLICY);
            res
        }))
}

async fn page() -> impl IntoResponse {
    let page = Page {
        redoc_path: REDOC_PATH,
    };
    (
        [(header::CACHE_CONTROL, "no-cache")],
        super::render(StatusCode::OK, &page),
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        REFERENCE_JS,
    )
}

async fn redoc() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        REDOC_JS,
    )
}
