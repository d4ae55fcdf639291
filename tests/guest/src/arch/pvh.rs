//! The PVH guest: `XEN_ELFNOTE_PHYS32_ENTRY`, a 32-bit entry that turns on long
//! mode with an identity map of the first 1 GiB (4 GiB for the domU, whose
//! console and xenstore pages sit just below 4 GiB), `vmcall`/`vmmcall`
//! hypercalls.
//!
//! Xen enters `pvh_start` in 32-bit protected mode, paging off, `ebx` = the
//! physical address of `hvm_start_info` (public/arch-x86/hvm/start_info.h).

use super::RawMemory;
use core::arch::global_asm;

use xen_hypercall::prelude::*;
use xen_hypercall::{Error, Gfn, MapSpace};
use xen_hypercall_native::HvmHypercall;
#[cfg(not(feature = "domu"))]
use xen_hypercall_native::{HypercallPage, HypercallPageFrame, XenCpuid};

#[cfg(not(feature = "domu"))]
use crate::cases::{self, Console, Expect, Fail, GuestReporter};
use crate::shared_info::SharedInfo;

xen_guest::pvh_elf_note!("pvh_start");

global_asm!(
    ".pushsection .text.entry, \"ax\"",
    ".code32",
    ".global _start",
    "_start:",
    "pvh_start:",
    "mov esp, offset {stack} + {stack_size}",
    "mov esi, ebx",
    // PML4[0] -> PDPT, PDPT[g] -> PD page g, PD[i] = i * 2 MiB, present | writable | large.
    "mov eax, offset {pdpt}",
    "or eax, 3",
    "mov dword ptr [{pml4}], eax",
    "xor ecx, ecx",
    "2:",
    "mov eax, ecx",
    "shl eax, 12",
    "add eax, offset {pd}",
    "or eax, 3",
    "mov dword ptr [{pdpt} + ecx * 8], eax",
    "mov dword ptr [{pdpt} + ecx * 8 + 4], 0",
    "inc ecx",
    "cmp ecx, {gib}",
    "jne 2b",
    "xor ecx, ecx",
    "3:",
    "mov eax, ecx",
    "shl eax, 21",
    "or eax, 0x83",
    "mov dword ptr [{pd} + ecx * 8], eax",
    "mov dword ptr [{pd} + ecx * 8 + 4], 0",
    "inc ecx",
    "cmp ecx, {gib} * 512",
    "jne 3b",
    // CR4.PAE, CR3, EFER.LME, CR0.PG | PE, then a far return into 64-bit code.
    "mov eax, cr4",
    "or eax, 0x20",
    "mov cr4, eax",
    "mov eax, offset {pml4}",
    "mov cr3, eax",
    "mov ecx, 0xc0000080",
    "rdmsr",
    "or eax, 0x100",
    "wrmsr",
    "mov eax, cr0",
    "or eax, 0x80000001",
    "mov cr0, eax",
    "lgdt [pvh_gdt_ptr]",
    "push 0x08",
    "mov eax, offset pvh_long_mode",
    "push eax",
    "retf",
    ".code64",
    "pvh_long_mode:",
    "mov ax, 0x10",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "xor eax, eax",
    "mov fs, ax",
    "mov gs, ax",
    "mov edi, esi",
    "call {main}",
    "5: hlt",
    "jmp 5b",
    ".popsection",
    ".pushsection .rodata",
    ".balign 8",
    "pvh_gdt:",
    ".quad 0",
    ".quad 0x00af9a000000ffff",
    ".quad 0x00cf92000000ffff",
    "pvh_gdt_end:",
    ".balign 8",
    "pvh_gdt_ptr:",
    ".word pvh_gdt_end - pvh_gdt - 1",
    ".quad pvh_gdt",
    ".popsection",
    stack = sym STACK,
    stack_size = const STACK_SIZE,
    pml4 = sym PML4,
    pdpt = sym PDPT,
    pd = sym PD,
    gib = const IDENTITY_GIB,
    main = sym pvh_main,
);

/// GiBs identity-mapped from 0.
const IDENTITY_GIB: usize = if cfg!(feature = "domu") { 4 } else { 1 };

const STACK_SIZE: usize = 64 * 1024;

static STACK: RawMemory<[u8; STACK_SIZE]> = RawMemory::new([0; STACK_SIZE]);

