//! A minimal writer onto this domain's PV console ring (`public/io/console.h`),
//! which xenconsoled in dom0 drains: the domU's only way to report, since Xen
//! refuses `CONSOLEIO_write` to it.
//!
//! Test-kernel-local: the project's console crate will replace it. Only the
//! `out` half is used. The ring's place and our producer index live in statics,
//! so that the panic handler can write too.

use core::fmt::{self, Write};
use core::mem::offset_of;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use xen_hypercall::{Error, Port, XenHypercall};
use xen_sys::xencons_interface;

use super::ring::ByteRing;
use super::{DomuError, Events, RingPage};

/// How long a write waits for room, and a flush for xenconsoled.
const WAIT_NS: u64 = 5_000_000_000;

/// The console page once found (null before).
static PAGE: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
static PORT: AtomicU32 = AtomicU32::new(0);
/// Our producer index (`out_prod`), never read back from the shared page.
static PROD: AtomicU32 = AtomicU32::new(0);

/// The `out` ring of the installed console page, if any.
fn out_ring() -> Option<(ByteRing, Port)> {
    let page = PAGE.load(Ordering::Acquire);
    if page.is_null() {
        return None;
    }
    let field = |offset: usize| page.wrapping_add(offset);
    // SAFETY: `install` checked that `page` is the console page (an
    // `xencons_interface`, public/io/console.h: `out[2048]` and the 4-aligned
    // `out_cons`/`out_prod` at these offsets), mapped for the program's life and
    // used only through this module.
    let ring = unsafe {
        ByteRing::new(
            field(offset_of!(xencons_interface, out)),
            2048,
            field(offset_of!(xencons_interface, out_cons)).cast(),
            field(offset_of!(xencons_interface, out_prod)).cast(),
        )
    };
    Some((ring, Port::new(PORT.load(Ordering::Relaxed))))
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
    PORT.store(console.port.raw(), Ordering::Relaxed);
    PAGE.store(console.page, Ordering::Release);
    let Some((ring, _)) = out_ring() else {
        return Err(DomuError::BadRing);
    };
    let prod = ring.load_prod();
    if let Err(error) = ring.unconsumed(prod) {
        PAGE.store(ptr::null_mut(), Ordering::Release);
        return Err(error);
    }
    PROD.store(prod, Ordering::Relaxed);
    Ok(())
}

impl<H: XenHypercall<Error = Error> + Copy> RingConsole<H> {
    /// Waits (at most 5 s) until xenconsoled has consumed everything written.
    pub(crate) fn flush(&self) -> Result<(), DomuError> {
        let (ring, port) = out_ring().ok_or(DomuError::BadRing)?;
        let prod = PROD.load(Ordering::Relaxed);
        self.0.notify(port)?;
        let deadline = self.0.deadline(WAIT_NS);
        self.0.wait_until(
            port,
            deadline,
            "xenconsoled to drain the console ring",
            || Ok(ring.unconsumed(prod)? == 0),
        )
    }

    fn write_bytes(&self, mut bytes: &[u8]) -> Result<(), DomuError> {
        let (ring, port) = out_ring().ok_or(DomuError::BadRing)?;
        let mut prod = PROD.load(Ordering::Relaxed);
        let result = (|| {
            let deadline = self.0.deadline(WAIT_NS);
            while !bytes.is_empty() {
                let written = ring.produce(&mut prod, bytes)?;
                bytes = &bytes[written..];
                if !bytes.is_empty() {
                    // Full: wake xenconsoled and wait for room.
                    self.0.notify(port)?;
                    self.0
                        .wait_until(port, deadline, "room in the console ring", || {
                            Ok(ring.unconsumed(prod)? < 2048)
                        })?;
                }
            }
            Ok(())
        })();
        PROD.store(prod, Ordering::Relaxed);
        result
    }
}

impl<H: XenHypercall<Error = Error> + Copy> Write for RingConsole<H> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.as_bytes()).map_err(|_| fmt::Error)?;
        // One event a line: xenconsoled rate-limits events per domain.
        if s.contains('\n') {
            let (_, port) = out_ring().ok_or(fmt::Error)?;
            self.0.notify(port).map_err(|_| fmt::Error)?;
        }
        Ok(())
    }
}
