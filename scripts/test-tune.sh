#!/usr/bin/env bash
# scripts/test-tune.sh: tests scripts/tune.sh for real without changing the test host.
#
#  - network-namespace settings are applied, checked with the plan and reverted for real inside
#    `unshare -n -m` (net.* there is private; /etc/sysctl.d and /etc/security/limits.d get a
#    private tmpfs), and every value must come back byte for byte;
#  - host-wide settings (fs.*, vm.*, tcp_mem, ...) are only ever run with --dry-run, or with input
#    that must be refused, and the host's values are compared before and after;
#  - inside `unshare -n -m`, as in a container, a full apply and `c10m doctor` report the
#    host-wide settings as set on the host, change none of them, and apply or check the
#    namespace's own;
#  - bad input (unknown flag, non-numeric, zero or absurd N, non-root) must give a clear
#    message, a non-zero exit and no change.
#
# Needs root and unshare(1). Prints `tune: N passed, M failed` and exits non-zero on any failure.
# The checks pass shell conditions as single-quoted `eval` strings on purpose (expanded when the
# check runs, with the caller's locals) and call helpers only through `check`, which shellcheck
# cannot follow:
# shellcheck disable=SC2016,SC2034,SC2317
set -uo pipefail # no -e: every check runs and is counted

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TUNE=$REPO/scripts/tune.sh
SELF=$REPO/scripts/test-tune.sh
TABLE=$REPO/sysctl/settings.tsv
LIMITS_FILE=/etc/security/limits.d/99-c10m.conf
PERSIST_FILE=/etc/sysctl.d/99-c10m.conf
DEFAULT_STATE=/var/lib/c10m/tune.state

PASS=0
FAIL=0
pass() { PASS=$((PASS + 1)); echo "ok   - $1"; }
fail() {
    FAIL=$((FAIL + 1))
    echo "FAIL - $1"
    [ -z "${2:-}" ] || printf '%s\n' "$2" | sed 's/^/       | /'
}
# check NAME COMMAND...: pass when COMMAND succeeds; on failure show the last tune.sh output.
check() {
    local name=$1
    shift
    if "$@"; then pass "$name"; else fail "$name" "${OUT:-}"; fi
}
has() { grep -qF -- "$1" <<<"$OUT"; }

# run ARGS...: run tune.sh, keeping its combined output in OUT and its status in RC.
run() {
    OUT=$("$TUNE" "$@" 2>&1)
    RC=$?
}

plan() { "$C10M_BIN_DIR/c10m-tune-plan" "$@"; }

# Table keys of the given scope (netns, host, session) or of every /proc/sys kind (sys).
keys() {
    case $1 in
        sys) awk -F '\t' '!/^#/ && NF == 5 && $2 != "rlimit" { print $1 }' "$TABLE" ;;
        *) awk -F '\t' -v s="$1" '!/^#/ && NF == 5 && $3 == s { print $1 }' "$TABLE" ;;
    esac
}

