#define _GNU_SOURCE
#include "CFerry.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <pthread.h>

int ferry_eventfd(unsigned int initval, int flags) { return eventfd(initval, flags); }

int ferry_memfd_create(const char *name, unsigned int flags) {
    return (int)syscall(SYS_memfd_create, name, flags);
}

ssize_t ferry_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    if (nfds < 0 || nfds > FERRY_MAX_FDS) { errno = EINVAL; return -1; }
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    union { char buf[CMSG_SPACE(sizeof(int) * FERRY_MAX_FDS)]; struct cmsghdr align; } control;
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    memset(&control, 0, sizeof(control));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > 0) {
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t r;
    do { r = sendmsg(sock, &msg, MSG_NOSIGNAL); } while (r < 0 && errno == EINTR);
    return r;
}

ssize_t ferry_recv_with_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds,
                            int flags) {
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    union { char buf[CMSG_SPACE(sizeof(int) * FERRY_MAX_FDS)]; struct cmsghdr align; } control;
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    *nfds = 0;
    ssize_t r;
    do { r = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC); } while (r < 0 && errno == EINTR);
    if (r < 0) return r;
    int overflow = (msg.msg_flags & MSG_CTRUNC) != 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *in = (int *)CMSG_DATA(c);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, in + i, sizeof(int));
            if (*nfds < maxfds) fds[(*nfds)++] = fd;
            else { close(fd); overflow = 1; }
        }
    }
    if (overflow) {
        for (int i = 0; i < *nfds; i++) close(fds[i]);
        *nfds = 0;
        errno = EMSGSIZE;
        return -1;
    }
    return r;
}

int ferry_socket_peer_closed(int sock) {
    char c;
    ssize_t r = recv(sock, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r == 0) return 1;
    if (r < 0 && (errno == ECONNRESET || errno == ENOTCONN || errno == EPIPE)) return 1;
    return 0;
}

