//! `grant_table_op`: setting up this domain's grant table, mapping, unmapping
//! and copying granted pages (`public/grant_table.h`).
//!
//! Xen answers each grant operation twice: the hypercall's return value (a
//! `-XEN_Exxx` when the request itself is malformed) and a per-operation
//! `status` (`GNTST_*`) written into the operation's structure. The wrappers
//! here turn a failed `status` into [`Error::Grant`],
//! except [`gnttab_copy`](GrantTableOps::gnttab_copy), which leaves one status
//! per segment in the caller's array.
//!
//! Writing grant entries is not a hypercall: see the grant crate.

use core::fmt;
use core::mem::{align_of, offset_of, size_of};

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::buffer::XenMutBuffer;
use crate::call::addr;
use crate::{DomId, Error, XenHypercall};

/// A grant reference (`grant_ref_t`): an index into a domain's grant table.
#[repr(transparent)]
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
)]
pub struct GrantRef(pub u32);

impl GrantRef {
    /// `GNTTAB_NR_RESERVED_ENTRIES`: references below this one belong to the
    /// toolstack (0: the console page, 1: the xenstore page).
    pub const FIRST_UNRESERVED: Self = Self(xen_sys::GNTTAB_NR_RESERVED_ENTRIES);

    /// The reference with this index.
    pub const fn new(index: u32) -> Self {
        Self(index)
    }

    /// The raw `grant_ref_t`.
    pub const fn raw(self) -> u32 {
        self.0
    }
}

impl fmt::Display for GrantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gref {}", self.0)
    }
}

/// A handle to a grant this domain has mapped (`grant_handle_t`), for unmapping it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrantHandle(pub u32);

/// The status of one grant operation (`GNTST_*`, an `int16_t`): `OKAY` or why
/// Xen refused it.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GrantStatus(pub i16);

macro_rules! grant_statuses {
    ($($name:ident = $c:ident, $text:literal;)*) => {
        impl GrantStatus {
            $(
                #[doc = concat!("`", stringify!($c), "`: ", $text, ".")]
                pub const $name: Self = Self(xen_sys::$c as i16);
            )*

            /// The `GNTST_*` name, if Xen's header has one.
            pub const fn name(self) -> Option<&'static str> {
                match self {
                    $(Self::$name => Some(stringify!($c)),)*
                    _ => None,
                }
            }

            fn description(self) -> Option<&'static str> {
                match self {
                    $(Self::$name => Some($text),)*
                    _ => None,
                }
            }
        }
    };
}

grant_statuses! {
    OKAY = GNTST_okay, "success";
    GENERAL_ERROR = GNTST_general_error, "refused (wrong domain, flags or permission in the grant entry, or a page that cannot be used)";
    BAD_DOMAIN = GNTST_bad_domain, "no such domain";
    BAD_GNTREF = GNTST_bad_gntref, "no such grant reference";
    BAD_HANDLE = GNTST_bad_handle, "no such mapping handle";
    BAD_VIRT_ADDR = GNTST_bad_virt_addr, "the address to map at is not usable";
    BAD_DEV_ADDR = GNTST_bad_dev_addr, "the device address does not match";
    NO_DEVICE_SPACE = GNTST_no_device_space, "out of mapping slots";
    PERMISSION_DENIED = GNTST_permission_denied, "not permitted";
    BAD_PAGE = GNTST_bad_page, "the page is not usable";
    BAD_COPY_ARG = GNTST_bad_copy_arg, "the copy crosses a page boundary";
    ADDRESS_TOO_BIG = GNTST_address_too_big, "the transferred page's address is too big";
    EAGAIN = GNTST_eagain, "the operation could not be done now: try again";
    NO_SPACE = GNTST_no_space, "out of space";
}

impl GrantStatus {
    /// Whether the operation succeeded.
    pub const fn is_okay(self) -> bool {
        self.0 == 0
    }

    /// `Ok(())` for `OKAY`, else [`Error::Grant`] with this status.
    ///
    /// # Errors
    ///
    /// [`Error::Grant`] with this status unless it is `OKAY`.
    pub const fn to_result(self) -> Result<(), Error> {
        if self.is_okay() {
            Ok(())
        } else {
            Err(Error::Grant(self))
        }
    }

