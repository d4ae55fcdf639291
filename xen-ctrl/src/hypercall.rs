//! The two hypercalls of domain control, `domctl` and `sysctl`, over any [`XenHypercall`].
#![allow(unsafe_code)]

use xen_hypercall::{XenHypercall, XenMutBuffer};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Issues `domctl(op)` (`op` a `xen_domctl` of some release) and copies Xen's answer back into
/// `op`. Only for commands whose payload holds no guest handle.
pub(crate) fn domctl<H, T>(h: &H, op: &mut T) -> Result<usize, xen_hypercall::Error>
where
    H: XenHypercall<Error = xen_hypercall::Error> + ?Sized,
    T: FromBytes + IntoBytes + Immutable + KnownLayout,
{
    let mut buf = h.make_mut_buffer(op)?;
    let ptr = buf.as_hypercall_ptr();
    // SAFETY: `domctl` takes one pointer to a `xen_domctl`, which `do_domctl` reads with
    // `copy_from_guest(op, u_domctl, 1)` and writes back with `__copy_to_guest(u_domctl, op, 1)`
    // (xen/common/domctl.c): `buf` is valid for reads and writes of the whole structure (the
    // callers pass a release's `xen_domctl`, whose size is that of Xen's) and lives past the
    // call. The commands used through this function (getdomaininfo, pausedomain,
    // unpausedomain, destroydomain, max_mem, getvcpuinfo) hold no guest handle, so Xen
    // accesses no other memory.
    unsafe {
        h.hypercall1(
            xen_sys::__HYPERVISOR_domctl as usize,
            ptr.cast::<u8>().expose_provenance(),
        )
    }
}

/// Issues `sysctl(op)` (`op` a `xen_sysctl` of some release) and copies Xen's answer back into
/// `op`.
///
/// # Safety
///
/// Every guest handle inside `op` names a live buffer of `h` that is valid for the accesses Xen
/// makes for `op`'s command, until the call returns.
pub(crate) unsafe fn sysctl<H, T>(h: &H, op: &mut T) -> Result<usize, xen_hypercall::Error>
where
    H: XenHypercall<Error = xen_hypercall::Error> + ?Sized,
    T: FromBytes + IntoBytes + Immutable + KnownLayout,
{
    let mut buf = h.make_mut_buffer(op)?;
    let ptr = buf.as_hypercall_ptr();
    // SAFETY: `sysctl` takes one pointer to a `xen_sysctl`, which `do_sysctl` reads with
    // `copy_from_guest(op, u_sysctl, 1)` and writes back with `__copy_to_guest(u_sysctl, op, 1)`
    // (xen/common/sysctl.c): `buf` is valid for reads and writes of the whole structure and
    // lives past the call. Handles inside it are the caller's obligation (`# Safety`).
    unsafe {
        h.hypercall1(
            xen_sys::__HYPERVISOR_sysctl as usize,
            ptr.cast::<u8>().expose_provenance(),
        )
    }
}

/// `XEN_SYSCTL_physinfo`: `op` is a release's `xen_sysctl` with that command.
pub(crate) fn physinfo<H, T>(h: &H, op: &mut T) -> Result<usize, xen_hypercall::Error>
where
    H: XenHypercall<Error = xen_hypercall::Error> + ?Sized,
    T: FromBytes + IntoBytes + Immutable + KnownLayout,
{
    // SAFETY: `xen_sysctl_physinfo` holds no guest handle (sysctl.h: only integers and the
    // `hw_cap` array), so Xen accesses no memory but `op`'s.
    unsafe { sysctl(h, op) }
}

/// `XEN_SYSCTL_getdomaininfolist` into `entries`: sets `list`'s buffer and count to them, runs
/// `sysctl` on `op` (whose union `list` is then written into and read back from), and returns
/// how many entries Xen filled, at most `entries.len()`.
pub(crate) fn getdomaininfolist<H, Op, List, Entry>(
    h: &H,
    op: &mut Op,
    union: fn(&mut Op) -> &mut List,
    set_buffer: fn(&mut List, u64, u32),
    num_domains: fn(&List) -> u32,
    entries: &mut [Entry],
) -> Result<usize, xen_hypercall::Error>
where
    H: XenHypercall<Error = xen_hypercall::Error> + ?Sized,
    Op: FromBytes + IntoBytes + Immutable + KnownLayout,
    Entry: FromBytes + IntoBytes + Immutable,
{
    let max = u32::try_from(entries.len()).unwrap_or(u32::MAX);
    let entries = &mut entries[..max as usize];
    let mut out = h.make_mut_buffer(entries)?;
    let address = out.as_hypercall_ptr().cast::<u8>().expose_provenance() as u64;
    set_buffer(union(op), address, max);
    // SAFETY: the only guest handle in `op` is the list's `buffer`, set just above to `out`,
    // which is valid for writes of `max` entries and lives until after the call. Xen writes
    // at most `max_domains` = `max` entries through it: `do_sysctl` stops its loop when
    // `num_domains == max_domains` and writes each with
    // `copy_to_guest_offset(buffer, num_domains, &info, 1)` (xen/common/sysctl.c), each a
    // `xen_domctl_getdomaininfo` of this release, the element type of `entries`.
    unsafe { sysctl(h, op)? };
    // Dropping the buffer copies what Xen wrote back into `entries`.
    drop(out);
    // Xen never reports more than it was given room for; clamp so a faulty backend cannot make
    // the caller read past what was written.
    Ok((num_domains(union(op)) as usize).min(max as usize))
}
