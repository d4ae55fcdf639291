//! x86_64 backends: PV (`syscall`), HVM/PVH (`vmcall`/`vmmcall`) and the hypercall page.
//!
//! The ABI (`public/arch-x86/xen-x86_64.h`, "Hypercall interface"): op in `rax`,
//! arguments in `rdi`, `rsi`, `rdx`, `r10`, `r8`, result in `rax`. Xen debug builds
//! deliberately corrupt the argument registers of the hypercall they handle, so
//! every function below declares all five clobbered, whatever its argument count
//! (as Linux's `_hypercallN` do). `syscall` also clobbers `rcx` and `r11` (it saves
//! `rip` and `rflags` there). None of the instructions touches the guest stack
//! (`nostack`), except the `call` into the hypercall page.

use core::arch::asm;
use core::cell::UnsafeCell;

use xen_hypercall::Error;

use crate::cpuid::{CpuVendor, XenCpuid};

/// Defines `call0`..`call5`, one plain function per argument count: each issues
/// `$insn` with the op in `rax` and its arguments in `rdi`, `rsi`, `rdx`, `r10`,
/// `r8` (`xen-x86_64.h`), declares the other argument registers and
/// `$clobber`s clobbered, and returns `rax`. Used once per direct instruction.
macro_rules! direct_hypercalls {
    ($insn:literal, clobbers($($clobber:tt),*)) => {
        // SAFETY (every block below): the caller (a backend whose constructor
        // contract makes the instruction Xen's hypercall entry here, under a
        // `XenHypercall::hypercallN` contract for the op and arguments) makes
        // this a well-formed hypercall. Xen may read and write memory: no
        // `nomem`/`readonly`; it does not promise to keep rflags: no
        // `preserves_flags`; nothing is pushed: `nostack`.

        #[inline(always)]
        pub(super) unsafe fn call0(op: usize) -> isize {
            let ret: isize;
            // SAFETY: see above.
            unsafe {
                asm!(
                    $insn,
                    inlateout("rax") op => ret,
                    lateout("rdi") _, lateout("rsi") _, lateout("rdx") _,
                    lateout("r10") _, lateout("r8") _,
                    $(lateout($clobber) _,)*
                    options(nostack),
                );
            }
            ret
        }

        #[inline(always)]
        pub(super) unsafe fn call1(op: usize, a0: usize) -> isize {
            let ret: isize;
            // SAFETY: see above.
            unsafe {
                asm!(
                    $insn,
                    inlateout("rax") op => ret,
                    inlateout("rdi") a0 => _, lateout("rsi") _, lateout("rdx") _,
                    lateout("r10") _, lateout("r8") _,
                    $(lateout($clobber) _,)*
                    options(nostack),
                );
            }
            ret
        }

        #[inline(always)]
        pub(super) unsafe fn call2(op: usize, a0: usize, a1: usize) -> isize {
            let ret: isize;
            // SAFETY: see above.
            unsafe {
                asm!(
                    $insn,
                    inlateout("rax") op => ret,
                    inlateout("rdi") a0 => _, inlateout("rsi") a1 => _, lateout("rdx") _,
                    lateout("r10") _, lateout("r8") _,
                    $(lateout($clobber) _,)*
                    options(nostack),
                );
            }
            ret
        }

        #[inline(always)]
        pub(super) unsafe fn call3(op: usize, a0: usize, a1: usize, a2: usize) -> isize {
            let ret: isize;
            // SAFETY: see above.
            unsafe {
                asm!(
                    $insn,
                    inlateout("rax") op => ret,
                    inlateout("rdi") a0 => _, inlateout("rsi") a1 => _, inlateout("rdx") a2 => _,
                    lateout("r10") _, lateout("r8") _,
                    $(lateout($clobber) _,)*
                    options(nostack),
                );
            }
            ret
        }

        #[inline(always)]
        pub(super) unsafe fn call4(op: usize, a0: usize, a1: usize, a2: usize, a3: usize) -> isize {
            let ret: isize;
            // SAFETY: see above.
            unsafe {
                asm!(
                    $insn,
                    inlateout("rax") op => ret,
                    inlateout("rdi") a0 => _, inlateout("rsi") a1 => _, inlateout("rdx") a2 => _,
                    inlateout("r10") a3 => _, lateout("r8") _,
                    $(lateout($clobber) _,)*
                    options(nostack),
                );
            }
            ret
        }

        #[inline(always)]
        pub(super) unsafe fn call5(
            op: usize,
            a0: usize,
            a1: usize,
            a2: usize,
            a3: usize,
            a4: usize,
        ) -> isize {
            let ret: isize;
            // SAFETY: see above.
            unsafe {
                asm!(
                    $insn,
                    inlateout("rax") op => ret,
                    inlateout("rdi") a0 => _, inlateout("rsi") a1 => _, inlateout("rdx") a2 => _,
                    inlateout("r10") a3 => _, inlateout("r8") a4 => _,
                    $(lateout($clobber) _,)*
                    options(nostack),
                );
            }
            ret
        }
    };
}

