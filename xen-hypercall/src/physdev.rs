//! `physdev_op`: physical device and I/O privileges (`public/physdev.h`).

use zerocopy::FromZeros;

use crate::XenHypercall;
use crate::call::with_in;

/// `physdev_op` sub-ops, on every [`XenHypercall`] backend.
pub trait PhysdevOps: XenHypercall {
    /// `PHYSDEVOP_set_iopl`: sets the I/O privilege level (0-3) of this PV
    /// vCPU. Xen refuses a level above 3 with `XEN_EINVAL`; HVM/PVH guests and
    /// Arm do not have the sub-op (`XEN_ENOSYS`).
    fn set_iopl(&self, iopl: u32) -> Result<(), Self::Error> {
        let mut arg = xen_sys::physdev_set_iopl::new_zeroed();
        arg.iopl = iopl;
        // SAFETY: PHYSDEVOP_set_iopl takes an IN `physdev_set_iopl_t`
        // (physdev.h: `iopl`), read only. No pointer. A PV guest's IOPL
        // controls port I/O from its own kernel, not memory.
        unsafe {
            with_in(
                self,
                xen_sys::__HYPERVISOR_physdev_op,
                xen_sys::PHYSDEVOP_set_iopl,
                &arg,
            )?
        };
        Ok(())
    }
}

impl<H: XenHypercall + ?Sized> PhysdevOps for H {}
