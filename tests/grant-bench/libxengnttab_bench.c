/*
 * The C side of `cargo xtask bench grant`: one timed loop of one measure
 * through libxengnttab (Debian's libxen-dev), on pages this process shares
 * with its own domain through libxengnttab's gntshr (set up before timing).
 *
 *   libxengnttab-bench <map_unmap|copy_4k|copy_1m> <iterations>
 *
 * Prints one line: XENTEST OUT bench-run impl=libxengnttab measure=... iterations=... ns=...
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <xengnttab.h>
#include <xen/grant_table.h>

#define PAGE 4096
#define MIB_PAGES 256

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s <map_unmap|copy_4k|copy_1m> <iterations>\n", argv[0]);
        return 2;
    }
    const char *measure = argv[1];
    long iterations = strtol(argv[2], NULL, 10);
    int pages = strcmp(measure, "copy_1m") == 0 ? MIB_PAGES : 1;

    xengntshr_handle *shr = xengntshr_open(NULL, 0);
    xengnttab_handle *tab = xengnttab_open(NULL, 0);
    if (!shr || !tab) {
        perror("xengntshr_open/xengnttab_open");
        return 1;
    }
    uint32_t refs[MIB_PAGES];
    unsigned char *shared = xengntshr_share_pages(shr, 0, pages, refs, 1);
    if (!shared) {
        perror("xengntshr_share_pages");
        return 1;
    }
    memset(shared, 0x5a, (size_t)pages * PAGE);
    unsigned char *local = malloc((size_t)pages * PAGE);
    xengnttab_grant_copy_segment_t segs[MIB_PAGES];
    for (int i = 0; i < pages; i++) {
        memset(&segs[i], 0, sizeof(segs[i]));
        segs[i].source.foreign.ref = refs[i];
        segs[i].source.foreign.offset = 0;
        segs[i].source.foreign.domid = 0;
        segs[i].dest.virt = local + (size_t)i * PAGE;
        segs[i].len = PAGE;
        segs[i].flags = GNTCOPY_source_gref;
    }

    uint64_t start = 0;
    for (long round = 0; round < 2; round++) {
        /* Round 0 warms up with a tenth of the iterations; round 1 is timed. */
        long n = round == 0 ? iterations / 10 + 1 : iterations;
        if (round == 1)
            start = now_ns();
        for (long i = 0; i < n; i++) {
            if (strcmp(measure, "map_unmap") == 0) {
                void *map = xengnttab_map_grant_ref(tab, 0, refs[0], PROT_READ | PROT_WRITE);
                if (!map) {
                    perror("xengnttab_map_grant_ref");
                    return 1;
                }
                if (xengnttab_unmap(tab, map, 1)) {
                    perror("xengnttab_unmap");
                    return 1;
                }
            } else {
                if (xengnttab_grant_copy(tab, (uint32_t)pages, segs)) {
                    perror("xengnttab_grant_copy");
                    return 1;
                }
                for (int s = 0; s < pages; s++) {
                    if (segs[s].status != GNTST_okay) {
                        fprintf(stderr, "copy segment %d: status %d\n", s, segs[s].status);
                        return 1;
                    }
                }
            }
        }
    }
    uint64_t ns = now_ns() - start;
    if (pages > 1 && local[(size_t)pages * PAGE - 1] != 0x5a) {
        fprintf(stderr, "the copy did not arrive\n");
        return 1;
    }
    printf("XENTEST OUT bench-run impl=libxengnttab measure=%s iterations=%ld ns=%llu\n", measure,
           iterations, (unsigned long long)ns);
    xengntshr_unshare(shr, shared, (uint32_t)pages);
    free(local);
    xengnttab_close(tab);
    xengntshr_close(shr);
    return 0;
}
