//! `hvm_op`: HVM parameters (`public/hvm/hvm_op.h`, `public/hvm/params.h`).

use zerocopy::FromZeros;

use crate::call::{with_in, with_inout};
use crate::{DomId, HvmParam, XenHypercall};

/// `hvm_op` sub-ops, on every [`XenHypercall`] backend.
///
/// Errors, as Xen reports them: `XEN_EINVAL` for an index at or past
/// [`HvmParam::COUNT`] or a domain that is not HVM/PVH, `XEN_ESRCH` for a
/// domain that does not exist, `XEN_EPERM` when the caller may not access it.
pub trait HvmOps: XenHypercall {
    /// `HVMOP_get_param`: the value of parameter `param` of domain `dom`.
    fn hvm_get_param(&self, dom: DomId, param: HvmParam) -> Result<u64, Self::Error> {
        let mut arg = xen_sys::xen_hvm_param::new_zeroed();
        arg.domid = dom.0;
        arg.index = param.0;
        // SAFETY: HVMOP_get_param takes an `xen_hvm_param_t` (hvm_op.h): IN
        // `domid`, `index`; OUT `value`. No pointer.
        unsafe {
            with_inout(
                self,
                xen_sys::__HYPERVISOR_hvm_op,
                xen_sys::HVMOP_get_param,
                &mut arg,
            )?
        };
        Ok(arg.value)
    }

    /// `HVMOP_set_param`: sets parameter `param` of domain `dom` to `value`.
    ///
    /// # Safety
    ///
    /// Some parameters give Xen a guest frame or a way to write guest memory:
    /// the ring and page frames (`STORE_PFN`, `CONSOLE_PFN`, `IOREQ_PFN`,
    /// `IDENT_PT`, `VM86_TSS`, the `*_RING_PFN`s, ...), the callback that
    /// injects interrupts (`CALLBACK_IRQ`). The caller guarantees that what
    /// `value` lets Xen or another domain do to `dom`'s memory and execution
    /// breaks no Rust invariant of any program in it (for the calling domain:
    /// a frame handed over is not used by Rust code as ordinary memory).
    unsafe fn hvm_set_param(
        &self,
        dom: DomId,
        param: HvmParam,
        value: u64,
    ) -> Result<(), Self::Error> {
        let mut arg = xen_sys::xen_hvm_param::new_zeroed();
        arg.domid = dom.0;
        arg.index = param.0;
        arg.value = value;
        // SAFETY: HVMOP_set_param takes an IN `xen_hvm_param_t` (hvm_op.h:
        // `domid`, `index`, `value`), read only. No pointer. What the new value
        // lets Xen do is the caller's obligation (`# Safety`).
        unsafe {
            with_in(
                self,
                xen_sys::__HYPERVISOR_hvm_op,
                xen_sys::HVMOP_set_param,
                &arg,
            )?
        };
        Ok(())
    }
}

impl<H: XenHypercall + ?Sized> HvmOps for H {}
