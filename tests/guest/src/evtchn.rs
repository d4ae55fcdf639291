//! `xen-evtchn`'s freestanding backend on real Xen: hypercalls plus the
//! shared info page, waiting in `SCHEDOP_poll` (no interrupts).

use core::future::Future;
use core::pin::pin;
use core::ptr::NonNull;
use core::task::{Context, Poll, Waker};

use xen_evtchn::{EventChannel, RawEventChannel};
use xen_hypercall::event_channel::ChannelState;
use xen_hypercall::prelude::*;
use xen_hypercall::{Error, HypercallData, XenConstBuffer, XenMutBuffer};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::cases::{CaseResult, Fail, GuestReporter, fail};
use crate::shared_info::SharedInfo;

/// A borrowed backend, so the channel can use the guest's `&H`.
struct ByRef<'a, H>(&'a H);

// SAFETY: every call is forwarded unchanged to `H`, which upholds the contract.
unsafe impl<H: XenHypercall<Error = Error>> XenHypercall for ByRef<'_, H> {
    type Error = Error;
    unsafe fn hypercall0(&self, op: usize) -> Result<usize, Error> {
        // SAFETY: forwarded from the caller.
        unsafe { self.0.hypercall0(op) }
    }
    unsafe fn hypercall1(&self, op: usize, arg: usize) -> Result<usize, Error> {
        // SAFETY: forwarded from the caller.
        unsafe { self.0.hypercall1(op, arg) }
    }
    unsafe fn hypercall2(&self, op: usize, args: [usize; 2]) -> Result<usize, Error> {
        // SAFETY: forwarded from the caller.
        unsafe { self.0.hypercall2(op, args) }
    }
    unsafe fn hypercall3(&self, op: usize, args: [usize; 3]) -> Result<usize, Error> {
        // SAFETY: forwarded from the caller.
        unsafe { self.0.hypercall3(op, args) }
    }
    unsafe fn hypercall4(&self, op: usize, args: [usize; 4]) -> Result<usize, Error> {
        // SAFETY: forwarded from the caller.
        unsafe { self.0.hypercall4(op, args) }
    }
    unsafe fn hypercall5(&self, op: usize, args: [usize; 5]) -> Result<usize, Error> {
        // SAFETY: forwarded from the caller.
        unsafe { self.0.hypercall5(op, args) }
    }
    fn make_const_buffer<T>(&self, data: &T) -> Result<impl XenConstBuffer<T>, Error>
    where
        T: ?Sized + HypercallData + IntoBytes + Immutable,
    {
        self.0.make_const_buffer(data)
    }
    fn make_mut_buffer<T>(&self, data: &mut T) -> Result<impl XenMutBuffer<T>, Error>
    where
        T: ?Sized + HypercallData + FromBytes + IntoBytes,
    {
        self.0.make_mut_buffer(data)
    }
}

type Channel<'a, H> = RawEventChannel<ByRef<'a, H>, 4>;

/// Runs the freestanding event-channel cases.
pub(crate) fn run<H: XenHypercall<Error = Error>>(
    h: &H,
    r: &mut GuestReporter<'_, H>,
    shared: SharedInfo,
) {
    let Some(page) = NonNull::new(shared.as_ptr().cast_mut()) else {
        return r.case(
            "evtchn_raw_loopback",
            Err(Fail::new(format_args!("no page"))),
        );
    };
    // SAFETY: the guest's shared info page, mapped for the program's life and
    // accessed only through atomics (`SharedInfo`'s contract).
    let page = unsafe { xen_evtchn::SharedInfo::new(page) };
    let ch: Channel<'_, H> = RawEventChannel::new(ByRef(h), page);
    r.case("evtchn_raw_loopback", loopback(h, &ch));
    r.case("evtchn_raw_unmask_recheck", unmask_recheck(&ch));
    r.case("evtchn_raw_poll_wakes_future", poll_wakes_future(&ch));
    r.case("evtchn_raw_200_ports", many_ports(&ch));
    r.case("evtchn_raw_bad_input", bad_input(&ch));
    r.case(
        crate::upcall::CASE,
        crate::upcall::upcall_case(h, &ch, shared.as_ptr()),
    );
}

impl<H: XenHypercall<Error = Error>> crate::upcall::Upcall for Channel<'_, H> {
    fn upcall(&self) {
        self.handle_upcall();
    }
}

fn expect_ports(got: &[Port], want: &[Port]) -> CaseResult {
    if got != want {
        fail!("pending {:?}, expected {:?}", got, want);
    }
    Ok(())
}

fn err(e: xen_evtchn::Error) -> Fail {
    Fail::new(format_args!("{e}"))
}

