//! The Linux UAPI of `/dev/xen/gntdev` and `/dev/xen/gntalloc`
//! (`include/uapi/xen/gntdev.h`, `gntalloc.h`), and the raw calls on them.
//!
//! Every ioctl is `_IOC(_IOC_NONE, 'G', nr, sizeof(struct ...))`: the
//! structure's size, padding included, is part of the number. Each number is
//! computed from the Rust structure and asserted equal to the value Linux
//! uses, so a structure that lost its padding (the bug of an existing Rust
//! crate's gntalloc number) cannot compile.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::libc;

/// `_IOC(_IOC_NONE, 'G', nr, size)`: gntdev's and gntalloc's ioctl type is `'G'`.
const fn ioc_none(nr: u8, size: usize) -> libc::c_ulong {
    xen_hypercall::ioctl::ioc_none(b'G', nr, size)
}

/// `struct ioctl_gntdev_grant_ref`: `{u32 domid; u32 ref}`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GrantRefArg {
    pub(crate) domid: u32,
    pub(crate) gref: u32,
}

/// `struct ioctl_gntdev_map_grant_ref`, with its first reference; more follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MapGrantRef {
    pub(crate) count: u32,
    pub(crate) pad: u32,
    pub(crate) index: u64,
    pub(crate) refs: [GrantRefArg; 1],
}

/// `struct ioctl_gntdev_unmap_grant_ref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UnmapGrantRef {
    pub(crate) index: u64,
    pub(crate) count: u32,
    pub(crate) pad: u32,
}

/// `struct ioctl_gntdev_get_offset_for_vaddr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GetOffsetForVaddr {
    pub(crate) vaddr: u64,
    pub(crate) offset: u64,
    pub(crate) count: u32,
    pub(crate) pad: u32,
}

/// `struct ioctl_gntdev_set_max_grants`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SetMaxGrants {
    pub(crate) count: u32,
}

/// `struct ioctl_gntdev_unmap_notify` (and gntalloc's, identical).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UnmapNotify {
    pub(crate) index: u64,
    pub(crate) action: u32,
    pub(crate) event_channel_port: u32,
}

/// `struct ioctl_gntdev_grant_copy_segment`: two 8-byte unions (`void *virt`
/// or `{u32 ref; u16 offset; u16 domid}`), `len`, `flags`, `status`; 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CopySegment {
    pub(crate) source: u64,
    pub(crate) dest: u64,
    pub(crate) len: u16,
    pub(crate) flags: u16,
    pub(crate) status: i16,
}

/// `struct ioctl_gntdev_grant_copy`: `{unsigned int count; segment *segments}`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct GrantCopy {
    pub(crate) count: u32,
    pub(crate) segments: *mut CopySegment,
}

/// `struct ioctl_gntalloc_alloc_gref`, with its first reference; more follow it.
/// `{u16 domid; u16 flags; u32 count; u64 index; u32 gref_ids[1]}`: 20 bytes
/// of fields, padded to 24 by the `u64`'s alignment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AllocGref {
    pub(crate) domid: u16,
    pub(crate) flags: u16,
    pub(crate) count: u32,
    pub(crate) index: u64,
    pub(crate) gref_ids: [u32; 1],
}

/// `struct ioctl_gntalloc_dealloc_gref`: `{u64 index; u32 count}`, padded to 16.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DeallocGref {
    pub(crate) index: u64,
    pub(crate) count: u32,
}

pub(crate) const IOCTL_GNTDEV_MAP_GRANT_REF: libc::c_ulong = ioc_none(0, size_of::<MapGrantRef>());
pub(crate) const IOCTL_GNTDEV_UNMAP_GRANT_REF: libc::c_ulong =
    ioc_none(1, size_of::<UnmapGrantRef>());
pub(crate) const IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR: libc::c_ulong =
    ioc_none(2, size_of::<GetOffsetForVaddr>());
pub(crate) const IOCTL_GNTDEV_SET_MAX_GRANTS: libc::c_ulong =
    ioc_none(3, size_of::<SetMaxGrants>());
pub(crate) const IOCTL_GNTDEV_SET_UNMAP_NOTIFY: libc::c_ulong =
    ioc_none(7, size_of::<UnmapNotify>());
pub(crate) const IOCTL_GNTDEV_GRANT_COPY: libc::c_ulong = ioc_none(8, size_of::<GrantCopy>());
pub(crate) const IOCTL_GNTALLOC_ALLOC_GREF: libc::c_ulong = ioc_none(5, size_of::<AllocGref>());
pub(crate) const IOCTL_GNTALLOC_DEALLOC_GREF: libc::c_ulong = ioc_none(6, size_of::<DeallocGref>());
pub(crate) const IOCTL_GNTALLOC_SET_UNMAP_NOTIFY: libc::c_ulong =
    ioc_none(7, size_of::<UnmapNotify>());

// The numbers Linux uses (64-bit), as the structures above must produce them.
const _: () = {
    assert!(IOCTL_GNTDEV_MAP_GRANT_REF == 0x0018_4700);
    assert!(IOCTL_GNTDEV_UNMAP_GRANT_REF == 0x0010_4701);
    assert!(IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR == 0x0018_4702);
    assert!(IOCTL_GNTDEV_SET_MAX_GRANTS == 0x0004_4703);
    assert!(IOCTL_GNTDEV_SET_UNMAP_NOTIFY == 0x0010_4707);
    assert!(IOCTL_GNTDEV_GRANT_COPY == 0x0010_4708);
    assert!(IOCTL_GNTALLOC_ALLOC_GREF == 0x0018_4705);
    assert!(IOCTL_GNTALLOC_DEALLOC_GREF == 0x0010_4706);
    assert!(IOCTL_GNTALLOC_SET_UNMAP_NOTIFY == 0x0010_4707);
    assert!(size_of::<CopySegment>() == 24);
};

/// `UNMAP_NOTIFY_CLEAR_BYTE`: on unmap, write 0 to the byte at the offset.
pub(crate) const UNMAP_NOTIFY_CLEAR_BYTE: u32 = 0x1;
/// `UNMAP_NOTIFY_SEND_EVENT`: on unmap, signal the event channel.
pub(crate) const UNMAP_NOTIFY_SEND_EVENT: u32 = 0x2;
/// `GNTALLOC_FLAG_WRITABLE`: the other domain may write the pages.
pub(crate) const GNTALLOC_FLAG_WRITABLE: u16 = 1;

/// Issues ioctl `request` on `fd` with the argument at `arg`.
///
/// The raw system call, as for privcmd: libc's `ioctl()` takes a differently
/// typed request on glibc and musl.
///
/// # Safety
///
/// `arg` points at memory of the layout `request` names, valid for the reads
/// and writes the driver makes (its `copy_from_user`/`copy_to_user` sizes),
/// and what the driver does breaks no Rust invariant.
pub(crate) unsafe fn ioctl<T>(
    fd: BorrowedFd<'_>,
    request: libc::c_ulong,
    arg: *mut T,
) -> Result<libc::c_long, Errno> {
    // SAFETY: `fd` is open (borrowed); the argument is the caller's contract.
    let ret = unsafe { libc::syscall(libc::SYS_ioctl, fd.as_raw_fd(), request, arg) };
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}
