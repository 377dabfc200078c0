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

int main(int argc, char **argv) {
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
    unsigned ifindex = if_nametoindex(ifname);
    if (ifindex == 0) {
        printf("tap-peer: no interface %s: %s\n", ifname, strerror(errno));
        return 1;
    }
    int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (s < 0) {
        printf("tap-peer: socket: %s\n", strerror(errno));
        return 1;
    }
    struct sockaddr_ll addr;
    memset(&addr, 0, sizeof(addr));
    addr.sll_family = AF_PACKET;
    addr.sll_protocol = htons(ETH_P_ALL);
    addr.sll_ifindex = (int)ifindex;
    if (bind(s, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        printf("tap-peer: bind to %s: %s\n", ifname, strerror(errno));
        return 1;
    }
    FILE *ready = fopen(argv[4], "w");
    if (!ready) {
        printf("tap-peer: cannot write %s\n", argv[4]);
        return 1;
    }
    fclose(ready);

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

    long sent = 0;
    for (long i = 0; i < to_send; i++) {
        size_t wn = make_frame(want, (uint32_t)i, TAG_FROM_TAP, 0, ferry_mac, peer_mac);
        if (send(s, want, wn, 0) != (ssize_t)wn) {
            printf("tap-peer: send %ld: %s\n", i, strerror(errno));
            return 1;
        }
        sent++;
        // Keep well inside the tap queue (500 frames) and Ferry's RX ring while vhost-net drains.
        if (i % 32 == 31) usleep(2000);
    }
    printf("tap-peer: sent %ld frames to Ferry\n", sent);
    return 0;
}
