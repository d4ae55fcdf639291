//! The frontend's errors.

use xen_shared::ReqRingError;

/// Why one request failed (the backend answered it, or could not be trusted with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    /// `BLKIF_RSP_ERROR`: the backend's I/O failed.
    #[error("the backend failed the request (BLKIF_RSP_ERROR)")]
    Failed,
    /// `BLKIF_RSP_EOPNOTSUPP`: the backend does not support the operation.
    #[error("the backend does not support the operation (BLKIF_RSP_EOPNOTSUPP)")]
    NotSupported,
    /// A status `public/io/blkif.h` does not define (a failure).
    #[error("the backend answered with unknown status {0}")]
    BadStatus(i16),
}

/// The backend broke the protocol: the frontend stops (every later call fails with this) and
/// must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The ring's indices are impossible (an overflowed `rsp_prod`, ...).
    #[error("ring: {0}")]
    Ring(#[from] ReqRingError),
    /// A response's id names no request in flight (never issued, or answered already).
    #[error("response for id {0}, which is not in flight")]
    UnknownId(u64),
    /// A response's operation is not its request's.
    #[error("response for id {id} has operation {got}, its request {expected}")]
    WrongOperation {
        /// The response's id.
        id: u64,
        /// The request's operation.
        expected: u8,
        /// The response's.
        got: u8,
    },
}

/// A failed frontend operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Connecting or closing through xenstore failed.
    #[error("xenbus: {0}")]
    Bus(#[from] xen_bus::Error),
    /// An event channel operation failed.
    #[error("event channel: {0}")]
    Event(#[from] xen_evtchn::Error),
    /// Granting a page failed (no free reference).
    #[error("grant: {0}")]
    Grant(#[from] xen_grant::Error),
    /// The backend published a geometry this frontend cannot use.
    #[error("backend's {key} is {value}: {why}")]
    BadGeometry {
        /// The key.
        key: &'static str,
        /// Its value.
        value: u64,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The offset or length is not a multiple of the disk's sector size, or the length is 0.
    #[error("{len} bytes at sector {sector} are not aligned to {sector_size}-byte sectors")]
    Unaligned {
        /// The first sector (512-byte units).
        sector: u64,
        /// The length in bytes.
        len: usize,
        /// The disk's logical sector size.
        sector_size: u32,
    },
    /// The request reaches past the end of the disk.
    #[error("{len} bytes at sector {sector} reach past the disk's {sectors} sectors")]
    OutOfRange {
        /// The first sector (512-byte units).
        sector: u64,
        /// The length in bytes.
        len: usize,
        /// The disk's size in 512-byte sectors.
        sectors: u64,
    },
    /// One request cannot carry that many bytes (see [`Frontend::max_request_len`](crate::Frontend::max_request_len)).
    #[error("{len} bytes exceed one request's {max}")]
    TooLong {
        /// The length asked for.
        len: usize,
        /// The most one request carries.
        max: usize,
    },
    /// A write or discard to a read-only disk.
    #[error("the disk is read-only")]
    ReadOnly,
    /// The backend does not offer the operation (`feature-flush-cache`, `feature-discard`).
    #[error("the backend does not offer {0}")]
    Unsupported(&'static str),
    /// No ring slot, id or data page is free now: take completions first.
    #[error("no free ring slot or data page: wait for completions")]
    Busy,
    /// A blocking call needs every earlier request completed first.
    #[error("requests are in flight: poll them out first")]
    RequestsInFlight,
    /// The request failed.
    #[error("request failed: {0}")]
    Io(#[from] IoError),
    /// The backend broke the protocol; the frontend is stopped.
    #[error("backend broke the protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The caller's sleep gave up (its deadline passed); requests may still be in flight.
    #[error("timed out waiting for the backend")]
    TimedOut,
}

/// [`Frontend::connect`](crate::Frontend::connect) failed: why, and the pages it was given
/// back (the ring page and the data pages, in no particular order), but for any the backend
/// still mapped when the deadline passed: those stay granted, leaked (counted by the grant
/// table).
pub struct ConnectError<P> {
    /// Why.
    pub error: Error,
    /// The pages given back.
    pub pages: alloc::vec::Vec<P>,
}

impl<P> core::fmt::Debug for ConnectError<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ConnectError")
            .field("error", &self.error)
            .field("pages", &self.pages.len())
            .finish()
    }
}

impl<P> core::fmt::Display for ConnectError<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.error.fmt(f)
    }
}

impl<P> core::error::Error for ConnectError<P> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        self.error.source()
    }
}

impl<P> From<ConnectError<P>> for Error {
    fn from(error: ConnectError<P>) -> Self {
        error.error
    }
}
