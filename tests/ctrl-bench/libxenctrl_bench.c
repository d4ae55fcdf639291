/*
 * The C side of `cargo xtask bench ctrl`: one timed loop of one measure through
 * libxenctrl and libxenforeignmemory (Debian's libxen-dev).
 *
 *   libxenctrl-bench <list_D|map_N|resource_1> <iterations> <argument>
 *
 * list_D: xc_domain_getinfolist of every domain (up to 16; <argument> domains expected);
 * map_N: xenforeignmemory_map of N pages (the frame <argument> of this domain, N times, with a
 * per-page error array), then xenforeignmemory_unmap; resource_1:
 * xenforeignmemory_map_resource of frame 0 of domain <argument>'s grant table, then
 * xenforeignmemory_unmap_resource.
 * Prints one line: XENTEST OUT bench-run impl=libxenctrl measure=... iterations=... ns=...
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <xenctrl.h>
#include <xenforeignmemory.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s <list_D|map_N|resource_1> <iterations> <argument>\n", argv[0]);
        return 2;
    }
    const char *measure = argv[1];
    long iterations = strtol(argv[2], NULL, 10);
    unsigned long long argument = strtoull(argv[3], NULL, 0);
    xen_pfn_t frame = argument;
    int resource = strcmp(measure, "resource_1") == 0;
    long pages = strncmp(measure, "map_", 4) == 0 ? strtol(measure + 4, NULL, 10) : 0;

    xc_interface *xch = xc_interface_open(NULL, NULL, 0);
    xenforeignmemory_handle *fmem = xenforeignmemory_open(NULL, 0);
    if (!xch || !fmem) {
        perror("xc_interface_open/xenforeignmemory_open");
        return 1;
    }
    xc_domaininfo_t info[16];
    xen_pfn_t *frames = calloc(pages ? pages : 1, sizeof(*frames));
    int *errs = calloc(pages ? pages : 1, sizeof(*errs));
    for (long i = 0; i < pages; i++)
        frames[i] = frame;

    uint64_t start = 0;
    for (long round = 0; round < 2; round++) {
        /* Round 0 warms up with a tenth of the iterations; round 1 is timed. */
        long n = round == 0 ? iterations / 10 + 1 : iterations;
        if (round == 1)
            start = now_ns();
        for (long i = 0; i < n; i++) {
            if (resource) {
                void *addr = NULL;
                xenforeignmemory_resource_handle *res = xenforeignmemory_map_resource(
                    fmem, (domid_t)argument, XENMEM_resource_grant_table, 0, 0, 1, &addr,
                    PROT_READ | PROT_WRITE, 0);
                if (!res) {
                    perror("xenforeignmemory_map_resource");
                    return 1;
                }
                if (xenforeignmemory_unmap_resource(fmem, res)) {
                    perror("xenforeignmemory_unmap_resource");
                    return 1;
                }
            } else if (pages == 0) {
                int got = xc_domain_getinfolist(xch, 0, 16, info);
                if (got != (int)argument) {
                    fprintf(stderr, "xc_domain_getinfolist: %d domains, expected %llu\n", got,
                            argument);
                    return 1;
                }
            } else {
                void *map = xenforeignmemory_map(fmem, DOMID_SELF, PROT_READ | PROT_WRITE,
                                                 (size_t)pages, frames, errs);
                if (!map) {
                    perror("xenforeignmemory_map");
                    return 1;
                }
                if (errs[0] || errs[pages - 1]) {
                    fprintf(stderr, "page errors %d %d\n", errs[0], errs[pages - 1]);
                    return 1;
                }
                if (xenforeignmemory_unmap(fmem, map, (size_t)pages)) {
                    perror("xenforeignmemory_unmap");
                    return 1;
                }
            }
        }
    }
    uint64_t ns = now_ns() - start;
    printf("XENTEST OUT bench-run impl=libxenctrl measure=%s iterations=%ld ns=%llu\n", measure,
           iterations, (unsigned long long)ns);
    free(frames);
    free(errs);
    xenforeignmemory_close(fmem);
    xc_interface_close(xch);
    return 0;
}
