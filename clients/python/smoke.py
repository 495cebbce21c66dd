"""Drives a real Notifly server through the client that openapi-python-client
generated from its /openapi.json (clients/run.sh generates it and runs this).

    NOTIFLY_URL=http://127.0.0.1:8080 NOTIFLY_API_KEY=nfly_sk_... \
        PYTHONPATH=<dir holding notifly_client> python3 smoke.py

It creates a contact, a conversation and a message; registers a webhook with a
custom header at a receiver it runs on a random loopback port and checks the
signed delivery and the header (both signatures, Standard Webhooks and
x-notifly-signature); pages through the contacts one at a time with
`starting_after`; and checks that a 422 comes back parsed as the generated
ErrorBody. Exits non-zero on the first failure.
"""

import base64
import hashlib
import hmac
import json
import os
import queue
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from notifly_client import AuthenticatedClient
from notifly_client.api.contacts import create_contact, list_contacts
from notifly_client.api.conversations import create_conversation
from notifly_client.api.deliveries import create_replay, get_replay
from notifly_client.api.messages import create_message
from notifly_client.api.webhooks import create_webhook, delete_webhook
from notifly_client.models import (
    Contact,
    ContactCreatedEvent,
    Conversation,
    ConversationCreatedEvent,
    CreateContact,
    CreateMessage,
    CreateReplay,
    CreateWebhook,
    CreateWebhookEventsEventTypesItem,
    CreateWebhookHeaders,
    ErrorBody,
    ListContact,
    Message,
    MessageCreatedEvent,
    Replay,
    Webhook,
    WithAContact,
)

TOLERANCE_SECONDS = 5 * 60
RUN = str(int(time.time() * 1000))  # keeps usernames apart across runs on one database


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def step(what: str) -> None:
    print(f"python: {what}", flush=True)


# --- the receiver -----------------------------------------------------------

SECRET: list[str] = []  # set once the webhook exists (deliveries may race it)
RECEIVED: "queue.Queue[tuple[bool, dict | None, str]]" = queue.Queue()


# The webhook's custom header, which every delivery must carry.
SMOKE_TOKEN = "smoke-token-0123456789"


def verify(secret: str, headers, body: bytes) -> str | None:
    """Why the request is not authentic, or None if both signatures hold."""
    if headers.get("x-smoke-token") != SMOKE_TOKEN:
        return "the custom header x-smoke-token is missing"
    expected_hex = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected_hex, headers.get("x-notifly-signature") or ""):
        return "x-notifly-signature does not match"
    msg_id, timestamp = headers.get("webhook-id") or "", headers.get("webhook-timestamp") or ""
    try:
        ts = int(timestamp)
    except ValueError:
        return f"webhook-timestamp {timestamp!r} is not an integer"
    if abs(time.time() - ts) > TOLERANCE_SECONDS:
        return f"webhook-timestamp {ts} is more than 5 minutes off"
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{ts}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for entry in (headers.get("webhook-signature") or "").split():
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(expected, value):
            return None
    return "no v1 entry of webhook-signature matches"


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))  # the raw bytes
        for _ in range(100):  # the webhook's secret arrives with the response that created it
            if SECRET:
                break
            time.sleep(0.05)
        problem = verify(SECRET[0], self.headers, body) if SECRET else "no secret yet"
        self.send_response(401 if problem else 200)
        self.end_headers()
        event = json.loads(body) if not problem else None
        if event is not None and event.get("id") != self.headers.get("webhook-id"):
            problem = "the body's id is not webhook-id"
        RECEIVED.put((problem is None, event, problem or ""))

    def log_message(self, *args):
        pass


