//! Event-channel upcalls as interrupts: each guest kind routes Xen's upcall to
//! `upcall_entry` (its own `route` module: an IDT vector on PVH, the event
//! callback on PV, the GIC's PPI on aarch64), which calls
//! `RawEventChannel::handle_upcall`, which wakes the waiting future.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::task::{RawWaker, RawWakerVTable, Waker};

use xen_hypercall::Error;
use xen_hypercall::prelude::*;

use crate::fail::Fail;

#[cfg_attr(target_arch = "aarch64", path = "aarch64.rs")]
#[cfg_attr(all(target_arch = "x86_64", feature = "pv"), path = "pv.rs")]
#[cfg_attr(all(target_arch = "x86_64", feature = "pvh"), path = "pvh.rs")]
mod route;

#[cfg(not(feature = "domu"))]
pub(crate) use route::CASE;
#[cfg(all(target_arch = "aarch64", not(feature = "domu")))]
pub(crate) use route::set_device_tree;

/// What the interrupt calls: a function and its argument (the channel).
static HANDLER: AtomicUsize = AtomicUsize::new(0);
static CONTEXT: AtomicUsize = AtomicUsize::new(0);
/// Upcalls taken.
static UPCALLS: AtomicUsize = AtomicUsize::new(0);
/// Set by the future's waker.
static WOKEN: AtomicBool = AtomicBool::new(false);

/// Called by the guest kind's interrupt stub, with upcalls blocked.
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

/// A waker that records its wake in [`take_woken`].
pub(crate) fn waker() -> Waker {
    const VTABLE: RawWakerVTable = RawWakerVTable::new(
        |_| RawWaker::new(core::ptr::null(), &VTABLE),
        |_| WOKEN.store(true, Ordering::SeqCst),
        |_| WOKEN.store(true, Ordering::SeqCst),
        |_| {},
    );
    // SAFETY: the vtable's functions ignore the data pointer and only touch a static.
    unsafe { Waker::from_raw(RawWaker::new(core::ptr::null(), &VTABLE)) }
}

/// Whether a [`waker`] was woken since the last call.
pub(crate) fn take_woken() -> bool {
    WOKEN.swap(false, Ordering::SeqCst)
}

/// Runs `body` with Xen's upcalls routed to `channel`'s handler and let in
/// (`shared` is the shared info page); returns its result and the upcalls taken.
pub(crate) fn with_upcalls<H, C, T>(
    h: &H,
    channel: &C,
    shared: *const u8,
    body: impl FnOnce() -> T,
) -> Result<(T, usize), Fail>
where
    H: XenHypercall<Error = Error>,
    C: Upcall,
{
    let route = route::Route::install(h, shared)?;
    // Set only once the route is in place (upcalls are still blocked), so a
    // failed install leaves no handler pointing at `channel`.
    CONTEXT.store(core::ptr::from_ref(channel) as usize, Ordering::SeqCst);
    HANDLER.store(dispatch::<C> as fn(usize) as usize, Ordering::SeqCst);
    let before = UPCALLS.load(Ordering::SeqCst);
    route.unblock();
    let result = body();
    route.block();
    let off = route.remove(h);
    HANDLER.store(0, Ordering::SeqCst);
    CONTEXT.store(0, Ordering::SeqCst);
    off?;
    Ok((result, UPCALLS.load(Ordering::SeqCst) - before))
}

/// Binds a loopback pair on `channel`, waits on one end with upcalls on, and
/// checks the interrupt woke the future. `shared` is the shared info page.
#[cfg(not(feature = "domu"))]
pub(crate) fn upcall_case<H, C>(h: &H, channel: &C, shared: *const u8) -> crate::fail::CaseResult
where
    H: XenHypercall<Error = Error>,
    C: xen_evtchn::EventChannel + xen_evtchn::AsyncEventChannel + Upcall,
{
    use core::future::Future;
    use core::pin::pin;
    use core::task::{Context, Poll};

    use crate::fail::fail;

    let err = |e: xen_evtchn::Error| Fail::new(format_args!("{e}"));
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
    take_woken();
    let (sent, upcalls) = with_upcalls(h, channel, shared, || {
        let sent = b.notify();
        let mut spins = 0u32;
        while !WOKEN.load(Ordering::SeqCst) && spins < 100_000_000 {
            core::hint::spin_loop();
            spins += 1;
        }
        sent
    })?;
    sent.map_err(err)?;
    if !take_woken() {
        fail!("no wake-up after {} upcalls", upcalls);
    }
    match wait.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(())) if upcalls > 0 => Ok(()),
        other => fail!("after {} upcalls: {:?}", upcalls, other),
    }
}
