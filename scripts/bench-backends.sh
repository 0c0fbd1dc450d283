#!/usr/bin/env bash
# The engine's two I/O backends measured in the same run: `c10m serve --io epoll` against
# `c10m serve --io uring`, driven by the bundled load generator.
#
# The server runs pinned to core 0 with one shard; the load generator runs pinned to core 1
# with one process and one thread, so on this 2-core machine it can be the limit. Next to
# messages per second the report therefore gives messages per second of server CPU time (the
# server's own cost per message), which does not depend on how fast the load generator is.
#
#   scripts/bench-backends.sh [--duration 10s] [--rounds 3] [--out reports/bench-backends] [--rfs]
#
# On plain loopback, the sender's CPU also runs the receiver's TCP input: a send() carries
# the packet through the peer's receive path before it returns. Then most of what the server
# is charged for is the load generator's receive work, the same for both backends. `--rfs`
# (root) runs server and load generator in a network namespace of their own whose loopback
# has receive flow steering (RPS/RFS): each packet's receive processing moves to the CPU of
# the process that reads the socket, as a NIC with RFS does, so each side pays for its own
# input. It sets the host-wide net.core.rps_sock_flow_entries and restores it afterwards.
#
# Run-to-run spread on a shared virtual machine is large, so the backends alternate, round
# after round, and the report gives medians over the rounds and each round's ratio.
#
# Scenarios:
#   echo-small   100 connections, 20-byte messages, 16 in flight each
#   echo-busy    1,000 connections, 125-byte messages, 4 in flight each
#   echo-rate    1,000 connections, 125-byte messages at a fixed 100 per second each (100,000
#                messages/s in all, below what the load generator can drive): the same work
#                for both backends, so the server CPU it costs compares them directly
#   broadcast    1,000 subscribers on /pubsub, 3 publishers at 200 messages/s each
#   idle-memory  15,000 idle connections: server RSS growth per connection
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=lib/listen-addr.sh
. "$root/scripts/lib/listen-addr.sh"
duration=10s
rounds=3
out=reports/bench-backends
rfs=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --rfs) rfs=1; shift ;;
    *) echo "bench-backends: unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
cargo build -q --release -p c10m-engine -p c10m-loadtest --bins
bin=target/release

# Every process of the run is started through "${inns[@]}": nothing, or `ip netns exec NS`
# (which execs, so $! is still the process measured).
inns=()
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  if [ "$rfs" = 1 ]; then
    ip netns delete "$ns" 2>/dev/null || true
    [ -n "${flow_entries:-}" ] && sysctl -qw net.core.rps_sock_flow_entries="$flow_entries"
  fi
}
trap cleanup EXIT
if [ "$rfs" = 1 ]; then
  [ "$(id -u)" = 0 ] || { echo "bench-backends: --rfs needs root (a network namespace, a sysctl)" >&2; exit 2; }
  ns=c10m-bench-$$
  flow_entries=$(sysctl -n net.core.rps_sock_flow_entries)
  ip netns add "$ns"
  ip netns exec "$ns" sh -c 'ip link set lo up &&
    echo 3 > /sys/class/net/lo/queues/rx-0/rps_cpus &&
    echo 32768 > /sys/class/net/lo/queues/rx-0/rps_flow_cnt'
  sysctl -qw net.core.rps_sock_flow_entries=32768
  inns=(ip netns exec "$ns")
  echo "bench-backends: in network namespace $ns, loopback with RPS/RFS over cores 0-1"
fi

start_server() { # backend -> sets pid and addr
  local io=$1 log="$out/$1.server.log"
  "${inns[@]}" taskset -c 0 $bin/c10m serve --listen 127.0.0.1:0 --shards 1 --io "$io" \
    --ping-interval-ms 0 --idle-timeout-ms 0 >"$log" 2>&1 &
  pid=$!
  addr=$(listen_addr "$log" "$pid") \
    || { echo "bench-backends: $io server did not start" >&2; cat "$log" >&2; exit 1; }
  grep -q "backend: .*$( [ "$io" = uring ] && echo io_uring || echo epoll)" "$log" \
    || { echo "bench-backends: $io server runs another backend" >&2; cat "$log" >&2; exit 1; }
}

