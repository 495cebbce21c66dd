#!/usr/bin/env bash
# Vendors Redoc's standalone bundle, which the server compiles in and serves
# at /docs (src/dashboard/reference.rs). It fetches the pinned npm package
# with `npm pack`, checks the bundle against the sha256 recorded here, makes
# the one change below, checks the result against its own recorded sha256,
# and copies it and the licence files beside this script.
#
#   bash update.sh            # re-vendor VERSION and verify it
#   bash update.sh --check    # only verify the vendored bundle (no network)
#
# The change: Redoc 2.x's side menu always shows Redocly's logo, loaded from
# their CDN, by its "API docs by Redocly" link. The page loads nothing from
# another host (its Content-Security-Policy would block the image and log a
# violation), so the logo's URL is replaced by an empty one: the browser
# requests nothing, the image fails to load, and Redoc's own error handler
# removes it. The link's text stays.
#
# To move to another version: set VERSION, empty UPSTREAM_SHA256 and
# SHA256, run it (it prints the hashes it found), review the new bundle
# (`grep -o 'https://[^"]*'` for anything else it would load from elsewhere),
# record the hashes, run it again, and change the version in
# src/dashboard/reference.rs. The server's tests check the committed bundle
# against SHA256 and the served version against VERSION.
set -euo pipefail

VERSION=2.5.4
# The bundle as published on npm (redoc@2.5.4, bundles/redoc.standalone.js).
UPSTREAM_SHA256=dcaf76612bc4a3fbcc923a8966dee2f6146a5f32e5ce1b6f02dd60cbbf89500b
# The vendored bundle: the above with the logo's URL emptied.
SHA256=3069c824f8f876f24fedbc2e98885921b250f5b20e540e435f60fa430f9a1f04

here="$(cd "$(dirname "$0")" && pwd)"
LOGO='src:"https://cdn.redoc.ly/redoc/logo-mini.svg"'

sha() { sha256sum "$1" | cut -d' ' -f1; }

verify() {
  local got
  got="$(sha "$1")"
  if [ "$got" != "$2" ]; then
    echo "sha256 mismatch for $1: got $got, recorded ${2:-nothing}" >&2
    exit 1
  fi
}

if [ "${1:-}" = "--check" ]; then
  verify "$here/redoc.standalone.js" "$SHA256"
  echo "ok: redoc $VERSION (vendored sha256 $SHA256)"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "redoc@$VERSION" >/dev/null)
tar -xzf "$work/redoc-$VERSION.tgz" -C "$work"
bundle="$work/package/bundles/redoc.standalone.js"
echo "redoc $VERSION as published: sha256 $(sha "$bundle")"
verify "$bundle" "$UPSTREAM_SHA256"

count="$(grep -o -F "$LOGO" "$bundle" | wc -l)"
if [ "$count" != 1 ]; then
  echo "expected the logo's URL once in the bundle, found it $count times: review the change" >&2
  exit 1
fi
sed "s|${LOGO}|src:\"\"|" "$bundle" >"$work/redoc.standalone.js"
echo "redoc $VERSION as vendored: sha256 $(sha "$work/redoc.standalone.js")"
verify "$work/redoc.standalone.js" "$SHA256"

cp "$work/redoc.standalone.js" "$here/redoc.standalone.js"
cp "$work/package/bundles/redoc.standalone.js.LICENSE.txt" "$here/redoc.standalone.js.LICENSE.txt"
cp "$work/package/LICENSE" "$here/LICENSE"
echo "vendored redoc $VERSION"
