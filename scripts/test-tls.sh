#!/usr/bin/env bash
# wss:// with an independent client (Python's ssl + websockets, installed into .venv-py) against
# `c10m serve --tls-cert --tls-key --deflate`, under each backend: verified certificate, ALPN,
# permessage-deflate both ways, echo and pub/sub, a certificate reload by SIGHUP while a
# connection stays open (scripts/lib/tls_client.py says what each step checks).
#
#   scripts/test-tls.sh          # builds the release binary if needed
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. "$root/scripts/lib/debian.sh"
. "$root/scripts/lib/listen-addr.sh"
need_commands openssl:openssl

venv=${TLS_VENV:-$root/.venv-py}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import websockets' 2>/dev/null; then
  echo "test-tls: installing websockets into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q websockets==15.0.1
fi
bin=${C10M_BIN:-$root/target/release/c10m}
[ -n "${C10M_BIN:-}" ] || cargo build -q --release -p c10m --bin c10m

work=$(mktemp -d)
server=
cleanup() {
  [ -z "$server" ] || kill "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Two self-signed pairs for localhost: the one served first, the one a reload brings.
for name in first next; do
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$work/$name.key" -out "$work/$name.pem" 2>/dev/null
done

for io in epoll uring; do
  cp "$work/first.pem" "$work/cert.pem"
  cp "$work/first.key" "$work/key.pem"
  log="$work/server-$io.log"
  "$bin" serve --listen 127.0.0.1:0 --io "$io" --deflate \
    --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" >"$log" 2>&1 &
  server=$!
  addr=$(listen_addr "$log" "$server") || { cat "$log"; echo "test-tls: server did not start"; exit 1; }
  echo "test-tls: --io $io, wss://$addr"
  if ! "$venv/bin/python" scripts/lib/tls_client.py "$addr" "$server" \
      "$work/cert.pem" "$work/key.pem" "$work/next.pem" "$work/next.key"; then
    cat "$log"; exit 1
  fi
  kill "$server"; wait "$server" 2>/dev/null || true
  server=
done
echo "test-tls: all passed"
