#!/usr/bin/env bash
# Scale-out measured against one process, in the same run: a redis-server and N `c10m serve
# --broker` nodes against one node with the in-process broker, driven by the bundled load
# generator.
#
#   scripts/bench-cluster.sh [--nodes 3] [--subscribers 1000] [--deliveries 10k,100k]
#                            [--publish-rates 10k,20k,40k] [--publishers 10] [--size 64]
#                            [--duration 10s] [--out reports/bench-cluster] [--bin-dir DIR]
#
# Every server (the nodes, Redis, the single node) runs pinned to core 0 with one shard; the
# load generator runs pinned to core 1 with one process and one thread, as in the other bench
# scripts. Three measurements:
#
#   latency     for each --deliveries D: S = --subscribers subscribers, one publisher at D/S
#               messages/s. same-node: all on the single node (in-process broker). cross-node:
#               subscribers on nodes 2..N, the publisher on node 1, so every delivery crosses
#               Redis. Delivery latency p50/p99/p99.9 from the intended publish time.
#   cpu         the same runs: server CPU time (utime+stime from /proc/PID/stat of every node,
#               read before and after each run, connection set-up included) per delivery, and
#               Redis's separately; cross-node against same-node is the cost of the broker for
#               fan-out, where each node gets one Redis message per publish and fans it out
#               locally (the issue's goal: at most 1.2x).
#   throughput  for each --publish-rates R: --publishers P on node 1 publish R messages/s in all,
#               one subscriber on node 2 receives them through Redis: publishes/s delivered,
#               what was missing, latency, and Redis's and node 1's CPU per publish.
#
# Needs redis-server (Debian's; installed when missing, as root) and 2 cores. A run that ends
# with failures (load generator exit status 1: messages missing or duplicated) is kept and
# marked FAILED, and the script exits 1 at the end; one that cannot run stops the script.
# Reports (JSON and text) and the servers' logs go to --out. --bin-dir takes the binaries from
# DIR instead of building target/release.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/lib/listen-addr.sh
. "$root/scripts/lib/listen-addr.sh"
# shellcheck source=scripts/lib/debian.sh
. "$root/scripts/lib/debian.sh"

nodes=3
subscribers=1000
deliveries=10k,100k
publish_rates=10k,20k,40k
publishers=10
size=64
duration=10s
out=reports/bench-cluster
bin_dir=""
args="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes=$2; shift 2 ;;
    --subscribers) subscribers=$2; shift 2 ;;
    --deliveries) deliveries=$2; shift 2 ;;
    --publish-rates) publish_rates=$2; shift 2 ;;
    --publishers) publishers=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "bench-cluster: unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$nodes" -ge 2 ] 2>/dev/null || { echo "bench-cluster: --nodes must be 2 or more" >&2; exit 2; }
[ "$(nproc)" -ge 2 ] || { echo "bench-cluster: needs 2 cores (servers on 0, load generator on 1)" >&2; exit 2; }
need_commands redis-server:redis-server
count() { # 10k, 1m, 2_000 -> a whole number
  python3 - "$1" <<'PY'
import sys
t = sys.argv[1].replace("_", "").replace(",", "").lower()
m = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
print(int(float(t[:-1] if m > 1 else t) * m))
PY
}

mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.txt "$out"/cpu.tsv
if [ -z "$bin_dir" ]; then
  cargo build -q --release -p c10m -p c10m-loadtest --bins
  bin_dir=target/release
fi
c10m=$bin_dir/c10m
loadtest=$bin_dir/c10m-loadtest
if [ ! -x "$c10m" ] || [ ! -x "$loadtest" ]; then
  echo "bench-cluster: no c10m and c10m-loadtest in $bin_dir" >&2
  exit 2
fi

