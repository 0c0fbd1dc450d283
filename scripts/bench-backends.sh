#!/usr/bin/env bash
# The engine's two I/O backends measured in the same run: `c10m serve --io epoll` against
# `c10m serve --io uring`, driven by the bundled load generator.
#
# The server runs pinned to core 0 with one shard; the load generator runs pinned to core 1
# with one process and one thread, so on this 2-core machine it can be the limit. Next to
# messages per second the report therefore gives messages per second of server CPU time (the
# server's own cost per message), which does not depend on how fast the load generator is.
#
#   scripts/bench-backends.sh [--duration 10s] [--out reports/bench-backends]
#
# Scenarios:
#   echo-small   100 connections, 20-byte messages, 16 in flight each
#   echo-busy    1,000 connections, 125-byte messages, 4 in flight each
#   broadcast    1,000 subscribers on /pubsub, 3 publishers at 200 messages/s each
#   idle-memory  15,000 idle connections: server RSS growth per connection
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
duration=10s
out=reports/bench-backends
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "bench-backends: unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
cargo build -q --release -p c10m-engine -p c10m-loadtest --bins
bin=target/release

start_server() { # backend -> sets pid and addr
  local io=$1 log="$out/$1.server.log"
  taskset -c 0 $bin/c10m serve --listen 127.0.0.1:0 --shards 1 --io "$io" \
    --ping-interval-ms 0 --idle-timeout-ms 0 >"$log" 2>&1 &
  pid=$!
  addr=""
  for _ in $(seq 1 100); do
    addr=$(sed -n 's#.*listening on ws://\([0-9.:]*\)/.*#\1#p' "$log" | head -n1)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "bench-backends: $io server did not start" >&2; cat "$log" >&2; exit 1; }
  grep -q "backend: .*$( [ "$io" = uring ] && echo io_uring || echo epoll)" "$log" \
    || { echo "bench-backends: $io server runs another backend" >&2; cat "$log" >&2; exit 1; }
}

load() { # scenario backend path loadtest-args...
  local scenario=$1 io=$2 path=$3; shift 3
  taskset -c 1 $bin/c10m-loadtest "$@" --target "$addr" --path "$path" --procs 1 --threads 1 \
    --server-pid "$pid" --json --quiet >"$out/$scenario.$io.json" 2>"$out/$scenario.$io.txt" || {
      echo "bench-backends: $scenario on $io failed" >&2; tail -n 20 "$out/$scenario.$io.txt" >&2; exit 1; }
}

backends="epoll uring"
for io in $backends; do
  start_server "$io"
  echo "bench-backends: --io $io on ws://$addr (pid $pid)"
  load echo-small "$io" /echo echo -n 100 --size 20 --window 16 --duration "$duration"
  load echo-busy "$io" /echo echo -n 1000 --size 125 --window 4 --duration "$duration"
  load broadcast "$io" /pubsub broadcast -n 1000 --publishers 3 --publish-rate 200 --duration "$duration"
  load idle-memory "$io" /echo idle -n 15000 --source-ips 127.0.0.2-127.0.0.5 --rate 20000 --duration 3s
  kill "$pid"; wait "$pid" 2>/dev/null || true
done

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
def get(scenario, io):
    return json.load(open(f"{out}/{scenario}.{io}.json"))
print("| scenario | backend | throughput | per server CPU second | uring / epoll (throughput, per CPU s) | p50 / p99 | server / loadgen CPU peak |")
print("|---|---|---|---|---|---|---|")
for scenario, label in [("echo-small", "echo 100 x 20 B, window 16"),
                        ("echo-busy", "echo 1,000 x 125 B, window 4"),
                        ("broadcast", "broadcast 1,000 subscribers, 3 x 200 msg/s")]:
    rows = {}
    for io in ("epoll", "uring"):
        d = get(scenario, io)
        if scenario == "broadcast":
            b = d["broadcast"]
            rate, lat = b["deliveries_per_s"], d["messages"]["latency"]
            missing = b["missing"]
        else:
            rate, lat, missing = d["messages"]["received_per_s"], d["messages"]["latency"], 0
        cpu = d["cpu"]
        per_cpu = rate * d["elapsed_s"] / cpu["server_cpu_s"] if cpu["server_cpu_s"] else float("nan")
        rows[io] = (rate, per_cpu, lat, cpu, missing)
    e, u = rows["epoll"], rows["uring"]
    for io, (rate, per_cpu, lat, cpu, missing) in rows.items():
        ratio = f"{u[0] / e[0]:.2f}x, {u[1] / e[1]:.2f}x" if io == "uring" else ""
        extra = f" ({missing} missing)" if missing else ""
        print(f"| {label} | {io} | {rate:,.0f}/s{extra} | {per_cpu:,.0f} | {ratio} | "
              f"{lat['p50_us']} / {lat['p99_us']} µs | {cpu['server_peak_pct']:.0f}% / {cpu['loadgen_peak_pct']:.0f}% |")
print()
print("| idle connections | backend | user-space bytes per connection (RSS growth) |")
print("|---|---|---|")
for io in ("epoll", "uring"):
    d = get("idle-memory", io)["memory"]
    print(f"| {d['connections']:,} | {io} | {d['server_bytes_per_connection']:.0f} |")
PY