/// `syscall` from a PV guest kernel; it writes `rcx` and `r11` (saved `rip`
/// and `rflags`).
mod pv_syscall {
    use core::arch::asm;
    direct_hypercalls!("syscall", clobbers("rcx", "r11"));
}

/// `vmcall`, the HVM/PVH entry on VMX (Intel).
mod hvm_vmcall {
    use core::arch::asm;
    direct_hypercalls!("vmcall", clobbers());
}

/// `vmmcall`, the HVM/PVH entry on SVM (AMD, Hygon).
mod hvm_vmmcall {
    use core::arch::asm;
    direct_hypercalls!("vmmcall", clobbers());
}

/// `call` into the hypercall page's stub for the op. The `call` pushes a return
/// address: no `nostack` (Rust then keeps the stack aligned and the red zone
/// free). `rcx` and `r11` are declared clobbered in case the stub is
/// `syscall`-based (a PV page saves them, but nothing here relies on it).
mod page_call {
    use core::arch::asm;

    // SAFETY (every block below): `entry` is the stub of `op` in a page Xen
    // filled (`HypercallPage::install`, `check_op`), under a
    // `XenHypercall::hypercallN` contract for the op and arguments. Xen may
    // read and write memory and rflags: no `nomem`, `readonly` or
    // `preserves_flags`.

    #[inline(always)]
    pub(super) unsafe fn call0(entry: *const u8, op: usize) -> isize {
        let ret: isize;
        // SAFETY: see above.
        unsafe {
            asm!(
                "call {entry}",
                entry = in(reg) entry,
                inlateout("rax") op => ret,
                lateout("rdi") _, lateout("rsi") _, lateout("rdx") _,
                lateout("r10") _, lateout("r8") _,
                lateout("rcx") _, lateout("r11") _,
            );
        }
        ret
    }

    #[inline(always)]
    pub(super) unsafe fn call1(entry: *const u8, op: usize, a0: usize) -> isize {
        let ret: isize;
        // SAFETY: see above.
        unsafe {
            asm!(
                "call {entry}",
                entry = in(reg) entry,
                inlateout("rax") op => ret,
                inlateout("rdi") a0 => _, lateout("rsi") _, lateout("rdx") _,
                lateout("r10") _, lateout("r8") _,
                lateout("rcx") _, lateout("r11") _,
            );
        }
        ret
    }

    #[inline(always)]
    pub(super) unsafe fn call2(entry: *const u8, op: usize, a0: usize, a1: usize) -> isize {
        let ret: isize;
        // SAFETY: see above.
        unsafe {
            asm!(
                "call {entry}",
                entry = in(reg) entry,
                inlateout("rax") op => ret,
                inlateout("rdi") a0 => _, inlateout("rsi") a1 => _, lateout("rdx") _,
                lateout("r10") _, lateout("r8") _,
                lateout("rcx") _, lateout("r11") _,
            );
        }
        ret
    }

