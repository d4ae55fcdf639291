/*
 * The C side of `cargo xtask bench evtchn`: libxenevtchn, and the floor (raw
 * ioctl/read/write on /dev/xen/evtchn, a page of ports per read), in dom0 on
 * loopback channels.
 *
 *   libxenevtchn-bench <floor|libxenevtchn> roundtrip <iterations>
 *   libxenevtchn-bench <floor|libxenevtchn> pending <ports>
 *
 * roundtrip: one iteration is notify b -> wait for a -> unmask a -> notify a
 * -> wait for b -> unmask b (waits: poll, then read the pending port).
 * pending: N ports are signalled, then collected, 20 times; only the collections are timed.
 *
 * Prints one line: XENTEST OUT bench-run impl=... measure=... iterations=... ns=... reads=...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <xenevtchn.h>

/* Linux include/uapi/xen/evtchn.h (not exported by libxen-dev). */
#define IOCTL_EVTCHN_BIND_INTERDOMAIN 0x00084501UL
#define IOCTL_EVTCHN_BIND_UNBOUND_PORT 0x00044502UL
#define IOCTL_EVTCHN_NOTIFY 0x00044504UL

static unsigned long reads;

/* Collections timed per pending sample. */
#define PENDING_REPEATS 20

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Page faults (minor and major) of this process so far. */
static long faults(void)
{
    struct rusage u;
    if (getrusage(RUSAGE_SELF, &u))
        return -1;
    return u.ru_minflt + u.ru_majflt;
}