# snapshot KEYS...: every listed /proc/sys entry byte for byte, plus the files tune.sh may write.
snapshot() {
    local k p f
    for k in "$@"; do
        p=/proc/sys/${k//.//}
        if [ -e "$p" ]; then printf '%s=%s\n' "$k" "$(cat "$p")"; else printf '%s absent\n' "$k"; fi
    done
    for f in "$LIMITS_FILE" "$PERSIST_FILE" "$DEFAULT_STATE"; do
        if [ -e "$f" ]; then printf '%s:\n%s\n' "$f" "$(cat "$f")"; else printf '%s absent\n' "$f"; fi
    done
}

# Reports this process's counts to the parent when running inside a namespace.
report() { printf '%s %s\n' "$PASS" "$FAIL" >"$1"; }

private_etc() {
    mount -t tmpfs c10m-test /etc/sysctl.d && mount -t tmpfs c10m-test /etc/security/limits.d
}

# --- inside `unshare -n -m`: apply, verify, be idempotent, persist, revert -----------------------
inner_netns() {
    local work=$1 state=$1/netns.state key rec cur verdict reason n_keys low_keys=""
    check "netns: private /etc/sysctl.d and limits.d" private_etc
    ip link set lo up
    mapfile -t NETNS_KEYS < <(keys netns)
    n_keys=${#NETNS_KEYS[@]}
    snapshot "${NETNS_KEYS[@]}" >"$work/netns.before"
    local before_plan
    before_plan=$(plan --connections 1000000 --only netns)

    run --connections 1000000 --only netns --persist --state-file "$state"
    check "netns: apply --connections 1000000 --only netns --persist exits 0" [ "$RC" = 0 ]

    local explained=1 recorded=1
    while IFS=$'\t' read -r key rec cur verdict reason; do
        [ "$verdict" = low ] || continue
        low_keys+="$key"$'\n'
        has "  $key: $cur -> $rec  ($reason)" || explained=0
        grep -qxF -- "$key"$'\t'"$cur" "$state" 2>/dev/null || recorded=0
    done <<<"$before_plan"
    check "netns: the fresh namespace starts with settings to change" [ -n "$low_keys" ]
    check "netns: every change is explained with its old value, new value and reason" [ "$explained" = 1 ]
    check "netns: the state file records every original value" [ "$recorded" = 1 ]
    check "netns: the state file records only changed settings and the persist file" \
        [ "$(grep -cv '^#' "$state")" = "$(($(grep -c . <<<"$low_keys") + 1))" ]

    local after_plan
    after_plan=$(plan --connections 1000000 --only netns)
    check "netns: the plan now says ok for all $n_keys namespace settings" \
        [ "$(awk -F '\t' '$4 == "ok"' <<<"$after_plan" | wc -l)" = "$n_keys" ]
    OUT=$(plan --connections 1000000 --only netns --human)
    check "netns: the doctor table shows 0 of $n_keys settings low" has "0 of $n_keys settings low"

    OUT=$(cat "$PERSIST_FILE" 2>&1)
    local persisted=1
    while IFS=$'\t' read -r key rec cur verdict reason; do
        [ "$verdict" = low ] && ! grep -qxF -- "$key = $rec" "$PERSIST_FILE" 2>/dev/null && persisted=0
    done <<<"$before_plan"
    check "netns: --persist wrote every changed setting to $PERSIST_FILE" [ "$persisted" = 1 ]

    cp "$state" "$work/netns.state.first"
    run --connections 1000000 --only netns --persist --state-file "$state"
    check "netns: a second apply exits 0 and changes nothing" \
        eval '[ "$RC" = 0 ] && has "nothing to change"'
    check "netns: a second apply keeps the state file as it was" cmp -s "$state" "$work/netns.state.first"
    # Someone lowers a value after the apply: the next apply raises it again but keeps the
    # original recorded by the first one, so --revert still restores the pre-tune value.
    echo 1000 >/proc/sys/net/core/somaxconn
    run --connections 1000000 --only netns --persist --state-file "$state"
    check "netns: a drifted value is raised again" \
        eval '[ "$RC" = 0 ] && has "net.core.somaxconn: 1000 -> 65535"'
    check "netns: ...and the first recorded original is kept" cmp -s "$state" "$work/netns.state.first"

    run --revert --state-file "$state"
    check "netns: --revert exits 0" [ "$RC" = 0 ]
    snapshot "${NETNS_KEYS[@]}" >"$work/netns.after"
    OUT=$(diff "$work/netns.before" "$work/netns.after")
    check "netns: after --revert every value is byte-identical to before" \
        cmp -s "$work/netns.before" "$work/netns.after"
    check "netns: --revert removed the state file and the persist file" \
        eval '[ ! -e "$state" ] && [ ! -e "$PERSIST_FILE" ]'
    run --revert --state-file "$state"
    check "netns: a second --revert has nothing to do and exits 0" \
        eval '[ "$RC" = 0 ] && has "nothing to revert"'
    report "$work/netns.counts"
}

# --- inside `unshare -n -m`: files tune.sh writes are saved, written and restored -----------------
inner_limits() {
    local work=$1 state=$1/limits.state
    local original="# the administrator's own limits"$'\n' original_conf="# the administrator's own sysctls"$'\n'
    local copy=$state.etc_security_limits.d_99-c10m.conf.orig
    local copy_conf=$state.etc_sysctl.d_99-c10m.conf.orig
    check "limits: private /etc/sysctl.d and limits.d" private_etc
    printf '%s' "$original" >"$LIMITS_FILE"
    printf '%s' "$original_conf" >"$PERSIST_FILE"
    both_untouched() {
        [ "$(cat "$LIMITS_FILE"; echo x)" = "${original}x" ] &&
            [ "$(cat "$PERSIST_FILE"; echo x)" = "${original_conf}x" ]
    }

    run --connections 100000 --only netns,session --persist --state-file "$state"
    check "limits: apply --connections 100000 --only netns,session --persist exits 0" [ "$RC" = 0 ]
    check "limits: prints the systemd LimitNOFILE= line" has "LimitNOFILE=201024"
    check "limits: says what happens to this shell's hard limit" \
        eval 'has "needs CAP_SYS_RESOURCE" || has "run '\''ulimit -n 201024'\''"'
    OUT=$(cat "$LIMITS_FILE")
    check "limits: $LIMITS_FILE sets nofile for everyone and for root" \
        eval 'has "*    hard nofile 201024" && has "*    soft nofile 201024" && has "root hard nofile 201024" && has "root soft nofile 201024"'
    saved() { # saved PATH COPY CONTENT: the state file points at a copy holding CONTENT
        grep -qxF "file:$1"$'\t'"saved:$2" "$state" && [ "$(cat "$2"; echo x)" = "${3}x" ]
    }
    check "limits: the administrator's limits file was saved" saved "$LIMITS_FILE" "$copy" "$original"
    check "limits: the administrator's sysctl.d file was saved apart from it" \
        saved "$PERSIST_FILE" "$copy_conf" "$original_conf"

    run --revert --state-file "$state"
    check "limits: --revert exits 0" [ "$RC" = 0 ]
    check "limits: --revert restores both files exactly" both_untouched
    check "limits: --revert removes the copies" eval '[ ! -e "$copy" ] && [ ! -e "$copy_conf" ]'

    # A limit above fs.nr_open would make pam_limits fail every login: tune.sh must not write it.
    local nr_open n
    nr_open=$(cat /proc/sys/fs/nr_open)
    n=$((nr_open / 2))
    run --connections "$n" --only session --state-file "$state"
    check "limits: a nofile above fs.nr_open ($nr_open) is not written" \
        eval '[ "$RC" = 0 ] && has "not written: fs.nr_open is $nr_open"'
    check "limits: ...and the files and state stay untouched" \
        eval 'both_untouched && [ ! -e "$state" ]'
    report "$work/limits.counts"
}

# --- inside `unshare -n -m`, as in a container: host-wide settings are set on the host -----------
# The kernel hides net.core.netdev_max_backlog, net.ipv4.tcp_mem and tcp_max_orphans inside a
# network namespace. A full apply (no --only) must report every host-scope setting as "set on
# the host", change none of them (fs.* and vm.* are writable from here and would change the
# whole machine), and apply the namespace's own settings; `c10m doctor` must exit by those only.
inner_container() {
    local work=$1 state=$1/container.state key rec cur verdict reason host_before
    check "container: private /etc/sysctl.d and limits.d" private_etc
    ip link set lo up
    if [ -e /proc/sys/net/ipv4/tcp_mem ]; then
        # Never run a full apply where it could succeed: it would change fs.* and vm.* of the host.
        fail "container: this kernel shows net.ipv4.tcp_mem inside a network namespace; the test cannot run safely"
        report "$work/container.counts"
        return
    fi
    mapfile -t HOST_KEYS < <(keys host)
    mapfile -t NETNS_KEYS < <(keys netns)
    host_before=$(snapshot "${HOST_KEYS[@]}")
    snapshot "${NETNS_KEYS[@]}" >"$work/container.before"

    # The doctor, before: the namespace's settings are low for 5,000 connections (somaxconn...),
    # the host rows say "set on the host" and do not count.
    OUT=$("$C10M_BIN_DIR/c10m" doctor --connections 5000 2>&1)
    RC=$?
    check "container: c10m doctor reads the namespace (exit 1: its own settings are low)" \
        eval '[ "$RC" = 1 ] && has "inside a network namespace"'
    local on_host_rows=1
    for key in "${HOST_KEYS[@]}"; do
        [ "$key" = net.netfilter.nf_conntrack_max ] && [ ! -e /proc/sys/net/netfilter/nf_conntrack_max ] && continue
        grep -E "^$key +- +.* set on the host  " <<<"$OUT" >/dev/null || on_host_rows=0
    done
    check "container: every host-wide row of the doctor says set on the host" [ "$on_host_rows" = 1 ]
    check "container: the doctor names --only netns for what this namespace can apply" \
        has "--connections 5000 --only netns"

    run --connections 5000 --dry-run --state-file "$state"
    check "container: a full --dry-run exits 0 and reports the host settings" \
        eval '[ "$RC" = 0 ] && has "net.ipv4.tcp_mem: set on the host (needs >=" && has "--only host"'

    run --connections 5000 --state-file "$state"
    check "container: a full apply exits 0" [ "$RC" = 0 ]
    local reported=1
    for key in "${HOST_KEYS[@]}"; do
        [ "$key" = net.netfilter.nf_conntrack_max ] && [ ! -e /proc/sys/net/netfilter/nf_conntrack_max ] && continue
        has "  $key: set on the host (needs " || reported=0
    done
    check "container: every host-wide setting is reported as set on the host" [ "$reported" = 1 ]
    check "container: ...and says what to run on the host" \
        has "on the host run: sudo scripts/tune.sh --connections 5000 --only host"
    check "container: no host-wide value changed" eval '[ "$(snapshot "${HOST_KEYS[@]}")" = "$host_before" ]'
    local recorded_host=0
    for key in "${HOST_KEYS[@]}"; do
        grep -q "^$key"$'\t' "$state" 2>/dev/null && recorded_host=1
    done
    check "container: the state file records no host-wide setting" [ "$recorded_host" = 0 ]
    local after
    after=$(plan --connections 5000 --only netns)
    check "container: the namespace's own settings are now ok" \
        [ "$(awk -F '\t' '$4 != "ok"' <<<"$after" | wc -l)" = 0 ]

    OUT=$("$C10M_BIN_DIR/c10m" doctor --connections 5000 2>&1)
    RC=$?
    check "container: c10m doctor now exits 0 whatever the host has" \
        eval '[ "$RC" = 0 ] && has "0 of 8 settings low, " && has "set on the host"'

    run --connections 5000 --only host --state-file "$work/container-host.state"
    check "container: --only host changes nothing and says so" \
        eval '[ "$RC" = 0 ] && has "set on the host" && [ ! -e "$work/container-host.state" ]'

    run --revert --state-file "$state"
    check "container: --revert exits 0" [ "$RC" = 0 ]
    OUT=$(diff "$work/container.before" <(snapshot "${NETNS_KEYS[@]}"))
    check "container: after --revert the namespace's values are byte-identical to before" \
        eval '[ -z "$OUT" ]'
    check "container: still no host-wide value changed" eval '[ "$(snapshot "${HOST_KEYS[@]}")" = "$host_before" ]'
    report "$work/container.counts"
}

# in_namespace FLAGS MODE: runs this script's MODE in new namespaces and adds its counts.
in_namespace() {
    local flags=$1 mode=$2 counts p f
    unshare "$flags" -- "$SELF" "--inner-$mode" "$WORK"
    counts=$WORK/$mode.counts
    if [ -f "$counts" ]; then
        read -r p f <"$counts"
        PASS=$((PASS + p))
        FAIL=$((FAIL + f))
    else
        fail "$mode: the namespace run reported nothing (unshare $flags failed?)"
    fi
}

# Inner modes, run by in_namespace.
case ${1:-} in
    --inner-netns | --inner-limits | --inner-container)
        mode=${1#--inner-}
        "inner_$mode" "$2"
        exit 0
        ;;
    "") ;;
    *) echo "usage: scripts/test-tune.sh" >&2; exit 2 ;;