    #[inline(always)]
    pub(super) unsafe fn call3(
        entry: *const u8,
        op: usize,
        a0: usize,
        a1: usize,
        a2: usize,
    ) -> isize {
        let ret: isize;
        // SAFETY: see above.
        unsafe {
            asm!(
                "call {entry}",
                entry = in(reg) entry,
                inlateout("rax") op => ret,
                inlateout("rdi") a0 => _, inlateout("rsi") a1 => _, inlateout("rdx") a2 => _,
                lateout("r10") _, lateout("r8") _,
                lateout("rcx") _, lateout("r11") _,
            );
        }
        ret
    }

    #[inline(always)]
    pub(super) unsafe fn call4(
        entry: *const u8,
        op: usize,
        a0: usize,
        a1: usize,
        a2: usize,
        a3: usize,
    ) -> isize {
        let ret: isize;
        // SAFETY: see above.
        unsafe {
            asm!(
                "call {entry}",
                entry = in(reg) entry,
                inlateout("rax") op => ret,
                inlateout("rdi") a0 => _, inlateout("rsi") a1 => _, inlateout("rdx") a2 => _,
                inlateout("r10") a3 => _, lateout("r8") _,
                lateout("rcx") _, lateout("r11") _,
            );
        }
        ret
    }

    #[inline(always)]
    pub(super) unsafe fn call5(
        entry: *const u8,
        op: usize,
        a0: usize,
        a1: usize,
        a2: usize,
        a3: usize,
        a4: usize,
    ) -> isize {
        let ret: isize;
        // SAFETY: see above.
        unsafe {
            asm!(
                "call {entry}",
                entry = in(reg) entry,
                inlateout("rax") op => ret,
                inlateout("rdi") a0 => _, inlateout("rsi") a1 => _, inlateout("rdx") a2 => _,
                inlateout("r10") a3 => _, inlateout("r8") a4 => _,
                lateout("rcx") _, lateout("r11") _,
            );
        }
        ret
    }
}

/// Defines `raw0`..`raw5` on `$backend` by dispatching on `$scrutinee` to the
/// `callN` of one of the modules above, and implements `XenHypercall` on them.
macro_rules! raw_by_count {
    ($backend:ty, |$s:ident, $op:ident| $check:expr, match $scrutinee:expr => { $($pat:pat => $module:ident $(($($extra:expr),*))?),* $(,)? }) => {
        impl $backend {
            #[inline(always)]
            unsafe fn raw0(&$s, $op: usize) -> Result<isize, Error> {
                $check($op)?;
                // SAFETY: forwarded from `XenHypercall::hypercall0`'s contract and the type's.
                Ok(unsafe { match $scrutinee { $($pat => $module::call0($($($extra,)*)? $op)),* } })
            }
            #[inline(always)]
            unsafe fn raw1(&$s, $op: usize, a: usize) -> Result<isize, Error> {
                $check($op)?;
                // SAFETY: forwarded from `XenHypercall::hypercall1`'s contract and the type's.
                Ok(unsafe { match $scrutinee { $($pat => $module::call1($($($extra,)*)? $op, a)),* } })
            }
            #[inline(always)]
            unsafe fn raw2(&$s, $op: usize, a: [usize; 2]) -> Result<isize, Error> {
                $check($op)?;
                // SAFETY: forwarded from `XenHypercall::hypercall2`'s contract and the type's.
                Ok(unsafe { match $scrutinee { $($pat => $module::call2($($($extra,)*)? $op, a[0], a[1])),* } })
            }
            #[inline(always)]
            unsafe fn raw3(&$s, $op: usize, a: [usize; 3]) -> Result<isize, Error> {
                $check($op)?;
                // SAFETY: forwarded from `XenHypercall::hypercall3`'s contract and the type's.
                Ok(unsafe { match $scrutinee { $($pat => $module::call3($($($extra,)*)? $op, a[0], a[1], a[2])),* } })
            }
            #[inline(always)]
            unsafe fn raw4(&$s, $op: usize, a: [usize; 4]) -> Result<isize, Error> {
                $check($op)?;
                // SAFETY: forwarded from `XenHypercall::hypercall4`'s contract and the type's.
                Ok(unsafe { match $scrutinee { $($pat => $module::call4($($($extra,)*)? $op, a[0], a[1], a[2], a[3])),* } })
            }
            #[inline(always)]
            unsafe fn raw5(&$s, $op: usize, a: [usize; 5]) -> Result<isize, Error> {
                $check($op)?;
                // SAFETY: forwarded from `XenHypercall::hypercall5`'s contract and the type's.
                Ok(unsafe { match $scrutinee { $($pat => $module::call5($($($extra,)*)? $op, a[0], a[1], a[2], a[3], a[4])),* } })
            }
        }
        crate::impl_xen_hypercall!($backend);
    };
}

