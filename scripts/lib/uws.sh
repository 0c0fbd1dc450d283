# Sourced by the benchmark scripts that run uWebSockets beside c10m (bench-engine.sh,
# bench-backends.sh). The programs, and how they are built outside the repository, are in
# benches/uws/ (build.sh says where the sources are looked for). Needs $root (the repository)
# and listen_addr (scripts/lib/listen-addr.sh).
#
# uws_prepare WHO MODE: MODE auto (run uWebSockets when its sources are present), require
#   (absent is an error) or off. Builds the programs and sets uws_dir to their directory and
#   uws_sources to the commits they come from; uws_dir is empty when uWebSockets is not run,
#   and stderr says why and how to get it. A build that fails stops the script in any mode but
#   off: uWebSockets present but broken is never skipped silently.
# uws_check_pubsub WHO C10M_BIN OUT: runs `c10m serve` and the uWebSockets pub/sub program side
#   by side and stops the script unless their /pubsub answers and deliveries are byte for byte
#   the same (benches/uws/check-pubsub.py), so the load generator counts both alike.
# uws_free_port: prints a TCP port nothing listens on at 127.0.0.1 now.
# uws_echo_addr LOG PID PORT: waits up to 10 s for EchoServer's "Listening on port PORT" line
#   in LOG and prints 127.0.0.1:PORT; fails if PID exits first.

uws_prepare() {
  local who=$1 mode=$2 status=0
  uws_dir=""
  uws_sources=""
  case "$mode" in
    off) echo "$who: uWebSockets not run (--no-uws)" >&2; return 0 ;;
    auto | require) ;;
    *) echo "$who: uws_prepare: unknown mode $mode" >&2; exit 2 ;;
  esac
  uws_dir=$("$root/benches/uws/build.sh") || status=$?
  case "$status" in
    0) uws_sources=$(cat "$uws_dir/SOURCES") ;;
    3)
      uws_dir=""
      if [ "$mode" = require ]; then
        echo "$who: --require-uws, but uWebSockets is absent (above): stopping" >&2
        exit 1
      fi
      echo "$who: running WITHOUT uWebSockets, the server to beat (absent, see above; --require-uws makes this an error)" >&2
      ;;
    *) echo "$who: building uWebSockets failed (above); --no-uws runs without it" >&2; exit 1 ;;
  esac
}

uws_check_pubsub() {
  local who=$1 c10m=$2 out=$3 c10m_pid uws_pid c10m_addr uws_addr status=0
  : >"$out/check-pubsub.c10m.log"
  : >"$out/check-pubsub.uws.log"
  "$c10m" serve --listen 127.0.0.1:0 --shards 1 >"$out/check-pubsub.c10m.log" 2>&1 &
  c10m_pid=$!
  "$uws_dir/pubsub" 0 >"$out/check-pubsub.uws.log" 2>&1 &
  uws_pid=$!
  if c10m_addr=$(listen_addr "$out/check-pubsub.c10m.log" "$c10m_pid") \
    && uws_addr=$(listen_addr "$out/check-pubsub.uws.log" "$uws_pid"); then
    python3 "$root/benches/uws/check-pubsub.py" "$c10m_addr" "$uws_addr" >"$out/check-pubsub.txt" || status=1
  else
    echo "$who: a server of the /pubsub check did not start:" >&2
    cat "$out/check-pubsub.c10m.log" "$out/check-pubsub.uws.log" >&2
    status=1
  fi
  kill "$c10m_pid" "$uws_pid" 2>/dev/null || true
  wait "$c10m_pid" "$uws_pid" 2>/dev/null || true
  if [ "$status" != 0 ]; then
    echo "$who: the uWebSockets pub/sub program does not speak c10m's /pubsub alike (above): stopping" >&2
    exit 1
  fi
  echo "$who: uWebSockets' pub/sub answers and delivers byte for byte as c10m's /pubsub ($(wc -l <"$out/check-pubsub.txt") messages compared)"
}

uws_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

uws_echo_addr() {
  local log=$1 pid=$2 port=$3
  for _ in $(seq 1 100); do
    if grep -q "^Listening on port $port\$" "$log"; then
      echo "127.0.0.1:$port"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
