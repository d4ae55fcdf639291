//! The Linux UAPI of `/dev/xen/privcmd` and `/dev/xen/hypercall`, and the raw
//! OS calls on them.
//!
//! Linux's `include/uapi/xen/privcmd.h` includes a header that is not exported to
//! userland, so the structures and ioctl numbers are defined here from it.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno as OsErrno;
use nix::libc;
#[cfg(not(miri))]
use nix::sys::mman::{MapFlags, MmapAdvise, ProtFlags};
use xen_hypercall::ioctl::ioc_none;

/// `struct privcmd_hypercall` (`include/uapi/xen/privcmd.h`): `__u64 op; __u64 arg[5];`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct PrivcmdHypercall {
    pub(crate) op: u64,
    pub(crate) arg: [u64; 5],
}

/// The ioctl type of `/dev/xen/privcmd`.
const TYPE: u8 = b'P';

/// `IOCTL_PRIVCMD_HYPERCALL` = `_IOC(_IOC_NONE, 'P', 0, sizeof(struct privcmd_hypercall))`.
pub(crate) const IOCTL_PRIVCMD_HYPERCALL: libc::c_ulong =
    ioc_none(TYPE, 0, size_of::<PrivcmdHypercall>());
/// `IOCTL_PRIVCMD_RESTRICT` = `_IOC(_IOC_NONE, 'P', 6, sizeof(domid_t))`.
pub(crate) const IOCTL_PRIVCMD_RESTRICT: libc::c_ulong = ioc_none(TYPE, 6, size_of::<u16>());

// The numbers as Linux's header expands them.
const _: () = assert!(size_of::<PrivcmdHypercall>() == 48);
const _: () = assert!(IOCTL_PRIVCMD_HYPERCALL == 0x0030_5000);
const _: () = assert!(IOCTL_PRIVCMD_RESTRICT == 0x0002_5006);

/// `struct privcmd_mmapbatch_v2` (`include/uapi/xen/privcmd.h`): `unsigned int num; domid_t
/// dom; __u64 addr; const xen_pfn_t __user *arr; int __user *err;`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct PrivcmdMmapBatchV2 {
    pub(crate) num: u32,
    pub(crate) dom: u16,
    pub(crate) addr: u64,
    pub(crate) arr: u64,
    pub(crate) err: u64,
}

/// `struct privcmd_mmap_resource` (`include/uapi/xen/privcmd.h`): `domid_t dom; __u32 type;
/// __u32 id; __u32 idx; __u64 num; __u64 addr;`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct PrivcmdMmapResource {
    pub(crate) dom: u16,
    pub(crate) pad: u16,
    pub(crate) kind: u32,
    pub(crate) id: u32,
    pub(crate) idx: u32,
    pub(crate) num: u64,
    pub(crate) addr: u64,
}

/// `IOCTL_PRIVCMD_MMAPBATCH_V2` = `_IOC(_IOC_NONE, 'P', 4, sizeof(privcmd_mmapbatch_v2_t))`.
pub(crate) const IOCTL_PRIVCMD_MMAPBATCH_V2: libc::c_ulong =
    ioc_none(TYPE, 4, size_of::<PrivcmdMmapBatchV2>());
/// `IOCTL_PRIVCMD_MMAP_RESOURCE` = `_IOC(_IOC_NONE, 'P', 7, sizeof(struct privcmd_mmap_resource))`.
pub(crate) const IOCTL_PRIVCMD_MMAP_RESOURCE: libc::c_ulong =
    ioc_none(TYPE, 7, size_of::<PrivcmdMmapResource>());

const _: () = assert!(size_of::<PrivcmdMmapBatchV2>() == 32);
const _: () = assert!(core::mem::offset_of!(PrivcmdMmapBatchV2, addr) == 8);
const _: () = assert!(core::mem::offset_of!(PrivcmdMmapBatchV2, err) == 24);
const _: () = assert!(size_of::<PrivcmdMmapResource>() == 32);
const _: () = assert!(core::mem::offset_of!(PrivcmdMmapResource, kind) == 4);
const _: () = assert!(core::mem::offset_of!(PrivcmdMmapResource, num) == 16);
const _: () = assert!(core::mem::offset_of!(PrivcmdMmapResource, addr) == 24);
const _: () = assert!(IOCTL_PRIVCMD_MMAPBATCH_V2 == 0x0020_5004);
const _: () = assert!(IOCTL_PRIVCMD_MMAP_RESOURCE == 0x0020_5007);

