#!/usr/bin/env bash
# End-to-end engine benchmarks: c10m, under each I/O backend, against uWebSockets (the server
# to beat), tokio-tungstenite and fastwebsockets, measured in the same run with the bundled load
# generator.
#
# Each server runs pinned to core 0 (c10m with --shards 1; uWebSockets is one thread; the Rust
# peers, benches/src/bin, on a single-threaded tokio runtime); the load generator runs pinned to
# core 1 with one process and one thread.
#
#   scripts/bench-engine.sh [--duration 10s] [--io "epoll uring"] [--idle 10000]
#                           [--out reports/bench-engine] [--require-uws | --no-uws]
#
# uWebSockets is built at benchmark time by benches/uws/build.sh, from clones kept outside the
# repository (UWS_SRC and USOCKETS_SRC, else ${C10M_PEERS_DIR:-~/.cache/c10m-peers}/uWebSockets):
# its examples/EchoServer.cpp for the echo scenarios, and benches/uws/pubsub.cpp, c10m's /pubsub
# protocol on uWebSockets, for the fan-out (checked byte for byte against c10m's before the run).
# When the sources are absent the run goes on without it and says so; with --require-uws that
# is an error.
#
# Scenarios (every server, a fresh process each):
#   idle-memory  10,000 idle connections (--idle) on the fresh server: RSS growth per connection
#   echo-small   100 connections, 20-byte messages, 16 in flight each (20 B is the load
#                generator's smallest message: connection, sequence number and timestamp)
#   echo-large   500 connections, 16 KiB messages, 1 in flight each
#   echo-busy    1,000 connections, 125-byte messages, 4 in flight each
#   broadcast    1,000 subscribers of one topic, 3 publishers at 200 messages/s each (c10m and
#                uWebSockets: the Rust peers are echo servers only)
#
# Server CPU per message: the server's CPU time over the load generator's run (sampled from
# /proc/PID/stat each second) divided by the messages received (echo replies, or deliveries).
# The tables give c10m / uWebSockets for it, for throughput and for memory per connection.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=lib/listen-addr.sh
. "$root/scripts/lib/listen-addr.sh"
# shellcheck source=lib/uws.sh
. "$root/scripts/lib/uws.sh"
duration=10s
out=reports/bench-engine
ios="epoll uring"
idle=10000
uws_mode=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --io) ios=$2; shift 2 ;;
    --idle) idle=$2; shift 2 ;;
    --require-uws) uws_mode=require; shift ;;
    --no-uws) uws_mode=off; shift ;;
    *) echo "bench-engine: unknown option $1" >&2; exit 2 ;;
  esac
done
for io in $ios; do
  case "$io" in epoll | uring) ;; *) echo "bench-engine: --io takes epoll and/or uring, not $io" >&2; exit 2 ;; esac
done
mkdir -p "$out"
uws_prepare bench-engine "$uws_mode" # before the long build: an absent uWebSockets stops --require-uws at once
cargo build -q --release -p c10m -p c10m-loadtest -p c10m-benches --bins
bin=target/release
[ -z "$uws_dir" ] || uws_check_pubsub bench-engine "$bin/c10m" "$out"

servers=""
for io in $ios; do servers="$servers c10m-$io"; done
[ -z "$uws_dir" ] || servers="$servers uws"
servers="$servers tokio-tungstenite fastwebsockets"

pid=""         # the server the load generator measures now
server_pid="" # the server started by start_server (pid, except during uWebSockets' broadcast)
pubsub_pid="" # uWebSockets' pub/sub program, while it runs
cleanup() {
  for p in $server_pid $pubsub_pid; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

started() { # name log -> sets addr, from the line the server prints once it listens
  local name=$1 log=$2
  case "$name" in
    uws) addr=$(uws_echo_addr "$log" "$pid" "$port") ;;
    *) addr=$(listen_addr "$log" "$pid") ;;
  esac || { echo "bench-engine: $name did not start" >&2; cat "$log" >&2; exit 1; }
}

