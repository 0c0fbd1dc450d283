#!/usr/bin/env bash
# Builds the uWebSockets benchmark peers, outside the repository: uWebSockets' own
# examples/EchoServer.cpp (its fixed port 9001 made settable through UWS_PORT, see port.h) and
# our pubsub.cpp (c10m's /pubsub protocol), each linked with uSockets; no TLS. No uWebSockets
# code is ever copied into the repository.
#
#   benches/uws/build.sh            build if needed; print the build directory on stdout
#   benches/uws/build.sh --fetch    clone the sources into the cache directory first if absent
#
# Where the sources are looked for:
#   UWS_SRC        a uWebSockets clone (default $C10M_PEERS_DIR/uWebSockets)
#   USOCKETS_SRC   a uSockets clone (default $UWS_SRC/uSockets, the submodule's place)
#   C10M_PEERS_DIR the cache directory (default ~/.cache/c10m-peers)
# --fetch clones UWS_GIT and USOCKETS_GIT (default: github.com/uNetworking/uWebSockets and
# uSockets) and checks uSockets out at the commit uWebSockets pins as its submodule.
#
# The programs land in $C10M_PEERS_DIR/uws-build/ (EchoServer, pubsub, SOURCES naming the
# commits). They are rebuilt when a hash of the sources, of these files, of the compilers and of
# the flags changes, so a benchmark can call this every time. Compilers: CXX (g++), CC (gcc);
# flags UWS_CXXFLAGS (-O3 -flto -std=c++2b) and USOCKETS_CFLAGS (-O3 -flto -std=c11), the
# recipe in uWebSockets' README without -march=native (c10m is not built for the host CPU
# either).
#
# Exit status: 0 built or up to date; 3 sources absent (stderr says how to get them); 1 the
# build failed; 2 bad usage.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
peers=${C10M_PEERS_DIR:-$HOME/.cache/c10m-peers}
uws=${UWS_SRC:-$peers/uWebSockets}
us=${USOCKETS_SRC:-$uws/uSockets}
out=$peers/uws-build
cxx=${CXX:-g++}
cc=${CC:-gcc}
cxxflags=${UWS_CXXFLAGS:--O3 -flto -std=c++2b}
cflags=${USOCKETS_CFLAGS:--O3 -flto -std=c11}
fetch=0
case "${1:-}" in
  --fetch) fetch=1 ;;
  "") ;;
  *) echo "usage: $0 [--fetch]" >&2; exit 2 ;;
esac

fail() { echo "uws: $*" >&2; exit 1; }
have_uws() { [ -f "$uws/src/App.h" ] && [ -f "$uws/examples/EchoServer.cpp" ]; }
have_us() { [ -f "$us/src/libusockets.h" ]; }

if [ "$fetch" = 1 ] && ! have_uws; then
  [ -z "${UWS_SRC:-}" ] || fail "UWS_SRC=$UWS_SRC holds no uWebSockets (src/App.h); --fetch clones only into $peers"
  mkdir -p "$peers"
  rm -rf "$uws.part"
  echo "uws: cloning ${UWS_GIT:-https://github.com/uNetworking/uWebSockets} into $uws" >&2
  git clone -q "${UWS_GIT:-https://github.com/uNetworking/uWebSockets}" "$uws.part"
  rm -rf "$uws"
  mv "$uws.part" "$uws"
fi
if [ "$fetch" = 1 ] && have_uws && ! have_us; then
  [ -z "${USOCKETS_SRC:-}" ] || fail "USOCKETS_SRC=$USOCKETS_SRC holds no uSockets (src/libusockets.h); --fetch clones only into $uws/uSockets"
  pin=$(git -C "$uws" ls-tree HEAD uSockets 2>/dev/null | awk '$2 == "commit" { print $3 }')
  rm -rf "$us.part"
  echo "uws: cloning ${USOCKETS_GIT:-https://github.com/uNetworking/uSockets} into $us" >&2
  git clone -q "${USOCKETS_GIT:-https://github.com/uNetworking/uSockets}" "$us.part"
  if [ -n "$pin" ]; then
    git -C "$us.part" checkout -q "$pin" \
      || fail "uSockets has no commit $pin, the one uWebSockets pins; check out a matching uSockets yourself"
  fi
  rmdir "$us" 2>/dev/null || true # the empty directory of the uninitialized submodule
  mv "$us.part" "$us"
