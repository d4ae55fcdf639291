//! Xen's log ring, what `xl dmesg` shows (`XEN_SYSCTL_readconsole`), read whole, incrementally,
//! or followed as it grows.

use xen_hypercall::prelude::SysctlOps;
use xen_hypercall::sysctl::{ReadConsole, SYSCTL_INTERFACE_VERSION, SYSCTL_XEN_RELEASES};
use xen_hypercall::{Errno, XenHypercall};

/// A log read that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError<E = core::convert::Infallible> {
    /// Xen answered `XEN_EACCES`, which means one of two things: it speaks another sysctl
    /// interface version (`do_sysctl` checks the version first), or its XSM policy (FLASK,
    /// whose denials are `EACCES`) does not let this domain read the console (Xen's default
    /// policy refuses an unprivileged domain with `XEN_EPERM` instead, a [`Xen`](Self::Xen)).
    #[error(
        "Xen refused readconsole (EACCES): it speaks another sysctl interface version than {speaks:#x} ({releases}), or its XSM policy denies this domain"
    )]
    Refused {
        /// The version this crate sent.
        speaks: u32,
        /// The Xen releases that speak it.
        releases: &'static str,
    },
    /// Another hypercall failure (`XEN_EPERM` outside the toolstack domain, …).
    #[error(transparent)]
    Xen(xen_hypercall::Error),
    /// Waiting on the `VIRQ_CON_RING` channel failed.
    #[error("VIRQ_CON_RING channel: {0}")]
    Channel(#[source] E),
}

impl<E> From<xen_hypercall::Error> for LogError<E> {
    fn from(e: xen_hypercall::Error) -> Self {
        match e {
            xen_hypercall::Error::Xen(Errno::EACCES) => Self::Refused {
                speaks: SYSCTL_INTERFACE_VERSION,
                releases: SYSCTL_XEN_RELEASES,
            },
            e => Self::Xen(e),
        }
    }
}

/// Xen's log ring, read through `xen` (the toolstack domain's backend, e.g. privcmd).
#[derive(Debug)]
pub struct XenLog<'a, H: ?Sized> {
    xen: &'a H,
}

/// Bytes read from the log and where to continue.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg(feature = "alloc")]
#[non_exhaustive]
pub struct LogChunk {
    /// The log text read.
    pub text: alloc::vec::Vec<u8>,
    /// The ring position after it: pass it to [`XenLog::read_since`] to read only what follows.
    pub next_index: u32,
}

/// The buffer of one readconsole call: the size of Xen's default log ring (xenconsoled uses
/// 16 KiB too).
#[cfg(feature = "alloc")]
const READ_CHUNK: usize = 16 * 1024;

