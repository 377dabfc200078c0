// C shims for what Swift cannot see on Linux: eventfd, memfd_create, CMSG macros, CPU affinity,
// atomics on raw shared memory and the CPU relax hint.
//
// Do not define _GNU_SOURCE here: Swift imports this header, and the module build breaks on
// fd_set when it is set. GNU-only functions are wrapped in shim.c, which defines it.
#ifndef CFERRY_H
#define CFERRY_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

// ---- eventfd ------------------------------------------------------------------------------
#define FERRY_EFD_CLOEXEC 02000000
#define FERRY_EFD_NONBLOCK 04000
/// eventfd(2). Returns the fd or -1 with errno set.
int ferry_eventfd(unsigned int initval, int flags);

// ---- memfd --------------------------------------------------------------------------------
#define FERRY_MFD_CLOEXEC 0x0001U
#define FERRY_MFD_ALLOW_SEALING 0x0002U
#define FERRY_MFD_HUGETLB 0x0004U
#define FERRY_MFD_HUGE_SHIFT 26
#define FERRY_MFD_HUGE_2MB (21U << FERRY_MFD_HUGE_SHIFT)
/// memfd_create(2). Returns the fd or -1 with errno set.
int ferry_memfd_create(const char *name, unsigned int flags);

// ---- SCM_RIGHTS ---------------------------------------------------------------------------
#define FERRY_MAX_FDS 8
/// sendmsg(2) of `len` bytes with `nfds` (at most FERRY_MAX_FDS) descriptors as SCM_RIGHTS.
/// Returns bytes sent or -1 with errno set. Retries EINTR.
ssize_t ferry_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);
/// recvmsg(2) into `buf`, collecting up to `maxfds` SCM_RIGHTS descriptors into `fds`.
/// `*nfds` receives how many arrived. Descriptors beyond `maxfds`, or a truncated control
/// message, are closed and reported as -1 with errno EMSGSIZE. Retries EINTR.
ssize_t ferry_recv_with_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds,
                            int flags);
/// True when a connected stream socket's peer has closed: recv(MSG_PEEK|MSG_DONTWAIT) == 0.
int ferry_socket_peer_closed(int sock);

// ---- control-thread events ---------------------------------------------------------------
/// poll(2)'s POLLRDHUP (GNU): the peer shut its writing side down, i.e. a vhost-user backend
/// closed the connection. Asked for instead of POLLIN so that bytes a backend sends unasked
/// do not wake the control thread.
#define FERRY_POLLRDHUP 0x2000
/// A non-blocking, close-on-exec signalfd(2) for SIGINT and SIGTERM, which the caller must
/// already have blocked. Returns the fd or -1 with errno set.
int ferry_signalfd_stop_signals(void);
/// Reads one signal from a signalfd; returns its number, or 0 when none is pending.
int ferry_signalfd_read(int fd);

// ---- threads and CPUs ---------------------------------------------------------------------
/// Pins the calling thread to one CPU. Returns 0 or an errno value.
int ferry_pin_current_thread(int cpu);
/// The CPU the calling thread runs on, or -1.
int ferry_current_cpu(void);
/// The kernel thread id of the calling thread.
long ferry_gettid(void);
/// The CPUs this process may run on, written into `cpus` (at most `max`); returns the count.
int ferry_allowed_cpus(int *cpus, int max);

// ---- time ---------------------------------------------------------------------------------
/// CLOCK_MONOTONIC in nanoseconds.
uint64_t ferry_monotonic_ns(void);