nix::ioctl_readwrite_bad!(
    /// `IOCTL_PRIVCMD_MMAPBATCH_V2`: maps foreign frames into a privcmd VMA.
    privcmd_mmapbatch_v2_raw,
    IOCTL_PRIVCMD_MMAPBATCH_V2,
    PrivcmdMmapBatchV2
);

nix::ioctl_readwrite_bad!(
    /// `IOCTL_PRIVCMD_MMAP_RESOURCE`: maps (or sizes) a domain's resource.
    privcmd_mmap_resource_raw,
    IOCTL_PRIVCMD_MMAP_RESOURCE,
    PrivcmdMmapResource
);

/// Issues `IOCTL_PRIVCMD_MMAPBATCH_V2`.
///
/// # Safety
///
/// `batch.arr` points at `batch.num` readable `u64` frames, `batch.err` at `batch.num` writable
/// `i32`s no reference covers, and `batch.addr..+num` pages lie in a privcmd mapping this
/// process owns whose pages there are unmapped and not viewed.
pub(crate) unsafe fn privcmd_mmapbatch_v2(
    fd: BorrowedFd<'_>,
    batch: &mut PrivcmdMmapBatchV2,
) -> Result<(), OsErrno> {
    // SAFETY: `fd` is open (borrowed); `batch` is a live 32-byte structure (the size in the
    // ioctl number); what privcmd does through its pointers is the caller's contract.
    unsafe { privcmd_mmapbatch_v2_raw(fd.as_raw_fd(), batch) }.map(drop)
}

/// Issues `IOCTL_PRIVCMD_MMAP_RESOURCE`.
///
/// # Safety
///
/// With `num != 0`, `addr` is the start of a privcmd mapping of exactly `num` pages that this
/// process owns, with nothing mapped or viewed in it yet.
pub(crate) unsafe fn privcmd_mmap_resource(
    fd: BorrowedFd<'_>,
    resource: &mut PrivcmdMmapResource,
) -> Result<(), OsErrno> {
    // SAFETY: `fd` is open (borrowed); `resource` is a live 32-byte structure (the size in the
    // ioctl number), read and (for the size query) written by privcmd; the mapping is the
    // caller's contract.
    unsafe { privcmd_mmap_resource_raw(fd.as_raw_fd(), resource) }.map(drop)
}

/// Maps `len` bytes of `/dev/xen/privcmd` (`fd`): an empty privcmd VMA (`privcmd_mmap` maps
/// nothing; `VM_DONTCOPY`, so a forked child does not inherit it) for a mapping ioctl to fill.
pub(crate) fn map_privcmd(fd: BorrowedFd<'_>, len: usize) -> Result<NonNull<u8>, OsErrno> {
    let len = std::num::NonZeroUsize::new(len).ok_or(OsErrno::EINVAL)?;
    let prot = nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE;
    // SAFETY: a new mapping at an address the kernel chooses (no `MAP_FIXED`), so no existing
    // memory is replaced; privcmd accepts any shared mapping of its fd at offset 0.
    let ptr = unsafe {
        nix::sys::mman::mmap(None, len, prot, nix::sys::mman::MapFlags::MAP_SHARED, fd, 0)
    }?;
    Ok(ptr.cast())
}

/// Unmaps a mapping from [`map_privcmd`].
///
/// # Safety
///
/// `base` and `len` describe one whole mapping from [`map_privcmd`] that nothing references.
pub(crate) unsafe fn unmap_privcmd(base: NonNull<u8>, len: usize) {
    // SAFETY: the caller gives the whole mapping, no longer used. A failure (only for an
    // invalid range) leaves it mapped: a leak, not unsoundness.
    let _ = unsafe { nix::sys::mman::munmap(base.cast(), len) };
}

nix::ioctl_write_ptr_bad!(
    /// `IOCTL_PRIVCMD_RESTRICT`: restricts the privcmd fd to one domain.
    privcmd_restrict,
    IOCTL_PRIVCMD_RESTRICT,
    u16
);

