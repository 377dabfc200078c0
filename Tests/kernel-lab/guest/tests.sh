#!/bin/sh
# The kernel-lab checks, run in the guest by /init. Each prints "FERRY-LAB: PASS <name>" or
# "FERRY-LAB: FAIL <name>"; the exit status is the number of failures.
LAB=/lab
DRIVER="$LAB/ferry-kernel-lab"
# The real CLI, run on the configs the project ships (key=value overrides only set the run's
# length and where the stats go).
FERRY="$LAB/ferry"
CONFIGS="$LAB/configs"
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

# ---- `ferry run` on the shipped configs --------------------------------------------------

# conf_value <file> <key>: a key's value in a Ferry config file.
conf_value() { sed -n "s/^$2[[:space:]]*=[[:space:]]*\([^[:space:]#]*\).*/\1/p" "$1" | tail -n1; }

# json_port <file> <port> <field>: a field of one port in a stats_json document.
json_port() { sed -n "s/.*{\"port\": $2, .*\"$3\": \([0-9a-z.]*\).*/\1/p" "$1"; }

# json_streams_sum <file> <field>: a field summed over every stream.
json_streams_sum() {
    sed -n "s/.*{\"rx_port\": .*\"$2\": \([0-9]*\).*/\1/p" "$1" | awk '{ s += $1 } END { print s + 0 }'
}

# netstat <iface> <counter>: /sys/class/net/<iface>/statistics/<counter>.
netstat() { cat "/sys/class/net/$1/statistics/$2"; }

# expect <description> <actual> <op> <wanted>: one numeric comparison, printed either way.
expect() {
    if [ "$2" "$3" "$4" ] 2>/dev/null; then
        echo "ferry-lab: ok: $1: $2 $3 $4"
    else
        echo "ferry-lab: WRONG: $1: $2, expected $3 $4"
        return 1
    fi
}

# ferry_start <name> <config> <key=value...>: `ferry run` in the background, until SIGTERM
# (duration=0) unless the overrides say otherwise; stdout in /tmp/<name>.out, the log in
# /tmp/<name>.log. Waits until the worker runs (after DRIVER_OK and the start-up control
# commands). Sets ferry_pid.
ferry_start() {
    fname="$1"; fconf="$2"
    shift 2
    rm -f "/tmp/$fname.json"
    timeout 120 "$FERRY" run "$fconf" stats_json="/tmp/$fname.json" "$@" > "/tmp/$fname.out" 2> "/tmp/$fname.log" &
    ferry_pid=$!
    i=0
    while ! grep -q "worker 0 on core" "/tmp/$fname.log" 2>/dev/null; do
        if ! kill -0 "$ferry_pid" 2>/dev/null || [ "$i" -ge 300 ]; then
            echo "ferry-lab: ferry did not start forwarding:"
            sed 's/^/ferry-lab:   /' "/tmp/$fname.log"
            kill -TERM "$ferry_pid" 2>/dev/null
            wait "$ferry_pid"
            echo "ferry-lab: ferry exit status $?"
            return 1
        fi
        sleep 0.1
        i=$((i + 1))
    done
}

# ferry_finish <name> [stop]: waits for Ferry to exit, after SIGTERM with `stop` (else at
# the end of its duration); prints its log and its stats_json; 0 when it stopped cleanly and
# wrote the JSON.
ferry_finish() {
    fname="$1"
    [ "$2" = stop ] && kill -TERM "$ferry_pid" 2>/dev/null
    frc=0
    wait "$ferry_pid" || frc=$?
    sed 's/^/ferry-lab: ferry: /' "/tmp/$fname.log"
    [ "$frc" -eq 0 ] || { echo "ferry-lab: ferry exited with $frc"; return 1; }
    grep -q '"ports"' "/tmp/$fname.json" 2>/dev/null || { echo "ferry-lab: no stats_json written"; return 1; }
    grep '^ *{' "/tmp/$fname.json" | sed 's/^ */ferry-lab: json: /'
}

