#!/usr/bin/env bash
# Kernel slab growth per connection, cache by cache, during a scale test of each backend.
#
#   scripts/scale-slab.sh [--connections 200000] [--hold-seconds 60] [--rate 12000]
#
# Runs scripts/scale-test.sh once with `--io uring` and once with `--io epoll` (30 s pings),
# snapshots /proc/slabinfo before each and near the end of its hold, and prints, per cache, the growth per connection under each backend and the
# difference. scale-test.sh's own kernel figure is the whole `Slab` line of /proc/meminfo;
# this splits it, which shows what else moved meanwhile. TIME_WAIT sockets of an earlier run
# expiring (`tw_sock_TCP`) would lower the growth of whichever run follows within 60 s, so
# each run waits (up to 2 minutes) until fewer than 1,000 remain.
# Needs root, like scale-test.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
connections=200000
hold=60
rate=12000
while [ $# -gt 0 ]; do
  case "$1" in
    --connections) connections=$2; shift 2 ;;
    --hold-seconds) hold=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    *) echo "scale-slab: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -r /proc/slabinfo ] || { echo "scale-slab: /proc/slabinfo is not readable (root?)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
slabs() { awk 'NR > 2 { print $1, $3 * $4 }' /proc/slabinfo; }
ramp=$(( (connections + rate - 1) / rate ))
time_wait() { ss -tan state time-wait | tail -n +2 | wc -l; }
for io in uring epoll; do
  for _ in $(seq 24); do
    [ "$(time_wait)" -lt 1000 ] && break
    sleep 5
  done
  echo "$io: $(time_wait) sockets in TIME_WAIT at the start"
  slabs >"$tmp/before.$io"
  scripts/scale-test.sh --connections "$connections" --hold-seconds "$hold" --rate "$rate" \
    --ping-interval-ms 30000 --server-args "--io $io" --out "reports/scale-slab-$io" \
    >"$tmp/log.$io" 2>&1 &
  run=$!
  # scale-test.sh tunes the host and builds first; the ramp starts a few seconds in.
  sleep $(( ramp + hold ))
  slabs >"$tmp/after.$io"
  wait "$run" || { echo "scale-slab: scale-test.sh --io $io failed" >&2; tail -n 30 "$tmp/log.$io" >&2; exit 1; }
  grep -E "^connections:|memory at" "$tmp/log.$io" | sed "s/^/$io: /"
done
python3 - "$tmp" "$connections" <<'PY'
import sys
tmp, n = sys.argv[1], int(sys.argv[2])
read = lambda f: {l.split()[0]: int(l.split()[1]) for l in open(f"{tmp}/{f}")}
growth = {}
for io in ("uring", "epoll"):
    before, after = read(f"before.{io}"), read(f"after.{io}")
    growth[io] = {k: (after.get(k, 0) - before.get(k, 0)) / n for k in set(before) | set(after)}
keys = set(growth["uring"]) | set(growth["epoll"])
diff = lambda k: growth["uring"].get(k, 0) - growth["epoll"].get(k, 0)
print(f"{'cache':28} {'epoll':>8} {'io_uring':>9} {'difference':>11}  (bytes per connection)")
for k in sorted(keys, key=lambda k: -abs(diff(k))):
    if abs(diff(k)) >= 5:
        print(f"{k:28} {growth['epoll'].get(k, 0):8.0f} {growth['uring'].get(k, 0):9.0f} {diff(k):11.0f}")
total = {io: sum(growth[io].values()) for io in growth}
print(f"{'all caches':28} {total['epoll']:8.0f} {total['uring']:9.0f} {total['uring'] - total['epoll']:11.0f}")
PY