/// Issues `IOCTL_PRIVCMD_HYPERCALL` and returns the hypercall's `long` result.
///
/// This is the raw `ioctl` system call rather than libc's `ioctl()`: that
/// wrapper returns an `int` and would truncate results wider than 31 bits
/// (`XENMEM_maximum_ram_page`, for instance). Linux's privcmd returns the
/// hypercall's value as the system call's result, and a Xen error `-XEN_Exxx`
/// as `-1` with `errno` = `XEN_Exxx` (Xen's error codes are Linux's on x86 and Arm).
///
/// # Safety
///
/// As [`XenHypercall::hypercall5`](xen_hypercall::XenHypercall::hypercall5): the
/// hypercall must only make Xen access memory the caller allows it to.
pub(crate) unsafe fn privcmd_hypercall(
    fd: BorrowedFd<'_>,
    call: &mut PrivcmdHypercall,
) -> Result<isize, OsErrno> {
    let call: *mut PrivcmdHypercall = call;
    // SAFETY:
    // - `fd` is open for the duration of the call (it is borrowed);
    // - `call` points at a live, writable `struct privcmd_hypercall` (48 bytes, the
    //   size encoded in the ioctl number), which privcmd only reads
    //   (`privcmd_ioctl_hypercall` copies it in with `copy_from_user`);
    // - what the hypercall itself does with memory is the caller's contract.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_ioctl,
            fd.as_raw_fd(),
            IOCTL_PRIVCMD_HYPERCALL,
            call,
        )
    };
    if ret == -1 {
        Err(OsErrno::last())
    } else {
        Ok(ret as isize)
    }
}

/// Where hypercall buffers come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferSource {
    /// Pages mapped from `/dev/xen/hypercall` (Linux 4.18 and later): the kernel
    /// guarantees Xen may access them.
    HypercallDevice,
    /// Anonymous memory mapped with `MAP_LOCKED` and `MADV_DONTFORK`, every page
    /// touched: the fallback of older kernels, as libxencall does it. Locked
    /// pages are not swapped out but may still be migrated or compacted; a
    /// hypercall that meets such a move fails with `EFAULT` (Linux commit
    /// c51b3c639e01 added the hypercall device for that reason).
    LockedAnonymous,
}

/// Maps `len` bytes (a multiple of the page size) of hypercall-safe memory.
///
/// With `hypercall_dev`, the pages come from `/dev/xen/hypercall` (which needs
/// `MAP_SHARED`, and zeroes them); otherwise they are locked anonymous pages,
/// each written once so that it is present before Xen sees it. Neither is
/// inherited by `fork`: a child would otherwise share the device's pages with
/// this process, or copy-on-write (move) the anonymous ones.
#[cfg(not(miri))]
pub(crate) fn map_pages(
    hypercall_dev: Option<BorrowedFd<'_>>,
    len: usize,
) -> Result<NonNull<u8>, OsErrno> {
    let len_nz = std::num::NonZeroUsize::new(len).ok_or(OsErrno::EINVAL)?;
    let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
    let ptr = match hypercall_dev {
        Some(fd) => {
            // SAFETY:
            // - a new mapping at an address the kernel chooses (no `MAP_FIXED`), so
            //   no existing memory is replaced;
            // - `/dev/xen/hypercall` supports exactly this: `MAP_SHARED`, offset 0
            //   (`privcmd-buf.c`, `privcmd_buf_mmap` rejects non-shared mappings).
            unsafe { nix::sys::mman::mmap(None, len_nz, prot, MapFlags::MAP_SHARED, fd, 0) }?
        }
        None => {
            let flags = MapFlags::MAP_PRIVATE | MapFlags::MAP_LOCKED;
            // SAFETY: a new anonymous mapping at an address the kernel chooses; no
            // existing memory is affected.
            unsafe { nix::sys::mman::mmap_anonymous(None, len_nz, prot, flags) }?
        }
    };
    // SAFETY: `ptr..ptr+len` is the mapping just created, referenced by nothing else.
    if let Err(e) = unsafe { nix::sys::mman::madvise(ptr, len, MmapAdvise::MADV_DONTFORK) } {
        // SAFETY: the same fresh mapping, which nothing references yet.
        let _ = unsafe { nix::sys::mman::munmap(ptr, len) };
        return Err(e);
    }
    let base = ptr.cast::<u8>();
    if hypercall_dev.is_none() {
        for offset in (0..len).step_by(page_size()) {
            let byte = base.as_ptr().wrapping_add(offset);
            // SAFETY: `offset < len`, so `byte` is inside the fresh read-write
            // mapping, which nothing else references; volatile so the touch stays.
            unsafe { byte.write_volatile(0) };
        }
    }
    Ok(base)
}

