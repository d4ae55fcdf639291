//! aarch64: Xen raises the event-channel PPI that dom0's device tree names
//! (the `hypervisor` node, compatible `xen,xen`, `interrupts = <1 15 0xf08>`:
//! PPI 15, INTID 31, `GUEST_EVTCHN_PPI`) at vCPU 0's virtual GICv3 while
//! `evtchn_upcall_pending` is set. The route: the PPI enabled at vCPU 0's
//! redistributor (Group 1, which Xen's vGICv3 makes every interrupt), Group 1
//! on at the distributor and the CPU interface, and `VBAR_EL1` pointing at a
//! vector table whose IRQ entry saves the caller-saved registers (FP/SIMD too:
//! the target's code uses them), acknowledges the interrupt, calls
//! `upcall_entry` and ends it (EOI). `PSTATE.I` lets it in.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use xen_hypercall::Error;
use xen_hypercall::prelude::*;

use crate::fail::{Fail, fail};

/// The case's name.
#[cfg(not(feature = "domu"))]
pub(crate) const CASE: &str = "evtchn_raw_upcall_aarch64";

/// The device tree Xen passed at boot (`x0`), for `install`.
static DEVICE_TREE: AtomicUsize = AtomicUsize::new(0);
/// The INTID the IRQ handler passes to `upcall_entry`.
static EVTCHN_INTID: AtomicU32 = AtomicU32::new(u32::MAX);

/// Records the device tree's address (identity-mapped, never written).
pub(crate) fn set_device_tree(dtb: usize) {
    DEVICE_TREE.store(dtb, Ordering::SeqCst);
}

/// GICv3 register offsets (GIC architecture specification, 12.9 and 12.11).
const GICD_CTLR: usize = 0x0;
/// `GICD_CTLR.EnableGrp1A`: the one bit Xen's vGICv3 lets a guest change.
const GICD_CTLR_ENABLE_G1A: u32 = 1 << 1;
/// vCPU 0's SGI/PPI frame follows its 64 KiB RD frame.
const GICR_SGI_BASE: usize = 0x1_0000;
const GICR_ISENABLER0: usize = GICR_SGI_BASE + 0x100;
const GICR_ICENABLER0: usize = GICR_SGI_BASE + 0x180;
const GICR_IPRIORITYR: usize = GICR_SGI_BASE + 0x400;
/// INTIDs 1020..1023 are special (1023: no interrupt pending).
const INTID_SPECIAL: u32 = 1020;

