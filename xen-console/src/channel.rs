//! How a console reaches its peer: notifications out, wake-ups in.
//!
//! An event channel in practice (`xen-evtchn`); anything else in tests. A wake-up means "look
//! again", never "exactly one message": events coalesce and may be spurious, and every waiter
//! re-reads the shared state after waking. A lost wake-up is the only bug.

use core::marker::PhantomData;
use core::task::{Context, Poll};

/// Why a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// An event arrived (or a spurious wake-up): re-check the shared state.
    Event,
    /// The channel's deadline passed without an event.
    TimedOut,
}

/// The error type shared by a channel's operations.
pub trait Channel {
    /// What a notification or a wait can fail with.
    type Error: core::error::Error + 'static;
}

/// Tells the peer to look at the shared state again.
pub trait Notify: Channel {
    /// Signals the peer (`EVTCHNOP_send`).
    fn notify(&mut self) -> Result<(), Self::Error>;
}

/// Blocks until the peer may have changed the shared state.
pub trait Wait: Channel {
    /// Returns after an event, a spurious wake-up, or the channel's own deadline
    /// ([`Wake::TimedOut`]).
    fn wait(&mut self) -> Result<Wake, Self::Error>;
}

/// Waits without blocking a thread.
pub trait AsyncWait: Channel {
    /// `Ready` once an event arrived since the previous `Ready` (consuming it), else registers
    /// `cx`'s waker and returns `Pending`. An event that arrives between the caller's check of
    /// the shared state and this call must still be reported: that is what keeps wake-ups from
    /// being lost.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<Result<Wake, Self::Error>>;
}

/// A channel made of two closures: `notify` and `wait`.
///
/// ```
/// use xen_console::{FnChannel, Notify, Wait, Wake};
/// let mut sent = 0;
/// let mut channel = FnChannel::new(
///     || { sent += 1; Ok::<_, core::convert::Infallible>(()) },
///     || Ok(Wake::TimedOut),
/// );
/// channel.notify().unwrap();
/// assert_eq!(channel.wait().unwrap(), Wake::TimedOut);
/// drop(channel);
/// assert_eq!(sent, 1);
/// ```
pub struct FnChannel<N, W, E> {
    notify: N,
    wait: W,
    error: PhantomData<fn() -> E>,
}

impl<N, W, E> FnChannel<N, W, E>
where
    N: FnMut() -> Result<(), E>,
    W: FnMut() -> Result<Wake, E>,
{
    /// A channel that calls `notify` to signal and `wait` to wait.
    pub fn new(notify: N, wait: W) -> Self {
        Self {
            notify,
            wait,
            error: PhantomData,
        }
    }
}

impl<N, W, E> core::fmt::Debug for FnChannel<N, W, E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FnChannel")
    }
}

impl<N, W, E: core::error::Error + 'static> Channel for FnChannel<N, W, E> {
    type Error = E;
}

impl<N, W, E> Notify for FnChannel<N, W, E>
where
    N: FnMut() -> Result<(), E>,
    E: core::error::Error + 'static,
{
    fn notify(&mut self) -> Result<(), E> {
        (self.notify)()
    }
}

impl<N, W, E> Wait for FnChannel<N, W, E>
where
    W: FnMut() -> Result<Wake, E>,
    E: core::error::Error + 'static,
{
    fn wait(&mut self) -> Result<Wake, E> {
        (self.wait)()
    }
}

impl<T: Channel + ?Sized> Channel for &mut T {
    type Error = T::Error;
}

impl<T: Notify + ?Sized> Notify for &mut T {
    fn notify(&mut self) -> Result<(), T::Error> {
        (**self).notify()
    }
}

impl<T: Wait + ?Sized> Wait for &mut T {
    fn wait(&mut self) -> Result<Wake, T::Error> {
        (**self).wait()
    }
}

impl<T: AsyncWait + ?Sized> AsyncWait for &mut T {
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<Result<Wake, T::Error>> {
        (**self).poll_wait(cx)
    }
}
