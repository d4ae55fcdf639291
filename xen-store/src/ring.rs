//! The guest's transport: the xenstore page (`struct xenstore_domain_interface`) shared with the
//! daemon, over `xen-shared`'s byte ring (requests in `req`, replies and watch events in `rsp`).
//!
//! The page and its event channel come from the PV `start_info` (`store_mfn`, `store_evtchn`)
//! or the HVM parameters `HVM_PARAM_STORE_PFN` (1) and `HVM_PARAM_STORE_EVTCHN` (2). The daemon
//! is untrusted: every index is read once and validated by the ring, and impossible indices are
//! [`ProtocolError::RingIndices`](crate::ProtocolError::RingIndices).
//!
//! Writing never waits on reading: while the request ring is full the transport takes the
//! replies waiting in the response ring (keeping them for [`Read`](embedded_io::Read)), since
//! xenstored stops reading an unprivileged domain's requests while 20 of its replies wait for
//! room there (`domain_can_read`, `quota_req_outstanding`).

use alloc::collections::VecDeque;
use core::mem::offset_of;
use core::sync::atomic::Ordering;

use xen_shared::{Consumer, LayoutError, Producer, RingError, RingLayout, RingMemory};
use xen_sys::{XENSTORE_CONNECTED, XENSTORE_ERROR_NONE, xenstore_domain_interface};

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
    /// Replies taken off the ring while waiting for room to write, not yet read.
    early: VecDeque<u8>,
}

impl<M: RingMemory + Clone, D: Doorbell> RingTransport<M, D> {
    /// Speaks over the xenstore page `page`, signalling the daemon with `doorbell`.
    ///
    /// # Errors
    ///
    /// [`LayoutError`] if `page` is shorter than the xenstore interface page's rings and indices.
    pub fn new(page: M, doorbell: D) -> Result<Self, LayoutError> {
        Ok(Self {
            req: Producer::new(page.clone(), RingLayout::XENSTORE_REQ)?,
            rsp: Consumer::new(page, RingLayout::XENSTORE_RSP)?,
            doorbell,
            early: VecDeque::new(),
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
    /// The daemon gave up on the ring: the page's `error` field holds this
    /// `XENSTORE_ERROR_*` code (1: communication, 2: ring index, 3: protocol).
    #[error("xenstored reported error {0} on the ring")]
    Daemon(u32),
    /// The page's `connection` field is not `XENSTORE_CONNECTED`: the ring is being reset,
    /// and what was in flight is lost.
    #[error("the xenstore ring is being reconnected")]
    Reconnecting,
}

impl embedded_io::Error for RingTransportError {
    fn kind(&self) -> embedded_io::ErrorKind {
        match self {
            Self::Ring(_) => embedded_io::ErrorKind::InvalidData,
            Self::Wait(kind) => *kind,
            Self::Daemon(_) => embedded_io::ErrorKind::ConnectionAborted,
            Self::Reconnecting => embedded_io::ErrorKind::ConnectionReset,
        }
    }
}

impl<M, D> embedded_io::ErrorType for RingTransport<M, D> {
    type Error = RingTransportError;
}

impl<M: RingMemory, D: Doorbell> RingTransport<M, D> {
    /// Takes every reply waiting in the response ring into `early`; whether there was any.
    fn take_early(&mut self) -> Result<bool, RingTransportError> {
        let mut chunk = [0u8; 256];
        let mut any = false;
        loop {
            let n = self
                .rsp
                .read(&mut chunk)
                .map_err(RingTransportError::Ring)?;
            if n == 0 {
                break;
            }
            self.early.extend(&chunk[..n]);
            any = true;
        }
        if any {
            // Space was freed: the daemon may have been waiting for it.
            self.doorbell.notify();
        }
        Ok(any)
    }

    /// Waits for the daemon, unless the page says it will not come (`error`, `connection`).
    fn wait(&mut self) -> Result<(), RingTransportError> {
        let page = self.rsp.memory();
        let field = |offset| page.load_index(offset, Ordering::Acquire);
        // A page too small for the fields (a test's) has none to report.
        if let Ok(error) = field(offset_of!(xenstore_domain_interface, error)) {
            if error != XENSTORE_ERROR_NONE {
                return Err(RingTransportError::Daemon(error));
            }
        }
        if let Ok(connection) = field(offset_of!(xenstore_domain_interface, connection)) {
            if connection != XENSTORE_CONNECTED {
                return Err(RingTransportError::Reconnecting);
            }
        }
        self.doorbell.wait().map_err(RingTransportError::Wait)
    }
}

impl<M: RingMemory, D: Doorbell> embedded_io::Read for RingTransport<M, D> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, RingTransportError> {
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.early.is_empty() {
            let n = buf.len().min(self.early.len());
            for (slot, byte) in buf.iter_mut().zip(self.early.drain(..n)) {
                *slot = byte;
            }
            return Ok(n);
        }
        loop {
            let n = self.rsp.read(buf).map_err(RingTransportError::Ring)?;
            if n > 0 {
                // Space was freed: the daemon may have been waiting for it.
                self.doorbell.notify();
                return Ok(n);
            }
            self.wait()?;
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
            // No room: the daemon may wait for us to take replies before it reads more.
            if !self.take_early()? {
                self.wait()?;
            }
        }
    }

    fn flush(&mut self) -> Result<(), RingTransportError> {
        Ok(())
    }
}