/// Unmaps memory from [`map_pages`].
///
/// # Safety
///
/// `base` and `len` describe one whole mapping returned by [`map_pages`] that
/// nothing references any more.
#[cfg(not(miri))]
pub(crate) unsafe fn unmap_pages(base: NonNull<u8>, len: usize) {
    // SAFETY: the caller gives the whole mapping, no longer used. A failure
    // (only possible for an invalid range) leaves the mapping in place: a leak,
    // not unsoundness.
    let _ = unsafe { nix::sys::mman::munmap(base.cast(), len) };
}

/// Under Miri, which cannot map memory: zeroed pages from the global allocator,
/// so that the buffer pool's logic runs under Miri's checks.
#[cfg(miri)]
pub(crate) fn map_pages(
    _hypercall_dev: Option<BorrowedFd<'_>>,
    len: usize,
) -> Result<NonNull<u8>, OsErrno> {
    let layout =
        std::alloc::Layout::from_size_align(len, page_size()).map_err(|_| OsErrno::EINVAL)?;
    if len == 0 {
        return Err(OsErrno::EINVAL);
    }
    // SAFETY: `layout` has a non-zero size.
    NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).ok_or(OsErrno::ENOMEM)
}

/// Frees pages from the Miri [`map_pages`].
///
/// # Safety
///
/// As for the real `unmap_pages`.
#[cfg(miri)]
pub(crate) unsafe fn unmap_pages(base: NonNull<u8>, len: usize) {
    let layout =
        std::alloc::Layout::from_size_align(len, page_size()).expect("mapped with this layout");
    // SAFETY: `base` was allocated by `map_pages` with this layout and is no longer used.
    unsafe { std::alloc::dealloc(base.as_ptr(), layout) };
}

/// How many `fork`s lie between this process and the one the count started
/// in: a `pthread_atfork` child handler ([`watch_forks`]) adds one in each child.
/// Buffer pages are not inherited (`MADV_DONTFORK`), so memory mapped in an
/// earlier generation is not this process's: its addresses may since have been
/// reused by other mappings.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Runs in the child after `fork`. Only an atomic add: async-signal-safe, as
/// POSIX requires of a child handler when the parent had other threads.
#[cfg_attr(miri, allow(dead_code))]
extern "C" fn count_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Installs the handler that keeps [`fork_generation`] current, once per process.
///
/// libc runs the handler in the child of every `fork()`; a raw `clone` system
/// call bypasses it, as it bypasses libc's own fork bookkeeping.
#[cfg(not(miri))]
pub(crate) fn watch_forks() -> Result<(), OsErrno> {
    static INSTALLED: std::sync::OnceLock<libc::c_int> = std::sync::OnceLock::new();
    // SAFETY: `pthread_atfork` only records the handler; `count_fork_in_child`
    // is an `extern "C" fn()` that lives as long as the program and is
    // async-signal-safe.
    let rc = *INSTALLED
        .get_or_init(|| unsafe { libc::pthread_atfork(None, None, Some(count_fork_in_child)) });
    if rc == 0 {
        Ok(())
    } else {
        Err(OsErrno::from_raw(rc))
    }
}

/// Under Miri, which cannot fork: nothing to watch.
#[cfg(miri)]
pub(crate) fn watch_forks() -> Result<(), OsErrno> {
    Ok(())
}

/// The current fork generation (see [`FORK_GENERATION`]).
pub(crate) fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// The system page size (4 KiB on x86; 4, 16 or 64 KiB on Arm).
pub(crate) fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: `sysconf` has no preconditions.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size)
            .ok()
            .filter(|s| s.is_power_of_two())
            .unwrap_or(4096)
    })
}
