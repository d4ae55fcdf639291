//! `memory_op`: changing the guest physical address space (`public/memory.h`).

use zerocopy::FromZeros;

use crate::call::with_inout;
use crate::{DomId, Gfn, MapSpace, XenHypercall};

/// `memory_op` sub-ops, on every [`XenHypercall`] backend.
pub trait MemoryOps: XenHypercall {
    /// `XENMEM_add_to_physmap`: maps frame `idx` of `space` (e.g.
    /// [`MapSpace::SHARED_INFO`] with `idx` 0) at guest frame `gfn` of `dom`.
    ///
    /// Xen refuses with `XEN_EINVAL` an index the space does not have, with
    /// `XEN_ESRCH`/`XEN_EPERM` a domain the caller may not change. Only
    /// translated guests (HVM, PVH, Arm) have a physmap to change.
    ///
    /// # Safety
    ///
    /// Two frames of `dom` change (Xen's `xenmem_add_to_physmap_one`, x86
    /// `mm/p2m.c` and Arm `mm.c`):
    ///
    /// - at `gfn`, the page that was there is unhooked (ordinary RAM is freed
    ///   to Xen) and replaced by the mapped frame;
    /// - the mapped frame leaves the place it was mapped before, if any, which
    ///   becomes a hole (an access there no longer reaches memory).
    ///
    /// Per space:
    ///
    /// - [`MapSpace::SHARED_INFO`] (`idx` 0): Xen's shared info page, which
    ///   Xen writes at any time; a previous mapping of it becomes a hole.
    /// - [`MapSpace::GRANT_TABLE`]: grant-table frame `idx` (shared entries,
    ///   whose flags Xen writes as other domains map and unmap grants), or
    ///   with `XENMAPIDX_grant_table_status` set a v2 status frame, which Xen
    ///   writes; a previous mapping of the frame becomes a hole.
    /// - [`MapSpace::GMFN`]: `dom`'s own frame at guest frame `idx` moves to
    ///   `gfn`: guest frame `idx` becomes a hole.
    /// - Any other space: what `public/memory.h` and Xen's source say it maps.
    ///
    /// The caller guarantees that in `dom` no Rust value lives in the page at
    /// `gfn` nor in any page this turns into a hole, and that a page Xen
    /// writes is accessed afterwards only as memory Xen shares (with atomic
    /// or volatile accesses). For another domain, the caller takes
    /// responsibility for that domain's memory.
    unsafe fn add_to_physmap(
        &self,
        dom: DomId,
        space: MapSpace,
        idx: u64,
        gfn: Gfn,
    ) -> Result<(), Self::Error> {
        let mut arg = xen_sys::xen_add_to_physmap::new_zeroed();
        arg.domid = dom.0;
        arg.space = space.0;
        arg.idx = idx;
        arg.gpfn = gfn.0;
        // SAFETY: XENMEM_add_to_physmap takes an `xen_add_to_physmap_t`
        // (memory.h): IN `domid`, `size` (0: only used by gmfn_range), `space`,
        // `idx`, `gpfn`; Xen writes the structure back only to record progress
        // of a gmfn_range mapping, so it is passed read-write. No pointer. The
        // effect on `gfn` is the caller's obligation (`# Safety`).
        unsafe {
            with_inout(
                self,
                xen_sys::__HYPERVISOR_memory_op,
                xen_sys::XENMEM_add_to_physmap,
                &mut arg,
            )?
        };
        Ok(())
    }
}

impl<H: XenHypercall + ?Sized> MemoryOps for H {}