fi

if ! have_uws || ! have_us; then
  missing=$(have_uws && echo "no uSockets at $us" || echo "no uWebSockets at $uws")
  cat >&2 <<EOF
uws: uWebSockets is absent ($missing).
  Get it (cloned into $peers, outside the repository):
    benches/uws/build.sh --fetch
  or clone it yourself:
    git clone https://github.com/uNetworking/uWebSockets $peers/uWebSockets
    git -C $peers/uWebSockets submodule update --init uSockets
  or use clones you have: UWS_SRC=/path/to/uWebSockets USOCKETS_SRC=/path/to/uSockets
EOF
  exit 3
fi
uws=$(cd "$uws" && pwd)
us=$(cd "$us" && pwd)

# Everything the programs are made of, hashed by content (clones may be dirty or not git at all).
stamp=$(
  {
    echo "$cxx $cxxflags / $cc $cflags"
    "$cxx" --version | head -n1
    "$cc" --version | head -n1
    (cd "$uws" && find src examples/EchoServer.cpp -type f | LC_ALL=C sort | xargs sha256sum)
    (cd "$us" && find src -type f | LC_ALL=C sort | xargs sha256sum)
    (cd "$here" && sha256sum build.sh port.h pubsub.cpp)
  } | sha256sum | cut -c1-32
)
if [ -x "$out/EchoServer" ] && [ -x "$out/pubsub" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$out"
  exit 0
fi

rev() { git -C "$1" describe --always --dirty --abbrev=12 2>/dev/null || echo "not a git clone"; }
sources="uWebSockets $(rev "$uws") ($uws), uSockets $(rev "$us") ($us)"
echo "uws: building EchoServer and pubsub from $sources" >&2
mkdir -p "$peers"
tmp=$(mktemp -d "$peers/uws-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# uSockets as its Makefile builds it without TLS (every .c; the other event loops and io_uring
# compile to nothing unless selected), but here, not in the clone.
mkdir "$tmp/us"
(cd "$tmp/us" && find "$us/src" -name '*.c' -print0 | LC_ALL=C sort -z \
  | xargs -0 "$cc" $cflags -DLIBUS_NO_SSL -I"$us/src" -c) >"$tmp/usockets.log" 2>&1 \
  || { cat "$tmp/usockets.log" >&2; fail "uSockets did not compile"; }

# The example, with its port taken from UWS_PORT: every 9001 becomes c10m_uws_port().
sed 's/\b9001\b/c10m_uws_port()/g' "$uws/examples/EchoServer.cpp" >"$tmp/EchoServer.cpp"
grep -q 'listen(c10m_uws_port(),' "$tmp/EchoServer.cpp" \
  || fail "$uws/examples/EchoServer.cpp no longer calls .listen(9001, ...): update the port patch in $0"

link() { # output source extra-flags...
  local name=$1 src=$2; shift 2
  # shellcheck disable=SC2086 # the flags are words
  "$cxx" $cxxflags "$@" -I"$uws/src" -I"$us/src" "$src" "$tmp"/us/*.o -lz -o "$tmp/$name" >"$tmp/$name.log" 2>&1
}
link EchoServer "$tmp/EchoServer.cpp" -include "$here/port.h" &
echo_job=$!
link pubsub "$here/pubsub.cpp" &
pubsub_job=$!
status=0
wait "$echo_job" || { cat "$tmp/EchoServer.log" >&2; status=1; }
wait "$pubsub_job" || { cat "$tmp/pubsub.log" >&2; status=1; }
[ "$status" = 0 ] || fail "the uWebSockets programs did not build (compiler output above)"

rm -rf "$tmp/us" "$tmp"/*.log
echo "$sources" >"$tmp/SOURCES"
echo "$stamp" >"$tmp/stamp"
chmod 755 "$tmp"
rm -rf "$out.old"
[ ! -e "$out" ] || mv "$out" "$out.old"
mv "$tmp" "$out"
rm -rf "$out.old"
echo "$out"