impl<'a, H> XenLog<'a, H>
where
    H: XenHypercall<Error = xen_hypercall::Error> + ?Sized,
{
    /// The log of the Xen reached through `xen`.
    pub fn new(xen: &'a H) -> Self {
        Self { xen }
    }

    /// One `readconsole` into `buf`: from the oldest byte (`from: None`) or from a position
    /// returned earlier (if still in the ring; else from the oldest byte).
    ///
    /// # Errors
    ///
    /// [`LogError::Xen`] (`XEN_EPERM` outside the toolstack domain), [`LogError::Refused`] for
    /// Xen's `XEN_EACCES` (another sysctl interface version, or an XSM policy's denial).
    pub fn read_into(&self, buf: &mut [u8], from: Option<u32>) -> Result<ReadConsole, LogError> {
        Ok(self.xen.readconsole(buf, from, false)?)
    }

    /// Empties the log ring.
    ///
    /// # Errors
    ///
    /// As for [`read_into`](Self::read_into).
    pub fn clear(&self) -> Result<(), LogError> {
        // Xen clears up to where its copy stopped, so read (and clear) until a read comes
        // back short: then everything up to the producer is gone.
        self.read_until_short(&mut [0; 512], None, true, |_| {})?;
        Ok(())
    }

    /// The whole log ring.
    ///
    /// # Errors
    ///
    /// As for [`read_into`](Self::read_into).
    #[cfg(feature = "alloc")]
    pub fn read_all(&self) -> Result<LogChunk, LogError> {
        Ok(self.read(None)?)
    }

    /// What was logged after position `index` (from [`LogChunk::next_index`] or
    /// [`ReadConsole::next_index`]); if `index` is no longer in the ring, the whole ring.
    ///
    /// # Errors
    ///
    /// As for [`read_into`](Self::read_into).
    #[cfg(feature = "alloc")]
    pub fn read_since(&self, index: u32) -> Result<LogChunk, LogError> {
        Ok(self.read(Some(index))?)
    }

    /// The position after the newest byte: where a read of only what is logged from now on
    /// starts (`read_since`, or [`read_into`](Self::read_into) with `Some(index)`).
    ///
    /// # Errors
    ///
    /// As for [`read_into`](Self::read_into).
    pub fn end_index(&self) -> Result<u32, LogError> {
        Ok(self.read_until_short(&mut [0; 1024], None, false, |_| {})?)
    }

    /// Reads through `buf` from `from` until a read comes back short (a full buffer may have
    /// more behind it; xenconsoled loops the same way), handing each piece to `piece`; returns
    /// the position after the last byte read. `buf` must not be empty.
    fn read_until_short(
        &self,
        buf: &mut [u8],
        mut from: Option<u32>,
        clear: bool,
        mut piece: impl FnMut(&[u8]),
    ) -> Result<u32, xen_hypercall::Error> {
        loop {
            let r = self.xen.readconsole(buf, from, clear)?;
            piece(&buf[..r.count]);
            if r.count < buf.len() {
                return Ok(r.next_index);
            }
            from = Some(r.next_index);
        }
    }

    #[cfg(feature = "alloc")]
    fn read(&self, from: Option<u32>) -> Result<LogChunk, xen_hypercall::Error> {
        let mut text = alloc::vec::Vec::new();
        let next_index =
            self.read_until_short(&mut alloc::vec![0u8; READ_CHUNK], from, false, |piece| {
                text.extend_from_slice(piece)
            })?;
        Ok(LogChunk { text, next_index })
    }

    /// The log as it grows: a `Stream` of chunks, starting after position `from` (or with the
    /// whole ring), woken by `virq_con_ring`, a channel bound to `VIRQ_CON_RING` (which Xen
    /// raises in dom0 on new log output; an [`EvtchnPort`](crate::EvtchnPort) wakes only then). A blocking iterator with a [`Wait`](crate::Wait)
    /// channel.
    #[cfg(feature = "alloc")]
    pub fn follow<C>(&self, virq_con_ring: C, from: Option<u32>) -> Follow<'a, H, C> {
        Follow {
            log: XenLog { xen: self.xen },
            channel: virq_con_ring,
            from,
            checked: false,
        }
    }
}

/// Xen's log as it grows ([`XenLog::follow`]).
#[cfg(feature = "alloc")]
#[derive(Debug)]
pub struct Follow<'a, H: ?Sized, C> {
    log: XenLog<'a, H>,
    channel: C,
    from: Option<u32>,
    /// Whether the log was read since the last wake-up.
    checked: bool,
}

#[cfg(feature = "alloc")]
impl<H, C> Follow<'_, H, C>
where
    H: XenHypercall<Error = xen_hypercall::Error> + ?Sized,
{
    /// Reads what is new; `None` when nothing is.
    fn check(&mut self) -> Result<Option<LogChunk>, xen_hypercall::Error> {
        let chunk = self.log.read(self.from)?;
        self.from = Some(chunk.next_index);
        Ok((!chunk.text.is_empty()).then_some(chunk))
    }
}

#[cfg(feature = "alloc")]
impl<H, C> Iterator for Follow<'_, H, C>
where
    H: XenHypercall<Error = xen_hypercall::Error> + ?Sized,
    C: crate::Wait,
{
    type Item = Result<LogChunk, LogError<C::Error>>;

    /// The next new chunk, waiting for it. A channel deadline just means "look again".
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.check() {
                Err(e) => return Some(Err(e.into())),
                Ok(Some(chunk)) => return Some(Ok(chunk)),
                Ok(None) => {}
            }
            if let Err(e) = self.channel.wait() {
                return Some(Err(LogError::Channel(e)));
            }
        }
    }
}

#[cfg(feature = "alloc")]
impl<H, C> futures_core::Stream for Follow<'_, H, C>
where
    H: XenHypercall<Error = xen_hypercall::Error> + ?Sized,
    C: crate::AsyncWait + Unpin,
{
    type Item = Result<LogChunk, LogError<C::Error>>;

    fn poll_next(
        self: core::pin::Pin<&mut Self>,
        cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<Option<Self::Item>> {
        use core::task::Poll;
        let this = self.get_mut();
        loop {
            if !this.checked {
                this.checked = true;
                match this.check() {
                    Err(e) => return Poll::Ready(Some(Err(e.into()))),
                    Ok(Some(chunk)) => {
                        // Look again before waiting: more may have come meanwhile.
                        this.checked = false;
                        return Poll::Ready(Some(Ok(chunk)));
                    }
                    Ok(None) => {}
                }
            }
            match this.channel.poll_wait(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(LogError::Channel(e)))),
                Poll::Ready(Ok(_)) => this.checked = false,
            }
        }
    }
}