start_server() { # name -> sets pid and addr of its echo server (c10m's also serves /pubsub)
  local name=$1 log="$out/$1.server.log"
  : >"$log" # it exists before the wait below reads it
  case "$name" in
    c10m-*) taskset -c 0 $bin/c10m serve --listen 127.0.0.1:0 --shards 1 --io "${name#c10m-}" >"$log" 2>&1 & ;;
    uws) port=$(uws_free_port); UWS_PORT=$port taskset -c 0 "$uws_dir/EchoServer" >"$log" 2>&1 & ;;
    tokio-tungstenite) taskset -c 0 $bin/echo-tokio-tungstenite 127.0.0.1:0 >"$log" 2>&1 & ;;
    fastwebsockets) taskset -c 0 $bin/echo-fastwebsockets 127.0.0.1:0 >"$log" 2>&1 & ;;
  esac
  pid=$!
  server_pid=$pid
  started "$name" "$log"
  case "$name" in
    c10m-uring) grep -q "backend: io_uring" "$log" ;;
    c10m-epoll) grep -q "backend: epoll" "$log" ;;
  esac || { echo "bench-engine: $name runs another backend" >&2; cat "$log" >&2; exit 1; }
}

stop() { # pid
  kill "$1"
  wait "$1" 2>/dev/null || true
}

# A run that finished with failures (the load generator's status 1: messages lost, refused or
# mismatched) keeps its report and the benchmark goes on: its row is marked FAILED and the
# script exits 1 at the end. A run that could not be carried out stops the script.
failed=""
load() { # scenario server path loadtest-args...
  local scenario=$1 name=$2 path=$3 status=0; shift 3
  taskset -c 1 $bin/c10m-loadtest "$@" --target "$addr" --path "$path" --procs 1 --threads 1 \
    --server-pid "$pid" --json --quiet >"$out/$scenario.$name.json" 2>"$out/$scenario.$name.txt" || status=$?
  case "$status" in
    0) ;;
    1)
      echo "bench-engine: $scenario against $name FAILED: $(grep '^RESULT' "$out/$scenario.$name.txt")" >&2
      failed="$failed $scenario/$name"
      ;;
    *) echo "bench-engine: $scenario against $name could not run" >&2; tail -n 20 "$out/$scenario.$name.txt" >&2; exit 1 ;;
  esac
}

broadcast() { # server: the fan-out against its /pubsub (uWebSockets: its own program)
  local name=$1 echo_pid=$pid echo_addr=$addr
  if [ "$name" = uws ]; then
    : >"$out/uws-pubsub.server.log"
    taskset -c 0 "$uws_dir/pubsub" 0 >"$out/uws-pubsub.server.log" 2>&1 &
    pid=$!
    pubsub_pid=$pid
    started uws-pubsub "$out/uws-pubsub.server.log"
    echo "bench-engine: uws pub/sub on ws://$addr (pid $pid)"
  fi
  load broadcast "$name" /pubsub broadcast -n 1000 --publishers 3 --publish-rate 200 --duration "$duration"
  if [ "$name" = uws ]; then
    stop "$pubsub_pid"
    pubsub_pid=""
  fi
  pid=$echo_pid
  addr=$echo_addr
}

for name in $servers; do
  start_server "$name"
  echo "bench-engine: $name on ws://$addr (pid $pid)"
  load idle-memory "$name" /echo idle -n "$idle" --source-ips 127.0.0.2-127.0.0.5 --rate 20000 --duration 3s
  load echo-small "$name" /echo echo -n 100 --size 20 --window 16 --duration "$duration"
  load echo-large "$name" /echo echo -n 500 --size 16384 --window 1 --duration "$duration"
  load echo-busy "$name" /echo echo -n 1000 --size 125 --window 4 --duration "$duration"
  case "$name" in c10m-* | uws) broadcast "$name" ;; esac
  stop "$server_pid"
  pid=""
  server_pid=""
done

