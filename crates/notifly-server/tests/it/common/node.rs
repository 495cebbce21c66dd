//! `tests/node`: the Node.js scripts some tests drive (the webhook verifier,
//! the browser tests), with the npm packages its package-lock.json pins.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `tests/node`, with its npm packages installed (by `npm ci`, the first
/// time a test needs them), so that `cargo test` alone sets up a fresh
/// machine. Fails the test, with the reason, if that is not possible.
///
/// The tests that need it run on parallel threads of one process, and two
/// `npm ci` at once in one directory delete each other's `node_modules`: the
/// first caller installs and the others wait for it.
pub fn dir() -> PathBuf {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    INSTALLED.get_or_init(|| install(&dir));
    dir
}

/// Runs `npm ci` in `dir` unless every package is there already.
fn install(dir: &Path) {
    let packages = ["playwright-core", "standardwebhooks"];
    if packages.iter().all(|p| {
        dir.join("node_modules")
            .join(p)
            .join("package.json")
            .exists()
    }) {
        return;
    }
    let out = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `npm ci` in {} ({e}): these tests need Node.js 18 or later with npm on PATH",
                dir.display()
            )
        });
    assert!(
        out.status.success(),
        "`npm ci` in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
