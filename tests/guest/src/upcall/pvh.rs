//! PVH: `HVM_PARAM_CALLBACK_IRQ` with type vector makes Xen inject
//! `UPCALL_VECTOR` while vCPU 0's `evtchn_upcall_pending` is set (no local
//! APIC involved, no EOI); an IDT gate sends it to a stub that saves the
//! caller-saved registers and calls `upcall_entry`.

use core::arch::{asm, global_asm};

use xen_hypercall::prelude::*;
use xen_hypercall::{Error, HvmParam};

use crate::fail::Fail;

/// The case's name.
#[cfg(not(feature = "domu"))]
pub(crate) const CASE: &str = "evtchn_raw_upcall_pvh";

/// The vector Xen injects for event-channel upcalls.
const UPCALL_VECTOR: usize = 0xf3;
/// `HVMIRQ_callback_vector` (hvm/params.h), in bits 63:56 of the parameter.
const CALLBACK_VIA_VECTOR: u64 = 2 << 56;

/// The IDT: 256 16-byte gates, only `UPCALL_VECTOR` present.
static mut IDT: [u64; 512] = [0; 512];

global_asm!(
    ".pushsection .text",
    ".global evtchn_upcall_stub",
    "evtchn_upcall_stub:",
    // The CPU pushed SS, RSP, RFLAGS, CS, RIP onto a 16-aligned stack (40
    // bytes); nine saved registers make it 16-aligned again for the call.
    "push rax", "push rcx", "push rdx", "push rsi", "push rdi",
    "push r8", "push r9", "push r10", "push r11",
    "cld",
    "call {entry}",
    "pop r11", "pop r10", "pop r9", "pop r8",
    "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rax",
    "iretq",
    ".popsection",
    entry = sym super::upcall_entry,
);

unsafe extern "C" {
    fn evtchn_upcall_stub();
}

/// Installs the IDT with the upcall gate.
fn install_idt() {
    let handler = evtchn_upcall_stub as *const () as usize as u64;
    // Interrupt gate: present, DPL 0, type 0xE; code selector 0x08 (the PVH GDT).
    let low = (handler & 0xffff) | (0x08 << 16) | (0x8e << 40) | ((handler >> 16) & 0xffff) << 48;
    let high = handler >> 32;
    let idt = &raw mut IDT;
    // SAFETY: the only writes to `IDT`, before `lidt` hands it to the CPU;
    // one CPU, interrupts off.
    unsafe {
        (*idt)[2 * UPCALL_VECTOR] = low;
    }
    // SAFETY: as above.
    unsafe {
        (*idt)[2 * UPCALL_VECTOR + 1] = high;
    }
    #[repr(C, packed)]
    struct Idtr {
        limit: u16,
        base: u64,
    }
    let idtr = Idtr {
        limit: (512 * 8 - 1) as u16,
        base: idt as u64,
    };
    // SAFETY: `idtr` describes the static IDT (256 gates, only the upcall one
    // present); interrupts are off until `sti` below.
    unsafe { asm!("lidt [{}]", in(reg) &idtr, options(readonly, nostack, preserves_flags)) };
}

/// The upcall routed to the IDT gate; interrupts (`RFLAGS.IF`) let it in.
pub(super) struct Route;

impl Route {
    /// Installs the gate and asks Xen for the vector; interrupts stay off.
    pub(super) fn install<H: XenHypercall<Error = Error>>(
        h: &H,
        _shared: *const u8,
    ) -> Result<Self, Fail> {
        install_idt();
        // SAFETY: Xen will inject UPCALL_VECTOR, whose IDT gate (installed
        // above) runs a stub that preserves every register the interrupted
        // code uses and returns with iretq; nothing else of this guest's
        // memory changes.
        unsafe {
            h.hvm_set_param(
                DomId::SELF,
                HvmParam::CALLBACK_IRQ,
                CALLBACK_VIA_VECTOR | UPCALL_VECTOR as u64,
            )
        }?;
        Ok(Self)
    }

    /// Interrupts on.
    pub(super) fn unblock(&self) {
        // SAFETY: the IDT has the gate for the only interrupt Xen sends this guest.
        unsafe { asm!("sti", options(nomem, nostack)) };
    }

    /// Interrupts off.
    pub(super) fn block(&self) {
        // SAFETY: turning interrupts off again is always allowed at CPL 0.
        unsafe { asm!("cli", options(nomem, nostack)) };
    }

    /// Turns the callback off: Xen injects nothing more.
    pub(super) fn remove<H: XenHypercall<Error = Error>>(self, h: &H) -> Result<(), Error> {
        // SAFETY: 0 turns the callback off.
        unsafe { h.hvm_set_param(DomId::SELF, HvmParam::CALLBACK_IRQ, 0) }
    }
}
