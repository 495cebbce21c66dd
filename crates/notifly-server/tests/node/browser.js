// What the real-browser tests (dashboard-e2e.js, api-reference-e2e.js) share:
// launching the system's headless Chromium through playwright-core (which
// brings no browser of its own), checks, steps and screenshots.
"use strict";

const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

// Chromium from NOTIFLY_CHROMIUM (default /usr/bin/chromium), headless,
// with nothing of its own reaching the network.
function launch() {
  return chromium.launch({
    executablePath: process.env.NOTIFLY_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

function step(name) {
  console.log(`step: ${name}`);
}

function check(condition, message) {
  if (!condition) {
    throw new Error(`check failed: ${message}`);
  }
}

// A screenshot `<dir>/<name>.png`, of the whole page unless `fullPage` is
// false (then of the viewport).
async function shot(page, dir, name, fullPage = true) {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}.png`);
  await page.screenshot({ path: file, fullPage });
  console.log(`screenshot: ${file}`);
}

module.exports = { launch, step, check, shot };
