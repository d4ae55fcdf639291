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
    /// `XEN_ESRCH`/`XEN_EPERM` a domain the caller may not change.
    ///
    /// # Safety
    ///
    /// Whatever memory was at `gfn` is replaced by the mapped frame, and the
    /// mapped frame is shared with Xen (the shared info page is written by Xen
    /// at any time). The caller guarantees that, in `dom`, no Rust value lives
    /// in the page at `gfn` and that the page is accessed afterwards only as
    /// memory Xen shares (with atomic or volatile accesses).
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
