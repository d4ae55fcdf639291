//! The domU's writer onto its PV console ring (`public/io/console.h`), which
//! xenconsoled in dom0 drains: the domU's only way to report, since Xen refuses
//! `CONSOLEIO_write` to it.
//!
//! The ring is `xen-console`'s [`ConsoleRing`] over the console page; its event
//! channel is [`DomuChannel`], which coalesces notifications to one a line
//! (xenconsoled rate-limits events per domain) but always sends a pending one
//! before it waits. The page and port live in statics, so that the panic handler
//! can write too.

use core::fmt::{self, Write};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use xen_console::{Channel, ConsoleRing, Notify, Wait, Wake};
use xen_hypercall::prelude::SchedOps;
use xen_hypercall::sched::Deadline;
use xen_hypercall::{Error, Port, XenHypercall};
use xen_shared::{PAGE_SIZE, SharedMem};

use super::{DomuError, Events, RingPage};

/// How long a write waits for room, and a flush for xenconsoled.
const WAIT_NS: u64 = 5_000_000_000;
/// How long a bulk write may take in all (xenconsoled rate-limits a domain's events).
const BULK_WAIT_NS: u64 = 120_000_000_000;

/// The console page once found (null before).
static PAGE: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
static PORT: AtomicU32 = AtomicU32::new(0);

impl core::error::Error for DomuError {}

/// The console's event channel: `SCHEDOP_poll` on the port until a deadline.
#[derive(Debug)]
struct DomuChannel<H> {
    events: Events<H>,
    port: Port,
    deadline: u64,
    /// Whether notifications wait for [`DomuChannel::send_pending`] (one a line).
    coalesce: bool,
    /// A notification not sent yet.
    pending: bool,
}

impl<H: XenHypercall<Error = Error> + Copy> DomuChannel<H> {
    fn send_pending(&mut self) -> Result<(), DomuError> {
        if self.pending {
            self.pending = false;
            self.events.notify(self.port)?;
        }
        Ok(())
    }
}

impl<H> Channel for DomuChannel<H> {
    type Error = DomuError;
}

impl<H: XenHypercall<Error = Error> + Copy> Notify for DomuChannel<H> {
    fn notify(&mut self) -> Result<(), DomuError> {
        self.pending = true;
        if self.coalesce {
            Ok(())
        } else {
            self.send_pending()
        }
    }
}

impl<H: XenHypercall<Error = Error> + Copy> Wait for DomuChannel<H> {
    fn wait(&mut self) -> Result<Wake, DomuError> {
        // xenconsoled must hear of what is in the ring before we wait for it.
        self.send_pending()?;
        // SCHEDOP_poll returns at once if the port is already pending: an event
        // that came after the ring was looked at is not lost. Its pending bit is
        // cleared after, so the next wait sleeps until the next event.
        let port = self.port;
        self.events
            .h
            .poll(&[port], Some(Deadline::from_nanos(self.deadline)))?;
        self.events.shared.clear_pending(port);
        Ok(if self.events.now() < self.deadline {
            Wake::Event
        } else {
            Wake::TimedOut
        })
    }
}

type Console<H> = ConsoleRing<SharedMem<'static>, DomuChannel<H>>;

/// The installed console ring, if any.
fn console<H: XenHypercall<Error = Error> + Copy>(
    events: Events<H>,
    coalesce: bool,
    wait_ns: u64,
) -> Result<Console<H>, DomuError> {
    let page = NonNull::new(PAGE.load(Ordering::Acquire)).ok_or(DomuError::BadRing)?;
    // SAFETY: `install`'s contract: the page is this domain's console page, mapped
    // for reads and writes for the rest of the program, and used by Rust only
    // through this module, which reaches it only through `SharedMem` views (atomic
    // accesses); xenconsoled is the other domain that writes it.
    let mem = unsafe { SharedMem::from_raw_parts(page, PAGE_SIZE) };
    let channel = DomuChannel {
        events,
        port: Port::new(PORT.load(Ordering::Relaxed)),
        deadline: events.deadline(wait_ns),
        coalesce,
        pending: false,
    };
    ConsoleRing::new(mem, channel).map_err(|_| DomuError::BadRing)
}

