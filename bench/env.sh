# shellcheck shell=bash
# Sourced by the bench scripts: a throwaway peapod installation of their own, removed on exit.
#   bench_env PREFIX SECOND_OCTET   bridge PREFIX<tag>, subnet 10.SECOND_OCTET.x.0/22, a temp dir
#                                   ($dir) for run/state/pods; exports the PEAPOD_* settings
# A script that starts a daemon sets $daemon_pid; cleanup kills it (by that PID) first.
now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

bench_env() {
    local tag; tag=$(printf '%05x' $((RANDOM * 32 + $$ % 32)))
    dir=$(mktemp -d "/tmp/peapod-bench.XXXXXX")
    bridge=$1$tag
    export PEAPOD_CONFIG=/dev/null PEAPOD_RUN_DIR=$dir/run PEAPOD_STATE_DIR=$dir/state \
        PEAPOD_PODS_DIR=$dir/pods PEAPOD_BRIDGE=$bridge \
        PEAPOD_SUBNET=10.$2.$(( RANDOM % 64 * 4 )).0/22 PEAPOD_EGRESS=false
    mkdir -p "$dir/pods"
    daemon_pid=
    trap bench_cleanup EXIT INT TERM
}

bench_cleanup() {
    if [ -n "$daemon_pid" ] && kill -9 "$daemon_pid" 2>/dev/null; then
        wait "$daemon_pid" 2>/dev/null || true
    fi
    for pin in "$dir"/run/netns/*; do
        if [ -e "$pin" ]; then umount -l "$pin" 2>/dev/null || true; fi
    done
    for port in $(ip -o link show master "$bridge" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
        ip link del "$port" 2>/dev/null || true
    done
    ip link del "$bridge" 2>/dev/null || true
    rm -rf "$dir"
}
