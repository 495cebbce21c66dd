//! The API reference at `/docs` in a real headless Chromium (Debian's
//! `chromium` package), driven by `tests/node/api-reference-e2e.js` through
//! playwright-core: Redoc renders the server's `/openapi.json`, every tag the
//! document lists is in its navigation, its search works, and the page asks
//! no other host for anything and reports no CSP violation. Screenshots go
//! where the dashboard's do (`$NOTIFLY_SCREENSHOT_DIR`).
//!
//! It needs Chromium, so it is `#[ignore]`d: `--include-ignored` runs it, and
//! then a missing browser is a failure.

use std::time::Duration;

use crate::common::TestServer;
use crate::common::browser;

#[tokio::test]
#[ignore = "needs Chromium (apt-get install chromium, or NOTIFLY_CHROMIUM): run with --include-ignored"]
async fn the_api_reference_renders_every_tag_in_a_real_browser() {
    browser::require_chromium();
    let server = TestServer::start().await;
    let shots = browser::screenshot_dir();
    browser::run_e2e(
        "api-reference-e2e.js",
        &[
            &server.base,
            shots.to_str().expect("a UTF-8 screenshot directory"),
        ],
        Duration::from_secs(120),
    )
    .await;
    for name in [
        "api-reference",
        "api-reference-search",
        "api-reference-phone",
    ] {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "no screenshot {name}"
        );
    }
}
