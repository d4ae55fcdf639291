//! The arm64 guest: a Linux arm64 Image, entered by Xen at EL1 with the MMU off
//! and `x0` = the device tree, loaded wherever dom0's RAM is.
//!
//! The entry applies the image's own relocations (it is linked at 0 as a PIE),
//! zeroes `.bss`, and turns the MMU on with an identity map (Normal Write-Back
//! Inner-Shareable for RAM), which `Aarch64Hypercall::new` requires before memory
//! is shared with Xen.

use super::RawMemory;
use core::arch::global_asm;

use xen_hypercall::prelude::*;
use xen_hypercall::{Error, Gfn, MapSpace};
use xen_hypercall_native::Aarch64Hypercall;

#[cfg(not(feature = "domu"))]
use crate::cases::{self, Console, Expect, Fail, GuestReporter};
use crate::shared_info::SharedInfo;

/// Xen 4.17 arm64's `HYPERVISOR_VIRT_START` (`XEN_VIRT_START`, 2 MiB: Xen's
/// own mapping), which `XENVER_platform_parameters` reports.
#[cfg(not(feature = "domu"))]
const AARCH64_VIRT_START: u64 = 0x0020_0000;

global_asm!(
    ".pushsection .text.head, \"ax\"",
    ".global _head",
    "_head:",
    // Linux arm64 Image header (Documentation/arch/arm64/booting.rst).
    "b 1f",             // code0
    ".long 0",          // code1
    ".quad 0",          // text_offset
    ".quad _image_size", // image_size, .bss included
    ".quad 0xa",        // flags: little endian, 4K pages, anywhere in RAM
    ".quad 0, 0, 0",
    ".ascii \"ARM\\x64\"",
    ".long 0",
    "1:",
    "mov x19, x0",
    // CPACR_EL1.FPEN = 0b11: the target's code uses FP/SIMD registers (memcpy, moves).
    "mov x1, #(3 << 20)",
    "msr cpacr_el1, x1",
    "isb",
    // Relocate: add the load address (linked at 0) to every R_AARCH64_RELATIVE.
    "adr x20, _head",
    "adrp x1, __rela_start",
    "add x1, x1, :lo12:__rela_start",
    "adrp x2, __rela_end",
    "add x2, x2, :lo12:__rela_end",
    "2:",
    "cmp x1, x2",
    "b.hs 3f",
    "ldp x3, x4, [x1], #16",
    "ldr x5, [x1], #8",
    "cmp w4, #1027",
    "b.ne 2b",
    "add x5, x5, x20",
    "str x5, [x3, x20]",
    "b 2b",
    "3:",
    // Zero .bss.
    "adrp x1, __bss_start",
    "add x1, x1, :lo12:__bss_start",
    "adrp x2, __bss_end",
    "add x2, x2, :lo12:__bss_end",
    "4:",
    "cmp x1, x2",
    "b.hs 5f",
    "stp xzr, xzr, [x1], #16",
    "b 4b",
    "5:",
    // Identity map, 4K granule, 39-bit VA, level-1 1 GiB blocks: 0..1 GiB as
    // {first_gib} says (dom0: Device, MAIR index 0; domU: Normal, for its rings
    // and grant table there), 1..4 GiB Normal WB (index 1), inner shareable, AF set.
    "adrp x1, {l1}",
    "add x1, x1, :lo12:{l1}",
    "mov x2, #{first_gib}",
    "str x2, [x1]",
    "mov x3, #1",
    "6:",
    "lsl x2, x3, #30",
    "mov x4, #0x705",     // block | attr 1 | inner shareable | AF
    "orr x2, x2, x4",
    "str x2, [x1, x3, lsl #3]",
    "add x3, x3, #1",
    "cmp x3, #4",
    "b.ne 6b",
    "dc civac, x1",
    "dsb sy",
    "ldr x2, =0xff00",    // MAIR: attr0 Device-nGnRnE, attr1 Normal WB RW-allocate
    "msr mair_el1, x2",
    // TCR: T0SZ 25, IRGN0/ORGN0 WB-WA, SH0 inner, TG0 4K, EPD1, IPS 40 bits.
    "ldr x2, =0x200803519",
    "msr tcr_el1, x2",
    "msr ttbr0_el1, x1",
    "isb",
    "tlbi vmalle1",
    "dsb nsh",
    "isb",
    "mrs x2, sctlr_el1",
    "orr x2, x2, #0x1",    // M
    "orr x2, x2, #0x4",    // C
    "orr x2, x2, #0x1000", // I
    "msr sctlr_el1, x2",
    "isb",
    "adrp x1, {stack}",
    "add x1, x1, :lo12:{stack}",
    "add sp, x1, #{stack_size}",
    "mov x0, x19",
    "bl {main}",
    "7: wfi",
    "b 7b",
    ".ltorg",
    ".popsection",
    l1 = sym L1,
    first_gib = const FIRST_GIB,
    stack = sym STACK,
    stack_size = const STACK_SIZE,
    main = sym aarch64_main,
);

/// The level-1 block descriptor of 0..1 GiB. Dom0: Device (block | AF, attr 0):
/// its devices live there. DomU: Normal WB inner shareable (block | attr 1 | SH |
/// AF), as `arch-arm.h` requires of shared memory: Xen's guest memory map puts the
/// grant table (0x38000000) and the console and xenstore pages (0x39000000) there.
const FIRST_GIB: u64 = if cfg!(feature = "domu") { 0x705 } else { 0x401 };

