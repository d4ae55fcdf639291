//! The PV64 guest: Xen's PV ELF notes, entry with `rsi` = start_info, `syscall`
//! hypercalls.
//!
//! Xen builds the initial page tables mapping the image at its link address
//! (VIRT_BASE 0) and enters `_start` in 64-bit guest kernel mode.

use super::RawMemory;
use core::arch::global_asm;

use xen_hypercall::{Error, XenHypercall};
use xen_hypercall_native::{HvmHypercall, PvHypercall};
use xen_sys::start_info;

use crate::cases::{self, Console, Expect, Fail, GuestReporter};
use crate::shared_info::SharedInfo;

// Xen PV ELF notes (public/elfnote.h), in the PT_NOTE segment of the linker script.
global_asm!(
    ".pushsection .note.Xen, \"a\", @note",
    ".macro xen_note type, desc_start, desc_end",
    ".balign 4",
    ".long 4",
    ".long \\desc_end - \\desc_start",
    ".long \\type",
    ".asciz \"Xen\"",
    ".endm",
    // XEN_ELFNOTE_GUEST_OS (6)
    "xen_note 6, 60f, 61f",
    "60: .asciz \"xen-test-guest\"",
    "61:",
    // XEN_ELFNOTE_XEN_VERSION (5)
    "xen_note 5, 62f, 63f",
    "62: .asciz \"xen-3.0\"",
    "63:",
    // XEN_ELFNOTE_LOADER (8)
    "xen_note 8, 64f, 65f",
    "64: .asciz \"generic\"",
    "65:",
    // XEN_ELFNOTE_VIRT_BASE (3)
    "xen_note 3, 66f, 67f",
    "66: .quad 0",
    "67:",
    // XEN_ELFNOTE_PADDR_OFFSET (4)
    "xen_note 4, 68f, 69f",
    "68: .quad 0",
    "69:",
    // XEN_ELFNOTE_ENTRY (1)
    "xen_note 1, 70f, 71f",
    "70: .quad _start",
    "71:",
    ".popsection",
    // Entry: our own stack, start_info (rsi) as the first argument.
    ".pushsection .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "lea rsp, [rip + {stack} + {stack_size}]",
    "mov rdi, rsi",
    "call {main}",
    "2: hlt",
    "jmp 2b",
    ".popsection",
    stack = sym STACK,
    stack_size = const STACK_SIZE,
    main = sym pv_main,
);

const STACK_SIZE: usize = 64 * 1024;

static STACK: RawMemory<[u8; STACK_SIZE]> = RawMemory::new([0; STACK_SIZE]);

/// The page the shared info frame is mapped over.
static SHARED_INFO_SLOT: RawMemory<[u8; 4096]> = RawMemory::new([0; 4096]);

fn backend() -> PvHypercall {
    // SAFETY: this program is a 64-bit PV kernel (the ELF notes above), running in
    // guest kernel mode from `_start` on; it never enters guest user mode.
    unsafe { PvHypercall::new() }
}

crate::arch::zero_cost_probe!(PvHypercall);

/// `HYPERVISOR_update_va_mapping` (public/xen.h, 14) and `UVMF_INVLPG`.
const UPDATE_VA_MAPPING: usize = xen_sys::__HYPERVISOR_update_va_mapping as usize;
const UVMF_INVLPG: usize = xen_sys::UVMF_INVLPG as usize;
/// PTE bits: present, writable, user (Xen requires it of 64-bit PV kernels), accessed, dirty.
const PTE_FLAGS: u64 = 0x1 | 0x2 | 0x4 | 0x20 | 0x40;

