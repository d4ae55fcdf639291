//! PV: the event callback (`CALLBACKOP_register`, `CALLBACKTYPE_event`).
//! While vCPU 0's `evtchn_upcall_mask` is clear and `evtchn_upcall_pending`
//! set, Xen enters the callback on its way back to the guest (after a
//! hypercall, for instance) with a bounce frame on the current kernel stack,
//! 16-aligned first: `RCX, R11, RIP, CS, RFLAGS, RSP, SS` (x86_64/entry.S,
//! `create_bounce_frame`), having set `evtchn_upcall_mask` (the event is an
//! interrupt, `TBF_INTERRUPT`) and saved its old value as `RFLAGS.IF`. The stub
//! returns with `HYPERVISOR_iret`, whose frame (`struct iret_context`) is
//! `RAX, R11, RCX, flags` above the same `RIP..SS`; Xen restores the mask from
//! that `RFLAGS.IF` (pv/iret.c).

use core::arch::global_asm;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU8, Ordering};

use xen_hypercall::Error;
use xen_hypercall::prelude::*;
use xen_sys::{iret_context, shared_info, vcpu_info};

use crate::fail::Fail;

/// The case's name.
#[cfg(not(feature = "domu"))]
pub(crate) const CASE: &str = "evtchn_raw_upcall_pv";

/// `CALLBACKOP_register` and `CALLBACKTYPE_event` (public/callback.h).
const CALLBACKOP_REGISTER: usize = 0;
const CALLBACKTYPE_EVENT: u16 = 0;

/// `struct callback_register` on x86_64 (public/callback.h: `xen_callback_t`
/// is an `unsigned long` there).
#[repr(C)]
struct CallbackRegister {
    kind: u16,
    flags: u16,
    _pad: u32,
    address: u64,
}

// The stub's frame rewrite relies on the iret frame's layout.
const _: () = {
    assert!(offset_of!(iret_context, rax) == 0);
    assert!(offset_of!(iret_context, r11) == 8);
    assert!(offset_of!(iret_context, rcx) == 16);
    assert!(offset_of!(iret_context, flags) == 24);
    assert!(offset_of!(iret_context, rip) == 32);
    assert!(xen_sys::__HYPERVISOR_iret == 23);
};

global_asm!(
    ".pushsection .text",
    ".global evtchn_callback_pv",
    "evtchn_callback_pv:",
    // The interrupted RCX and R11 back into their registers: the stack is now
    // RIP, CS, RFLAGS, RSP, SS at 8 mod 16; nine saved registers make it
    // 16-aligned for the call.
    "pop rcx", "pop r11",
    "push rax", "push rcx", "push rdx", "push rsi", "push rdi",
    "push r8", "push r9", "push r10", "push r11",
    "cld",
    "call {entry}",
    "pop r11", "pop r10", "pop r9", "pop r8",
    "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rax",
    // HYPERVISOR_iret: flags 0 (not VGCF_in_syscall: Xen restores RCX and
    // R11 from the frame), then RCX, R11, RAX; it does not return here.
    "push 0", "push rcx", "push r11", "push rax",
    "mov eax, 23",
    "syscall",
    "ud2",
    ".popsection",
    entry = sym super::upcall_entry,
);

unsafe extern "C" {
    fn evtchn_callback_pv();
}

/// The upcall routed to the event callback; vCPU 0's `evtchn_upcall_mask`
/// lets it in.
pub(super) struct Route {
    mask: *const AtomicU8,
}

impl Route {
    /// Masks upcalls, then registers the callback.
    pub(super) fn install<H: XenHypercall<Error = Error>>(
        h: &H,
        shared: *const u8,
    ) -> Result<Self, Fail> {
        let offset = offset_of!(shared_info, vcpu_info) + offset_of!(vcpu_info, evtchn_upcall_mask);
        let route = Self {
            mask: shared.wrapping_add(offset).cast(),
        };
        route.block();
        let register = CallbackRegister {
            kind: CALLBACKTYPE_EVENT,
            flags: 0,
            _pad: 0,
            address: evtchn_callback_pv as *const () as usize as u64,
        };
        // SAFETY: CALLBACKOP_register copies the 16-byte `register` from this
        // PV guest's virtual address (copy_from_guest) and records the
        // address, a stub that preserves every register the interrupted code
        // uses and returns through HYPERVISOR_iret; upcalls stay masked.
        unsafe {
            h.hypercall2(
                xen_sys::__HYPERVISOR_callback_op as usize,
                [CALLBACKOP_REGISTER, core::ptr::from_ref(&register) as usize],
            )
        }?;
        Ok(route)
    }

    fn mask(&self) -> &AtomicU8 {
        // SAFETY: `mask` is vCPU 0's `evtchn_upcall_mask` byte in the shared
        // info page the caller of `install` mapped for the program's life;
        // Xen and this guest change it only with single-byte stores.
        unsafe { &*self.mask }
    }

    /// Upcalls on: Xen enters the callback on its next return to this guest
    /// if an upcall is pending (the next hypercall at the latest).
    pub(super) fn unblock(&self) {
        self.mask().store(0, Ordering::SeqCst);
    }

    /// Upcalls off.
    pub(super) fn block(&self) {
        self.mask().store(1, Ordering::SeqCst);
    }

    /// Xen refuses to unregister the event callback (`CALLBACKOP_unregister`
    /// answers `EINVAL` for it, pv/callback.c): the mask keeps it from running.
    pub(super) fn remove<H: XenHypercall<Error = Error>>(self, _h: &H) -> Result<(), Error> {
        self.block();
        Ok(())
    }
}