global_asm!(
    // The vector table: 16 entries of 0x80 bytes, 2 KiB aligned. Only an IRQ
    // taken at EL1 on SP_EL1 (offset 0x280) is expected; anything else spins,
    // and the testbed's timeout names the case.
    ".pushsection .text",
    ".balign 2048",
    ".global evtchn_vectors",
    "evtchn_vectors:",
    ".rept 5",
    "b .",
    ".balign 0x80",
    ".endr",
    "b evtchn_irq_el1",
    ".balign 0x80",
    ".rept 10",
    "b .",
    ".balign 0x80",
    ".endr",
    "evtchn_irq_el1:",
    "stp x0, x1, [sp, #-16]!",
    "stp x2, x3, [sp, #-16]!",
    "stp x4, x5, [sp, #-16]!",
    "stp x6, x7, [sp, #-16]!",
    "stp x8, x9, [sp, #-16]!",
    "stp x10, x11, [sp, #-16]!",
    "stp x12, x13, [sp, #-16]!",
    "stp x14, x15, [sp, #-16]!",
    "stp x16, x17, [sp, #-16]!",
    "stp x18, x29, [sp, #-16]!",
    "stp x30, xzr, [sp, #-16]!",
    "stp q0, q1, [sp, #-32]!",
    "stp q2, q3, [sp, #-32]!",
    "stp q4, q5, [sp, #-32]!",
    "stp q6, q7, [sp, #-32]!",
    "stp q16, q17, [sp, #-32]!",
    "stp q18, q19, [sp, #-32]!",
    "stp q20, q21, [sp, #-32]!",
    "stp q22, q23, [sp, #-32]!",
    "stp q24, q25, [sp, #-32]!",
    "stp q26, q27, [sp, #-32]!",
    "stp q28, q29, [sp, #-32]!",
    "stp q30, q31, [sp, #-32]!",
    // The callee-saved v8..v15 keep only their low halves across a call.
    "stp q8, q9, [sp, #-32]!",
    "stp q10, q11, [sp, #-32]!",
    "stp q12, q13, [sp, #-32]!",
    "stp q14, q15, [sp, #-32]!",
    "mrs x0, fpcr",
    "mrs x1, fpsr",
    "stp x0, x1, [sp, #-16]!",
    "bl {irq}",
    "ldp x0, x1, [sp], #16",
    "msr fpcr, x0",
    "msr fpsr, x1",
    "ldp q14, q15, [sp], #32",
    "ldp q12, q13, [sp], #32",
    "ldp q10, q11, [sp], #32",
    "ldp q8, q9, [sp], #32",
    "ldp q30, q31, [sp], #32",
    "ldp q28, q29, [sp], #32",
    "ldp q26, q27, [sp], #32",
    "ldp q24, q25, [sp], #32",
    "ldp q22, q23, [sp], #32",
    "ldp q20, q21, [sp], #32",
    "ldp q18, q19, [sp], #32",
    "ldp q16, q17, [sp], #32",
    "ldp q6, q7, [sp], #32",
    "ldp q4, q5, [sp], #32",
    "ldp q2, q3, [sp], #32",
    "ldp q0, q1, [sp], #32",
    "ldp x30, xzr, [sp], #16",
    "ldp x18, x29, [sp], #16",
    "ldp x16, x17, [sp], #16",
    "ldp x14, x15, [sp], #16",
    "ldp x12, x13, [sp], #16",
    "ldp x10, x11, [sp], #16",
    "ldp x8, x9, [sp], #16",
    "ldp x6, x7, [sp], #16",
    "ldp x4, x5, [sp], #16",
    "ldp x2, x3, [sp], #16",
    "ldp x0, x1, [sp], #16",
    "eret",
    ".popsection",
    irq = sym irq,
);

unsafe extern "C" {
    static evtchn_vectors: u8;
}

/// The IRQ handler: acknowledge (`ICC_IAR1_EL1`), dispatch, end (`ICC_EOIR1_EL1`,
/// which with `EOImode` 0 also deactivates). IRQs stay masked throughout.
extern "C" fn irq() {
    let iar: u64;
    // SAFETY: reading ICC_IAR1_EL1 acknowledges the highest-priority pending
    // Group 1 interrupt of this CPU's (virtual) interface; no memory touched.
    unsafe { asm!("mrs {}, S3_0_C12_C12_0", out(reg) iar, options(nomem, nostack)) };
    let intid = (iar & 0xff_ffff) as u32;
    if intid >= INTID_SPECIAL {
        return;
    }
    if intid == EVTCHN_INTID.load(Ordering::SeqCst) {
        super::upcall_entry();
    }
    // SAFETY: ends the interrupt just acknowledged; no memory touched.
    unsafe { asm!("msr S3_0_C12_C12_1, {}", in(reg) iar, options(nomem, nostack)) };
}

/// What the device tree says: the event-channel INTID and the GICv3's
/// distributor and (vCPU 0's) redistributor.
struct Gic {
    intid: u32,
    distributor: usize,
    redistributor: usize,
}

fn from_device_tree() -> Result<Gic, Fail> {
    let dtb = DEVICE_TREE.load(Ordering::SeqCst);
    // SAFETY: `dtb` is the device tree Xen passed in x0 (recorded by the entry
    // code's caller), in identity-mapped RAM this program never writes.
    let fdt = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }
        .map_err(|e| Fail::new(format_args!("device tree at {dtb:#x}: {e:?}")))?;
    let intid = xen_guest::dt::Hypervisor::from_fdt(&fdt)
        .map_err(|e| Fail::new(format_args!("the device tree's hypervisor node: {e}")))?
        .event_interrupt
        .intid;
    let Some(gic) = fdt.find_compatible(&["arm,gic-v3"]) else {
        fail!("no arm,gic-v3 node (a GICv2 is not handled)");
    };
    let mut regs = gic.reg().into_iter().flatten();
    match (regs.next(), regs.next()) {
        (Some(d), Some(r)) => Ok(Gic {
            intid,
            distributor: d.starting_address as usize,
            redistributor: r.starting_address as usize,
        }),
        _ => fail!("the GIC node lacks its distributor and redistributor"),
    }
}

