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
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/delivery_helpers.rs"]
mod helpers;
#[path = "common/receiver.rs"]
mod receiver;

use std::path::{Path, PathBuf};
use std::time::Duration;

use receiver::Receiver;

/// Where Chromium is expected (override with `NOTIFLY_CHROMIUM`).
fn chromium() -> PathBuf {
    std::env::var_os("NOTIFLY_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn screenshot_dir() -> PathBuf {
    std::env::var_os("NOTIFLY_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // CARGO_TARGET_DIR when set, else the workspace's target/.
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
            target.join("dashboard-screenshots")
        })
}

/// Installs the pinned npm packages if playwright-core is missing.
fn install_node_packages(node_dir: &Path) {
    if node_dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return;
    }
    let out = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(node_dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `npm ci` in {}: {e}", node_dir.display()));
    assert!(
        out.status.success(),
        "`npm ci` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
#[ignore = "needs Chromium (apt-get install chromium, or NOTIFLY_CHROMIUM): run with --include-ignored"]
async fn the_dashboard_works_in_a_real_browser() {
    let browser = chromium();
    assert!(
        browser.exists(),
        "no Chromium at {}: apt-get install chromium, or set NOTIFLY_CHROMIUM",
        browser.display()
    );
    let node_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    install_node_packages(&node_dir);

    // Retries a few seconds apart, so the retry and live refresh are visible.
    let server = helpers::server(|c| c.retry_schedule = "0s,2s".into()).await;
    let api = server.account("acme").await;
    let receiver = Receiver::start().await;
    let shots = screenshot_dir();

    let run = tokio::process::Command::new("node")
        .arg(node_dir.join("dashboard-e2e.js"))
        .arg(&server.base)
        .arg(api.key.as_deref().unwrap())
        .arg(receiver.url("/webhooks/notifly"))
        .arg(&shots)
        .env("NOTIFLY_CHROMIUM", &browser)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser test did not finish within 240 s")
        .expect("cannot run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success() && stdout.contains("e2e: passed"),
        "the browser test failed ({}); screenshots in {}:\n{stdout}\n{stderr}",
        out.status,
        shots.display()
    );
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
