/*
 * The C side of `cargo xtask bench privcmd`: one timed loop of one hypercall,
 * either through libxencall (as libxc does it: allocate a hypercall buffer,
 * call, copy the result out, free the buffer) or as the floor: a raw
 * IOCTL_PRIVCMD_HYPERCALL loop on a page preallocated from /dev/xen/hypercall.
 *
 *   libxencall-bench <floor|libxencall> <version|extraversion|memory_map> <iterations>
 *
 * Prints one line: XENTEST OUT bench-run impl=... call=... iterations=... ns=... mmaps=... munmaps=...
 * mmap/munmap are counted by wrapping them at link time (-Wl,--wrap=mmap,--wrap=munmap).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <xencall.h>
#include <xen/xen.h>
#include <xen/version.h>
#include <xen/memory.h>

/* Linux include/uapi/xen/privcmd.h (its own includes are not exported). */
struct privcmd_hypercall {
    uint64_t op;
    uint64_t arg[5];
};
#define IOCTL_PRIVCMD_HYPERCALL 0x00305000UL

/* struct e820entry: what XENMEM_machine_memory_map fills in. */
struct e820_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
} __attribute__((packed));
#define MAP_ENTRIES 32

static unsigned long mmaps, munmaps;
void *__real_mmap(void *, size_t, int, int, int, off_t);
int __real_munmap(void *, size_t);
void *__wrap_mmap(void *a, size_t l, int p, int f, int fd, off_t o)
{
    mmaps++;
    return __real_mmap(a, l, p, f, fd, o);
}
int __wrap_munmap(void *a, size_t l)
{
    munmaps++;
    return __real_munmap(a, l);
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void die(const char *what)
{
    printf("XENTEST OUT bench-error %s: %s\n", what, strerror(errno));
    exit(1);
}

/* Results are checked in the loop so that a failing call cannot look fast. */
static long expect_version;

static void floor_loop(const char *call, long n)
{
    int fd = open("/dev/xen/privcmd", O_RDWR | O_CLOEXEC);
    int hfd = open("/dev/xen/hypercall", O_RDWR | O_CLOEXEC);
    if (fd < 0 || hfd < 0)
        die("open");
    char *page = __real_mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, hfd, 0);
    if (page == MAP_FAILED)
        die("mmap");
    struct privcmd_hypercall h = { .op = __HYPERVISOR_xen_version };
    if (!strcmp(call, "version")) {
        h.arg[0] = XENVER_version;
    } else if (!strcmp(call, "extraversion")) {
        h.arg[0] = XENVER_extraversion;
        h.arg[1] = (uintptr_t)page;
    } else {
        struct xen_memory_map *map = (void *)page;
        h.op = __HYPERVISOR_memory_op;
        h.arg[0] = XENMEM_machine_memory_map;
        h.arg[1] = (uintptr_t)map;
        map->buffer = page + 64;
    }
    for (long i = 0; i < n; i++) {
        if (h.op == __HYPERVISOR_memory_op)
            ((struct xen_memory_map *)page)->nr_entries = MAP_ENTRIES;
        long r = ioctl(fd, IOCTL_PRIVCMD_HYPERCALL, &h);
        if (r < 0 || (h.arg[0] == XENVER_version && h.op == __HYPERVISOR_xen_version && r != expect_version))
            die("floor hypercall");
    }
}

static void libxencall_loop(xencall_handle *x, const char *call, long n)
{
    if (!strcmp(call, "version")) {
        for (long i = 0; i < n; i++)
            if (xencall2(x, __HYPERVISOR_xen_version, XENVER_version, 0) != expect_version)
                die("xen_version");
    } else if (!strcmp(call, "extraversion")) {
        xen_extraversion_t out;
        for (long i = 0; i < n; i++) {
            void *buf = xencall_alloc_buffer(x, sizeof(out));
            if (!buf)
                die("xencall_alloc_buffer");
            if (xencall2(x, __HYPERVISOR_xen_version, XENVER_extraversion, (uintptr_t)buf) < 0)
                die("extraversion");
            memcpy(out, buf, sizeof(out));
            xencall_free_buffer(x, buf);
        }
    } else {
        struct e820_entry entries[MAP_ENTRIES];
        for (long i = 0; i < n; i++) {
            struct xen_memory_map *map = xencall_alloc_buffer(x, sizeof(*map));
            void *buf = xencall_alloc_buffer(x, sizeof(entries));
            if (!map || !buf)
                die("xencall_alloc_buffer");
            map->nr_entries = MAP_ENTRIES;
            map->buffer = buf;
            if (xencall2(x, __HYPERVISOR_memory_op, XENMEM_machine_memory_map, (uintptr_t)map) < 0)
                die("machine_memory_map");
            memcpy(entries, buf, map->nr_entries * sizeof(entries[0]));
            xencall_free_buffer(x, buf);
            xencall_free_buffer(x, map);
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s <floor|libxencall> <version|extraversion|memory_map> <iterations>\n", argv[0]);
        return 2;
    }
    const char *impl = argv[1], *call = argv[2];
    long n = atol(argv[3]), warmup = n / 10 + 1;
    xencall_handle *x = xencall_open(NULL, 0);
    if (!x)
        die("xencall_open");
    expect_version = xencall2(x, __HYPERVISOR_xen_version, XENVER_version, 0);

    int floor = !strcmp(impl, "floor");
    if (floor)
        floor_loop(call, warmup);
    else
        libxencall_loop(x, call, warmup);
    unsigned long m0 = mmaps, u0 = munmaps;
    uint64_t t0 = now_ns();
    if (floor)
        floor_loop(call, n);
    else
        libxencall_loop(x, call, n);
    uint64_t t1 = now_ns();
    /* The floor's own setup (open, one mmap) is not per call. */
    if (floor)
        mmaps = m0, munmaps = u0;
    printf("XENTEST OUT bench-run impl=%s call=%s iterations=%ld ns=%llu mmaps=%lu munmaps=%lu\n", impl, call, n,
           (unsigned long long)(t1 - t0), mmaps - m0, munmaps - u0);
    xencall_close(x);
    return 0;
}
