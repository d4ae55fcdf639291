//! How long a caller lets the bus wait for the peer.

/// Decides when a wait for the peer gives up: asked each time the peer's state was looked at
/// and is not yet the one waited for.
///
/// This crate has no clock. The blocking happens in the xenstore transport (which may have a
/// deadline of its own: the guest ring's doorbell does); a `Deadline` is asked between wake-ups.
/// A closure `FnMut() -> bool` (returning whether the deadline passed) is one, so is
/// [`Attempts`].
pub trait Deadline {
    /// Whether to give up now.
    fn expired(&mut self) -> bool;
}

impl<F: FnMut() -> bool> Deadline for F {
    fn expired(&mut self) -> bool {
        self()
    }
}

/// Gives up after looking at the peer this many times more (a bound for a caller without a
/// clock: every watch event counts, spurious ones too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts(pub u32);

impl Deadline for Attempts {
    fn expired(&mut self) -> bool {
        match self.0.checked_sub(1) {
            Some(left) => {
                self.0 = left;
                false
            }
            None => true,
        }
    }
}

/// Never gives up (the transport's own deadline, if any, still applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Forever;

impl Deadline for Forever {
    fn expired(&mut self) -> bool {
        false
    }
}
