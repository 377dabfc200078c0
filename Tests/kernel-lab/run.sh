#!/usr/bin/env bash
# Ferry's kernel lab: runs Ferry's vhost-kernel and vhost-vdpa backends against the real Linux
# vhost_net, tun, vhost_vdpa and vdpa_sim_net, inside a QEMU/TCG guest running Debian's 6.12
# kernel. The machines here have no vhost_net, no vdpa and no module loading, so a guest is the
# only way to reach them (../shared/reference/kernel-lab.md records why and how).
#
# Usage: Tests/kernel-lab/run.sh              (as root; idempotent; everything is cached)
#        Tests/kernel-lab/run.sh --prepare    (steps 1-3 only: packages, kernel, modules)
#
# Steps, each cached under $FERRY_LAB_DIR (default <repo>/.build-lab, gitignored):
#   1. packages: qemu-system-x86 (--no-install-recommends), cpio, gcc-12, make, xz-utils,
#      iproute2 (its `ip` and `vdpa` go into the guest);
#   2. the kernel: the ABI linux-image-6.12-amd64 depends on today (looked up, never pinned);
#      image, headers, kbuild, linux-source and busybox-static fetched with `apt-get download`
#      and unpacked with `dpkg -x` (nothing is installed);
#   3. vringh.ko, vdpa_sim.ko and vdpa_sim_net.ko built out of tree (Debian does not ship them);
#   4. the guest programs: Ferry's lab driver and the `ferry` CLI (`swift build -c release
#      --static-swift-stdlib`), and the tap peer (`gcc -static`);
#   5. an initramfs: busybox, the modules in dependency order, ip, vdpa, the programs, and the
#      configs `ferry run` is checked with (configs/kernel-tap.conf, kernel-multiqueue.conf,
#      vdpa-loopback.conf);
#   6. boot (bounded by FERRY_LAB_TIMEOUT seconds), run guest/tests.sh, read its marker lines.
#
# Exit status: 0 every check passed; 1 a check failed, the build failed or the guest hung;
# 77 the lab cannot run on this machine (no root, no apt, no archive, qemu cannot start): the
# caller decides whether that is a skip or a failure (scripts/test fails under
# FERRY_REQUIRE_PEERS=1).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
LAB_DIR="${FERRY_LAB_DIR:-$repo_root/.build-lab}"
LAB_TIMEOUT="${FERRY_LAB_TIMEOUT:-300}"
LAB_PRODUCT="ferry-kernel-lab"
LAB_PACKAGES=(qemu-system-x86 cpio gcc-12 make xz-utils iproute2)
KERNEL_META="linux-image-6.12-amd64"
# The shipped configs the guest runs with `ferry run`.
LAB_CONFIGS=(kernel-tap.conf kernel-multiqueue.conf vdpa-loopback.conf)

lab_log()  { printf 'kernel-lab: %s\n' "$*" >&2; }
lab_fail() { printf 'kernel-lab: FAILED: %s\n' "$*" >&2; exit 1; }
lab_cannot_run() {
    printf '\n!!! KERNEL LAB CANNOT RUN: %s\n\n' "$*" >&2
    exit 77
}

# Wall-clock per step, printed at the end.
declare -a lab_timings=()
lab_now() { date +%s.%N; }
lab_timed() {
    local name="$1" start end
    shift
    start="$(lab_now)"
    "$@"
    end="$(lab_now)"
    lab_timings+=("$(printf '%-12s %6.1f s' "$name" "$(echo "$end - $start" | bc)")")
}

# ---- 1. packages --------------------------------------------------------------------------

lab_packages() {
    [ "$(id -u)" -eq 0 ] || lab_cannot_run "must run as root (apt-get, and qemu's files under $LAB_DIR)"
    command -v apt-get >/dev/null 2>&1 || lab_cannot_run "apt-get not found (Debian 12 expected)"
    local missing=() pkg
    for pkg in "${LAB_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        lab_log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || lab_cannot_run "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
            || lab_cannot_run "apt-get install ${missing[*]} failed"
    fi
    command -v qemu-system-x86_64 >/dev/null 2>&1 || lab_cannot_run "qemu-system-x86_64 missing after installing qemu-system-x86"
}

