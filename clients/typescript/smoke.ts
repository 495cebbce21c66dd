// Drives a real Notifly server through openapi-fetch, typed by the types
// openapi-typescript generated from its /openapi.json into
// generated/notifly-api.d.ts (clients/run.sh generates them, type-checks this
// file with `tsc --noEmit` and runs it with tsx).
//
//   NOTIFLY_URL=http://127.0.0.1:8080 NOTIFLY_API_KEY=nfly_sk_... npx tsx smoke.ts
//
// It creates a contact, a conversation and a message; registers a webhook
// with a custom header at a receiver it runs on a random loopback port and
// checks the signed delivery and the header (both signatures, Standard Webhooks and x-notifly-signature); pages through
// the contacts one at a time with `starting_after`; and checks that a 422
// comes back as the generated ErrorBody type. Exits non-zero on the first
// failure.

import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/notifly-api.js";

type Schemas = components["schemas"];
type ErrorBody = Schemas["ErrorBody"];

const TOLERANCE_SECONDS = 5 * 60;
const RUN = String(Date.now()); // keeps usernames apart across runs on one database

function check(condition: unknown, what: string): asserts condition {
  if (!condition) throw new Error(what);
}

function step(what: string): void {
  console.log(`typescript: ${what}`);
}

function header(headers: IncomingHttpHeaders, name: string): string {
  const value = headers[name];
  return typeof value === "string" ? value : "";
}

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** The webhook's custom header, which every delivery must carry. */
const SMOKE_TOKEN = "smoke-token-0123456789";

/** Why the request is not authentic, or null if both signatures hold. */
function verify(secret: string, headers: IncomingHttpHeaders, body: Buffer): string | null {
  if (header(headers, "x-smoke-token") !== SMOKE_TOKEN) return "the custom header x-smoke-token is missing";
  const hex = createHmac("sha256", secret).update(body).digest("hex");
  if (!sameText(hex, header(headers, "x-notifly-signature"))) return "x-notifly-signature does not match";
  const id = header(headers, "webhook-id");
  const timestamp = header(headers, "webhook-timestamp");
  if (!/^\d+$/.test(timestamp)) return `webhook-timestamp ${JSON.stringify(timestamp)} is not an integer`;
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > TOLERANCE_SECONDS) {
    return `webhook-timestamp ${timestamp} is more than 5 minutes off`;
  }
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const expected = createHmac("sha256", key)
    .update(`${id}.${timestamp}.`)
    .update(body)
    .digest("base64");
  for (const entry of header(headers, "webhook-signature").split(" ")) {
    const [version, value] = entry.split(",", 2);
    if (version === "v1" && value !== undefined && sameText(expected, value)) return null;
  }
  return "no v1 entry of webhook-signature matches";
}

/** What arrives at the webhook: the generated union of every event's body (the document's `webhooks`). */
type Delivered = Schemas["WebhookEvent"];
/** The generated body of one event type. */
type EventOf<T extends Delivered["type"]> = Extract<Delivered, { type: T }>;

// --- the receiver -------------------------------------------------------------

let secret: string | undefined; // set once the webhook exists (a delivery may race it)
const received: Array<{ event?: Delivered; problem?: string }> = [];

const receiver = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on("data", (chunk: Buffer) => chunks.push(chunk));
  req.on("end", async () => {
    const body = Buffer.concat(chunks); // the raw bytes
    for (let i = 0; i < 100 && secret === undefined; i++) await new Promise((r) => setTimeout(r, 50));
    const problem = secret === undefined ? "no secret yet" : verify(secret, req.headers, body);
    res.writeHead(problem ? 401 : 200).end();
    if (problem) {
      received.push({ problem });
      return;
    }
    const event = JSON.parse(body.toString("utf8")) as Delivered;
    if (event.id !== header(req.headers, "webhook-id")) received.push({ problem: "the body's id is not webhook-id" });
    else received.push({ event });
  });
});