# wait_rx <name> <frames> <tenths>: until Ferry's periodic stats show <frames> received.
wait_rx() {
    i=0
    while [ "$i" -lt "$3" ]; do
        seen=$(grep 'RX-packets:' "/tmp/$1.out" | tail -n1 | awk '{ print $2 }')
        [ -n "$seen" ] && [ "$seen" -ge "$2" ] && return 0
        sleep 0.1
        i=$((i + 1))
    done
    echo "ferry-lab: Ferry's periodic stats showed ${seen:-nothing} of $2 frames"
}

# cli_tap_txonly <config> [txpkts]: `ferry run` txonly on a persistent tap for 2 s. Every
# frame Ferry counts as sent, less those the kernel had not taken from the TX ring at stop, is
# a frame the tap received (its rx counter; nothing else writes into a tap), with the
# template's length; every frame the tap-peer captured is the txonly UDP frame, built there
# from its rules; and the tap carries the port's MAC. With txpkts naming several segments
# (e.g. 2000,2000,2000,2000: 8000-byte frames of four buffers), each frame is a chain; the
# kernel offers INDIRECT_DESC, so Ferry must say it took it, and the chain goes through an
# indirect table the kernel reads.
cli_tap_txonly() {
    conf="$1"; txpkts="${2:-64}"
    iface=$(conf_value "$conf" port.0.iface); src=$(conf_value "$conf" port.0.mac)
    dst=$(conf_value "$conf" eth_peer.0)
    len=0; saved_ifs=$IFS; IFS=,
    for seg in $txpkts; do len=$((len + seg)); done
    IFS=$saved_ifs
    "$IP" tuntap add dev "$iface" mode tap vnet_hdr || return 1
    # Frames above the default MTU must still be taken in (the tap drops them otherwise).
    [ "$len" -gt 1514 ] && { "$IP" link set dev "$iface" mtu 9000 || return 1; }
    "$IP" link set dev "$iface" up || return 1
    rm -f "/tmp/$iface.ready" "/tmp/$iface.stop"
    timeout 120 "$LAB/tap-peer" --capture-udp "$iface" "$src" "$dst" "$len" "/tmp/$iface.ready" "/tmp/$iface.stop" 100 \
        > "/tmp/$iface.capture" 2>&1 &
    peer=$!
    wait_for "/tmp/$iface.ready" 100 || { echo "ferry-lab: tap-peer did not bind to $iface"; kill "$peer"; return 1; }
    rx0=$(netstat "$iface" rx_packets); rxb0=$(netstat "$iface" rx_bytes); rxd0=$(netstat "$iface" rx_dropped)
    ok=0
    ferry_start cli-txonly "$conf" duration=2 stats_period=0 txpkts="$txpkts" || ok=1
    [ "$ok" -eq 0 ] && { ferry_finish cli-txonly || ok=1; }
    rx=$(( $(netstat "$iface" rx_packets) - rx0 )); rxb=$(( $(netstat "$iface" rx_bytes) - rxb0 ))
    rxd=$(( $(netstat "$iface" rx_dropped) - rxd0 ))
    touch "/tmp/$iface.stop"
    wait "$peer" || ok=1
    sed 's/^/ferry-lab: /' "/tmp/$iface.capture"
    if [ "$ok" -eq 0 ]; then
        j=/tmp/cli-txonly.json
        tx=$(json_port $j 0 tx_packets); txb=$(json_port $j 0 tx_bytes)
        left=$(json_port $j 0 tx_inflight_at_stop)
        expect "Ferry sent frames" "$tx" -gt 0 || ok=1
        expect "tap rx_packets == Ferry tx_packets - tx_inflight_at_stop ($tx - $left)" "$rx" -eq $((tx - left)) || ok=1
        expect "tap rx_bytes == Ferry tx_bytes - tx_inflight_at_stop x $len" "$rxb" -eq $((txb - left * len)) || ok=1
        expect "Ferry tx_bytes == tx_packets x $len" "$txb" -eq $((tx * len)) || ok=1
        expect "tap rx_dropped" "$rxd" -eq 0 || ok=1
        captured=$(sed -n 's/^tap-peer: capture-total //p' "/tmp/$iface.capture")
        expect "frames the capture socket saw (kept or dropped) == tap rx_packets" "${captured:-0}" -eq "$rx" || ok=1
        [ "$(json_port $j 0 link_up)" = true ] || { echo "ferry-lab: WRONG: link_up is not true"; ok=1; }
        mac=$(cat "/sys/class/net/$iface/address")
        [ "$mac" = "$src" ] || { echo "ferry-lab: WRONG: tap MAC $mac, expected port.0.mac $src"; ok=1; }
        if [ "$txpkts" != "$len" ]; then
            grep -q "indirect on" /tmp/cli-txonly.log \
                || { echo "ferry-lab: WRONG: Ferry did not report indirect on:"; grep "ring," /tmp/cli-txonly.log; ok=1; }
        fi
        [ "$ok" -eq 0 ] && echo "ferry-lab: cli txonly: $tx frames of $len bytes (txpkts $txpkts) sent in 2 s, $rx on the tap, $left left in the ring, tap MAC $mac"
    fi
    "$IP" link del dev "$iface" 2>/dev/null
    return "$ok"
}

