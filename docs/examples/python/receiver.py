"""A Notifly webhook receiver in Python, standard library only.

    NOTIFLY_WEBHOOK_SECRET=whsec_... python3 receiver.py [port]

It verifies both signatures Notifly sends: `x-notifly-signature` (hex
HMAC-SHA256 of the raw body, keyed with the secret string as shown in the
dashboard) and the Standard Webhooks `webhook-signature` (HMAC-SHA256 of
"{webhook-id}.{webhook-timestamp}.{body}", keyed with the base64-decoded part
of the secret after `whsec_`), refuses stale timestamps, drops duplicates by
`webhook-id` and answers 200 at once. The test suite runs this file against
real deliveries.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ.get("NOTIFLY_WEBHOOK_SECRET", "")
TOLERANCE_SECONDS = 5 * 60
SEEN = set()  # use a database table with a unique key in production
LOCK = threading.Lock()  # requests are handled on several threads


def report(record: dict) -> None:
    with LOCK:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


def verify_notifly(body: bytes, signature: str) -> bool:
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature or "")


def verify_standard(body: bytes, msg_id: str, timestamp: str, signatures: str) -> bool:
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(time.time() - ts) > TOLERANCE_SECONDS:
        return False
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{msg_id}.{ts}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for entry in (signatures or "").split():
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(expected, value):
            return True
    return False


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))  # raw bytes
        h = self.headers
        ok = verify_notifly(body, h.get("x-notifly-signature")) and verify_standard(
            body, h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
        )
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
    if not SECRET:
        sys.exit("set NOTIFLY_WEBHOOK_SECRET to the webhook secret (whsec_...)")
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Receiver)
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()
