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
/// notification flags, virtio 1.2 §2.7.10).
static inline void ferry_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
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

#endif
