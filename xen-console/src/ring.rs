//! The PV console ring frontend (`io/console.h`): a guest's console, served by xenconsoled.

use core::pin::Pin;
use core::task::{Context, Poll};

use xen_shared::{Consumer, LayoutError, Producer, RingError, RingLayout, RingMemory};

use crate::channel::{AsyncWait, Notify, Wait, Wake};
use crate::error::Error;

/// Offset of `connection` (a `uint8_t`) in `xencons_interface`: first in Xen 4.21's
/// `io/console.h`; earlier pages end at 3088.
pub const CONNECTION_OFFSET: usize = 3088;

/// `connection`'s values (`XENCONSOLE_CONNECTED`, `XENCONSOLE_DISCONNECTED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// 0: the backend serves the ring.
    Connected,
    /// 1: the backend has not connected (yet).
    Disconnected,
    /// Any other value the backend wrote.
    Unknown(u8),
}

/// A guest's console ring: output produced into `out`, input consumed from `in`, one event
/// channel both ways.
///
/// Every operation takes `&mut self`: one user at a time (Linux hung without a lock around
/// its console ring). The ring is the memory `M` (a [`SharedMem`](xen_shared::SharedMem) of the
/// mapped console page) and the channel `C` ([`Notify`] for the non-blocking calls, plus
/// [`Wait`] for the blocking ones or [`AsyncWait`] for the async ones).
#[derive(Debug)]
pub struct ConsoleRing<M, C> {
    out: Producer<M>,
    input: Consumer<M>,
    channel: C,
    has_connection: bool,
}

impl<M: RingMemory + Clone, C> ConsoleRing<M, C> {
    /// The console in `mem` (the 3088-byte layout before Xen 4.21), signalled through
    /// `channel`.
    ///
    /// # Errors
    ///
    /// [`LayoutError`] if `mem` is too small for the console layout (or misaligned).
    pub fn new(mem: M, channel: C) -> Result<Self, LayoutError> {
        Ok(Self {
            out: Producer::new(mem.clone(), RingLayout::CONSOLE_OUT)?,
            input: Consumer::new(mem, RingLayout::CONSOLE_IN)?,
            channel,
            has_connection: false,
        })
    }

    /// Declares that the page has the `connection` byte (Xen 4.21 and later), so that
    /// [`connection`](Self::connection) reads it.
    pub fn with_connection_field(mut self) -> Self {
        self.has_connection = true;
        self
    }

    /// The backend's `connection` state, or `None` on a page without the field.
    ///
    /// # Errors
    ///
    /// [`RingError`] if the ring's memory is too short for the field.
    pub fn connection(&self) -> Result<Option<Connection>, RingError> {
        if !self.has_connection {
            return Ok(None);
        }
        let mut v = [0u8];
        self.out.memory().read(CONNECTION_OFFSET, &mut v)?;
        Ok(Some(match v[0] {
            0 => Connection::Connected,
            1 => Connection::Disconnected,
            v => Connection::Unknown(v),
        }))
    }

    /// The channel.
    pub fn channel_mut(&mut self) -> &mut C {
        &mut self.channel
    }

    /// Output bytes the backend has not consumed yet.
    ///
    /// # Errors
    ///
    /// [`RingError`] if the backend's index is impossible.
    pub fn unconsumed(&self) -> Result<usize, RingError> {
        self.out.unconsumed()
    }
}

impl<M: RingMemory, C: Notify> ConsoleRing<M, C> {
    /// Copies as much of `buf` as fits into `out` without waiting; notifies the backend if
    /// anything moved. `Ok(0)`: the ring is full.
    ///
    /// # Errors
    ///
    /// [`Error::Ring`] when the backend's index is impossible, [`Error::Channel`] when the
    /// notification fails.
    pub fn try_write(&mut self, buf: &[u8]) -> Result<usize, Error<C::Error>> {
        let n = self.out.write(buf)?;
        if n > 0 {
            self.channel.notify().map_err(Error::Channel)?;
        }
        Ok(n)
    }

