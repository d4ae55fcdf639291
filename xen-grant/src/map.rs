//! The guest side's mappings of pages other domains granted
//! (`GNTTABOP_map_grant_ref` with `GNTMAP_host_map`), undone when dropped.
//!
//! Xen maps the granted page at an address the guest chooses: a virtual
//! address whose page-table entry Xen rewrites for a PV guest
//! (`create_grant_va_mapping`), a guest frame it puts into the physmap for an
//! HVM, PVH or Arm guest (`create_grant_p2m_mapping`,
//! `create_grant_host_mapping`). Unmapping leaves the place empty (PV: a
//! cleared entry; the others: a hole in the physmap), ready for another
//! mapping. A [`MapSlot`] is such a place.
//!
//! A domain never maps a grant of its own: on x86 HVM and PVH, Xen adds the
//! granted frame at the slot's gfn with `p2m_add_page`, which removes the
//! frame from the gfn where the domain has it ("already mapped at another
//! physical address"); after the unmap that gfn stays a hole, and the page the
//! grant lent (a Rust value) is gone from under its owner. (A PV guest would
//! get a second page-table entry for the frame, an Arm guest a second gfn;
//! both harmless, but refused too, for one rule everywhere.)

use core::fmt;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use xen_hypercall::event_channel::ChannelState;
use xen_hypercall::grant_table::{GrantHandle, GrantRef, MapFlags};
use xen_hypercall::prelude::*;
use xen_shared::{ReadOnlyMem, SharedMem};

use crate::{Error, PAGE_SIZE};

/// A place where this domain maps one page another domain granted.
///
/// # Safety
///
/// An implementer promises that, while the value lives, and for ever after if
/// the value is never dropped:
///
/// - [`host_addr`](Self::host_addr) is page-aligned, always the same, and
///   names where Xen may map a page for this domain with `GNTMAP_host_map`:
///   for a PV guest a virtual address of the current page tables whose level-1
///   entry exists; for an HVM, PVH or Arm guest a guest physical address,
///   preferably a free one (a frame of ours there is taken out of the physmap
///   and never comes back);
/// - no Rust value lives in the page there (Xen replaces it), and nothing but
///   this slot's mappings uses that address;
/// - while a page is mapped at `host_addr`, [`page`](Self::page) is where this
///   program reaches it: 4096 bytes, page-aligned, valid for reads and writes
///   (only atomically: the granting domain writes it at any time);
/// - once unmapped, the page is not accessed until a new mapping.
///
/// A [`MappedGrant`] can be forgotten (`core::mem::forget`, an `Rc` cycle):
/// then it is never unmapped and its slot is never dropped, and the granted
/// page stays at `host_addr` for good. So the place must stay reserved for it
/// without the slot's help: a slot that borrows the place (a page of the
/// program, a range of addresses) borrows it for `'static`, as
/// [`GrantPage`](crate::GrantPage) does, and one that owns it gives it back
/// only in its `Drop`, which a forgotten mapping never runs.
pub unsafe trait MapSlot {
    /// Where Xen maps the page (`host_addr`).
    fn host_addr(&self) -> u64;
    /// Where this program reaches the page while it is mapped (for a guest
    /// whose virtual addresses equal its physical ones, or a PV guest,
    /// `host_addr` itself). Called only while a page is mapped.
    fn page(&self) -> NonNull<u8>;
}

/// A page another domain granted, mapped into this domain at a [`MapSlot`];
/// unmapped when dropped.
///
/// Its bytes are reached only atomically ([`mem`](Self::mem),
/// [`read`](Self::read)): the granting domain may write them at any time. If
/// Xen refuses the unmap when the mapping is dropped, the slot is leaked
/// (never reused): call [`unmap`](Self::unmap) to see the error instead.
pub struct MappedGrant<'h, H: XenHypercall<Error = xen_hypercall::Error>, S: MapSlot> {
    h: &'h H,
    slot: ManuallyDrop<S>,
    handle: GrantHandle,
    domid: DomId,
    gref: GrantRef,
    readonly: bool,
}

