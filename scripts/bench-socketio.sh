#!/usr/bin/env bash
# c10m against Socket.IO (with its official Redis adapter) across two nodes joined by one
# Redis, in the same run, driven by the bundled load generator:
#
#   scripts/bench-socketio.sh [--subscribers 1000] [--rate 100] [--size 64] [--duration 20s]
#                             [--rounds 1] [--write-delay-ms 0] [--out reports/bench-socketio]
#                             [--bin-dir DIR]
#
# Node A takes one publisher at --rate messages/s, node B holds --subscribers subscribers of
# the topic: every delivery crosses Redis. Three servers, each as two nodes:
#
#   c10m-v1       `c10m serve --broker redis://...`, the client protocol /connection/v1 with
#                 history on (--history-size 100: each publish is appended to the topic's
#                 history in Redis as it is published, as Centrifugo's "history on")
#   c10m-pubsub   the same nodes, the /pubsub text protocol (no history)
#   c10m-*-delay  with --write-delay-ms N (N > 0): the same two cases on two more nodes started
#                 with `--write-delay-ms N` (deliveries to a connection wait up to N ms to share
#                 one write)
#   socketio      benches/socketio/server.js under node (Socket.IO 4.8, WebSocket transport
#                 only, no compression; `io.to(topic).emit`), installed here with npm ci
#
# Every server and Redis run pinned to core 0; the load generator on core 1. Reported per
# case: deliveries, missing/duplicated, delivery latency p50/p99 from the intended publish time,
# server CPU per delivery (utime+stime of node A + node B + Redis, from /proc around the run),
# and node B's peak RSS (the subscribers' node). --rounds repeats the three cases in turn.
# Needs redis-server (Debian's), node and npm (installed when missing, as root) and 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/lib/listen-addr.sh
. "$root/scripts/lib/listen-addr.sh"
# shellcheck source=scripts/lib/debian.sh
. "$root/scripts/lib/debian.sh"

subscribers=1000
rate=100
size=64
duration=20s
rounds=1
write_delay=0
out=reports/bench-socketio
bin_dir=""
args="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --subscribers) subscribers=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --write-delay-ms) write_delay=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "bench-socketio: unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(nproc)" -ge 2 ] || { echo "bench-socketio: needs 2 cores (servers on 0, load generator on 1)" >&2; exit 2; }
need_commands redis-server:redis-server node:nodejs npm:npm
(cd benches/socketio && npm ci --no-audit --no-fund --silent)

mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.txt "$out"/cpu.tsv
if [ -z "$bin_dir" ]; then
  cargo build -q --release -p c10m -p c10m-loadtest --bins
  bin_dir=target/release
fi
c10m=$bin_dir/c10m
loadtest=$bin_dir/c10m-loadtest
[ -x "$c10m" ] && [ -x "$loadtest" ] || { echo "bench-socketio: no c10m and c10m-loadtest in $bin_dir" >&2; exit 2; }

