//! What can go wrong on the bus.

use alloc::string::String;

use crate::XenbusState;

/// A failed xenbus operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The xenstore request failed.
    #[error("xenstore: {0}")]
    Store(#[from] xen_store::Error),
    /// A node the protocol requires is missing.
    #[error("{path} is missing")]
    Missing {
        /// The node's path.
        path: String,
    },
    /// A node's value does not parse as what the protocol says it holds.
    #[error("{path} holds `{value}`, not {expected}")]
    BadValue {
        /// The node's path.
        path: String,
        /// Its value (lossily as UTF-8, at most 64 bytes).
        value: String,
        /// What it should hold.
        expected: &'static str,
    },
    /// The caller's deadline passed while waiting for the peer.
    #[error("timed out waiting for the peer (last in state {last})")]
    TimedOut {
        /// The peer's state when the deadline passed.
        last: XenbusState,
    },
    /// The peer is shutting down (or gone) while it was expected to connect.
    #[error("the peer is {0} while connecting")]
    PeerClosing(XenbusState),
    /// Granting a page failed.
    #[error("grant: {0}")]
    Grant(#[from] xen_grant::Error),
    /// The argument is not valid (a ring of no page, or not a power of two of pages).
    #[error("invalid argument: {0}")]
    InvalidInput(&'static str),
}

/// `value`, lossily as UTF-8 and at most 64 bytes, for an error message.
pub(crate) fn shown(value: &[u8]) -> String {
    String::from_utf8_lossy(&value[..value.len().min(64)]).into_owned()
}
