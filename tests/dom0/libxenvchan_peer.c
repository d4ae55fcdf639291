/*
 * libxenvchan-peer: the C side of `xen-dom0-tests vchan`, linked statically against Debian's
 * libxenvchan.
 *
 * usage: libxenvchan-peer server|client DOMID PATH READ_MIN WRITE_MIN RECV SEND CHUNK DIE_AFTER
 *
 * Opens the channel (server: offers it to DOMID under PATH with rings of at least READ_MIN
 * and WRITE_MIN bytes; client: connects to DOMID's channel under PATH), then receives RECV
 * bytes and checks each against the test pattern, then sends SEND bytes of the pattern in
 * writes of CHUNK bytes, then closes. DIE_AFTER > 0: exits without closing once that many
 * bytes moved (in the receive phase if RECV > 0, else in the send phase), as a crash would.
 * Prints one line: `libxenvchan-peer: ok recv=N send=M recv_ns=T send_ns=U`, or why it failed.
 *
 * ping-server and ping-client (same arguments): RECV round trips of one byte, the client
 * sending first and timing them; prints `libxenvchan-peer: ok rounds=N ns=T`.
 */
#include <libxenvchan.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The layout xen-vchan writes and reads (src/layout.rs). */
_Static_assert(offsetof(struct vchan_interface, left) == 0, "left");
_Static_assert(offsetof(struct vchan_interface, right) == 8, "right");
_Static_assert(offsetof(struct vchan_interface, left_order) == 16, "left_order");
_Static_assert(offsetof(struct vchan_interface, right_order) == 18, "right_order");
_Static_assert(offsetof(struct vchan_interface, cli_live) == 20, "cli_live");
_Static_assert(offsetof(struct vchan_interface, srv_live) == 21, "srv_live");
_Static_assert(offsetof(struct vchan_interface, cli_notify) == 22, "cli_notify");
_Static_assert(offsetof(struct vchan_interface, srv_notify) == 23, "srv_notify");
_Static_assert(offsetof(struct vchan_interface, grants) == 24, "grants");

/* Byte `i` of the test stream (the same function as the Rust side's). */
static uint8_t pattern(uint64_t i)
{
    return (uint8_t)(i ^ (i >> 8) ^ (i >> 16) ^ 0x5a);
}

/*
 * Describes a wrong byte read at stream offset `at` (`bad`: the `len` bytes read from there):
 * how many are wrong, whether they are stream bytes from elsewhere, the ring's state, what was
 * read, what was due and what the ring holds there now.
 */
