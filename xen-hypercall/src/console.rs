//! `console_io`: Xen's own console (`public/xen.h`, `CONSOLEIO_*`).
//!
//! This is the hypervisor's serial console, available to the console domain
//! (dom0 by default) and, in debug builds of Xen, writable by every domain.
//! A domain's PV console ring is a different thing (`xen-console`).

use crate::XenHypercall;
use crate::buffer::{XenConstBuffer, XenMutBuffer};
use crate::call::addr;

/// The most bytes one `CONSOLEIO_write` or `CONSOLEIO_read` carries; longer
/// transfers are split.
///
/// Xen's count is a C `int`, so one hypercall can never take more than
/// `i32::MAX` bytes; a small chunk also bounds the memory a hosted backend
/// bounces and keeps (4 pages, well within what `/dev/xen/hypercall` maps).
/// Xen itself copies in 128-byte pieces.
pub const CONSOLE_CHUNK: usize = 16 * 1024;

/// `console_io` sub-ops, on every [`XenHypercall`] backend.
pub trait ConsoleOps: XenHypercall {
    /// `CONSOLEIO_write`: writes `bytes` to Xen's console, in chunks of at most
    /// [`CONSOLE_CHUNK`] bytes.
    ///
    /// # Errors
    ///
    /// `XEN_EPERM` in a domain that is not allowed to use it, or the backend's
    /// error making the buffer. If a chunk fails, the earlier chunks have been
    /// written.
    fn console_write(&self, bytes: &[u8]) -> Result<(), Self::Error> {
        for chunk in bytes.chunks(CONSOLE_CHUNK) {
            let buf = self.make_const_buffer(chunk)?;
            // SAFETY: `console_io(int cmd, int count, XEN_GUEST_HANDLE(char) buffer)`
            // (xen.h, CONSOLEIO_write): Xen reads `count` bytes from `buffer`.
            // - `count` is `chunk.len()` <= CONSOLE_CHUNK, which fits an `int`.
            // - `buf` is readable for `chunk.len()` bytes and lives past the call.
            unsafe {
                self.hypercall3(
                    xen_sys::__HYPERVISOR_console_io as usize,
                    [
                        xen_sys::CONSOLEIO_write as usize,
                        chunk.len(),
                        addr(buf.as_hypercall_ptr()),
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// `CONSOLEIO_read`: reads pending console input into `buf`, in chunks of
    /// at most [`CONSOLE_CHUNK`] bytes, and returns how many bytes were read
    /// (`0` when there is none). Does not block: it stops at the first chunk
    /// Xen does not fill.
    ///
    /// # Errors
    ///
    /// `XEN_EPERM` in a domain that is not the console domain. If a
    /// later chunk fails after bytes were read, those bytes are returned (Xen
    /// has consumed them) and the error is left for the next call.
    fn console_read(&self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let mut read = 0;
        for chunk in buf.chunks_mut(CONSOLE_CHUNK) {
            let len = chunk.len();
            let n = match console_read_chunk(self, chunk) {
                Ok(n) => n,
                Err(_) if read > 0 => break,
                Err(error) => return Err(error),
            };
            read += n;
            if n < len {
                break;
            }
        }
        Ok(read)
    }
}

impl<H: XenHypercall + ?Sized> ConsoleOps for H {}

/// One `CONSOLEIO_read` into `chunk` (at most [`CONSOLE_CHUNK`] bytes).
fn console_read_chunk<H>(h: &H, chunk: &mut [u8]) -> Result<usize, H::Error>
where
    H: XenHypercall + ?Sized,
{
    let count = chunk.len();
    let mut hbuf = h.make_mut_buffer(chunk)?;
    let ptr = hbuf.as_hypercall_ptr();
    // SAFETY: `console_io(int cmd, int count, XEN_GUEST_HANDLE(char) buffer)`
    // (xen.h, CONSOLEIO_read): Xen writes at most `count` bytes to `buffer`
    // and returns how many.
    // - `count` is at most CONSOLE_CHUNK: it fits an `int`.
    // - `hbuf` is writable for `count` bytes, aliases nothing else, and
    //   lives past the call.
    let ret = unsafe {
        h.hypercall3(
            xen_sys::__HYPERVISOR_console_io as usize,
            [xen_sys::CONSOLEIO_read as usize, count, addr(ptr)],
        )
    };
    drop(hbuf);
    // Xen never reports more than `count`; clamp so a faulty backend cannot
    // make the caller index out of bounds.
    Ok(ret?.min(count))
}