esac

# --- the host -------------------------------------------------------------------------------------
if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null; then
    fail "test-tune.sh needs root and unshare(1) (uid $(id -u))"
    echo "tune: $PASS passed, $FAIL failed"
    exit 1
fi

WORK=$(mktemp -d /tmp/c10m-test-tune.XXXXXX)
chmod 755 "$WORK"
trap 'rm -rf "$WORK"' EXIT

TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
if ! (cd "$REPO" && cargo build -q -p c10m-sysctl --bin c10m-tune-plan && cargo build -q -p c10m --bin c10m); then
    fail "cargo build -p c10m-sysctl --bin c10m-tune-plan; cargo build -p c10m --bin c10m"
    echo "tune: $PASS passed, $FAIL failed"
    exit 1
fi
export C10M_BIN_DIR=$TARGET_DIR/debug

mapfile -t SYS_KEYS < <(keys sys)
snapshot "${SYS_KEYS[@]}" >"$WORK/host.before"
host_unchanged() { [ "$(snapshot "${SYS_KEYS[@]}")" = "$(cat "$WORK/host.before")" ]; }

in_namespace -nm netns
in_namespace -nm limits
in_namespace -nm container

# The issue's own command: a bare `unshare -n` and the doctor, for 100,000 connections.
OUT=$(unshare -n sh -c "ip link set lo up; '$C10M_BIN_DIR/c10m' doctor --connections 100000" 2>&1)
RC=$?
check "unshare -n: c10m doctor prints a plan with host rows set on the host (exit 1: somaxconn, nofile)" \
    eval '[ "$RC" = 1 ] && has "net.ipv4.tcp_mem " && has "set on the host" && has "net.core.somaxconn "'