const STACK_SIZE: usize = 0x1000 * 15;

static STACK: RawMemory<[u8; STACK_SIZE]> = RawMemory::new([0; STACK_SIZE]);

static L1: RawMemory<[u64; 512]> = RawMemory::new([0; 512]);

/// The page the shared info frame is mapped over.
static SHARED_INFO_SLOT: RawMemory<[u8; 4096]> = RawMemory::new([0; 4096]);

fn backend() -> Aarch64Hypercall {
    // SAFETY: this Image is booted by Xen as dom0 or a domU at EL1 (testbed
    // contract), and the entry code turned the MMU on with every RAM page Normal
    // Write-Back Inner-Shareable before any Rust code ran.
    unsafe { Aarch64Hypercall::new() }
}

#[cfg(not(feature = "domu"))]
crate::arch::zero_cost_probe!(Aarch64Hypercall);

/// Maps the shared info page at `SHARED_INFO_SLOT` with `XENMEM_add_to_physmap`.
fn map_shared_info(h: &Aarch64Hypercall) -> Result<SharedInfo, Error> {
    let addr = SHARED_INFO_SLOT.as_mut_ptr() as u64;
    // SAFETY: the slot is a page-aligned static of ours that Rust only touches
    // through raw pointers, so replacing its frame breaks no Rust value; it is then
    // accessed only through `SharedInfo`'s atomics, mapped Normal WB (arch-arm.h
    // requires cacheable memory for shared pages). Identity map: gfn = addr >> 12.
    unsafe { h.add_to_physmap(DomId::SELF, MapSpace::SHARED_INFO, 0, Gfn(addr >> 12)) }?;
    // SAFETY: mapped for the program's life, used only through `SharedInfo`.
    Ok(unsafe { SharedInfo::new(addr as *const u8) })
}

#[cfg(not(feature = "domu"))]
extern "C" fn aarch64_main(dtb: usize) -> ! {
    crate::upcall::set_device_tree(dtb);
    let h = backend();
    let mut reporter = GuestReporter::new(Console(&h));
    cases::run_common(
        &h,
        &mut reporter,
        map_shared_info(&h),
        &Expect {
            capability: "xen-3.0-aarch64",
            virt_start: AARCH64_VIRT_START,
            translated: true,
        },
    );
    crate::grant::run(&h, &mut reporter, &crate::grant::Translated);
    reporter.case(
        "zero_cost_probe",
        probe_xen_version(&h).map(drop).map_err(Fail::from),
    );
    exit(cases::finish(&h, reporter))
}

#[cfg(not(feature = "domu"))]
/// Ends the run with semihosting `SYS_EXIT` (`ADP_Stopped_ApplicationExit`, `code`).
pub(crate) fn exit(code: u8) -> ! {
    let block: [u64; 2] = [0x20026, u64::from(code)];
    // SAFETY: `hlt #0xf000` is the A64 semihosting call, which QEMU
    // (`-semihosting-config enable=on`) intercepts: x0 = 0x18 (SYS_EXIT),
    // x1 = the address of the two-word parameter block, which QEMU only reads.
    unsafe {
        core::arch::asm!("hlt #0xf000", in("x0") 0x18u64, in("x1") block.as_ptr(), options(nostack, readonly));
    }
    let _ = backend().shutdown(ShutdownReason::REBOOT);
    loop {
        core::hint::spin_loop();
    }
}

#[cfg(not(feature = "domu"))]
/// The console for the panic handler.
pub(crate) fn panic_console() -> Console<'static, Aarch64Hypercall> {
    static BACKEND: Aarch64Hypercall = {
        // SAFETY: as in `backend`.
        unsafe { Aarch64Hypercall::new() }
    };
    Console(&BACKEND)
}

/// The domU: rings from HVM params, the grant table over this page.
#[cfg(feature = "domu")]
static GRANT_TABLE_SLOT: RawMemory<[u8; 4096]> = RawMemory::new([0; 4096]);

#[cfg(feature = "domu")]
extern "C" fn aarch64_main(dtb: usize) -> ! {
    crate::domu::run(&crate::domu::Translated {
        h: backend(),
        map_shared_info,
        grant_slot: GRANT_TABLE_SLOT.as_mut_ptr().cast(),
        // The identity map's end (4 GiB).
        mapped_end: 4 << 30,
        cmdline: bootargs(dtb),
    })
}

/// The device tree's `/chosen/bootargs` (libxl writes xl's `extra` there), without its NUL;
/// empty if there is none.
#[cfg(feature = "domu")]
fn bootargs(dtb: usize) -> &'static [u8] {
    // SAFETY: `dtb` is the device tree libxl's builder placed and Xen passed in x0, in
    // identity-mapped RAM outside this program's image, which nothing writes afterwards.
    let Ok(fdt) = (unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }) else {
        return &[];
    };
    let args = fdt
        .find_node("/chosen")
        .and_then(|chosen| chosen.property("bootargs"))
        .map_or(&[][..], |p| p.value);
    args.strip_suffix(b"\0").unwrap_or(args)
}

/// The domU panic handler's end.
#[cfg(feature = "domu")]
pub(crate) fn domu_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::domu::panic(backend(), info)
}
