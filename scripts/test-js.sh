#!/usr/bin/env bash
# scripts/test-js.sh: the JavaScript client (clients/js) against real c10m servers, as CI runs it.
#   1. builds c10m (cargo build --release -p c10m; or takes $C10M_BIN as it is), installs the
#      client's dev dependencies (npm ci: ws, playwright-core; no browser download) and Debian's
#      redis-server and chromium when missing;
#   2. node tests (node:test, files in parallel): the client's logic against a fake server
#      (backoff, heartbeat timeout, close codes, buffering around a subscribe reply, gaps,
#      commands), then against `c10m serve` with HS256 tokens (pub/sub with offsets, history,
#      presence, send, errors, token refresh past the first token's expiry), then failover: a
#      Redis and two `c10m serve --broker` nodes, kill -9 of the subscriber's node, recovery on
#      the other with 0 lost and 0 duplicated;
#   3. the browser test: headless Chromium imports clients/js/c10m.js from a static page and does
#      the same failover with recovery and token refresh.
# The tests start their servers themselves (--listen 127.0.0.1:0, address read from the banner)
# and record each pid in a file; on exit this script kills those pids (and only those).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/lib/debian.sh

step() { printf '\n==> js: %s\n' "$*"; }

step "dependencies (Debian's redis-server and chromium, npm ci in clients/js)"
need_commands redis-server:redis-server chromium:chromium node:nodejs npm:npm
bin=${C10M_BIN:-}
if [ -z "$bin" ]; then
  cargo build -q --release -p c10m
  bin="$root/target/release/c10m"
fi
(cd clients/js && npm ci --no-audit --no-fund --silent)

work=$(mktemp -d)
export C10M_BIN=$bin C10M_JS_WORK=$work C10M_JS_PIDS=$work/pids
C10M_TOKEN_HS256_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export C10M_TOKEN_HS256_SECRET
: >"$C10M_JS_PIDS"
cleanup() {
  local pid comm
  while read -r pid; do
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
    case $comm in c10m | redis-server) kill -9 "$pid" 2>/dev/null || true ;; esac
  done <"$C10M_JS_PIDS"
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

cd clients/js
step "node tests (fake server, one node, failover across two nodes joined by Redis)"
node --test --test-timeout=60000 --test-force-exit --test-concurrency=4 test/unit.test.mjs test/server.test.mjs test/failover.test.mjs

step "browser test (headless Chromium: subscribe, token refresh, kill -9 of its node, recovery)"
CHROMIUM=$(command -v chromium) node --test --test-timeout=60000 --test-force-exit test/browser.test.mjs