# cli_tap_rxonly <config> <frames> [multi_queue] [key=value...]: `ferry run` rxonly on a
# persistent tap (multi-queue for more than one queue pair); tap-peer writes <frames> lab
# frames into it. Ferry must receive exactly those frames (count and bytes, no errors), and
# the tap must have sent nothing else: its tx counter grows by exactly <frames>.
cli_tap_rxonly() {
    conf="$1"; frames="$2"; mq="$3"
    shift 3
    iface=$(conf_value "$conf" port.0.iface)
    "$IP" tuntap add dev "$iface" mode tap vnet_hdr $mq || return 1
    "$IP" link set dev "$iface" up || return 1
    tx0=$(netstat "$iface" tx_packets); txd0=$(netstat "$iface" tx_dropped)
    ok=0
    ferry_start cli-rxonly "$conf" duration=0 stats_period=1 "$@" || { "$IP" link del dev "$iface"; return 1; }
    rm -f "/tmp/$iface.ready"
    timeout 60 "$LAB/tap-peer" "$iface" 0 "$frames" "/tmp/$iface.ready" 30 > "/tmp/$iface.peer" 2>&1 || ok=1
    sed 's/^/ferry-lab: /' "/tmp/$iface.peer"
    wait_rx cli-rxonly "$frames" 200 || ok=1
    # A moment more, so a frame beyond the expected ones would be counted too.
    sleep 0.5
    ferry_finish cli-rxonly stop || ok=1
    txs=$(( $(netstat "$iface" tx_packets) - tx0 )); txd=$(( $(netstat "$iface" tx_dropped) - txd0 ))
    if [ "$ok" -eq 0 ]; then
        j=/tmp/cli-rxonly.json
        bytes=$(sed -n 's/^tap-peer: sent [0-9]* frames (\([0-9]*\) bytes).*/\1/p' "/tmp/$iface.peer")
        rx=$(json_port $j 0 rx_packets)
        expect "frames the tap sent towards Ferry (no other chatter)" "$txs" -eq "$frames" || ok=1
        expect "tap tx_dropped" "$txd" -eq 0 || ok=1
        expect "Ferry rx_packets == frames written" "$rx" -eq "$frames" || ok=1
        expect "Ferry rx_bytes == bytes written" "$(json_port $j 0 rx_bytes)" -eq "${bytes:-0}" || ok=1
        expect "Ferry rx_errors" "$(json_port $j 0 rx_errors)" -eq 0 || ok=1
        expect "Ferry rx_unread_at_stop" "$(json_port $j 0 rx_unread_at_stop)" -eq 0 || ok=1
        expect "Ferry tx_packets (rxonly)" "$(json_port $j 0 tx_packets)" -eq 0 || ok=1
        [ "$(json_port $j 0 link_up)" = true ] || { echo "ferry-lab: WRONG: link_up is not true"; ok=1; }
        [ "$ok" -eq 0 ] && echo "ferry-lab: cli rxonly: $rx/$frames frames, $bytes bytes, on $iface"
    fi
    "$IP" link del dev "$iface" 2>/dev/null
    return "$ok"
}