// ---- atomics on shared memory -------------------------------------------------------------
// Ring indices and flags live in memory shared with the backend, so they are accessed through
// these rather than through Swift properties. On x86 an acquire load and a release store are
// plain moves; the compiler barrier is what matters.
static inline uint16_t ferry_load_acquire_u16(const void *p) {
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE);
}
static inline uint16_t ferry_load_relaxed_u16(const void *p) {
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED);
}
static inline void ferry_store_release_u16(void *p, uint16_t v) {
    __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE);
}
static inline void ferry_store_relaxed_u16(void *p, uint16_t v) {
    __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELAXED);
}
static inline uint32_t ferry_load_acquire_u32(const void *p) {
    return __atomic_load_n((const uint32_t *)p, __ATOMIC_ACQUIRE);
}
static inline void ferry_store_release_u32(void *p, uint32_t v) {
    __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELEASE);
}
static inline uint64_t ferry_load_relaxed_u64(const void *p) {
    return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
}
static inline void ferry_store_relaxed_u64(void *p, uint64_t v) {
    __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELAXED);
}
static inline uint8_t ferry_load_acquire_u8(const void *p) {
    return __atomic_load_n((const uint8_t *)p, __ATOMIC_ACQUIRE);
}
static inline void ferry_store_release_u8(void *p, uint8_t v) {
    __atomic_store_n((uint8_t *)p, v, __ATOMIC_RELEASE);
}
/// Full fence: orders a store before a later load (the avail idx before reading the device's
/// notification flags, virtio 1.2 §2.7.10). It runs once per burst, so its cost counts.
/// On x86-64 a locked read-modify-write of a stack slot is a full barrier for ordinary
/// (write-back) memory and costs about half an `mfence`, which is what the compiler emits for a
/// seq_cst fence. Adding 0 leaves the slot's value as it was, whatever lives there; the slot
/// is 128 bytes below the stack pointer rather than at 0(%rsp), so the barrier does not wait
/// on the latest stack store.
static inline void ferry_fence_seq_cst(void) {
#if defined(__x86_64__)
    __asm__ volatile("lock; addl $0, -128(%%rsp)" ::: "memory", "cc");
#else
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}
static inline void ferry_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void ferry_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }

/// The spin-wait hint.
static inline void ferry_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

// ---- vhost-kernel, vhost-vdpa and tap ioctls ----------------------------------------------
// The request numbers are the kernel's own macros (_IOW/_IOR/_IOWR in <linux/vhost.h> and
// <linux/if_tun.h>), evaluated in shim.c; Swift cannot import function-like macros. The
// structs mirror the UAPI ones field for field; shim.c checks their size and offsets against
// the kernel headers at compile time, so a mismatch does not build.

/// ioctl(2) with a pointer argument. Returns the ioctl's result, or -1 with errno set.
int ferry_ioctl(int fd, unsigned long request, void *arg);
/// ioctl(2) with an integer argument passed by value (TUNSETOFFLOAD). Same result.
int ferry_ioctl_value(int fd, unsigned long request, unsigned long value);

unsigned long ferry_ioc_vhost_get_features(void);
unsigned long ferry_ioc_vhost_set_features(void);
unsigned long ferry_ioc_vhost_set_owner(void);
unsigned long ferry_ioc_vhost_reset_owner(void);
unsigned long ferry_ioc_vhost_set_mem_table(void);
unsigned long ferry_ioc_vhost_set_vring_num(void);
unsigned long ferry_ioc_vhost_set_vring_addr(void);
unsigned long ferry_ioc_vhost_set_vring_base(void);
unsigned long ferry_ioc_vhost_get_vring_base(void);
unsigned long ferry_ioc_vhost_set_vring_kick(void);
unsigned long ferry_ioc_vhost_set_vring_call(void);
unsigned long ferry_ioc_vhost_set_backend_features(void);
unsigned long ferry_ioc_vhost_get_backend_features(void);
unsigned long ferry_ioc_vhost_net_set_backend(void);
unsigned long ferry_ioc_vhost_vdpa_get_device_id(void);
unsigned long ferry_ioc_vhost_vdpa_get_status(void);
unsigned long ferry_ioc_vhost_vdpa_set_status(void);
unsigned long ferry_ioc_vhost_vdpa_get_config(void);
unsigned long ferry_ioc_vhost_vdpa_set_config(void);
unsigned long ferry_ioc_vhost_vdpa_set_vring_enable(void);
unsigned long ferry_ioc_vhost_vdpa_get_vring_num(void);
unsigned long ferry_ioc_vhost_vdpa_get_iova_range(void);
unsigned long ferry_ioc_vhost_vdpa_get_config_size(void);
unsigned long ferry_ioc_vhost_vdpa_get_vqs_count(void);
unsigned long ferry_ioc_tun_set_iff(void);
unsigned long ferry_ioc_tun_get_iff(void);
unsigned long ferry_ioc_tun_get_features(void);
unsigned long ferry_ioc_tun_set_offload(void);
unsigned long ferry_ioc_tun_set_sndbuf(void);
unsigned long ferry_ioc_tun_get_vnet_hdr_sz(void);
unsigned long ferry_ioc_tun_set_vnet_hdr_sz(void);
unsigned long ferry_ioc_siocsifhwaddr(void);

