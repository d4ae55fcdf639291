//! The Linux dom0 (or driver domain) side: `/dev/xen/gntdev` maps pages other
//! domains granted ([`Gntdev`]), `/dev/xen/gntalloc` grants pages of this
//! process to another domain ([`Gntalloc`]).
//!
//! Mapped pages are memory another domain can change at any time: they are
//! reached only through [`SharedMem`] views (atomic accesses), or
//! [`ReadOnlyMem`] views when mapped read-only, never as `&[u8]`. Mappings and allocations are undone when dropped.

mod gntalloc;
mod gntdev;
mod sys;

use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;
use nix::libc;
use nix::sys::mman::{MapFlags, ProtFlags};
use xen_hypercall::Port;
use xen_shared::{ReadOnlyMem, SharedMem};

pub use self::gntalloc::{GNTALLOC_DEVICE, Gntalloc, Share};
pub use self::gntdev::{
    CopyBatch, CopyDest, CopySegment, CopySource, GNTDEV_DEVICE, Gntdev, Mapping,
};
use crate::error::os_errno;
use crate::{Error, PAGE_SIZE};

/// Opens a Xen device read-write and close-on-exec.
fn open_device(path: &'static str) -> Result<OwnedFd, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| Error::Os {
            operation: path,
            errno: xen_hypercall::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })
}

/// Releases a device refused when a mapping or share was dropped, where no
/// caller can be told. What each leaves behind (a grant still mapped, pages
/// still granted) lasts until the device is closed, which releases everything.
#[derive(Debug, Default)]
struct Leaks(AtomicU32);

impl Leaks {
    /// Counts `release` if it failed.
    fn count(&self, release: Result<(), Error>) {
        if release.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the peer is told when a mapping goes away (`SET_UNMAP_NOTIFY`):
/// the byte to clear and/or the event channel to signal. Linux does it when
/// the pages are unmapped, also when the process dies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnmapNotify {
    /// Write 0 to the byte at this offset of the mapping.
    pub clear_byte: Option<usize>,
    /// Signal this event channel port (bound by this process through
    /// `/dev/xen/evtchn`).
    pub event: Option<Port>,
}

/// Sets `notify` on the pages at `index` (`len` bytes) of `fd` with `request`.
fn set_unmap_notify(
    fd: std::os::fd::BorrowedFd<'_>,
    request: libc::c_ulong,
    index: u64,
    len: usize,
    notify: UnmapNotify,
) -> Result<(), Error> {
    let mut arg = sys::UnmapNotify {
        index,
        ..Default::default()
    };
    if let Some(offset) = notify.clear_byte {
        if offset >= len {
            return Err(Error::InvalidInput(
                "the byte to clear is outside the mapping",
            ));
        }
        arg.index = index + offset as u64;
        arg.action |= sys::UNMAP_NOTIFY_CLEAR_BYTE;
    }
    if let Some(port) = notify.event {
        arg.action |= sys::UNMAP_NOTIFY_SEND_EVENT;
        arg.event_channel_port = port.raw();
    }
    // SAFETY: SET_UNMAP_NOTIFY reads one `struct ioctl_gntdev_unmap_notify`
    // (gntalloc's is the same), the size in `request`; it only records it.
    unsafe { sys::ioctl(fd, request, &mut arg) }
        .map(drop)
        .map_err(|errno| Error::Os {
            operation: "SET_UNMAP_NOTIFY",
            errno: os_errno(errno),
        })
}

/// Pages a device mapped into this process with `mmap(MAP_SHARED)`;
/// `munmap`ed on drop.
#[derive(Debug)]
struct Pages {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
}

// SAFETY: the pages are plain shared memory reached only through atomics
// (`SharedMem`); the pointer may move between threads.
unsafe impl Send for Pages {}
// SAFETY: as above.
unsafe impl Sync for Pages {}

impl Pages {
    /// Maps `count` pages at device offset `index` of `fd`.
    fn map(fd: &OwnedFd, index: u64, count: usize, writable: bool) -> Result<Self, Errno> {
        let len = count
            .checked_mul(PAGE_SIZE)
            .and_then(core::num::NonZeroUsize::new)
            .ok_or(Errno::EINVAL)?;
        let offset = libc::off_t::try_from(index).map_err(|_| Errno::EINVAL)?;
        let prot = if writable {
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
        } else {
            ProtFlags::PROT_READ
        };
        // SAFETY: a new mapping at an address the kernel picks replaces no
        // memory of this program; gntdev and gntalloc require MAP_SHARED.
        let ptr = unsafe {
            nix::sys::mman::mmap(None, len, prot, MapFlags::MAP_SHARED, fd.as_fd(), offset)
        }?;
        Ok(Self {
            ptr: ptr.cast(),
            len: len.get(),
            writable,
        })
    }

    fn address(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// An atomic-only view of writable pages; `None` for read-only ones.
    fn mem(&self) -> Option<SharedMem<'_>> {
        // SAFETY:
        // - `ptr..ptr + len` is this value's mapping, page-aligned, whole
        //   pages, readable and writable (checked), unmapped only when it
        //   drops, after the view's borrow;
        // - this program reaches the pages only through such views (the types
        //   of this module hand out no other access);
        // - `len` is a few pages, far below `isize::MAX`.
        self.writable
            .then(|| unsafe { SharedMem::from_raw_parts(self.ptr, self.len) })
    }

    /// An atomic-only view without writes, of read-only pages or not.
    fn read_only(&self) -> ReadOnlyMem<'_> {
        // SAFETY: as for `mem`, and the view only loads, which read-only
        // pages allow.
        unsafe { ReadOnlyMem::from_raw_parts(self.ptr, self.len) }
    }

    /// Copies `dst.len()` bytes at `offset` out.
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), Error> {
        self.read_only()
            .read(offset, dst)
            .map_err(|_| Error::InvalidInput("the bytes to read are outside the mapping"))
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr + len` is this value's own mapping, reached only
        // through views borrowing `self`, which are gone. It cannot fail:
        // munmap refuses only unaligned or empty ranges, and this is the exact
        // range mmap returned.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
    }
}
