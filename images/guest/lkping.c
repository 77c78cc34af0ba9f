/* lkping: ICMP echo to many addresses at once, for lab.verify (labkit/verify.py writes its command).
 *
 *   lkping [-t TOTAL_MS] [-b BLOCKED_MS] -- SPEC...     SPEC: {+|-|=}ADDRESS[@DEVICE[=SENDER]][/SIZE]
 *
 * `+` must answer, `-` must not (an isolation check). Every probe is sent at once, then again after
 * 100, 200, 400... ms until it answers (backing off: in a lab of thirty guests probing each other
 * at once, fixed-rate resends flood the switch). lkping ends when every `+` probe has answered (or at TOTAL_MS) and the
 * `-` probes have had their chance: BLOCKED_MS, or twice the median `+` answer if that is
 * longer, so a loaded host does not pass a leak for isolation (the median, not the slowest: one
 * peer that only just booted would otherwise hold every isolation check for seconds). @DEVICE sends out of that device
 * (SO_BINDTODEVICE), whatever the routes say; /SIZE sends SIZE bytes of payload with Don't
 * Fragment set. @DEVICE=SENDER asks by ARP instead, out of DEVICE as SENDER (an address in the
 * target's subnet that the guest does not hold): an isolation check at layer 2 that changes
 * nothing in the guest (no address to add and remove: two process starts and two route changes
 * less per probe, which thirty software-emulated guests at once pay dearly). Output, one line per
 * SPEC in order: `<index> <status> <ms>`, status 0 answered, 1 no answer, 2 answered by two MACs
 * (`=`), 97 too big for the device's MTU, 98 bad spec or no socket. `=ADDRESS@DEVICE=SENDER` asks
 * by ARP as SENDER (the guest's own address) and listens as long as the isolation checks do: one
 * device must answer, and only one (a second MAC answering is a duplicate address).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SPECS 1024
#define FIRST_RESEND_MS 100
#define ARP_TRIES 2 /* an ARP isolation check asks at 0 and 100 ms, then only listens */
#define SLOW_FACTOR 2 /* isolation probes wait this many times the median answer, when that is longer */

struct probe {
    int expect, sock, status, size, arp, ifindex, unique;
    struct in_addr addr, sender;
    unsigned char mac[6], first[6]; /* first: the MAC that answered first (`=`) */
    char dev[32];
    double answered_ms;
};

struct arp_packet { /* an Ethernet ARP request or reply, as on the wire after the Ethernet header */
    unsigned short htype, ptype;
    unsigned char hlen, plen;
    unsigned short op;
    unsigned char sha[6], spa[4], tha[6], tpa[4];
} __attribute__((packed));

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static unsigned short checksum(const void *data, size_t n) {
    const unsigned short *w = data;
    unsigned long sum = 0;
    for (; n > 1; n -= 2) sum += *w++;
    if (n) sum += *(const unsigned char *)w;
    sum = (sum >> 16) + (sum & 0xffff);
    sum += sum >> 16;
    return ~sum;
}

static int open_socket(const char *dev) {
    int s = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_ICMP);
    int pmtu = IP_PMTUDISC_DO;
    if (s < 0) return -1;
    setsockopt(s, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu);
    if (*dev && setsockopt(s, SOL_SOCKET, SO_BINDTODEVICE, dev, strlen(dev) + 1) < 0) { close(s); return -1; }
    return s;
}

static int open_arp_socket(struct probe *p) {
    int s = socket(AF_PACKET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ARP));
    struct ifreq ifr = {0};
    if (s < 0) return -1;
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", p->dev);
    if (ioctl(s, SIOCGIFINDEX, &ifr) < 0) { close(s); return -1; }
    p->ifindex = ifr.ifr_ifindex;
    if (ioctl(s, SIOCGIFHWADDR, &ifr) < 0) { close(s); return -1; }
    memcpy(p->mac, ifr.ifr_hwaddr.sa_data, 6);
    struct sockaddr_ll here = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ARP), .sll_ifindex = p->ifindex};
    if (bind(s, (struct sockaddr *)&here, sizeof here) < 0) { close(s); return -1; }
    return s;
}

static int parse(const char *spec, struct probe *p) {
    char text[128], *at, *slash, *eq;
    if ((spec[0] != '+' && spec[0] != '-' && spec[0] != '=') || strlen(spec) >= sizeof text) return -1;
    p->expect = spec[0] != '-';
    p->unique = spec[0] == '=';
    strcpy(text, spec + 1);
    if ((slash = strchr(text, '/'))) { *slash = 0; p->size = atoi(slash + 1); }
    if ((at = strchr(text, '@'))) {
        *at = 0;
        if ((eq = strchr(at + 1, '='))) {
            *eq = 0;
            if (inet_pton(AF_INET, eq + 1, &p->sender) != 1) return -1;
            p->arp = 1;
        }
        snprintf(p->dev, sizeof p->dev, "%s", at + 1);
    }
    if ((p->arp && !*p->dev) || (p->unique && !p->arp)) return -1;
    return inet_pton(AF_INET, text, &p->addr) == 1 ? 0 : -1;
}

static void send_arp(struct probe *p) {
    struct arp_packet a = {.htype = htons(ARPHRD_ETHER), .ptype = htons(ETH_P_IP), .hlen = 6, .plen = 4,
                           .op = htons(ARPOP_REQUEST)};
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ARP), .sll_ifindex = p->ifindex,
                             .sll_halen = 6, .sll_addr = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};
    memcpy(a.sha, p->mac, 6);
    memcpy(a.spa, &p->sender, 4);
    memcpy(a.tpa, &p->addr, 4);
    sendto(p->sock, &a, sizeof a, 0, (struct sockaddr *)&to, sizeof to);
}