/// `struct vhost_vring_state`.
struct ferry_vhost_vring_state { uint32_t index; uint32_t num; };
/// `struct vhost_vring_file`; fd -1 unbinds (VHOST_FILE_UNBIND).
struct ferry_vhost_vring_file { uint32_t index; int32_t fd; };
/// `struct vhost_vring_addr`.
struct ferry_vhost_vring_addr {
    uint32_t index;
    uint32_t flags;
    uint64_t desc_user_addr;
    uint64_t used_user_addr;
    uint64_t avail_user_addr;
    uint64_t log_guest_addr;
};
/// `struct vhost_memory_region`.
struct ferry_vhost_memory_region {
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
    uint64_t flags_padding;
};
/// The fixed part of `struct vhost_memory`; `nregions` regions follow it.
struct ferry_vhost_memory_header { uint32_t nregions; uint32_t padding; };
/// `struct vhost_iotlb_msg` (32 bytes with its tail padding).
struct ferry_vhost_iotlb_msg {
    uint64_t iova;
    uint64_t size;
    uint64_t uaddr;
    uint8_t perm;
    uint8_t type;
};
/// `struct vhost_msg_v2`: the union of `iotlb` and `padding[64]` spelled as iotlb + reserved.
struct ferry_vhost_msg_v2 {
    uint32_t type;
    uint32_t asid;
    struct ferry_vhost_iotlb_msg iotlb;
    uint8_t reserved[64 - sizeof(struct ferry_vhost_iotlb_msg)];
};
/// The fixed part of `struct vhost_vdpa_config`; `len` bytes of config follow it.
struct ferry_vhost_vdpa_config_header { uint32_t off; uint32_t len; };
/// `struct vhost_vdpa_iova_range`.
struct ferry_vhost_vdpa_iova_range { uint64_t first; uint64_t last; };

#define FERRY_VHOST_IOTLB_MSG_V2 0x2
#define FERRY_VHOST_IOTLB_UPDATE 2
#define FERRY_VHOST_IOTLB_INVALIDATE 3
#define FERRY_VHOST_IOTLB_BATCH_BEGIN 5
#define FERRY_VHOST_IOTLB_BATCH_END 6
#define FERRY_VHOST_ACCESS_RO 0x1
#define FERRY_VHOST_ACCESS_WO 0x2
#define FERRY_VHOST_ACCESS_RW 0x3
/// Bit numbers of the vhost backend features (VHOST_BACKEND_F_*).
#define FERRY_VHOST_BACKEND_F_IOTLB_MSG_V2 1
#define FERRY_VHOST_BACKEND_F_IOTLB_BATCH 2
/// Feature bit 27 as vhost-net reads it: vhost-net, not the tap, handles the virtio-net header.
#define FERRY_VHOST_NET_F_VIRTIO_NET_HDR 27
/// VIRTIO_ID_NET, what VHOST_VDPA_GET_DEVICE_ID must return.
#define FERRY_VIRTIO_ID_NET 1

// ---- tun/tap ------------------------------------------------------------------------------
#define FERRY_IFNAMSIZ 16
#define FERRY_IFF_TAP 0x0002
#define FERRY_IFF_NAPI 0x0010
#define FERRY_IFF_NO_PI 0x1000
#define FERRY_IFF_VNET_HDR 0x4000
#define FERRY_IFF_MULTI_QUEUE 0x0100
#define FERRY_TUN_F_CSUM 0x01
#define FERRY_TUN_F_TSO4 0x02
#define FERRY_TUN_F_TSO6 0x04
#define FERRY_TUN_F_TSO_ECN 0x08
#define FERRY_TUN_F_UFO 0x10
#define FERRY_ARPHRD_ETHER 1
/// `struct ifreq` as TUNSETIFF and TUNGETIFF use it: the name and `ifr_flags`.
struct ferry_ifreq_flags { char name[FERRY_IFNAMSIZ]; int16_t flags; uint8_t pad[22]; };
/// `struct ifreq` as SIOCSIFHWADDR uses it: the name and `ifr_hwaddr`.
struct ferry_ifreq_hwaddr {
    char name[FERRY_IFNAMSIZ];
    uint16_t family;
    uint8_t data[14];
    uint8_t pad[8];
};

#endif
