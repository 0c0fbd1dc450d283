#!/usr/bin/env bash
# scripts/tune.sh: tune this Linux host for N concurrent connections of c10m.
#
# The numbers come from the c10m-tune-plan binary (crate sysctl/), which computes them from the
# one settings table sysctl/settings.tsv, the same table `c10m doctor` prints. This script holds
# no formula: it only applies, records and reverts. See docs/TUNING.md.
set -euo pipefail

PROG=tune.sh
LIMITS_FILE=/etc/security/limits.d/99-c10m.conf
PERSIST_FILE=/etc/sysctl.d/99-c10m.conf
PROC_SYS=/proc/sys

usage() {
    cat <<'EOF'
usage: scripts/tune.sh --connections N [--dry-run] [--persist] [--only SCOPES] [--state-file PATH]
       scripts/tune.sh --revert [--dry-run] [--state-file PATH]

Applies the kernel settings and limits c10m needs for N connections, explaining each change.
Values already better than recommended are never lowered; running it twice changes nothing more.

  --connections N    target number of connections (server and load generator on one host);
                     1000000, 1_000_000 and 1m are the same count
  --dry-run          print what would change; change nothing (needs no root)
  --persist          also write /etc/sysctl.d/99-c10m.conf so the settings survive a reboot
  --only SCOPES      apply only these scopes (comma-separated): netns (private to a network
                     namespace), host (kernel-global), session (limits.d); default: all
  --state-file PATH  where the original values are recorded (default /var/lib/c10m/tune.state)
  --revert           restore every recorded original value exactly and remove the files written
  -h, --help         this text

Inside a network namespace (a container, `unshare -n`) the kernel hides the host-wide
settings: they are reported as "set on the host" and left alone, the namespace's own ones are
applied. Run --only host on the host itself for the rest.

Environment: C10M_BIN_DIR=DIR uses DIR/c10m-tune-plan instead of target/{release,debug}.
Check a host without changing it: c10m doctor --connections N (or this script with --dry-run).
EOF
}

die() { # die CODE MESSAGE...
    local code=$1
    shift
    printf '%s: %s\n' "$PROG" "$*" >&2
    exit "$code"
}

# --- arguments --------------------------------------------------------------------------------

CONNECTIONS=""
DRY_RUN=0
REVERT=0
PERSIST=0
ONLY=""
STATE_FILE=/var/lib/c10m/tune.state

need_value() { # need_value FLAG REMAINING_ARGS
    [ "$2" -ge 2 ] || die 2 "$1 needs a value (see --help); nothing was changed"
}

while [ $# -gt 0 ]; do
    case $1 in
        --connections) need_value "$1" $#; CONNECTIONS=$2; shift 2 ;;
        --connections=*) CONNECTIONS=${1#*=}; shift ;;
        --state-file) need_value "$1" $#; STATE_FILE=$2; shift 2 ;;
        --state-file=*) STATE_FILE=${1#*=}; shift ;;
        --only) need_value "$1" $#; ONLY=$2; shift 2 ;;
        --only=*) ONLY=${1#*=}; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --revert) REVERT=1; shift ;;
        --persist) PERSIST=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die 2 "unknown flag '$1' (see --help); nothing was changed" ;;
    esac
done

[ -n "$STATE_FILE" ] || die 2 "--state-file needs a path; nothing was changed"
if [ "$REVERT" = 1 ]; then
    [ -z "$CONNECTIONS" ] || die 2 "--revert restores the recorded values and takes no --connections; nothing was changed"
    [ "$PERSIST" = 0 ] || die 2 "--revert cannot be combined with --persist (it removes $PERSIST_FILE); nothing was changed"
    [ -z "$ONLY" ] || die 2 "--revert restores everything recorded and takes no --only; nothing was changed"
else
    [ -n "$CONNECTIONS" ] || die 2 "--connections N is required (see --help); nothing was changed"
    # The count grammar of c10m-tune-plan (1000000, 1_000_000, 1,000,000, 1m, 1.5k), which
    # checks it exactly; this only refuses early what cannot be a count.
    [[ $CONNECTIONS =~ ^[0-9][0-9_,]*(\.[0-9]+)?[kKmMgG]?$ ]] ||
        die 2 "--connections needs a whole number of connections, got '$CONNECTIONS'; nothing was changed"
