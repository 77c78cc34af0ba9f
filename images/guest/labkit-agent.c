/* labkit guest agent: protocol LK1 on the virtio-serial port org.labkit.agent.0.
 *
 *   host  -> guest   LK1 <id> <verb> <base64 payload>\n     verbs: hello, run
 *   guest -> host    LK1 <id> <exit status> <base64 output>\n
 *
 * The host end is labkit/host/agent.py. Written in C (built statically with the image) so that
 * nothing polls: the port stays open for the agent's whole life, and while no host is connected
 * (read() returns 0 then) the agent sleeps until the kernel signals SIGIO for the host's
 * connection, as the virtio console driver does for ports opened with O_ASYNC. Requests that
 * arrive while the host reconnects wait in QEMU until they are read, so none is lost.
 *
 * Every request is answered by a child of its own, so a slow command never delays `hello` or
 * another request; answers are written whole under an flock, one line each. When the agent
 * starts it says so with id 0 (`LK1 0 0 <base64 "start">`): a host waiting for an answer that
 * sees it knows its request died with an earlier agent.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PORT_NAME "org.labkit.agent.0"
#define LOCK_FILE "/run/labkit-agent.lock"
#define MAX_LINE (1 << 20)       /* a request line: a base64 shell command */
#define MAX_OUTPUT (4 << 20)     /* a command's output kept for the answer; the rest is dropped */
#define PATIENCE_MS 3000         /* how long an answer waits for a host that is (re)connecting */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64encode(const unsigned char *in, size_t n) {
    char *out = malloc(4 * ((n + 2) / 3) + 1), *p = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = in[i] << 16 | (i + 1 < n ? in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        *p++ = b64[v >> 18 & 63];
        *p++ = b64[v >> 12 & 63];
        *p++ = i + 1 < n ? b64[v >> 6 & 63] : '=';
        *p++ = i + 2 < n ? b64[v & 63] : '=';
    }
    *p = 0;
    return out;
}

static char *b64decode(const char *in, size_t *n) {
    size_t len = strlen(in);
    unsigned char *out = malloc(len / 4 * 3 + 3);
    unsigned v = 0;
    int bits = 0;
    *n = 0;
    if (!out) return NULL;
    for (; *in && *in != '='; in++) {
        const char *c = strchr(b64, *in);
        if (!c) { free(out); return NULL; }
        v = v << 6 | (unsigned)(c - b64);
        if ((bits += 6) >= 8) out[(*n)++] = v >> (bits -= 8) & 255;
    }
    out[*n] = 0;
    return (char *)out;
}

/* Write one whole answer line; the lock keeps answers of concurrent children from interleaving.
 * `patience_ms` bounds the wait for a host: the driver handles the host's connection (a control
 * message, processed later by a work queue) after the data that came with it, so a request can be
 * read, and answered, a moment before the port says the host is there. */
static void answer(int port, const char *id, int status, const unsigned char *out, size_t n, int patience_ms) {
    char *enc = b64encode(out, n);
    char head[160];
    if (!enc) return;
    snprintf(head, sizeof head, "LK1 %.100s %d ", id, status);
    size_t hl = strlen(head), el = strlen(enc);
    char *line = malloc(hl + el + 2);
    if (!line) { free(enc); return; }
    memcpy(line, head, hl);
    memcpy(line + hl, enc, el);
    memcpy(line + hl + el, "\n", 2);
    int lock = open(LOCK_FILE, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock >= 0) flock(lock, LOCK_EX);
    for (size_t done = 0, total = hl + el + 1; done < total;) {
        ssize_t w = write(port, line + done, total - done);
        if (w > 0) { done += w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) { /* the port is full, or no host is connected (POLLHUP) */
            struct pollfd p = {port, POLLOUT, 0};
            if (poll(&p, 1, 5000) > 0 && !(p.revents & POLLHUP)) continue;
            if (p.revents & POLLHUP && patience_ms > 0) {
                usleep(10000);
                patience_ms -= 10;
                continue;
            }
        }
        break; /* no host to read it, or a stuck port: the host's deadline reports a lost answer */
    }
    if (lock >= 0) close(lock);
    free(line);
    free(enc);
}

