#!/usr/bin/env bash
# scripts/cluster.sh start|stop|status [--nodes N] [--port P] [--dir DIR]
#
# A c10m cluster on this machine, for a demo and for tests: a Redis, N `c10m serve --broker`
# nodes (each with --metrics) and nginx in front, configured from deploy/nginx.conf.
#
#   start   starts Redis on 127.0.0.1:P+100, node i on ws://127.0.0.1:P+i (metrics on P+200+i)
#           and nginx on ws://127.0.0.1:P; waits until each answers (bounded), else stops what
#           it started and exits 1. Installs redis-server, nginx (nginx-light) and curl from
#           Debian when missing. Defaults: --nodes 3, --port 9000.
#   stop    stops the processes recorded in DIR, by pid (SIGTERM, SIGKILL after 20 s), and no
#           others: a record whose pid now belongs to another process is skipped.
#   status  prints each process and each node's /health; exit 0 when all are up and healthy,
#           1 otherwise, 3 when DIR records no cluster.
#
# DIR (default ${TMPDIR:-/tmp}/c10m-cluster-UID) holds the logs, nginx's rendered configuration
# and `procs`: one line per process started, `NAME PID STARTTIME ADDR METRICS_ADDR` (STARTTIME
# from /proc/PID/stat, so a reused pid is never taken for ours; `-` where there is none).
# The nodes take every other setting from C10M_* variables (C10M_SHARDS=1, ...); the binary is
# $C10M_BIN, else target/release/c10m (built when missing).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/debian.sh
. "$REPO/scripts/lib/debian.sh"
# shellcheck source=scripts/lib/nginx-conf.sh
. "$REPO/scripts/lib/nginx-conf.sh"
PATH=$PATH:/usr/sbin:/sbin # nginx is in /usr/sbin, which a user's PATH may lack

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
  exit "${1:-2}"
}
die() {
  echo "cluster: $*" >&2
  exit 1
}

cmd="" nodes=3 port=9000 dir=${TMPDIR:-/tmp}/c10m-cluster-$(id -u)
while [ $# -gt 0 ]; do
  case $1 in
    start | stop | status) cmd=$1 ;;
    --nodes) nodes=${2:?--nodes needs a number} && shift ;;
    --port) port=${2:?--port needs a number} && shift ;;
    --dir) dir=${2:?--dir needs a path} && shift ;;
    -h | --help) usage 0 ;;
    *) echo "cluster: unknown argument: $1" >&2 && usage ;;
  esac
  shift
done
[ -n "$cmd" ] || usage
procs=$dir/procs

# Start time of PID (clock ticks since boot); fails when PID is gone or a zombie.
proc_start() {
  local stat fields
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  read -r -a fields <<<"${stat##*) }" # after "PID (COMM) ": state ppid ... starttime (22nd)
  [ "${fields[0]}" != Z ] || return 1
  echo "${fields[19]}"
}
alive() { [ "$(proc_start "$1" 2>/dev/null)" = "$2" ]; }
children() {
  local p stat fields
  for p in /proc/[0-9]*; do
    stat=$(cat "$p/stat" 2>/dev/null) || continue
    read -r -a fields <<<"${stat##*) }"
    [ "${fields[1]}" != "$1" ] || echo "${p#/proc/}"
  done
}

# record NAME PID [ADDR] [METRICS]: appends a started process to DIR/procs.
record() {
  local start
  start=$(proc_start "$2") || die "$1 (pid $2) exited at once; see $dir"
  echo "$1 $2 $start ${3:--} ${4:--}" >>"$procs"
}

# wait_until SECONDS PID LOG WHAT CMD...: until CMD succeeds; fails (naming LOG) when PID exits
# or SECONDS pass.
wait_until() {
  local secs=$1 pid=$2 log=$3 what=$4 i
  shift 4
  for ((i = 0; i < secs * 10; i++)); do
    "$@" && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "cluster: $what: process $pid exited; last lines of $log:" >&2
      tail -n 20 "$log" >&2 || true
      return 1
    fi
    sleep 0.1
  done
  echo "cluster: $what: not ready after ${secs}s; last lines of $log:" >&2
  tail -n 20 "$log" >&2 || true
  return 1
}

