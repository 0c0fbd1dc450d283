#!/usr/bin/env bash
# scripts/scale-test.sh: hold N WebSocket connections on this host, heartbeats on, and report.
#
# Starts K `c10m serve` processes on one loopback port (SO_REUSEPORT spreads connections over
# them; each stays under its own fd limit), applies the kernel settings N connections need with
# scripts/tune.sh (and restores them afterwards, whatever happens), holds the connections with
# c10m-loadtest's `idle` scenario from several worker processes and source addresses, and
# writes the reports. Everything stays on 127.0.0.0/8 and stops by itself.
set -euo pipefail

PROG=scale-test.sh
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    cat <<'EOF'
usage: scripts/scale-test.sh --connections N [options]

  --connections N        connections to open and hold (required)
  --hold-seconds S       how long to hold them once all are open (default 60)
  --servers K            c10m serve processes on the port (default: one per 15,000 connections)
  --procs P              load-generator worker processes (default: as the fd limit requires)
  --rate R               connections opened per second (default 10000)
  --ramp-seconds S       stop opening connections after S seconds (default: N/R + 30)
  --ping-interval-ms MS  server heartbeat: ping a silent connection this often (default 10000);
                         the idle timeout is 3x this, so a connection that stops answering is closed
  --port PORT            port to listen on (default: a free one)
  --source-ips RANGE     load-generator source addresses (default 127.0.0.2-127.0.0.254)
  --out DIR              where reports go (default reports/scale-N-DATE)
  --server-args "ARGS"   more options for every `c10m serve` (e.g. "--io uring --ring-buffers 64")
  --no-tune              do not run scripts/tune.sh (use the host as it is)
  --rebuild              rebuild c10m and c10m-loadtest (release) even if they exist
  -h, --help             this text

Writes DIR/summary.txt, report.json, report.html, loadtest.txt (progress and text report),
servers.tsv (fds per server over time), server-K.log and tune.log. Exits with c10m-loadtest's
status: 0 when every connection opened and survived the hold.
EOF
}

die() {
    printf '%s: %s\n' "$PROG" "$*" >&2
    exit 2
}

N=""
HOLD=60
SERVERS=""
PROCS=""
RATE=10000
RAMP=""
PING_MS=10000
PORT=""
SOURCES=127.0.0.2-127.0.0.254
OUT=""
TUNE=1
REBUILD=0
SERVER_ARGS=""
while [ $# -gt 0 ]; do
    case $1 in
        --connections) N=${2:-}; shift 2 || die "--connections needs a value" ;;
        --hold-seconds) HOLD=${2:-}; shift 2 || die "--hold-seconds needs a value" ;;
        --servers) SERVERS=${2:-}; shift 2 || die "--servers needs a value" ;;
        --procs) PROCS=${2:-}; shift 2 || die "--procs needs a value" ;;
        --rate) RATE=${2:-}; shift 2 || die "--rate needs a value" ;;
        --ramp-seconds) RAMP=${2:-}; shift 2 || die "--ramp-seconds needs a value" ;;
        --ping-interval-ms) PING_MS=${2:-}; shift 2 || die "--ping-interval-ms needs a value" ;;
        --port) PORT=${2:-}; shift 2 || die "--port needs a value" ;;
        --source-ips) SOURCES=${2:-}; shift 2 || die "--source-ips needs a value" ;;
        --out) OUT=${2:-}; shift 2 || die "--out needs a value" ;;
        --server-args) SERVER_ARGS=${2:-}; shift 2 || die "--server-args needs a value" ;;
        --no-tune) TUNE=0; shift ;;
        --rebuild) REBUILD=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
for v in N HOLD RATE PING_MS; do
    if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
        die "${v}=${!v}: --connections, --hold-seconds, --rate and --ping-interval-ms need positive whole numbers (see --help)"
    fi
done
if [ -n "$RAMP" ] && ! [[ $RAMP =~ ^[1-9][0-9]*$ ]]; then
    die "--ramp-seconds $RAMP: need a positive whole number of seconds"
