//! Where a guest's console ring is: its frame and its event channel.

use xen_hypercall::prelude::*;

/// The console ring's frame and event channel, as the toolstack set them up.
///
/// The frame still has to be mapped (a freestanding guest: its own page tables; the frame is
/// a guest frame on PVH/HVM/Arm, a machine frame on PV) before a
/// [`SharedMem`](xen_shared::SharedMem) of it can be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLocation {
    /// The ring page's frame number.
    pub frame: u64,
    /// The event channel to the backend.
    pub port: Port,
}

impl RingLocation {
    /// From `HVM_PARAM_CONSOLE_PFN` (17) and `HVM_PARAM_CONSOLE_EVTCHN` (18): PVH, HVM and Arm
    /// guests. `None` when the toolstack gave this domain no console ring (both are 0).
    pub fn from_hvm_params<H: HvmOps + ?Sized>(xen: &H) -> Result<Option<Self>, H::Error> {
        let frame = xen.hvm_get_param(DomId::SELF, HvmParam::CONSOLE_PFN)?;
        let port = xen.hvm_get_param(DomId::SELF, HvmParam::CONSOLE_EVTCHN)?;
        Ok(Self::checked(frame, port))
    }

    /// From a PV guest's `start_info.console.domU` (`mfn`, `evtchn`). Only a PV domU's start
    /// info has it (dom0's holds VGA information there instead). `None` when both are 0.
    pub fn from_pv_start_info(mfn: u64, evtchn: u32) -> Option<Self> {
        Self::checked(mfn, u64::from(evtchn))
    }

    fn checked(frame: u64, port: u64) -> Option<Self> {
        let port = u32::try_from(port).ok()?;
        (frame != 0 || port != 0).then_some(Self {
            frame,
            port: Port(port),
        })
    }
}