/// Both directions through `SCHEDOP_poll` waits; Xen shows the ports closed after.
fn loopback<H: XenHypercall<Error = Error>>(h: &H, ch: &Channel<'_, H>) -> CaseResult {
    let a = ch.alloc_unbound(DomId::SELF).map_err(err)?;
    let b = ch.bind_interdomain(DomId::SELF, a.port()).map_err(err)?;
    let mut ports = [Port::new(0); 4];
    // Xen marks the bound port pending at bind.
    let n = ch.wait_pending(&mut ports).map_err(err)?;
    expect_ports(&ports[..n], &[b.port()])?;
    b.unmask().map_err(err)?;
    for _ in 0..50 {
        b.notify().map_err(err)?;
        let n = ch.wait_pending(&mut ports).map_err(err)?;
        expect_ports(&ports[..n], &[a.port()])?;
        a.unmask().map_err(err)?;
        a.notify().map_err(err)?;
        let n = ch.wait_pending(&mut ports).map_err(err)?;
        expect_ports(&ports[..n], &[b.port()])?;
        b.unmask().map_err(err)?;
    }
    let (pa, pb) = (a.port(), b.port());
    a.close().map_err(err)?;
    drop(b);
    for port in [pa, pb] {
        let state = h.evtchn_status(DomId::SELF, port)?.state;
        if state != ChannelState::Closed {
            fail!("port {} is {:?} after close", port.raw(), state);
        }
    }
    Ok(())
}

/// A send while the port is masked is kept and delivered by the unmask.
fn unmask_recheck<H: XenHypercall<Error = Error>>(ch: &Channel<'_, H>) -> CaseResult {
    let a = ch.alloc_unbound(DomId::SELF).map_err(err)?;
    let b = ch.bind_interdomain(DomId::SELF, a.port()).map_err(err)?;
    let mut ports = [Port::new(0); 4];
    ch.take_pending(&mut ports).map_err(err)?;
    b.unmask().map_err(err)?;
    b.notify().map_err(err)?;
    let n = ch.take_pending(&mut ports).map_err(err)?;
    expect_ports(&ports[..n], &[a.port()])?;
    b.notify().map_err(err)?;
    let n = ch.take_pending(&mut ports).map_err(err)?;
    expect_ports(&ports[..n], &[])?;
    a.unmask().map_err(err)?;
    let n = ch.take_pending(&mut ports).map_err(err)?;
    expect_ports(&ports[..n], &[a.port()])
}

/// A future on a port: pending, then `poll_and_dispatch` (SCHEDOP_poll)
/// returns once the port is signalled and the future completes.
fn poll_wakes_future<H: XenHypercall<Error = Error>>(ch: &Channel<'_, H>) -> CaseResult {
    let a = ch.alloc_unbound(DomId::SELF).map_err(err)?;
    let b = ch.bind_interdomain(DomId::SELF, a.port()).map_err(err)?;
    let mut cx = Context::from_waker(Waker::noop());
    if pin!(b.wait()).poll(&mut cx).is_pending() {
        fail!("the bind's pending event was not seen by a wait");
    }
    let mut wait = pin!(a.wait());
    if wait.as_mut().poll(&mut cx).is_ready() {
        fail!("wait ready before any send");
    }
    b.notify().map_err(err)?;
    ch.poll_and_dispatch(None).map_err(err)?;
    match wait.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(())) => Ok(()),
        other => fail!("after the send: {:?}", other),
    }
}

/// 100 pairs (200 ports over several bitmap words), all signalled, all
/// collected by one take_pending.
fn many_ports<H: XenHypercall<Error = Error>>(ch: &Channel<'_, H>) -> CaseResult {
    let mut pairs = heapless_pairs();
    for slot in pairs.iter_mut() {
        let a = ch.alloc_unbound(DomId::SELF).map_err(err)?;
        let b = ch.bind_interdomain(DomId::SELF, a.port()).map_err(err)?;
        *slot = (a.into_raw(), b.into_raw());
    }
    let mut ports = [Port::new(0); 256];
    let bound = ch.take_pending(&mut ports).map_err(err)?;
    for &port in &ports[..bound] {
        ch.unmask(port).map_err(err)?;
    }
    for &(a, b) in pairs.iter() {
        ch.notify(a).map_err(err)?;
        ch.notify(b).map_err(err)?;
    }
    let n = ch.take_pending(&mut ports).map_err(err)?;
    let mut result = Ok(());
    if bound != pairs.len() || n != 2 * pairs.len() {
        result = Err(Fail::new(format_args!(
            "{} of {} bind events, {} of {} sends delivered",
            bound,
            pairs.len(),
            n,
            2 * pairs.len()
        )));
    }
    for &(a, b) in pairs.iter() {
        ch.unbind_raw(a).map_err(err)?;
        ch.unbind_raw(b).map_err(err)?;
    }
    result
}

fn heapless_pairs() -> [(Port, Port); 100] {
    [(Port::new(0), Port::new(0)); 100]
}

fn bad_input<H: XenHypercall<Error = Error>>(ch: &Channel<'_, H>) -> CaseResult {
    use xen_evtchn::{Error as E, ErrorKind};
    let beyond = Port::new(5000);
    if ch.notify(beyond) != Err(E::PortOutOfRange(beyond)) {
        fail!("notify of port 5000 not refused as out of range");
    }
    let stranger = Port::new(3000);
    match ch.unbind_raw(stranger) {
        Err(e) if e.kind() == ErrorKind::InvalidInput => {}
        other => fail!("unbind of an unbound port: {:?}", other),
    }
    match ch.bind_virq(Virq(1000)) {
        Err(e) if e.kind() == ErrorKind::InvalidInput => Ok(()),
        other => fail!("bind_virq(1000): {:?}", other.map(|p| p.port())),
    }
}