    /// The broad category of this status.
    pub const fn kind(self) -> crate::ErrorKind {
        use crate::ErrorKind;
        match self {
            Self::BAD_DOMAIN => ErrorKind::NotFound,
            Self::BAD_GNTREF
            | Self::BAD_HANDLE
            | Self::BAD_VIRT_ADDR
            | Self::BAD_DEV_ADDR
            | Self::BAD_COPY_ARG
            | Self::ADDRESS_TOO_BIG => ErrorKind::InvalidInput,
            Self::NO_DEVICE_SPACE | Self::NO_SPACE => ErrorKind::OutOfMemory,
            Self::PERMISSION_DENIED => ErrorKind::PermissionDenied,
            Self::EAGAIN => ErrorKind::WouldBlock,
            _ => ErrorKind::Other,
        }
    }
}

impl fmt::Debug for GrantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "GrantStatus({})", self.0),
        }
    }
}

impl fmt::Display for GrantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.description(), self.name()) {
            (Some(text), Some(name)) => write!(f, "{text} ({name})"),
            _ => write!(f, "unknown grant status {}", self.0),
        }
    }
}

/// The size of a domain's grant table, from `GNTTABOP_query_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GrantTableSize {
    /// Frames the table has now.
    pub frames: u32,
    /// Frames it may grow to.
    pub max_frames: u32,
}

bitflags::bitflags! {
    /// `GNTMAP_*` flags of a map operation (`public/grant_table.h`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct MapFlags: u32 {
        /// `GNTMAP_device_map`: map for device access (`dev_bus_addr`).
        const DEVICE_MAP = xen_sys::GNTMAP_device_map;
        /// `GNTMAP_host_map`: map for CPU access at `host_addr`.
        const HOST_MAP = xen_sys::GNTMAP_host_map;
        /// `GNTMAP_readonly`: the mapping may not be written.
        const READONLY = xen_sys::GNTMAP_readonly;
        /// `GNTMAP_application_map`: a PV guest's user-space mapping.
        const APPLICATION_MAP = xen_sys::GNTMAP_application_map;
        /// `GNTMAP_contains_pte`: `host_addr` is the machine address of a PTE to update.
        const CONTAINS_PTE = xen_sys::GNTMAP_contains_pte;
        /// `GNTMAP_host_map | GNTMAP_readonly`: a read-only CPU mapping.
        const HOST_MAP_READONLY = Self::HOST_MAP.bits() | Self::READONLY.bits();
    }
}

/// What `GNTTABOP_map_grant_ref` gave back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Mapped {
    /// The handle to unmap with.
    pub handle: GrantHandle,
    /// The machine address of the granted frame (`dev_bus_addr`).
    pub dev_bus_addr: u64,
}

/// One side of a [`GrantCopy`] (`struct gnttab_copy_ptr`): a granted page of
/// another domain (`gref`) or a frame of the caller (`gmfn`), and an offset in it.
///
/// The union `u { grant_ref_t ref; xen_pfn_t gmfn; }` is held as its 8 bytes,
/// the reference in the low 4 (both targets are little-endian).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CopyPtr {
    u: u64,
    domid: u16,
    offset: u16,
    _pad: u32,
}

impl CopyPtr {
    /// Byte `offset` of the page that `domid` granted with `gref`.
    pub const fn gref(domid: DomId, gref: GrantRef, offset: u16) -> Self {
        Self {
            u: gref.0 as u64,
            domid: domid.0,
            offset,
            _pad: 0,
        }
    }

    /// Byte `offset` of the caller's frame `gmfn` (Xen accepts only
    /// `DOMID_SELF` with a frame).
    pub const fn frame(gmfn: u64, offset: u16) -> Self {
        Self {
            u: gmfn,
            domid: DomId::SELF.0,
            offset,
            _pad: 0,
        }
    }

    /// The domain named.
    pub const fn domid(&self) -> DomId {
        DomId(self.domid)
    }

    /// The reference (for a `gref` side) or the frame (for a `frame` side).
    pub const fn target(&self) -> u64 {
        self.u
    }

    /// The byte offset in the page.
    pub const fn offset(&self) -> u16 {
        self.offset
    }
}