/// Every op is valid for the direct instructions; Xen answers `-ENOSYS` to unknown ones.
#[inline(always)]
fn any_op(_op: usize) -> Result<(), Error> {
    Ok(())
}

/// Hypercalls of a 64-bit PV guest kernel: `syscall` from guest kernel mode.
///
/// A PV guest cannot reliably tell from CPUID that it is PV, nor whether it runs
/// in guest kernel or guest user mode (both are ring 3 on x86_64), so this
/// backend is only made with [`PvHypercall::new`], which is `unsafe`: in guest
/// user mode `syscall` enters the guest kernel as a system call, whose numbers
/// overlap Xen's (17 is `pread64` on Linux) and which may write anywhere.
#[derive(Debug, Clone, Copy)]
pub struct PvHypercall(());

impl PvHypercall {
    /// The PV `syscall` backend.
    ///
    /// # Safety
    ///
    /// The caller runs as a 64-bit Xen PV guest in guest kernel mode (where Xen
    /// takes `syscall` as a hypercall, `xen-x86_64.h`), and keeps it so wherever
    /// this value (a `Copy` type) is used.
    pub const unsafe fn new() -> Self {
        Self(())
    }
}

// `new`'s contract: a PV guest kernel, where `syscall` is the hypercall instruction.
raw_by_count!(PvHypercall, |self, op| any_op, match self.0 => { () => pv_syscall });

/// The instruction an HVM or PVH guest issues hypercalls with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HvmInstruction {
    /// Intel VMX (and other VMX vendors).
    Vmcall,
    /// AMD and Hygon SVM.
    Vmmcall,
}

impl HvmInstruction {
    /// The instruction for `vendor`: the other one raises `#UD`.
    pub const fn for_vendor(vendor: CpuVendor) -> Self {
        if vendor.uses_vmmcall() {
            Self::Vmmcall
        } else {
            Self::Vmcall
        }
    }
}

/// Hypercalls of an HVM or PVH guest: `vmcall` or `vmmcall`, chosen once from
/// the CPU vendor.
///
/// Made safely by [`HvmHypercall::detect`], which checks Xen's CPUID signature
/// and that this vCPU is HVM/PVH (never PV, where these instructions fault into
/// the guest's own `#UD` handler). It is sound at any privilege level: Xen
/// performs hypercalls from CPL 0 only and answers `-EPERM` to CPL > 0
/// (`hvm_hypercall`), touching no memory; at CPL 0 it reads and writes the
/// arguments through the guest's current page tables, i.e. exactly the memory a
/// Rust reference designates.
#[derive(Debug, Clone, Copy)]
pub struct HvmHypercall {
    instruction: HvmInstruction,
}

impl HvmHypercall {
    /// The HVM/PVH backend, if this is an HVM or PVH guest of Xen.
    ///
    /// # Errors
    ///
    /// [`Error::NotOnXen`] without Xen's CPUID leaves, or in a PV guest.
    pub fn detect() -> Result<Self, Error> {
        let xen = XenCpuid::detect().ok_or(Error::NotOnXen("no Xen CPUID signature"))?;
        if !xen.is_hvm() {
            return Err(Error::NotOnXen("not an HVM or PVH guest of Xen"));
        }
        Ok(Self {
            instruction: HvmInstruction::for_vendor(CpuVendor::current()),
        })
    }

    /// The instruction this backend issues.
    pub const fn instruction(&self) -> HvmInstruction {
        self.instruction
    }
}

