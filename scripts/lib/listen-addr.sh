# Sourced by the scripts that start a server on 127.0.0.1:0.
#
# listen_addr LOG PID: prints the address from the server's "listening on ws://ADDR/" line in
# LOG once it appears. Fails if PID exits first or the line has not come within 10 s.
listen_addr() {
  local log=$1 pid=$2 addr
  for _ in $(seq 1 100); do
    addr=$(sed -n 's#.*listening on wss\{0,1\}://\([0-9.:]*\)/.*#\1#p' "$log" | head -n1)
    if [ -n "$addr" ]; then
      echo "$addr"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