# ---- 2. the kernel --------------------------------------------------------------------------

# Sets abi (6.12.117+deb12), kver (abi-amd64) and kversion (the package version) from what
# the meta package depends on today. Older ABIs vanish from the archive, so this is never
# pinned.
lab_lookup_abi() {
    local show
    show="$(apt-cache show "$KERNEL_META" 2>/dev/null || true)"
    if [ -z "$show" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || lab_cannot_run "apt-get update failed"
        show="$(apt-cache show "$KERNEL_META" 2>/dev/null || true)"
    fi
    [ -n "$show" ] || lab_cannot_run "$KERNEL_META is not in the apt archive (is bookworm-security configured?)"
    # The first stanza is the candidate.
    show="$(printf '%s\n' "$show" | awk 'BEGIN{RS=""} NR==1')"
    abi="$(printf '%s\n' "$show" | sed -n 's/^Depends:.*linux-image-\([^ ,]*\)-amd64 .*/\1/p' | head -n1)"
    kversion="$(printf '%s\n' "$show" | sed -n 's/^Version: //p' | head -n1)"
    [ -n "$abi" ] && [ -n "$kversion" ] || lab_fail "cannot read the ABI from 'apt-cache show $KERNEL_META'"
    kver="$abi-amd64"
}

lab_kernel() {
    lab_lookup_abi
    kroot="$LAB_DIR/kernel/$abi"
    local stamp="$kroot/.unpacked"
    if [ -f "$stamp" ]; then
        lab_log "kernel $kver (cached)"
        return 0
    fi
    lab_log "fetching kernel $kver ($kversion)"
    local debs="$LAB_DIR/debs/$abi"
    rm -rf "$debs" "$kroot"
    mkdir -p "$debs" "$kroot/root"
    (cd "$debs" && apt-get download -q -o APT::Sandbox::User=root \
        "linux-image-$kver-unsigned=$kversion" \
        "linux-headers-$kver=$kversion" \
        "linux-headers-$abi-common=$kversion" \
        "linux-kbuild-$abi=$kversion" \
        "linux-source-6.12=$kversion" \
        busybox-static >/dev/null) || lab_cannot_run "apt-get download of the $kver packages failed"
    local deb
    for deb in "$debs"/*.deb; do
        case "$deb" in
            */linux-source-*) ;;
            *) dpkg -x "$deb" "$kroot/root" ;;
        esac
    done
    # Only the simulator and vringh are needed from the 153 MB source tarball.
    mkdir -p "$kroot/src-tmp"
    dpkg -x "$debs"/linux-source-6.12_*.deb "$kroot/src-tmp"
    local tarball
    tarball="$(ls "$kroot"/src-tmp/usr/src/linux-source-6.12.tar.* | head -n1)"
    mkdir -p "$kroot/source"
    tar -xf "$tarball" -C "$kroot/source" --strip-components=1 \
        linux-source-6.12/drivers/vdpa/vdpa_sim linux-source-6.12/drivers/vhost/vringh.c
    rm -rf "$kroot/src-tmp" "$debs"/linux-source-6.12_*.deb
    # The arch headers include the common ones by absolute /usr/src path.
    local headers="$kroot/root/usr/src/linux-headers-$kver"
    sed -i "s|/usr/src/linux-headers-$abi-common|$kroot/root/usr/src/linux-headers-$abi-common|g" "$headers/Makefile"
    [ -f "$kroot/root/boot/vmlinuz-$kver" ] || lab_fail "no vmlinuz-$kver in the image package"
    touch "$stamp"
    # Earlier ABIs are gone from the archive anyway; keep only this one.
    local old
    for old in "$LAB_DIR"/kernel/* "$LAB_DIR"/modules/* "$LAB_DIR"/debs/*; do
        [ -e "$old" ] && [ "$(basename "$old")" != "$abi" ] && rm -rf "$old"
    done
    return 0
}

# ---- 3. the simulator modules ---------------------------------------------------------------

lab_modules() {
    moddir="$LAB_DIR/modules/$abi"
    if [ -f "$moddir/vdpa_sim_net.ko" ] && [ -f "$moddir/.built" ]; then
        lab_log "vdpa_sim modules (cached)"
        return 0
    fi
    lab_log "building vringh, vdpa_sim, vdpa_sim_net out of tree"
    rm -rf "$moddir"
    mkdir -p "$moddir"
    cp "$kroot"/source/drivers/vdpa/vdpa_sim/*.[ch] "$kroot/source/drivers/vhost/vringh.c" "$moddir/"
    printf 'obj-m += vringh.o vdpa_sim.o vdpa_sim_net.o\n' > "$moddir/Kbuild"
    # pahole is missing, hence no BTF for modules.
    make -s -C "$kroot/root/usr/src/linux-headers-$kver" M="$moddir" CC=gcc-12 \
        CONFIG_VHOST_RING=m CONFIG_VDPA_SIM=m CONFIG_VDPA_SIM_NET=m CONFIG_DEBUG_INFO_BTF_MODULES= \
        modules >"$moddir/build.log" 2>&1 || { tail -n 30 "$moddir/build.log" >&2; lab_fail "module build failed ($moddir/build.log)"; }
    touch "$moddir/.built"
}

# ---- 4. the guest programs ------------------------------------------------------------------

# The lab driver is the package's `ferry-kernel-lab` executable. Until Package.swift declares
# it, it is built from an overlay package that adds the target to a copy of the manifest.
lab_package_root() {
    if grep -q "\"$LAB_PRODUCT\"" "$repo_root/Package.swift"; then
        printf '%s\n' "$repo_root"
        return 0
    fi
    local overlay="$LAB_DIR/overlay"
    printf '\n!!! kernel-lab: Package.swift has no "%s" target; building it from an overlay package (%s)\n\n' \
        "$LAB_PRODUCT" "$overlay" >&2
    mkdir -p "$overlay"
    local entry
    for entry in Sources Tests Package.resolved; do
        [ -e "$repo_root/$entry" ] && ln -sfn "$repo_root/$entry" "$overlay/$entry"
    done
    # The target goes last in the targets array, before its closing "    ],".
    awk -v product="$LAB_PRODUCT" '
        /^    targets: \[/ { intargets = 1 }
        intargets && /^    \],/ {
            print "        .executableTarget(name: \"" product "\", dependencies: [\"CFerry\", \"Virtio\", \"Vhost\", \"VirtioUser\"],"
            print "                          path: \"Tests/kernel-lab/Driver\"),"
            intargets = 0
        }
        { print }
    ' "$repo_root/Package.swift" > "$overlay/Package.swift"
    printf '%s\n' "$overlay"
}

lab_programs() {
    bindir="$LAB_DIR/bin"
    mkdir -p "$bindir"
    local pkg
    pkg="$(lab_package_root)"
    if ! command -v swift >/dev/null 2>&1; then
        [ -x /opt/swift/usr/bin/swift ] && export PATH="/opt/swift/usr/bin:$PATH"
    fi
    command -v swift >/dev/null 2>&1 || lab_fail "swift not found"
    lab_log "building $LAB_PRODUCT (release, static Swift stdlib)"
    (cd "$pkg" && swift build -c release --static-swift-stdlib --scratch-path "$LAB_DIR/swift" \
        --product "$LAB_PRODUCT" >"$LAB_DIR/swift-build.log" 2>&1) \
        || { tail -n 40 "$LAB_DIR/swift-build.log" >&2; lab_fail "swift build of $LAB_PRODUCT failed ($LAB_DIR/swift-build.log)"; }
    cp "$LAB_DIR/swift/release/$LAB_PRODUCT" "$bindir/$LAB_PRODUCT"
    # The real CLI, for the checks that run `ferry run` on the shipped configs. Same scratch
    # path, so the modules built above are reused.
    lab_log "building ferry (release, static Swift stdlib)"
    (cd "$pkg" && swift build -c release --static-swift-stdlib --scratch-path "$LAB_DIR/swift" \
        --product ferry >"$LAB_DIR/swift-build-ferry.log" 2>&1) \
        || { tail -n 40 "$LAB_DIR/swift-build-ferry.log" >&2; lab_fail "swift build of ferry failed ($LAB_DIR/swift-build-ferry.log)"; }
    cp "$LAB_DIR/swift/release/ferry" "$bindir/ferry"
    gcc -static -O2 -Wall -Werror -o "$bindir/tap-peer" "$here/tap-peer.c" \
        || lab_fail "gcc -static tap-peer.c failed"
}

# ---- 5. the initramfs -----------------------------------------------------------------------

# Finds a module file by name (dashes and underscores are the same), built ones first.
lab_module_path() {
    local name="$1" f base
    for f in "$moddir"/*.ko; do
        base="$(basename "$f" .ko)"
        [ "${base//-/_}" = "${name//-/_}" ] && { printf '%s\n' "$f"; return 0; }
    done
    f="$(find "$kroot/root/lib/modules/$kver/kernel" -name "${name}.ko*" -o -name "${name//_/-}.ko*" | head -n1)"
    [ -n "$f" ] && { printf '%s\n' "$f"; return 0; }
    return 1
}

# The `depends=` of a module's .modinfo.
lab_module_depends() {
    local file="$1" tmp
    tmp="$(mktemp)"
    case "$file" in
        *.xz) xz -dc "$file" > "$tmp" ;;
        *) cp "$file" "$tmp" ;;
    esac
    objcopy -O binary --only-section=.modinfo "$tmp" "$tmp.info" 2>/dev/null || true
    tr '\0' '\n' < "$tmp.info" 2>/dev/null | sed -n 's/^depends=//p' | tr ',' ' '
    rm -f "$tmp" "$tmp.info"
}

# Appends `name` and its dependencies, dependencies first, to load_order (once each).
lab_resolve_module() {
    local name="${1//-/_}" file dep
    case " ${load_order[*]:-} " in *" $name "*) return 0 ;; esac
    file="$(lab_module_path "$name")" || lab_fail "module $name not found in $kver or the built modules"
    for dep in $(lab_module_depends "$file"); do
        lab_resolve_module "$dep"
    done
    load_order+=("$name")
    module_files["$name"]="$file"
}

lab_copy_with_libraries() {
    local bin="$1" dest="$2" lib
    cp "$bin" "$dest"
    for lib in $(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*' | sort -u); do
        [ -e "$root$lib" ] && continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}

lab_initramfs() {
    root="$LAB_DIR/initramfs"
    rm -rf "$root"
    mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,lib/modules,lab,etc}
    cp "$kroot/root/bin/busybox" "$root/bin/busybox"
    local applet
    for applet in $("$root/bin/busybox" --list); do
        [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
    done
    declare -ga load_order=()
    declare -gA module_files=()
    local m
    for m in tun vhost_net vhost_vdpa vdpa_sim_net; do
        lab_resolve_module "$m"
    done
    : > "$root/lib/modules/load-order"
    for m in "${load_order[@]}"; do
        case "${module_files[$m]}" in
            *.xz) xz -dc "${module_files[$m]}" > "$root/lib/modules/$m.ko" ;;
            *) cp "${module_files[$m]}" "$root/lib/modules/$m.ko" ;;
        esac
        printf '%s\n' "$m" >> "$root/lib/modules/load-order"
    done
    lab_copy_with_libraries /usr/sbin/ip "$root/sbin/ip"
    lab_copy_with_libraries /usr/sbin/vdpa "$root/sbin/vdpa"
    lab_copy_with_libraries "$bindir/$LAB_PRODUCT" "$root/lab/$LAB_PRODUCT"
    lab_copy_with_libraries "$bindir/ferry" "$root/lab/ferry"
    cp "$bindir/tap-peer" "$root/lab/tap-peer"
    mkdir -p "$root/lab/configs"
    cp "${LAB_CONFIGS[@]/#/$repo_root/configs/}" "$root/lab/configs/"
    cp "$here/guest/init" "$root/init"
    cp "$here/guest/tests.sh" "$root/lab/tests.sh"
    chmod +x "$root/init" "$root/lab/tests.sh"
    (cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 > "$LAB_DIR/initrd.gz"
    lab_log "initramfs: ${#load_order[@]} modules (${load_order[*]}), $(du -h "$LAB_DIR/initrd.gz" | cut -f1)"
}

# ---- 6. boot ----------------------------------------------------------------------------------

lab_boot() {
    serial="$LAB_DIR/serial.log"
    rm -f "$serial"
    lab_log "booting $kver under QEMU/TCG (timeout ${LAB_TIMEOUT}s)"
    local rc=0
    timeout --kill-after=10 "$LAB_TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2048 \
        -display none -monitor none -serial stdio -no-reboot -nodefaults \
        -kernel "$kroot/root/boot/vmlinuz-$kver" -initrd "$LAB_DIR/initrd.gz" \
        -append 'console=ttyS0 rdinit=/init panic=-1 quiet ipv6.disable=1' \
        </dev/null 2>&1 | tr -d '\r' | tee "$serial" | sed -n 's/^\(FERRY-LAB\)/guest: \1/p; s/^\(ferry-lab:.*\)/guest: \1/p' >&2 \
        || rc=$?
    if [ ! -s "$serial" ]; then
        lab_cannot_run "qemu-system-x86_64 produced no output (exit $rc)"
    fi
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        tail -n 40 "$serial" >&2
        lab_fail "the guest did not power off within ${LAB_TIMEOUT}s ($serial)"
    fi
}

lab_verdict() {
    local result
    result="$(sed -n 's/^FERRY-LAB-RESULT: //p' "$serial" | tail -n1)"
    if [ -z "$result" ]; then
        tail -n 60 "$serial" >&2
        lab_fail "no FERRY-LAB-RESULT marker in the guest output ($serial)"
    fi
    local passed failed
    passed="$(grep -c '^FERRY-LAB: PASS' "$serial" || true)"
    failed="$(grep -c '^FERRY-LAB: FAIL' "$serial" || true)"
    if [ "$result" != "0" ] || [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
        grep -E '^(FERRY-LAB|ferry-lab)' "$serial" >&2 || true
        lab_fail "guest checks: $passed passed, $failed failed, result $result ($serial)"
    fi
    lab_log "guest checks: $passed passed, 0 failed"
}

main() {
    local t0
    t0="$(lab_now)"
    mkdir -p "$LAB_DIR"
    lab_timed packages lab_packages
    lab_timed kernel lab_kernel
    lab_timed modules lab_modules
    if [ "${1:-}" = "--prepare" ]; then
        lab_log "prepared: kernel $kver and modules in $LAB_DIR"
        return 0
    fi
    lab_timed programs lab_programs
    lab_timed initramfs lab_initramfs
    lab_timed boot lab_boot
    lab_verdict
    local line
    for line in "${lab_timings[@]}"; do lab_log "time: $line"; done
    lab_log "$(printf 'time: %-12s %6.1f s' total "$(echo "$(lab_now) - $t0" | bc)")"
    echo "KERNEL LAB PASSED"
}

main "$@"