static PML4: RawMemory<[u64; 512]> = RawMemory::new([0; 512]);
static PDPT: RawMemory<[u64; 512]> = RawMemory::new([0; 512]);
static PD: RawMemory<[u64; 512 * IDENTITY_GIB]> = RawMemory::new([0; 512 * IDENTITY_GIB]);

/// The frame Xen fills with hypercall stubs for the `hypercall_page` case.
#[cfg(not(feature = "domu"))]
static mut HYPERCALL_PAGE: HypercallPageFrame = HypercallPageFrame::new();
/// A frame handed to `install` with `HYPERCALL_PAGE`'s address: Xen fills the
/// other page, this one stays zero, and `install` must refuse it.
#[cfg(not(feature = "domu"))]
static mut UNFILLED_PAGE: HypercallPageFrame = HypercallPageFrame::new();

/// The page the shared info frame is mapped over.
static SHARED_INFO_SLOT: RawMemory<[u8; 4096]> = RawMemory::new([0; 4096]);

#[cfg(not(feature = "domu"))]
crate::arch::zero_cost_probe!(HvmHypercall);

/// Maps the shared info page at `SHARED_INFO_SLOT` with `XENMEM_add_to_physmap`
/// (XENMAPSPACE_shared_info, index 0). Virtual = physical (identity map).
fn map_shared_info(h: &HvmHypercall) -> Result<SharedInfo, Error> {
    let addr = SHARED_INFO_SLOT.as_mut_ptr() as u64;
    // SAFETY: the slot is a page-aligned static of ours that Rust only touches
    // through raw pointers (never as a value), so replacing its frame with the
    // shared info page breaks no Rust value; from here on it is accessed only
    // through `SharedInfo`'s atomics. Identity map: its gfn is `addr >> 12`.
    unsafe { h.add_to_physmap(DomId::SELF, MapSpace::SHARED_INFO, 0, Gfn(addr >> 12)) }?;
    // SAFETY: mapped for the program's life, used only through `SharedInfo`.
    Ok(unsafe { SharedInfo::new(addr as *const u8) })
}

#[cfg(not(feature = "domu"))]
/// `xen_version` through the hypercall page, compared with the direct call.
fn hypercall_page_case(direct: &HvmHypercall) -> cases::CaseResult {
    let frame = &raw mut HYPERCALL_PAGE;
    let unfilled = &raw mut UNFILLED_PAGE;
    // SAFETY: the only use of this static; `&mut` is handed over for good.
    let unfilled = unsafe { &mut *unfilled };
    // SAFETY: CPL 0 in a PVH guest, identity map. The address names
    // HYPERCALL_PAGE, a static no Rust reference points to yet (only the raw
    // pointer above): Xen writing stubs there breaks nothing.
    match unsafe { HypercallPage::install(unfilled, frame as u64) } {
        Err(Error::Unsupported(_)) => {}
        Err(other) => cases::fail!("install on a frame Xen did not fill: {other}"),
        Ok(_) => cases::fail!("install accepted a frame Xen did not fill"),
    }
    // SAFETY: the only use of this static, run once; `&mut` is handed over for good.
    let frame = unsafe { &mut *frame };
    let address = core::ptr::from_ref(frame) as u64;
    // SAFETY: CPL 0 in a PVH guest; identity map, so the virtual address is the
    // guest-physical one; the identity map is executable (no NX bits set).
    let page = unsafe { HypercallPage::install(frame, address) }?;
    let via_page = page.xen_version()?;
    let direct = direct.xen_version()?;
    if via_page != direct {
        cases::fail!("page says {via_page}, vmcall says {direct}");
    }
    // SAFETY: hypercall 23 (iret) is refused before any call is made.
    match unsafe { page.hypercall0(23) } {
        Err(Error::InvalidInput(_)) => Ok(()),
        other => cases::fail!("iret through the page gave {other:?}"),
    }
}

