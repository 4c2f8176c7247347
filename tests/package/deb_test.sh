#!/usr/bin/env bash
# Builds the .deb (scripts/package.sh), checks what it declares, installs it with dpkg, verifies
# the systemd unit, runs the installed chatd through tests/package/installed.test.mjs, and
# purges the package again. Needs root (dpkg -i), as CI is.
set -euo pipefail
cd "$(dirname "$0")/../.."

deb=$(scripts/package.sh | tail -n 1)
echo "package: $deb"
deps=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $deps"
# Runtime libraries only: a -dev package in Depends would drag compilers onto a server.
if grep -q -- '-dev' <<<"$deps"; then echo "FAIL: the package depends on a -dev package" >&2; exit 1; fi
for lib in libhiredis librdkafka libsqlite3 liburing libboost-json libboost-url; do
  grep -q "$lib" <<<"$deps" || { echo "FAIL: Depends lacks $lib" >&2; exit 1; }
done
contents=$(dpkg-deb -c "$deb")
grep -q './usr/share/chatd/web/assets/vendor/stomp.umd.min.js' <<<"$contents" ||
  { echo "FAIL: the package lacks the pages' vendor bundles" >&2; exit 1; }

cleanup() { dpkg -P chatd >/dev/null 2>&1 || true; }
trap cleanup EXIT
dpkg -i "$deb" >/dev/null
unit=/usr/lib/systemd/system/chatd.service
test -f "$unit"
# systemd-analyze verify checks the unit's syntax and that ExecStart exists. It may warn about
# the container it runs in (no running systemd); any message naming our unit fails the test.
out=$(systemd-analyze verify "$unit" 2>&1 || true)
if grep -q 'chatd.service' <<<"$out"; then echo "FAIL: systemd-analyze verify: $out" >&2; exit 1; fi
echo "systemd-analyze verify: ok"
test -f /etc/default/chatd

CHATD_BIN=/usr/bin/chatd node --test --test-reporter=spec tests/package/installed.test.mjs