fi
if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
    die 1 "changing kernel settings needs root (running as uid $(id -u)); nothing was changed. Try --dry-run to see the plan."
fi

# --- helpers ----------------------------------------------------------------------------------

# The value of a /proc/sys file as `sysctl -w` takes it: numbers separated by single spaces.
proc_value() {
    local v
    v=$(<"$1") || return 1
    v=${v//$'\t'/ }
    printf '%s' "$v"
}

sysctl_path() { printf '%s/%s' "$PROC_SYS" "${1//.//}"; }

# Whether the state file already records KEY.
recorded() {
    [ -f "$STATE_FILE" ] && awk -F '\t' -v k="$1" '$1 == k { found = 1 } END { exit !found }' "$STATE_FILE"
}

# record KEY VALUE: remember the original value, once. A second apply keeps the first record.
record() {
    recorded "$1" && return 0
    if [ ! -f "$STATE_FILE" ]; then
        mkdir -p "$(dirname "$STATE_FILE")"
        printf '# c10m scripts/tune.sh: values before its first change; scripts/tune.sh --revert restores them\n' >"$STATE_FILE"
    fi
    printf '%s\t%s\n' "$1" "$2" >>"$STATE_FILE"
}

# record_file PATH: remember whether PATH existed (and its content) before tune.sh wrote it.
record_file() {
    local key="file:$1"
    recorded "$key" && return 0
    if [ -e "$1" ]; then
        local flat=${1//\//_}
        local backup="$STATE_FILE.${flat#_}.orig" # the full path: both files are named 99-c10m.conf
        mkdir -p "$(dirname "$STATE_FILE")"
        cp -p -- "$1" "$backup"
        record "$key" "saved:$backup"
    else
        record "$key" absent
    fi
}

# write_sysctl KEY VALUE: write and read back; the kernel prints TABs where we wrote spaces.
write_sysctl() {
    local path now
    path=$(sysctl_path "$1")
    if ! { printf '%s\n' "$2" >"$path"; } 2>/dev/null; then
        printf '%s: writing %s to %s failed\n' "$PROG" "$2" "$path" >&2
        if [ ! -w "$path" ]; then
            printf '%s: %s is read-only here (a container mounts /proc/sys read-only): give the value to the container runtime instead, e.g. docker run --sysctl %s=%q\n' \
                "$PROG" "$path" "$1" "$2" >&2
        fi
        return 1
    fi
    now=$(proc_value "$path")
    if [ "$now" != "$2" ]; then
        printf '%s: wrote %s to %s but the kernel now shows %s\n' "$PROG" "$2" "$path" "$now" >&2
        return 1
    fi
}

# --- revert -----------------------------------------------------------------------------------

revert() {
    if [ ! -f "$STATE_FILE" ]; then
        echo "nothing to revert: no state file at $STATE_FILE (tune.sh has not changed this host, or it was already reverted)"
        return 0
    fi
    local lines key value path failed=0 restored=0
    # Bottom to top: undo in the reverse order of the changes.
    lines=$(grep -v '^#' "$STATE_FILE" | tac) || true
    [ "$DRY_RUN" = 1 ] && echo "dry run: nothing will be changed"
    while IFS=$'\t' read -r key value; do
        [ -n "$key" ] || continue
        if [[ $key == file:* ]]; then
            path=${key#file:}
            case $value in
                absent)
                    echo "  $path: remove (tune.sh created it)"
                    [ "$DRY_RUN" = 1 ] || rm -f -- "$path" || failed=1
                    ;;
                saved:*)
                    echo "  $path: restore the copy saved at ${value#saved:}"
                    if [ "$DRY_RUN" = 0 ]; then
                        if cp -p -- "${value#saved:}" "$path"; then rm -f -- "${value#saved:}"; else failed=1; fi
                    fi
                    ;;
                *) printf '%s: %s: unreadable record %q for %s\n' "$PROG" "$STATE_FILE" "$value" "$path" >&2; failed=1 ;;
            esac
        else
            path=$(sysctl_path "$key")
            if [ ! -e "$path" ]; then
                printf '%s: cannot restore %s: %s does not exist here (was tune.sh run in another network namespace?)\n' "$PROG" "$key" "$path" >&2
                failed=1
                continue
            fi
            echo "  $key: $(proc_value "$path") -> $value  ($([ "$DRY_RUN" = 1 ] && echo 'would be restored' || echo restored))"
            if [ "$DRY_RUN" = 0 ]; then
                if write_sysctl "$key" "$value"; then restored=$((restored + 1)); else failed=1; fi
            fi
        fi
    done <<<"$lines"
    [ "$DRY_RUN" = 1 ] && return 0
    if [ "$failed" = 1 ]; then
        die 1 "some values could not be restored; $STATE_FILE is kept so --revert can be retried"
    fi
    rm -f -- "$STATE_FILE"
    echo "reverted: $restored settings restored, files removed or restored; $STATE_FILE removed"
}

