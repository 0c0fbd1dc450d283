#!/usr/bin/env bash
# What an idle connection costs, in user space and in the kernel, under one backend.
#
#   scripts/idle-memory.sh [--io epoll|uring] [--connections 15000] [--rate 3000]
#                          [--hold 10] [--server-args "..."]
#
# Starts a fresh `c10m serve` (one shard, pinned to core 0), opens --connections idle
# WebSocket connections at --rate per second with c10m-loadtest (core 1, source addresses
# 127.0.0.2-5) and holds them for --hold seconds. One second before the end it reads the
# server's RSS and /proc/slabinfo, and prints the growth per connection: server RSS, then the
# ten kernel slab caches that grew most and all slabs together. It also reads the RSS and the
# number of open descriptors halfway through the ramp, and prints the RSS added per
# connection opened after that: per-shard memory that fills as the server works (pages of
# the provided buffers the kernel has written into, staging vectors) is in the first figure,
# spread over the connections, and mostly out of the second. Slab figures are host-wide
# and cover both loopback ends (the load generator's sockets and epoll registrations too), so
# compare backends by the caches that differ (TOP=40 lists more than ten). Needs root
# (slabinfo).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=lib/listen-addr.sh
. "$root/scripts/lib/listen-addr.sh"
io=uring
connections=15000
rate=3000
hold=10
server_args=""
while [ $# -gt 0 ]; do
  case "$1" in
    --io) io=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --hold) hold=$2; shift 2 ;;
    --server-args) server_args=$2; shift 2 ;;
    *) echo "idle-memory: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -r /proc/slabinfo ] || { echo "idle-memory: /proc/slabinfo is not readable (root?)" >&2; exit 2; }
[ "$hold" -ge 3 ] || { echo "idle-memory: --hold must be at least 3 s" >&2; exit 2; }
cargo build -q --release -p c10m -p c10m-loadtest --bins
bin=target/release
tmp=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT

slabs() { awk 'NR > 2 { print $1, $3 * $4 }' /proc/slabinfo; }   # cache, bytes of its objects
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# shellcheck disable=SC2086
taskset -c 0 $bin/c10m serve --listen 127.0.0.1:0 --shards 1 --io "$io" $server_args >"$tmp/server.log" 2>&1 &
pid=$!
addr=$(listen_addr "$tmp/server.log" "$pid") \
  || { echo "idle-memory: server did not start" >&2; cat "$tmp/server.log" >&2; exit 1; }
grep "backend:" "$tmp/server.log"
sleep 0.5
slabs >"$tmp/before"
rss_before=$(rss_kb "$pid")
ramp=$(( (connections + rate - 1) / rate ))
taskset -c 1 $bin/c10m-loadtest idle -n "$connections" --source-ips 127.0.0.2-127.0.0.5 \
  --rate "$rate" --duration "$((ramp + hold))s" --target "$addr" --path /echo \
  --procs 1 --threads 1 --quiet >"$tmp/load.json" 2>"$tmp/load.txt" &
load=$!
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }
sleep "$(python3 -c "print($connections / $rate / 2)")"
rss_mid=$(rss_kb "$pid")
open_mid=$(fds "$pid")
sleep "$(python3 -c "print($ramp + $hold - 1 - $connections / $rate / 2)")"
slabs >"$tmp/after"
rss_after=$(rss_kb "$pid")
open=$(fds "$pid")
wait "$load" || { echo "idle-memory: load generator failed" >&2; tail -n 20 "$tmp/load.txt" >&2; exit 1; }
python3 - "$tmp" "$connections" "$rss_before" "$rss_after" "$open" "$io" "$rss_mid" "$open_mid" <<'PY'
import sys
tmp, n, rss0, rss1, fds, io, rss_mid, fds_mid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], int(sys.argv[7]), int(sys.argv[8])
read = lambda f: {l.split()[0]: int(l.split()[1]) for l in open(f"{tmp}/{f}")}
before, after = read("before"), read("after")
growth = sorted(((after.get(k, 0) - before.get(k, 0), k) for k in set(before) | set(after)), reverse=True)
print(f"{io}: {n} idle connections requested, {fds} descriptors open in the server near the end")
print(f"{io}: server RSS growth {(rss1 - rss0) * 1024 / n:.0f} B/conn")
if fds > fds_mid:
    print(f"{io}: server RSS added per connection opened after {fds_mid} descriptors: "
          f"{(rss1 - rss_mid) * 1024 / (fds - fds_mid):.0f} B/conn ({fds - fds_mid} connections)")
for d, k in growth[:int(__import__("os").environ.get("TOP", "10"))]:
    print(f"{io}: slab {k:<24} {d / n:7.0f} B/conn")
print(f"{io}: slab, all caches          {sum(d for d, _ in growth) / n:7.0f} B/conn")
PY
