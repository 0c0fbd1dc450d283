#!/usr/bin/env bash
# The demo room (c10m serve's /demo/ over /signal/v1) in headless Chromium, as CI runs it:
#   1. three participants decode each other's video and hear each other, a leaver's tile goes,
#      twenty join/leave cycles renegotiate (tests/browser/demo.mjs);
#   2. the same with ICE forced through a real coturn (TURN REST credentials from c10m);
#   3. the same through the SFU (/demo/?sfu=1, c10m serve --sfu-udp): every page has one peer
#      connection, with the server, which forwards the others' audio and video;
#   4. simulcast through the SFU: two pages publish two layers each, and one receives the
#      other's layer it asks for.
# Installs Debian's chromium and coturn when missing, and playwright-core from npm (no browser
# download). Stops only the processes it started.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/lib/debian.sh
need_commands chromium:chromium turnserver:coturn node:nodejs npm:npm

bin=${C10M_BIN:-}
if [ -z "$bin" ]; then
  cargo build -q --release -p c10m --bin c10m
  bin="$root/target/release/c10m"
fi
(cd tests/browser && npm ci --no-audit --no-fund --silent)

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

. scripts/lib/listen-addr.sh
# Starts `c10m serve` with the given flags; sets `addr` (not in a subshell, so the pid is kept
# for the cleanup).
start_server() {
  local log=$1; shift
  "$bin" serve --listen 127.0.0.1:0 "$@" >"$log" 2>&1 &
  pids+=($!)
  addr=$(listen_addr "$log" "$!") || { echo "c10m serve did not start:" >&2; cat "$log" >&2; exit 1; }
}

echo "demo room, host candidates:"
start_server "$work/serve.log"
(cd tests/browser && node demo.mjs "http://$addr")

echo "demo room through the SFU:"
start_server "$work/serve-sfu.log" --sfu-udp 127.0.0.1:0
(cd tests/browser && node demo.mjs "http://$addr" sfu) || { echo "c10m serve's log:"; tail -n 40 "$work/serve-sfu.log"; exit 1; }
echo "simulcast through the SFU:"
(cd tests/browser && node demo.mjs "http://$addr" simulcast) || { echo "c10m serve's log:"; tail -n 40 "$work/serve-sfu.log"; exit 1; }

echo "demo room, relayed through coturn:"
turn_port=$(free_port)
secret=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
turnserver -n --listening-ip=127.0.0.1 --listening-port="$turn_port" --relay-ip=127.0.0.1 \
  --min-port=49200 --max-port=49999 --use-auth-secret --static-auth-secret="$secret" \
  --realm=c10m --no-tls --no-dtls --allow-loopback-peers --no-cli \
  --pidfile "$work/turn.pid" --log-file stdout >"$work/turn.log" 2>&1 &
pids+=($!)
start_server "$work/serve-turn.log" --turn-url "turn:127.0.0.1:$turn_port?transport=udp" --turn-secret "$secret"
(cd tests/browser && node demo.mjs "http://$addr" relay)

