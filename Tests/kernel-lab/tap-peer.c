// tap-peer: the far side of Ferry's tap in the kernel lab (built on the host with gcc -static).
//
//   tap-peer <ifname> <frames-expected-from-ferry> <frames-to-send> <ready-file> <timeout-s>
//
// Binds an AF_PACKET socket to the tap interface, writes <ready-file>, then:
//   1. captures the frames Ferry transmits (they reach the interface as received frames) and
//      checks each is byte-identical to the lab frame of its sequence number, no duplicates;
//   2. once all have arrived, transmits <frames-to-send> lab frames on the interface, which
//      the tap hands to vhost-net and so to Ferry's RX rings.
// The frame layout is Driver/LabFrames.swift's; both sides compute the same bytes.
// Prints "tap-peer: ..." lines; exits 0 when every expected frame arrived intact.
//
//   tap-peer --capture-udp <ifname> <src-mac> <dst-mac> <length> <ready-file> <stop-file> <timeout-s>
//
// For `ferry run` in txonly mode: captures what arrives on the interface until <stop-file>
// exists (or the timeout), and checks every frame is the UDP/IPv4 frame testpmd's txonly
// sends (and Ferry's txonly claims to): <length> bytes, <dst-mac>, <src-mac>, IPv4
// 198.18.0.1 -> 198.18.0.2, TTL 64, UDP port 9 -> 9, zero payload. The frame is built here
// from those rules, not copied from Ferry, so a wrong byte on either side shows. Prints how
// many frames matched, differed, were not UDP template frames at all, and how many the socket
// dropped (PACKET_STATISTICS); exits 0 when at least one frame matched and none differed and
// nothing else arrived.
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#define ETHER_TYPE 0x88b5
#define TAG_TO_TAP 1
#define TAG_FROM_TAP 2
#define MAX_SEQ 65536

static const uint8_t ferry_mac[6] = {0x02, 0xfe, 0, 0, 0, 0x01};
static const uint8_t peer_mac[6] = {0x02, 0xfe, 0, 0, 0, 0x02};

static size_t frame_length(uint32_t seq) { return 60 + (size_t)((seq * 37u) % 1455u); }