# A fresh vdpa0 with VDPA_MAC (the driver checks above changed its MAC; its counters start at
# zero), for the CLI checks.
vdpa_recreate() {
    "$VDPA" dev del vdpa0 || return 1
    i=0
    while [ -e /dev/vhost-vdpa-0 ] && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    "$VDPA" dev add mgmtdev vdpasim_net name vdpa0 mac "$VDPA_MAC" || return 1
    wait_for /dev/vhost-vdpa-0 50 || { echo "ferry-lab: /dev/vhost-vdpa-0 did not come back"; return 1; }
    "$VDPA" dev config show vdpa0 | sed 's/^/ferry-lab: config: /'
}

# vdpa_loop_accounting <json> <frame length>: the frames Ferry made (tx_first) circled
# Ferry -> simulator -> Ferry: every frame received was sent on (tx + dropped == rx +
# generated), and every frame sent came back or was still in a ring at stop, so the simulator
# lost none; every frame kept the template's length.
vdpa_loop_accounting() {
    j="$1"; len="$2"; ok=0
    tx=$(json_port $j 0 tx_packets); rx=$(json_port $j 0 rx_packets); dropped=$(json_port $j 0 tx_dropped)
    gen=$(json_streams_sum $j generated); left=$(json_port $j 0 tx_inflight_at_stop)
    unread=$(json_port $j 0 rx_unread_at_stop)
    expect "Ferry rx_packets" "$rx" -gt 0 || ok=1
    expect "tx_first frames generated (tx_first x burst)" "$gen" -eq "$3" || ok=1
    expect "tx + tx_dropped == rx + generated ($tx + $dropped vs $rx + $gen)" $((tx + dropped)) -eq $((rx + gen)) || ok=1
    expect "tx - rx == tx_inflight_at_stop + rx_unread_at_stop (nothing lost in the device)" $((tx - rx)) -eq $((left + unread)) || ok=1
    expect "rx_bytes == rx_packets x $len" "$(json_port $j 0 rx_bytes)" -eq $((rx * len)) || ok=1
    expect "rx_errors" "$(json_port $j 0 rx_errors)" -eq 0 || ok=1
    [ "$(json_port $j 0 link_up)" = true ] || { echo "ferry-lab: WRONG: link_up is not true"; ok=1; }
    [ "$ok" -eq 0 ] && echo "ferry-lab: cli vdpa: the $gen tx_first frames kept circling: $rx received in all, $dropped dropped by Ferry, $((left + unread)) in the rings at stop"
    return "$ok"
}

# cli_vdpa_loopback <config>: mac mode, tx_first, eth_peer.0 = the device's MAC, for 2 s.
cli_vdpa_loopback() {
    conf="$1"
    expected=$(( $(conf_value "$conf" tx_first) * $(conf_value "$conf" burst) ))
    ferry_start cli-vdpa "$conf" duration=2 stats_period=0 txpkts=64 || return 1
    ferry_finish cli-vdpa || return 1
    vdpa_loop_accounting /tmp/cli-vdpa.json 64 "$expected"
}

