//! Xen's own console (`console_io`): what the console domain writes to the serial line, and the
//! serial line's input.

use core::pin::Pin;
use core::task::{Context, Poll};

use xen_hypercall::prelude::*;

use crate::channel::{AsyncWait, Wait, Wake};

/// The hypervisor console, for the console domain (dom0 by default; elsewhere Xen answers
/// `XEN_EPERM`, except that debug builds of Xen let every domain write).
///
/// Writes go through `CONSOLEIO_write` in chunks ([`fmt::Write`](core::fmt::Write), and
/// `std::io::Write` with the `std` feature). Xen keeps a console domain's writes in its log
/// ring only when booted with `console_to_ring`.
#[derive(Debug)]
pub struct HypervisorConsole<'a, H: ?Sized> {
    xen: &'a H,
}

impl<'a, H: XenHypercall + ?Sized> HypervisorConsole<'a, H> {
    /// The console reached through `xen`.
    pub fn new(xen: &'a H) -> Self {
        Self { xen }
    }

    /// Writes all of `bytes`.
    ///
    /// # Errors
    ///
    /// The hypercall's error: `XEN_EPERM` for a domain that is neither privileged nor the
    /// console domain (a Xen built with `CONFIG_VERBOSE_DEBUG` lets every domain write).
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), H::Error> {
        self.xen.console_write(bytes)
    }

    /// Console input (`CONSOLEIO_read`), woken by `virq_console`: a channel bound to
    /// `VIRQ_CONSOLE` (such as an [`EvtchnPort`](crate::EvtchnPort)), which Xen raises in the
    /// hardware domain when serial input arrives (while Xen's serial input focus is on it: from
    /// the end of boot, unless `conswitch=<c>x`; Ctrl-`<c>` three times moves it).
    pub fn input<C>(&self, virq_console: C) -> Input<'a, H, C> {
        Input {
            xen: self.xen,
            channel: virq_console,
            buf: [0; INPUT_CHUNK],
            pos: 0,
            len: 0,
        }
    }
}

impl<H: XenHypercall + ?Sized> core::fmt::Write for HypervisorConsole<'_, H> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write_all(s.as_bytes()).map_err(|_| core::fmt::Error)
    }
}

#[cfg(feature = "std")]
impl<H: XenHypercall + ?Sized> std::io::Write for HypervisorConsole<'_, H>
where
    H::Error: Send + Sync + 'static,
{
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Xen's serial input buffer holds 128 bytes (`SERIAL_RX_SIZE`): one read takes it all.
const INPUT_CHUNK: usize = 128;

/// An input failure: the hypercall's, or the channel's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError<X, E> {
    /// `CONSOLEIO_read` failed (`XEN_EPERM` outside the console domain).
    #[error("CONSOLEIO_read: {0}")]
    Xen(#[source] X),
    /// Waiting on the `VIRQ_CONSOLE` channel failed.
    #[error("VIRQ_CONSOLE channel: {0}")]
    Channel(#[source] E),
    /// The channel's deadline passed without input.
    #[error("no console input before the deadline")]
    TimedOut,
}

type InputResult<H, C> =
    Result<u8, InputError<<H as XenHypercall>::Error, <C as crate::channel::Channel>::Error>>;

/// The hypervisor console's input ([`HypervisorConsole::input`]): an iterator ([`Wait`]) and a
/// `Stream` ([`AsyncWait`]) of bytes.
#[derive(Debug)]
pub struct Input<'a, H: ?Sized, C> {
    xen: &'a H,
    channel: C,
    buf: [u8; INPUT_CHUNK],
    pos: usize,
    len: usize,
}

impl<H: XenHypercall + ?Sized, C> Input<'_, H, C> {
    /// Reads pending input into `buf` without waiting: first what the iterator or stream has
    /// already taken from Xen, so that bytes keep their order.
    ///
    /// # Errors
    ///
    /// The hypercall's error: `XEN_EPERM` outside the console domain.
    pub fn try_read(&mut self, buf: &mut [u8]) -> Result<usize, H::Error> {
        let buffered = &self.buf[self.pos..self.len];
        if buffered.is_empty() {
            return self.xen.console_read(buf);
        }
        let n = buffered.len().min(buf.len());
        buf[..n].copy_from_slice(&buffered[..n]);
        self.pos += n;
        Ok(n)
    }

    /// Refills the buffer if it is empty; `Ok(true)` when a byte is ready.
    fn refill(&mut self) -> Result<bool, H::Error> {
        if self.pos == self.len {
            let n = self.xen.console_read(&mut self.buf)?;
            (self.pos, self.len) = (0, n);
        }
        Ok(self.pos < self.len)
    }

    fn take(&mut self) -> u8 {
        self.pos += 1;
        self.buf[self.pos - 1]
    }
}

impl<H: XenHypercall + ?Sized, C: Wait> Iterator for Input<'_, H, C> {
    type Item = InputResult<H, C>;

    /// The next input byte, waiting for it.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.refill() {
                Err(e) => return Some(Err(InputError::Xen(e))),
                Ok(true) => return Some(Ok(self.take())),
                Ok(false) => {}
            }
            match self.channel.wait() {
                Err(e) => return Some(Err(InputError::Channel(e))),
                Ok(Wake::TimedOut) => return Some(Err(InputError::TimedOut)),
                Ok(Wake::Event) => {}
            }
        }
    }
}

impl<H: XenHypercall + ?Sized, C: AsyncWait + Unpin> futures_core::Stream for Input<'_, H, C> {
    type Item = InputResult<H, C>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.refill() {
                Err(e) => return Poll::Ready(Some(Err(InputError::Xen(e)))),
                Ok(true) => return Poll::Ready(Some(Ok(this.take()))),
                Ok(false) => {}
            }
            match this.channel.poll_wait(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(InputError::Channel(e)))),
                Poll::Ready(Ok(Wake::TimedOut)) => {
                    return Poll::Ready(Some(Err(InputError::TimedOut)));
                }
                Poll::Ready(Ok(Wake::Event)) => {}
            }
        }
    }
}
