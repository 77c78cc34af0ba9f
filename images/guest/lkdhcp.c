/* lkdhcp: who answers DHCP on a NIC, for lab.verify (labkit/verify.py writes its commands).
 *
 *   lkdhcp -t MS DEV            send a DHCPDISCOVER out of DEV (with DEV's MAC) and print every
 *                               DHCP reply heard on DEV within MS ms, once per (server, address):
 *                               "offer <server-id> <offered address>"
 *   lkdhcp -s ADDR -t MS DEV    be a rogue DHCP server for MS ms: answer each DISCOVER heard on
 *                               DEV with an OFFER from ADDR, and broadcast an unsolicited OFFER
 *                               every 100 ms (so a network that only hides requests from it,
 *                               but lets its offers out, is caught too)
 *
 * Raw packets (AF_PACKET, the IP layer up built here): DEV needs no address, no route decides
 * where a packet goes, and replies are seen whatever their destination. Exit 0, or 2 on a bad
 * argument or socket.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netpacket/packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CLIENT_PORT 68
#define SERVER_PORT 67
#define MAX_SEEN 64
#define ROGUE_PERIOD_MS 100

struct dhcp {
    uint8_t op, htype, hlen, hops;
    uint32_t xid;
    uint16_t secs, flags;
    uint32_t ciaddr, yiaddr, siaddr, giaddr;
    uint8_t chaddr[16], sname[64], file[128];
    uint8_t magic[4], options[312];
} __attribute__((packed));

struct packet {
    uint8_t vihl, tos;
    uint16_t len, id, frag;
    uint8_t ttl, proto;
    uint16_t csum;
    uint32_t src, dst;
    uint16_t sport, dport, ulen, ucsum;
    struct dhcp dhcp;
} __attribute__((packed));

static const uint8_t MAGIC[4] = {99, 130, 83, 99};
static int sock, ifindex;
static uint8_t mac[6];

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static uint16_t checksum(const void *data, size_t n) {
    const uint16_t *w = data;
    uint32_t sum = 0;
    for (; n > 1; n -= 2) sum += *w++;
    sum = (sum >> 16) + (sum & 0xffff);
    sum += sum >> 16;
    return ~sum;
}

/* The value of option `code`, or NULL; *len gets its length. */
static const uint8_t *option(const struct dhcp *d, size_t size, int code, int *len) {
    const uint8_t *p = d->options, *end = (const uint8_t *)d + size;
    while (p < end && *p != 255) {
        if (*p == 0) { p++; continue; }
        if (p + 2 > end || p + 2 + p[1] > end) return NULL;
        if (*p == code) { *len = p[1]; return p + 2; }
        p += 2 + p[1];
    }
    return NULL;
}

/* Broadcast a DHCP message from src:sport to 255.255.255.255:dport. */
static void send_dhcp(struct dhcp *d, size_t optlen, uint32_t src, int sport, int dport) {
    struct packet pkt;
    size_t dlen = offsetof(struct dhcp, options) + optlen;
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP), .sll_ifindex = ifindex, .sll_halen = 6};
    memset(&pkt, 0, sizeof pkt);
    memcpy(&pkt.dhcp, d, dlen);
    pkt.vihl = 0x45, pkt.ttl = 64, pkt.proto = IPPROTO_UDP;
    pkt.len = htons(28 + dlen), pkt.src = src, pkt.dst = INADDR_BROADCAST;
    pkt.csum = checksum(&pkt, 20);
    pkt.sport = htons(sport), pkt.dport = htons(dport), pkt.ulen = htons(8 + dlen); /* UDP checksum 0: none */
    memset(to.sll_addr, 0xff, 6);
    sendto(sock, &pkt, 28 + dlen, 0, (struct sockaddr *)&to, sizeof to);
}

/* The next DHCP message for `port` heard on the device within `ms` (NULL if none); *size: its length. */
static struct dhcp *receive(int port, double ms, size_t *size) {
    static struct packet pkt;
    struct pollfd pfd = {.fd = sock, .events = POLLIN};
    if (ms < 0 || poll(&pfd, 1, (int)ms + 1) <= 0) return NULL;
    struct sockaddr_ll from;
    socklen_t fromlen = sizeof from;
    ssize_t n = recvfrom(sock, &pkt, sizeof pkt, 0, (struct sockaddr *)&from, &fromlen);
    if (n < 28 + (ssize_t)offsetof(struct dhcp, options) || from.sll_pkttype == PACKET_OUTGOING) return (void *)-1;
    if ((pkt.vihl >> 4) != 4 || pkt.proto != IPPROTO_UDP || ntohs(pkt.dport) != port) return (void *)-1;
    if ((pkt.vihl & 15) != 5 || memcmp(pkt.dhcp.magic, MAGIC, 4)) return (void *)-1;  /* no IP options in DHCP */
    *size = n - 28;
    return &pkt.dhcp;
}