static int arp_answers(const struct probe *p, const unsigned char *buf, ssize_t r) {
    const struct arp_packet *a = (const struct arp_packet *)buf;
    return r >= (ssize_t)sizeof *a && a->op == htons(ARPOP_REPLY) && !memcmp(a->spa, &p->addr, 4)
           && !memcmp(a->tpa, &p->sender, 4);
}

static void send_echo(struct probe *p, int index, int attempt, unsigned short ident) {
    static unsigned char packet[65536];
    size_t payload = p->size > 0 && p->size < 65000 ? (size_t)p->size : 56;
    struct icmphdr *h = (struct icmphdr *)packet;
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr = p->addr};
    memset(packet, 0, sizeof *h + payload);
    h->type = ICMP_ECHO;
    h->un.echo.id = htons(ident);
    h->un.echo.sequence = htons((unsigned short)(index << 6 | (attempt & 63)));
    h->checksum = checksum(packet, sizeof *h + payload);
    if (sendto(p->sock, packet, sizeof *h + payload, 0, (struct sockaddr *)&to, sizeof to) < 0 && errno == EMSGSIZE)
        p->status = 97;
}

int main(int argc, char **argv) {
    static struct probe probes[MAX_SPECS];
    int total_ms = 3000, blocked_ms = 300, n = 0, opt;
    while ((opt = getopt(argc, argv, "t:b:")) != -1) {
        if (opt == 't') total_ms = atoi(optarg);
        else if (opt == 'b') blocked_ms = atoi(optarg);
        else { fprintf(stderr, "usage: lkping [-t TOTAL_MS] [-b BLOCKED_MS] -- {+|-|=}ADDRESS[@DEVICE[=SENDER]][/SIZE]...\n"); return 2; }
    }
    unsigned short ident = (unsigned short)getpid();
    struct pollfd fds[MAX_SPECS];
    for (int i = optind; i < argc && n < MAX_SPECS; i++, n++) {
        struct probe *p = &probes[n];
        p->status = 1;
        p->sock = -1;
        if (parse(argv[i], p) < 0 || (p->sock = p->arp ? open_arp_socket(p) : open_socket(p->dev)) < 0) p->status = 98;
        fds[n] = (struct pollfd){p->sock, POLLIN, 0};
    }
    static double answers[MAX_SPECS]; /* the `+` probes' answer times, in order */
    int answered = 0;
    double start = now_ms(), next_send = 0;
    for (int attempt = 0;;) {
        double t = now_ms() - start;
        if (t >= next_send) { /* a round: every probe without an answer, again */
            for (int i = 0; i < n; i++)
                if (probes[i].status == 1 && !probes[i].arp)
                    send_echo(&probes[i], i, attempt, ident);
                else if (probes[i].status == 1 && attempt < ARP_TRIES) /* a broadcast every guest of the VLAN handles */
                    send_arp(&probes[i]);
            attempt++;
            next_send = FIRST_RESEND_MS * ((1 << attempt) - 1); /* 100, 300, 700, 1500 ms... */
        }
        int waiting = 0, any_blocked = 0;
        for (int i = 0; i < n; i++) {
            waiting |= probes[i].expect && probes[i].status == 1;
            any_blocked |= (!probes[i].expect && probes[i].status == 1) || (probes[i].unique && probes[i].status == 0);
        }
        double typical = answered ? answers[answered / 2] : 0;
        double blocked_until = blocked_ms > SLOW_FACTOR * typical ? blocked_ms : SLOW_FACTOR * typical;
        if ((!waiting && (!any_blocked || t >= blocked_until)) || t >= total_ms) break;
        double until = next_send < total_ms ? next_send : total_ms;
        if (!waiting && blocked_until < until) until = blocked_until;
        if (poll(fds, n, (int)(until - t) + 1) <= 0) continue;
        for (int i = 0; i < n; i++) {
            if (!(fds[i].revents & POLLIN)) continue;
            unsigned char buf[65536];
            struct sockaddr_in from;
            socklen_t fl = sizeof from;
            ssize_t r;
            while ((r = recvfrom(fds[i].fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl)) > 0) {
                if (probes[i].arp) { /* an ARP socket: a reply from the target to the borrowed sender */
                    const unsigned char *sha = ((const struct arp_packet *)buf)->sha;
                    if (probes[i].status == 1 && arp_answers(&probes[i], buf, r)) {
                        probes[i].status = 0;
                        probes[i].answered_ms = now_ms() - start;
                        memcpy(probes[i].first, sha, 6);
                    } else if (probes[i].unique && probes[i].status == 0 && arp_answers(&probes[i], buf, r)
                               && memcmp(probes[i].first, sha, 6)) {
                        probes[i].status = 2;
                    }
                    continue;
                }
                struct iphdr *ip = (struct iphdr *)buf;
                if ((size_t)r < ip->ihl * 4u + sizeof(struct icmphdr)) continue;
                struct icmphdr *h = (struct icmphdr *)(buf + ip->ihl * 4);
                int index = ntohs(h->un.echo.sequence) >> 6;
                if (h->type != ICMP_ECHOREPLY || ntohs(h->un.echo.id) != ident || index >= n) continue;
                struct probe *p = &probes[index];
                if (p->status == 1 && from.sin_addr.s_addr == p->addr.s_addr) {
                    p->status = 0;
                    p->answered_ms = now_ms() - start;
                    if (p->expect) { /* kept sorted: the median is the middle one */
                        int k = answered++;
                        for (; k > 0 && answers[k - 1] > p->answered_ms; k--) answers[k] = answers[k - 1];
                        answers[k] = p->answered_ms;
                    }
                }
            }
        }
    }
    for (int i = 0; i < n; i++) printf("%d %d %.0f\n", i, probes[i].status, probes[i].answered_ms);
    return 0;
}
