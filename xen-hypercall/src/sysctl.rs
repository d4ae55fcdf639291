//! `sysctl`: system-wide control operations of the toolstack domain (`public/sysctl.h`).
//!
//! Every `xen_sysctl` carries `XEN_SYSCTL_INTERFACE_VERSION`, and Xen refuses any other value
//! with `XEN_EACCES` before looking at the command. This module speaks interface version
//! [`SYSCTL_INTERFACE_VERSION`], `0x15`: Xen 4.17 to 4.20 (4.16 spoke `0x14`, 4.21 `0x16`).
//!
//! Only the privileged toolstack domain may issue sysctls (`XEN_EPERM` elsewhere).

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::XenHypercall;
use crate::buffer::XenMutBuffer;

/// The sysctl interface version this crate speaks: `0x15`, Xen 4.17 to 4.20.
pub const SYSCTL_INTERFACE_VERSION: u32 = xen_sys::XEN_SYSCTL_INTERFACE_VERSION;
const _: () = assert!(SYSCTL_INTERFACE_VERSION == 0x15);

/// The Xen releases whose sysctl interface is [`SYSCTL_INTERFACE_VERSION`].
pub const SYSCTL_XEN_RELEASES: &str = "Xen 4.17 to 4.20";

/// `struct xen_sysctl` (sysctl.h): `cmd`, `interface_version`, then a 128-byte union
/// (`uint8_t pad[128]` fixes its size); 8-byte aligned because members hold 64-bit handles.
#[repr(C, align(8))]
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout)]
pub(crate) struct Sysctl {
    pub(crate) cmd: u32,
    pub(crate) interface_version: u32,
    pub(crate) u: [u8; 128],
}
const _: () = assert!(core::mem::size_of::<Sysctl>() == 136);
const _: () = assert!(core::mem::offset_of!(Sysctl, u) == 8);
const _: () = assert!(
    core::mem::size_of::<xen_sys::xen_sysctl_readconsole>() <= 128
        && core::mem::align_of::<xen_sys::xen_sysctl_readconsole>() <= 8
);

/// What one `XEN_SYSCTL_readconsole` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadConsole {
    /// Bytes written to the start of the caller's buffer.
    pub count: usize,
    /// The ring position after the last byte read: give it back as `from` to continue. A
    /// position in Xen's free-running log ring, not a length.
    pub next_index: u32,
}

/// `sysctl` sub-ops, on every [`XenHypercall`] backend.
pub trait SysctlOps: XenHypercall {
    /// `XEN_SYSCTL_readconsole`: copies Xen's log ring (what `xl dmesg` shows) into `buf`.
    ///
    /// With `from: None`, reading starts at the oldest byte still in the ring. With
    /// `Some(index)` (`incremental`), it starts at `index` if that position is still in the
    /// ring, else at the oldest byte. At most `buf.len()` bytes (and at most `u32::MAX`) are
    /// read; read again from [`ReadConsole::next_index`] while the buffer comes back full.
    /// `clear` then discards what was read (all of it when the buffer held everything).
    ///
    /// Errors: `XEN_EACCES` when the running Xen speaks another sysctl interface version than
    /// [`SYSCTL_INTERFACE_VERSION`] (see [`SYSCTL_XEN_RELEASES`]), `XEN_EPERM` outside the
    /// toolstack domain.
    fn readconsole(
        &self,
        buf: &mut [u8],
        from: Option<u32>,
        clear: bool,
    ) -> Result<ReadConsole, Self::Error> {
        let count = buf.len().min(u32::MAX as usize);
        let buf = &mut buf[..count];
        let mut text = self.make_mut_buffer(buf)?;
        let mut op = xen_sys::xen_sysctl_readconsole::new_zeroed();
        op.clear = u8::from(clear);
        op.incremental = u8::from(from.is_some());
        op.index = from.unwrap_or(0);
        op.buffer = xen_sys::GuestHandle::from_ptr(text.as_hypercall_ptr().cast());
        op.count = count as u32; // At most u32::MAX.
        let mut sysctl = Sysctl {
            cmd: xen_sys::XEN_SYSCTL_readconsole,
            interface_version: SYSCTL_INTERFACE_VERSION,
            u: [0; 128],
        };
        sysctl.u[..size_of_val(&op)].copy_from_slice(op.as_bytes());
        // SAFETY: the only guest handle in `sysctl` is `buffer`. For XEN_SYSCTL_readconsole,
        // `read_console_ring` writes at most `count` bytes through it
        // (`copy_to_guest_offset(str, sofar, ..., len)` with `sofar + len <= max = count`):
        // `text` is writable for `count` bytes, aliases nothing else, and lives until after the
        // call.
        let ret = unsafe { sysctl_op(self, &mut sysctl) };
        // Dropping the buffer copies what Xen wrote back into `buf`.
        drop(text);
        ret?;
        // Xen's answer (`count`, `index`), out of the union it was copied into.
        let answer = op.as_mut_bytes();
        answer.copy_from_slice(&sysctl.u[..answer.len()]);
        Ok(ReadConsole {
            // Xen never reports more than it was given; clamp so a faulty backend cannot make
            // the caller index out of bounds.
            count: (op.count as usize).min(count),
            next_index: op.index,
        })
    }
}

