//! Where a guest's console ring is: its frame and its event channel.

use xen_hypercall::prelude::*;

/// The console ring's frame and event channel, as the toolstack set them up.
///
/// The frame still has to be mapped (a freestanding guest: its own page tables; the frame is
/// a guest frame on PVH/HVM/Arm, a machine frame on PV) before a
/// [`SharedMem`](xen_shared::SharedMem) of it can be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLocation {
    /// The ring page's frame number (never 0).
    pub frame: u64,
    /// The event channel to the backend (never port 0, which Xen never binds).
    pub port: Port,
}

/// A console location with one part missing or impossible: a frame 0 or a port 0 (Linux's
/// hvc_xen refuses either), or a port past 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("impossible console ring location: frame {frame:#x}, event channel {port}")]
#[non_exhaustive]
pub struct BadLocation {
    /// The frame number as given.
    pub frame: u64,
    /// The port as given.
    pub port: u64,
}

/// Why [`RingLocation::from_hvm_params`] found no ring.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocationError<E> {
    /// Reading a parameter failed.
    #[error(transparent)]
    Xen(E),
    /// The parameters name no possible ring.
    #[error(transparent)]
    Bad(#[from] BadLocation),
}

impl RingLocation {
    /// From `HVM_PARAM_CONSOLE_PFN` (17) and `HVM_PARAM_CONSOLE_EVTCHN` (18): PVH, HVM and Arm
    /// guests. `None` when the toolstack gave this domain no console ring (both are 0); one of
    /// them 0 is [`LocationError::Bad`].
    ///
    /// # Errors
    ///
    /// [`LocationError::Xen`] if reading a parameter fails, [`LocationError::Bad`] if one of them
    /// is 0 or they name no possible ring.
    pub fn from_hvm_params<H: HvmOps + ?Sized>(
        xen: &H,
    ) -> Result<Option<Self>, LocationError<H::Error>> {
        let frame = xen
            .hvm_get_param(DomId::SELF, HvmParam::CONSOLE_PFN)
            .map_err(LocationError::Xen)?;
        let port = xen
            .hvm_get_param(DomId::SELF, HvmParam::CONSOLE_EVTCHN)
            .map_err(LocationError::Xen)?;
        Ok(Self::checked(frame, port)?)
    }

    /// From a PV guest's `start_info.console.domU` (`mfn`, `evtchn`). Only a PV domU's start
    /// info has it (dom0's holds VGA information there instead). `None` when both are 0; one
    /// of them 0 is an error.
    ///
    /// # Errors
    ///
    /// [`BadLocation`] if one of them is 0 or they name no possible ring.
    pub fn from_pv_start_info(mfn: u64, evtchn: u32) -> Result<Option<Self>, BadLocation> {
        Self::checked(mfn, u64::from(evtchn))
    }

    fn checked(frame: u64, port: u64) -> Result<Option<Self>, BadLocation> {
        if frame == 0 && port == 0 {
            return Ok(None);
        }
        match u32::try_from(port) {
            Ok(p) if p != 0 && frame != 0 => Ok(Some(Self {
                frame,
                port: Port(p),
            })),
            _ => Err(BadLocation { frame, port }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_needs_both_a_frame_and_a_port() {
        assert_eq!(RingLocation::from_pv_start_info(0, 0), Ok(None));
        assert_eq!(
            RingLocation::from_pv_start_info(0x1234, 3),
            Ok(Some(RingLocation {
                frame: 0x1234,
                port: Port(3)
            }))
        );
        assert_eq!(
            RingLocation::from_pv_start_info(0x1234, 0),
            Err(BadLocation {
                frame: 0x1234,
                port: 0
            })
        );
        assert_eq!(
            RingLocation::from_pv_start_info(0, 3),
            Err(BadLocation { frame: 0, port: 3 })
        );
        assert!(RingLocation::checked(1, 1 << 32).is_err());
    }
}