/// One `GNTTABOP_copy` operation (`struct gnttab_copy`, 40 bytes).
///
/// `xen_sys::gnttab_copy` holds a C union and so cannot be handed to a buffer;
/// this type has the same layout (checked at compile time) with the union as
/// plain bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GrantCopy {
    source: CopyPtr,
    dest: CopyPtr,
    len: u16,
    flags: u16,
    status: GrantStatus,
    _pad: u16,
}

const _: () = {
    use xen_sys::{gnttab_copy, gnttab_copy_gnttab_copy_ptr as ptr};
    assert!(size_of::<CopyPtr>() == size_of::<ptr>());
    assert!(align_of::<CopyPtr>() == align_of::<ptr>());
    assert!(offset_of!(CopyPtr, domid) == offset_of!(ptr, domid));
    assert!(offset_of!(CopyPtr, offset) == offset_of!(ptr, offset));
    assert!(size_of::<GrantCopy>() == size_of::<gnttab_copy>());
    assert!(align_of::<GrantCopy>() == align_of::<gnttab_copy>());
    assert!(offset_of!(GrantCopy, source) == offset_of!(gnttab_copy, source));
    assert!(offset_of!(GrantCopy, dest) == offset_of!(gnttab_copy, dest));
    assert!(offset_of!(GrantCopy, len) == offset_of!(gnttab_copy, len));
    assert!(offset_of!(GrantCopy, flags) == offset_of!(gnttab_copy, flags));
    assert!(offset_of!(GrantCopy, status) == offset_of!(gnttab_copy, status));
    // The reference lives in the low bytes of the union.
    assert!(cfg!(target_endian = "little"));
};

impl GrantCopy {
    /// Copies `len` bytes from `source` to `dest`. Each side's offset plus
    /// `len` must stay within its page, or Xen answers `GNTST_bad_copy_arg`.
    pub const fn new(
        source: CopyPtr,
        source_is_gref: bool,
        dest: CopyPtr,
        dest_is_gref: bool,
        len: u16,
    ) -> Self {
        let mut flags = 0;
        if source_is_gref {
            flags |= xen_sys::GNTCOPY_source_gref as u16;
        }
        if dest_is_gref {
            flags |= xen_sys::GNTCOPY_dest_gref as u16;
        }
        Self {
            source,
            dest,
            len,
            flags,
            status: GrantStatus::OKAY,
            _pad: 0,
        }
    }

    /// The source.
    pub const fn source(&self) -> CopyPtr {
        self.source
    }

    /// The destination.
    pub const fn dest(&self) -> CopyPtr {
        self.dest
    }

    /// The number of bytes.
    pub const fn len(&self) -> u16 {
        self.len
    }

    /// Whether the copy moves no byte.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the source is a grant reference (`GNTCOPY_source_gref`).
    pub const fn source_is_gref(&self) -> bool {
        self.flags & xen_sys::GNTCOPY_source_gref as u16 != 0
    }

    /// Whether the destination is a grant reference (`GNTCOPY_dest_gref`).
    pub const fn dest_is_gref(&self) -> bool {
        self.flags & xen_sys::GNTCOPY_dest_gref as u16 != 0
    }

    /// The status Xen wrote for this operation.
    pub const fn status(&self) -> GrantStatus {
        self.status
    }
}

/// Issues `grant_table_op(cmd, &mut arg, 1)`.
///
/// # Safety
///
/// `T` is the structure grant_table.h names for `cmd`, and what Xen does for
/// `cmd` with `arg`'s contents breaks no Rust invariant (any pointer in it is a
/// live buffer of this interface of the right size and mutability).
unsafe fn gnttab_one<H, T>(h: &H, cmd: u32, arg: &mut T) -> Result<usize, H::Error>
where
    H: XenHypercall + ?Sized,
    T: FromBytes + IntoBytes,
{
    let mut buf = h.make_mut_buffer(arg)?;
    let ptr = buf.as_hypercall_ptr();
    // SAFETY: `grant_table_op(unsigned int cmd, void *uop, unsigned int count)`
    // (grant_table.h) with count 1: Xen reads and writes one `T` at `ptr`,
    // which the buffer keeps valid and unaliased until after the call; the
    // caller vouches for the effects.
    let ret = unsafe {
        h.hypercall3(
            xen_sys::__HYPERVISOR_grant_table_op as usize,
            [cmd as usize, addr(ptr), 1],
        )
    };
    // Dropping the buffer copies Xen's writes back into `arg`.
    drop(buf);
    ret
}