/// A 32-bit GIC register (Device memory: the identity map's first GiB).
fn gic_write(address: usize, value: u32) {
    // SAFETY: a GIC register named by the device tree, 4-aligned, in the
    // first GiB, which the entry code maps as Device memory; Xen's vGIC
    // emulates the access.
    unsafe { core::ptr::write_volatile(address as *mut u32, value) }
}

fn gic_read(address: usize) -> u32 {
    // SAFETY: as in `gic_write`.
    unsafe { core::ptr::read_volatile(address as *const u32) }
}

/// The upcall routed to the PPI's vector; `PSTATE.I` lets it in.
pub(super) struct Route {
    gic: Gic,
}

impl Route {
    /// Finds the GIC and the PPI, installs the vectors, enables the PPI.
    pub(super) fn install<H: XenHypercall<Error = Error>>(
        _h: &H,
        _shared: *const u8,
    ) -> Result<Self, Fail> {
        let gic = from_device_tree()?;
        EVTCHN_INTID.store(gic.intid, Ordering::SeqCst);
        let vectors = &raw const evtchn_vectors;
        // SAFETY: IRQs are masked (PSTATE.I, set since boot); the table's IRQ
        // entry preserves every register the interrupted code uses and returns
        // with `eret`. System register writes need no memory.
        unsafe {
            asm!(
                "msr vbar_el1, {vectors}",
                // ICC_SRE_EL1.SRE: the system-register interface (Xen's vGICv3 has only it).
                "mrs {t}, S3_0_C12_C12_5",
                "orr {t}, {t}, #1",
                "msr S3_0_C12_C12_5, {t}",
                "isb",
                // ICC_PMR_EL1: every priority passes.
                "mov {t}, #0xff",
                "msr S3_0_C4_C6_0, {t}",
                // ICC_IGRPEN1_EL1: Group 1 on.
                "mov {t}, #1",
                "msr S3_0_C12_C12_7, {t}",
                "isb",
                vectors = in(reg) vectors,
                t = out(reg) _,
                options(nostack),
            );
        }
        let ctlr = gic_read(gic.distributor + GICD_CTLR);
        gic_write(gic.distributor + GICD_CTLR, ctlr | GICD_CTLR_ENABLE_G1A);
        // Priority 0x80 for the PPI (one byte of the word holding INTIDs n & !3..).
        let word = gic.redistributor + GICR_IPRIORITYR + (gic.intid as usize & !3);
        let shift = 8 * (gic.intid % 4);
        let priorities = gic_read(word) & !(0xff << shift);
        gic_write(word, priorities | (0x80 << shift));
        gic_write(gic.redistributor + GICR_ISENABLER0, 1 << gic.intid);
        Ok(Self { gic })
    }

    /// IRQs on.
    pub(super) fn unblock(&self) {
        // SAFETY: the vectors are installed; unmasking IRQs touches no memory.
        unsafe { asm!("msr daifclr, #2", options(nomem, nostack)) };
    }

    /// IRQs off.
    pub(super) fn block(&self) {
        // SAFETY: masking IRQs is always allowed at EL1.
        unsafe { asm!("msr daifset, #2", options(nomem, nostack)) };
    }

    /// Disables the PPI: Xen may keep raising it, the GIC holds it back.
    pub(super) fn remove<H: XenHypercall<Error = Error>>(self, _h: &H) -> Result<(), Error> {
        gic_write(
            self.gic.redistributor + GICR_ICENABLER0,
            1 << self.gic.intid,
        );
        Ok(())
    }
}
