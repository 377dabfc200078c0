# shellcheck shell=bash
# Prepares a Debian 12 machine for Ferry's tests and demo. Sourced by scripts/test and
# scripts/demo; safe to run any number of times. Needs root.
#
#   - installs libnuma-dev, dpdk and dpdk-dev (dpdk-testpmd, the net_vhost backend), running
#     `apt-get update` only when something is missing;
#   - reserves hugepages (FERRY_HUGEPAGES, default 1024 x 2 MB) and mounts hugetlbfs on
#     /dev/hugepages;
#   - removes hugepage files left by killed DPDK processes and stale sockets in the run dir;
#   - puts swift on PATH (/opt/swift/usr/bin).

FERRY_HUGEPAGES="${FERRY_HUGEPAGES:-1024}"
FERRY_RUN_DIR="${FERRY_RUN_DIR:-/tmp/ferry-demo}"
FERRY_PACKAGES=(libnuma-dev dpdk dpdk-dev coreutils)

ferry_log()  { printf 'setup: %s\n' "$*" >&2; }
ferry_warn() {
    printf '\n' >&2
    printf '!!! WARNING: %s\n' "$@" >&2
    printf '\n' >&2
}
ferry_die()  { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

ferry_require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        ferry_die "must run as root (hugepages, /dev/hugepages and dpdk-testpmd need it); try: sudo $0"
    fi
}

ferry_install_packages() {
    local missing=() pkg
    for pkg in "${FERRY_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || ferry_die "apt-get not found; install ${missing[*]} by hand (Debian 12 expected)"
    ferry_log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null \
        || ferry_die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null \
        || ferry_die "apt-get install ${missing[*]} failed"
    command -v dpdk-testpmd >/dev/null 2>&1 || [ -x /usr/bin/dpdk-testpmd ] \
        || ferry_die "dpdk-testpmd still missing after installing dpdk-dev"
}

ferry_hugepages_total() {
    awk '/^HugePages_Total:/ {print $2; exit}' /proc/meminfo
}

ferry_reserve_hugepages() {
    local total
    total="$(ferry_hugepages_total)"
    total="${total:-0}"
    if [ "$total" -lt "$FERRY_HUGEPAGES" ]; then
        ferry_log "reserving $FERRY_HUGEPAGES hugepages (had $total)"
        echo "$FERRY_HUGEPAGES" > /proc/sys/vm/nr_hugepages 2>/dev/null \
            || ferry_warn "cannot write /proc/sys/vm/nr_hugepages (container without privileges?)"
        total="$(ferry_hugepages_total)"
        total="${total:-0}"
    fi
    if [ "$total" -lt "$FERRY_HUGEPAGES" ]; then
        ferry_warn "the kernel gave only $total of $FERRY_HUGEPAGES hugepages (HugePages_Total in /proc/meminfo)." \
                   "Memory is probably fragmented; DPDK and Ferry may fail to allocate." \
                   "Try: echo 3 > /proc/sys/vm/drop_caches; echo 1 > /proc/sys/vm/compact_memory; then rerun."
    fi
}

ferry_mount_hugetlbfs() {
    if awk '$2 == "/dev/hugepages" && $3 == "hugetlbfs" {found=1} END {exit !found}' /proc/mounts; then
        return 0
    fi
    ferry_log "mounting hugetlbfs on /dev/hugepages"
    mkdir -p /dev/hugepages
    mount -t hugetlbfs nodev /dev/hugepages \
        || ferry_warn "cannot mount hugetlbfs on /dev/hugepages; DPDK may fail to find hugepages"
}

# Hugepage files whose DPDK process is gone still hold their pages. A file is removed only when
# no live process maps it.
ferry_remove_stale_hugepage_files() {
    local f removed=0
    [ -d /dev/hugepages ] || return 0
    for f in /dev/hugepages/*map_[0-9]*; do
        [ -e "$f" ] || continue
        if grep -qsF "$f" /proc/[0-9]*/maps 2>/dev/null; then
            continue
        fi
        rm -f -- "$f" && removed=$((removed + 1))
    done
    if [ "$removed" -gt 0 ]; then
        ferry_log "removed $removed stale hugepage file(s) from /dev/hugepages"
    fi
}

# Sockets in the run dir nobody listens on any more (a killed testpmd does not unlink them),
# and test or demo work dirs (/tmp/ferry-tp-*, /tmp/ferry-demo-run.*) older than an hour.
ferry_remove_stale_sockets() {
    local s
    if [ -d "$FERRY_RUN_DIR" ]; then
        for s in "$FERRY_RUN_DIR"/*.sock; do
            [ -S "$s" ] || continue
            if ! awk -v p="$s" '$NF == p {found=1} END {exit !found}' /proc/net/unix 2>/dev/null; then
                rm -f -- "$s"
            fi
        done
    fi
    find /tmp -maxdepth 1 -type d \( -name 'ferry-tp-*' -o -name 'ferry-demo-run.*' \) -mmin +60 \
        -exec rm -rf -- {} + 2>/dev/null || true
}

ferry_swift_on_path() {
    if ! command -v swift >/dev/null 2>&1; then
        if [ -x /opt/swift/usr/bin/swift ]; then
            export PATH="/opt/swift/usr/bin:$PATH"
        else
            ferry_die "swift not found in PATH or /opt/swift/usr/bin; install a Swift 6 toolchain (swift.org) into /opt/swift"
        fi
    fi
}

ferry_setup() {
    ferry_require_root
    ferry_install_packages
    ferry_mount_hugetlbfs
    ferry_reserve_hugepages
    ferry_remove_stale_hugepage_files
    ferry_remove_stale_sockets
    ferry_swift_on_path
}

ferry_setup
