#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzingclient cases (via kosoku, which runs Autobahn's own case
# files) against `c10m serve --deflate` /echo, every case including permessage-deflate (12.*,
# 13.*), and fails on any difference from the committed expected results.
#
#   scripts/autobahn.sh                      # build if needed, run, diff
#   C10M_SERVE_ARGS="--shards 2" scripts/autobahn.sh
#   scripts/autobahn.sh --update             # rewrite the expected file from this run
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=lib/listen-addr.sh
. "$root/scripts/lib/listen-addr.sh"
expected=engine/tests/autobahn/expected.txt
venv=${AUTOBAHN_VENV:-$root/.venv-ab}
out=${AUTOBAHN_OUT:-$root/reports/autobahn}
update=0
[ "${1:-}" = "--update" ] && update=1

if [ ! -x "$venv/bin/kosoku" ]; then
  echo "autobahn: installing kosoku into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q kosoku==0.1.0
fi

bin=${C10M_BIN:-$root/target/release/c10m}
if [ -z "${C10M_BIN:-}" ]; then
  cargo build -q --release -p c10m --bin c10m
fi

rm -rf "$out"; mkdir -p "$out"
log="$out/server.log"
# shellcheck disable=SC2086
"$bin" serve --listen 127.0.0.1:0 --deflate ${C10M_SERVE_ARGS:-} >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
addr=$(listen_addr "$log" "$server") \
  || { cat "$log"; echo "autobahn: server exited or did not report its address"; exit 1; }

echo "autobahn: running cases against ws://$addr/echo"
"$venv/bin/kosoku" -m fuzzingclient -o "$out" -p 4 "ws://$addr/echo" >"$out/kosoku.log" 2>&1 || true
kill $server 2>/dev/null || true
wait $server 2>/dev/null || true
trap - EXIT
[ -f "$out/index.json" ] || { tail -n 20 "$out/kosoku.log"; echo "autobahn: no report written"; exit 1; }

# One line per case: id, behavior, close behavior, the server's close code. Durations vary and
# are left out.
python3 - "$out/index.json" >"$out/actual.txt" <<'PY'
import json, sys
(results,) = json.load(open(sys.argv[1])).values()
key = lambda case: [int(p) for p in case.split(".")]
for case in sorted(results, key=key):
    r = results[case]
    print(case, r["behavior"], r["behaviorClose"], r.get("remoteCloseCode"))
PY

if [ $update = 1 ]; then
  cp "$out/actual.txt" "$expected"
  echo "autobahn: wrote $expected"
fi
python3 - "$out/actual.txt" <<'PY'
import sys
ok = {"OK", "NON-STRICT", "INFORMATIONAL"}
rows = [l.split() for l in open(sys.argv[1])]
bad = [r for r in rows if r[1] not in ok or r[2] not in ("OK", "INFORMATIONAL")]
for r in bad:
    print("autobahn: FAILED case", " ".join(r))
print(f"autobahn: {len(rows) - len(bad)} passed, {len(bad)} failed")
sys.exit(1 if bad else 0)
PY
# Case 7.1.6 (informational: a 256 KiB text, a text, a close and a ping sent back to back) ends
# with the client dropping the connection one second after sending (`killAfter(1)` in its case
# file). When the echo has not reached the client by then, on a loaded machine, Autobahn records
# no close code and "Close was processed before text message could be returned": the same
# INFORMATIONAL verdict, with the timing of the machine in it. That one row is compared without
# its close code; every other row, informational ones included, must match exactly.
compared=$out/compared.txt
sed 's/^\(7\.1\.6 INFORMATIONAL INFORMATIONAL\) None$/\1 1000/' "$out/actual.txt" >"$compared"
if ! cmp -s "$out/actual.txt" "$compared"; then
  echo "autobahn: note: 7.1.6 got no close code: the client's 1 s deadline passed before the echo reached it (informational)"
fi
if ! diff -u "$expected" "$compared"; then
  echo "autobahn: results differ from $expected (see $out/index.html)"
  exit 1
fi
echo "autobahn: results match $expected"
