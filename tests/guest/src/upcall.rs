//! PVH: event-channel upcalls as interrupts. `HVM_PARAM_CALLBACK_IRQ` with
//! type vector makes Xen inject `UPCALL_VECTOR` while vCPU 0's
//! `evtchn_upcall_pending` is set (no local APIC involved, no EOI); an IDT
//! entry sends it to a stub that saves the caller-saved registers and calls
//! `RawEventChannel::handle_upcall`, which wakes the waiting future.

use core::arch::{asm, global_asm};
use core::future::Future;
use core::pin::pin;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use xen_evtchn::EventChannel;
use xen_hypercall::prelude::*;
use xen_hypercall::{Error, HvmParam};

use crate::cases::{CaseResult, fail};

/// The vector Xen injects for event-channel upcalls.
const UPCALL_VECTOR: usize = 0xf3;
/// `HVMIRQ_callback_vector` (hvm/params.h), in bits 63:56 of the parameter.
const CALLBACK_VIA_VECTOR: u64 = 2 << 56;

/// The IDT: 256 16-byte gates, only `UPCALL_VECTOR` present.
static mut IDT: [u64; 512] = [0; 512];

/// What the interrupt calls: a function and its argument (the channel).
static HANDLER: AtomicUsize = AtomicUsize::new(0);
static CONTEXT: AtomicUsize = AtomicUsize::new(0);
/// Upcalls taken.
static UPCALLS: AtomicUsize = AtomicUsize::new(0);
/// Set by the future's waker.
static WOKEN: AtomicBool = AtomicBool::new(false);

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
    entry = sym upcall_entry,
);

unsafe extern "C" {
    fn evtchn_upcall_stub();
}

extern "C" fn upcall_entry() {
    UPCALLS.fetch_add(1, Ordering::SeqCst);
    let handler = HANDLER.load(Ordering::SeqCst);
    if handler != 0 {
        // SAFETY: `HANDLER` only ever holds a `fn(usize)` (set in `upcall_case`).
        let handler: fn(usize) = unsafe { core::mem::transmute::<usize, fn(usize)>(handler) };
        handler(CONTEXT.load(Ordering::SeqCst));
    }
}

/// Calls `handle_upcall` on the channel at `context`.
fn dispatch<C: Upcall>(context: usize) {
    // SAFETY: `CONTEXT` holds the address of a live `C` while `HANDLER` is
    // this function (`upcall_case` clears both before the channel goes).
    let channel = unsafe { &*(context as *const C) };
    channel.upcall();
}

/// A channel with an upcall handler.
pub(crate) trait Upcall {
    fn upcall(&self);
}

fn waker() -> Waker {
    const VTABLE: RawWakerVTable = RawWakerVTable::new(
        |_| RawWaker::new(core::ptr::null(), &VTABLE),
        |_| WOKEN.store(true, Ordering::SeqCst),
        |_| WOKEN.store(true, Ordering::SeqCst),
        |_| {},
    );
    // SAFETY: the vtable's functions ignore the data pointer and only touch a static.
    unsafe { Waker::from_raw(RawWaker::new(core::ptr::null(), &VTABLE)) }
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

/// Binds a loopback pair on `channel`, waits on one end with upcalls on, and
/// checks the interrupt woke the future.
pub(crate) fn upcall_case<H, C>(h: &H, channel: &C) -> CaseResult
where
    H: XenHypercall<Error = Error>,
    C: EventChannel + xen_evtchn::AsyncEventChannel + Upcall,
{
    install_idt();
    let err = |e: xen_evtchn::Error| crate::cases::Fail::new(format_args!("{e}"));
    let a = channel.alloc_unbound(DomId::SELF).map_err(err)?;
    let b = channel
        .bind_interdomain(DomId::SELF, a.port())
        .map_err(err)?;
    let waker = waker();
    let mut cx = Context::from_waker(&waker);
    if pin!(b.wait()).poll(&mut cx).is_pending() {
        fail!("the bind's pending event was not seen");
    }
    let mut wait = pin!(a.wait());
    if wait.as_mut().poll(&mut cx).is_ready() {
        fail!("ready before the send");
    }
    // SAFETY: Xen will inject UPCALL_VECTOR, whose IDT gate (installed above)
    // runs a stub that preserves every register the interrupted code uses
    // and returns with iretq; nothing else of this guest's memory changes.
    unsafe {
        h.hvm_set_param(
            DomId::SELF,
            HvmParam::CALLBACK_IRQ,
            CALLBACK_VIA_VECTOR | UPCALL_VECTOR as u64,
        )
    }?;
    // Set only once the callback is on (interrupts are still off), so an
    // early return above leaves no handler pointing at `channel`.
    CONTEXT.store(core::ptr::from_ref(channel) as usize, Ordering::SeqCst);
    HANDLER.store(dispatch::<C> as fn(usize) as usize, Ordering::SeqCst);
    WOKEN.store(false, Ordering::SeqCst);
    let before = UPCALLS.load(Ordering::SeqCst);
    // SAFETY: the IDT has the gate for the only interrupt Xen sends this guest.
    unsafe { asm!("sti", options(nomem, nostack)) };
    let sent = b.notify();
    let mut spins = 0u32;
    while !WOKEN.load(Ordering::SeqCst) && spins < 100_000_000 {
        core::hint::spin_loop();
        spins += 1;
    }
    // SAFETY: turning interrupts off again is always allowed at CPL 0.
    unsafe { asm!("cli", options(nomem, nostack)) };
    // SAFETY: 0 turns the callback off: Xen injects nothing more.
    let off = unsafe { h.hvm_set_param(DomId::SELF, HvmParam::CALLBACK_IRQ, 0) };
    HANDLER.store(0, Ordering::SeqCst);
    CONTEXT.store(0, Ordering::SeqCst);
    sent.map_err(err)?;
    off?;
    let upcalls = UPCALLS.load(Ordering::SeqCst) - before;
    if !WOKEN.load(Ordering::SeqCst) {
        fail!("no wake-up after {} upcalls", upcalls);
    }
    match wait.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(())) if upcalls > 0 => Ok(()),
        other => fail!("after {} upcalls: {:?}", upcalls, other),
    }
}
