/*
 * The C side of `cargo xtask bench store`: one timed loop of xs_read or xs_write
 * through Debian's libxenstore (xs_open(0): the daemon's socket, XENSTORED_PATH
 * overriding it), one request in flight as libxenstore does it.
 *
 *   libxenstore-bench <read|write> <path> <iterations>
 *
 * Prints one line: XENTEST OUT bench-run impl=libxenstore measure=... iterations=... ns=...
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xenstore.h>

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: libxenstore-bench <read|write> <path> <iterations>\n");
        return 2;
    }
    const char *measure = argv[1], *path = argv[2];
    long iterations = strtol(argv[3], NULL, 10);
    int reading = strcmp(measure, "read") == 0;
    if ((!reading && strcmp(measure, "write") != 0) || iterations <= 0) {
        fprintf(stderr, "libxenstore-bench: bad arguments\n");
        return 2;
    }
    struct xs_handle *xs = xs_open(0);
    if (!xs) {
        perror("xs_open");
        return 1;
    }
    static const char value[] = "0123456789abcdef";
    if (!xs_write(xs, XBT_NULL, path, value, sizeof(value) - 1)) {
        perror("xs_write");
        return 1;
    }
    uint64_t start = now_ns();
    for (long i = 0; i < iterations; i++) {
        if (reading) {
            unsigned int len;
            char *got = xs_read(xs, XBT_NULL, path, &len);
            if (!got || len != sizeof(value) - 1) {
                perror("xs_read");
                return 1;
            }
            free(got);
        } else if (!xs_write(xs, XBT_NULL, path, value, sizeof(value) - 1)) {
            perror("xs_write");
            return 1;
        }
    }
    uint64_t ns = now_ns() - start;
    printf("XENTEST OUT bench-run impl=libxenstore measure=%s iterations=%ld ns=%llu\n", measure,
           iterations, (unsigned long long)ns);
    xs_close(xs);
    return 0;
}