# shellcheck disable=SC2016 # $0 is the inner shell's
port_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null; }
redis_ping() { # loopback only: a connect is refused or made at once
  local fd line=
  exec {fd}<>"/dev/tcp/127.0.0.1/$1" || return 1
  if printf 'PING\r\n' >&"$fd"; then IFS= read -r -t 2 line <&"$fd" || true; fi
  exec {fd}>&-
  [ "${line%$'\r'}" = +PONG ]
} 2>/dev/null
http_body() { curl -fsS --max-time 3 "http://$1" 2>/dev/null; }
health() { http_body "$1/health" | head -n1; }
healthy() { [ "$(health "$1")" = ok ]; }
banner_has() { grep -q "$2" "$1" 2>/dev/null; }
nginx_up() { [ "$(http_body "127.0.0.1:$1/nginx-health")" = ok ]; }

# Records of processes still running from an earlier start in DIR.
running() {
  [ -f "$procs" ] || return 0
  local name pid start _
  while read -r name pid start _; do
    if alive "$pid" "$start"; then echo "$name $pid"; fi
  done <"$procs"
}

stop_cluster() {
  if [ ! -f "$procs" ]; then
    echo "cluster: nothing recorded in $dir"
    return 0
  fi
  local name pid start addr metrics child i left=()
  # nginx's workers are its master's children: record them too, so that they are stopped even
  # if the master is gone.
  while read -r name pid start addr metrics; do
    if [ "$name" != nginx ] || ! alive "$pid" "$start"; then continue; fi
    for child in $(children "$pid"); do
      grep -q "^nginx-worker $child " "$procs" || record nginx-worker "$child"
    done
  done < <(cat "$procs")
  # nginx first (no new clients), then the nodes (they close their connections with 1001),
  # Redis last.
  for name in nginx node redis nginx-worker; do
    while read -r _name pid start addr metrics; do
      case $_name in "$name" | "$name"[0-9]*) ;; *) continue ;; esac
      if alive "$pid" "$start"; then kill -TERM "$pid" 2>/dev/null || true; fi
    done <"$procs"
  done
  for ((i = 0; i < 250; i++)); do # SIGTERM: 25 s (a node drains for up to 5 s)
    [ -z "$(running)" ] && break
    [ "$i" -ne 200 ] || running | while read -r name pid; do
      echo "cluster: $name (pid $pid) ignored SIGTERM for 20 s; SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    done
    sleep 0.1
  done
  mapfile -t left < <(running)
  if [ "${#left[@]}" -ne 0 ]; then
    echo "cluster: still running: ${left[*]}" >&2
    return 1
  fi
  echo "cluster: stopped every process recorded in $procs"
}

status_cluster() {
  [ -f "$procs" ] || {
    echo "cluster: no cluster recorded in $dir"
    return 3
  }
  local name pid start addr metrics state bad=0
  while read -r -u 4 name pid start addr metrics; do
    [ "$name" != nginx-worker ] || continue
    if ! alive "$pid" "$start"; then
      state="down: not running"
    else
      case $name in
        redis) if redis_ping "${addr##*:}"; then state=up; else state="not answering PING"; fi ;;
        nginx) if nginx_up "${addr##*:}"; then state=up; else state="not answering /nginx-health"; fi ;;
        *)
          state=$(health "$metrics" || true)
          state=${state:-"no answer from http://$metrics/health"}
          ;;
      esac
    fi
    case $state in up | ok) ;; *) bad=1 ;; esac
    case $name in
      redis) printf '%-6s redis://%-21s %s (pid %s)\n' "$name" "$addr" "$state" "$pid" ;;
      nginx) printf '%-6s ws://%-24s %s (pid %s)\n' "$name" "$addr" "$state" "$pid" ;;
      *) printf '%-6s ws://%-24s %s (pid %s, http://%s/health)\n' "$name" "$addr" "$state" "$pid" "$metrics" ;;
    esac
  done 4<"$procs"
  return "$bad"
}

start_failed() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "cluster: start failed; stopping what was started" >&2
    stop_cluster >&2 || true
  fi
}