    /// Copies available input into `buf` without waiting; notifies the backend if anything
    /// moved (it may be waiting for room). `Ok(0)`: nothing to read.
    ///
    /// # Errors
    ///
    /// [`Error::Ring`] when the backend's index is impossible, [`Error::Channel`] when the
    /// notification fails.
    pub fn try_read(&mut self, buf: &mut [u8]) -> Result<usize, Error<C::Error>> {
        let n = self.input.read(buf)?;
        if n > 0 {
            self.channel.notify().map_err(Error::Channel)?;
        }
        Ok(n)
    }
}

/// What a finished wait means: go on after an event, fail with `timeout()` after a deadline.
fn woke<E>(wait: Result<Wake, E>, timeout: impl FnOnce() -> Error<E>) -> Result<(), Error<E>> {
    match wait.map_err(Error::Channel)? {
        Wake::Event => Ok(()),
        Wake::TimedOut => Err(timeout()),
    }
}

/// Waits once on `channel`; a deadline is `timeout()`.
fn wait_once<C: Wait>(
    channel: &mut C,
    timeout: impl FnOnce() -> Error<C::Error>,
) -> Result<(), Error<C::Error>> {
    woke(channel.wait(), timeout)
}

/// Polls `channel` once: `Ok(true)` after an event, `Ok(false)` when pending (the waker is
/// registered), an error after a deadline.
fn polled<C: AsyncWait>(
    channel: &mut C,
    cx: &mut Context<'_>,
    timeout: impl FnOnce() -> Error<C::Error>,
) -> Result<bool, Error<C::Error>> {
    match channel.poll_wait(cx) {
        Poll::Pending => Ok(false),
        Poll::Ready(wait) => woke(wait, timeout).map(|()| true),
    }
}

