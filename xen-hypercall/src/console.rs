//! `console_io`: Xen's own console (`public/xen.h`, `CONSOLEIO_*`).
//!
//! This is the hypervisor's serial console, available to the console domain
//! (dom0 by default) and, in debug builds of Xen, writable by every domain.
//! A domain's PV console ring is a different thing (`xen-console`).

use crate::XenHypercall;
use crate::buffer::{XenConstBuffer, XenMutBuffer};
use crate::call::addr;

/// The most bytes one `CONSOLEIO_write` carries; longer writes are split.
///
/// Xen's count is a C `int`, so one hypercall can never take more than
/// `i32::MAX` bytes; a smaller chunk also bounds the size of the bounce buffer
/// a hosted backend allocates. Xen itself copies in 128-byte pieces.
pub const CONSOLE_WRITE_CHUNK: usize = 16 * 1024;

/// `console_io` sub-ops, on every [`XenHypercall`] backend.
pub trait ConsoleOps: XenHypercall {
    /// `CONSOLEIO_write`: writes `bytes` to Xen's console, in chunks of at most
    /// [`CONSOLE_WRITE_CHUNK`] bytes.
    ///
    /// Fails with `XEN_EPERM` in a domain that is not allowed to use it. If a
    /// chunk fails, the earlier chunks have been written.
    fn console_write(&self, bytes: &[u8]) -> Result<(), Self::Error> {
        for chunk in bytes.chunks(CONSOLE_WRITE_CHUNK) {
            let buf = self.make_const_buffer(chunk)?;
            // SAFETY: `console_io(int cmd, int count, XEN_GUEST_HANDLE(char) buffer)`
            // (xen.h, CONSOLEIO_write): Xen reads `count` bytes from `buffer`.
            // - `count` is `chunk.len()` <= CONSOLE_WRITE_CHUNK, which fits an `int`.
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

    /// `CONSOLEIO_read`: reads pending console input into `buf` and returns how
    /// many bytes were read (`0` when there is none). Does not block.
    ///
    /// Fails with `XEN_EPERM` in a domain that is not the console domain.
    fn console_read(&self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let count = buf.len().min(i32::MAX as usize);
        let buf = &mut buf[..count];
        let mut hbuf = self.make_mut_buffer(buf)?;
        let ptr = hbuf.as_hypercall_ptr();
        // SAFETY: `console_io(int cmd, int count, XEN_GUEST_HANDLE(char) buffer)`
        // (xen.h, CONSOLEIO_read): Xen writes at most `count` bytes to `buffer`
        // and returns how many.
        // - `count` is `hbuf`'s length, at most `i32::MAX`: it fits an `int`.
        // - `hbuf` is writable for `count` bytes, aliases nothing else, and
        //   lives past the call.
        let ret = unsafe {
            self.hypercall3(
                xen_sys::__HYPERVISOR_console_io as usize,
                [xen_sys::CONSOLEIO_read as usize, count, addr(ptr)],
            )
        };
        drop(hbuf);
        // Xen never reports more than `count`; clamp so a faulty backend cannot
        // make the caller index out of bounds.
        Ok(ret?.min(count))
    }
}

impl<H: XenHypercall + ?Sized> ConsoleOps for H {}
