#!/usr/bin/env bash
# Generated clients, tested: starts a real server (temporary SQLite database,
# free loopback port), fetches its /openapi.json, lints it, generates a Python
# client (openapi-python-client) and TypeScript types (openapi-typescript, for
# openapi-fetch) from it, type-checks the TypeScript program against those
# types, and runs a short program with each client against the server (create
# a contact, a conversation and a message; receive and verify the webhook's
# signed delivery; page through a list with cursors; get a 422 as the
# generated ErrorBody). Every tool is pinned: clients/python/requirements.txt,
# clients/typescript/package-lock.json. Builds nothing: give it the binary.
#
# Usage: clients/run.sh [path/to/notifly]
#   (default: $NOTIFLY_BIN, else $CARGO_TARGET_DIR/release/notifly, else target/release/notifly)
# Env: NOTIFLY_CLIENTS_VENV  the Python venv (default $CARGO_TARGET_DIR/clients-venv,
#                            or /var/tmp/notifly-clients-venv), reused between runs
#      REDOCLY_STRICT=1      fail on Redocly's errors too (it is advisory otherwise)
#
# The generated clients land in clients/python/generated/ and
# clients/typescript/generated/ (git-ignored, replaced on every run).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"

fail() { echo "FATAL (clients): $*" >&2; exit 1; }
started=$SECONDS
step() { echo "== clients: $* (at $((SECONDS - started)) s)"; }

bin="${1:-${NOTIFLY_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/notifly}}"
[ -x "$bin" ] || fail "no notifly binary at $bin (build it with \`cargo build --release -p notifly\`, or pass its path)"
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
for tool in python3 node npm curl; do
  command -v "$tool" >/dev/null || fail "$tool is required but is not installed"
done
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || fail "python3 is $(python3 --version 2>&1); openapi-python-client (and the client it generates) needs 3.11 or later"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
  || fail "node is $(node --version); the TypeScript tools need Node.js 20 or later"

step "Python tools (pinned in clients/python/requirements.txt)"
venv="${NOTIFLY_CLIENTS_VENV:-${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/clients-venv}}"
venv="${venv:-/var/tmp/notifly-clients-venv}"
if [ ! -x "$venv/bin/openapi-python-client" ] || ! cmp -s "$here/python/requirements.txt" "$venv/requirements.txt"; then
  rm -rf "$venv"
  python3 -m venv "$venv" || fail "python3 -m venv failed (on Debian: apt-get install python3-venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/python/requirements.txt" \
    || fail "pip install -r clients/python/requirements.txt failed"
  cp "$here/python/requirements.txt" "$venv/requirements.txt"
fi
# openapi-python-client formats what it generates with ruff, from the PATH.
export PATH="$venv/bin:$PATH"

step "TypeScript tools (pinned in clients/typescript/package-lock.json): npm ci"
(cd "$here/typescript" && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci in clients/typescript failed"
tsbin="$here/typescript/node_modules/.bin"

step "a server on a free port with a temporary database"
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
server_log() { echo "--- server log (last 40 lines)" >&2; tail -n 40 "$work/server.log" >&2 || true; }
# From inside $work, so that no notifly.toml of the current directory applies.
db="sqlite://$work/notifly.db"
key="$(cd "$work" && "$bin" accounts create --name clients --json --database "$db" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')" || fail "notifly accounts create failed"
# The receivers listen on loopback, which a server refuses as a webhook URL
# unless private URLs are allowed.
(cd "$work" && NOTIFLY_LOG=info exec "$bin" serve --listen 127.0.0.1:0 --database "$db" \
  --data-dir "$work/data" --allow-private-urls --log-json >"$work/server.log" 2>&1) &
server_pid=$!
listen=""
for _ in $(seq 1 200); do
  listen="$(grep '"notifly serving"' "$work/server.log" 2>/dev/null | grep -oE '"listen":"[^"]+"' | head -n 1 | cut -d'"' -f4 || true)"
  [ -n "$listen" ] && break
  kill -0 "$server_pid" 2>/dev/null || { server_log; fail "the server exited at start"; }
  sleep 0.1
done
[ -n "$listen" ] || { server_log; fail "the server did not log its address within 20 s"; }
url="http://$listen"
curl -fsS "$url/readyz" >/dev/null || { server_log; fail "$url/readyz did not answer"; }
echo "server at $url"

step "fetch /openapi.json"
curl -fsS "$url/openapi.json" -o "$work/openapi.json" || { server_log; fail "GET $url/openapi.json failed"; }
echo "$(wc -c <"$work/openapi.json") bytes"

step "lint: openapi-spec-validator"
openapi-spec-validator "$work/openapi.json" || fail "openapi-spec-validator found the document invalid (above)"

step "lint: redocly lint, recommended rules ($([ "${REDOCLY_STRICT:-}" = 1 ] && echo "strict" || echo "advisory: its errors are listed, not fatal; REDOCLY_STRICT=1 makes them fatal"))"
redocly_rc=0
(cd "$here/typescript" && REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
  "$tsbin/redocly" lint --format=json --max-problems=1000 "$work/openapi.json" >"$work/redocly.json" 2>"$work/redocly.err") || redocly_rc=$?
python3 - "$work/redocly.json" <<'EOF' || { cat "$work/redocly.err" >&2; fail "redocly lint did not run (exit $redocly_rc)"; }
import json, sys
report = json.load(open(sys.argv[1]))
for p in report["problems"]:
    where = ", ".join(loc.get("pointer", "?") for loc in p.get("location", []))
    print(f"  {p['severity']:7} {p['ruleId']:35} {where}: {p['message']}")
t = report["totals"]
print(f"redocly: {t['errors']} errors, {t['warnings']} warnings")
EOF
if [ "$redocly_rc" != 0 ] && [ "${REDOCLY_STRICT:-}" = 1 ]; then
  fail "redocly lint found errors (above)"
fi

step "generate the Python client (openapi-python-client)"
rm -rf "$here/python/generated"
mkdir -p "$here/python/generated"
openapi-python-client generate --path "$work/openapi.json" --output-path "$here/python/generated/notifly_client" \
  --meta none --fail-on-warning || fail "openapi-python-client could not generate a client from the document (above)"

step "generate the TypeScript types (openapi-typescript)"
rm -rf "$here/typescript/generated"
(cd "$here/typescript" && "$tsbin/openapi-typescript" "$work/openapi.json" -o generated/notifly-api.d.ts) \
  || fail "openapi-typescript could not generate types from the document (above)"

step "type-check smoke.ts against the generated types: tsc --noEmit"
(cd "$here/typescript" && "$tsbin/tsc" --noEmit -p tsconfig.json) || fail "smoke.ts does not type-check against the generated types (above)"

step "run the Python program against the server"
(cd "$here/python" && NOTIFLY_URL="$url" NOTIFLY_API_KEY="$key" PYTHONPATH="$here/python/generated" \
  timeout 120 "$venv/bin/python" smoke.py) || { server_log; fail "the Python client's program failed (above)"; }

step "run the TypeScript program against the server"
(cd "$here/typescript" && NOTIFLY_URL="$url" NOTIFLY_API_KEY="$key" timeout 120 "$tsbin/tsx" smoke.ts) \
  || { server_log; fail "the TypeScript client's program failed (above)"; }

echo "== clients: OK: both generated clients work against the server ($((SECONDS - started)) s)"