/// Maps the shared info page (a machine address in start_info, public/xen.h:
/// "MACHINE address of shared info struct") over `SHARED_INFO_SLOT`'s virtual
/// address with `update_va_mapping`, as Mini-OS does. Xen gives a PV guest no
/// mapping of it; the slot's own frame is simply left unused.
fn map_shared_info(h: &PvHypercall, info: &start_info) -> Result<SharedInfo, Error> {
    let va = SHARED_INFO_SLOT.as_mut_ptr() as usize;
    let pte = (info.shared_info & !0xfff) | PTE_FLAGS;
    // SAFETY: update_va_mapping(va, pte, flags) (xen.h) replaces the PTE of `va`, a
    // page of ours that Rust only touches through raw pointers from here on (the
    // static is never read as a value), with a mapping of this domain's shared info
    // frame, which Xen lets a PV guest map writable; UVMF_INVLPG flushes the old entry.
    unsafe { h.hypercall3(UPDATE_VA_MAPPING, [va, pte as usize, UVMF_INVLPG]) }?;
    // SAFETY: the slot now maps the shared info page for the program's life, and is
    // used only through `SharedInfo`.
    Ok(unsafe { SharedInfo::new(va as *const u8) })
}

extern "C" fn pv_main(info: *const start_info) -> ! {
    let h = backend();
    let mut reporter = GuestReporter::new(Console(&h));
    // SAFETY: Xen passes the virtual address of the start_info page in rsi
    // (public/xen.h, "start_info"), mapped for the guest's life and not written
    // afterwards by Xen.
    let info = unsafe { &*info };
    reporter.case(
        "pv_start_info",
        (|| {
            let magic = info.magic.map(|c| c as u8);
            if !magic.starts_with(b"xen-3.0-x86_64") {
                cases::fail!("start_info magic {:?}", core::str::from_utf8(&magic));
            }
            Ok(())
        })(),
    );
    cases::run_common(
        &h,
        &mut reporter,
        map_shared_info(&h, info),
        &Expect {
            capability: "xen-3.0-x86_64",
            virt_start: cases::X86_64_VIRT_START,
            translated: false,
        },
    );
    reporter.case(
        "pv_hvm_detect_refused",
        match HvmHypercall::detect() {
            Err(Error::NotOnXen(_)) => Ok(()),
            other => Err(Fail::new(format_args!(
                "HvmHypercall::detect in a PV guest gave {other:?}"
            ))),
        },
    );
    reporter.case(
        "zero_cost_probe",
        probe_xen_version(&h).map(drop).map_err(Fail::from),
    );
    // Port 0xf4 needs I/O privilege: PHYSDEVOP_set_iopl (the notes of the testbed).
    let iopl = h.set_iopl(1);
    let iopl_ok = iopl.is_ok();
    reporter.case("pv_set_iopl", iopl.map_err(Fail::from));
    let code = cases::finish(&h, reporter);
    // Without I/O privilege the exit port would fault: reboot instead (a failure for the runner).
    if !iopl_ok {
        shutdown_reboot(&h);
    }
    exit(code)
}

use xen_hypercall::prelude::*;

/// Without port access: reboot (QEMU `-no-reboot` exits with status 0, a failure).
fn shutdown_reboot(h: &PvHypercall) -> ! {
    let _ = h.shutdown(ShutdownReason::REBOOT);
    loop {
        core::hint::spin_loop();
    }
}

/// Ends the run: `code` to the isa-debug-exit port, else a reboot.
pub(crate) fn exit(code: u8) -> ! {
    let h = backend();
    let _ = h.set_iopl(1);
    // SAFETY: I/O privilege level 1 was just set for this PV kernel (physdev.h
    // PHYSDEVOP_set_iopl: Xen then emulates `out` from guest kernel mode); port
    // 0xf4 is QEMU's exit device under the testbed.
    unsafe { super::debug_exit::write(code) };
    shutdown_reboot(&h)
}

/// The console for the panic handler.
pub(crate) fn panic_console() -> Console<'static, PvHypercall> {
    static BACKEND: PvHypercall = {
        // SAFETY: as in `backend`.
        unsafe { PvHypercall::new() }
    };
    Console(&BACKEND)
}
