/* acli in the CVM: AHV's command-line tool, as trainees type it in the CVM's shell.
 *
 *   acli                       the <acropolis> prompt, one command a line (exit or Ctrl-D leaves)
 *   acli [-y] [-o json] CMD    one command, e.g. `acli net.list`, `acli -y vm.delete web1`
 *
 * Nothing runs here: each line goes to the lab's control plane on the host over the virtio port
 * org.labkit.acli.0, to labkit's relay (labkit/acli_relay.py, protocol LKA1 described there),
 * which runs it exactly as `invoke acli -c` does and sends back what it prints; a delete asks
 * here, on this terminal, as AHV's acli does. Built statically with the image (labkit/images.py).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PORT_NAME "org.labkit.acli.0"
#define MAX_LINE (64 * 1024)
#define CONNECT_MS 10000 /* how long a request waits for the host's relay to take it */
#define BUSY_MS 30000    /* how long to wait while another acli in this CVM holds the port */

static int port = -1;
static char rid[32];
static char pending[2 * MAX_LINE + 256];
static size_t have;

static long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000L + t.tv_nsec / 1000000;
}

static int open_port(void) {
    char path[300], name[64];
    long until = now_ms() + BUSY_MS;
    for (;;) {
        DIR *dir = opendir("/sys/class/virtio-ports");
        struct dirent *e;
        int fd = -1, found = 0, busy = 0;
        while (dir && (e = readdir(dir))) {
            snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
            FILE *f = fopen(path, "r");
            if (!f) continue;
            name[0] = 0;
            if (fgets(name, sizeof name, f)) name[strcspn(name, "\n")] = 0;
            fclose(f);
            if (strcmp(name, PORT_NAME)) continue;
            found = 1;
            snprintf(path, sizeof path, "/dev/%s", e->d_name);
            fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
            busy = fd < 0 && errno == EBUSY;
            break;
        }
        if (dir) closedir(dir);
        if (fd >= 0) return fd;
        if (!found) {
            fprintf(stderr, "acli: this VM has no %s port; acli runs in a labkit CVM\n", PORT_NAME);
            exit(2);
        }
        if (!busy || now_ms() > until) {
            fprintf(stderr, "acli: cannot open the acli port (%s)\n", busy ? "another acli holds it" : strerror(errno));
            exit(2);
        }
        usleep(50000);
    }
}

/* Write all of buf, waiting (up to CONNECT_MS) for a host that is not connected yet. */
static void put(const char *buf, size_t n) {
    long until = now_ms() + CONNECT_MS;
    while (n) {
        ssize_t w = write(port, buf, n);
        if (w > 0) { buf += w; n -= (size_t)w; continue; }
        if (w < 0 && errno != EAGAIN && errno != EINTR) { perror("acli: writing to the host"); exit(2); }
        if (now_ms() > until) {
            fprintf(stderr, "acli: the lab's control plane does not answer (its relay is not running; "
                            "run `invoke lab.up` on the workstation)\n");
            exit(2);
        }
        struct pollfd p = {port, POLLOUT, 0};
        poll(&p, 1, 100);
    }
}

static void send_hex(const char *kind, const char *extra, const char *text) {
    static const char digits[] = "0123456789abcdef";
    size_t n = strlen(text), head = strlen(kind) + strlen(rid) + strlen(extra) + 4;
    char *line = malloc(head + 2 * n + 2), *p;
    if (!line) exit(2);
    p = line + sprintf(line, "%s %s %s%s", kind, rid, extra, *extra ? " " : "");
    for (size_t i = 0; i < n; i++) {
        *p++ = digits[(unsigned char)text[i] >> 4];
        *p++ = digits[(unsigned char)text[i] & 15];
    }
    if (!n) *p++ = '-'; /* an empty payload is still a field */
    *p++ = '\n';
    put(line, (size_t)(p - line));
    free(line);
}

/* The next line from the host, without its newline; NULL when the host went away. */
static char *get_line(void) {
    static char line[sizeof pending];
    for (;;) {
        char *nl = memchr(pending, '\n', have);
        if (nl) {
            size_t n = (size_t)(nl - pending);
            memcpy(line, pending, n);
            line[n] = 0;
            memmove(pending, nl + 1, have - n - 1);
            have -= n + 1;
            return line;
        }
        if (have == sizeof pending) have = 0; /* no line is this long: noise, dropped */
        struct pollfd p = {port, POLLIN, 0};
        if (poll(&p, 1, -1) < 0 && errno != EINTR) return NULL;
        ssize_t r = read(port, pending + have, sizeof pending - have);
        if (r == 0) return NULL;
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            return NULL;
        }
        have += (size_t)r;
    }
}

