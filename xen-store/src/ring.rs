//! The guest's transport: the xenstore page (`struct xenstore_domain_interface`) shared with the
//! daemon, over `xen-shared`'s byte ring (requests in `req`, replies and watch events in `rsp`).
//!
//! The page and its event channel come from the PV `start_info` (`store_mfn`, `store_evtchn`)
//! or the HVM parameters `HVM_PARAM_STORE_PFN` (1) and `HVM_PARAM_STORE_EVTCHN` (2). The daemon
//! is untrusted: every index is read once and validated by the ring, and impossible indices are
//! [`ProtocolError::RingIndices`](crate::ProtocolError::RingIndices).

use xen_shared::{Consumer, LayoutError, Producer, RingError, RingLayout, RingMemory};

/// The xenstore event channel: how the guest tells the daemon it moved the ring, and waits
/// for the daemon to move it.
pub trait Doorbell {
    /// Notifies the daemon (`EVTCHNOP_send` on the store port).
    fn notify(&mut self);
    /// Returns when the daemon may have moved the ring (its event, or at once): the caller
    /// looks at the ring again, so a spurious return is harmless; sleeping through an event
    /// that already came is the bug to avoid (a lost wake-up). An error (a deadline passed)
    /// fails the read or write waiting for the daemon with that kind.
    fn wait(&mut self) -> Result<(), embedded_io::ErrorKind>;
}

/// A byte stream over the shared xenstore page, for [`Client`](crate::Client).
#[derive(Debug)]
pub struct RingTransport<M, D> {
    req: Producer<M>,
    rsp: Consumer<M>,
    doorbell: D,
}

impl<M: RingMemory + Clone, D: Doorbell> RingTransport<M, D> {
    /// Speaks over the xenstore page `page`, signalling the daemon with `doorbell`.
    pub fn new(page: M, doorbell: D) -> Result<Self, LayoutError> {
        Ok(Self {
            req: Producer::new(page.clone(), RingLayout::XENSTORE_REQ)?,
            rsp: Consumer::new(page, RingLayout::XENSTORE_RSP)?,
            doorbell,
        })
    }

    /// The doorbell.
    pub fn doorbell(&mut self) -> &mut D {
        &mut self.doorbell
    }
}

/// The ring transport failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingTransportError {
    /// The daemon's indices are impossible.
    #[error("xenstore ring: {0}")]
    Ring(RingError),
    /// The doorbell gave up waiting for the daemon.
    #[error("waiting for xenstored: {0:?}")]
    Wait(embedded_io::ErrorKind),
}

impl embedded_io::Error for RingTransportError {
    fn kind(&self) -> embedded_io::ErrorKind {
        match self {
            Self::Ring(_) => embedded_io::ErrorKind::InvalidData,
            Self::Wait(kind) => *kind,
        }
    }
}

impl<M, D> embedded_io::ErrorType for RingTransport<M, D> {
    type Error = RingTransportError;
}

impl<M: RingMemory, D: Doorbell> embedded_io::Read for RingTransport<M, D> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, RingTransportError> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let n = self.rsp.read(buf).map_err(RingTransportError::Ring)?;
            if n > 0 {
                // Space was freed: the daemon may have been waiting for it.
                self.doorbell.notify();
                return Ok(n);
            }
            self.doorbell.wait().map_err(RingTransportError::Wait)?;
        }
    }
}

impl<M: RingMemory, D: Doorbell> embedded_io::Write for RingTransport<M, D> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, RingTransportError> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let n = self.req.write(buf).map_err(RingTransportError::Ring)?;
            if n > 0 {
                self.doorbell.notify();
                return Ok(n);
            }
            self.doorbell.wait().map_err(RingTransportError::Wait)?;
        }
    }

    fn flush(&mut self) -> Result<(), RingTransportError> {
        Ok(())
    }
}
