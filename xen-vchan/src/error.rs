//! The errors of the protocol core.

use xen_shared::{AccessError, RingError};

/// A failed vchan operation of the protocol core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A ring order outside 10..=20 (written by the peer, or asked for).
    #[error("ring order {0} is outside the 10..=20 vchan allows")]
    BadOrder(u16),
    /// Two ring orders that cannot share the page (both in it at one offset, or a grant list
    /// that runs into a ring in the page).
    #[error("ring orders {left} and {right} do not fit the shared page together")]
    BadOrders {
        /// The left ring's order.
        left: u16,
        /// The right ring's order.
        right: u16,
    },
    /// A ring of more bytes than vchan allows (1 MiB).
    #[error("a ring of {0} bytes is larger than vchan allows (1 MiB)")]
    TooLarge(usize),
    /// A packet larger than the ring it must fit in whole.
    #[error("a {len}-byte packet cannot fit a {ring}-byte ring")]
    PacketTooLarge {
        /// The packet's length.
        len: usize,
        /// The ring's size.
        ring: u32,
    },
    /// The memory handed in is smaller than the layout needs.
    #[error("the shared memory does not fit the channel's layout: {0}")]
    Memory(#[from] AccessError),
    /// The peer wrote a value the protocol does not allow: the channel is over, and every
    /// later operation returns this error again.
    #[error("the peer corrupted the shared page: {0}")]
    Corrupt(Corruption),
}

/// What the peer got wrong ([`Error::Corrupt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The indices claim more unconsumed bytes than the ring holds.
    #[error(transparent)]
    Indices(RingError),
    /// An index moved backwards: fewer bytes ready to read than were already seen, or more
    /// bytes unconsumed than were written.
    #[error("ring index moved backwards: {now} bytes where at least {then} were known")]
    Backwards {
        /// Which way the count was bound (bytes ready to read, or unconsumed), as last known.
        then: u32,
        /// The count read now.
        now: u32,
    },
    /// A `cli_live` / `srv_live` value other than 0, 1 or 2.
    #[error("liveness byte {0} is not 0, 1 or 2")]
    Live(u8),
}

impl From<RingError> for Error {
    fn from(e: RingError) -> Self {
        match e {
            RingError::Access(access) => Self::Memory(access),
            RingError::Backwards { then, now } => {
                Self::Corrupt(Corruption::Backwards { then, now })
            }
            corrupt => Self::Corrupt(Corruption::Indices(corrupt)),
        }
    }
}