impl<'h, H: XenHypercall<Error = xen_hypercall::Error>, S: MapSlot> MappedGrant<'h, H, S> {
    /// Maps the page `domid` granted with `gref` at `slot` (read-only if
    /// `readonly`, which a read-only grant requires).
    ///
    /// `domid` must be another domain: this domain's own id is
    /// [`Error::OwnDomain`] (on x86 HVM and PVH Xen would take the frame away from the
    /// page the grant lent, which stays a hole after the unmap; `DOMID_SELF` and the
    /// other reserved ids are [`Error::BadDomain`]). To learn its own id the
    /// domain asks Xen (an unbound event channel port for itself, its status,
    /// its close): three more hypercalls per map.
    ///
    /// # Errors
    ///
    /// [`Error::BadDomain`] and [`Error::OwnDomain`] as above. Xen refuses, as [`Error::Xen`]
    /// holding `Error::Grant(status)`, a reference past the granter's table (`GNTST_bad_gntref`),
    /// an entry that does not grant this domain access, or writable access to a read-only grant
    /// (`GNTST_general_error`), a domain that does not exist (`GNTST_bad_domain`). The slot comes
    /// back with the error.
    pub fn map(
        h: &'h H,
        domid: DomId,
        gref: GrantRef,
        slot: S,
        readonly: bool,
    ) -> Result<Self, MapError<S>> {
        if !domid.is_domain() {
            return Err(MapError {
                error: Error::BadDomain(domid),
                slot,
            });
        }
        let host_addr = slot.host_addr();
        if host_addr % PAGE_SIZE as u64 != 0 {
            return Err(MapError {
                error: Error::InvalidInput("a map slot must be page-aligned"),
                slot,
            });
        }
        match own_domid(h) {
            Ok(own) if own == domid => {
                return Err(MapError {
                    error: Error::OwnDomain(domid),
                    slot,
                });
            }
            Ok(_) => {}
            Err(error) => return Err(MapError { error, slot }),
        }
        let flags = if readonly {
            MapFlags::HOST_MAP_READONLY
        } else {
            MapFlags::HOST_MAP
        };
        // SAFETY: `MapSlot`'s contract: no Rust value lives at `host_addr`,
        // where Xen replaces the page with the granted one, which this
        // program reaches only atomically (through `self`) until the unmap.
        // The granter is another domain (checked), so no frame of this
        // domain leaves its place in the physmap.
        match unsafe { h.gnttab_map_grant_ref(domid, gref, host_addr, flags) } {
            Ok(mapped) => Ok(Self {
                h,
                slot: ManuallyDrop::new(slot),
                handle: mapped.handle,
                domid,
                gref,
                readonly,
            }),
            Err(error) => Err(MapError {
                error: error.into(),
                slot,
            }),
        }
    }

    /// The granting domain.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The reference mapped.
    pub fn gref(&self) -> GrantRef {
        self.gref
    }

    /// Xen's handle of the mapping.
    pub fn handle(&self) -> GrantHandle {
        self.handle
    }

    /// Whether the page is mapped read-only.
    pub fn is_readonly(&self) -> bool {
        self.readonly
    }

    /// The slot the page is mapped at.
    pub fn slot(&self) -> &S {
        &self.slot
    }

    /// The mapped page, for atomic access: the granting domain may change it
    /// at any time. `None` for a read-only mapping (use
    /// [`read_only`](Self::read_only)).
    pub fn mem(&self) -> Option<SharedMem<'_>> {
        // SAFETY: while `self` lives the page is mapped at the slot and
        // reached at `page()`: page-aligned, readable and writable (not
        // read-only, checked), only atomically, for 4096 bytes (`MapSlot`'s
        // contract); the view borrows `self`, so it ends before the unmap.
        (!self.readonly).then(|| unsafe { SharedMem::from_raw_parts(self.slot.page(), PAGE_SIZE) })
    }

    /// The mapped page, for atomic loads only (a read-only mapping, or a
    /// writable one read).
    pub fn read_only(&self) -> ReadOnlyMem<'_> {
        // SAFETY: as for `mem`; the view only loads, which a read-only
        // mapping allows.
        unsafe { ReadOnlyMem::from_raw_parts(self.slot.page(), PAGE_SIZE) }
    }

    /// Copies `dst.len()` bytes at `offset` out of the page (read-only
    /// mappings too).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] if the bytes are outside the page.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), Error> {
        self.read_only()
            .read(offset, dst)
            .map_err(|_| Error::InvalidInput("the bytes to read are outside the page"))
    }

    /// `GNTTABOP_unmap_grant_ref`.
    fn unmap_raw(&self) -> Result<(), Error> {
        // SAFETY: the page at the slot goes away; no view of it outlives the
        // borrow of `self` that made it, and the caller does not use the page
        // again (`unmap` and `drop` consume the mapping).
        unsafe {
            self.h
                .gnttab_unmap_grant_ref(self.slot.host_addr(), self.handle)
        }
        .map_err(Error::from)
    }

    /// Unmaps the page and gives the slot back, empty (for another mapping);
    /// if Xen refuses, fails with the mapping unchanged.
    ///
    /// # Errors
    ///
    /// [`UnmapError`] with Xen's refusal of `GNTTABOP_unmap_grant_ref` and the mapping, still in
    /// place.
    pub fn unmap(self) -> Result<S, UnmapError<'h, H, S>> {
        match self.unmap_raw() {
            Ok(()) => {
                let mut this = ManuallyDrop::new(self);
                // SAFETY: `this` is never used or dropped again, so the slot is
                // taken out exactly once.
                Ok(unsafe { ManuallyDrop::take(&mut this.slot) })
            }
            Err(error) => Err(UnmapError {
                error,
                mapping: self,
            }),
        }
    }
}

