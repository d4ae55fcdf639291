//! [`BoundPort`]: a port that is unbound when its handle is dropped.

use core::fmt;
use core::ops::Deref;

use xen_hypercall::Port;

use crate::{AsyncEventChannel, Error, EventChannel, WaitPort};

/// A bound port of an event channel `C` (reached through `R`: `&C`, `Arc<C>`,
/// ...), unbound when dropped.
///
/// Dropping unbinds synchronously (no runtime needed) and ignores a failure;
/// [`close`](Self::close) unbinds and returns the error. [`into_raw`](Self::into_raw)
/// keeps the port bound past the handle; [`from_raw`](Self::from_raw) adopts it again.
pub struct BoundPort<R>
where
    R: Deref,
    R::Target: EventChannel,
{
    channel: R,
    port: Port,
    /// Whether dropping unbinds: false once `into_raw` or `close` took the port.
    owned: bool,
}

impl<R> BoundPort<R>
where
    R: Deref,
    R::Target: EventChannel,
{
    /// Adopts `port`, bound through `channel`: dropping the result unbinds it.
    pub fn from_raw(channel: R, port: Port) -> Self {
        Self {
            channel,
            port,
            owned: true,
        }
    }

    /// The local port number.
    pub fn port(&self) -> Port {
        self.port
    }

    /// The event channel this port was bound through.
    pub fn channel(&self) -> &R::Target {
        &self.channel
    }

    /// Signals the other end.
    ///
    /// # Errors
    ///
    /// As [`EventChannel::notify`].
    pub fn notify(&self) -> Result<(), Error> {
        self.channel().notify(self.port)
    }

    /// Re-arms the port after [`EventChannel::take_pending`] reported it.
    ///
    /// # Errors
    ///
    /// As [`EventChannel::unmask`].
    pub fn unmask(&self) -> Result<(), Error> {
        self.channel().unmask(self.port)
    }

    /// Waits for the next delivery on this port (cancellation-safe).
    pub fn wait(&self) -> WaitPort<'_, R::Target>
    where
        R::Target: AsyncEventChannel,
    {
        self.channel().wait_port(self.port)
    }

    /// Unbinds the port, returning the error dropping would ignore.
    ///
    /// # Errors
    ///
    /// As [`EventChannel::unbind_raw`]; the port then stays bound to the channel.
    pub fn close(mut self) -> Result<(), Error> {
        self.owned = false;
        self.channel.unbind_raw(self.port)
    }

    /// Gives up the handle without unbinding; the port stays bound until
    /// [`EventChannel::unbind_raw`] (or the channel's end).
    pub fn into_raw(mut self) -> Port {
        self.owned = false;
        self.port
    }
}

impl<R> Drop for BoundPort<R>
where
    R: Deref,
    R::Target: EventChannel,
{
    fn drop(&mut self) {
        if self.owned {
            // Drop cannot report: `close` is the way to see the error.
            let _ = self.channel.unbind_raw(self.port);
        }
    }
}

impl<R> fmt::Debug for BoundPort<R>
where
    R: Deref,
    R::Target: EventChannel,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundPort")
            .field("port", &self.port)
            .finish()
    }
}