/// `fmt::Write` onto the console ring; writes fail until [`install`] succeeded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingConsole<H>(pub(crate) Events<H>);

/// Makes `console` the ring every [`RingConsole`] writes to, continuing after
/// what is already in it.
///
/// # Safety
///
/// `console.page` is this domain's console page, mapped for reads and writes for
/// the rest of the program, and used by Rust only through this module.
pub(crate) unsafe fn install(console: RingPage) -> Result<(), DomuError> {
    let Some(page) = NonNull::new(console.page) else {
        return Err(DomuError::BadRing);
    };
    // SAFETY: the caller's contract (this function's `# Safety`); the view is
    // dropped before this returns.
    let mem = unsafe { SharedMem::from_raw_parts(page, PAGE_SIZE) };
    xen_shared::Producer::new(mem, xen_shared::RingLayout::CONSOLE_OUT)
        .map_err(|_| DomuError::BadRing)?
        .unconsumed()
        .map_err(|_| DomuError::BadRing)?;
    PORT.store(console.port.raw(), Ordering::Relaxed);
    PAGE.store(console.page, Ordering::Release);
    Ok(())
}

/// A console failure as the domU reports it.
fn domu_error(error: xen_console::Error<DomuError>) -> DomuError {
    match error {
        xen_console::Error::Channel(e) => e,
        xen_console::Error::Ring(_) => DomuError::BadRing,
        xen_console::Error::TimedOut => DomuError::TimedOut("room in the console ring"),
        xen_console::Error::Stalled { .. } => {
            DomuError::TimedOut("xenconsoled to drain the console ring")
        }
        _ => DomuError::Unexpected("console error"),
    }
}

impl<H: XenHypercall<Error = Error> + Copy> RingConsole<H> {
    /// Waits (at most 5 s) until xenconsoled has consumed everything written.
    pub(crate) fn flush(&self) -> Result<(), DomuError> {
        let mut console = console(self.0, false, WAIT_NS)?;
        // Whatever the last lines left unannounced: xenconsoled hears of it first.
        console.channel_mut().pending = true;
        console.flush().map_err(domu_error)
    }

    /// Writes `bytes` bytes in writes of `write_size` bytes (announcing each line
    /// as [`Write`] does), then waits until xenconsoled consumed them; two minutes
    /// at most in all. `next_chunk` fills each chunk of up to 4 KiB before it is
    /// written.
    pub(crate) fn write_bulk(
        &self,
        bytes: usize,
        write_size: usize,
        mut next_chunk: impl FnMut(&mut [u8]),
    ) -> Result<(), DomuError> {
        let mut console = console(self.0, true, BULK_WAIT_NS)?;
        let mut chunk = [0; 4096];
        let mut written = 0;
        while written < bytes {
            let chunk = &mut chunk[..(bytes - written).min(4096)];
            next_chunk(chunk);
            for piece in chunk.chunks(write_size.max(1)) {
                console.write_all(piece).map_err(domu_error)?;
                if piece.contains(&b'\n') {
                    console.channel_mut().send_pending()?;
                }
            }
            written += chunk.len();
        }
        console.channel_mut().pending = true;
        console.flush().map_err(domu_error)
    }
}

impl<H: XenHypercall<Error = Error> + Copy> Write for RingConsole<H> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut console = console(self.0, true, WAIT_NS).map_err(|_| fmt::Error)?;
        console.write_all(s.as_bytes()).map_err(|_| fmt::Error)?;
        // One event a line: xenconsoled rate-limits events per domain.
        if s.contains('\n') {
            console
                .channel_mut()
                .send_pending()
                .map_err(|_| fmt::Error)?;
        }
        Ok(())
    }
}
