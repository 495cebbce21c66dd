// End-to-end test of the API reference at /docs in a real headless Chromium:
// Redoc renders the server's /openapi.json, every tag of the document is in
// its navigation, its search works, and the page asks no other host for
// anything and reports no CSP violation or script error.
//
//   node api-reference-e2e.js <base_url> <screenshot_dir>
//
// Environment: NOTIFLY_CHROMIUM (default /usr/bin/chromium).
// Prints one line per step; exits 0 when every step passed, 1 otherwise
// (after a screenshot of the page, api-reference-failure.png). Redoc's page
// is tens of thousands of pixels long: the screenshots show the viewport.
"use strict";

const { launch, step, check, shot } = require("./browser");

const [base, shots] = process.argv.slice(2);
if (!base || !shots) {
  console.error("usage: api-reference-e2e.js <base_url> <screenshot_dir>");
  process.exit(2);
}
const origin = new URL(base).origin;
const TIMEOUT = 20000;

async function main() {
  const browser = await launch();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(TIMEOUT);
  // Every request of the page and its workers: one to another host is
  // recorded and refused (so the test never reaches the network).
  const requests = [];
  const elsewhere = [];
  await context.route(
    (url) => url.origin !== origin,
    (route) => {
      elsewhere.push(route.request().url());
      return route.abort();
    }
  );
  context.on("request", (r) => requests.push(r.url()));
  const page = await context.newPage();
  // The page's own record of CSP violations, besides the console's.
  await page.addInitScript(() => {
    window.__violations = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" || /Content Security Policy/i.test(m.text())) {
      problems.push(`console ${m.type()}: ${m.text()}`);
    }
  });
  try {
    await run(page, requests, elsewhere);
    check(problems.length === 0, `the browser reported problems:\n${problems.join("\n")}`);
    console.log("e2e: passed");
  } catch (e) {
    console.error(`e2e: FAILED: ${e.stack || e}`);
    if (problems.length) {
      console.error(problems.join("\n"));
    }
    try {
      await shot(page, shots, "api-reference-failure", false);
    } catch (_) {
      // The page may be gone.
    }
    await browser.close();
    process.exit(1);
  }
  await browser.close();
}

async function run(page, requests, elsewhere) {
  step("the document's tags, from /openapi.json");
  const res = await fetch(`${base}/openapi.json`);
  check(res.ok, `/openapi.json answered ${res.status}`);
  const doc = await res.json();
  const tags = (doc.tags || []).map((t) => t.name);
  check(tags.length > 0, "the document lists tags");
  console.log(`tags: ${tags.join(", ")}`);

  step("/docs renders the document");
  const answer = await page.goto(`${base}/docs`);
  check(answer.status() === 200, `/docs answered ${answer.status()}`);
  check(
    (answer.headers()["content-security-policy"] || "").includes("script-src 'self'"),
    "the page has its policy"
  );
  await page.waitForSelector("#reference[data-state]");
  check((await page.getAttribute("#reference", "data-state")) === "ready", "Redoc reports an error");
  check((await page.textContent("h1")).includes(doc.info.title), "the title is shown");

  step("every tag is in the navigation, with a section");
  for (const tag of tags) {
    const item = page.locator(`.menu-content li[data-item-id="tag/${tag}"]`);
    check((await item.count()) === 1, `tag "${tag}" is not in the navigation`);
    check((await item.locator("label").first().textContent()).includes(tag), `tag "${tag}"'s label`);
    check((await page.locator(`[id="tag/${tag}"]`).count()) === 1, `tag "${tag}" has no section`);
  }
  await shot(page, shots, "api-reference", false);

  step("a tag's link opens its operations");
  const last = tags[tags.length - 1];
  await page.click(`.menu-content li[data-item-id="tag/${last}"] > label`);
  await page.waitForFunction((tag) => location.hash === `#tag/${tag}`, last);

  step("the search (a Web Worker) finds an operation");
  await page.fill("input.search-input", tags[0]);
  await page.waitForSelector('[data-role="search:results"] li');
  await shot(page, shots, "api-reference-search", false);

  step("phone width: the page stays readable");
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${base}/docs`);
  await page.waitForSelector("#reference[data-state=ready]");
  await shot(page, shots, "api-reference-phone", false);

  step("nothing was asked of another host, and no policy was violated");
  await page.waitForTimeout(500);
  check(elsewhere.length === 0, `requests to other hosts:\n${elsewhere.join("\n")}`);
  const foreign = requests.filter((u) => !u.startsWith(`${origin}/`) && !u.startsWith(`blob:${origin}/`));
  check(foreign.length === 0, `requests outside ${origin}:\n${foreign.join("\n")}`);
  check(requests.some((u) => u === `${origin}/openapi.json`), "the page read /openapi.json");
  const violations = await page.evaluate(() => window.__violations);
  check(violations.length === 0, `CSP violations:\n${violations.join("\n")}`);
}

main().catch((e) => {
  console.error(`e2e: FAILED: ${e.stack || e}`);
  process.exit(1);
});
