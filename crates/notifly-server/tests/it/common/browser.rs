//! Helpers shared by the real-browser tests (`dashboard_browser`,
//! `api_reference_browser`): where Chromium and the screenshots are, the
//! pinned npm packages, and running one of the `tests/node` scripts.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where Chromium is expected (override with `NOTIFLY_CHROMIUM`).
pub fn chromium() -> PathBuf {
    std::env::var_os("NOTIFLY_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Where screenshots go: `$NOTIFLY_SCREENSHOT_DIR`, else
/// `dashboard-screenshots` in the target directory.
pub fn screenshot_dir() -> PathBuf {
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

/// The path of Chromium, after checking that it is there.
pub fn require_chromium() -> PathBuf {
    let browser = chromium();
    assert!(
        browser.exists(),
        "no Chromium at {}: apt-get install chromium, or set NOTIFLY_CHROMIUM",
        browser.display()
    );
    browser
}

/// Runs `node tests/node/<script> <args>` against Chromium, within `limit`,
/// and fails unless it exits 0 and prints `e2e: passed`. Its output is
/// printed either way.
pub async fn run_e2e(script: &str, args: &[&str], limit: Duration) {
    let browser = require_chromium();
    let dir = super::node::dir();
    let shots = screenshot_dir();
    let run = tokio::process::Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .env("NOTIFLY_CHROMIUM", &browser)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(limit, run)
        .await
        .unwrap_or_else(|_| panic!("the browser test did not finish within {limit:?}"))
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
}