/// `grant_table_op` sub-ops, on every [`XenHypercall`] backend.
pub trait GrantTableOps: XenHypercall {
    /// `GNTTABOP_query_size`: how many frames `dom`'s grant table has and may have.
    ///
    /// `dom` is [`DomId::SELF`] or, for a privileged caller, another domain.
    fn gnttab_query_size(&self, dom: DomId) -> Result<GrantTableSize, Self::Error> {
        let mut arg = xen_sys::gnttab_query_size::new_zeroed();
        arg.dom = dom.0;
        // SAFETY: GNTTABOP_query_size takes a `gnttab_query_size_t`: IN `dom`;
        // OUT `nr_frames`, `max_nr_frames`, `status`. No pointer
        // (common/grant_table.c `gnttab_query_size` copies it in and out).
        unsafe { gnttab_one(self, xen_sys::GNTTABOP_query_size, &mut arg)? };
        GrantStatus(arg.status).to_result()?;
        Ok(GrantTableSize {
            frames: arg.nr_frames,
            max_frames: arg.max_nr_frames,
        })
    }

    /// `GNTTABOP_setup_table`: grows `dom`'s grant table to `frames.len()`
    /// frames and writes their frame numbers into `frames` (machine frames for
    /// a PV domain, to map with `update_va_mapping`; an HVM/PVH/Arm domain
    /// maps its table with `XENMEM_add_to_physmap` instead).
    ///
    /// More frames than the domain's maximum is `GNTST_general_error`.
    fn gnttab_setup_table(&self, dom: DomId, frames: &mut [u64]) -> Result<(), Self::Error> {
        let nr_frames = u32::try_from(frames.len())
            .map_err(|_| Error::InvalidInput("more grant frames than a u32 counts"))?;
        let mut list = self.make_mut_buffer(frames)?;
        let mut arg = xen_sys::gnttab_setup_table::new_zeroed();
        arg.dom = dom.0;
        arg.nr_frames = nr_frames;
        arg.frame_list = xen_sys::GuestHandle::from_mut_ptr(list.as_hypercall_ptr().cast());
        // SAFETY: GNTTABOP_setup_table takes a `gnttab_setup_table_t`: IN
        // `dom`, `nr_frames`, `frame_list`; OUT `status`. Xen writes at most
        // `nr_frames` `xen_pfn_t`s (u64 on x86_64 and Arm) through
        // `frame_list` (`gnttab_setup_table`: `copy_to_guest_offset(...,
        // i, ...)` for `i < op.nr_frames`), which points at `list`, a live
        // mutable buffer of exactly `nr_frames` u64s, dropped after the call.
        // Growing the table changes only Xen's memory.
        let ret = unsafe { gnttab_one(self, xen_sys::GNTTABOP_setup_table, &mut arg) };
        // Dropping the buffer copies the frame numbers back into `frames`.
        drop(list);
        ret?;
        GrantStatus(arg.status).to_result()?;
        Ok(())
    }

    /// `GNTTABOP_get_version`: the grant table version (1 or 2) of `dom`.
    fn gnttab_get_version(&self, dom: DomId) -> Result<u32, Self::Error> {
        let mut arg = xen_sys::gnttab_get_version::new_zeroed();
        arg.dom = dom.0;
        // SAFETY: GNTTABOP_get_version takes a `gnttab_get_version_t`: IN
        // `dom`, OUT `version`. No pointer.
        unsafe { gnttab_one(self, xen_sys::GNTTABOP_get_version, &mut arg)? };
        Ok(arg.version)
    }