python3 - "$out" "$uws_sources" $servers <<'PY'
import json, sys
out, uws_sources, servers = sys.argv[1], sys.argv[2], sys.argv[3:]
c10m = [s for s in servers if s.startswith("c10m-")]
uws = "uws" in servers
label = {"c10m-epoll": "c10m (epoll)", "c10m-uring": "c10m (io_uring)", "uws": "uWebSockets"}
def get(scenario, name):
    return json.load(open(f"{out}/{scenario}.{name}.json"))
def measure(scenario, name):
    d = get(scenario, name)
    m = d["messages"]
    return {"rate": m["received_per_s"], "cpu_us": d["cpu"]["server_cpu_s"] * 1e6 / max(m["received"], 1),
            "p50": m["latency"]["p50_us"], "p99": m["latency"]["p99_us"],
            "peaks": (d["cpu"]["server_peak_pct"], d["cpu"]["loadgen_peak_pct"]),
            "failed": "; ".join(d["failures"])}
scenarios = [("echo-small", "echo 100 x 20 B, window 16"), ("echo-large", "echo 500 x 16 KiB, window 1"),
             ("echo-busy", "echo 1,000 x 125 B, window 4"),
             ("broadcast", "fan-out 1,000 subscribers, 3 x 200 msg/s")]
print(f"uWebSockets: {uws_sources}" if uws else
      "uWebSockets: NOT RUN (absent or --no-uws): no ratio to the server to beat in this run")
print()
print("| scenario | server | msg/s | server CPU per message | vs uWS: CPU per message | vs uWS: msg/s | latency p50 / p99 | server / loadgen CPU peak |")
print("|---|---|---|---|---|---|---|---|")
ratios = {}
for scenario, text in scenarios:
    names = [s for s in servers if scenario != "broadcast" or s in c10m or s == "uws"]
    m = {name: measure(scenario, name) for name in names}
    for name in names:
        x = m[name]
        vs_cpu = vs_rate = "-"
        if uws:
            vs_cpu = f"{x['cpu_us'] / m['uws']['cpu_us']:.2f}x"
            vs_rate = f"{x['rate'] / m['uws']['rate']:.2f}x"
            ratios[(scenario, name)] = vs_cpu
        failed = f" (FAILED: {x['failed']})" if x["failed"] else ""
        print(f"| {text} | {label.get(name, name)}{failed} | {x['rate']:,.0f} | {x['cpu_us']:.2f} µs | {vs_cpu} | {vs_rate} | "
              f"{x['p50']} / {x['p99']} µs | {x['peaks'][0]:.0f}% / {x['peaks'][1]:.0f}% |")
print()
print("| idle connections | server | user-space bytes per connection (RSS growth) | vs uWS | kernel bytes per connection (both ends) |")
print("|---|---|---|---|---|")
mem = {name: get("idle-memory", name)["memory"] for name in servers}
for name in servers:
    d = mem[name]
    vs = f"{d['server_bytes_per_connection'] / mem['uws']['server_bytes_per_connection']:.2f}x" if uws else "-"
    if uws:
        ratios[("idle-memory", name)] = vs
    failures = get("idle-memory", name)["failures"]
    failed = f" (FAILED: {'; '.join(failures)})" if failures else ""
    print(f"| {d['connections']:,} | {label.get(name, name)}{failed} | {d['server_bytes_per_connection']:.0f} | {vs} | {d['kernel_bytes_per_connection']:.0f} |")
if uws:
    print()
    print("c10m / uWebSockets (below 1.00x: c10m spends less):")
    print()
    print("| scenario | " + " | ".join(label[n] for n in c10m) + " |")
    print("|---|" + "---|" * len(c10m))
    for scenario, text in scenarios:
        print(f"| {text}: server CPU per message | " + " | ".join(ratios[(scenario, n)] for n in c10m) + " |")
    print(f"| {mem['uws']['connections']:,} idle: user-space bytes per connection | "
          + " | ".join(ratios[("idle-memory", n)] for n in c10m) + " |")
PY
if [ -n "$failed" ]; then
  echo "bench-engine: FAILED runs (marked in the tables; reports in $out):$failed" >&2
  exit 1
fi