static void describe_mismatch(const struct libxenvchan *ctrl, const uint8_t *bad, size_t len,
                              uint64_t at)
{
    size_t wrong = 0;
    while (wrong < len && bad[wrong] != pattern(at + wrong))
        wrong++;
    fprintf(stderr, "libxenvchan-peer: %zu wrong bytes, then the stream is right again\n", wrong);
    size_t probe = len < 32 ? len : 32;
    for (uint64_t j = 0; j < at + (16u << 20); j++) {
        size_t k = 0;
        while (k < probe && bad[k] == pattern(j + k))
            k++;
        if (k == probe)
            fprintf(stderr, "libxenvchan-peer: they are stream bytes from %llu\n",
                    (unsigned long long)j);
    }
    size_t size = (size_t)1 << ctrl->read.order;
    size_t offset = (size_t)(at & (size - 1));
    const uint8_t *ring = ctrl->read.buffer;
    fprintf(stderr, "libxenvchan-peer: order %d, ring offset %zu, cons %u, prod %u\nread:",
            ctrl->read.order, offset, ctrl->read.shr->cons, ctrl->read.shr->prod);
    for (size_t k = 0; k < 24 && k < len; k++)
        fprintf(stderr, " %02x", bad[k]);
    fprintf(stderr, "\ndue: ");
    for (size_t k = 0; k < 24; k++)
        fprintf(stderr, " %02x", pattern(at + k));
    fprintf(stderr, "\nnow: ");
    for (size_t k = 0; k < 24 && offset + k < size; k++)
        fprintf(stderr, " %02x", ring[offset + k]);
    fprintf(stderr, "\n");
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static unsigned long number(const char *text)
{
    char *end;
    unsigned long n = strtoul(text, &end, 10);
    if (*text == '\0' || *end != '\0') {
        fprintf(stderr, "libxenvchan-peer: not a number: %s\n", text);
        exit(2);
    }
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 10) {
        fprintf(stderr, "usage: libxenvchan-peer server|client DOMID PATH READ_MIN WRITE_MIN "
                        "RECV SEND CHUNK DIE_AFTER\n");
        return 2;
    }
    int ping = strncmp(argv[1], "ping-", 5) == 0;
    int server = strcmp(argv[1], ping ? "ping-server" : "server") == 0;
    int domid = (int)number(argv[2]);
    const char *path = argv[3];
    size_t read_min = number(argv[4]), write_min = number(argv[5]);
    uint64_t recv_total = number(argv[6]), send_total = number(argv[7]);
    size_t chunk = number(argv[8]);
    uint64_t die_after = number(argv[9]);
    if (chunk == 0) {
        fprintf(stderr, "libxenvchan-peer: CHUNK must be positive\n");
        return 2;
    }
    uint8_t *buf = malloc(chunk);
    if (!buf)
        return 2;

    struct libxenvchan *ctrl = server
        ? libxenvchan_server_init(NULL, domid, path, read_min, write_min)
        : libxenvchan_client_init(NULL, domid, path);
    if (!ctrl) {
        fprintf(stderr, "libxenvchan-peer: %s init failed\n", argv[1]);
        return 1;
    }
    /* libxenvchan leaves `blocking` unset: every user must choose. */
    ctrl->blocking = 1;
    printf("libxenvchan-peer: open\n");
    fflush(stdout);

    if (ping) {
        uint8_t byte = 0;
        uint64_t begin = now_ns();
        for (uint64_t round = 0; round < recv_total; round++) {
            if (!server && libxenvchan_send(ctrl, &byte, 1) != 1)
                return 1;
            if (libxenvchan_recv(ctrl, &byte, 1) != 1)
                return 1;
            if (server && libxenvchan_send(ctrl, &byte, 1) != 1)
                return 1;
        }
        printf("libxenvchan-peer: ok rounds=%llu ns=%llu\n", (unsigned long long)recv_total,
               (unsigned long long)(now_ns() - begin));
        fflush(stdout);
        libxenvchan_close(ctrl);
        return 0;
    }

    uint64_t start = now_ns();
    uint64_t got = 0;
    while (got < recv_total) {
        size_t want = recv_total - got < chunk ? (size_t)(recv_total - got) : chunk;
        int n = libxenvchan_read(ctrl, buf, want);
        if (n <= 0) {
            fprintf(stderr, "libxenvchan-peer: read failed after %llu bytes\n",
                    (unsigned long long)got);
            return 1;
        }
        for (int i = 0; i < n; i++) {
            if (buf[i] != pattern(got + (uint64_t)i)) {
                fprintf(stderr, "libxenvchan-peer: byte %llu is %u, not %u\n",
                        (unsigned long long)(got + (uint64_t)i), buf[i],
                        pattern(got + (uint64_t)i));
                describe_mismatch(ctrl, buf + i, (size_t)(n - i), got + (uint64_t)i);
                return 1;
            }
        }
        got += (uint64_t)n;
        if (die_after && got >= die_after)
            _exit(0);
    }
    uint64_t recv_ns = now_ns() - start;

    start = now_ns();
    uint64_t sent = 0;
    while (sent < send_total) {
        size_t len = send_total - sent < chunk ? (size_t)(send_total - sent) : chunk;
        for (size_t i = 0; i < len; i++)
            buf[i] = pattern(sent + i);
        int n = libxenvchan_write(ctrl, buf, len);
        if (n != (int)len) {
            fprintf(stderr, "libxenvchan-peer: write failed after %llu bytes\n",
                    (unsigned long long)sent);
            return 1;
        }
        sent += len;
        if (die_after && recv_total == 0 && sent >= die_after)
            _exit(0);
    }
    uint64_t send_ns = now_ns() - start;
    /* Let the reader drain the ring before the pages go (libxenvchan keeps no linger). */
    while (send_total && libxenvchan_is_open(ctrl) && libxenvchan_buffer_space(ctrl) <
           (1 << (ctrl->write.order)))
        libxenvchan_wait(ctrl);
    printf("libxenvchan-peer: ok recv=%llu send=%llu recv_ns=%llu send_ns=%llu\n",
           (unsigned long long)got, (unsigned long long)sent, (unsigned long long)recv_ns,
           (unsigned long long)send_ns);
    fflush(stdout);
    libxenvchan_close(ctrl);
    return 0;
}