    /// `GNTTABOP_copy`: performs each copy of `ops` in order and writes its
    /// status into it. The hypercall fails only for a malformed request; check
    /// each [`GrantCopy::status`].
    ///
    /// # Safety
    ///
    /// Xen writes every destination: a destination `frame` (of this domain),
    /// or a destination `gref` that this domain granted itself, must be memory
    /// that no Rust reference assumes unchanged during the call (accessed only
    /// atomically or volatilely, or not at all). Other domains' pages are
    /// theirs to protect.
    unsafe fn gnttab_copy(&self, ops: &mut [GrantCopy]) -> Result<(), Self::Error> {
        let count = u32::try_from(ops.len())
            .map_err(|_| Error::InvalidInput("more grant copies than a u32 counts"))?;
        let mut buf = self.make_mut_buffer(ops)?;
        let ptr = buf.as_hypercall_ptr();
        // SAFETY: GNTTABOP_copy takes an array of `count` `gnttab_copy_t`
        // (`GrantCopy` has its layout, asserted above); Xen reads each and
        // writes back only its `status` (`gnttab_copy`: `__copy_field_to_guest
        // (uop, &op, status)`), within `buf`, which lives until after the call.
        // The frames the operations name are the caller's obligation.
        let ret = unsafe {
            self.hypercall3(
                xen_sys::__HYPERVISOR_grant_table_op as usize,
                [xen_sys::GNTTABOP_copy as usize, addr(ptr), count as usize],
            )
        };
        // Dropping the buffer copies the statuses back into `ops`.
        drop(buf);
        ret.map(drop)
    }

    /// `GNTTABOP_map_grant_ref`: maps the page `dom` granted with `gref` at
    /// `host_addr` (`GNTMAP_host_map`: a virtual address for a PV domain, a
    /// guest physical address for HVM/PVH/Arm).
    ///
    /// # Safety
    ///
    /// With `flags` [`MapFlags::HOST_MAP`] or [`MapFlags::HOST_MAP_READONLY`],
    /// the page at `host_addr` is replaced by the granted page, which the
    /// granting domain may write at any time (unless mapped read-only): no
    /// Rust value may live there, and until it is unmapped the page is
    /// accessed only atomically or volatilely. Any other `GNTMAP_*` bit
    /// changes what Xen writes and is the caller's to justify (for a PV
    /// guest, `GNTMAP_contains_pte` makes `host_addr` the machine address of
    /// a page table entry Xen rewrites; x86 HVM/PVH refuses every other bit).
    unsafe fn gnttab_map_grant_ref(
        &self,
        dom: DomId,
        gref: GrantRef,
        host_addr: u64,
        flags: MapFlags,
    ) -> Result<Mapped, Self::Error> {
        let mut arg = xen_sys::gnttab_map_grant_ref::new_zeroed();
        arg.host_addr = host_addr;
        arg.flags = flags.bits();
        arg.ref_ = gref.0;
        arg.dom = dom.0;
        // SAFETY: GNTTABOP_map_grant_ref takes a `gnttab_map_grant_ref_t`: IN
        // `host_addr`, `flags`, `ref`, `dom`; OUT `status`, `handle`,
        // `dev_bus_addr` (`gnttab_map_grant_ref` copies each op in and out).
        // The mapping at `host_addr` is the caller's obligation.
        unsafe { gnttab_one(self, xen_sys::GNTTABOP_map_grant_ref, &mut arg)? };
        GrantStatus(arg.status).to_result()?;
        Ok(Mapped {
            handle: GrantHandle(arg.handle),
            dev_bus_addr: arg.dev_bus_addr,
        })
    }

    /// `GNTTABOP_unmap_grant_ref`: removes the mapping `handle` at `host_addr`.
    ///
    /// An unknown or already unmapped handle is `GNTST_bad_handle`; a
    /// `host_addr` where the handle's page is not mapped is
    /// `GNTST_general_error`, and the mapping stays.
    ///
    /// # Safety
    ///
    /// The page at `host_addr` goes away (on HVM/PVH the frame becomes a
    /// hole): nothing may use it afterwards.
    unsafe fn gnttab_unmap_grant_ref(
        &self,
        host_addr: u64,
        handle: GrantHandle,
    ) -> Result<(), Self::Error> {
        let mut arg = xen_sys::gnttab_unmap_grant_ref::new_zeroed();
        arg.host_addr = host_addr;
        arg.handle = handle.0;
        // SAFETY: GNTTABOP_unmap_grant_ref takes a `gnttab_unmap_grant_ref_t`:
        // IN `host_addr`, `dev_bus_addr` (0: none), `handle`; OUT `status`.
        // Removing the mapping is the caller's obligation.
        unsafe { gnttab_one(self, xen_sys::GNTTABOP_unmap_grant_ref, &mut arg)? };
        GrantStatus(arg.status).to_result()?;
        Ok(())
    }
}

impl<H: XenHypercall + ?Sized> GrantTableOps for H {}