def wait_for_event(event_type: str, payload_id: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        check(left > 0, f"no verified {event_type} for {payload_id} within {timeout:.0f} s")
        try:
            ok, event, problem = RECEIVED.get(timeout=left)
        except queue.Empty:
            continue
        check(ok, f"a delivery failed verification: {problem}")
        assert event is not None
        parse_event(event)
        if event["type"] == event_type and event["payload"]["id"] == payload_id:
            return event


# The generated type of each event type the webhook subscribes to (the
# document's `webhooks`); delivery.exhausted is not expected here.
EVENT_MODELS = {
    "contact.created": ContactCreatedEvent,
    "conversation.created": ConversationCreatedEvent,
    "message.created": MessageCreatedEvent,
}


def parse_event(event: dict):
    """Parses a delivered body into the generated type for its event type,
    which must describe every field it holds."""
    model = EVENT_MODELS.get(event["type"])
    check(model is not None, f"an event of a type not subscribed to: {event['type']}")
    assert model is not None
    parsed = model.from_dict(event)
    check(parsed.type_ == event["type"] and parsed.id == event["id"], f"{event['type']} parsed: {parsed!r}")
    check(
        not parsed.additional_properties and not parsed.payload.additional_properties,
        f"{event['type']} has fields its generated type does not describe: "
        f"{parsed.additional_keys + parsed.payload.additional_keys}",
    )
    return parsed


# --- the program ------------------------------------------------------------


def main() -> None:
    client = AuthenticatedClient(
        base_url=os.environ["NOTIFLY_URL"],
        token=os.environ["NOTIFLY_API_KEY"],
        raise_on_unexpected_status=True,  # a status the document does not list is an error
    )

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{receiver.server_address[1]}/webhooks"

    # A webhook for three event types and an operational one, typed by the
    # document's enum.
    created = create_webhook.sync_detailed(
        client=client,
        body=CreateWebhook(
            name="python smoke",
            url=hook_url,
            events=[
                CreateWebhookEventsEventTypesItem.CONTACT_CREATED,
                CreateWebhookEventsEventTypesItem.CONVERSATION_CREATED,
                CreateWebhookEventsEventTypesItem.MESSAGE_CREATED,
                CreateWebhookEventsEventTypesItem.DELIVERY_EXHAUSTED,
            ],
            # With a custom header for the receiver to check: answered masked.
            headers=CreateWebhookHeaders.from_dict({"X-Smoke-Token": SMOKE_TOKEN}),
        ),
    )
    check(created.status_code == HTTPStatus.CREATED, f"create webhook: {created.status_code} {created.content!r}")
    webhook = created.parsed
    check(isinstance(webhook, Webhook), f"create webhook parsed as {type(webhook).__name__}")
    assert isinstance(webhook, Webhook)
    check(isinstance(webhook.secret, str) and webhook.secret.startswith("whsec_"), "the new webhook shows its secret")
    assert isinstance(webhook.secret, str)
    check(
        webhook.headers["X-Smoke-Token"] == "••••••••" + SMOKE_TOKEN[-4:],
        f"the custom header is answered masked: {webhook.headers.to_dict()!r}",
    )
    check(
        webhook.events == ["contact.created", "conversation.created", "message.created", "delivery.exhausted"],
        f"the webhook's subscription as asked: {webhook.events!r}",
    )
    SECRET.append(webhook.secret)
    step(f"webhook {webhook.id} -> {hook_url}")

    # A contact, a conversation with it, and a message in that conversation.
    contact = create_contact.sync(
        client=client, body=CreateContact(username=f"kevin_{RUN}", phone_number="1-800-759-3000")
    )
    check(isinstance(contact, Contact), f"create contact returned {contact!r}")
    assert isinstance(contact, Contact)
    check(contact.username == f"kevin_{RUN}", "the contact has its username")

    conversation = create_conversation.sync(client=client, body=WithAContact(contact_id=contact.id))
    check(isinstance(conversation, Conversation), f"create conversation returned {conversation!r}")
    assert isinstance(conversation, Conversation)
    check(conversation.contact_id == contact.id, "the conversation is with the contact")

    message = create_message.sync(
        client=client,
        body=CreateMessage(conversation_id=conversation.id, contact_id=contact.id, message="I hate meetings."),
    )
    check(isinstance(message, Message), f"create message returned {message!r}")
    assert isinstance(message, Message)
    check(message.conversation_id == conversation.id and message.message == "I hate meetings.", "the message as sent")
    step(f"contact {contact.id}, conversation {conversation.id}, message {message.id}")

    # Its signed delivery.
    event = wait_for_event("message.created", message.id)
    check(event["payload"]["message"] == "I hate meetings.", "the delivered payload is the message")
    check(event["payload"]["conversation_id"] == conversation.id, "the delivered payload names its conversation")
    # The same body, as the generated type for message.created.
    delivered = parse_event(event)
    check(isinstance(delivered, MessageCreatedEvent), f"message.created parsed as {type(delivered).__name__}")
    assert isinstance(delivered, MessageCreatedEvent)
    check(isinstance(delivered.payload, Message), "its payload is a Message")
    check(delivered.payload.message == "I hate meetings.", "the typed payload is the message")
    sender = delivered.payload.contact
    check(isinstance(sender, Contact) and sender.id == contact.id, f"the typed payload's sender: {sender!r}")
    step(f"received {event['type']} {event['id']}, both signatures verified, parsed as {type(delivered).__name__}")

    # A replay of the last minute sends it again, with the same event id.
    started = create_replay.sync_detailed(
        client=client, id=webhook.id, body=CreateReplay(since=int(time.time()) - 60)
    )
    check(started.status_code == HTTPStatus.ACCEPTED, f"replay: {started.status_code} {started.content!r}")
    replay = started.parsed
    check(isinstance(replay, Replay), f"replay parsed as {type(replay).__name__}")
    assert isinstance(replay, Replay)
    again = wait_for_event("message.created", message.id)
    check(again["id"] == event["id"], "the replayed event keeps its id")
    deadline = time.monotonic() + 20
    while True:
        progress = get_replay.sync(client=client, id=webhook.id, replay_id=replay.id)
        check(isinstance(progress, Replay), f"replay progress parsed as {type(progress).__name__}")
        assert isinstance(progress, Replay)
        if progress.status == "completed":
            break
        check(time.monotonic() < deadline, f"replay not completed: {progress!r}")
        time.sleep(0.1)
    check(progress.sent == progress.total >= 3, f"the replay sent its window: {progress!r}")
    step(f"replay {replay.id}: {progress.sent} of {progress.total} events sent again")

    # Pagination: three more contacts, then one page of one at a time.
    created_ids = {contact.id}
    for i in range(3):
        more = create_contact.sync(
            client=client, body=CreateContact(username=f"page_{RUN}_{i}", phone_number=f"+1 555 010{i}")
        )
        check(isinstance(more, Contact), f"create contact {i} returned {more!r}")
        assert isinstance(more, Contact)
        created_ids.add(more.id)
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        if after is None:
            page = list_contacts.sync(client=client, limit=1)
        else:
            page = list_contacts.sync(client=client, limit=1, starting_after=after)
        check(isinstance(page, ListContact), f"list contacts returned {page!r}")
        assert isinstance(page, ListContact)
        pages += 1
        check(pages <= 50, "the list does not end")
        check(len(page.data) <= 1, f"limit=1 returned {len(page.data)} items")
        seen.extend(item.id for item in page.data)
        if not page.has_more:
            break
        check(len(page.data) == 1, "a page with has_more has an item")
        after = page.data[-1].id
    check(len(seen) == len(set(seen)), f"a contact came twice while paging: {seen}")
    check(created_ids <= set(seen), f"paging missed contacts: {sorted(created_ids - set(seen))}")
    step(f"paged through {len(seen)} contacts in {pages} pages of 1")

    # A 4xx as the typed error body.
    bad = create_contact.sync_detailed(client=client, body=CreateContact(username="", phone_number="1-800-759-3000"))
    check(bad.status_code == HTTPStatus.UNPROCESSABLE_ENTITY, f"empty username: {bad.status_code} {bad.content!r}")
    error = bad.parsed
    check(isinstance(error, ErrorBody), f"the 422 parsed as {type(error).__name__}, not ErrorBody")
    assert isinstance(error, ErrorBody)
    check(error.type_ == "invalid_request", f"error type {error.type_!r}")
    check("username" in error.message, f"error message {error.message!r} does not name the field")
    step(f"422 parsed as ErrorBody: type={error.type_} message={error.message!r}")

    # Unsubscribe, so that the server stops sending to a receiver about to stop.
    deleted = delete_webhook.sync(client=client, id=webhook.id)
    check(isinstance(deleted, Webhook) and deleted.id == webhook.id, f"delete webhook returned {deleted!r}")
    receiver.shutdown()
    print("python: OK", flush=True)


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"python: FAILED: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