# Host-wide settings: --dry-run only.
run --connections 1000000 --dry-run --persist
check "dry-run: the full set exits 0 and says nothing will change" \
    eval '[ "$RC" = 0 ] && has "dry run: nothing will be changed"'
check "dry-run: explains host-wide settings too" \
    eval 'has "fs.nr_open:" && has "vm.max_map_count:" && has "net.ipv4.tcp_mem:"'
check "dry-run: no /proc/sys value or file changed" host_unchanged

run --connections 1m --dry-run
check "dry-run: counts take the one grammar (1m is 1,000,000)" \
    eval '[ "$RC" = 0 ] && has "net.ipv4.tcp_max_orphans: 131072 -> 1000000"'

OUT=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$TUNE" --connections 1000 --dry-run 2>&1)
RC=$?
check "dry-run: works without root" eval '[ "$RC" = 0 ] && has "dry run: nothing will be changed"'

printf '# fake\nvm.max_map_count\t%s\n' "$(($(cat /proc/sys/vm/max_map_count) + 1))" >"$WORK/fake.state"
cp "$WORK/fake.state" "$WORK/fake.state.copy"
run --revert --dry-run --state-file "$WORK/fake.state"
check "dry-run --revert: shows what it would restore" \
    eval '[ "$RC" = 0 ] && has "vm.max_map_count:" && has "(would be restored)"'
