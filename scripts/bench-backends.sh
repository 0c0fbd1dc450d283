#!/usr/bin/env bash
# The engine's two I/O backends measured in the same run: `c10m serve --io epoll` against
# `c10m serve --io uring`, and both against uWebSockets (the server to beat) when it is
# present, driven by the bundled load generator.
#
# The server runs pinned to core 0 with one shard (uWebSockets is one thread); the load
# generator runs pinned to core 1 with one process and one thread, so on this 2-core machine it
# can be the limit. Next to messages per second the report therefore gives messages per second
# of server CPU time (the server's own cost per message), which does not depend on how fast the
# load generator is.
#
#   scripts/bench-backends.sh [--duration 10s] [--rounds 3] [--out reports/bench-backends] [--rfs]
#                             [--require-uws | --no-uws] [--scenarios "echo-small echo-busy ..."]
#
# uWebSockets is built at benchmark time by benches/uws/build.sh from clones kept outside the
# repository (UWS_SRC and USOCKETS_SRC, else ${C10M_PEERS_DIR:-~/.cache/c10m-peers}/uWebSockets):
# its examples/EchoServer.cpp serves the echo and idle scenarios, benches/uws/pubsub.cpp (c10m's
# /pubsub protocol, checked byte for byte against c10m before the rounds) the broadcast. When
# the sources are absent the run goes on without it and says so; --require-uws makes that an
# error.
#
# On plain loopback, the sender's CPU also runs the receiver's TCP input: a send() carries
# the packet through the peer's receive path before it returns. Then most of what the server
# is charged for is the load generator's receive work, the same for both backends. `--rfs`
# (root) runs server and load generator in a network namespace of their own whose loopback
# has receive flow steering (RPS/RFS): each packet's receive processing moves to the CPU of
# the process that reads the socket, as a NIC with RFS does, so each side pays for its own
# input. It sets the host-wide net.core.rps_sock_flow_entries and restores it afterwards.
#
# Run-to-run spread on a shared virtual machine is large, so the servers take turns, round
# after round (each round starts with the next server, so none always runs first), and the
# report gives medians over the rounds and each round's ratio, in how many rounds c10m spent no
# more than uWebSockets, and the geometric mean of the rounds' ratios with a 95% confidence
# interval: "below" or "ABOVE" only when the whole interval is. --scenarios runs only the named
# scenarios (default: all), so more rounds of the close ones fit in a run.
#
# Scenarios:
#   echo-small   100 connections, 20-byte messages, 16 in flight each
#   echo-large   500 connections, 16 KiB messages, 1 in flight each (more bytes in flight than
#                io_uring's provided buffers hold: receives run out of buffers)
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
# shellcheck source=lib/uws.sh
. "$root/scripts/lib/uws.sh"
duration=10s
rounds=3
out=reports/bench-backends
rfs=0
uws_mode=auto
all_scenarios="echo-small echo-large echo-busy echo-rate broadcast idle-memory"
scenarios=$all_scenarios
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --rfs) rfs=1; shift ;;
    --require-uws) uws_mode=require; shift ;;
    --no-uws) uws_mode=off; shift ;;
    --scenarios) scenarios=$2; shift 2 ;;
    *) echo "bench-backends: unknown option $1" >&2; exit 2 ;;
  esac
done
for s in $scenarios; do
  case " $all_scenarios " in
    *" $s "*) ;;
    *) echo "bench-backends: unknown scenario $s (known: $all_scenarios)" >&2; exit 2 ;;
  esac
