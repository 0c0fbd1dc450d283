#!/usr/bin/env bash
# What wss:// and permessage-deflate cost c10m, measured with the bundled load generator against
# plain ws:// in the same run.
#
# Each mode runs a fresh `c10m serve --shards 1` pinned to core 0 (ws: no flags; wss: --tls-cert
# and --tls-key, a self-signed P-256 certificate made here with openssl; deflate: --deflate; and
# both), and the load generator pinned to core 1 with one process and one thread, speaking the
# same (--tls --tls-ca, --deflate).
#
#   scripts/bench-tls.sh [--duration 10s] [--io epoll|uring] [--idle 10000]
#                        [--out reports/bench-tls]
#
# Scenarios (every mode):
#   idle-memory  10,000 idle connections (--idle): server RSS growth per connection
#   echo-busy    1,000 connections, 125-byte messages, 4 in flight each
#   echo-large   500 connections, 16 KiB messages, 1 in flight each
#   broadcast    1,000 subscribers of one topic, 3 publishers at 200 messages/s each
#
# Server CPU per message: the server's CPU time over the run (from /proc/PID/stat) divided by the
# messages received (echo replies, or deliveries); the table gives it and its ratio to ws://.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=lib/listen-addr.sh
. "$root/scripts/lib/listen-addr.sh"
duration=10s
out=reports/bench-tls
io=epoll
idle=10000
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --io) io=$2; shift 2 ;;
    --idle) idle=$2; shift 2 ;;
    *) echo "bench-tls: unknown option $1" >&2; exit 2 ;;
  esac
done
case "$io" in epoll | uring) ;; *) echo "bench-tls: --io takes epoll or uring, not $io" >&2; exit 2 ;; esac
command -v openssl >/dev/null || { echo "bench-tls: needs openssl (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$out"
cargo build -q --release -p c10m -p c10m-loadtest --bins
bin=target/release

# A leaf certificate for 127.0.0.1 (CA:FALSE: webpki refuses a CA certificate as a server's).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
  -addext basicConstraints=critical,CA:FALSE -keyout "$out/key.pem" -out "$out/cert.pem" 2>/dev/null

pid=""
cleanup() { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT

modes="ws wss deflate wss-deflate"
server_flags() { # mode
  case "$1" in
    ws) ;;
    wss) echo "--tls-cert $out/cert.pem --tls-key $out/key.pem" ;;
    deflate) echo "--deflate" ;;
    wss-deflate) echo "--tls-cert $out/cert.pem --tls-key $out/key.pem --deflate" ;;
  esac
}
client_flags() { # mode
  case "$1" in
    ws) ;;
    wss) echo "--tls --tls-ca $out/cert.pem" ;;
    deflate) echo "--deflate" ;;
    wss-deflate) echo "--tls --tls-ca $out/cert.pem --deflate" ;;
  esac
}

failed=""
load() { # scenario mode path loadtest-args...
  local scenario=$1 mode=$2 path=$3 status=0; shift 3
  # shellcheck disable=SC2046
  taskset -c 1 $bin/c10m-loadtest "$@" $(client_flags "$mode") --target "$addr" --path "$path" \
    --procs 1 --threads 1 --server-pid "$pid" --json --quiet \
    >"$out/$scenario.$mode.json" 2>"$out/$scenario.$mode.txt" || status=$?
  case "$status" in
    0) ;;
    1)
      echo "bench-tls: $scenario over $mode FAILED: $(grep '^RESULT' "$out/$scenario.$mode.txt")" >&2
      failed="$failed $scenario/$mode"
      ;;
    *) echo "bench-tls: $scenario over $mode could not run" >&2; tail -n 20 "$out/$scenario.$mode.txt" >&2; exit 1 ;;
  esac
}

for mode in $modes; do
  log="$out/$mode.server.log"
  # shellcheck disable=SC2046
  taskset -c 0 $bin/c10m serve --listen 127.0.0.1:0 --shards 1 --io "$io" $(server_flags "$mode") >"$log" 2>&1 &
  pid=$!
  addr=$(listen_addr "$log" "$pid") || { echo "bench-tls: c10m serve ($mode) did not start" >&2; cat "$log" >&2; exit 1; }
  echo "bench-tls: $mode on $addr (pid $pid)"
  load idle-memory "$mode" /echo idle -n "$idle" --source-ips 127.0.0.2-127.0.0.5 --rate 20000 --duration 3s
  load echo-busy "$mode" /echo echo -n 1000 --size 125 --window 4 --duration "$duration"
  load echo-large "$mode" /echo echo -n 500 --size 16384 --window 1 --duration "$duration"
  load broadcast "$mode" /pubsub broadcast -n 1000 --publishers 3 --publish-rate 200 --duration "$duration"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
done

python3 - "$out" "$io" $modes <<'PY'
import json, sys
out, io, modes = sys.argv[1], sys.argv[2], sys.argv[3:]
label = {"ws": "ws://", "wss": "wss://", "deflate": "ws:// + deflate", "wss-deflate": "wss:// + deflate"}
def get(scenario, mode):
    return json.load(open(f"{out}/{scenario}.{mode}.json"))
def cpu_us(d):
    return d["cpu"]["server_cpu_s"] * 1e6 / max(d["messages"]["received"], 1)
print(f"c10m serve --shards 1 --io {io}, one core each for the server and the load generator")
print()
print("| scenario | mode | msg/s | server CPU per message | vs ws:// | latency p50 / p99 |")
print("|---|---|---|---|---|---|")
for scenario, text in [("echo-busy", "echo 1,000 x 125 B, window 4"),
                       ("echo-large", "echo 500 x 16 KiB, window 1"),
                       ("broadcast", "fan-out 1,000 subscribers, 3 x 200 msg/s")]:
    base = cpu_us(get(scenario, "ws"))
    for mode in modes:
        d = get(scenario, mode)
        m = d["messages"]
        failed = f" (FAILED: {'; '.join(d['failures'])})" if d["failures"] else ""
        print(f"| {text} | {label[mode]}{failed} | {m['received_per_s']:,.0f} | {cpu_us(d):.2f} µs | "
              f"{cpu_us(d) / base:.2f}x | {m['latency']['p50_us']} / {m['latency']['p99_us']} µs |")
print()
print("| idle connections | mode | server bytes per connection (RSS growth) | vs ws:// |")
print("|---|---|---|---|")
base = get("idle-memory", "ws")["memory"]["server_bytes_per_connection"]
for mode in modes:
    d = get("idle-memory", mode)
    mem = d["memory"]
    failed = f" (FAILED: {'; '.join(d['failures'])})" if d["failures"] else ""
    print(f"| {mem['connections']:,} | {label[mode]}{failed} | {mem['server_bytes_per_connection']:,.0f} | "
          f"{mem['server_bytes_per_connection'] / base:.1f}x |")
PY
if [ -n "$failed" ]; then
  echo "bench-tls: FAILED runs (marked in the tables; reports in $out):$failed" >&2
  exit 1
fi