// `detect` proved an HVM/PVH guest of Xen and chose the vendor's instruction.
raw_by_count!(HvmHypercall, |self, op| any_op, match self.instruction => {
    HvmInstruction::Vmcall => hvm_vmcall,
    HvmInstruction::Vmmcall => hvm_vmmcall,
});

/// A 4 KiB page, aligned, for Xen to write hypercall stubs into.
#[derive(Debug)]
#[repr(C, align(4096))]
pub struct HypercallPageFrame(UnsafeCell<[u8; 4096]>);

impl HypercallPageFrame {
    /// A zeroed page (Xen overwrites all of it).
    pub const fn new() -> Self {
        Self(UnsafeCell::new([0; 4096]))
    }
}

impl Default for HypercallPageFrame {
    fn default() -> Self {
        Self::new()
    }
}

/// Stub size in the hypercall page: op `n` is at `page + 32 * n` (`xen-x86_64.h`).
const STUB_SIZE: usize = 32;
/// `__HYPERVISOR_iret`: its stub does not return, and HVM pages leave it as `int3`.
const HYPERVISOR_IRET: usize = 23;

/// Whether `page` holds Xen's hypercall stubs: every stub but `iret`'s loads
/// its op with `mov $op, %eax` (`b8` + the op, little-endian), at offset 0 in
/// an HVM page (`vmx_init_hypercall_page`, `svm_init_hypercall_page`) or after
/// `push %rcx; push %r11` at offset 3 in a PV one
/// (`pv_ring3_init_hypercall_page`).
fn holds_stubs(page: &[u8; 4096]) -> bool {
    page.chunks_exact(STUB_SIZE)
        .enumerate()
        .filter(|&(op, _)| op != HYPERVISOR_IRET)
        .all(|(op, stub)| {
            let mov = [0xb8, op as u8, 0, 0, 0];
            stub[..5] == mov || stub[3..8] == mov
        })
}

/// Hypercalls through the hypercall page: `call page + 32 * op`.
///
/// Xen writes the right instruction for the guest type (`syscall`, `vmcall` or
/// `vmmcall`) into the page when its physical address is written to the MSR of
/// CPUID leaf base + 2. Useful where the direct instructions are unavailable;
/// since XSA-466 direct `vmcall`/`vmmcall` ([`HvmHypercall`]) is preferred,
/// because the page's bare `ret`s escape speculation mitigations.
#[derive(Debug)]
pub struct HypercallPage {
    page: *const u8,
}

// SAFETY: after `install` the page is code Xen wrote and nothing writes again
// (the `&'static mut` is consumed); calling into it from any CPU is the same hypercall.
unsafe impl Send for HypercallPage {}
// SAFETY: as above; `&HypercallPage` only allows calls.
unsafe impl Sync for HypercallPage {}

