#!/usr/bin/env bash
# End-to-end engine benchmarks: c10m against tokio-tungstenite and fastwebsockets echo servers
# (benches/src/bin), measured in the same run with the bundled load generator.
#
# Each server runs pinned to core 0 (c10m with --shards 1; the peers on a single-threaded tokio
# runtime); the load generator runs pinned to core 1 with one process and one thread.
#
#   scripts/bench-engine.sh [--duration 10s] [--out reports/bench-engine]
#
# Scenarios:
#   echo-small   100 connections, 20-byte messages, 16 in flight each (20 B is the load
#                generator's smallest message: connection, sequence number and timestamp)
#   echo-large   500 connections, 16 KiB messages, 1 in flight each
#   idle-memory  15,000 idle connections: server RSS growth per connection
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=lib/listen-addr.sh
. "$root/scripts/lib/listen-addr.sh"
duration=10s
out=reports/bench-engine
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "bench-engine: unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
cargo build -q --release -p c10m-engine -p c10m-loadtest -p c10m-benches --bins
bin=target/release

start_server() { # name -> sets pid and addr
  local name=$1 log="$out/$1.server.log"
  case "$name" in
    c10m) taskset -c 0 $bin/c10m serve --listen 127.0.0.1:0 --shards 1 >"$log" 2>&1 & ;;
    tokio-tungstenite) taskset -c 0 $bin/echo-tokio-tungstenite 127.0.0.1:0 >"$log" 2>&1 & ;;
    fastwebsockets) taskset -c 0 $bin/echo-fastwebsockets 127.0.0.1:0 >"$log" 2>&1 & ;;
  esac
  pid=$!
  addr=$(listen_addr "$log" "$pid") \
    || { echo "bench-engine: $name did not start" >&2; cat "$log" >&2; exit 1; }
}

load() { # scenario-name server-name loadtest-args...
  local scenario=$1 name=$2; shift 2
  taskset -c 1 $bin/c10m-loadtest "$@" --target "$addr" --path /echo --procs 1 --threads 1 \
    --server-pid "$pid" --json --quiet >"$out/$scenario.$name.json" 2>"$out/$scenario.$name.txt" || {
      echo "bench-engine: $scenario against $name failed" >&2; tail -n 20 "$out/$scenario.$name.txt" >&2; exit 1; }
}

servers="c10m tokio-tungstenite fastwebsockets"
for name in $servers; do
  start_server "$name"
  echo "bench-engine: $name on ws://$addr (pid $pid)"
  load echo-small "$name" echo -n 100 --size 20 --window 16 --duration "$duration"
  load echo-large "$name" echo -n 500 --size 16384 --window 1 --duration "$duration"
  load idle-memory "$name" idle -n 15000 --source-ips 127.0.0.2-127.0.0.5 --rate 20000 --duration 3s
  kill "$pid"; wait "$pid" 2>/dev/null || true
done

python3 - "$out" $servers <<'PY'
import json, sys
out, servers = sys.argv[1], sys.argv[2:]
def get(scenario, name):
    return json.load(open(f"{out}/{scenario}.{name}.json"))
rows = []
for scenario, label in [("echo-small", "echo 100 x 20 B, window 16"), ("echo-large", "echo 500 x 16 KiB, window 1")]:
    base = get(scenario, "c10m")["messages"]["received_per_s"]
    for name in servers:
        d = get(scenario, name)
        m, cpu = d["messages"], d["cpu"]
        rows.append(f"| {label} | {name} | {m['received_per_s']:,.0f} msg/s | {base / m['received_per_s']:.2f}x | "
                    f"{m['latency']['p50_us']} / {m['latency']['p99_us']} µs | {cpu['server_peak_pct']:.0f}% / {cpu['loadgen_peak_pct']:.0f}% |")
print("| scenario | server | throughput | c10m is | RTT p50 / p99 | server / loadgen CPU peak |")
print("|---|---|---|---|---|---|")
print("\n".join(rows))
print()
print("| idle connections | server | user-space bytes per connection (RSS growth) | kernel bytes per connection (both ends) |")
print("|---|---|---|---|")
for name in servers:
    d = get("idle-memory", name)["memory"]
    print(f"| {d['connections']:,} | {name} | {d['server_bytes_per_connection']:.0f} | {d['kernel_bytes_per_connection']:.0f} |")
PY