done
[ -n "${scenarios// /}" ] || { echo "bench-backends: --scenarios names none" >&2; exit 2; }
runs() { case " $scenarios " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
mkdir -p "$out"
uws_prepare bench-backends "$uws_mode" # before the long build: an absent uWebSockets stops --require-uws at once
cargo build -q --release -p c10m -p c10m-loadtest --bins
bin=target/release
[ -z "$uws_dir" ] || uws_check_pubsub bench-backends "$bin/c10m" "$out"
servers="epoll uring"
[ -z "$uws_dir" ] || servers="$servers uws"

# Every process of the run is started through "${inns[@]}": nothing, or `ip netns exec NS`
# (which execs, so $! is still the process measured).
inns=()
pid=""         # the server the load generator measures now
server_pid="" # the server started by start_server (pid, except during uWebSockets' broadcast)
pubsub_pid="" # uWebSockets' pub/sub program, while it runs
cleanup() {
  for p in $server_pid $pubsub_pid; do kill "$p" 2>/dev/null || true; done
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

start_server() { # epoll|uring|uws -> sets pid and addr (uWebSockets: its echo server)
  local io=$1 log="$out/$1.server.log" port=""
  : >"$log"
  if [ "$io" = uws ]; then
    port=$(uws_free_port)
    UWS_PORT=$port "${inns[@]}" taskset -c 0 "$uws_dir/EchoServer" >"$log" 2>&1 &
    pid=$!
    server_pid=$pid
    addr=$(uws_echo_addr "$log" "$pid" "$port") \
      || { echo "bench-backends: uWebSockets' EchoServer did not start" >&2; cat "$log" >&2; exit 1; }
    return
  fi
  "${inns[@]}" taskset -c 0 $bin/c10m serve --listen 127.0.0.1:0 --shards 1 --io "$io" \
    --ping-interval-ms 0 --idle-timeout-ms 0 >"$log" 2>&1 &
  pid=$!
  server_pid=$pid
  addr=$(listen_addr "$log" "$pid") \
    || { echo "bench-backends: $io server did not start" >&2; cat "$log" >&2; exit 1; }
  grep -q "backend: .*$( [ "$io" = uring ] && echo io_uring || echo epoll)" "$log" \
    || { echo "bench-backends: $io server runs another backend" >&2; cat "$log" >&2; exit 1; }
}

# A run that finished with failures (the load generator's status 1: messages lost, refused or
# mismatched) keeps its report and the rounds go on: the tables mark it FAILED and the script
# exits 1 at the end. A run that could not be carried out stops the script.
failed=""
load() { # scenario backend round path loadtest-args...
  local scenario=$1 io=$2 round=$3 path=$4 status=0; shift 4
  local name="$out/$scenario.$io.r$round"
  "${inns[@]}" taskset -c 1 $bin/c10m-loadtest "$@" --target "$addr" --path "$path" --procs 1 --threads 1 \
    --server-pid "$pid" --json --quiet >"$name.json" 2>"$name.txt" || status=$?
  case "$status" in
    0) ;;
    1)
      echo "bench-backends: $scenario on $io, round $round, FAILED: $(grep '^RESULT' "$name.txt")" >&2
      failed="$failed $scenario/$io/r$round"
      ;;
    *) echo "bench-backends: $scenario on $io could not run" >&2; tail -n 20 "$name.txt" >&2; exit 1 ;;
  esac
}

broadcast() { # backend round: the broadcast against its /pubsub (uWebSockets: its own program,
  # started beside its idle echo server, which then takes the idle scenario as c10m does)
  local io=$1 round=$2 echo_pid=$pid echo_addr=$addr log="$out/uws-pubsub.server.log"
  if [ "$io" = uws ]; then
    : >"$log"
    "${inns[@]}" taskset -c 0 "$uws_dir/pubsub" 0 >"$log" 2>&1 &
    pid=$!
    pubsub_pid=$pid
    addr=$(listen_addr "$log" "$pid") \
      || { echo "bench-backends: uWebSockets' pubsub did not start" >&2; cat "$log" >&2; exit 1; }
  fi
  load broadcast "$io" "$round" /pubsub broadcast -n 1000 --publishers 3 --publish-rate 200 --duration "$duration"
  if [ "$io" = uws ]; then
    kill "$pubsub_pid"; wait "$pubsub_pid" 2>/dev/null || true
    pubsub_pid=""
  fi
  pid=$echo_pid
  addr=$echo_addr
}

