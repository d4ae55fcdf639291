//! Counts of `mmap` and `munmap` calls, made by anything linked into this
//! program, through the `--wrap` link arguments of `build.rs`.

use core::ffi::{c_int, c_long, c_void};
use std::sync::atomic::{AtomicU64, Ordering};

static MMAPS: AtomicU64 = AtomicU64::new(0);
static MUNMAPS: AtomicU64 = AtomicU64::new(0);

/// `(mmap calls, munmap calls)` so far.
pub(crate) fn counts() -> (u64, u64) {
    (
        MMAPS.load(Ordering::Relaxed),
        MUNMAPS.load(Ordering::Relaxed),
    )
}

unsafe extern "C" {
    /// glibc's `mmap` (`off_t` is 64 bits on every 64-bit Linux).
    fn __real_mmap(
        addr: *mut c_void,
        len: usize,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        offset: c_long,
    ) -> *mut c_void;
    /// glibc's `munmap`.
    fn __real_munmap(addr: *mut c_void, len: usize) -> c_int;
}

/// What calls to `mmap` resolve to: counts, then calls glibc's.
///
/// # Safety
///
/// As `mmap(2)`.
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn __wrap_mmap(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    offset: c_long,
) -> *mut c_void {
    MMAPS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the caller's arguments, passed on unchanged to the real `mmap`.
    unsafe { __real_mmap(addr, len, prot, flags, fd, offset) }
}

/// What calls to `munmap` resolve to: counts, then calls glibc's.
///
/// # Safety
///
/// As `munmap(2)`.
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn __wrap_munmap(addr: *mut c_void, len: usize) -> c_int {
    MUNMAPS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the caller's arguments, passed on unchanged to the real `munmap`.
    unsafe { __real_munmap(addr, len) }
}
