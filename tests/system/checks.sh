#!/bin/bash
# The system test's checks, run as root inside the arm64 VM that scripts/test-system boots (by the
# image's peapod-test.service, from the 9p share at /mnt/share), as an administrator of a board
# would do them: the .deb installed with apt, the unit driven with systemctl, the pods reached
# with curl. Boot 1 installs and works the service through its life; boot 2 is after a power
# cycle. Each check is written to report-<boot> as "ok"/"FAIL"; rc-<boot> holds 0 when all passed.
set -uo pipefail
share=/mnt/share
boot=$(cat "$share/phase")
report=$share/report-$boot
: >"$report"
failures=0
export DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin

# check NAME CMD...: runs CMD; records ok or FAIL (with the end of its output) and its time.
check() {
    local name=$1 t0 out rc=0
    shift
    t0=$(date +%s%N)
    out=$("$@" 2>&1) || rc=$?
    local ms=$((($(date +%s%N) - t0) / 1000000))
    if [ $rc = 0 ]; then
        printf 'ok    boot %s: %s (%d ms)\n' "$boot" "$name" "$ms" >>"$report"
    else
        failures=$((failures + 1))
        printf 'FAIL  boot %s: %s (exit %d, %d ms)\n' "$boot" "$name" "$rc" "$ms" >>"$report"
        tail -8 <<<"$out" | sed 's/^/        /' >>"$report"
    fi
    return $rc
}
# until SECONDS CMD...: runs CMD every 0.5 s until it succeeds; fails after SECONDS.
until_ok() {
    local end=$(($(date +%s) + $1))
    shift
    until "$@"; do
        [ "$(date +%s)" -lt $end ] || { echo "still failing after the wait: $*"; "$@"; return 1; }
        sleep 0.5
    done
}
note() { printf '      boot %s: %s\n' "$boot" "$*" >>"$report"; }
prop() { systemctl show -P "$1" peapod; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

# The pod's IP as `peapod inspect` shows it.
pod_ip() { peapod inspect "$1" | grep -o '"ip": *"[0-9.]*"' | grep -o '[0-9.]*[0-9]'; }
serves() { # serves POD: its app answers on the pod's IP
    local ip
    ip=$(pod_ip "$1") && curl -fsS -m 5 "http://$ip:8080/healthz" | grep -qx ok
}
published() { curl -fsS -m 5 http://127.0.0.1:18080/healthz | grep -qx ok; }
is_active() { [ "$(systemctl is-active peapod)" = active ]; }
main_pid_changed() { # main_pid_changed OLD: active again, under another PID
    is_active && [ "$(prop MainPID)" != "$1" ] && [ "$(prop MainPID)" != 0 ]
}
same_ips() { # same_ips FILE: each pod of FILE (lines "POD IP") has that IP and serves on it
    local pod ip
    while read -r pod ip; do
        [ "$(pod_ip "$pod")" = "$ip" ] || { echo "$pod: $(pod_ip "$pod"), was $ip"; return 1; }
        until_ok 30 serves "$pod" || return 1
    done <"$1"
}
record_ips() { for p in demo applied; do echo "$p $(pod_ip "$p")"; done >"$1"; }
ready_status() { # the unit is active and running, and its STATUS= line says the pods are ready
    [ "$(prop ActiveState)/$(prop SubState)" = active/running ] || { prop ActiveState; prop SubState; return 1; }
    prop StatusText | grep -q ready || { prop StatusText; return 1; }
}
apply_pod() {
    cat >/root/applied.toml <<'EOF'
[pod]
name = "applied"
[[containers]]
name = "kv"
module = "/usr/share/peapod/guests/kv-server.wasm"
args = ["--listen", "0.0.0.0:8080"]
EOF
    peapod apply -f /root/applied.toml
}
start_pods() {
    cp /usr/share/doc/peapod/examples/demo.toml /etc/peapod/pods/ &&
        apply_pod &&
        until_ok 120 serves demo && until_ok 60 serves applied && until_ok 30 published
}
journal() { journalctl -b -u peapod --no-pager -o short-monotonic >"$share/journal-$boot" 2>&1; }

# Compound checks.
not_enabled() { [ "$(systemctl is-enabled peapod)" = disabled ]; }
socket_mode() { [ "$(stat -c %U:%G:%a /run/peapod/peapod.sock)" = root:peapod:660 ]; }
dir_modes() { [ "$(stat -c %a /var/lib/peapod)/$(stat -c %a /run/peapod)" = 700/755 ]; }
ps_lists_both() { # NAME STATUS IP READY ...: both running, all containers ready
    local out
    out=$(peapod ps) && echo "$out" &&
        awk '$1 == "demo" && $2 == "running" && $4 == "2/2" { d = 1 }
             $1 == "applied" && $2 == "running" && $4 == "1/1" { a = 1 }
             END { exit !(d && a) }' <<<"$out"
}
stored_through_published() {
    curl -fsS -X PUT -d one http://127.0.0.1:18080/kv/k &&
        curl -fsS "http://$(pod_ip demo):8080/kv/k" | grep -qx one
}
warning_levels() {
    local w
    w=$(journalctl -b -u peapod -p warning -o cat --no-pager) &&
        grep -q broken.toml <<<"$w" && ! grep -q "ready in" <<<"$w" &&
        journalctl -b -u peapod -p info -o cat --no-pager | grep -q "ready in"
}
same_pid() { systemctl "$1" peapod && [ "$(prop MainPID)" = "$2" ]; }
new_pid() { systemctl "$1" peapod && [ "$(prop MainPID)" != "$2" ]; }
more_restarts() { [ "$(prop NRestarts)" -gt "$1" ]; }
by_watchdog() { journalctl -b -u peapod --no-pager | grep -i "watchdog timeout"; }
stop_keeps_pins() {
    systemctl stop peapod && [ "$(systemctl is-active peapod)" = inactive ] &&
        ls /run/peapod/netns/demo /run/peapod/netns/applied &&
        nsenter --net=/run/peapod/netns/demo ip -4 -o addr |
        grep -F " $(grep ^demo "$share/ips-1" | cut -d' ' -f2)/"
}
start_same() { systemctl start peapod && same_ips "$share/ips-1"; }
removed() {
    apt-get remove -y -q peapod && ! is_active && [ ! -e /usr/bin/peapod ] &&
        [ -f /etc/peapod/peapod.toml ] && [ -f /etc/peapod/pods/demo.toml ] && [ -d /var/lib/peapod ]
}
purged() {
    apt-get purge -y -q peapod && [ ! -e /etc/peapod ] && [ ! -e /var/lib/peapod ] &&
        [ -z "$(ls /run/peapod/netns 2>/dev/null)" ] && ! ip link show peapod0 && getent group peapod
}
reinstalled() {
    apt-get install -y -q "$1" && systemctl enable --now peapod && [ -z "$(peapod ps | tail -n +2)" ]
}
enabled_and_active() { [ "$(systemctl is-enabled peapod)" = enabled ] && until_ok 120 is_active; }
serves_published() { until_ok 120 serves demo && until_ok 30 published; }
# The leases file holds exactly the pods' current addresses.
leases_are() { # leases_are FILE (lines "POD IP", sorted by pod)
    local want have
    want=$(sort "$1" | awk '{ printf "%s\"%s\":\"%s\"", (NR > 1 ? "," : ""), $1, $2 }')
    have=$(tr -d ' \n' </var/lib/peapod/ipam/peapod0.json | grep -o '"leases":{[^}]*}')
    [ "$have" = "\"leases\":{$want}" ] || { echo "leases: $have, want {$want}"; return 1; }
}
new_ips() { ! grep -qxFf "$share/ips-1" "$share/ips-2"; }

if [ "$boot" = 1 ]; then
    deb=$(ls "$share"/peapod_*_arm64.deb)
    check "apt install ./$(basename "$deb")" apt-get install -y -q "$deb"
    check "the peapod group exists" getent group peapod
    check "installed, not enabled (enabling is the administrator's step)" not_enabled
    check "systemctl enable --now peapod (Type=notify: returns at READY=1)" systemctl enable --now peapod
    check "active/running, STATUS= says ready" ready_status
    note "StatusText: $(prop StatusText)"
    check "API socket /run/peapod/peapod.sock is root:peapod 0660" socket_mode
    check "state dir /var/lib/peapod is 0700, run dir /run/peapod 0755" dir_modes

    check "demo pod (pods dir) and an applied pod serve on their IPs, demo on 127.0.0.1:18080" start_pods
    # The app can answer before its readiness probe first passes (a probe that fails at the
    # start is tried again a period later, 5 s in the demo, as in Kubernetes): wait a period.
    check "peapod ps lists both pods running, all containers ready" until_ok 20 ps_lists_both
    check "a key stored through the published port is read on the pod IP" stored_through_published
    record_ips "$share/ips-1"
    note "pod IPs: $(tr '\n' ' ' <"$share/ips-1")"

    echo 'this is not toml [' >/etc/peapod/pods/broken.toml
    check "a bad pod file is a warning in the journal (journalctl -p warning), info lines are not" \
        until_ok 20 warning_levels
    rm -f /etc/peapod/pods/broken.toml

    check "systemctl reload peapod: the same daemon" same_pid reload "$(prop MainPID)"
    check "  ... the pods serve on the same IPs" same_ips "$share/ips-1"
    check "systemctl restart peapod: a new daemon" new_pid restart "$(prop MainPID)"
    check "  ... the pods serve on the same IPs" same_ips "$share/ips-1"

    pid=$(prop MainPID)
    restarts=$(prop NRestarts)
    kill -9 "$pid"
    check "kill -9 of the main PID: systemd restarts it (Restart=on-failure)" until_ok 30 main_pid_changed "$pid"
    check "  ... NRestarts went up" more_restarts "$restarts"
    check "  ... the pods serve on the same IPs" same_ips "$share/ips-1"

    # The watchdog, with WatchdogSec=10s (the unit's 30 s would only make the wait longer).
    mkdir -p /run/systemd/system/peapod.service.d
    printf '[Service]\nWatchdogSec=10s\n' >/run/systemd/system/peapod.service.d/watchdog.conf
    systemctl daemon-reload
    systemctl restart peapod
    pid=$(prop MainPID)
    kill -STOP "$pid"
    check "a SIGSTOPped daemon is killed by the watchdog and restarted" until_ok 45 main_pid_changed "$pid"
    check "  ... the journal says it was the watchdog" by_watchdog
    check "  ... the pods serve on the same IPs" same_ips "$share/ips-1"
    rm -rf /run/systemd/system/peapod.service.d
    systemctl daemon-reload

    check "systemctl stop: inactive, the pods' namespaces stay pinned (RuntimeDirectoryPreserve)" stop_keeps_pins
    check "systemctl start: the pods are back on the same IPs" start_same

    check "apt remove: the daemon stops, the binary goes, config and state stay" removed
    check "apt purge: config, state and the pods' pins go (the group stays)" purged
    check "apt install again, enable --now: active, no pods" reinstalled "$deb"
    # For the power cycle: the demo pod in the pods dir and an applied pod, as a board would have.
    check "demo pod and applied pod again, serving" start_pods
    record_ips "$share/ips-1"
    note "pod IPs before the power cycle: $(tr '\n' ' ' <"$share/ips-1")"
else
    check "after the power cycle: peapod is enabled and active" enabled_and_active
    ready=$(prop ActiveEnterTimestampMonotonic)
    note "boot to READY=1: $(awk -v us="$ready" 'BEGIN { printf "%.1f s", us / 1e6 }') after the kernel started"
    check "the demo pod (pods dir) serves, on 127.0.0.1:18080 too" serves_published
    note "boot to the demo app answering: $(uptime_s) s"
    check "the applied pod serves" until_ok 60 serves applied
    record_ips "$share/ips-2"
    note "pod IPs after the power cycle: $(tr '\n' ' ' <"$share/ips-2") (before: $(tr '\n' ' ' <"$share/ips-1"))"
    # The namespaces did not survive the power cycle, so each pod has a new sandbox, and a new
    # sandbox is a new IP (as a pod re-created after a node reboot in Kubernetes); the old
    # leases are released, not leaked.
    check "new sandboxes, so new IPs" new_ips
    check "  ... the leases file holds just the two current addresses" leases_are "$share/ips-2"
fi
journal
echo "$failures" >"$share/rc-$boot"
sync
