//! The domU platform of auto-translated guests (x86_64 PVH and Arm): rings from
//! HVM params, the grant table mapped with `XENMEM_add_to_physmap`, and an
//! identity map (virtual = guest physical) set up by the entry code.

use xen_hypercall::prelude::*;
use xen_hypercall::{Error, Gfn, MapSpace};

use super::{DomuError, Platform, RingPage};
use crate::shared_info::SharedInfo;

/// A PVH or Arm domU.
#[derive(Debug)]
pub(crate) struct Translated<H> {
    /// The backend.
    pub(crate) h: H,
    /// Maps the shared info page (the architecture's own function).
    pub(crate) map_shared_info: fn(&H) -> Result<SharedInfo, Error>,
    /// A page of ours that Rust only reaches through raw pointers, whose frame
    /// the grant table frame replaces.
    pub(crate) grant_slot: *mut u8,
    /// The end of the identity map.
    pub(crate) mapped_end: u64,
    /// The kernel command line (empty where the platform does not read one).
    pub(crate) cmdline: &'static [u8],
}

impl<H: XenHypercall<Error = Error> + Copy> Translated<H> {
    /// The ring whose frame and port are HVM params `pfn` and `port`.
    fn ring(&self, pfn: HvmParam, port: HvmParam) -> Result<RingPage, DomuError> {
        let frame = self.h.hvm_get_param(DomId::SELF, pfn)?;
        let port = self.h.hvm_get_param(DomId::SELF, port)?;
        let address = frame
            .checked_mul(4096)
            .filter(|&address| address != 0 && address < self.mapped_end)
            .ok_or(DomuError::Unexpected("ring frame outside the identity map"))?;
        let port = u32::try_from(port).map_err(|_| DomuError::Unexpected("ring port"))?;
        Ok(RingPage {
            page: address as *mut u8,
            port: Port::new(port),
        })
    }
}

impl<H: XenHypercall<Error = Error> + Copy> Platform for Translated<H> {
    type Hypercall = H;

    fn hypercall(&self) -> H {
        self.h
    }

    fn cmdline(&self) -> &[u8] {
        self.cmdline
    }

    fn shared_info(&self) -> Result<SharedInfo, Error> {
        (self.map_shared_info)(&self.h)
    }

    fn console(&self) -> Result<RingPage, DomuError> {
        self.ring(HvmParam::CONSOLE_PFN, HvmParam::CONSOLE_EVTCHN)
    }

    fn store(&self) -> Result<RingPage, DomuError> {
        self.ring(HvmParam::STORE_PFN, HvmParam::STORE_EVTCHN)
    }

    fn map_grant_table(&self) -> Result<*mut u8, DomuError> {
        let gfn = Gfn(self.grant_slot as u64 >> 12);
        // SAFETY: the slot is a page-aligned page of ours that Rust only touches
        // through raw pointers (`grant_slot`), so replacing its frame with grant
        // table frame 0 (XENMAPSPACE_grant_table, index 0) breaks no Rust value;
        // identity map: its gfn is its address >> 12.
        unsafe {
            self.h
                .add_to_physmap(DomId::SELF, MapSpace::GRANT_TABLE, 0, gfn)
        }?;
        Ok(self.grant_slot)
    }

    fn frame_of(&self, page: *const u8) -> Result<u32, DomuError> {
        u32::try_from(page as u64 >> 12).map_err(|_| DomuError::Unexpected("frame above 2^32"))
    }

    // Xen saves and restores x86 guests only: on Arm, libxenguest's save and restore are stubs
    // failing with ENOSYS (xg_nomigrate.c).
    #[cfg(target_arch = "x86_64")]
    fn can_suspend(&self) -> bool {
        true
    }

    #[cfg(target_arch = "x86_64")]
    fn suspend(&self) -> Result<xen_hypercall::sched::SuspendOutcome, DomuError> {
        // After a checkpoint, xc_domain_resume sets the result to 1 ("cancelled") only for an
        // HVM guest whose callback is set (`modify_returncode`, xg_resume.c): without it a
        // checkpoint would look like a resume in a new domain.
        // SAFETY: a vector callback lets Xen raise CALLBACK_VECTOR in the local APIC when an
        // event is pending. It is delivered only while RFLAGS.IF is set, which this domU never
        // sets (PVH enters with IF clear and the domU runs no `sti`), so no interrupt is ever
        // taken; no memory is handed to Xen.
        unsafe {
            self.h
                .hvm_set_param(DomId::SELF, HvmParam::CALLBACK_IRQ, CALLBACK_VECTOR)
        }?;
        // SAFETY: PVH has no start_info frame to pass (0, ignored). The pages a restore changes
        // (shared info, grant table frame, rings) are reached only through raw pointers and
        // atomics, and after `Resumed` the caller maps and finds them again (`Platform`'s
        // methods) before using them; a checkpoint changes nothing.
        Ok(unsafe { self.h.suspend(0) }?)
    }
}

/// `HVM_PARAM_CALLBACK_IRQ` as a vector (`HVMIRQ_callback_vector`, 2, in bits 56-63, hvm/params.h),
/// and a vector no exception uses.
#[cfg(target_arch = "x86_64")]
const CALLBACK_VECTOR: u64 = (2 << 56) | 0xf3;
