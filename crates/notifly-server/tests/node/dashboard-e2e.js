// End-to-end test of the dashboard in a real headless Chromium, driven by
// playwright-core (which brings no browser of its own: it uses the system's).
//
//   node dashboard-e2e.js <base_url> <api_key> <receiver_url> <screenshot_dir>
//
// Environment: NOTIFLY_CHROMIUM (default /usr/bin/chromium).
// Prints one line per step; exits 0 when every step passed, 1 otherwise
// (after a screenshot of the page it failed on, failure.png).
"use strict";

const fs = require("fs");
const { launch, step, check, shot: shotIn } = require("./browser");

const [base, apiKey, receiverUrl, shots] = process.argv.slice(2);
if (!base || !apiKey || !receiverUrl || !shots) {
  console.error("usage: dashboard-e2e.js <base_url> <api_key> <receiver_url> <screenshot_dir>");
  process.exit(2);
}
fs.mkdirSync(shots, { recursive: true });

const TIMEOUT = 15000;

function shot(page, name) {
  return shotIn(page, shots, name);
}

async function api(method, route, body) {
  const res = await fetch(base + route, {
    method,
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) {
    throw new Error(`${method} ${route}: ${res.status} ${text}`);
  }
  return JSON.parse(text);
}

async function main() {
  const browser = await launch();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  // Any script error or CSP violation fails the run.
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    // Pages answered 401 (wrong key) and 422 (form errors) on purpose;
    // anything else, a CSP violation above all, is a problem.
    const expected = /Failed to load resource: the server responded with a status of (401|422)/;
    if (m.type() === "error" && !expected.test(m.text())) {
      problems.push(`console error: ${m.text()}`);
    }
  });
  try {
    await run(page, context);
    check(problems.length === 0, `the browser reported problems:\n${problems.join("\n")}`);
    console.log("e2e: passed");
  } catch (e) {
    console.error(`e2e: FAILED: ${e.stack || e}`);
    if (problems.length) {
      console.error(problems.join("\n"));
    }
    try {
      await shot(page, "failure");
    } catch (_) {
      // The page may be gone.
    }
    await browser.close();
    process.exit(1);
  }
  await browser.close();
}