start_cluster() {
  if ! [[ $nodes =~ ^[0-9]+$ ]] || [ "$nodes" -lt 1 ] || [ "$nodes" -gt 99 ]; then
    die "--nodes: 1 to 99, not $nodes"
  fi
  if ! [[ $port =~ ^[0-9]+$ ]] || [ "$port" -lt 1024 ] || [ "$port" -gt 65200 ]; then
    die "--port: 1024 to 65200 (ports P to P+299 are used), not $port"
  fi
  if [ -n "$(running)" ]; then
    die "a cluster started in $dir is running ($(running | tr '\n' ' ')); stop it first"
  fi
  need_commands redis-server:redis-server nginx:nginx-light curl:curl
  local bin=${C10M_BIN:-$REPO/target/release/c10m}
  if [ ! -x "$bin" ]; then
    [ -z "${C10M_BIN:-}" ] || die "C10M_BIN=$bin is not an executable"
    (cd "$REPO" && cargo build --release -q -p c10m)
  fi

  local redis_port=$((port + 100)) i p pid
  for p in "$port" "$redis_port" $(seq $((port + 1)) $((port + nodes))) $(seq $((port + 201)) $((port + 200 + nodes))); do
    ! port_open "$p" || die "port $p on 127.0.0.1 is in use: choose another --port"
  done

  mkdir -p "$dir/redis" "$dir/nginx/tmp"
  dir=$(cd "$dir" && pwd)
  procs=$dir/procs
  rm -f "$procs" "$dir"/*.log "$dir"/*.out "$dir"/nginx/*.log
  # From here on, a failure (or ^C) stops what was started.
  trap start_failed EXIT

  redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
    --dir "$dir/redis" </dev/null >"$dir/redis.log" 2>&1 &
  record redis $! "127.0.0.1:$redis_port"
  wait_until 10 $! "$dir/redis.log" redis redis_ping "$redis_port"

  local ws=() metrics=()
  for ((i = 1; i <= nodes; i++)); do
    ws+=("127.0.0.1:$((port + i))")
    metrics+=("127.0.0.1:$((port + 200 + i))")
    "$bin" serve --listen "${ws[-1]}" --metrics "${metrics[-1]}" \
      --broker "redis://127.0.0.1:$redis_port" --sfu-udp 127.0.0.1:0 </dev/null >"$dir/node$i.out" 2>"$dir/node$i.log" &
    record "node$i" $! "${ws[-1]}" "${metrics[-1]}"
  done
  while read -r -u 4 name pid _ addr m; do
    case $name in node*) ;; *) continue ;; esac
    # The banner's last address line, then a broker connected to Redis.
    wait_until 15 "$pid" "$dir/$name.log" "$name" banner_has "$dir/$name.out" "metrics on http://$m/"
    wait_until 15 "$pid" "$dir/$name.log" "$name /health" healthy "$m"
  done 4<"$procs"

  render_nginx_conf "$REPO/deploy/nginx.conf" "$dir/nginx" "127.0.0.1:$port" "${ws[@]}" >"$dir/nginx/nginx.conf"
  local nginx_args=(-p "$dir/nginx/" -c "$dir/nginx/nginx.conf" -e "$dir/nginx/error.log")
  nginx -t -q "${nginx_args[@]}" || die "nginx -t refused $dir/nginx/nginx.conf"
  nginx "${nginx_args[@]}" </dev/null >"$dir/nginx/stdout.log" 2>&1 &
  pid=$!
  record nginx "$pid" "127.0.0.1:$port"
  wait_until 10 "$pid" "$dir/nginx/error.log" nginx nginx_up "$port"
  for p in $(children "$pid"); do record nginx-worker "$p"; done
  trap - EXIT

  echo "cluster: up in $dir"
  status_cluster
  echo "cluster: clients connect to ws://127.0.0.1:$port/pubsub (or /echo); the demo room (its"
  echo "  media through the SFU of the node its room routes to) is http://127.0.0.1:$port/demo/?room=NAME&sfu=1; stop with:"
  echo "  $0 stop --dir $dir"
}

case $cmd in
  start) start_cluster ;;
  stop) stop_cluster ;;
  status) status_cluster ;;
esac