int ferry_signalfd_stop_signals(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

int ferry_signalfd_read(int fd) {
    struct signalfd_siginfo info;
    ssize_t r = read(fd, &info, sizeof(info));
    return r == (ssize_t)sizeof(info) ? (int)info.ssi_signo : 0;
}

int ferry_pin_current_thread(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

int ferry_current_cpu(void) { return sched_getcpu(); }

long ferry_gettid(void) { return (long)syscall(SYS_gettid); }

int ferry_allowed_cpus(int *cpus, int max) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return 0;
    int n = 0;
    for (int i = 0; i < CPU_SETSIZE && n < max; i++)
        if (CPU_ISSET(i, &set)) cpus[n++] = i;
    return n;
}

uint64_t ferry_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

// ---- vhost-kernel, vhost-vdpa and tap ioctls ----------------------------------------------
// The request numbers come from the kernel's UAPI macros; the mirror structs of CFerry.h are
// checked against the UAPI structs here, so a layout mismatch fails the build.
#include <stddef.h>
#include <sys/ioctl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <linux/if_tun.h>
#include <linux/vhost.h>
#include <linux/virtio_ids.h>

int ferry_ioctl(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }

int ferry_ioctl_value(int fd, unsigned long request, unsigned long value) {
    return ioctl(fd, request, value);
}

#define FERRY_IOC(name, value) \
    unsigned long name(void) { return (unsigned long)(value); }
FERRY_IOC(ferry_ioc_vhost_get_features, VHOST_GET_FEATURES)
FERRY_IOC(ferry_ioc_vhost_set_features, VHOST_SET_FEATURES)
FERRY_IOC(ferry_ioc_vhost_set_owner, VHOST_SET_OWNER)
FERRY_IOC(ferry_ioc_vhost_reset_owner, VHOST_RESET_OWNER)
FERRY_IOC(ferry_ioc_vhost_set_mem_table, VHOST_SET_MEM_TABLE)
FERRY_IOC(ferry_ioc_vhost_set_vring_num, VHOST_SET_VRING_NUM)
FERRY_IOC(ferry_ioc_vhost_set_vring_addr, VHOST_SET_VRING_ADDR)
FERRY_IOC(ferry_ioc_vhost_set_vring_base, VHOST_SET_VRING_BASE)
FERRY_IOC(ferry_ioc_vhost_get_vring_base, VHOST_GET_VRING_BASE)
FERRY_IOC(ferry_ioc_vhost_set_vring_kick, VHOST_SET_VRING_KICK)
FERRY_IOC(ferry_ioc_vhost_set_vring_call, VHOST_SET_VRING_CALL)
FERRY_IOC(ferry_ioc_vhost_set_backend_features, VHOST_SET_BACKEND_FEATURES)
FERRY_IOC(ferry_ioc_vhost_get_backend_features, VHOST_GET_BACKEND_FEATURES)
FERRY_IOC(ferry_ioc_vhost_net_set_backend, VHOST_NET_SET_BACKEND)
FERRY_IOC(ferry_ioc_vhost_vdpa_get_device_id, VHOST_VDPA_GET_DEVICE_ID)
FERRY_IOC(ferry_ioc_vhost_vdpa_get_status, VHOST_VDPA_GET_STATUS)
FERRY_IOC(ferry_ioc_vhost_vdpa_set_status, VHOST_VDPA_SET_STATUS)
FERRY_IOC(ferry_ioc_vhost_vdpa_get_config, VHOST_VDPA_GET_CONFIG)
FERRY_IOC(ferry_ioc_vhost_vdpa_set_config, VHOST_VDPA_SET_CONFIG)
FERRY_IOC(ferry_ioc_vhost_vdpa_set_vring_enable, VHOST_VDPA_SET_VRING_ENABLE)
FERRY_IOC(ferry_ioc_vhost_vdpa_get_vring_num, VHOST_VDPA_GET_VRING_NUM)
FERRY_IOC(ferry_ioc_vhost_vdpa_get_iova_range, VHOST_VDPA_GET_IOVA_RANGE)
FERRY_IOC(ferry_ioc_vhost_vdpa_get_config_size, VHOST_VDPA_GET_CONFIG_SIZE)
FERRY_IOC(ferry_ioc_vhost_vdpa_get_vqs_count, VHOST_VDPA_GET_VQS_COUNT)
FERRY_IOC(ferry_ioc_tun_set_iff, TUNSETIFF)
FERRY_IOC(ferry_ioc_tun_get_iff, TUNGETIFF)
FERRY_IOC(ferry_ioc_tun_get_features, TUNGETFEATURES)
FERRY_IOC(ferry_ioc_tun_set_offload, TUNSETOFFLOAD)
FERRY_IOC(ferry_ioc_tun_set_sndbuf, TUNSETSNDBUF)
FERRY_IOC(ferry_ioc_tun_get_vnet_hdr_sz, TUNGETVNETHDRSZ)
FERRY_IOC(ferry_ioc_tun_set_vnet_hdr_sz, TUNSETVNETHDRSZ)
FERRY_IOC(ferry_ioc_siocsifhwaddr, SIOCSIFHWADDR)
#undef FERRY_IOC

#define FERRY_SAME_LAYOUT(mine, theirs) \
    _Static_assert(sizeof(struct mine) == sizeof(struct theirs), #mine " size differs from " #theirs)
#define FERRY_SAME_OFFSET(mine, mf, theirs, tf) \
    _Static_assert(offsetof(struct mine, mf) == offsetof(struct theirs, tf), #mine "." #mf " offset differs")

FERRY_SAME_LAYOUT(ferry_vhost_vring_state, vhost_vring_state);
FERRY_SAME_OFFSET(ferry_vhost_vring_state, num, vhost_vring_state, num);
FERRY_SAME_LAYOUT(ferry_vhost_vring_file, vhost_vring_file);
FERRY_SAME_OFFSET(ferry_vhost_vring_file, fd, vhost_vring_file, fd);
FERRY_SAME_LAYOUT(ferry_vhost_vring_addr, vhost_vring_addr);
FERRY_SAME_OFFSET(ferry_vhost_vring_addr, desc_user_addr, vhost_vring_addr, desc_user_addr);
FERRY_SAME_OFFSET(ferry_vhost_vring_addr, used_user_addr, vhost_vring_addr, used_user_addr);
FERRY_SAME_OFFSET(ferry_vhost_vring_addr, avail_user_addr, vhost_vring_addr, avail_user_addr);
FERRY_SAME_OFFSET(ferry_vhost_vring_addr, log_guest_addr, vhost_vring_addr, log_guest_addr);
FERRY_SAME_LAYOUT(ferry_vhost_memory_region, vhost_memory_region);
FERRY_SAME_OFFSET(ferry_vhost_memory_region, userspace_addr, vhost_memory_region, userspace_addr);
FERRY_SAME_LAYOUT(ferry_vhost_memory_header, vhost_memory);
FERRY_SAME_LAYOUT(ferry_vhost_iotlb_msg, vhost_iotlb_msg);
FERRY_SAME_OFFSET(ferry_vhost_iotlb_msg, perm, vhost_iotlb_msg, perm);
FERRY_SAME_OFFSET(ferry_vhost_iotlb_msg, type, vhost_iotlb_msg, type);
FERRY_SAME_LAYOUT(ferry_vhost_msg_v2, vhost_msg_v2);
FERRY_SAME_OFFSET(ferry_vhost_msg_v2, asid, vhost_msg_v2, asid);
FERRY_SAME_OFFSET(ferry_vhost_msg_v2, iotlb, vhost_msg_v2, iotlb);
FERRY_SAME_LAYOUT(ferry_vhost_vdpa_config_header, vhost_vdpa_config);
FERRY_SAME_LAYOUT(ferry_vhost_vdpa_iova_range, vhost_vdpa_iova_range);
FERRY_SAME_LAYOUT(ferry_ifreq_flags, ifreq);
FERRY_SAME_OFFSET(ferry_ifreq_flags, flags, ifreq, ifr_flags);
FERRY_SAME_LAYOUT(ferry_ifreq_hwaddr, ifreq);
FERRY_SAME_OFFSET(ferry_ifreq_hwaddr, family, ifreq, ifr_hwaddr.sa_family);
FERRY_SAME_OFFSET(ferry_ifreq_hwaddr, data, ifreq, ifr_hwaddr.sa_data);
#undef FERRY_SAME_LAYOUT
#undef FERRY_SAME_OFFSET

_Static_assert(FERRY_VHOST_IOTLB_MSG_V2 == VHOST_IOTLB_MSG_V2, "VHOST_IOTLB_MSG_V2");
_Static_assert(FERRY_VHOST_IOTLB_UPDATE == VHOST_IOTLB_UPDATE, "VHOST_IOTLB_UPDATE");
_Static_assert(FERRY_VHOST_IOTLB_INVALIDATE == VHOST_IOTLB_INVALIDATE, "VHOST_IOTLB_INVALIDATE");
_Static_assert(FERRY_VHOST_IOTLB_BATCH_BEGIN == VHOST_IOTLB_BATCH_BEGIN, "VHOST_IOTLB_BATCH_BEGIN");
_Static_assert(FERRY_VHOST_IOTLB_BATCH_END == VHOST_IOTLB_BATCH_END, "VHOST_IOTLB_BATCH_END");
_Static_assert(FERRY_VHOST_ACCESS_RO == VHOST_ACCESS_RO, "VHOST_ACCESS_RO");
_Static_assert(FERRY_VHOST_ACCESS_WO == VHOST_ACCESS_WO, "VHOST_ACCESS_WO");
_Static_assert(FERRY_VHOST_ACCESS_RW == VHOST_ACCESS_RW, "VHOST_ACCESS_RW");
_Static_assert(FERRY_VHOST_BACKEND_F_IOTLB_MSG_V2 == VHOST_BACKEND_F_IOTLB_MSG_V2, "IOTLB_MSG_V2");
_Static_assert(FERRY_VHOST_BACKEND_F_IOTLB_BATCH == VHOST_BACKEND_F_IOTLB_BATCH, "IOTLB_BATCH");
_Static_assert(FERRY_VHOST_NET_F_VIRTIO_NET_HDR == VHOST_NET_F_VIRTIO_NET_HDR, "VHOST_NET_F_VIRTIO_NET_HDR");
_Static_assert(FERRY_VIRTIO_ID_NET == VIRTIO_ID_NET, "VIRTIO_ID_NET");
_Static_assert(FERRY_IFNAMSIZ == IFNAMSIZ, "IFNAMSIZ");
_Static_assert(FERRY_IFF_TAP == IFF_TAP, "IFF_TAP");
_Static_assert(FERRY_IFF_NAPI == IFF_NAPI, "IFF_NAPI");
_Static_assert(FERRY_IFF_NO_PI == IFF_NO_PI, "IFF_NO_PI");
_Static_assert(FERRY_IFF_VNET_HDR == IFF_VNET_HDR, "IFF_VNET_HDR");
_Static_assert(FERRY_IFF_MULTI_QUEUE == IFF_MULTI_QUEUE, "IFF_MULTI_QUEUE");
_Static_assert(FERRY_TUN_F_CSUM == TUN_F_CSUM, "TUN_F_CSUM");
_Static_assert(FERRY_TUN_F_TSO4 == TUN_F_TSO4, "TUN_F_TSO4");
_Static_assert(FERRY_TUN_F_TSO6 == TUN_F_TSO6, "TUN_F_TSO6");
_Static_assert(FERRY_TUN_F_TSO_ECN == TUN_F_TSO_ECN, "TUN_F_TSO_ECN");
_Static_assert(FERRY_TUN_F_UFO == TUN_F_UFO, "TUN_F_UFO");
_Static_assert(FERRY_ARPHRD_ETHER == ARPHRD_ETHER, "ARPHRD_ETHER");
