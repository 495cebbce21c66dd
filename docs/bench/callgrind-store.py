"""Counts the instructions a `notifly serve` executes for a fixed load.

    python3 docs/bench/callgrind-store.py <notifly binary> <callgrind output file> <events>

Starts the server under `valgrind --tool=callgrind` on a fresh SQLite
database, registers one webhook to a receiver in this script, creates
<events> contacts one at a time (each a `contact.created` event and one
delivery), waits for every delivery, stops the server (SIGTERM, so callgrind
writes its file) and prints where the counts are: `grep summary <file>`.

Instruction counts do not move with the machine's noise, so two builds can
be compared with one run each, even side by side on a busy machine.
Start-up and shutdown are included; they are the same for both builds.
"""

import http.client
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

exe, out, events = sys.argv[1], sys.argv[2], int(sys.argv[3])
work = out + ".d"
subprocess.run(["rm", "-rf", work], check=True)
os.makedirs(work)
db = f"sqlite://{work}/notifly.db"
account = json.loads(
    subprocess.check_output([exe, "accounts", "create", "--name", "cg", "--json", "--database", db])
)
key = account["api_key"]

received = [0]


class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        received[0] += 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=receiver.serve_forever, daemon=True).start()

probe = socket.socket()
probe.bind(("127.0.0.1", 0))
port = probe.getsockname()[1]
probe.close()
server = subprocess.Popen(
    ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", exe, "serve",
     "--listen", f"127.0.0.1:{port}", "--database", db, "--data-dir", f"{work}/data",
     "--allow-private-urls"],
    env=dict(os.environ, NOTIFLY_LOG="warn"),
    stderr=subprocess.DEVNULL,
)


def connect():
    return http.client.HTTPConnection("127.0.0.1", port, timeout=60)


deadline = time.time() + 120
while True:
    try:
        c = connect()
        c.request("GET", "/readyz")
        r = c.getresponse()
        r.read()
        if r.status == 200:
            break
    except OSError:
        pass
    if time.time() > deadline:
        server.kill()
        sys.exit("the server did not become ready")
    time.sleep(0.5)

headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
c = connect()
hook = f"http://127.0.0.1:{receiver.server_port}/hook"
c.request("POST", "/v1/webhooks",
          json.dumps({"name": "w", "url": hook, "events": ["contact.created"]}), headers)
r = c.getresponse()
r.read()
assert r.status == 201, r.status
started = time.time()
for i in range(events):
    c.request("POST", "/v1/contacts",
              json.dumps({"username": f"user{i}", "phone_number": "+1 555 0100"}), headers)
    r = c.getresponse()
    r.read()
    assert r.status == 201, r.status
while received[0] < events and time.time() - started < 600:
    time.sleep(0.2)
# The last attempts' write-back.
time.sleep(2)
server.send_signal(signal.SIGTERM)
server.wait()
print(f"{out}: {received[0]}/{events} delivered in {time.time() - started:.0f} s")