/* `run`: sh -c COMMAND with stdout and stderr together, in a child of the agent. */
static void run(int port, const char *id, const char *payload) {
    size_t n;
    char *command = b64decode(payload, &n);
    if (!command) { answer(port, id, 126, (const unsigned char *)"bad base64 payload", 18, PATIENCE_MS); return; }
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) { answer(port, id, 126, (const unsigned char *)"pipe failed", 11, PATIENCE_MS); return; }
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int null = open("/dev/null", O_RDONLY);
        dup2(null, 0);
        dup2(pipefd[1], 1);
        dup2(pipefd[1], 2);
        execl("/bin/sh", "sh", "-c", command, (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    unsigned char *out = malloc(MAX_OUTPUT);
    size_t len = 0;
    for (;;) {
        char chunk[65536];
        ssize_t r = read(pipefd[0], chunk, sizeof chunk);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        size_t keep = (size_t)r < MAX_OUTPUT - len ? (size_t)r : MAX_OUTPUT - len;
        if (out) memcpy(out + len, chunk, keep);
        len += keep;
    }
    int status = 127;
    if (pid > 0 && waitpid(pid, &status, 0) == pid)
        status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    answer(port, id, status, out ? out : (unsigned char *)"", out ? len : 0, PATIENCE_MS);
}

/* Every request is answered by a child of its own: the agent itself only reads, so neither a slow
 * command nor a wait for the host ever keeps it from the next request. */
static void handle(int port, char *line) {
    char *save = NULL, *magic = strtok_r(line, " ", &save), *id = strtok_r(NULL, " ", &save);
    char *verb = strtok_r(NULL, " ", &save), *payload = strtok_r(NULL, " \r", &save);
    if (!magic || strcmp(magic, "LK1") || !id || !verb) return; /* not ours: a new protocol gets a new tag */
    if (fork() != 0) return;
    signal(SIGCHLD, SIG_DFL); /* this child waits for its command's shell */
    if (!strcmp(verb, "hello")) {
        char host[256] = "", reply[300];
        gethostname(host, sizeof host - 1);
        snprintf(reply, sizeof reply, "%s LK1", host);
        answer(port, id, 0, (unsigned char *)reply, strlen(reply), PATIENCE_MS);
    } else if (!strcmp(verb, "run")) {
        run(port, id, payload && strcmp(payload, "-") ? payload : "");
    } else {
        char reply[160];
        snprintf(reply, sizeof reply, "unknown verb %.100s", verb);
        answer(port, id, 127, (unsigned char *)reply, strlen(reply), PATIENCE_MS);
    }
    _exit(0);
}

static int open_port(void) {
    for (int tries = 0; tries < 500; tries++) { /* the device appears with the driver: at boot, at once */
        DIR *dir = opendir("/sys/class/virtio-ports");
        struct dirent *e;
        while (dir && (e = readdir(dir))) {
            char path[300], name[64] = "";
            snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
            FILE *f = fopen(path, "r");
            if (!f) continue;
            if (fgets(name, sizeof name, f)) name[strcspn(name, "\n")] = 0;
            fclose(f);
            if (!strcmp(name, PORT_NAME)) {
                snprintf(path, sizeof path, "/dev/%s", e->d_name);
                closedir(dir);
                return open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
            }
        }
        if (dir) closedir(dir);
        usleep(20000);
    }
    return -1;
}

int main(void) {
    sigset_t sigio;
    sigemptyset(&sigio);
    sigaddset(&sigio, SIGIO);
    sigprocmask(SIG_BLOCK, &sigio, NULL); /* taken with sigtimedwait, never delivered */
    struct sigaction reap = {.sa_handler = SIG_IGN, .sa_flags = SA_NOCLDWAIT};
    sigaction(SIGCHLD, &reap, NULL); /* children answer and exit on their own */

    int port = open_port();
    if (port < 0) { perror("labkit-agent: no virtio port " PORT_NAME); return 1; }
    fcntl(port, F_SETOWN, getpid());
    fcntl(port, F_SETFL, fcntl(port, F_GETFL) | O_ASYNC);
    answer(port, "0", 0, (const unsigned char *)"start", 5, 0); /* heard only by a host already waiting */

    static char buf[MAX_LINE + 1];
    size_t len = 0;
    for (;;) {
        struct pollfd p = {port, POLLIN, 0};
        if (poll(&p, 1, -1) < 0 && errno != EINTR) return 1;
        ssize_t r = read(port, buf + len, MAX_LINE - len);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (r <= 0) { /* no host connected: sleep until it connects (SIGIO), checking now and then */
            struct timespec wait = {5, 0};
            sigtimedwait(&sigio, NULL, &wait);
            continue;
        }
        len += r;
        char *start = buf, *nl;
        while ((nl = memchr(start, '\n', buf + len - start))) {
            *nl = 0;
            handle(port, start);
            start = nl + 1;
        }
        len -= start - buf;
        memmove(buf, start, len);
        if (len == MAX_LINE) len = 0; /* an endless line: drop it */
    }
}
