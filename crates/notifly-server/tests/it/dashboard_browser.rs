//! The dashboard in a real headless Chromium (Debian's `chromium` package),
//! driven by `tests/node/dashboard-e2e.js` through playwright-core: log in,
//! create a webhook through the form, trigger events, see their deliveries
//! appear, open an attempt, retry it, rotate the secret, at laptop and phone
//! widths. Screenshots of the main pages are saved to
//! `$NOTIFLY_SCREENSHOT_DIR` (default `target/dashboard-screenshots`).
//!
//! It needs Chromium, so it is `#[ignore]`d: a plain `cargo test` lists it as
//! ignored (not run) rather than passing it. `--include-ignored` runs it, and
//! then a missing browser is a failure.

use std::time::Duration;

use crate::common::browser;
use crate::common::delivery_helpers as helpers;
use crate::common::receiver;
use receiver::Receiver;

#[tokio::test]
#[ignore = "needs Chromium (apt-get install chromium, or NOTIFLY_CHROMIUM): run with --include-ignored"]
async fn the_dashboard_works_in_a_real_browser() {
    browser::require_chromium();

    // Retries a few seconds apart, so the retry and live refresh are visible.
    let server = helpers::server(|c| c.retry_schedule = "0s,2s".into()).await;
    let api = server.account("acme").await;
    let receiver = Receiver::start().await;
    let shots = browser::screenshot_dir();

    browser::run_e2e(
        "dashboard-e2e.js",
        &[
            &server.base,
            api.key.as_deref().unwrap(),
            &receiver.url("/webhooks/notifly"),
            shots.to_str().expect("a UTF-8 screenshot directory"),
        ],
        Duration::from_secs(240),
    )
    .await;
    // It really drove the server: deliveries reached the receiver, one retried.
    assert!(receiver.count() >= 3, "{} requests", receiver.count());
    for name in [
        "01-login",
        "04-create-errors",
        "05-webhook",
        "06-delivery",
        "09-events",
        "10-webhooks",
        "11-phone-webhooks",
    ] {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "no screenshot {name}"
        );
    }
}
