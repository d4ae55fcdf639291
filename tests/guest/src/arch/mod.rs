//! Entry points, backends and exits of each guest kind.

#[cfg(all(target_arch = "x86_64", feature = "pv"))]
mod pv;
#[cfg(all(target_arch = "x86_64", feature = "pv"))]
pub(crate) use pv::{exit, panic_console};

#[cfg(all(target_arch = "x86_64", feature = "pvh"))]
mod pvh;
#[cfg(all(target_arch = "x86_64", feature = "pvh"))]
pub(crate) use pvh::{exit, panic_console};

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub(crate) use aarch64::{exit, panic_console};

/// x86_64: the QEMU `isa-debug-exit` device at port 0xf4 (status `code << 1 | 1`).
#[cfg(target_arch = "x86_64")]
mod debug_exit {
    /// Writes `code` to port 0xf4.
    ///
    /// # Safety
    ///
    /// The caller may access port 0xf4 (CPL 0, or a PV kernel with IOPL 1 from
    /// `PHYSDEVOP_set_iopl`), and the port is QEMU's exit device (which the
    /// testbed contract guarantees), so the write ends the machine.
    pub(crate) unsafe fn write(code: u8) {
        // SAFETY: port access allowed (contract); `out` uses no stack or flags.
        unsafe {
            core::arch::asm!("out 0xf4, al", in("al") code, options(nomem, nostack, preserves_flags));
        }
    }
}

/// Defines `probe_xen_version`, the function the zero-cost check disassembles:
/// `xen_version()` through the guest's backend, out of line under a fixed name.
macro_rules! zero_cost_probe {
    ($backend:ty) => {
        /// `xen_version()` on this guest's backend, for the zero-cost check.
        #[unsafe(no_mangle)]
        #[inline(never)]
        pub(crate) fn probe_xen_version(
            h: &$backend,
        ) -> Result<xen_hypercall::version::Version, xen_hypercall::Error> {
            use xen_hypercall::prelude::*;
            h.xen_version()
        }
    };
}
pub(crate) use zero_cost_probe;