static size_t make_frame(uint8_t *f, uint32_t seq, uint8_t tag, uint8_t queue, const uint8_t *dst,
                         const uint8_t *src) {
    size_t n = frame_length(seq);
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    f[12] = ETHER_TYPE >> 8;
    f[13] = ETHER_TYPE & 0xff;
    f[14] = (uint8_t)(seq >> 24);
    f[15] = (uint8_t)(seq >> 16);
    f[16] = (uint8_t)(seq >> 8);
    f[17] = (uint8_t)seq;
    f[18] = tag;
    f[19] = queue;
    for (size_t i = 20; i < n; i++)
        f[i] = (uint8_t)((int)seq * 7 + (int)i * 13 + (int)tag * 29 + (int)queue * 3);
    return n;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

// An AF_PACKET socket bound to `ifname` (every frame the interface receives or sends); then
// `ready_file` is written, so the caller knows nothing from now on is missed. -1 on failure.
static int bind_tap(const char *ifname, const char *ready_file) {
    unsigned ifindex = if_nametoindex(ifname);
    if (ifindex == 0) {
        printf("tap-peer: no interface %s: %s\n", ifname, strerror(errno));
        return -1;
    }
    int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (s < 0) {
        printf("tap-peer: socket: %s\n", strerror(errno));
        return -1;
    }
    // Room for a few seconds of TCG-speed traffic; frames beyond it are counted as drops.
    int rcvbuf = 64 << 20;
    (void)setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_ll addr;
    memset(&addr, 0, sizeof(addr));
    addr.sll_family = AF_PACKET;
    addr.sll_protocol = htons(ETH_P_ALL);
    addr.sll_ifindex = (int)ifindex;
    if (bind(s, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        printf("tap-peer: bind to %s: %s\n", ifname, strerror(errno));
        close(s);
        return -1;
    }
    FILE *ready = fopen(ready_file, "w");
    if (!ready) {
        printf("tap-peer: cannot write %s\n", ready_file);
        close(s);
        return -1;
    }
    fclose(ready);
    return s;
}

static int parse_mac(const char *text, uint8_t *mac) {
    unsigned v[6];
    char extra;
    if (sscanf(text, "%x:%x:%x:%x:%x:%x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &extra) != 6) return -1;
    for (int i = 0; i < 6; i++) {
        if (v[i] > 0xff) return -1;
        mac[i] = (uint8_t)v[i];
    }
    return 0;
}

// The txonly frame (testpmd's layout, RFC 2544's benchmarking addresses), from the rules
// alone: Ethernet II, IPv4 with no options and a valid header checksum, UDP without checksum,
// zero payload.
static void make_udp_template(uint8_t *f, size_t n, const uint8_t *src, const uint8_t *dst) {
    memset(f, 0, n);
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    f[12] = 0x08;
    f[13] = 0x00;
    uint8_t *ip = f + 14;
    size_t ip_len = n - 14, udp_len = n - 14 - 20;
    ip[0] = 0x45;                    // version 4, 5 words of header
    ip[2] = (uint8_t)(ip_len >> 8);  // total length
    ip[3] = (uint8_t)ip_len;
    ip[8] = 64;                      // TTL
    ip[9] = 17;                      // UDP
    const uint8_t from[4] = {198, 18, 0, 1}, to[4] = {198, 18, 0, 2};
    memcpy(ip + 12, from, 4);
    memcpy(ip + 16, to, 4);
    uint32_t sum = 0;
    for (int i = 0; i < 20; i += 2) sum += (uint32_t)ip[i] << 8 | ip[i + 1];
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
    uint16_t check = (uint16_t)~sum;
    ip[10] = (uint8_t)(check >> 8);
    ip[11] = (uint8_t)check;
    uint8_t *udp = ip + 20;
    udp[1] = 9;                      // source port 9 (discard)
    udp[3] = 9;                      // destination port 9
    udp[4] = (uint8_t)(udp_len >> 8);
    udp[5] = (uint8_t)udp_len;
}

static int capture_udp(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s --capture-udp <ifname> <src-mac> <dst-mac> <length> <ready-file> <stop-file> <timeout-s>\n", argv[0]);
        return 2;
    }
    uint8_t src[6], dst[6];
    long length = strtol(argv[5], NULL, 10);
    if (parse_mac(argv[3], src) || parse_mac(argv[4], dst) || length < 42 || length > 9000) {
        fprintf(stderr, "tap-peer: bad MAC or length (42..9000)\n");
        return 2;
    }
    const char *stop_file = argv[7];
    double deadline = now() + strtod(argv[8], NULL);
    int s = bind_tap(argv[2], argv[6]);
    if (s < 0) return 1;
    static uint8_t want[9000], buf[65536];
    make_udp_template(want, (size_t)length, src, dst);
    long matched = 0, bad = 0, other = 0;
    struct stat st;
    for (;;) {
        struct pollfd p = {.fd = s, .events = POLLIN};
        int ready = poll(&p, 1, 50);
        if (ready <= 0) {
            // Stop only once the socket is drained, so nothing queued is left uncounted.
            if (stat(stop_file, &st) == 0 || now() > deadline) break;
            continue;
        }
        struct sockaddr_ll from;
        socklen_t fromlen = sizeof(from);
        ssize_t n = recvfrom(s, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from, &fromlen);
        if (n < 0) continue;
        if (from.sll_pkttype == PACKET_OUTGOING) {
            other++;
            continue;
        }
        if (n >= 14 && buf[12] == 0x08 && buf[13] == 0x00 && memcmp(buf, dst, 6) == 0) {
            if (n == length && memcmp(buf, want, (size_t)length) == 0) {
                matched++;
            } else {
                if (bad < 3) printf("tap-peer: a UDP frame differs from the txonly template (%zd bytes, expected %ld)\n", n, length);
                bad++;
            }
        } else {
            other++;
        }
    }
    struct tpacket_stats stats;
    socklen_t len = sizeof(stats);
    memset(&stats, 0, sizeof(stats));
    (void)getsockopt(s, SOL_PACKET, PACKET_STATISTICS, &stats, &len);
    printf("tap-peer: captured %ld txonly frames byte-identical to the template (%ld differ, %ld other, %u dropped by the socket)\n",
           matched, bad, other, stats.tp_drops);
    printf("tap-peer: capture-total %ld\n", matched + bad + other + (long)stats.tp_drops);
    return matched > 0 && bad == 0 && other == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--capture-udp") == 0) return capture_udp(argc, argv);
    if (argc != 6) {
        fprintf(stderr, "usage: %s <ifname> <expect> <send> <ready-file> <timeout-s>\n", argv[0]);
        return 2;
    }
    const char *ifname = argv[1];
    long expect = strtol(argv[2], NULL, 10);
    long to_send = strtol(argv[3], NULL, 10);
    double timeout = strtod(argv[5], NULL);
    if (expect < 0 || expect > MAX_SEQ || to_send < 0 || to_send > MAX_SEQ) {
        fprintf(stderr, "tap-peer: counts must be 0..%d\n", MAX_SEQ);
        return 2;
    }
    int s = bind_tap(ifname, argv[4]);
    if (s < 0) return 1;

    static uint8_t seen[MAX_SEQ];
    static uint8_t buf[65536], want[2048];
    long got = 0, other = 0, bad = 0, dup = 0;
    double deadline = now() + timeout;
    while (got < expect) {
        double left = deadline - now();
        if (left <= 0) break;
        struct pollfd p = {.fd = s, .events = POLLIN};
        if (poll(&p, 1, (int)(left * 1000) + 1) <= 0) continue;
        struct sockaddr_ll from;
        socklen_t fromlen = sizeof(from);
        ssize_t n = recvfrom(s, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fromlen);
        if (n < 0) continue;
        if (from.sll_pkttype == PACKET_OUTGOING) continue;
        if (n < 20 || buf[12] != (ETHER_TYPE >> 8) || buf[13] != (ETHER_TYPE & 0xff) || buf[18] != TAG_TO_TAP) {
            other++;
            continue;
        }
        uint32_t seq = (uint32_t)buf[14] << 24 | (uint32_t)buf[15] << 16 | (uint32_t)buf[16] << 8 | buf[17];
        size_t wn = make_frame(want, seq, TAG_TO_TAP, buf[19], peer_mac, ferry_mac);
        if (seq >= MAX_SEQ || (size_t)n != wn || memcmp(buf, want, wn) != 0) {
            printf("tap-peer: frame %u from Ferry differs (%zd bytes, expected %zu)\n", seq, n, wn);
            bad++;
            continue;
        }
        if (seen[seq]++) {
            dup++;
            continue;
        }
        got++;
    }
    printf("tap-peer: received %ld/%ld frames from Ferry byte-identical (%ld bad, %ld duplicate, %ld other)\n",
           got, expect, bad, dup, other);
    if (got < expect || bad || dup) return 1;

    long sent = 0, sent_bytes = 0;
    for (long i = 0; i < to_send; i++) {
        size_t wn = make_frame(want, (uint32_t)i, TAG_FROM_TAP, 0, ferry_mac, peer_mac);
        if (send(s, want, wn, 0) != (ssize_t)wn) {
            printf("tap-peer: send %ld: %s\n", i, strerror(errno));
            return 1;
        }
        sent++;
        sent_bytes += (long)wn;
        // Keep well inside the tap queue (500 frames) and Ferry's RX ring while vhost-net drains.
        if (i % 32 == 31) usleep(2000);
    }
    printf("tap-peer: sent %ld frames (%ld bytes) to Ferry\n", sent, sent_bytes);
    return 0;
}
