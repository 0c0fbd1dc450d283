#!/usr/bin/env bash
# The SFU under load: `c10m serve --shards 1 --sfu-udp` pinned to core 0, `c10m-loadtest sfu`
# (webrtc-rs participants) pinned to core 1, at growing numbers of forwarded video streams of
# --rate packets a second of --size bytes (50 x 1,200 B: about 500 kbit/s, the brief's load).
#
#   scripts/bench-sfu.sh [--duration 10s] [--rate 50] [--size 1200] [--rooms "1 2 4"]
#                        [--verified N] [--out reports/bench-sfu]
#
# --verified N: only N subscribers per room decrypt and check every packet (and give the
# latency); the others count what they receive by RTP header, which costs the load generator
# much less, so that more streams fit on its core (see `c10m-loadtest sfu --help`).
#
# Each point: ROOMS rooms of 1 publisher and 49 subscribers (the default room limit is 50
# participants), so ROOMS x 49 forwarded streams; a fresh server per point. The table gives
# forwarded packets a second, loss, publisher-to-subscriber latency, jitter (RFC 3550, as the
# load generator sees arrivals), keyframe delay (a checked subscriber's connection to its
# first keyframe, the publisher answering the SFU's request), the server's CPU per
# forwarded packet and share of its core, its RSS, and the load generator's share of its core
# (when that nears 100% the load generator, not the server, is the limit).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=lib/listen-addr.sh
. "$root/scripts/lib/listen-addr.sh"
duration=10s
rate=50
size=1200
rooms_list="1 2 4"
out=reports/bench-sfu
verified=()
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --rooms) rooms_list=$2; shift 2 ;;
    --verified) verified=(--verified "$2"); shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "bench-sfu: unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
cargo build -q --release -p c10m -p c10m-loadtest --bins
bin=target/release

pid=""
cleanup() { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT

failed=""
for rooms in $rooms_list; do
  log="$out/server.$rooms.log"
  taskset -c 0 $bin/c10m serve --listen 127.0.0.1:0 --shards 1 --sfu-udp 127.0.0.1:0 >"$log" 2>&1 &
  pid=$!
  addr=$(listen_addr "$log" "$pid") || { echo "bench-sfu: c10m serve did not start" >&2; cat "$log" >&2; exit 1; }
  status=0
  taskset -c 1 $bin/c10m-loadtest sfu --target "$addr" --rooms "$rooms" --publishers 1 --subscribers 49 \
    --rate "$rate" --size "$size" --duration "$duration" --server-pid "$pid" --json "${verified[@]}" \
    >"$out/sfu.$rooms.json" 2>"$out/sfu.$rooms.txt" || status=$?
  case "$status" in
    0) ;;
    1) failed="$failed $rooms"; echo "bench-sfu: $rooms room(s): packets lost" >&2 ;;
    *) echo "bench-sfu: $rooms room(s) could not run" >&2; cat "$out/sfu.$rooms.txt" >&2; exit 1 ;;
  esac
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
done

python3 - "$out" "$rate" "$size" $rooms_list <<'PY'
import json, sys
out, rate, size, rooms = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
print(f"c10m serve --shards 1 --sfu-udp (core 0); c10m-loadtest sfu (core 1); {rate} packets/s x {size} B per stream")
print()
d0 = json.load(open(f"{out}/sfu.{rooms[0]}.json"))
if d0['verified'] < d0['subscribers']:
    print(f"{d0['verified']} of {d0['subscribers']} subscribers per room check every packet (and give the latency); the others count by RTP header")
    print()
print("| forwarded streams | packets/s forwarded | lost | latency p50 / p99 | jitter mean / max | keyframe delay p50 / max | server CPU per forwarded packet | server core | server RSS | load generator core |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rooms:
    d = json.load(open(f"{out}/sfu.{r}.json"))
    print(f"| {d['streams']} ({r} x 49) | {d['received_per_s']:,.0f} | {d['loss'] * 100:.3f}% "
          f"({d['expected'] - d['received']} of {d['expected']:,}) | {d['latency_p50_us'] / 1000:.1f} / {d['latency_p99_us'] / 1000:.1f} ms | "
          f"{d['jitter_mean_us'] / 1000:.1f} / {d['jitter_max_us'] / 1000:.1f} ms | "
          f"{d['keyframe_delay_p50_ms']:.0f} / {d['keyframe_delay_max_ms']:.0f} ms"
          f"{' (' + str(d['keyframes_missing']) + ' without)' if d['keyframes_missing'] else ''} | "
          f"{d['server_cpu_us_per_packet']:.1f} µs | {d['server_cpu_s'] / d['duration_s'] * 100:.0f}% | "
          f"{d['server_rss_bytes'] / 1048576:.0f} MiB | {d['loadgen_cpu_s'] / d['duration_s'] * 100:.0f}% |")
PY
if [ -n "$failed" ]; then
  echo "bench-sfu: packets lost at:$failed room(s) (reports in $out)" >&2
  exit 1
fi