# --- the plan ---------------------------------------------------------------------------------

plan_bin() {
    local repo target dir
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    if [ -n "${C10M_BIN_DIR:-}" ]; then
        [ -x "$C10M_BIN_DIR/c10m-tune-plan" ] ||
            die 1 "C10M_BIN_DIR is $C10M_BIN_DIR but it holds no c10m-tune-plan; nothing was changed"
        printf '%s' "$C10M_BIN_DIR/c10m-tune-plan"
        return
    fi
    target=${CARGO_TARGET_DIR:-$repo/target}
    for dir in "$target/release" "$target/debug"; do
        if [ -x "$dir/c10m-tune-plan" ]; then
            printf '%s' "$dir/c10m-tune-plan"
            return
        fi
    done
    echo "building c10m-tune-plan (cargo build -p c10m-sysctl)..." >&2
    (cd "$repo" && cargo build -q -p c10m-sysctl --bin c10m-tune-plan) >&2 ||
        die 1 "could not build c10m-tune-plan; nothing was changed"
    printf '%s' "$target/debug/c10m-tune-plan"
}

apply_nofile() { # apply_nofile RECOMMENDED CURRENT REASON
    local rec=$1 cur=$2 nr_open hard content
    echo "  nofile: $cur -> $rec  ($3)"
    nr_open=$(proc_value "$PROC_SYS/fs/nr_open")
    if [ "$DRY_RUN" = 0 ] && [ "$nr_open" -lt "$rec" ]; then
        echo "    not written: fs.nr_open is $nr_open, below $rec, and a limits.d entry above it makes"
        echo "    every login fail in pam_limits; raise fs.nr_open first (it is in the host scope)"
        SKIPPED=$((SKIPPED + 1))
        return 0
    fi
    content=$(printf '# c10m: written by scripts/tune.sh --connections %s; removed by scripts/tune.sh --revert\n' "$CONNECTIONS"
        printf '# "*" does not cover root in pam_limits, hence the root lines.\n'
        for who in '*' root; do
            printf '%-4s soft nofile %s\n%-4s hard nofile %s\n' "$who" "$rec" "$who" "$rec"
        done)
    echo "    new login sessions: $LIMITS_FILE sets soft and hard nofile to $rec"
    echo "    systemd services: put LimitNOFILE=$rec in the [Service] section of the c10m unit"
    hard=$(ulimit -Hn)
    if [ "$hard" != unlimited ] && [ "$hard" -lt "$rec" ] && ! (ulimit -Hn "$rec") 2>/dev/null; then
        echo "    this shell keeps its hard limit $hard: raising a hard limit needs CAP_SYS_RESOURCE,"
        echo "    which this process lacks, so only new sessions and services get $rec"
    else
        echo "    this shell: run 'ulimit -n $rec' before starting c10m"
    fi
    [ "$DRY_RUN" = 1 ] && return 0
    if [ -f "$LIMITS_FILE" ] && [ "$(<"$LIMITS_FILE")" = "$content" ]; then
        echo "    $LIMITS_FILE already says so"
        return 0
    fi
    record_file "$LIMITS_FILE"
    mkdir -p "$(dirname "$LIMITS_FILE")"
    printf '%s\n' "$content" >"$LIMITS_FILE"
    CHANGED=$((CHANGED + 1))
}

apply_sysctl() { # apply_sysctl KEY RECOMMENDED CURRENT REASON
    echo "  $1: $3 -> $2  ($4)"
    [ "$DRY_RUN" = 1 ] && return 0
    record "$1" "$(proc_value "$(sysctl_path "$1")")"
    write_sysctl "$1" "$2" ||
        die 1 "stopped; the values changed so far are recorded in $STATE_FILE: undo them with scripts/tune.sh --revert --state-file $STATE_FILE"
    CHANGED=$((CHANGED + 1))
}