started=() # every process this script started, stopped on exit (by pid, nothing else)
cleanup() {
  for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${started[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Redis, pinned with the servers, without persistence.
redis_port=$(free_port)
taskset -c 0 redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
  >"$out/redis.log" 2>&1 &
redis_pid=$!
started+=("$redis_pid")
for _ in $(seq 1 100); do
  [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ] && break
  kill -0 "$redis_pid" 2>/dev/null || { echo "bench-cluster: redis-server did not start" >&2; cat "$out/redis.log" >&2; exit 1; }
  sleep 0.1
done
[ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ] || { echo "bench-cluster: redis-server did not answer" >&2; exit 1; }
broker=redis://127.0.0.1:$redis_port

start_node() { # NAME [serve args...] -> sets pid and addr
  local name=$1 log="$out/$1.log"; shift
  taskset -c 0 "$c10m" serve --listen 127.0.0.1:0 --shards 1 --ping-interval-ms 0 \
    --idle-timeout-ms 0 "$@" >"$log" 2>&1 &
  pid=$!
  started+=("$pid")
  addr=$(listen_addr "$log" "$pid") || { echo "bench-cluster: $name did not start" >&2; cat "$log" >&2; exit 1; }
}
node_pids=() node_addrs=()
for i in $(seq 1 "$nodes"); do
  start_node "node$i" --broker "$broker"
  node_pids+=("$pid")
  node_addrs+=("$addr")
done
start_node single
single_pid=$pid single_addr=$addr
echo "bench-cluster: Redis on $redis_port (pid $redis_pid), nodes ${node_addrs[*]} (pids ${node_pids[*]}), single node $single_addr (pid $single_pid); servers on core 0, load generator on core 1"

ticks() { # PID... -> utime+stime of all, in clock ticks
  local total=0 p stat f
  for p in "$@"; do
    stat=$(cat "/proc/$p/stat")
    read -r -a f <<<"${stat##*) }" # after "PID (COMM) ": state is f[0], utime f[11], stime f[12]
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

failed=""
servers=("$single_pid" "${node_pids[@]}" "$redis_pid") # the columns of cpu.tsv, in this order
# run NAME loadtest-args...: one load-generator run; records every server's CPU ticks around
# it in cpu.tsv (name, then the single node, node 1..N and Redis).
run() {
  local name=$1 status=0 before=() line p i=0; shift
  for p in "${servers[@]}"; do before+=("$(ticks "$p")"); done
  taskset -c 1 "$loadtest" broadcast "$@" --procs 1 --threads 1 --duration "$duration" \
    --size "$size" --json --quiet >"$out/$name.json" 2>"$out/$name.txt" || status=$?
  line=$name
  for p in "${servers[@]}"; do
    line="$line"$'\t'$(($(ticks "$p") - before[i]))
    i=$((i + 1))
  done
  echo "$line" >>"$out/cpu.tsv"
  case "$status" in
    0) ;;
    1) echo "bench-cluster: $name FAILED: $(grep '^RESULT' "$out/$name.txt")" >&2; failed="$failed $name" ;;
    *) echo "bench-cluster: $name could not run" >&2; tail -n 20 "$out/$name.txt" >&2; exit 1 ;;
  esac
}

subs_targets=$(IFS=,; echo "${node_addrs[*]:1}")
for d in ${deliveries//,/ }; do
  rate=$(python3 -c "print($(count "$d") / $subscribers)")
  echo "bench-cluster: $d deliveries/s: $subscribers subscribers, 1 publisher at $rate/s"
  run "same-$d" --target "$single_addr" -n "$subscribers" --publishers 1 \
    --publish-rate "$rate" --topic "same-$d"
  run "cross-$d" --subscriber-targets "$subs_targets" \
    --publisher-targets "${node_addrs[0]}" -n "$subscribers" --publishers 1 \
    --publish-rate "$rate" --topic "cross-$d"
done
for r in ${publish_rates//,/ }; do
  per=$(python3 -c "print($(count "$r") / $publishers)")
  echo "bench-cluster: $r publishes/s through Redis: $publishers publishers at $per/s on node 1, 1 subscriber on node 2"
  run "redis-$r" --subscriber-targets "${node_addrs[1]}" \
    --publisher-targets "${node_addrs[0]}" -n 1 --publishers "$publishers" --publish-rate "$per" \
    --topic "through-$r"
done

python3 - "$out" "$(getconf CLK_TCK)" "$nodes" "$subscribers" "$deliveries" "$publish_rates" <<'PY'
import json, sys
out, hz, nodes, subs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
deliveries, rates = sys.argv[5].split(","), sys.argv[6].split(",")
# name -> (single node, [node 1..N], Redis), CPU seconds
cpu = {}
for line in open(f"{out}/cpu.tsv"):
    name, *ticks = line.split("\t")
    s = [int(t) / hz for t in ticks]
    cpu[name] = (s[0], s[1:-1], s[-1])

def report(name):
    with open(f"{out}/{name}.json") as f:
        return json.load(f)

def us(v):
    return f"{v / 1000:.2f}ms" if v >= 1000 else f"{v}us"

def per(cpu_s, n):
    return f"{cpu_s * 1e6 / n:.2f}us" if n else "-"

print()
print(f"cross-node delivery (subscribers on nodes 2-{nodes}, publisher on node 1, through Redis)")
print(f"against same-node (one node, in-process broker); {subs} subscribers, 1 publisher;")
print("server CPU: the single node (same-node), all N nodes (cross-node)")
head = ("deliveries/s", "case", "delivered/s", "missing", "p50", "p99", "p99.9",
        "server CPU", "per delivery", "Redis CPU", "result")
print("  ".join(f"{h:>12}" for h in head))
ratios = []
for d in deliveries:
    per_delivery = {}
    for case in ("same", "cross"):
        name = f"{case}-{d}"
        r = report(name)
        b, lat = r["broadcast"], r["messages"]["latency"]
        single, nodes_s, redis = cpu[name]
        server = single if case == "same" else sum(nodes_s)
        per_delivery[case] = server / b["deliveries"] if b["deliveries"] else None
        row = (d, f"{case}-node", f"{b['deliveries_per_s']:.0f}", b["missing"], us(lat["p50_us"]),
               us(lat["p99_us"]), us(lat["p999_us"]), f"{server:.2f}s",
               per(server, b["deliveries"]), f"{redis:.2f}s" if case == "cross" else "-",
               "OK" if r["ok"] else "FAILED")
        print("  ".join(f"{str(v):>12}" for v in row))
    if per_delivery["same"] and per_delivery["cross"]:
        ratios.append((d, per_delivery["cross"] / per_delivery["same"]))
for d, x in ratios:
    print(f"server CPU per delivery at {d}/s, Redis broker against in-process: {x:.2f}x (goal: at most 1.2x; Redis's own CPU not included)")

print()
print("publishes through Redis (publishers on node 1, one subscriber on node 2)")
head = ("offered/s", "published/s", "delivered/s", "missing", "p50", "p99", "node 1 CPU",
        "per publish", "node 2 CPU", "per publish", "Redis CPU", "per publish", "result")
print("  ".join(f"{h:>12}" for h in head))
for rate in rates:
    name = f"redis-{rate}"
    r = report(name)
    b, m, lat = r["broadcast"], r["messages"], r["messages"]["latency"]
    _, nodes_s, redis = cpu[name]
    n1, n2, sent = nodes_s[0], nodes_s[1], m["sent"]
    row = (rate, f"{m['sent_per_s']:.0f}", f"{b['deliveries_per_s']:.0f}", b["missing"],
           us(lat["p50_us"]), us(lat["p99_us"]), f"{n1:.2f}s", per(n1, sent), f"{n2:.2f}s",
           per(n2, sent), f"{redis:.2f}s", per(redis, sent), "OK" if r["ok"] else "FAILED")
    print("  ".join(f"{str(v):>12}" for v in row))
print()
print("CPU is utime+stime from /proc/PID/stat around each whole run (connection set-up and")
print("close included; 10 ms ticks). Reports and logs: " + out)
PY

echo
echo "bench-cluster: for the figures in docs/BENCHMARKS.md, on a quiet machine (nothing else running):"
echo "  scripts/bench-cluster.sh --nodes 3 --subscribers 1000 --deliveries 10k,100k --publish-rates 10k,20k,40k,80k --duration 20s"
echo "  (this run: scripts/bench-cluster.sh $args)"
if [ -n "$failed" ]; then
  echo "bench-cluster: FAILED runs:$failed" >&2
  exit 1
fi