impl<M: RingMemory, C: Notify + Wait> ConsoleRing<M, C> {
    /// Writes at least one byte of a non-empty `buf`, waiting while the ring is full; returns
    /// how many were written (a partial write under backpressure).
    ///
    /// # Errors
    ///
    /// [`Error::Ring`] when the backend's index is impossible, [`Error::Channel`] when the
    /// channel's wait or notify fails, [`Error::TimedOut`] when the channel's deadline passes
    /// while waiting.
    pub fn write(&mut self, buf: &[u8]) -> Result<usize, Error<C::Error>> {
        loop {
            let n = self.try_write(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            wait_once(&mut self.channel, || Error::TimedOut)?;
        }
    }

    /// Writes all of `buf`, waiting for room as needed.
    ///
    /// # Errors
    ///
    /// [`Error::Ring`] when the backend's index is impossible, [`Error::Channel`] when the
    /// channel's wait or notify fails, [`Error::TimedOut`] when the channel's deadline passes
    /// while waiting.
    pub fn write_all(&mut self, mut buf: &[u8]) -> Result<(), Error<C::Error>> {
        while !buf.is_empty() {
            let n = self.write(buf)?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Waits until the backend has consumed every byte written (before powering off: lines
    /// still in the ring are lost otherwise).
    ///
    /// # Errors
    ///
    /// [`Error::Stalled`] when the channel's deadline passes first, [`Error::Ring`] when the
    /// backend's index is impossible, [`Error::Channel`] when the channel's wait fails.
    pub fn flush(&mut self) -> Result<(), Error<C::Error>> {
        loop {
            let unconsumed = self.out.unconsumed()?;
            if unconsumed == 0 {
                return Ok(());
            }
            wait_once(&mut self.channel, || Error::Stalled { unconsumed })?;
        }
    }

    /// Reads at least one byte into a non-empty `buf`, waiting for input.
    ///
    /// # Errors
    ///
    /// [`Error::Ring`] when the backend's index is impossible, [`Error::Channel`] when the
    /// channel's wait or notify fails, [`Error::TimedOut`] when the channel's deadline passes
    /// while waiting.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error<C::Error>> {
        loop {
            let n = self.try_read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            wait_once(&mut self.channel, || Error::TimedOut)?;
        }
    }

    /// Reads one line into `buf`: up to and including `\n`, or until `buf` is full. Returns its
    /// length; the line is complete when it ends with `\n`. Bytes after the line stay in the
    /// ring.
    ///
    /// Waits whenever a look at the ring takes nothing: when it is empty, and when a hostile
    /// backend takes back bytes it had published (moves `in_prod` back) between the look and
    /// the read, so that such a backend costs a wait, never a spin.
    ///
    /// # Errors
    ///
    /// [`Error::Ring`] when the backend's index is impossible, [`Error::Channel`] when the
    /// channel's wait or notify fails, [`Error::TimedOut`] when the channel's deadline passes
    /// while waiting.
    pub fn read_line(&mut self, buf: &mut [u8]) -> Result<usize, Error<C::Error>> {
        let mut len = 0;
        while len < buf.len() {
            // Look at what is there without consuming it, then consume up to the newline.
            let seen = self.input.peek(&mut buf[len..])?;
            let take = buf[len..len + seen]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(seen, |i| i + 1);
            let n = if take == 0 {
                0
            } else {
                self.try_read(&mut buf[len..len + take])?
            };
            if n == 0 {
                wait_once(&mut self.channel, || Error::TimedOut)?;
                continue;
            }
            len += n;
            if buf[..len].ends_with(b"\n") {
                break;
            }
        }
        Ok(len)
    }

    /// The input as a blocking iterator of bytes.
    pub fn bytes(&mut self) -> Bytes<'_, M, C> {
        Bytes {
            ring: self,
            buf: [0; CHUNK],
            pos: 0,
            len: 0,
        }
    }
}

/// How many input bytes an iterator or stream takes from the ring at once.
const CHUNK: usize = 64;

/// The console input as a blocking iterator of bytes ([`ConsoleRing::bytes`]).
#[derive(Debug)]
pub struct Bytes<'a, M, C> {
    ring: &'a mut ConsoleRing<M, C>,
    buf: [u8; CHUNK],
    pos: usize,
    len: usize,
}

impl<M: RingMemory, C: Notify + Wait> Iterator for Bytes<'_, M, C> {
    type Item = Result<u8, Error<C::Error>>;

    /// The next byte; `Some(Err(_))` on an error (a deadline passing is [`Error::TimedOut`]).
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos == self.len {
            match self.ring.read(&mut self.buf) {
                Ok(n) => (self.pos, self.len) = (0, n),
                Err(e) => return Some(Err(e)),
            }
        }
        self.pos += 1;
        Some(Ok(self.buf[self.pos - 1]))
    }
}

impl<M: RingMemory, C: Notify + AsyncWait> ConsoleRing<M, C> {
    /// `poll` form of an async write: `Ready` with at least one byte written.
    ///
    /// # Errors
    ///
    /// [`Error::Ring`] when the backend's index is impossible, [`Error::Channel`] when the
    /// channel's wait or notify fails, [`Error::TimedOut`] when the channel's deadline passes
    /// while waiting.
    pub fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<Result<usize, Error<C::Error>>> {
        loop {
            let n = self.try_write(buf)?;
            if n > 0 || buf.is_empty() {
                return Poll::Ready(Ok(n));
            }
            if !polled(&mut self.channel, cx, || Error::TimedOut)? {
                return Poll::Pending;
            }
        }
    }

    /// `poll` form of an async read: `Ready` with at least one byte read.
    ///
    /// # Errors
    ///
    /// [`Error::Ring`] when the backend's index is impossible, [`Error::Channel`] when the
    /// channel's wait or notify fails, [`Error::TimedOut`] when the channel's deadline passes
    /// while waiting.
    pub fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<usize, Error<C::Error>>> {
        loop {
            let n = self.try_read(buf)?;
            if n > 0 || buf.is_empty() {
                return Poll::Ready(Ok(n));
            }
            if !polled(&mut self.channel, cx, || Error::TimedOut)? {
                return Poll::Pending;
            }
        }
    }