impl<H: XenHypercall + ?Sized> SysctlOps for H {}

/// Issues `sysctl(&mut op)` and copies Xen's answer back into `op`.
///
/// # Safety
///
/// Every guest handle inside `op` names a live buffer of this interface that is valid for the
/// accesses Xen makes for `op.cmd`, until the call returns.
unsafe fn sysctl_op<H>(h: &H, op: &mut Sysctl) -> Result<usize, H::Error>
where
    H: XenHypercall + ?Sized,
{
    let mut buf = h.make_mut_buffer(op)?;
    let ptr = buf.as_hypercall_ptr();
    // SAFETY: `sysctl` takes one pointer to a `xen_sysctl` that it reads and writes back;
    // `buf` is valid for reads and writes of its 136 bytes and lives past the call (dropping
    // it copies Xen's answer back into `op`). Pointers inside it are the caller's obligation
    // (`# Safety`).
    unsafe {
        h.hypercall1(
            xen_sys::__HYPERVISOR_sysctl as usize,
            crate::call::addr(ptr),
        )
    }
}

#[cfg(all(test, feature = "mock"))]
mod tests {
    use super::*;
    use crate::mock::{BufferMode, MockXen};
    use crate::{Errno, Error};

    fn each_mode(test: impl Fn(&MockXen)) {
        for mode in [BufferMode::Direct, BufferMode::Bounce] {
            test(&MockXen::new().with_buffers(mode));
        }
    }

    #[test]
    fn readconsole_reads_all_then_incrementally() {
        each_mode(|xen| {
            xen.log(b"(XEN) one\n");
            let mut buf = [0u8; 64];
            let all = xen.readconsole(&mut buf, None, false).unwrap();
            assert_eq!(&buf[..all.count], b"(XEN) one\n");
            assert_eq!(all.next_index, 10);
            xen.log(b"(XEN) two\n");
            let more = xen
                .readconsole(&mut buf, Some(all.next_index), false)
                .unwrap();
            assert_eq!(&buf[..more.count], b"(XEN) two\n");
            assert_eq!(more.next_index, 20);
            // A short buffer continues where it stopped.
            let mut small = [0u8; 4];
            let part = xen.readconsole(&mut small, Some(12), false).unwrap();
            assert_eq!((&small[..], part.next_index), (&b"EN) "[..], 16));
        });
    }

    #[test]
    fn readconsole_clear_empties_the_ring() {
        each_mode(|xen| {
            xen.log(b"old\n");
            let mut buf = [0u8; 64];
            assert_eq!(xen.readconsole(&mut buf, None, true).unwrap().count, 4);
            assert_eq!(xen.readconsole(&mut buf, None, false).unwrap().count, 0);
        });
    }

    #[test]
    fn another_interface_version_is_eacces() {
        let xen = MockXen::new();
        xen.set_sysctl_interface_version(0x16);
        assert_eq!(
            xen.readconsole(&mut [0; 8], None, false),
            Err(Error::Xen(Errno::EACCES))
        );
    }

    #[test]
    fn readconsole_is_for_the_toolstack_domain_only() {
        let xen = MockXen::new();
        xen.set_privileged(false);
        assert_eq!(
            xen.readconsole(&mut [0; 8], None, false),
            Err(Error::Xen(Errno::EPERM))
        );
    }
}