started=() # every process this script started, stopped on exit (by pid, nothing else)
cleanup() {
  for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${started[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() { # PORT PID NAME
  for _ in $(seq 1 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench-socketio: $3 did not start" >&2
  exit 1
}

redis_port=$(free_port)
taskset -c 0 redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
  >"$out/redis.log" 2>&1 &
redis_pid=$!
started+=("$redis_pid")
wait_port "$redis_port" "$redis_pid" redis-server
broker=redis://127.0.0.1:$redis_port

c10m_node() { # NAME [FLAG...] -> sets pid and addr
  local log="$out/$1.log"
  shift
  taskset -c 0 "$c10m" serve --listen 127.0.0.1:0 --shards 1 --broker "$broker" \
    --history-size 100 "$@" >"$log" 2>&1 &
  pid=$!
  started+=("$pid")
  addr=$(listen_addr "$log" "$pid") || { echo "bench-socketio: $1 did not start" >&2; cat "$log" >&2; exit 1; }
}
sio_node() { # NAME -> sets pid and addr
  local port
  port=$(free_port)
  PORT=$port REDIS_URL=$broker taskset -c 0 node benches/socketio/server.js >"$out/$1.log" 2>&1 &
  pid=$!
  started+=("$pid")
  wait_port "$port" "$pid" "$1"
  addr=127.0.0.1:$port
}
c10m_node c10m-a; c10m_a=$pid c10m_a_addr=$addr
c10m_node c10m-b; c10m_b=$pid c10m_b_addr=$addr
cases="c10m-v1 c10m-pubsub"
if [ "$write_delay" != 0 ]; then
  c10m_node c10m-delay-a --write-delay-ms "$write_delay"; delay_a=$pid delay_a_addr=$addr
  c10m_node c10m-delay-b --write-delay-ms "$write_delay"; delay_b=$pid delay_b_addr=$addr
  cases="$cases c10m-v1-delay c10m-pubsub-delay"
fi
cases="$cases socketio"
sio_node sio-a; sio_a=$pid sio_a_addr=$addr
sio_node sio-b; sio_b=$pid sio_b_addr=$addr
echo "bench-socketio: Redis :$redis_port; c10m $c10m_a_addr + $c10m_b_addr; Socket.IO $sio_a_addr + $sio_b_addr; servers on core 0, load generator on core 1"

ticks() { # PID... -> utime+stime of all, in clock ticks
  local total=0 p stat f
  for p in "$@"; do
    stat=$(cat "/proc/$p/stat")
    read -r -a f <<<"${stat##*) }"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

failed=""
# run NAME A_PID B_PID A_ADDR B_ADDR PROTOCOL: one load-generator run; node A's, node B's and
# Redis's CPU ticks around it go to cpu.tsv.
run() {
  local name=$1 a=$2 b=$3 a_addr=$4 b_addr=$5 proto=$6 status=0 ta tb tr
  ta=$(ticks "$a") tb=$(ticks "$b") tr=$(ticks "$redis_pid")
  taskset -c 1 "$loadtest" broadcast --protocol "$proto" --subscriber-targets "$b_addr" \
    --publisher-targets "$a_addr" -n "$subscribers" --publishers 1 --publish-rate "$rate" \
    --topic "t-$name" --procs 1 --threads 1 --duration "$duration" --size "$size" \
    --server-pid "$b" --json --quiet >"$out/$name.json" 2>"$out/$name.txt" || status=$?
  printf '%s\t%s\t%s\t%s\n' "$name" $(($(ticks "$a") - ta)) $(($(ticks "$b") - tb)) \
    $(($(ticks "$redis_pid") - tr)) >>"$out/cpu.tsv"
  case "$status" in
    0) ;;
    1) echo "bench-socketio: $name FAILED: $(grep '^RESULT' "$out/$name.txt")" >&2; failed="$failed $name" ;;
    *) echo "bench-socketio: $name could not run" >&2; tail -n 20 "$out/$name.txt" >&2; exit 1 ;;
  esac
}

for round in $(seq 1 "$rounds"); do
  echo "bench-socketio: round $round of $rounds: $subscribers subscribers on node B, 1 publisher on node A at $rate/s"
  run "c10m-v1-$round" "$c10m_a" "$c10m_b" "$c10m_a_addr" "$c10m_b_addr" v1
  run "c10m-pubsub-$round" "$c10m_a" "$c10m_b" "$c10m_a_addr" "$c10m_b_addr" pubsub
  if [ "$write_delay" != 0 ]; then
    run "c10m-v1-delay-$round" "$delay_a" "$delay_b" "$delay_a_addr" "$delay_b_addr" v1
    run "c10m-pubsub-delay-$round" "$delay_a" "$delay_b" "$delay_a_addr" "$delay_b_addr" pubsub
  fi
  run "socketio-$round" "$sio_a" "$sio_b" "$sio_a_addr" "$sio_b_addr" socketio
done

python3 - "$out" "$(getconf CLK_TCK)" "$rounds" "$cases" "$write_delay" <<'PY'
import json, sys
out, hz, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cases, delay = sys.argv[4].split(), sys.argv[5]
cpu = {}
for line in open(f"{out}/cpu.tsv"):
    name, a, b, r = line.split("\t")
    cpu[name] = (int(a) / hz, int(b) / hz, int(r) / hz)

def us(v):
    return f"{v / 1000:.2f}ms" if v >= 1000 else f"{v}us"

head = ("case", "delivered", "missing", "dup", "p50", "p99", "A CPU", "B CPU", "Redis CPU",
        "per delivery", "B RSS peak", "result")
print()
print("  ".join(f"{h:>12}" for h in head))
per = {}
for rnd in range(1, rounds + 1):
    for case in cases:
        name = f"{case}-{rnd}"
        r = json.load(open(f"{out}/{name}.json"))
        b, lat = r["broadcast"], r["messages"]["latency"]
        a_s, b_s, r_s = cpu[name]
        n = b["deliveries"]
        p = (a_s + b_s + r_s) * 1e6 / n if n else float("nan")
        per.setdefault(case, []).append(p)
        rss = (r.get("memory") or {}).get("server_rss_peak")
        row = (name, n, b["missing"], b["duplicates"], us(lat["p50_us"]), us(lat["p99_us"]),
               f"{a_s:.2f}s", f"{b_s:.2f}s", f"{r_s:.2f}s", f"{p:.2f}us",
               f"{rss / 2**20:.0f}MiB" if rss else "-", "OK" if r["ok"] else "FAILED")
        print("  ".join(f"{str(v):>12}" for v in row))
print()
med = {c: sorted(v)[len(v) // 2] for c, v in per.items()}
for c in (c for c in cases if c != "socketio"):
    print(f"server CPU per delivery (A+B+Redis), {c} against Socket.IO: {med[c] / med['socketio']:.2f}x "
          f"({med[c]:.2f}us against {med['socketio']:.2f}us, median of {rounds} round(s))")
if delay != "0":
    for c in ("c10m-v1", "c10m-pubsub"):
        print(f"{c} with --write-delay-ms {delay} against without: {med[c + '-delay'] / med[c]:.2f}x")
print("CPU is utime+stime from /proc/PID/stat around each whole run (connection set-up and")
print(f"close included; 10 ms ticks). Reports and logs: {out}")
PY

echo
echo "bench-socketio: this run: scripts/bench-socketio.sh $args"
if [ -n "$failed" ]; then
  echo "bench-socketio: FAILED runs:$failed" >&2
  exit 1
fi