    /// `poll` form of an async flush.
    ///
    /// # Errors
    ///
    /// As for [`flush`](Self::flush).
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error<C::Error>>> {
        loop {
            let unconsumed = self.out.unconsumed()?;
            if unconsumed == 0 {
                return Poll::Ready(Ok(()));
            }
            if !polled(&mut self.channel, cx, || Error::Stalled { unconsumed })? {
                return Poll::Pending;
            }
        }
    }

    /// The input as a `Stream` of bytes.
    pub fn stream(&mut self) -> ByteStream<'_, M, C> {
        ByteStream {
            ring: self,
            buf: [0; CHUNK],
            pos: 0,
            len: 0,
        }
    }
}

/// The console input as a `Stream` of bytes ([`ConsoleRing::stream`]). Cancellation-safe:
/// bytes leave the ring only into the stream's buffer, which dropping the `next()` future
/// does not lose.
#[derive(Debug)]
pub struct ByteStream<'a, M, C> {
    ring: &'a mut ConsoleRing<M, C>,
    buf: [u8; CHUNK],
    pos: usize,
    len: usize,
}

impl<M: RingMemory, C: Notify + AsyncWait> futures_core::Stream for ByteStream<'_, M, C> {
    type Item = Result<u8, Error<C::Error>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.pos == this.len {
            match this.ring.poll_read(cx, &mut this.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Ok(n)) => (this.pos, this.len) = (0, n),
            }
        }
        this.pos += 1;
        Poll::Ready(Some(Ok(this.buf[this.pos - 1])))
    }
}

impl<M: RingMemory, C: Notify + Wait> core::fmt::Write for ConsoleRing<M, C> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write_all(s.as_bytes()).map_err(|_| core::fmt::Error)
    }
}

impl<M, C: crate::channel::Channel> embedded_io::ErrorType for ConsoleRing<M, C> {
    type Error = Error<C::Error>;
}

impl<M: RingMemory, C: Notify + Wait> embedded_io::Write for ConsoleRing<M, C> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        ConsoleRing::write(self, buf)
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        ConsoleRing::flush(self)
    }
}

impl<M: RingMemory, C: Notify + Wait> embedded_io::Read for ConsoleRing<M, C> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        ConsoleRing::read(self, buf)
    }
}

impl<M: RingMemory, C: Notify> embedded_io::ReadReady for ConsoleRing<M, C> {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(self.input.available()? > 0)
    }
}

impl<M: RingMemory, C: Notify> embedded_io::WriteReady for ConsoleRing<M, C> {
    fn write_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(self.out.free()? > 0)
    }
}

impl<M: RingMemory, C: Notify + AsyncWait> embedded_io_async::Write for ConsoleRing<M, C> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        core::future::poll_fn(|cx| self.poll_write(cx, buf)).await
    }
    async fn flush(&mut self) -> Result<(), Self::Error> {
        core::future::poll_fn(|cx| self.poll_flush(cx)).await
    }
}

impl<M: RingMemory, C: Notify + AsyncWait> embedded_io_async::Read for ConsoleRing<M, C> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        core::future::poll_fn(|cx| self.poll_read(cx, buf)).await
    }
}

#[cfg(feature = "std")]
impl<M: RingMemory, C: Notify + Wait> std::io::Write for ConsoleRing<M, C>
where
    C::Error: Send + Sync + 'static,
{
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(ConsoleRing::write(self, buf)?)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(ConsoleRing::flush(self)?)
    }
}

#[cfg(feature = "std")]
impl<M: RingMemory, C: Notify + Wait> std::io::Read for ConsoleRing<M, C>
where
    C::Error: Send + Sync + 'static,
{
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        Ok(ConsoleRing::read(self, buf)?)
    }
}