async function waitForEvent<T extends Delivered["type"]>(
  type: T,
  payloadId: string,
  nth = 1,
  timeoutMs = 20_000,
): Promise<EventOf<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const bad = received.find((r) => r.problem !== undefined);
    check(bad === undefined, `a delivery failed verification: ${bad?.problem}`);
    const hits = received.filter((r) => r.event?.type === type && r.event.payload.id === payloadId);
    const hit = hits[nth - 1];
    // The union narrows on `type`; TypeScript cannot carry that through the generic parameter.
    if (hit?.event) return hit.event as EventOf<T>;
    check(Date.now() < deadline, `no verified ${type} for ${payloadId} within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// --- the program --------------------------------------------------------------

async function main(): Promise<void> {
  const baseUrl = process.env.NOTIFLY_URL;
  const apiKey = process.env.NOTIFLY_API_KEY;
  check(baseUrl && apiKey, "set NOTIFLY_URL and NOTIFLY_API_KEY");
  const client = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${apiKey}` } });

  await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
  const hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/webhooks`;

  // A webhook for three event types and an operational one, typed by the
  // document's enum.
  const events: Schemas["CreateWebhook"]["events"] = [
    "contact.created",
    "conversation.created",
    "message.created",
    "delivery.exhausted",
  ];
  // With a custom header for the receiver to check: answered masked.
  const headers: Schemas["CreateWebhook"]["headers"] = { "X-Smoke-Token": SMOKE_TOKEN };
  const hook = await client.POST("/v1/webhooks", { body: { name: "typescript smoke", url: hookUrl, events, headers } });
  check(hook.response.status === 201 && hook.data, `create webhook: ${hook.response.status} ${JSON.stringify(hook.error)}`);
  const webhook: Schemas["Webhook"] = hook.data;
  check(typeof webhook.secret === "string" && webhook.secret.startsWith("whsec_"), "the new webhook shows its secret");
  check(webhook.headers["X-Smoke-Token"] === "••••••••" + SMOKE_TOKEN.slice(-4), "the custom header is answered masked");
  check(JSON.stringify(webhook.events) === JSON.stringify(events), `the webhook's subscription as asked: ${webhook.events}`);
  secret = webhook.secret;
  step(`webhook ${webhook.id} -> ${hookUrl}`);

  // A contact, a conversation with it, and a message in that conversation.
  const c = await client.POST("/v1/contacts", { body: { username: `kevin_${RUN}`, phone_number: "1-800-759-3000" } });
  check(c.data, `create contact: ${c.response.status} ${JSON.stringify(c.error)}`);
  const contact: Schemas["Contact"] = c.data;
  check(contact.username === `kevin_${RUN}`, "the contact has its username");

  const v = await client.POST("/v1/conversations", { body: { contact_id: contact.id } });
  check(v.data, `create conversation: ${v.response.status} ${JSON.stringify(v.error)}`);
  const conversation: Schemas["Conversation"] = v.data;
  check(conversation.contact_id === contact.id, "the conversation is with the contact");

  const m = await client.POST("/v1/messages", {
    body: { conversation_id: conversation.id, contact_id: contact.id, message: "I hate meetings." },
  });
  check(m.data, `create message: ${m.response.status} ${JSON.stringify(m.error)}`);
  const message: Schemas["Message"] = m.data;
  check(message.conversation_id === conversation.id && message.message === "I hate meetings.", "the message as sent");
  step(`contact ${contact.id}, conversation ${conversation.id}, message ${message.id}`);

  // Its signed delivery.
  const event = await waitForEvent("message.created", message.id);
  check(event.payload.message === "I hate meetings.", "the delivered payload is the message");
  check(event.payload.conversation_id === conversation.id, "the delivered payload names its conversation");
  // Typed as the document's MessageCreatedEvent: its payload is a Message, with its sender.
  const sender: Schemas["Contact"] | null | undefined = event.payload.contact;
  check(sender?.id === contact.id, `the delivered message's sender: ${JSON.stringify(sender)}`);
  check(typeof event.payload.created_at === "number", "the delivered message has its creation time");
  step(`received ${event.type} ${event.id}, both signatures verified, typed as MessageCreatedEvent`);

  // A replay of the last minute sends it again, with the same event id.
  const started = await client.POST("/v1/webhooks/{id}/replay", {
    params: { path: { id: webhook.id } },
    body: { since: Math.floor(Date.now() / 1000) - 60 },
  });
  check(started.response.status === 202 && started.data, `replay: ${started.response.status} ${JSON.stringify(started.error)}`);
  const replay: Schemas["Replay"] = started.data;
  const again = await waitForEvent("message.created", message.id, 2);
  check(again.id === event.id, "the replayed event keeps its id");
  const replayDeadline = Date.now() + 20_000;
  let progress: Schemas["Replay"];
  for (;;) {
    const got = await client.GET("/v1/webhooks/{id}/replays/{replay_id}", {
      params: { path: { id: webhook.id, replay_id: replay.id } },
    });
    check(got.data, `replay progress: ${got.response.status}`);
    progress = got.data;
    if (progress.status === "completed") break;
    check(Date.now() < replayDeadline, `replay not completed: ${JSON.stringify(progress)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  check(progress.sent === progress.total && progress.total >= 3, `the replay sent its window: ${JSON.stringify(progress)}`);
  step(`replay ${replay.id}: ${progress.sent} of ${progress.total} events sent again`);

  // Pagination: three more contacts, then one page of one at a time.
  const createdIds = new Set([contact.id]);
  for (let i = 0; i < 3; i++) {
    const more = await client.POST("/v1/contacts", {
      body: { username: `page_${RUN}_${i}`, phone_number: `+1 555 010${i}` },
    });
    check(more.data, `create contact ${i}: ${more.response.status} ${JSON.stringify(more.error)}`);
    createdIds.add(more.data.id);
  }
  const seen: string[] = [];
  let after: string | undefined;
  let pages = 0;
  for (;;) {
    const page = await client.GET("/v1/contacts", {
      params: { query: after === undefined ? { limit: 1 } : { limit: 1, starting_after: after } },
    });
    check(page.data, `list contacts: ${page.response.status} ${JSON.stringify(page.error)}`);
    const list: Schemas["List_Contact"] = page.data;
    pages += 1;
    check(pages <= 50, "the list does not end");
    check(list.data.length <= 1, `limit=1 returned ${list.data.length} items`);
    seen.push(...list.data.map((item) => item.id));
    if (!list.has_more) break;
    const last = list.data.at(-1);
    check(last, "a page with has_more has an item");
    after = last.id;
  }
  check(new Set(seen).size === seen.length, `a contact came twice while paging: ${seen.join(", ")}`);
  const missed = [...createdIds].filter((id) => !seen.includes(id));
  check(missed.length === 0, `paging missed contacts: ${missed.join(", ")}`);
  step(`paged through ${seen.length} contacts in ${pages} pages of 1`);

  // A 4xx as the typed error body.
  const bad = await client.POST("/v1/contacts", { body: { username: "", phone_number: "1-800-759-3000" } });
  check(bad.response.status === 422, `empty username: ${bad.response.status}`);
  check(bad.data === undefined && bad.error !== undefined, "a 422 comes back as `error`, not `data`");
  const error: ErrorBody = bad.error; // the compiler checks that the error type is ErrorBody
  check(error.type === "invalid_request", `error type ${JSON.stringify(error.type)}`);
  check(error.message.includes("username"), `error message ${JSON.stringify(error.message)} does not name the field`);
  step(`422 as ErrorBody: type=${error.type} message=${JSON.stringify(error.message)}`);

  // Unsubscribe, so that the server stops sending to a receiver about to stop.
  const deleted = await client.DELETE("/v1/webhooks/{id}", { params: { path: { id: webhook.id } } });
  check(deleted.data?.id === webhook.id, `delete webhook: ${deleted.response.status} ${JSON.stringify(deleted.error)}`);
  // Exit without waiting for the receiver to close: the server's HTTP
  // client may hold a connection to it that it opened and never used (a
  // spare in its pool), which no request timeout closes once the receiver
  // has stopped listening, so the process would wait for the client's
  // idle timeout (90 s).
  receiver.close();
  console.log("typescript: OK");
  process.exit(0);
}

main().catch((e: unknown) => {
  console.error(`typescript: FAILED: ${e instanceof Error ? e.message : String(e)}`);
  receiver.close();
  process.exit(1);
});