for round in $(seq 1 "$rounds"); do
  # This round's order: the list rotated by one more each round.
  read -ra order <<<"$servers"
  shift_by=$(( (round - 1) % ${#order[@]} ))
  order=("${order[@]:shift_by}" "${order[@]:0:shift_by}")
  for io in "${order[@]}"; do
    start_server "$io"
    echo "bench-backends: round $round, $([ "$io" = uws ] && echo uWebSockets || echo "--io $io") on ws://$addr (pid $pid)"
    ! runs echo-small || load echo-small "$io" "$round" /echo echo -n 100 --size 20 --window 16 --duration "$duration"
    ! runs echo-large || load echo-large "$io" "$round" /echo echo -n 500 --size 16384 --window 1 --duration "$duration"
    ! runs echo-busy || load echo-busy "$io" "$round" /echo echo -n 1000 --size 125 --window 4 --duration "$duration"
    ! runs echo-rate || load echo-rate "$io" "$round" /echo echo -n 1000 --size 125 --msg-rate 100 --duration "$duration"
    ! runs broadcast || broadcast "$io" "$round"
    ! runs idle-memory || load idle-memory "$io" "$round" /echo idle -n 15000 --source-ips 127.0.0.2-127.0.0.5 --rate 20000 --duration 3s
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
    pid=""
    server_pid=""
  done
done

python3 - "$out" "$rounds" "$rfs" "$uws_sources" "$scenarios" <<'PY'
import json, math, statistics, sys
out, rounds, rfs, uws_sources = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
ran = sys.argv[5].split()
uws = bool(uws_sources)
print("Loopback with RPS/RFS in a network namespace (--rfs)." if rfs else "Plain loopback.")
print(f"uWebSockets: {uws_sources}" if uws else
      "uWebSockets: NOT RUN (absent or --no-uws): no ratio to the server to beat in this run")
def get(scenario, io, r):
    return json.load(open(f"{out}/{scenario}.{io}.r{r}.json"))
def measure(scenario, io, r):
    d = get(scenario, io, r)
    rate = d["broadcast"]["deliveries_per_s"] if scenario == "broadcast" else d["messages"]["received_per_s"]
    missing = d["broadcast"]["missing"] if scenario == "broadcast" else 0
    per_cpu = rate * d["elapsed_s"] / d["cpu"]["server_cpu_s"]
    return rate, per_cpu, d["messages"]["latency"], missing
def failed(scenario, servers):
    runs = [f"{io} r{r}" for io in servers for r in range(1, rounds + 1) if get(scenario, io, r)["failures"]]
    return f" (FAILED: {', '.join(runs)})" if runs else ""
med = statistics.median
scenarios = [("echo-small", "echo 100 x 20 B, window 16"),
             ("echo-large", "echo 500 x 16 KiB, window 1"),
             ("echo-busy", "echo 1,000 x 125 B, window 4"),
             ("echo-rate", "echo 1,000 x 125 B at 100/s each (fixed rate)"),
             ("broadcast", "broadcast 1,000 subscribers, 3 x 200 msg/s")]
scenarios = [x for x in scenarios if x[0] in ran]
print(f"Medians over {rounds} rounds; ratios are io_uring / epoll, per round.")
print()
print("| scenario | epoll msg/s | io_uring msg/s | epoll per server CPU s | io_uring per server CPU s | throughput ratio per round | per-CPU ratio per round | p50 epoll / io_uring |")
print("|---|---|---|---|---|---|---|---|")
for scenario, label in scenarios:
    m = {io: [measure(scenario, io, r) for r in range(1, rounds + 1)] for io in ("epoll", "uring")}
    missing = sum(x[3] for io in m for x in m[io])
    ratios = " / ".join(f"{u[0] / e[0]:.2f}x" for e, u in zip(m["epoll"], m["uring"]))
    cpu_ratios = " / ".join(f"{u[1] / e[1]:.2f}x" for e, u in zip(m["epoll"], m["uring"]))
    p50 = {io: med(x[2]["p50_us"] for x in m[io]) for io in m}
    print(f"| {label}{f' ({missing} missing)' if missing else ''}{failed(scenario, ('epoll', 'uring'))} | {med(x[0] for x in m['epoll']):,.0f} | {med(x[0] for x in m['uring']):,.0f} | "
          f"{med(x[1] for x in m['epoll']):,.0f} | {med(x[1] for x in m['uring']):,.0f} | {ratios} | {cpu_ratios} | {p50['epoll']:.0f} / {p50['uring']:.0f} µs |")
# Two-sided 95% quantiles of Student's t for 1 to 20 degrees of freedom (rounds - 1); past 20
# the last one (slightly wide).
T975 = [12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23,
        2.20, 2.18, 2.16, 2.14, 2.13, 2.12, 2.11, 2.10, 2.09, 2.09]
def paired(rel, ok):
    """The rounds' ratios as one figure: their geometric mean with a 95% confidence interval
    (each round pairs the two servers on the same machine state; the log ratios are taken as
    independent and roughly normal), and what the interval says against 1.00x. Only rounds
    where neither run FAILED count (`ok`): a server that fell behind has no comparable cost."""
    logs = [math.log(x) for x, good in zip(rel, ok) if good]
    left_out = f", {len(rel) - len(logs)} FAILED round(s) left out" if len(logs) < len(rel) else ""
    if not logs:
        return "no round without failures"
    mean = statistics.mean(logs)
    if len(logs) < 2:
        return f"{math.exp(mean):.2f}x (one round: no interval{left_out})"
    half = T975[min(len(logs) - 2, len(T975) - 1)] * statistics.stdev(logs) / math.sqrt(len(logs))
    lo, hi = math.exp(mean - half), math.exp(mean + half)
    verdict = "below" if hi < 1 else "ABOVE" if lo > 1 else "not distinguishable from 1.00x"
    return f"{math.exp(mean):.2f}x ({lo:.2f}-{hi:.2f}): {verdict}{left_out}"
if uws:
    def cpu_us(scenario, io, r):
        d = get(scenario, io, r)
        return d["cpu"]["server_cpu_s"] * 1e6 / max(d["messages"]["received"], 1)
    print()
    print("c10m / uWebSockets, server CPU per message (server CPU time over the run / messages received), "
          "per round; below 1.00x c10m spends less.")
    print()
    print("| scenario | uWS msg/s | uWS per message | epoll per message | io_uring per message | epoll / uWS per round | io_uring / uWS per round | median epoll / uWS, io_uring / uWS | rounds at or below uWS: epoll, io_uring | epoll / uWS: geometric mean (95% interval) | io_uring / uWS: geometric mean (95% interval) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for scenario, label in scenarios:
        c = {io: [cpu_us(scenario, io, r) for r in range(1, rounds + 1)] for io in ("epoll", "uring", "uws")}
        rel = {io: [x / u for x, u in zip(c[io], c["uws"])] for io in ("epoll", "uring")}
        missing = sum(measure(scenario, "uws", r)[3] for r in range(1, rounds + 1))
        ok = {io: [not get(scenario, io, r)["failures"] and not get(scenario, "uws", r)["failures"]
                   for r in range(1, rounds + 1)] for io in ("epoll", "uring")}
        print(f"| {label}{f' (uWS: {missing} missing)' if missing else ''}{failed(scenario, ('uws',))} | {med(measure(scenario, 'uws', r)[0] for r in range(1, rounds + 1)):,.0f} | "
              f"{med(c['uws']):.2f} µs | {med(c['epoll']):.2f} µs | {med(c['uring']):.2f} µs | "
              f"{' / '.join(f'{x:.2f}x' for x in rel['epoll'])} | {' / '.join(f'{x:.2f}x' for x in rel['uring'])} | "
              f"{med(rel['epoll']):.2f}x, {med(rel['uring']):.2f}x | "
              f"{sum(x <= 1 for x in rel['epoll'])} of {rounds}, {sum(x <= 1 for x in rel['uring'])} of {rounds} | "
              f"{paired(rel['epoll'], ok['epoll'])} | {paired(rel['uring'], ok['uring'])} |")
if "idle-memory" not in ran:
    sys.exit(0)
servers = ("epoll", "uring", "uws") if uws else ("epoll", "uring")
names = {"epoll": "epoll", "uring": "io_uring", "uws": "uWebSockets"}
print()
print("| idle connections | " + " | ".join(f"{names[io]} bytes per connection" for io in servers) + " |")
print("|---|" + "---|" * len(servers))
b = {io: [get("idle-memory", io, r)["memory"]["server_bytes_per_connection"] for r in range(1, rounds + 1)] for io in servers}
print(f"| 15,000 (user space, server RSS growth; per round){failed('idle-memory', servers)} | " + " | ".join(" / ".join(f"{x:.0f}" for x in b[io]) for io in servers) + " |")
k = {io: [get("idle-memory", io, r)["memory"]["kernel_bytes_per_connection"] for r in range(1, rounds + 1)] for io in servers}
print("| 15,000 (kernel, both ends; median) | " + " | ".join(f"{med(k[io]):,.0f}" for io in servers) + " |")
if uws:
    print("| c10m / uWebSockets, user space (per round) | "
          + " | ".join(" / ".join(f"{x / u:.2f}x" for x, u in zip(b[io], b["uws"])) for io in ("epoll", "uring")) + " | 1.00x |")
PY
if [ -n "$failed" ]; then
  echo "bench-backends: FAILED runs (marked in the tables; reports in $out):$failed" >&2
  exit 1
fi
