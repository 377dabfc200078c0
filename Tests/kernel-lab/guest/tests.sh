#!/bin/sh
# The kernel-lab checks, run in the guest by /init. Each prints "FERRY-LAB: PASS <name>" or
# "FERRY-LAB: FAIL <name>"; the exit status is the number of failures.
LAB=/lab
DRIVER="$LAB/ferry-kernel-lab"
# iproute2's, by absolute path: busybox's shell prefers its own applets (its `ip` has no
# tuntap) over anything on PATH.
IP=/sbin/ip
VDPA=/sbin/vdpa
VDPA_MAC=02:00:00:00:00:01
# Differs from VDPA_MAC in its first byte: vdpa_sim_net's receive filter compares MACs with
# strncmp, which stops at the first zero byte.
VDPA_NEW_MAC=0a:11:22:33:44:55
failures=0

uptime_cs() { awk '{ split($1, t, "."); print t[1] * 100 + t[2] }' /proc/uptime; }

# check <name> <command...>: runs the command (bounded by `timeout`) and reports it.
check() {
    name="$1"
    shift
    start=$(uptime_cs)
    if "$@"; then
        end=$(uptime_cs)
        echo "FERRY-LAB: PASS $name ($(( (end - start) / 100 )).$(( (end - start) % 100 / 10 ))s)"
    else
        echo "FERRY-LAB: FAIL $name"
        failures=$((failures + 1))
    fi
}

wait_for() { # wait_for <path> <tenths of a second>
    i=0
    while [ ! -e "$1" ] && [ "$i" -lt "$2" ]; do sleep 0.1; i=$((i + 1)); done
    [ -e "$1" ]
}

devices_present() {
    for d in /dev/vhost-net /dev/net/tun; do
        [ -c "$d" ] || { echo "ferry-lab: $d missing"; return 1; }
    done
}

# vhost_net_tap <iface> <pairs> <frames per queue>: a persistent tap (multi-queue for more than
# one pair), tap-peer bound to it, then Ferry's traffic check; both sides must pass.
vhost_net_tap() {
    iface="$1"; pairs="$2"; per_queue="$3"
    total=$((pairs * per_queue))
    if [ "$pairs" -gt 1 ]; then mq=multi_queue; else mq=; fi
    "$IP" tuntap add dev "$iface" mode tap vnet_hdr $mq || return 1
    "$IP" link set dev "$iface" up || return 1
    rm -f "/tmp/$iface.ready"
    timeout 90 "$LAB/tap-peer" "$iface" "$total" "$total" "/tmp/$iface.ready" 60 > "/tmp/$iface.peer" 2>&1 &
    peer=$!
    if ! wait_for "/tmp/$iface.ready" 100; then
        echo "ferry-lab: tap-peer did not bind to $iface"
        kill "$peer" 2>/dev/null
        cat "/tmp/$iface.peer"
        return 1
    fi
    ok=0
    timeout 90 "$DRIVER" kernel-traffic "$iface" "$pairs" "$per_queue" "$total" || ok=1
    wait "$peer" || ok=1
    cat "/tmp/$iface.peer"
    "$IP" link del dev "$iface" 2>/dev/null
    return "$ok"
}

vdpa_device() {
    "$VDPA" dev add mgmtdev vdpasim_net name vdpa0 mac "$VDPA_MAC" || return 1
    wait_for /dev/vhost-vdpa-0 50 || { echo "ferry-lab: /dev/vhost-vdpa-0 did not appear"; return 1; }
    "$VDPA" dev show vdpa0 | sed 's/^/ferry-lab: /'
}

# After the shadow control queue set the MAC, the device keeps it: `vdpa dev config show`.
vdpa_config_mac() {
    out=$("$VDPA" dev config show vdpa0 2>&1)
    echo "$out" | sed 's/^/ferry-lab: config: /'
    echo "$out" | grep -q "mac $VDPA_NEW_MAC"
}

check devices-present devices_present
check detect-vhost-net timeout 30 "$DRIVER" detect /dev/vhost-net vhost-kernel
check vhost-net-default-tap-name timeout 30 "$DRIVER" kernel-default-name
check vhost-net-tap vhost_net_tap ferrytap0 1 128
check vhost-net-multiqueue-tap vhost_net_tap ferrymq0 2 64
if check vdpa-device-created vdpa_device; then
    check detect-vhost-vdpa timeout 30 "$DRIVER" detect /dev/vhost-vdpa-0 vhost-vdpa
    check vdpa-loopback timeout 120 "$DRIVER" vdpa-loopback /dev/vhost-vdpa-0 "$VDPA_MAC" 256
    check vdpa-shadow-control-queue timeout 60 "$DRIVER" vdpa-shadow-cvq /dev/vhost-vdpa-0 "$VDPA_MAC" "$VDPA_NEW_MAC"
    check vdpa-config-show-mac vdpa_config_mac
fi
exit "$failures"