load() { # scenario backend round path loadtest-args...
  local scenario=$1 io=$2 round=$3 path=$4; shift 4
  local name="$out/$scenario.$io.r$round"
  "${inns[@]}" taskset -c 1 $bin/c10m-loadtest "$@" --target "$addr" --path "$path" --procs 1 --threads 1 \
    --server-pid "$pid" --json --quiet >"$name.json" 2>"$name.txt" || {
      echo "bench-backends: $scenario on $io failed" >&2; tail -n 20 "$name.txt" >&2; exit 1; }
}

for round in $(seq 1 "$rounds"); do
  for io in epoll uring; do
    start_server "$io"
    echo "bench-backends: round $round, --io $io on ws://$addr (pid $pid)"
    load echo-small "$io" "$round" /echo echo -n 100 --size 20 --window 16 --duration "$duration"
    load echo-busy "$io" "$round" /echo echo -n 1000 --size 125 --window 4 --duration "$duration"
    load echo-rate "$io" "$round" /echo echo -n 1000 --size 125 --msg-rate 100 --duration "$duration"
    load broadcast "$io" "$round" /pubsub broadcast -n 1000 --publishers 3 --publish-rate 200 --duration "$duration"
    load idle-memory "$io" "$round" /echo idle -n 15000 --source-ips 127.0.0.2-127.0.0.5 --rate 20000 --duration 3s
    kill "$pid"; wait "$pid" 2>/dev/null || true
    pid=""
  done
done

python3 - "$out" "$rounds" "$rfs" <<'PY'
import json, statistics, sys
out, rounds, rfs = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
print("Loopback with RPS/RFS in a network namespace (--rfs)." if rfs else "Plain loopback.")
def get(scenario, io, r):
    return json.load(open(f"{out}/{scenario}.{io}.r{r}.json"))
def measure(scenario, io, r):
    d = get(scenario, io, r)
    rate = d["broadcast"]["deliveries_per_s"] if scenario == "broadcast" else d["messages"]["received_per_s"]
    missing = d["broadcast"]["missing"] if scenario == "broadcast" else 0
    per_cpu = rate * d["elapsed_s"] / d["cpu"]["server_cpu_s"]
    return rate, per_cpu, d["messages"]["latency"], missing
med = statistics.median
print(f"Medians over {rounds} rounds; ratios are io_uring / epoll, per round.")
print()
print("| scenario | epoll msg/s | io_uring msg/s | epoll per server CPU s | io_uring per server CPU s | throughput ratio per round | per-CPU ratio per round | p50 epoll / io_uring |")
print("|---|---|---|---|---|---|---|---|")
for scenario, label in [("echo-small", "echo 100 x 20 B, window 16"),
                        ("echo-busy", "echo 1,000 x 125 B, window 4"),
                        ("echo-rate", "echo 1,000 x 125 B at 100/s each (fixed rate)"),
                        ("broadcast", "broadcast 1,000 subscribers, 3 x 200 msg/s")]:
    m = {io: [measure(scenario, io, r) for r in range(1, rounds + 1)] for io in ("epoll", "uring")}
    missing = sum(x[3] for io in m for x in m[io])
    ratios = " / ".join(f"{u[0] / e[0]:.2f}x" for e, u in zip(m["epoll"], m["uring"]))
    cpu_ratios = " / ".join(f"{u[1] / e[1]:.2f}x" for e, u in zip(m["epoll"], m["uring"]))
    p50 = {io: med(x[2]["p50_us"] for x in m[io]) for io in m}
    print(f"| {label}{f' ({missing} missing)' if missing else ''} | {med(x[0] for x in m['epoll']):,.0f} | {med(x[0] for x in m['uring']):,.0f} | "
          f"{med(x[1] for x in m['epoll']):,.0f} | {med(x[1] for x in m['uring']):,.0f} | {ratios} | {cpu_ratios} | {p50['epoll']:.0f} / {p50['uring']:.0f} µs |")
print()
print("| idle connections | epoll bytes per connection | io_uring bytes per connection |")
print("|---|---|---|")
b = {io: [get("idle-memory", io, r)["memory"]["server_bytes_per_connection"] for r in range(1, rounds + 1)] for io in ("epoll", "uring")}
print(f"| 15,000 (user space, server RSS growth; per round) | {' / '.join(f'{x:.0f}' for x in b['epoll'])} | {' / '.join(f'{x:.0f}' for x in b['uring'])} |")
k = {io: [get("idle-memory", io, r)["memory"]["kernel_bytes_per_connection"] for r in range(1, rounds + 1)] for io in ("epoll", "uring")}
print(f"| 15,000 (kernel, both ends; median) | {med(k['epoll']):,.0f} | {med(k['uring']):,.0f} |")
PY
