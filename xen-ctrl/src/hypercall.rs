//! The two hypercalls of domain control, `domctl` and `sysctl`, over any [`XenHypercall`].
//!
//! Safe functions, sound for every argument: the envelopes and list entries are limited to the
//! generated structures of the releases this crate knows (the traits are crate-private and
//! implemented for those alone) (whose sizes are Xen's in every one of
//! them: asserted below), and the commands issued are checked to be ones whose payload holds no
//! guest handle, or whose one handle this module sets itself.
#![allow(unsafe_code)]

use xen_hypercall::{XenHypercall, XenMutBuffer};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// A release's `struct xen_domctl`. Crate-private, implemented only by `releases!` below.
pub(crate) trait DomctlOp: FromBytes + IntoBytes + Immutable + KnownLayout {
    /// Its `cmd`.
    fn cmd(&self) -> u32;
}

/// A release's `struct xen_sysctl`, with the command this module sets up itself. Crate-private,
/// implemented only by `releases!` below.
pub(crate) trait SysctlOp: FromBytes + IntoBytes + Immutable + KnownLayout {
    /// The release's `xen_domctl_getdomaininfo`, the element of a domain list.
    type DomainInfo: FromBytes + IntoBytes + Immutable;
    /// Its `cmd`.
    fn cmd(&self) -> u32;
    /// Makes it this release's `XEN_SYSCTL_getdomaininfolist` from `first`, into `max` entries at
    /// `buffer`.
    fn set_list(&mut self, first: u16, buffer: u64, max: u32);
    /// The `num_domains` Xen wrote back.
    fn listed(&self) -> u32;
}

/// The domctl commands issued through [`domctl`]: none carries a guest handle (domctl.h), so Xen
/// accesses no memory but the envelope's.
const HANDLE_FREE_DOMCTLS: [u32; 6] = [
    xen_sys::xen_4_17::XEN_DOMCTL_getdomaininfo,
    xen_sys::xen_4_17::XEN_DOMCTL_pausedomain,
    xen_sys::xen_4_17::XEN_DOMCTL_unpausedomain,
    xen_sys::xen_4_17::XEN_DOMCTL_destroydomain,
    xen_sys::xen_4_17::XEN_DOMCTL_max_mem,
    xen_sys::xen_4_17::XEN_DOMCTL_getvcpuinfo,
];

macro_rules! releases {
    ($($release:ident),*) => {$(
        impl DomctlOp for xen_sys::$release::xen_domctl {
            fn cmd(&self) -> u32 {
                self.cmd
            }
        }
        impl SysctlOp for xen_sys::$release::xen_sysctl {
            type DomainInfo = xen_sys::$release::xen_domctl_getdomaininfo;
            fn cmd(&self) -> u32 {
                self.cmd
            }
            fn set_list(&mut self, first: u16, buffer: u64, max: u32) {
                use xen_sys::$release as sys;
                self.cmd = sys::XEN_SYSCTL_getdomaininfolist;
                self.interface_version = sys::XEN_SYSCTL_INTERFACE_VERSION;
                let mut list = sys::xen_sysctl_getdomaininfolist::new_zeroed();
                list.first_domain = first;
                list.buffer = xen_sys::GuestHandle::from_address(buffer);
                list.max_domains = max;
                self.u.as_mut_bytes()[..size_of_val(&list)].copy_from_slice(list.as_bytes());
            }
            fn listed(&self) -> u32 {
                let (list, _) = xen_sys::$release::xen_sysctl_getdomaininfolist::read_from_prefix(
                    self.u.as_bytes(),
                )
                .expect("the union is larger than the list");
                list.num_domains
            }
        }
        // The sizes Xen copies: `xen_domctl` and `xen_sysctl` end in a 128-byte union in every
        // release; a domain list's entries are the domctl structure of the release whose
        // version was proven. Equal sizes in every known release keep an entry type of one
        // release from being handed to another's Xen.
        const _: () = {
            use core::mem::size_of;
            use xen_sys::$release as sys;
            assert!(size_of::<sys::xen_domctl>() == 144);
            assert!(size_of::<sys::xen_sysctl>() == 136);
            assert!(
                size_of::<sys::xen_domctl_getdomaininfo>()
                    == size_of::<xen_sys::xen_4_17::xen_domctl_getdomaininfo>()
            );
            assert!(sys::XEN_DOMCTL_getvcpuinfo == HANDLE_FREE_DOMCTLS[5]);
        };
    )*};
}

releases!(xen_4_17, xen_4_20);