impl HypercallPage {
    /// Asks Xen to fill `frame` with hypercall stubs, through the MSR of Xen's
    /// CPUID leaf base + 2, checks that Xen did, and returns the backend that
    /// calls into it.
    ///
    /// # Errors
    ///
    /// [`Error::NotOnXen`] without Xen's CPUID leaves; [`Error::Unsupported`]
    /// when CPUID reports no hypercall page, or when `frame` does not hold
    /// Xen's stubs afterwards (`frame_address` named another frame: the stubs
    /// went there, and calling into `frame` would execute zeroes).
    ///
    /// # Safety
    ///
    /// - The caller runs in an HVM or PVH guest at CPL 0, or a PV guest kernel
    ///   (`wrmsr` is privileged; a PV kernel's is emulated by Xen), and, in a
    ///   PV guest, keeps running in guest kernel mode wherever the returned
    ///   value is used: the PV stubs are `syscall`, which in guest user mode
    ///   is a system call of the guest's own kernel (see [`PvHypercall::new`]).
    /// - `frame_address` is the address Xen knows `frame` by: its
    ///   guest-physical address on HVM/PVH, its machine address on PV. Xen
    ///   writes 4 KiB of stubs at the frame it names, whatever it is.
    /// - `frame` is mapped executable (Xen writes code there).
    pub unsafe fn install(
        frame: &'static mut HypercallPageFrame,
        frame_address: u64,
    ) -> Result<Self, Error> {
        let xen = XenCpuid::detect().ok_or(Error::NotOnXen("no Xen CPUID signature"))?;
        let (msr, pages) = xen.hypercall_page_msr();
        // One page holds the stubs of every op below 128, which covers every
        // hypercall Xen has; CPUID says how many pages Xen offers (1 today).
        if pages == 0 {
            return Err(Error::Unsupported("Xen's CPUID reports no hypercall page"));
        }
        // Page index 0 goes in bits 0..12 of the value (one page covers every op < 128).
        let value = frame_address & !0xfff;
        // SAFETY:
        // - CPL 0 or a PV kernel (contract), so `wrmsr` is allowed or emulated.
        // - The MSR is Xen's (CPUID leaf base + 2, `public/arch-x86/cpuid.h`):
        //   writing it makes Xen fill the page at `frame_address`, which is
        //   `frame` (contract), now exclusively ours (`&'static mut`).
        // - `wrmsr` uses no stack and leaves rflags alone.
        unsafe {
            asm!(
                "wrmsr",
                in("ecx") msr,
                in("eax") value as u32,
                in("edx") (value >> 32) as u32,
                options(nostack, preserves_flags),
            );
        }
        let page = frame.0.get().cast::<u8>().cast_const();
        let mut bytes = [0u8; 4096];
        for (offset, byte) in bytes.iter_mut().enumerate() {
            // SAFETY: `offset < 4096` stays inside `frame`, which is ours
            // (`&'static mut`); volatile because Xen wrote it behind Rust's back.
            *byte = unsafe { page.wrapping_add(offset).read_volatile() };
        }
        if !holds_stubs(&bytes) {
            return Err(Error::Unsupported(
                "Xen did not fill the hypercall page: frame_address is not this frame's address",
            ));
        }
        Ok(Self { page })
    }

    /// The stub of `op`: `mov $op, %eax; <hypercall instruction>; ret` (on PV
    /// with rcx and r11 saved around `syscall`), `xen-x86_64.h`: "call
    /// hypercall_page + hypercall-number * 32". Ops past the page and `iret`
    /// (whose stub does not return; `int3` on HVM) have no usable stub.
    #[inline(always)]
    fn check_op(op: usize) -> Result<(), Error> {
        if op < 4096 / STUB_SIZE && op != HYPERVISOR_IRET {
            Ok(())
        } else {
            Err(Error::InvalidInput(
                "hypercall number without a returning stub in the hypercall page",
            ))
        }
    }
}

// `install` had Xen fill the page and checked it; `check_op` keeps the entry
// inside it, on a stub that returns.
raw_by_count!(HypercallPage, |self, op| HypercallPage::check_op, match () => {
    () => page_call(self.page.wrapping_add(op * STUB_SIZE))
});

#[cfg(test)]
mod tests {
    use super::*;

    /// A page laid out as Xen writes it: `prefix` bytes, then `mov $op, %eax`.
    fn page_with_stubs(prefix: usize) -> [u8; 4096] {
        let mut page = [0xcc; 4096];
        for (op, stub) in page.chunks_exact_mut(STUB_SIZE).enumerate() {
            stub[prefix] = 0xb8;
            stub[prefix + 1..prefix + 5].copy_from_slice(&(op as u32).to_le_bytes());
        }
        page
    }

    #[test]
    fn recognizes_xen_stubs_and_rejects_anything_else() {
        assert!(holds_stubs(&page_with_stubs(0)), "HVM layout");
        assert!(holds_stubs(&page_with_stubs(3)), "PV layout");
        assert!(!holds_stubs(&[0; 4096]), "an unfilled frame");
        let mut shifted = page_with_stubs(0);
        shifted[32 * 17 + 1] = 18;
        assert!(!holds_stubs(&shifted), "a stub loading the wrong op");
        // The iret stub is not checked (HVM pages make it `ud2`).
        let mut iret = page_with_stubs(0);
        iret[32 * HYPERVISOR_IRET..32 * (HYPERVISOR_IRET + 1)].fill(0);
        assert!(holds_stubs(&iret));
    }
}