impl<H: XenHypercall<Error = xen_hypercall::Error>, S: MapSlot> Drop for MappedGrant<'_, H, S> {
    fn drop(&mut self) {
        if self.unmap_raw().is_ok() {
            // SAFETY: the page is unmapped; the slot is dropped exactly once, here.
            unsafe { ManuallyDrop::drop(&mut self.slot) };
        }
        // Else the page may still be mapped there: the slot is leaked.
    }
}

impl<H: XenHypercall<Error = xen_hypercall::Error>, S: MapSlot> fmt::Debug
    for MappedGrant<'_, H, S>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedGrant")
            .field("domid", &self.domid)
            .field("gref", &self.gref)
            .field("handle", &self.handle)
            .field("host_addr", &format_args!("{:#x}", self.slot.host_addr()))
            .field("readonly", &self.readonly)
            .finish()
    }
}

/// This domain's id, as Xen knows it: the remote domain of a port allocated
/// for `DOMID_SELF` (`evtchn_alloc_unbound` stores the caller's id there), read
/// back with `EVTCHNOP_status`; the port is closed again.
fn own_domid<H: XenHypercall<Error = xen_hypercall::Error>>(h: &H) -> Result<DomId, Error> {
    let port = h.evtchn_alloc_unbound(DomId::SELF, DomId::SELF)?;
    let status = h.evtchn_status(DomId::SELF, port);
    // The port is ours alone (nothing else knows its number), and unbound: no
    // event can be pending on it. A refused close only leaves it allocated.
    let closed = h.evtchn_close(port);
    let own = match status?.state {
        ChannelState::Unbound { remote_dom } => remote_dom,
        _ => return Err(Error::InvalidInput("Xen reported a fresh port as bound")),
    };
    closed?;
    Ok(own)
}

/// [`MappedGrant::map`] failed: why, and the slot, given back.
pub struct MapError<S> {
    /// Why.
    pub error: Error,
    /// The slot, with nothing mapped.
    pub slot: S,
}

impl<S> fmt::Debug for MapError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<S> fmt::Display for MapError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl<S> core::error::Error for MapError<S> {}

/// [`MappedGrant::unmap`] failed: why, and the mapping, still in place.
pub struct UnmapError<'h, H: XenHypercall<Error = xen_hypercall::Error>, S: MapSlot> {
    /// Why.
    pub error: Error,
    /// The mapping, unchanged.
    pub mapping: MappedGrant<'h, H, S>,
}

impl<H: XenHypercall<Error = xen_hypercall::Error>, S: MapSlot> fmt::Debug
    for UnmapError<'_, H, S>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnmapError")
            .field("error", &self.error)
            .field("mapping", &self.mapping)
            .finish()
    }
}

impl<H: XenHypercall<Error = xen_hypercall::Error>, S: MapSlot> fmt::Display
    for UnmapError<'_, H, S>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl<H: XenHypercall<Error = xen_hypercall::Error>, S: MapSlot> core::error::Error
    for UnmapError<'_, H, S>
{
}