check "dry-run --revert: changes nothing and keeps the state file" \
    eval 'host_unchanged && cmp -s "$WORK/fake.state" "$WORK/fake.state.copy"'

# Bad input: a clear message, a non-zero exit, nothing changed.
bad_input() { # bad_input NAME PHRASE ARGS...
    local name=$1 phrase=$2
    shift 2
    run "$@"
    check "bad input: $name is refused with a clear message" \
        eval '[ "$RC" != 0 ] && has "$phrase"'
    check "bad input: $name changes nothing" host_unchanged
}
bad_input "an unknown flag" "unknown flag '--bogus'" --connections 1000 --bogus
bad_input "a non-numeric N" "needs a whole number of connections, got 'lots'" --connections lots
bad_input "a negative N" "needs a whole number of connections, got '-5'" --connections -5
bad_input "N=0" "a target of 0 connections needs no tuning" --connections 0
bad_input "an N the RAM cannot hold" "connections need about" --connections 50000000
bad_input "an absurd N" "more than the kernel can give a process" --connections 99999999999
bad_input "a missing N" "--connections N is required" --persist
bad_input "--revert with --connections" "takes no --connections" --revert --connections 5
bad_input "--state-file without a path" "--state-file needs a value" --connections 5 --state-file

OUT=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$TUNE" --connections 1000 2>&1)
RC=$?
check "bad input: a non-root apply is refused with a clear message" \
    eval '[ "$RC" != 0 ] && has "needs root" && has "nothing was changed"'
OUT=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$TUNE" --revert 2>&1)
RC=$?
check "bad input: a non-root --revert is refused" eval '[ "$RC" != 0 ] && has "needs root"'

OUT=$(diff "$WORK/host.before" <(snapshot "${SYS_KEYS[@]}"))
check "the test host's /proc/sys values and files are exactly as before" host_unchanged

echo "tune: $PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
