//! Entry points, backends and exits of each guest kind.

use core::cell::UnsafeCell;

#[cfg(all(target_arch = "x86_64", feature = "pv"))]
mod pv;
#[cfg(all(target_arch = "x86_64", feature = "pv", feature = "domu"))]
pub(crate) use pv::domu_panic;
#[cfg(all(target_arch = "x86_64", feature = "pv", not(feature = "domu")))]
pub(crate) use pv::{exit, panic_console};

#[cfg(all(target_arch = "x86_64", feature = "pvh"))]
mod pvh;
#[cfg(all(target_arch = "x86_64", feature = "pvh", feature = "domu"))]
pub(crate) use pvh::domu_panic;
#[cfg(all(target_arch = "x86_64", feature = "pvh", not(feature = "domu")))]
pub(crate) use pvh::{exit, panic_console};

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(all(target_arch = "aarch64", feature = "domu"))]
pub(crate) use aarch64::domu_panic;
#[cfg(all(target_arch = "aarch64", not(feature = "domu")))]
pub(crate) use aarch64::{exit, panic_console};

/// Page-aligned memory that Rust code never reads or writes through a reference:
/// the boot stack (used by the entry code and then as the CPU's stack), page
/// tables (written by the entry code, then read by the MMU) and the page remapped
/// onto shared info (then accessed only through `SharedInfo`'s atomics).
#[repr(C, align(4096))]
pub(crate) struct RawMemory<T>(UnsafeCell<T>);

// SAFETY: the guests run on one CPU, and every static of this type is only
// reached through raw pointers by the entry code, the MMU, Xen, or atomics.
unsafe impl<T> Sync for RawMemory<T> {}

impl<T> RawMemory<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }

    /// The memory's address.
    pub(crate) fn as_mut_ptr(&self) -> *mut T {
        self.0.get()
    }
}

/// x86_64: the QEMU `isa-debug-exit` device at port 0xf4 (status `code << 1 | 1`).
#[cfg(all(target_arch = "x86_64", not(feature = "domu")))]
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

#[cfg(not(feature = "domu"))]
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
#[cfg(not(feature = "domu"))]
pub(crate) use zero_cost_probe;