persist() {
    local keys key lines=""
    keys=$( [ -f "$STATE_FILE" ] && awk -F '\t' '!/^#/ && $1 !~ /^file:/ { print $1 }' "$STATE_FILE" ) || true
    if [ "$DRY_RUN" = 1 ]; then
        echo "  --persist: would write the settings changed by tune.sh to $PERSIST_FILE"
        return 0
    fi
    if [ -z "$keys" ]; then
        echo "  --persist: tune.sh has changed no sysctl on this host, so $PERSIST_FILE is not written"
        return 0
    fi
    while read -r key; do
        lines+="$key = $(proc_value "$(sysctl_path "$key")")"$'\n'
    done <<<"$keys"
    record_file "$PERSIST_FILE"
    mkdir -p "$(dirname "$PERSIST_FILE")"
    {
        printf '# c10m: written by scripts/tune.sh --connections %s --persist; removed by scripts/tune.sh --revert.\n' "$CONNECTIONS"
        printf '# The sysctls tune.sh changed, at the values it set. Why each: docs/TUNING.md, or c10m doctor.\n'
        printf '%s' "$lines"
    } >"$PERSIST_FILE"
    echo "  --persist: wrote the $(grep -c . <<<"$keys") settings tune.sh changed to $PERSIST_FILE (applied at boot by systemd-sysctl)"
}

apply() {
    local bin plan rc key rec cur verdict reason conntrack=0
    bin=$(plan_bin)
    set +e
    plan=$("$bin" --connections "$CONNECTIONS" --only "${ONLY:-all}")
    rc=$?
    set -e
    [ "$rc" = 0 ] || die "$rc" "no plan for --connections $CONNECTIONS (see the message above); nothing was changed"

    CHANGED=0
    SKIPPED=0
    local low=0 on_host=0
    echo "c10m tune: $CONNECTIONS connections, scopes ${ONLY:-all} (plan: $bin)"
    [ "$DRY_RUN" = 1 ] && echo "dry run: nothing will be changed"
    while IFS=$'\t' read -r key rec cur verdict reason; do
        [ -n "$key" ] || continue
        [ "$key" = net.netfilter.nf_conntrack_max ] && conntrack=1
        if [ "$verdict" = ok ]; then
            echo "  $key: $cur  ok"
            continue
        fi
        if [ "$verdict" = host ]; then
            # Seen from a network namespace: kernel-global, so the host's to check and change.
            echo "  $key: set on the host (needs $rec)  ($reason)"
            on_host=$((on_host + 1))
            continue
        fi
        low=$((low + 1))
        case $key in
            nofile) apply_nofile "$rec" "$cur" "$reason" ;;
            *) apply_sysctl "$key" "$rec" "$cur" "$reason" ;;
        esac
    done <<<"$plan"
    if [ "$conntrack" = 1 ]; then
        echo "  note: conntrack is loaded. Besides a larger table, the server port can be exempted from"
        echo "        tracking with an nftables notrack rule; see docs/TUNING.md (conntrack)."
    fi
    [ "$PERSIST" = 1 ] && persist
    if [ "$on_host" != 0 ]; then
        echo "inside a network namespace (a container): $on_host host-wide settings are set on the host and were"
        echo "left alone; on the host run: sudo scripts/tune.sh --connections $CONNECTIONS --only host"
    fi
    if [ "$DRY_RUN" = 1 ]; then
        echo "dry run: $low settings would change"
    elif [ "$low" = 0 ]; then
        echo "nothing to change: every setting$([ "$on_host" = 0 ] || echo " this namespace owns") already serves $CONNECTIONS connections"
    elif [ "$CHANGED" = 0 ]; then
        echo "nothing changed: what tune.sh can set is already set$([ "$SKIPPED" = 0 ] || echo ", $SKIPPED skipped")"
    else
        echo "changed $CHANGED settings$([ "$SKIPPED" = 0 ] || echo ", skipped $SKIPPED"); originals recorded in $STATE_FILE"
        echo "undo with: scripts/tune.sh --revert --state-file $STATE_FILE"
    fi
}

if [ "$REVERT" = 1 ]; then revert; else apply; fi