static void header(struct dhcp *d, int op, uint32_t xid, const uint8_t *chaddr) {
    memset(d, 0, sizeof *d);
    d->op = op, d->htype = 1, d->hlen = 6, d->xid = xid, d->flags = htons(0x8000);
    memcpy(d->chaddr, chaddr, 6);
    memcpy(d->magic, MAGIC, 4);
}

static int client(double ms) {
    struct dhcp d;
    uint32_t seen[MAX_SEEN][2];
    int nseen = 0;
    header(&d, 1, (uint32_t)getpid() ^ (uint32_t)now_ms(), mac);
    uint8_t opts[] = {53, 1, 1, 55, 2, 1, 3, 255};  /* DISCOVER, asking for the mask and router */
    memcpy(d.options, opts, sizeof opts);
    double end = now_ms() + ms;
    send_dhcp(&d, sizeof opts, 0, CLIENT_PORT, SERVER_PORT);
    for (;;) {
        size_t size;
        struct dhcp *r = receive(CLIENT_PORT, end - now_ms(), &size);
        if (!r) break;
        if (r == (void *)-1 || r->op != 2) continue;
        int len = 0;
        const uint8_t *sid = option(r, size, 54, &len);
        uint32_t server = 0;
        if (sid && len == 4) memcpy(&server, sid, 4);
        int known = 0;
        for (int i = 0; i < nseen; i++) known |= seen[i][0] == server && seen[i][1] == r->yiaddr;
        if (known || nseen == MAX_SEEN) continue;
        seen[nseen][0] = server, seen[nseen][1] = r->yiaddr, nseen++;
        char a[16], b[16];
        inet_ntop(AF_INET, &server, a, sizeof a);
        inet_ntop(AF_INET, &r->yiaddr, b, sizeof b);
        printf("offer %s %s\n", a, b);
        fflush(stdout);
    }
    return 0;
}

static void offer(uint32_t server, uint32_t xid, const uint8_t *chaddr) {
    struct dhcp d;
    header(&d, 2, xid, chaddr);
    d.yiaddr = htonl(ntohl(server) - 1);
    d.siaddr = server;
    uint8_t opts[] = {53, 1, 2, 54, 4, 0, 0, 0, 0, 51, 4, 0, 0, 14, 16, 1, 4, 255, 255, 255, 0, 255};
    memcpy(opts + 5, &server, 4);
    memcpy(d.options, opts, sizeof opts);
    send_dhcp(&d, sizeof opts, server, SERVER_PORT, CLIENT_PORT);
}

static int rogue(uint32_t server, double ms) {
    static const uint8_t anyone[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    double end = now_ms() + ms, next = 0;
    int answered = 0;
    while (now_ms() < end) {
        if (now_ms() >= next) {
            offer(server, (uint32_t)now_ms(), anyone);
            next = now_ms() + ROGUE_PERIOD_MS;
        }
        size_t size;
        double wait = (next < end ? next : end) - now_ms();
        struct dhcp *r = receive(SERVER_PORT, wait, &size);
        int len = 0;
        const uint8_t *type;
        if (!r || r == (void *)-1 || r->op != 1) continue;
        if ((type = option(r, size, 53, &len)) && len == 1 && *type == 1) {
            offer(server, r->xid, r->chaddr);
            answered++;
        }
    }
    printf("rogue answered %d discover(s)\n", answered);
    return 0;
}

int main(int argc, char **argv) {
    double ms = 1000;
    const char *serve = NULL;
    int c;
    while ((c = getopt(argc, argv, "t:s:")) != -1) {
        if (c == 't') ms = atof(optarg);
        else if (c == 's') serve = optarg;
        else return 2;
    }
    if (optind != argc - 1) { fprintf(stderr, "usage: lkdhcp [-s ADDR] [-t MS] DEV\n"); return 2; }
    const char *dev = argv[optind];
    struct ifreq ifr = {0};
    ifindex = if_nametoindex(dev);
    sock = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_IP));
    if (!ifindex || sock < 0) { fprintf(stderr, "lkdhcp: no device %s or no packet socket\n", dev); return 2; }
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", dev);
    if (ioctl(sock, SIOCGIFHWADDR, &ifr) < 0) { perror("lkdhcp: SIOCGIFHWADDR"); return 2; }
    memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    struct sockaddr_ll here = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP), .sll_ifindex = ifindex};
    if (bind(sock, (struct sockaddr *)&here, sizeof here) < 0) { perror("lkdhcp: bind"); return 2; }
    if (serve) {
        struct in_addr a;
        if (!inet_pton(AF_INET, serve, &a)) { fprintf(stderr, "lkdhcp: bad address %s\n", serve); return 2; }
        return rogue(a.s_addr, ms);
    }
    return client(ms);
}
