//! The aarch64 backend: `hvc #0xEA1`.
//!
//! The ABI (`public/arch-arm.h`, "Hypercall Calling Convention"): op in `x16`,
//! arguments in `x0`..`x4`, result in `x0`, the HVC immediate is
//! `XEN_HYPERCALL_TAG` (0xEA1). Xen clobbers `x16` and the argument registers the
//! hypercall uses; every function below declares `x0`..`x4` and `x16` clobbered,
//! whatever its argument count, so that an op with more arguments than passed
//! cannot corrupt live values.

use core::arch::asm;

use xen_hypercall::Error;

/// Defines `callN`: `hvc #0xEA1` with the op and N arguments.
macro_rules! hvc_call {
    ($fn:ident($($arg:ident $reg:tt),*) unused($($ureg:tt),*)) => {
        #[inline(always)]
        unsafe fn $fn(op: usize, a0: usize $(, $arg: usize)*) -> isize {
            let ret: isize;
            // SAFETY: `Aarch64Hypercall::new`'s contract makes `hvc #0xEA1` a Xen
            // hypercall of this EL1 guest, with buffers in memory Xen sees coherently;
            // the `XenHypercall::hypercallN` contract makes the op well formed.
            // Registers per arch-arm.h: op in x16, arguments in x0..x4, result in x0;
            // x16 and all argument registers declared clobbered. `hvc` does not touch
            // the stack: `nostack`. Xen may read and write memory: no `nomem`.
            // NZCV are not promised preserved: no `preserves_flags`.
            unsafe {
                asm!(
                    "hvc #0xEA1",
                    inlateout("x16") op => _,
                    inlateout("x0") a0 => ret,
                    $(inlateout($reg) $arg => _,)*
                    $(lateout($ureg) _,)*
                    options(nostack),
                );
            }
            ret
        }
    };
}

hvc_call!(call1() unused("x1", "x2", "x3", "x4"));
hvc_call!(call2(a1 "x1") unused("x2", "x3", "x4"));
hvc_call!(call3(a1 "x1", a2 "x2") unused("x3", "x4"));
hvc_call!(call4(a1 "x1", a2 "x2", a3 "x3") unused("x4"));
hvc_call!(call5(a1 "x1", a2 "x2", a3 "x3", a4 "x4") unused());

/// Hypercalls of an arm64 guest kernel: `hvc #0xEA1`.
///
/// Made only with [`Aarch64Hypercall::new`], which is `unsafe`: nothing an EL1
/// program can read proves that EL2 is Xen (the device tree's `/hypervisor`
/// node is the caller's to check), another hypervisor gives `hvc` other meanings
/// (e.g. PSCI), and Xen reads hypercall buffers with cacheable accesses, so they
/// must live in Normal write-back memory: with the MMU off every access of the
/// guest is Device/Non-cacheable and Xen may see stale bytes.
#[derive(Debug, Clone, Copy)]
pub struct Aarch64Hypercall(());

impl Aarch64Hypercall {
    /// The `hvc #0xEA1` backend.
    ///
    /// # Safety
    ///
    /// Wherever this value (a `Copy` type) is used:
    /// - the caller runs at EL1 in a guest of Xen (e.g. the device tree has a
    ///   `/hypervisor` node compatible with `"xen,xen"`);
    /// - the stage-1 MMU is on and every buffer handed to Xen (the memory of
    ///   every Rust reference the typed wrappers pass) is mapped Normal
    ///   Inner-Shareable Inner/Outer Write-Back cacheable, as `arch-arm.h` requires
    ///   of memory shared with Xen.
    pub const unsafe fn new() -> Self {
        Self(())
    }

    #[inline(always)]
    unsafe fn raw0(&self, op: usize) -> Result<isize, Error> {
        // SAFETY: forwarded from `XenHypercall::hypercall0`'s contract and `new`'s.
        // x0 is an argument register: passing 0 there is harmless for a 0-argument op.
        Ok(unsafe { call1(op, 0) })
    }
    #[inline(always)]
    unsafe fn raw1(&self, op: usize, a: usize) -> Result<isize, Error> {
        // SAFETY: forwarded from `XenHypercall::hypercall1`'s contract and `new`'s.
        Ok(unsafe { call1(op, a) })
    }
    #[inline(always)]
    unsafe fn raw2(&self, op: usize, a: [usize; 2]) -> Result<isize, Error> {
        // SAFETY: forwarded from `XenHypercall::hypercall2`'s contract and `new`'s.
        Ok(unsafe { call2(op, a[0], a[1]) })
    }
    #[inline(always)]
    unsafe fn raw3(&self, op: usize, a: [usize; 3]) -> Result<isize, Error> {
        // SAFETY: forwarded from `XenHypercall::hypercall3`'s contract and `new`'s.
        Ok(unsafe { call3(op, a[0], a[1], a[2]) })
    }
    #[inline(always)]
    unsafe fn raw4(&self, op: usize, a: [usize; 4]) -> Result<isize, Error> {
        // SAFETY: forwarded from `XenHypercall::hypercall4`'s contract and `new`'s.
        Ok(unsafe { call4(op, a[0], a[1], a[2], a[3]) })
    }
    #[inline(always)]
    unsafe fn raw5(&self, op: usize, a: [usize; 5]) -> Result<isize, Error> {
        // SAFETY: forwarded from `XenHypercall::hypercall5`'s contract and `new`'s.
        Ok(unsafe { call5(op, a[0], a[1], a[2], a[3], a[4]) })
    }
}

crate::impl_xen_hypercall!(Aarch64Hypercall);