async function run(page, context) {
  step("a logged-out visit lands on the login page");
  await page.goto(`${base}/dashboard/webhooks`);
  check(new URL(page.url()).pathname === "/dashboard/login", `at ${page.url()}`);
  check((await page.getAttribute("#api_key", "type")) === "password", "the key field is a password field");
  await shot(page, "01-login");

  step("a wrong key is refused with a message");
  await page.fill("#api_key", "nfly_sk_not_a_real_key");
  await page.click("button[type=submit]");
  await page.waitForSelector("#login-error");
  check((await page.textContent("#login-error")).includes("not valid"), "the wrong-key message");
  await shot(page, "02-login-wrong-key");

  step("the right key logs in, keyboard only");
  await page.focus("#api_key");
  await page.keyboard.type(apiKey);
  await page.keyboard.press("Enter");
  await page.waitForURL(`${base}/dashboard/webhooks`);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "notifly_session");
  check(session && session.httpOnly && session.sameSite === "Strict", `session cookie ${JSON.stringify(session)}`);
  check(!page.url().includes(apiKey), "no key in the URL");
  await shot(page, "03-webhooks-empty");

  step("the create form shows field errors and keeps the input");
  await page.click("text=New webhook");
  await page.waitForURL(`${base}/dashboard/webhooks/new`);
  await page.fill("#name", "");
  await page.fill("#url", "ftp://files.example/in");
  await page.click("button:has-text('Create webhook')");
  await page.waitForSelector("#url-error");
  check((await page.inputValue("#url")) === "ftp://files.example/in", "the URL is kept");
  check(await page.isVisible("#name-error"), "a name error");
  check(await page.isVisible("#events-error"), "an events error");
  await shot(page, "04-create-errors");

  step("a webhook is created through the form");
  await page.fill("#name", "Order sync");
  await page.fill("#url", receiverUrl);
  await page.fill("#description", "Keeps the order service in step.");
  await page.check("input[value='message.created']");
  await page.check("input[value='contact.created']");
  await page.click("button:has-text('Create webhook')");
  await page.waitForSelector("#secret-value");
  const secret = (await page.textContent("#secret-value")).trim();
  check(secret.startsWith("whsec_"), `secret ${secret}`);
  check(!page.url().includes(secret), "no secret in the URL");
  check(await page.isVisible("button[data-copy='secret-value']"), "the copy button (script) is shown");
  const webhookUrl = page.url().split("?")[0];
  const hooks = await api("GET", "/v1/webhooks");
  check(hooks.data.length === 1 && hooks.data[0].name === "Order sync", "the API sees the webhook");
  check(
    JSON.stringify(hooks.data[0].events) === JSON.stringify(["contact.created", "message.created"]) ||
      JSON.stringify(hooks.data[0].events) === JSON.stringify(["message.created", "contact.created"]),
    `events ${JSON.stringify(hooks.data[0].events)}`
  );

  step("the copy button copies the secret");
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  await page.click("button[data-copy='secret-value']");
  await page.waitForSelector("button[data-copy='secret-value']:has-text('Copied')");
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  check(copied === secret, "the clipboard holds the secret");

  step("the secret is hidden unless revealed");
  await page.goto(webhookUrl);
  check((await page.locator("#secret-value").count()) === 0, "hidden by default");
  await page.click("a:has-text('Reveal')");
  await page.waitForSelector("#secret-value");

  step("a test event sent from the page appears in its deliveries (live refresh)");
  await page.goto(webhookUrl);
  await page.selectOption("#test-type", "message.created");
  await page.click("button:has-text('Send test event')");
  await page.waitForSelector(".flash-ok");
  // The page was rendered right after the send; the script refreshes the list.
  await page.waitForSelector("#deliveries-body .badge.status-succeeded", { timeout: 20000 });
  check((await page.textContent("#deliveries-body")).includes("message.created"), "the test delivery is listed");

  step("an event made through the API is delivered and appears without a reload");
  await api("POST", "/v1/contacts", { username: "kevin", phone_number: "1-800-759-3000" });
  await page.waitForFunction(
    () => document.querySelector("#deliveries-body").textContent.includes("contact.created"),
    null,
    { timeout: 20000 }
  );
  await page.waitForFunction(
    () => document.querySelectorAll("#deliveries-body .badge.status-succeeded").length >= 2,
    null,
    { timeout: 20000 }
  );
  await page.reload();
  await page.waitForSelector("svg rect.bar.good");
  await shot(page, "05-webhook");

  step("a delivery's attempt shows request and response");
  await page.click("#deliveries-body a:has-text('Attempts') >> nth=0");
  await page.waitForSelector("details.attempt");
  const attempt = await page.textContent("details.attempt");
  check(attempt.includes("Attempt 1"), "attempt 1");
  check(attempt.includes("x-notifly-signature"), "request headers");
  check(attempt.includes("HTTP 200"), "response status");
  await shot(page, "06-delivery");

  step("retrying the delivery makes a second attempt");
  const deliveryUrl = page.url();
  await page.click("button:has-text('Retry now')");
  await page.waitForSelector(".flash-ok");
  const deadline = Date.now() + 20000;
  for (;;) {
    if ((await page.locator("details.attempt >> text=Attempt 2").count()) > 0) {
      break;
    }
    check(Date.now() < deadline, "no second attempt in time");
    await page.waitForTimeout(250);
    await page.goto(deliveryUrl);
  }
  await shot(page, "07-delivery-retried");

  step("rotating the secret keeps the old one during the overlap");
  await page.goto(webhookUrl);
  await page.selectOption("#overlap_seconds", "86400");
  await page.click("button:has-text('Rotate secret')");
  await page.waitForSelector("#previous-secret-value");
  const newSecret = (await page.textContent("#secret-value")).trim();
  const previous = (await page.textContent("#previous-secret-value")).trim();
  check(newSecret !== secret && newSecret.startsWith("whsec_"), "a new secret");
  check(previous === secret, "the old secret is still shown as the previous one");
  check((await page.textContent(".flash-ok")).includes("accept both secrets until then"), "the overlap is explained");
  await shot(page, "08-rotated");

  step("the events page filters by type and shows payloads");
  await page.click("nav >> text=Events");
  await page.waitForURL(`${base}/dashboard/events`);
  await page.selectOption("#type", "contact.created");
  await page.click("button:has-text('Filter')");
  await page.waitForURL(/type=contact.created/);
  await page.click(".events-list summary >> nth=0");
  check((await page.textContent(".events-list pre")).includes("kevin"), "the payload");
  await shot(page, "09-events");

  step("the API keys page creates a key, shown once");
  await page.click("nav >> text=API keys");
  await page.waitForURL(`${base}/dashboard/api-keys`);
  check((await page.textContent("table.api-keys")).includes("this session"), "the session's key is marked");
  await page.fill("#name", "CI deploys");
  await page.click("button:has-text('Create key')");
  await page.waitForSelector("#new-key-value");
  const newKey = (await page.textContent("#new-key-value")).trim();
  check(newKey.startsWith("nfly_sk_") && newKey.length > 40, `a new key: ${newKey.slice(0, 12)}…`);
  check((await page.textContent("table.api-keys")).includes(newKey.slice(0, 12)), "listed by its prefix");
  await shot(page, "09b-api-keys");

  step("the list shows health");
  await page.click("nav >> text=Webhooks");
  await page.waitForSelector("table.webhooks");
  const row = await page.textContent("table.webhooks tbody tr");
  check(row.includes("Order sync") && row.includes("100%"), `row: ${row}`);
  await shot(page, "10-webhooks");

  step("phone width: pages stay readable");
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${base}/dashboard/webhooks`);
  await shot(page, "11-phone-webhooks");
  await page.goto(webhookUrl);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `the webhook page scrolls sideways by ${overflow}px at phone width`);
  await shot(page, "12-phone-webhook");
  await page.goto(deliveryUrl);
  await shot(page, "13-phone-delivery");
  await page.goto(`${base}/dashboard/event-types`);
  const catalogueOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(catalogueOverflow <= 1, `the event types page scrolls sideways by ${catalogueOverflow}px at phone width`);
  await shot(page, "13b-phone-event-types");
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.goto(`${base}/dashboard/event-types#message.created`);
  await shot(page, "13c-event-types");

  step("keyboard focus is visible");
  await page.goto(`${base}/dashboard/webhooks`);
  await page.keyboard.press("Tab");
  await page.keyboard.press("Tab");
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  check(outline !== "none", `focused element has no outline (${outline})`);

  step("delete asks first, then removes the webhook");
  await page.goto(webhookUrl);
  await page.click("a:has-text('Delete')");
  await page.waitForSelector("text=Delete this webhook?");
  await page.click("button:has-text('Delete webhook')");
  await page.waitForSelector(".flash-ok");
  check((await api("GET", "/v1/webhooks")).data.length === 0, "the webhook is gone");

  step("logout ends the session");
  await page.click("button:has-text('Log out')");
  await page.waitForURL(`${base}/dashboard/login`);
  await page.goto(`${base}/dashboard/webhooks`);
  check(new URL(page.url()).pathname === "/dashboard/login", "logged out");
}

main().catch((e) => {
  console.error(`e2e: FAILED: ${e.stack || e}`);
  process.exit(1);
});