#[cfg(not(feature = "domu"))]
extern "C" fn pvh_main(_start_info: u32) -> ! {
    let h = match HvmHypercall::detect() {
        Ok(h) => h,
        // Without hypercalls there is no console: exit with failure.
        Err(_) => exit(1),
    };
    let mut reporter = GuestReporter::new(Console(&h));
    reporter.case("hvm_detect", Ok::<(), Fail>(()));
    reporter.out(format_args!("hypercall instruction {:?}", h.instruction()));
    reporter.case(
        "cpuid_version",
        (|| {
            let Some(xen) = XenCpuid::detect() else {
                cases::fail!("no Xen CPUID leaves")
            };
            let from_cpuid = xen.version();
            let from_hypercall = h.xen_version()?;
            if (from_cpuid.major, from_cpuid.minor) != (from_hypercall.major, from_hypercall.minor)
            {
                cases::fail!("CPUID says {from_cpuid}, XENVER_version says {from_hypercall}");
            }
            Ok(())
        })(),
    );
    cases::run_common(
        &h,
        &mut reporter,
        map_shared_info(&h),
        &Expect {
            capability: "hvm-3.0-x86_64",
            virt_start: cases::X86_64_VIRT_START,
            translated: true,
        },
    );
    reporter.case("hypercall_page", hypercall_page_case(&h));
    crate::grant::run(&h, &mut reporter, &crate::grant::Translated);
    reporter.case(
        "zero_cost_probe",
        probe_xen_version(&h).map(drop).map_err(Fail::from),
    );
    exit(cases::finish(&h, reporter))
}

#[cfg(not(feature = "domu"))]
/// Ends the run: `code` to the isa-debug-exit port, else a reboot.
pub(crate) fn exit(code: u8) -> ! {
    // SAFETY: CPL 0 in a PVH dom0, which may access port 0xf4; it is QEMU's exit
    // device under the testbed.
    unsafe { super::debug_exit::write(code) };
    if let Ok(h) = HvmHypercall::detect() {
        let _ = h.shutdown(ShutdownReason::REBOOT);
    }
    loop {
        core::hint::spin_loop();
    }
}

#[cfg(not(feature = "domu"))]
/// The console for the panic handler (a dummy writer without Xen).
pub(crate) fn panic_console() -> PanicConsole {
    PanicConsole(HvmHypercall::detect().ok())
}

#[cfg(not(feature = "domu"))]
/// The panic handler's console.
pub(crate) struct PanicConsole(Option<HvmHypercall>);

#[cfg(not(feature = "domu"))]
impl core::fmt::Write for PanicConsole {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        match &self.0 {
            Some(h) => Console(h).write_str(s),
            None => Err(core::fmt::Error),
        }
    }
}

/// The domU: rings from HVM params, the grant table over this page.
#[cfg(feature = "domu")]
static GRANT_TABLE_SLOT: RawMemory<[u8; 4096]> = RawMemory::new([0; 4096]);

#[cfg(feature = "domu")]
extern "C" fn pvh_main(start_info: u32) -> ! {
    let Ok(h) = HvmHypercall::detect() else {
        // Not on Xen: nothing to report to, nobody to tell.
        loop {
            core::hint::spin_loop();
        }
    };
    let mapped_end = (IDENTITY_GIB as u64) << 30;
    crate::domu::run(&crate::domu::Translated {
        h,
        map_shared_info,
        grant_slot: GRANT_TABLE_SLOT.as_mut_ptr().cast(),
        mapped_end,
        cmdline: cmdline(start_info, mapped_end),
    })
}

/// The command line `hvm_start_info` names, copied out (empty if there is none or it cannot be
/// read).
#[cfg(feature = "domu")]
fn cmdline(start_info: u32, mapped_end: u64) -> &'static [u8] {
    use xen_guest::pvh::{HvmStartInfo, IdentityMapped};
    // SAFETY: the entry code maps [0, mapped_end) one to one, readable; the domain builder
    // wrote hvm_start_info and what it names before entry, and nothing writes them since.
    let memory = unsafe { IdentityMapped::new(0..mapped_end) };
    let Ok(info) = HvmStartInfo::read(memory, u64::from(start_info)) else {
        return &[];
    };
    let mut line = alloc::vec![0u8; 1024];
    match info.cmdline(&mut line) {
        Ok(Some(text)) => {
            let len = text.len();
            line.truncate(len);
            line.leak()
        }
        _ => &[],
    }
}

/// The domU panic handler's end.
#[cfg(feature = "domu")]
pub(crate) fn domu_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match HvmHypercall::detect() {
        Ok(h) => crate::domu::panic(h, info),
        Err(_) => loop {
            core::hint::spin_loop();
        },
    }
}
