#!/usr/bin/env bash
# scripts/test-cluster.sh: a c10m cluster behind nginx, for real (issue 12, "Deployment").
#
# Builds c10m (or takes $C10M_BIN as it is), starts `scripts/cluster.sh start --nodes 3` (Redis, three nodes, nginx rendered
# from deploy/nginx.conf) in a temporary directory on free ports, and checks:
#  - status: every node's /health is ok; a second start in the same directory is refused;
#  - SFU rooms: THROUGH nginx (scripts/lib/sfu_route_check.py), participants of a room naming
#    it in the URL land on one node from any address and join in SFU mode; `c10m-loadtest sfu`
#    through nginx (4 rooms) and then straight to the 3 nodes in turn (3 rooms, each with
#    participants on every node: signaling relayed to the room's media node): none lost;
#  - THROUGH nginx (scripts/lib/cluster_check.py, standard-library Python): subscribers from
#    varied 127.0.x.y sources land on all three nodes (each node's /metrics c10m_connections
#    says which), two publishers on two nodes; every subscriber gets every message once and in
#    order; `kill -9` of node2 disconnects exactly its clients, which reconnect through nginx
#    to the other nodes, subscribe again and receive the next messages once and in order, while
#    the other nodes' /health stays ok;
#  - status then reports node2 down (exit 1) and the rest up;
#  - the client protocol through nginx at 1,000 publications a second, on a second cluster:
#    `c10m-loadtest failover` kills node1 with SIGKILL mid-run, its subscribers reconnect
#    through nginx and recover from history; nothing missing or duplicated anywhere;
#  - stop ends every process the cluster recorded and no other (a record whose pid belongs to
#    another process, here a decoy with the wrong start time, is left alone), no port of the
#    cluster answers, no process mentions the cluster's directory; a second stop is harmless.
#
# Waits are for events with generous deadlines, never fixed sleeps. On failure (or ^C) the
# cluster is stopped, log tails are printed and the directory removed. Prints
# `cluster: N passed, M failed` and exits non-zero on any failure.
# The checks pass shell conditions as single-quoted `eval` strings on purpose (expanded when the
# check runs):
# shellcheck disable=SC2016
set -uo pipefail # no -e: every check runs and is counted

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=$REPO/scripts/cluster.sh
PASS=0
FAIL=0
pass() {
  PASS=$((PASS + 1))
  echo "ok   - $1"
}
fail() {
  FAIL=$((FAIL + 1))
  echo "FAIL - $1"
  [ -z "${2:-}" ] || printf '%s\n' "$2" | sed 's/^/       | /'
}
# check NAME COMMAND...: pass when COMMAND succeeds, else fail showing OUT.
check() {
  local name=$1
  shift
  if "$@"; then pass "$name"; else fail "$name" "${OUT:-}"; fi
}
has() { grep -qE -- "$1" <<<"$OUT"; }
# run ARGS...: cluster.sh with its combined output in OUT and status in RC.
run() {
  OUT=$("$CLUSTER" "$@" --dir "$dir" 2>&1)
  RC=$?
}
port_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null; }
proc_start() { # as in cluster.sh: start time of a live (not zombie) process
  local stat fields
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  read -r -a fields <<<"${stat##*) }"
  [ "${fields[0]}" != Z ] || return 1
  echo "${fields[19]}"
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/c10m-test-cluster.XXXXXX")
dir=$tmp/cluster
decoy=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$FAIL" -ne 0 ] || [ "$rc" -ne 0 ]; then
    echo "--- last log lines ($dir)"
    for f in "$dir"/*.log "$dir"/nginx/error.log; do
      if [ -f "$f" ]; then echo "--- $f" && tail -n 15 "$f"; fi
    done
    rc=1
  fi
  "$CLUSTER" stop --dir "$dir" >/dev/null 2>&1 || echo "cluster.sh stop failed in cleanup" >&2
  [ -z "$decoy" ] || kill "$decoy" 2>/dev/null
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start=$SECONDS
command -v python3 >/dev/null || {
  echo "python3 is required" >&2
  exit 1
}
if [ -n "${C10M_BIN:-}" ]; then
  echo "testing C10M_BIN=$C10M_BIN (not building)"
else
  echo "building c10m (cargo build --release -p c10m)"
  (cd "$REPO" && cargo build --release -q -p c10m) || exit 1
  export C10M_BIN=$REPO/target/release/c10m
fi

LOADTEST=${C10M_LOADTEST:-$REPO/target/release/c10m-loadtest}
if [ -z "${C10M_LOADTEST:-}" ]; then
  echo "building c10m-loadtest (cargo build --release -p c10m-loadtest)"
  (cd "$REPO" && cargo build --release -q -p c10m-loadtest) || exit 1
fi

# A free base port: P (nginx), P+1..P+3 (nodes), P+100 (Redis), P+201..P+203 (metrics).
# Below the ephemeral range (32768-60999), where an outgoing connection could take one. cluster.sh
# refuses ports in use; another base is tried then.
for _ in 1 2 3 4 5 6 7 8; do
  port=$((20000 + RANDOM % 120 * 100))
  run start --nodes 3 --port "$port"
  if [ "$RC" -eq 0 ] || ! has 'is in use'; then break; fi
done
check "start: Redis, 3 nodes and nginx up on port $port" [ "$RC" -eq 0 ]
[ "$RC" -eq 0 ] || exit 1
printf '       %s\n' "${OUT//$'\n'/$'\n'       }"

conf=$dir/nginx/nginx.conf
check "nginx.conf rendered from deploy/nginx.conf: 3 nodes, sticky hash by address or room, upgrade headers" \
  test "$(grep -cE "^ *server 127\.0\.0\.1:$((port + 1))|^ *server 127\.0\.0\.1:$((port + 2))|^ *server 127\.0\.0\.1:$((port + 3))" "$conf")" = 3 -a \
  "$(grep -cE '^ *hash \$c10m_route consistent;|^ *"" +\$remote_addr;|^ *default +room:\$arg_room;|^ *proxy_http_version 1\.1;|^ *proxy_set_header Connection \$connection_upgrade;|^ *proxy_buffering off;' "$conf")" = 6
timeout=$(sed -n 's/^ *proxy_read_timeout \([0-9]*\)s;/\1/p' "$conf")
check "proxy_read_timeout ${timeout:-?}s is above twice the 30 s ping interval" [ "${timeout:-0}" -gt 60 ]

run status
check "status: exit 0, every node ok" eval '[ "$RC" -eq 0 ] && [ "$(grep -c "^node[123] .* ok (pid" <<<"$OUT")" = 3 ]'
run start --nodes 3 --port "$port"
check "a second start in the same directory is refused" eval '[ "$RC" -ne 0 ] && has "is running"'

echo "--- SFU rooms: routed by room through nginx, and spread over the nodes"
python3 "$REPO/scripts/lib/sfu_route_check.py" --dir "$dir"
check "an SFU room's participants from 8 addresses land on one node through nginx, joined in SFU mode" [ $? -eq 0 ]
# Media through nginx: each room's participants routed to one node, its media through that
# node's SFU (every node's SFU socket on a free port of 127.0.0.1).
OUT=$("$LOADTEST" sfu --target "127.0.0.1:$port" --rooms 4 --publishers 1 --subscribers 2 --duration 2s 2>&1)
RC=$?
grep -E 'packets|RESULT' <<<"$OUT" | sed 's/^/       /'
check "c10m-loadtest sfu through nginx: 4 rooms, every subscriber gets every packet (RESULT: OK)" [ "$RC" -eq 0 ]
# Media across nodes: each room's 4 participants join on the 3 nodes in turn (straight to the
# nodes, not through nginx), so every room has participants on every node. A room's media is on
# the node of its first participant; the others' nodes relay their signaling to it through
# Redis, and their media goes to its SFU. Without that relay each node would run its own copy
# of the room, and the subscribers on the other nodes would receive nothing.
OUT=$("$LOADTEST" sfu --target "127.0.0.1:$((port + 1)),127.0.0.1:$((port + 2)),127.0.0.1:$((port + 3))" \
  --rooms 3 --publishers 1 --subscribers 3 --duration 2s 2>&1)
RC=$?
grep -E 'packets|RESULT' <<<"$OUT" | sed 's/^/       /'
check "c10m-loadtest sfu over the 3 nodes: 3 rooms each spanning every node, every subscriber gets every packet (RESULT: OK)" [ "$RC" -eq 0 ]
OUT=""

echo "--- through nginx (scripts/lib/cluster_check.py)"
python3 "$REPO/scripts/lib/cluster_check.py" --dir "$dir" --kill node2
check "subscribers on all 3 nodes, every message once and in order, kill -9 node2, reconnects through nginx" [ $? -eq 0 ]

run status
check "status after kill -9 node2: exit 1, node2 down, the others ok and up" eval '[ "$RC" -eq 1 ] &&
  has "^node2 .* down" && [ "$(grep -cE "^node[13] .* ok \(pid" <<<"$OUT")" = 2 ] &&
  [ "$(grep -cE "^(redis|nginx) .* up \(pid" <<<"$OUT")" = 2 ]'

# A record whose pid is now another process (same pid, other start time) must be left alone.
sleep 600 &
decoy=$!
echo "node9 $decoy 1 127.0.0.1:1 127.0.0.1:1" >>"$dir/procs"
records=$(grep -v '^node9 ' "$dir/procs")
run stop
check "stop: exit 0" [ "$RC" -eq 0 ]
left=""
while read -r name pid st _; do
  [ "$(proc_start "$pid")" != "$st" ] || left="$left $name($pid)"
done <<<"$records"
OUT="still running:$left"
check "stop: every recorded process ended" [ -z "$left" ]
OUT=""
for p in "$port" $((port + 100)) $((port + 1)) $((port + 2)) $((port + 3)) $((port + 201)) $((port + 202)) $((port + 203)); do
  ! port_open "$p" || OUT="$OUT $p"
done
check "stop: no port of the cluster answers" [ -z "$OUT" ]
OUT=""
for f in /proc/[0-9]*/cmdline; do
  [[ $(tr '\0' ' ' <"$f" 2>/dev/null) != *"$dir"* ]] || OUT="$OUT ${f#/proc/}"
done
check "stop: no process mentions $dir" [ -z "$OUT" ]
OUT=""
check "stop: the decoy with a reused-looking record is still running" kill -0 "$decoy"
kill "$decoy" 2>/dev/null
decoy=""
run stop
check "a second stop is harmless" [ "$RC" -eq 0 ]

echo "--- client protocol through nginx: kill -9 of a node at 1,000 msg/s, recovery from history"
# A second cluster whose histories hold what a subscriber misses while it reconnects (1,000
# publications a second). 200 subscribers of /connection/v1 through nginx from varied sources
# (so on every node), 4 publishers at 250/s each straight to node3; node1 is killed 3 s in.
# Its subscribers reconnect through nginx, which sends them to the live nodes, and resubscribe
# from their last offset: the load generator counts every publication each one received, and
# nothing may be missing or duplicated, on the killed node's subscribers or anyone else's.
dir=$tmp/failover
for _ in 1 2 3 4 5 6 7 8; do
  port=$((20000 + RANDOM % 120 * 100))
  C10M_HISTORY_SIZE=20000 run start --nodes 3 --port "$port"
  if [ "$RC" -eq 0 ] || ! has 'is in use'; then break; fi
done
check "failover cluster: Redis, 3 nodes (history 20,000) and nginx up on port $port" [ "$RC" -eq 0 ]
[ "$RC" -eq 0 ] || exit 1
node1=$(awk '$1 == "node1" { print $2 }' "$dir/procs")
report=$tmp/failover.json
"$LOADTEST" failover -n 200 --protocol v1 --subscriber-targets "127.0.0.1:$port" \
  --upstreams "127.0.0.1:$((port + 1))-$((port + 2))" --publisher-targets "127.0.0.1:$((port + 3))" \
  --source-ips 127.0.0.2-127.0.0.200 --publishers 4 --publish-rate 250 --kill-pid "$node1" \
  --kill-at 3s --reconnect-base 100ms --duration 8s --json >"$report" 2>"$tmp/failover.err"
RC=$?
OUT=$(tail -n 20 "$tmp/failover.err")
check "c10m-loadtest failover: exit 0 (RESULT: OK)" [ "$RC" -eq 0 ]
OUT=$(python3 - "$report" <<'PY' 2>&1
import json, sys
r = json.load(open(sys.argv[1]))
f, b = r["failover"], r["broadcast"]
print(f"killed pid {f['kill']['pid']} after {f['kill']['killed_after_s']:.2f} s: {f['drops']} subscribers dropped, "
      f"{f['resubscribed']} resubscribed through nginx (p99 away {f['time_away']['p99_us'] / 1000:.0f} ms), "
      f"{f['recovered']} publications recovered from history; {b['deliveries']} deliveries, "
      f"{b['missing']} missing, {b['duplicates']} duplicated, {f['lost']} lost by the dropped, "
      f"{f['lost_by_others']} by the others, {f['recovery_refused']} recoveries refused")
ok = (f["kill"]["error"] is None and f["drops"] > 0 and f["resubscribed"] == f["subscribers_dropped"]
      and f["gave_up"] == 0 and f["recovered"] > 0 and f["lost"] == 0 and f["lost_by_others"] == 0
      and f["recovery_refused"] == 0 and f["duplicates"] == 0 and b["missing"] == 0
      and b["duplicates"] == 0 and b["deliveries"] > 0)
sys.exit(0 if ok else 1)
PY
)
RC=$?
printf '       %s\n' "$OUT"
check "every subscriber got every publication once: the killed node's recovered from history" [ "$RC" -eq 0 ]
run stop
check "failover cluster stopped" [ "$RC" -eq 0 ]

echo "cluster: $PASS passed, $FAIL failed in $((SECONDS - start)) s"
[ "$FAIL" -eq 0 ]