/// Issues `domctl(op)` and copies Xen's answer back into `op`. A command outside
/// [`HANDLE_FREE_DOMCTLS`] is refused ([`xen_hypercall::Error::Unsupported`]).
pub(crate) fn domctl<H, T>(h: &H, op: &mut T) -> Result<usize, xen_hypercall::Error>
where
    H: XenHypercall<Error = xen_hypercall::Error> + ?Sized,
    T: DomctlOp,
{
    if !HANDLE_FREE_DOMCTLS.contains(&op.cmd()) {
        return Err(xen_hypercall::Error::Unsupported(
            "a domctl command with guest handles",
        ));
    }
    let mut buf = h.make_mut_buffer(op)?;
    let ptr = buf.as_hypercall_ptr();
    // SAFETY: `domctl` takes one pointer to a `xen_domctl`, which `do_domctl` reads with
    // `copy_from_guest(op, u_domctl, 1)` and writes back with `__copy_to_guest(u_domctl, op, 1)`
    // (xen/common/domctl.c): `buf` is valid for reads and writes of a whole `xen_domctl` (144
    // bytes in every release: `T` is one of them) and lives past the call. The command holds
    // no guest handle (checked above), so Xen accesses no other memory.
    unsafe {
        h.hypercall1(
            xen_sys::__HYPERVISOR_domctl as usize,
            ptr.cast::<u8>().expose_provenance(),
        )
    }
}

/// Issues `sysctl(op)` and copies Xen's answer back into `op`.
///
/// # Safety
///
/// Every guest handle inside `op` names a live buffer of `h` that is valid for the accesses Xen
/// makes for `op`'s command, until the call returns.
unsafe fn sysctl<H, T>(h: &H, op: &mut T) -> Result<usize, xen_hypercall::Error>
where
    H: XenHypercall<Error = xen_hypercall::Error> + ?Sized,
    T: SysctlOp,
{
    let mut buf = h.make_mut_buffer(op)?;
    let ptr = buf.as_hypercall_ptr();
    // SAFETY: `sysctl` takes one pointer to a `xen_sysctl`, which `do_sysctl` reads with
    // `copy_from_guest(op, u_sysctl, 1)` and writes back with `__copy_to_guest(u_sysctl, op, 1)`
    // (xen/common/sysctl.c): `buf` is valid for reads and writes of a whole `xen_sysctl` (136
    // bytes in every release) and lives past the call. Handles inside it are the caller's
    // obligation (`# Safety`).
    unsafe {
        h.hypercall1(
            xen_sys::__HYPERVISOR_sysctl as usize,
            ptr.cast::<u8>().expose_provenance(),
        )
    }
}

/// `XEN_SYSCTL_physinfo` on `op`, which must carry that command (else
/// [`xen_hypercall::Error::Unsupported`]).
pub(crate) fn physinfo<H, T>(h: &H, op: &mut T) -> Result<usize, xen_hypercall::Error>
where
    H: XenHypercall<Error = xen_hypercall::Error> + ?Sized,
    T: SysctlOp,
{
    if op.cmd() != xen_sys::xen_4_17::XEN_SYSCTL_physinfo {
        return Err(xen_hypercall::Error::Unsupported("not a physinfo sysctl"));
    }
    // SAFETY: `xen_sysctl_physinfo` holds no guest handle (sysctl.h: integers and the `hw_cap`
    // array only), so Xen accesses no memory but `op`'s.
    unsafe { sysctl(h, op) }
}

/// `XEN_SYSCTL_getdomaininfolist` of the domains from `first` up into `entries`; returns how
/// many Xen filled, at most `entries.len()`.
pub(crate) fn getdomaininfolist<H, T>(
    h: &H,
    first: u16,
    entries: &mut [T::DomainInfo],
) -> Result<usize, xen_hypercall::Error>
where
    H: XenHypercall<Error = xen_hypercall::Error> + ?Sized,
    T: SysctlOp,
{
    let max = u32::try_from(entries.len()).unwrap_or(u32::MAX);
    let entries = &mut entries[..max as usize];
    let mut out = h.make_mut_buffer(entries)?;
    let address = out.as_hypercall_ptr().cast::<u8>().expose_provenance() as u64;
    let mut op = T::new_zeroed();
    op.set_list(first, address, max);
    // SAFETY: the only guest handle in `op` is the list's `buffer`, set just above to `out`,
    // which is valid for writes of `max` entries and lives until after the call. Xen writes at
    // most `max_domains` = `max` entries through it: `do_sysctl` stops its loop when
    // `num_domains == max_domains` and writes each with
    // `copy_to_guest_offset(buffer, num_domains, &info, 1)` (xen/common/sysctl.c), each a
    // `xen_domctl_getdomaininfo`, of the size of `T::DomainInfo` in every known release
    // (asserted above).
    unsafe { sysctl(h, &mut op)? };
    // Dropping the buffer copies what Xen wrote back into `entries`.
    drop(out);
    // Xen never reports more than it was given room for; clamp so a faulty backend cannot make
    // the caller read past what was written.
    Ok((op.listed() as usize).min(max as usize))
}