static void print_hex(const char *hex, FILE *to) {
    for (; hex[0] && hex[1]; hex += 2) {
        unsigned v;
        if (sscanf(hex, "%2x", &v) != 1) break;
        fputc((int)v, to);
    }
    fflush(to);
}

/* One command line, sent and answered; returns its exit status. */
static int run(const char *text, int yes, int json) {
    char flags[8] = "", *f = flags;
    snprintf(rid, sizeof rid, "%ld.%d", now_ms(), getpid());
    if (yes) *f++ = 'y';
    if (json) *f++ = 'j';
    if (isatty(0)) *f++ = 't';
    if (f == flags) *f++ = '-';
    send_hex("REQ", flags, text);
    for (;;) {
        char *line = get_line(), *kind, *id, *rest;
        if (!line) {
            fprintf(stderr, "acli: the connection to the lab's control plane closed (lab.down, or a restart)\n");
            return 2;
        }
        kind = strtok_r(line, " ", &rest);
        id = strtok_r(NULL, " ", &rest);
        if (!kind || !id || strcmp(id, rid)) continue; /* an earlier, abandoned request's */
        char *field = strtok_r(NULL, " ", &rest);
        if (!strcmp(kind, "OUT") && field) {
            print_hex(field, stdout);
        } else if (!strcmp(kind, "ASK") && field) {
            char answer[64] = "";
            print_hex(field, json ? stderr : stdout);
            if (!fgets(answer, sizeof answer, stdin)) answer[0] = 0;
            answer[strcspn(answer, "\r\n")] = 0;
            int ok = !strcasecmp(answer, "yes") || !strcasecmp(answer, "y");
            char reply[80];
            snprintf(reply, sizeof reply, "ANS %s %s\n", rid, ok ? "yes" : "no");
            put(reply, strlen(reply));
        } else if (!strcmp(kind, "END")) {
            return field ? atoi(field) : 1;
        }
    }
}

/* The arguments as one acli line: each one quoted where acli's parser would split it. */
static char *join(int argc, char **argv) {
    size_t n = 1;
    for (int i = 0; i < argc; i++) n += 4 * strlen(argv[i]) + 3;
    char *line = malloc(n), *p = line;
    if (!line) exit(2);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int plain = *a && !strpbrk(a, " \t'\"\\");
        if (i) *p++ = ' ';
        if (plain) { p = stpcpy(p, a); continue; }
        char *eq = strchr(a, '=');
        if (eq && !memchr(a, ' ', (size_t)(eq - a)) && !memchr(a, '\'', (size_t)(eq - a))) { /* key='value' */
            memcpy(p, a, (size_t)(eq - a + 1));
            p += eq - a + 1;
            a = eq + 1;
        }
        *p++ = '\'';
        for (; *a; a++) {
            if (*a == '\'') { p = stpcpy(p, "'\"'\"'"); continue; }
            *p++ = *a;
        }
        *p++ = '\'';
    }
    *p = 0;
    return line;
}

int main(int argc, char **argv) {
    int yes = 0, json = 0, i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "-y")) yes = 1;
        else if (!strcmp(argv[i], "-o") && i + 1 < argc && !strcmp(argv[i + 1], "json")) { json = 1; i++; }
        else if (!strncmp(argv[i], "-o", 2) && !strcmp(argv[i] + 2, "json")) json = 1;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: acli [-y] [-o json] [COMMAND ARG... KEY=VALUE...]\n"
                   "AHV's acli on this lab: without a command, the <acropolis> prompt; `acli help` lists the commands.\n"
                   "  -y        do not ask before deleting\n  -o json   print JSON\n");
            return 0;
        } else {
            fprintf(stderr, "acli: unknown option %s; use -y, -o json or -h\n", argv[i]);
            return 2;
        }
    }
    port = open_port();
    if (i < argc) {
        char *line = join(argc - i, argv + i);
        int status = run(line, yes, json);
        free(line);
        return status;
    }
    char line[4096];
    for (;;) {
        if (isatty(0)) { fputs("<acropolis> ", stdout); fflush(stdout); }
        if (!fgets(line, sizeof line, stdin)) { if (isatty(0)) putchar('\n'); return 0; }
        line[strcspn(line, "\r\n")] = 0;
        char *start = line + strspn(line, " \t");
        if (!*start) continue;
        if (!strcmp(start, "exit") || !strcmp(start, "quit")) return 0;
        run(start, yes, json);
    }
}