static void die(const char *what)
{
    fprintf(stderr, "libxenevtchn-bench: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* One backend: libxenevtchn or the raw device. */
struct chan {
    xenevtchn_handle *xce;
    int fd;
};

static uint32_t bind_unbound(struct chan *c)
{
    if (c->xce) {
        xenevtchn_port_or_error_t p = xenevtchn_bind_unbound_port(c->xce, 0);
        if (p < 0)
            die("bind_unbound_port");
        return (uint32_t)p;
    }
    uint32_t arg = 0;
    int p = ioctl(c->fd, IOCTL_EVTCHN_BIND_UNBOUND_PORT, &arg);
    if (p < 0)
        die("IOCTL_EVTCHN_BIND_UNBOUND_PORT");
    return (uint32_t)p;
}

static uint32_t bind_interdomain(struct chan *c, uint32_t remote)
{
    if (c->xce) {
        xenevtchn_port_or_error_t p = xenevtchn_bind_interdomain(c->xce, 0, remote);
        if (p < 0)
            die("bind_interdomain");
        return (uint32_t)p;
    }
    uint32_t arg[2] = {0, remote};
    int p = ioctl(c->fd, IOCTL_EVTCHN_BIND_INTERDOMAIN, arg);
    if (p < 0)
        die("IOCTL_EVTCHN_BIND_INTERDOMAIN");
    return (uint32_t)p;
}

static void notify(struct chan *c, uint32_t port)
{
    if (c->xce ? xenevtchn_notify(c->xce, port) : ioctl(c->fd, IOCTL_EVTCHN_NOTIFY, &port))
        die("notify");
}

static void wait_readable(struct chan *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (poll(&p, 1, 5000) != 1)
        die("poll (lost wakeup?)");
}

/* Reads pending ports into `out` (at most `max`); 0 if none is queued. */
static int take(struct chan *c, uint32_t *out, int max)
{
    reads++;
    if (c->xce) {
        xenevtchn_port_or_error_t p = xenevtchn_pending(c->xce);
        if (p < 0) {
            if (errno == EAGAIN)
                return 0;
            die("xenevtchn_pending");
        }
        out[0] = (uint32_t)p;
        return 1;
    }
    ssize_t n = read(c->fd, out, (size_t)max * sizeof(uint32_t));
    if (n < 0) {
        if (errno == EAGAIN)
            return 0;
        die("read");
    }
    return (int)(n / (ssize_t)sizeof(uint32_t));
}

static void unmask(struct chan *c, const uint32_t *ports, int n)
{
    if (c->xce) {
        for (int i = 0; i < n; i++)
            if (xenevtchn_unmask(c->xce, ports[i]))
                die("xenevtchn_unmask");
    } else if (write(c->fd, ports, (size_t)n * sizeof(uint32_t)) < 0) {
        die("write");
    }
}

/* Waits for exactly `port`, then unmasks it. */
static void await_port(struct chan *c, uint32_t port)
{
    uint32_t got[4];
    for (;;) {
        int n = take(c, got, 4);
        if (n == 0) {
            wait_readable(c);
            continue;
        }
        if (n != 1 || got[0] != port) {
            fprintf(stderr, "libxenevtchn-bench: got port %u, expected %u\n", got[0], port);
            exit(1);
        }
        unmask(c, got, 1);
        return;
    }
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: libxenevtchn-bench <floor|libxenevtchn> <roundtrip|pending> <n>\n");
        return 2;
    }
    const char *impl = argv[1], *measure = argv[2];
    long n = atol(argv[3]);
    struct chan c = {0};
    if (!strcmp(impl, "libxenevtchn")) {
        c.xce = xenevtchn_open(NULL, 0);
        if (!c.xce)
            die("xenevtchn_open");
        c.fd = xenevtchn_fd(c.xce);
    } else if (!strcmp(impl, "floor")) {
        c.fd = open("/dev/xen/evtchn", O_RDWR | O_CLOEXEC | O_NONBLOCK);
        if (c.fd < 0)
            die("open /dev/xen/evtchn");
    } else {
        return 2;
    }
    /* libxenevtchn's fd blocks on read: poll before each pending(). */
    int flags = fcntl(c.fd, F_GETFL);
    if (flags < 0 || fcntl(c.fd, F_SETFL, flags | O_NONBLOCK) < 0)
        die("fcntl O_NONBLOCK");

    uint64_t ns;
    long faults_before = 0;
    if (!strcmp(measure, "roundtrip")) {
        uint32_t a = bind_unbound(&c), b = bind_interdomain(&c, a);
        await_port(&c, b); /* pending at bind */
        reads = 0;
        faults_before = faults();
        uint64_t start = now_ns();
        for (long i = 0; i < n; i++) {
            notify(&c, b);
            await_port(&c, a);
            notify(&c, a);
            await_port(&c, b);
        }
        ns = now_ns() - start;
    } else if (!strcmp(measure, "pending")) {
        uint32_t *receivers = calloc((size_t)n, sizeof(uint32_t));
        uint32_t *senders = calloc((size_t)n, sizeof(uint32_t));
        uint32_t *got = calloc(1024, sizeof(uint32_t));
        if (!receivers || !senders || !got)
            die("calloc");
        for (long i = 0; i < n; i++) {
            receivers[i] = bind_unbound(&c);
            senders[i] = bind_interdomain(&c, receivers[i]);
        }
        /* The binds' pending events, then the measured delivery. */
        for (long seen = 0; seen < n;) {
            int k = take(&c, got, 1024);
            if (k == 0) {
                wait_readable(&c);
                continue;
            }
            unmask(&c, got, k);
            seen += k;
        }
        /* Each repeat: signal all (untimed; a loopback notify is queued before it returns),
         * collect all (timed), re-arm all (untimed). No sleep: the first touch of each page
         * after a context switch costs tens of microseconds under QEMU's software MMU, which
         * would time the emulator instead of the collection. */
        reads = 0;
        ns = 0;
        faults_before = faults();
        for (long r = 0; r < PENDING_REPEATS; r++) {
            for (long i = 0; i < n; i++)
                notify(&c, senders[i]);
            long seen = 0;
            uint64_t start = now_ns();
            while (seen < n) {
                int k = take(&c, got, 1024);
                if (k == 0) {
                    wait_readable(&c);
                    continue;
                }
                seen += k;
            }
            ns += now_ns() - start;
            unmask(&c, receivers, (int)n);
        }
    } else {
        return 2;
    }
    /* pending: the collections of N ports (pending64), and reads per collection. */
    long faulted = faults() - faults_before;
    int pending = !strcmp(measure, "pending");
    printf("XENTEST OUT bench-run impl=%s measure=%s%s iterations=%ld ns=%llu reads=%lu faults=%ld\n",
           impl, measure, pending ? argv[3] : "", pending ? PENDING_REPEATS : n,
           (unsigned long long)ns, pending ? reads / PENDING_REPEATS : reads, faulted);
    return 0;
}
