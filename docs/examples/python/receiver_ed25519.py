"""A Notifly webhook receiver for an `ed25519` endpoint, in Python.

    pip install cryptography
    NOTIFLY_WEBHOOK_PUBLIC_KEY=whpk_... python3 receiver_ed25519.py [port]

It verifies with the endpoint's public key, which cannot sign:
`webhook-signature` holds space-separated `v1a,<base64>` entries, Ed25519
signatures of "{webhook-id}.{webhook-timestamp}.{raw body}"; one must verify
and the timestamp must be recent. Duplicates are dropped by `webhook-id`. The
test suite runs this file against real deliveries.
"""

import base64
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PUBLIC_KEY = os.environ.get("NOTIFLY_WEBHOOK_PUBLIC_KEY", "")
TOLERANCE_SECONDS = 5 * 60
SEEN = set()  # use a database table with a unique key in production
LOCK = threading.Lock()  # requests are handled on several threads


def report(record: dict) -> None:
    with LOCK:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


def verify(key: Ed25519PublicKey, body: bytes, msg_id: str, timestamp: str, signatures: str) -> bool:
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if not msg_id or abs(time.time() - ts) > TOLERANCE_SECONDS:
        return False
    signed = f"{msg_id}.{ts}.".encode() + body
    # During a key rotation there are two entries: either may verify.
    for entry in (signatures or "").split():
        version, _, value = entry.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(value), signed)
            return True
        except (InvalidSignature, ValueError):
            continue
    return False


class Receiver(BaseHTTPRequestHandler):
    key: Ed25519PublicKey

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))  # raw bytes
        h = self.headers
        ok = verify(self.key, body, h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature"))
        self.send_response(200 if ok else 401)
        self.end_headers()
        if not ok:
            report({"verified": False, "id": h.get("webhook-id")})
            return
        with LOCK:
            if h.get("webhook-id") in SEEN:  # a retry of an event already handled
                return
            SEEN.add(h.get("webhook-id"))
        event = json.loads(body)
        resource, _, action = event["type"].partition(".")
        report({"verified": True, "id": event["id"], "type": event["type"],
                "resource": resource, "action": action, "payload_id": event["payload"]["id"]})

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    if not PUBLIC_KEY.startswith("whpk_"):
        sys.exit("set NOTIFLY_WEBHOOK_PUBLIC_KEY to the webhook public key (whpk_...)")
    Receiver.key = Ed25519PublicKey.from_public_bytes(base64.b64decode(PUBLIC_KEY.removeprefix("whpk_")))
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Receiver)
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()