# cli_vdpa_mac <config> <new-mac>: port.0.mac = a new MAC. Ferry sends MAC_ADDR_SET on its
# emulated control queue at start, and the shadow control queue replays it on the device's
# own: the simulator's control-queue counters show exactly one command, acknowledged
# (read while Ferry runs: the counters need FEATURES_OK). Frames to the new MAC loop back, so
# the device filters on it, and `vdpa dev config show` reports it after Ferry exits.
#
# Ferry also writes port.0.mac into config space (SET_CONFIG) at init, as DPDK does, which
# on the simulator alone would change the config MAC: the control-queue counters are what
# prove the shadow queue carried the command.
cli_vdpa_mac() {
    conf="$1"; new="$2"
    expected=$(( $(conf_value "$conf" tx_first) * $(conf_value "$conf" burst) ))
    ok=0
    ferry_start cli-vdpa-mac "$conf" port.0.mac="$new" eth_peer.0="$new" duration=0 stats_period=0 txpkts=64 || return 1
    stats=$("$VDPA" dev vstats show vdpa0 qidx 2 2>&1)
    echo "$stats" | sed 's/^/ferry-lab: vstats: /'
    running=$("$VDPA" dev config show vdpa0 2>&1)
    echo "$running" | sed 's/^/ferry-lab: config while Ferry runs: /'
    sleep 1
    ferry_finish cli-vdpa-mac stop || ok=1
    # iproute2 6.1 prints "vdpa0: queue_type rx cvq requests 1 cvq successes 1 cvq errors 0"
    # (its queue_type label is wrong for the control queue; the counts are right).
    cvq() { echo "$stats" | tr -s ' \t\n' ' ' | sed -n "s/.*cvq $1 \([0-9]*\).*/\1/p"; }
    expect "device control queue: requests" "$(cvq requests)" -eq 1 || ok=1
    expect "device control queue: successes" "$(cvq successes)" -eq 1 || ok=1
    expect "device control queue: errors" "$(cvq errors)" -eq 0 || ok=1
    if grep -q "refused MAC\|shadow control queue:" /tmp/cli-vdpa-mac.log; then
        echo "ferry-lab: WRONG: Ferry logged a refused MAC or a shadow control queue error"; ok=1
    fi
    echo "$running" | grep -q "mac $new" || { echo "ferry-lab: WRONG: while Ferry ran: $running"; ok=1; }
    after=$("$VDPA" dev config show vdpa0 2>&1)
    echo "$after" | sed 's/^/ferry-lab: config after: /'
    echo "$after" | grep -q "mac $new" || { echo "ferry-lab: WRONG: config MAC is not $new"; ok=1; }
    [ "$ok" -eq 0 ] || return 1
    vdpa_loop_accounting /tmp/cli-vdpa-mac.json 64 "$expected"
}

check devices-present devices_present
check detect-vhost-net timeout 30 "$DRIVER" detect /dev/vhost-net vhost-kernel
check vhost-net-default-tap-name timeout 30 "$DRIVER" kernel-default-name
check vhost-net-tap vhost_net_tap ferrytap0 1 128
check vhost-net-multiqueue-tap vhost_net_tap ferrymq0 2 64
check cli-vhost-net-txonly cli_tap_txonly "$CONFIGS/kernel-tap.conf"
check cli-vhost-net-txonly-chained-indirect cli_tap_txonly "$CONFIGS/kernel-tap.conf" 2000,2000,2000,2000
check cli-vhost-net-rxonly cli_tap_rxonly "$CONFIGS/kernel-tap.conf" 1000 "" fwd=rxonly
check cli-vhost-net-multiqueue-rxonly cli_tap_rxonly "$CONFIGS/kernel-multiqueue.conf" 1000 multi_queue
if check vdpa-device-created vdpa_device; then
    check detect-vhost-vdpa timeout 30 "$DRIVER" detect /dev/vhost-vdpa-0 vhost-vdpa
    check vdpa-loopback timeout 120 "$DRIVER" vdpa-loopback /dev/vhost-vdpa-0 "$VDPA_MAC" 256
    check vdpa-shadow-control-queue timeout 60 "$DRIVER" vdpa-shadow-cvq /dev/vhost-vdpa-0 "$VDPA_MAC" "$VDPA_NEW_MAC"
    check vdpa-config-show-mac vdpa_config_mac
    if check cli-vdpa-device-recreated vdpa_recreate; then
        check cli-vdpa-loopback cli_vdpa_loopback "$CONFIGS/vdpa-loopback.conf"
        check cli-vdpa-shadow-cvq-mac cli_vdpa_mac "$CONFIGS/vdpa-loopback.conf" "$VDPA_NEW_MAC"
    fi
fi
exit "$failures"