fi
[ "$N" -le 10000000 ] || die "--connections is capped at 10,000,000"
[ -z "$SERVERS" ] || [[ $SERVERS =~ ^[1-9][0-9]*$ ]] || die "--servers needs a positive whole number"
[ -z "$PROCS" ] || [[ $PROCS =~ ^[1-9][0-9]*$ ]] || die "--procs needs a positive whole number"
[ -z "$PORT" ] || [[ $PORT =~ ^[1-9][0-9]*$ ]] || die "--port needs a port number"
SERVERS=${SERVERS:-$(((N + 14999) / 15000))}
OUT=${OUT:-$ROOT/reports/scale-$N-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# --- binaries ---------------------------------------------------------------------------------
C10M=$ROOT/target/release/c10m
LOADTEST=$ROOT/target/release/c10m-loadtest
if [ "$REBUILD" = 1 ] || [ ! -x "$C10M" ]; then
    echo "building c10m (release)..."
    (cd "$ROOT" && cargo build -q --release -p c10m --bin c10m)
fi
if [ "$REBUILD" = 1 ] || [ ! -x "$LOADTEST" ]; then
    echo "building c10m-loadtest (release)..."
    (cd "$ROOT" && cargo build -q --release -p c10m-loadtest)
fi

# --- cleanup: stop what we started, restore the host ------------------------------------------
SERVER_PIDS=()
SAMPLER_PID=""
TUNED=0
STATE=$OUT/tune.state
SNAPSHOT_KEYS=(net.core.somaxconn net.ipv4.tcp_max_syn_backlog net.core.netdev_max_backlog
    net.ipv4.ip_local_port_range net.ipv4.tcp_rmem net.ipv4.tcp_wmem net.ipv4.tcp_mem
    net.ipv4.tcp_tw_reuse vm.max_map_count fs.file-max fs.nr_open)
snapshot() { for k in "${SNAPSHOT_KEYS[@]}"; do printf '%s = %s\n' "$k" "$(sysctl -n "$k" 2>/dev/null | tr '\t' ' ')"; done; }

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -z "$SAMPLER_PID" ] || kill "$SAMPLER_PID" 2>/dev/null || true
    for pid in "${SERVER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${SERVER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "$TUNED" = 1 ]; then
        echo "restoring the host (scripts/tune.sh --revert)..."
        if "$ROOT/scripts/tune.sh" --revert --state-file "$STATE" >>"$OUT/tune.log" 2>&1; then
            snapshot >"$OUT/sysctl.after"
            if cmp -s "$OUT/sysctl.before" "$OUT/sysctl.after"; then
                echo "host restored: every sysctl is back to its value before the test" | tee -a "$OUT/summary.txt"
            else
                echo "WARNING: sysctls differ from before the test:" | tee -a "$OUT/summary.txt"
                diff "$OUT/sysctl.before" "$OUT/sysctl.after" | tee -a "$OUT/summary.txt" || true
                rc=1
            fi
        else
            echo "ERROR: scripts/tune.sh --revert failed; see $OUT/tune.log and retry it with --state-file $STATE" >&2
            rc=1
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tune -------------------------------------------------------------------------------------
snapshot >"$OUT/sysctl.before"
if [ "$TUNE" = 1 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "$PROG: not root: the host is used as it is (scripts/tune.sh needs root; pass --no-tune to silence this)" >&2
    else
        echo "tuning the host for $N connections (scripts/tune.sh; log in $OUT/tune.log)..."
        TUNED=1
        "$ROOT/scripts/tune.sh" --connections "$N" --state-file "$STATE" >"$OUT/tune.log" 2>&1 ||
            { cat "$OUT/tune.log" >&2; exit 1; }
        grep -E '^  [a-z0-9_.]+: .* -> |settings' "$OUT/tune.log" || true
    fi
fi

# --- servers ----------------------------------------------------------------------------------
start_server() { # start_server INDEX LISTEN
    local log=$OUT/server-$1.log
    # shellcheck disable=SC2086 # SERVER_ARGS is a list of options
    "$C10M" serve --listen "$2" --shards 1 --ping-interval-ms "$PING_MS" \
        --idle-timeout-ms $((3 * PING_MS)) --drain-timeout-ms 5000 $SERVER_ARGS >"$log" 2>&1 &
    SERVER_PIDS+=($!)
    for _ in $(seq 100); do
        grep -q 'listening on' "$log" 2>/dev/null && return 0
        kill -0 "${SERVER_PIDS[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    cat "$log" >&2
    echo "$PROG: server $1 did not start" >&2
    exit 1
}
start_server 0 "127.0.0.1:${PORT:-0}"
PORT=$(sed -n 's#.*ws://127\.0\.0\.1:\([0-9]*\)/echo.*#\1#p' "$OUT/server-0.log" | head -1)
[ -n "$PORT" ] || die "could not read the server's port from $OUT/server-0.log"
for i in $(seq 1 $((SERVERS - 1))); do start_server "$i" "127.0.0.1:$PORT"; done
PIDS=$(IFS=,; echo "${SERVER_PIDS[*]}")
echo "$SERVERS server(s) on 127.0.0.1:$PORT (pids $PIDS), heartbeat every $PING_MS ms"

# fds per server over time: shows how SO_REUSEPORT spread the connections.
(
    printf 'seconds\tpid\tfds\n'
    t=0
    while :; do
        for pid in "${SERVER_PIDS[@]}"; do
            printf '%s\t%s\t%s\n' "$t" "$pid" "$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
        done
        sleep 5
        t=$((t + 5))
    done
) >"$OUT/servers.tsv" &
SAMPLER_PID=$!

# --- load -------------------------------------------------------------------------------------
ARGS=(idle --target "127.0.0.1:$PORT" --connections "$N" --rate "$RATE" --duration "$HOLD"
    --source-ips "$SOURCES" --server-pid "$PIDS" --json --html "$OUT/report.html")
[ -z "$PROCS" ] || ARGS+=(--procs "$PROCS")
[ -z "$RAMP" ] || ARGS+=(--ramp-timeout "$RAMP")
echo "$LOADTEST ${ARGS[*]}" >"$OUT/command.txt"
echo "holding $N connections for $HOLD s: $LOADTEST ${ARGS[*]}"
# The load generator bounds itself; `timeout` is a second guard.
LIMIT=$(( ${RAMP:-$((N / RATE + 30))} + HOLD + 120 ))
set +e
timeout --signal=TERM --kill-after=30 "$LIMIT" "$LOADTEST" "${ARGS[@]}" \
    >"$OUT/report.json" 2> >(tee "$OUT/loadtest.txt" >&2)
LT_RC=$?
set -e
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=""

# --- summary ----------------------------------------------------------------------------------
{
    echo "c10m scale test: $(date -Is) on $(uname -r), $(nproc) cores"
    echo "command: scripts/scale-test.sh --connections $N --hold-seconds $HOLD (servers $SERVERS, port $PORT)"
    echo "load generator: $(cat "$OUT/command.txt") -> exit $LT_RC"
    echo "most fds held per server process:"
    awk -F '\t' 'NR > 1 && $3 > max[$2] { max[$2] = $3 } END { for (p in max) printf "  pid %s: %d\n", p, max[p] }' "$OUT/servers.tsv"
    if command -v python3 >/dev/null && [ -s "$OUT/report.json" ]; then
        python3 - "$OUT/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
c, cpu = r["connections"], r["cpu"]
hs = r["handshake_latency"]
print(f"connections: requested {c['requested']}, established {c['established']}, peak open {c['peak_open']}, "
      f"survived the hold {c['survived']}, closed early {c['closed_early']}, failed {c['connect_failed'] + c['handshake_failed']}")
print(f"pings answered: {c['pings_answered']}")
print(f"handshake latency: p50 {hs['p50_us']} us, p99 {hs['p99_us']} us, max {hs['max_us']} us")
for why, n in sorted(c["reasons"].items()):
    print(f"  ended: {why}: {n}")
m = r.get("memory")
if m:
    print(f"memory at {m['connections']} connections: server {m['server_bytes_per_connection']:.0f} B/conn (RSS), "
          f"kernel {m['kernel_bytes_per_connection']:.0f} B/conn (Slab, both loopback ends), "
          f"load generator {m['loadgen_bytes_per_connection']:.0f} B/conn")
print(f"cpu: load generator {cpu['loadgen_cpu_s']:.1f} s, server {cpu['server_cpu_s']:.1f} s over {r['elapsed_s']:.0f} s")
for w in r["warnings"]:
    print(f"WARNING: {w}")
print("RESULT:", "OK" if r["ok"] else "FAILED: " + "; ".join(r["failures"]))
PY
    else
        grep -E '^(RESULT|WARNING)' "$OUT/loadtest.txt" || true
    fi
    echo "reports: $OUT"
} | tee "$OUT/summary.txt"
exit "$LT_RC"
