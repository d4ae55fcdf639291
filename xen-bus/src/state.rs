//! `enum xenbus_state` (`public/io/xenbus.h`): where each end of a device is in its
//! negotiation, as the decimal text of its `state` node.

use core::fmt;

/// The state of one end of a PV device, written by that end in its `state` node.
///
/// The usual path: the frontend `Initialising`, the backend `InitWait` (its features are
/// published), the frontend `Initialised` (its ring and event channel are published), the
/// backend `Connected`, the frontend `Connected`. Either end closes with `Closing`, then
/// `Closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum XenbusState {
    /// `XenbusStateUnknown` (0): also what a missing `state` node reads as (Linux's
    /// `xenbus_read_driver_state`).
    Unknown = 0,
    /// `XenbusStateInitialising` (1).
    Initialising = 1,
    /// `XenbusStateInitWait` (2): finished early initialisation, waiting for the peer's
    /// information (a backend: its features are published).
    InitWait = 2,
    /// `XenbusStateInitialised` (3): the peer's information is in (a frontend: its ring
    /// references and event channel are published).
    Initialised = 3,
    /// `XenbusStateConnected` (4).
    Connected = 4,
    /// `XenbusStateClosing` (5): the device is being shut down.
    Closing = 5,
    /// `XenbusStateClosed` (6).
    Closed = 6,
    /// `XenbusStateReconfiguring` (7).
    Reconfiguring = 7,
    /// `XenbusStateReconfigured` (8).
    Reconfigured = 8,
}

/// A `state` node holding no state `public/io/xenbus.h` defines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a xenbus state")]
pub struct UnknownState {
    /// The node's value (lossily as UTF-8, at most 32 bytes).
    pub value: alloc::string::String,
}

impl XenbusState {
    /// Every state, by number.
    pub const ALL: [Self; 9] = [
        Self::Unknown,
        Self::Initialising,
        Self::InitWait,
        Self::Initialised,
        Self::Connected,
        Self::Closing,
        Self::Closed,
        Self::Reconfiguring,
        Self::Reconfigured,
    ];

    /// The state's number.
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// Parses a `state` node's value: decimal digits, as Linux's `xenbus_scanf("%d")` reads
    /// them (surrounding whitespace allowed).
    ///
    /// # Errors
    ///
    /// [`UnknownState`] if `value` is not a decimal number naming a state.
    pub fn parse(value: &[u8]) -> Result<Self, UnknownState> {
        core::str::from_utf8(value)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
            .and_then(|n| Self::try_from(n).ok())
            .ok_or_else(|| UnknownState {
                value: alloc::string::String::from_utf8_lossy(&value[..value.len().min(32)])
                    .into_owned(),
            })
    }

    /// Whether the end is shutting down or gone (`Closing`, `Closed`, or `Unknown`: no `state`
    /// node).
    pub const fn is_closing(self) -> bool {
        matches!(self, Self::Closing | Self::Closed | Self::Unknown)
    }
}

impl TryFrom<u32> for XenbusState {
    type Error = u32;

    /// The state numbered `n`; `n` itself if there is none.
    fn try_from(n: u32) -> Result<Self, u32> {
        Self::ALL.get(n as usize).copied().ok_or(n)
    }
}

impl fmt::Display for XenbusState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_number_and_text() {
        for (n, state) in XenbusState::ALL.into_iter().enumerate() {
            assert_eq!(state.as_u32() as usize, n);
            assert_eq!(XenbusState::try_from(n as u32), Ok(state));
            let text = alloc::format!("{n}");
            assert_eq!(XenbusState::parse(text.as_bytes()), Ok(state));
        }
        assert_eq!(XenbusState::parse(b" 4\n"), Ok(XenbusState::Connected));
    }

    #[test]
    fn values_that_are_no_state_are_typed_errors() {
        assert_eq!(XenbusState::try_from(9), Err(9));
        for bad in [&b"9"[..], b"", b"-1", b"4x", b"\xff", b"99999999999"] {
            let error = XenbusState::parse(bad).unwrap_err();
            assert_eq!(error.value, alloc::string::String::from_utf8_lossy(bad));
        }
    }
}
