#!/usr/bin/env bash
# The API contract, tested from the document itself: Schemathesis generates
# requests from a running server's /openapi.json, both ones the document
# calls valid (they must be accepted: 2xx, or a 404/409/422 that no schema
# can foresee, such as an id that does not exist) and ones it calls invalid
# (they must be refused with a 4xx), and checks every answer's status, content
# type and body against the document. No answer may be a 5xx.
#
# Usage: contract/run.sh path/to/notifly   (defaults to target/release/notifly)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-${CARGO_TARGET_DIR:-$here/../target}/release/notifly}"
[ -x "$bin" ] || { echo "FATAL: no notifly binary at $bin (build it with cargo build --release -p notifly)"; exit 1; }
command -v python3 >/dev/null || { echo "FATAL: python3 is required"; exit 1; }

# A venv outside the clone, reused between runs.
venv="${NOTIFLY_CONTRACT_VENV:-${CARGO_TARGET_DIR:-/var/tmp}/contract-venv}"
if [ ! -x "$venv/bin/schemathesis" ] || ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/requirements.txt"
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export NOTIFLY_DATABASE_URL="sqlite://$work/notifly.db"
export NOTIFLY_DATA_DIR="$work/data"
export NOTIFLY_LISTEN="127.0.0.1:$port"
export NOTIFLY_PUBLIC_URL="http://127.0.0.1:$port"
# Generated webhook URLs name made-up hosts: resolving them is not the point.
export NOTIFLY_ALLOW_PRIVATE_URLS=true
export NOTIFLY_LOG=warn
key="$("$bin" accounts create --name contract --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')"
"$bin" serve >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || { echo "FATAL: the server did not start"; cat "$work/server.log"; exit 1; }

# Resources for the generated requests to refer to, so that ids in bodies
# and paths are sometimes real (Schemathesis also follows the document's
# links from each create to the operations on what it created).
status=0
(cd "$here" && NOTIFLY_API_KEY="$key" PYTHONPATH="$here" SCHEMATHESIS_HOOKS=hooks "$venv/bin/schemathesis" run \
  --url "http://127.0.0.1:$port" \
  "http://127.0.0.1:$port/openapi.json") || status=$?
if [ "$status" -ne 0 ]; then
  echo "== the server's log"
  tail -n 50 "$work/server.log"
  exit "$status"
fi
if grep -q "panicked" "$work/server.log"; then
  echo "FAIL: the server panicked during the run"; cat "$work/server.log"; exit 1
fi
