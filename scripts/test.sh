#!/usr/bin/env bash
# Runs every test of the project, as CI does:
#   1. formatting and clippy (warnings are errors),
#   2. cargo test: unit tests, in-memory client/server pairs, differential tests against
#      tungstenite, fuzz-corpus replays, integration tests over loopback (the engine's
#      integration tests once more under the io_uring backend: C10M_TEST_IO=uring), the Redis
#      broker against a real redis-server (Debian's, installed here when missing),
#   3. the Autobahn|Testsuite conformance cases against `c10m serve`, under each backend,
#      diffed against the committed expected results (installs kosoku into .venv-ab),
#   4. wss:// against an independent client (Python ssl + websockets, into .venv-py),
#   5. scripts/tune.sh, for real inside a private network namespace.
# Anything a step needs is installed by the step itself; a missing tool is a failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# Each step says when it starts and how long the run has taken so far (CI has 30 minutes).
step() { printf '\n==> %s   [%s, %dm%02ds in]\n' "$*" "$(date +%T)" $((SECONDS / 60)) $((SECONDS % 60)); }
. "$root/scripts/lib/debian.sh"

step "services the tests run against (installed when missing)"
need_commands redis-server:redis-server

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings

step "cargo test"
cargo test --workspace -q 2>&1 | tee "${TMPDIR:-/tmp}/c10m-cargo-test.log"

step "release build"
cargo build --release --workspace --bins -q

step "autobahn conformance (epoll)"
C10M_BIN="$root/target/release/c10m" C10M_SERVE_ARGS="--io epoll" scripts/autobahn.sh

step "autobahn conformance (io_uring)"
C10M_BIN="$root/target/release/c10m" C10M_SERVE_ARGS="--io uring" scripts/autobahn.sh

step "wss:// with Python's ssl + websockets (both backends, deflate, SIGHUP reload)"
C10M_BIN="$root/target/release/c10m" scripts/test-tls.sh

# Last among the engine's runs: the 15,000-connection test of the first run leaves its sockets
# in TIME_WAIT for 60 s, and running it again at once slows its handshakes sharply (seen here:
# 1.2 s on a quiet host, 5-38 s for back-to-back runs).
step "engine integration tests under io_uring"
C10M_TEST_IO=uring cargo test -q -p c10m-engine -p c10m --tests 2>&1 | tee "${TMPDIR:-/tmp}/c10m-cargo-test-uring.log"

step "tune.sh in a network namespace"
scripts/test-tune.sh

step "c10m cluster behind nginx (Redis, 3 nodes, kill -9 of one)"; scripts/test-cluster.sh

step "demo room in headless Chromium (host candidates, then relayed through coturn)"; scripts/test-demo.sh

step "JavaScript client in node and headless Chromium (fake server, one node, kill -9 across two)"; scripts/test-js.sh

step "all tests passed"
