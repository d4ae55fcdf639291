//! The freestanding backend against `MockXen` with shared info pages.
#![cfg(feature = "mock")]

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use common::{Rng, counting_waker};
use futures_core::Stream;
use xen_evtchn::mock::{MockDomain, MockPlatform};
use xen_evtchn::{
    AsyncEventChannel, BoundPort, DomId, Error, ErrorKind, EventChannel, Port, RawEventChannel,
    Virq,
};
use xen_hypercall::Errno;
use xen_hypercall::event_channel::{ChannelState, EventChannelOps};

type Channel = RawEventChannel<MockDomain, 8>;

fn channel(xen: &MockDomain) -> Channel {
    xen.channel()
}

/// One mock domain (id 0) and its channel; the platform is kept alive beside them.
fn one_domain() -> (MockPlatform, MockDomain, Channel) {
    let platform = MockPlatform::new();
    let xen = platform.domain(0);
    let ch = channel(&xen);
    (platform, xen, ch)
}

/// `ch`'s loopback pair: `a` allocated for this domain, `b` bound to it.
fn loopback(ch: &Channel) -> (BoundPort<&Channel>, BoundPort<&Channel>) {
    let a = ch.alloc_unbound(DomId::SELF).unwrap();
    let b = ch.bind_interdomain(DomId::SELF, a.port()).unwrap();
    (a, b)
}

/// Domains 0 and 1 of one mock platform, with a channel each.
struct TwoDomains {
    _platform: MockPlatform,
    dom0: MockDomain,
    ch0: Channel,
    ch1: Channel,
}

impl TwoDomains {
    fn new() -> Self {
        let platform = MockPlatform::new();
        let dom0 = platform.domain(0);
        let dom1 = platform.domain(1);
        Self {
            ch0: channel(&dom0),
            ch1: channel(&dom1),
            dom0,
            _platform: platform,
        }
    }

    /// A channel between them: domain 1's port allocated for domain 0, and
    /// domain 0's port bound to it.
    fn connect(&self) -> (BoundPort<&Channel>, BoundPort<&Channel>) {
        let back = self.ch1.alloc_unbound(DomId::new(0)).unwrap();
        let front = self
            .ch0
            .bind_interdomain(DomId::new(1), back.port())
            .unwrap();
        (back, front)
    }
}

fn take_all(ch: &Channel) -> Vec<Port> {
    let mut ports = [Port::new(0); 64];
    let count = ch.take_pending(&mut ports).unwrap();
    ports[..count].to_vec()
}

#[test]
fn loopback_reports_bind_pending_then_each_send() {
    let (_platform, xen, ch) = one_domain();
    let (a, b) = loopback(&ch);
    // Xen marks the new local port pending: reported once, documented.
    assert_eq!(take_all(&ch), [b.port()]);
    b.unmask().unwrap();
    assert!(take_all(&ch).is_empty());

    b.notify().unwrap();
    assert_eq!(take_all(&ch), [a.port()]);
    assert!(
        xen.page().is_masked(a.port()),
        "reported ports stay masked until unmask"
    );
    // A send while masked is kept, and delivered by the unmask's re-check.
    b.notify().unwrap();
    assert!(take_all(&ch).is_empty());
    a.unmask().unwrap();
    assert!(!xen.page().is_masked(a.port()));
    assert_eq!(take_all(&ch), [a.port()]);
    a.unmask().unwrap();
    assert!(take_all(&ch).is_empty());
}

#[test]
fn unmask_of_a_pending_port_re_raises_the_upcall() {
    let (_platform, xen, ch) = one_domain();
    let (a, b) = loopback(&ch);
    ch.take_pending(&mut [Port::new(0); 4]).unwrap();
    b.unmask().unwrap();
    b.notify().unwrap();
    assert_eq!(take_all(&ch), [a.port()]);
    ch.handle_upcall();
    assert!(!xen.page().upcall_is_pending());
    // Masked: the send sets the pending bit only, no selector, no upcall.
    b.notify().unwrap();
    assert!(!xen.page().upcall_is_pending());
    a.unmask().unwrap();
    assert!(
        xen.page().upcall_is_pending(),
        "EVTCHNOP_unmask re-raised the upcall"
    );
}

#[test]
fn drop_unbinds_and_close_reports() {
    let (_platform, xen, ch) = one_domain();
    let port = ch.alloc_unbound(DomId::SELF).unwrap();
    let number = port.port();
    drop(port);
    let status = xen.mock().evtchn_status(DomId::SELF, number).unwrap();
    assert_eq!(status.state, ChannelState::Closed);

    let port = ch.alloc_unbound(DomId::SELF).unwrap();
    let number = port.port();
    port.close().unwrap();
    assert_eq!(
        xen.mock().evtchn_status(DomId::SELF, number).unwrap().state,
        ChannelState::Closed
    );
    // Closing a port twice: the second is refused, typed.
    let again = BoundPort::from_raw(&ch, number).close().unwrap_err();
    assert_eq!(again, Error::NotBound(number));
    assert_eq!(again.kind(), ErrorKind::InvalidInput);

    // into_raw keeps it bound; from_raw adopts it again.
    let port = ch.alloc_unbound(DomId::SELF).unwrap();
    let raw = port.into_raw();
    assert!(matches!(
        xen.mock().evtchn_status(DomId::SELF, raw).unwrap().state,
        ChannelState::Unbound { .. }
    ));
    drop(BoundPort::from_raw(&ch, raw));
    assert_eq!(
        xen.mock().evtchn_status(DomId::SELF, raw).unwrap().state,
        ChannelState::Closed
    );
}

#[test]
fn bad_input_is_typed() {
    let (platform, _xen, ch) = one_domain();
    let beyond = Port::new(4096);
    assert_eq!(ch.notify(beyond), Err(Error::PortOutOfRange(beyond)));
    assert_eq!(
        ch.unmask(beyond).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let foreign = Port::new(7);
    assert_eq!(ch.notify(foreign), Err(Error::NotBound(foreign)));
    assert_eq!(ch.unbind_raw(foreign), Err(Error::NotBound(foreign)));
    // A VIRQ number beyond Xen's: Xen's EINVAL, typed.
    let err = ch.bind_virq(Virq(1000)).unwrap_err();
    assert_eq!(
        err,
        Error::Hypercall(xen_hypercall::Error::Xen(Errno::EINVAL))
    );
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // Binding to a port that does not allow us.
    let peer = platform.domain(1);
    let theirs = peer
        .mock()
        .evtchn_alloc_unbound(DomId::SELF, DomId::new(2))
        .unwrap();
    let err = ch.bind_interdomain(DomId::new(1), theirs).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn exhaustion_is_enospc_and_leaks_nothing() {
    let (_platform, xen, ch) = one_domain();
    let mut ports = Vec::new();
    let err = loop {
        match ch.alloc_unbound(DomId::SELF) {
            Ok(port) => ports.push(port),
            Err(err) => break err,
        }
    };
    assert_eq!(
        err,
        Error::Hypercall(xen_hypercall::Error::Xen(Errno::ENOSPC))
    );
    assert_eq!(err.kind(), ErrorKind::OutOfMemory);
    assert_eq!(ports.len(), xen_evtchn::mock::PORTS as usize - 1);
    let numbers: Vec<Port> = ports.iter().map(|p| p.port()).collect();
    drop(ports);
    for port in numbers {
        assert_eq!(
            xen.mock().evtchn_status(DomId::SELF, port).unwrap().state,
            ChannelState::Closed
        );
    }
    // Every port is free again.
    assert!(ch.alloc_unbound(DomId::SELF).is_ok());
}

#[test]
fn wait_pending_polls_only_armed_ports() {
    let (_platform, _xen, ch) = one_domain();
    let (a, b) = loopback(&ch);
    let mut ports = [Port::new(0); 4];
    assert_eq!(ch.wait_pending(&mut ports).unwrap(), 1);
    assert_eq!(ports[0], b.port());
    b.notify().unwrap();
    assert_eq!(ch.wait_pending(&mut ports).unwrap(), 1);
    assert_eq!(ports[0], a.port());
    // Both reported ports are masked: nothing can arrive, so no wait.
    let err = ch.wait_pending(&mut ports).unwrap_err();
    assert_eq!(err, Error::NothingToWaitFor);
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    a.unmask().unwrap();
    b.unmask().unwrap();
    // Nothing pending on the armed ports: the mock refuses to sleep forever
    // (a real Xen would block in SCHEDOP_poll); the error surfaces.
    let err = ch.wait_pending(&mut ports).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
}

#[test]
fn upcall_wakes_the_waiting_future_and_cancellation_loses_nothing() {
    let two = TwoDomains::new();
    let (theirs, ours) = two.connect();
    // The bind's pending event, consumed by a first wait.
    let (waker, wakes) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(pin!(ours.wait()).poll(&mut cx).is_ready());

    {
        let mut wait = pin!(ours.wait());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        theirs.notify().unwrap();
        assert!(two.dom0.page().upcall_is_pending());
        two.ch0.handle_upcall();
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
        // Cancelled here: the future is dropped unpolled.
    }
    // The delivery is still there for the next wait.
    assert!(pin!(ours.wait()).poll(&mut cx).is_ready());
    assert!(pin!(ours.wait()).poll(&mut cx).is_pending());
}

#[test]
fn poll_and_dispatch_wakes_without_upcalls() {
    let two = TwoDomains::new();
    let (theirs, ours) = two.connect();
    let (waker, wakes) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(pin!(ours.wait()).poll(&mut cx).is_ready());
    let mut wait = pin!(ours.wait());
    assert!(wait.as_mut().poll(&mut cx).is_pending());
    theirs.notify().unwrap();
    two.ch0.poll_and_dispatch(None).unwrap();
    assert_eq!(wakes.load(Ordering::SeqCst), 1);
    assert!(wait.as_mut().poll(&mut cx).is_ready());
}

#[test]
fn ping_pong_between_two_domains() {
    let two = TwoDomains::new();
    let (back, front) = two.connect();
    let (ch0, ch1) = (&two.ch0, &two.ch1);
    let mut ports = [Port::new(0); 4];
    assert_eq!(ch0.take_pending(&mut ports).unwrap(), 1);
    front.unmask().unwrap();
    let rounds = if cfg!(miri) { 3 } else { 200 };
    for _ in 0..rounds {
        front.notify().unwrap();
        assert_eq!(ch1.wait_pending(&mut ports).unwrap(), 1);
        assert_eq!(ports[0], back.port());
        back.unmask().unwrap();
        back.notify().unwrap();
        assert_eq!(ch0.wait_pending(&mut ports).unwrap(), 1);
        assert_eq!(ports[0], front.port());
        front.unmask().unwrap();
    }
}

#[test]
fn events_stream_yields_each_delivery() {
    let (_platform, _xen, ch) = one_domain();
    let (a, b) = loopback(&ch);
    let (waker, wakes) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut events = pin!(ch.events());
    assert!(
        matches!(events.as_mut().poll_next(&mut cx), Poll::Ready(Some(Ok(p))) if p == b.port())
    );
    assert!(events.as_mut().poll_next(&mut cx).is_pending());
    b.notify().unwrap();
    ch.handle_upcall();
    assert_eq!(wakes.load(Ordering::SeqCst), 1);
    assert!(
        matches!(events.as_mut().poll_next(&mut cx), Poll::Ready(Some(Ok(p))) if p == a.port())
    );
}

/// Random interleavings of send / mask / unmask / receive: every send followed
/// by a wait is observed at least once, and no port is reported that nobody
/// signalled (the bind's pending event excepted).
#[test]
fn random_interleavings_keep_the_contract() {
    let seeds = if cfg!(miri) { 1 } else { 40 };
    let steps = if cfg!(miri) { 30 } else { 400 };
    for seed in 1..=seeds {
        let two = TwoDomains::new();
        let ch0 = &two.ch0;
        let pairs: Vec<_> = (0..4)
            .map(|_| {
                let (back, front) = two.connect();
                (front, back)
            })
            .collect();
        // Ports of ch0 with a send not yet observed, and those that may be
        // reported without one (bound interdomain: pending at bind).
        let mut outstanding = BTreeSet::new();
        let mut allowed: BTreeSet<Port> = pairs.iter().map(|(f, _)| f.port()).collect();
        let mut taken = BTreeSet::new();
        let mut rng = Rng::new(seed);
        let (waker, _) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let observe =
            |port: Port, outstanding: &mut BTreeSet<Port>, allowed: &mut BTreeSet<Port>| {
                assert!(
                    outstanding.remove(&port) || allowed.remove(&port),
                    "seed {seed}: {port} reported without a send"
                );
            };
        for _ in 0..steps {
            let (front, back) = &pairs[rng.below(pairs.len() as u64) as usize];
            match rng.below(5) {
                0 | 1 => {
                    back.notify().unwrap();
                    outstanding.insert(front.port());
                }
                2 => {
                    let mut ports = [Port::new(0); 8];
                    let count = ch0.take_pending(&mut ports).unwrap();
                    for &port in &ports[..count] {
                        observe(port, &mut outstanding, &mut allowed);
                        taken.insert(port);
                    }
                }
                3 => {
                    if taken.remove(&front.port()) {
                        front.unmask().unwrap();
                    }
                }
                _ => {
                    if !taken.contains(&front.port()) && front.wait().poll_once(&mut cx).is_ready()
                    {
                        observe(front.port(), &mut outstanding, &mut allowed);
                    }
                }
            }
        }
        // The wait: re-arm everything, then collect until quiet.
        for port in std::mem::take(&mut taken) {
            ch0.unmask(port).unwrap();
        }
        let mut ports = [Port::new(0); 8];
        loop {
            let count = ch0.take_pending(&mut ports).unwrap();
            if count == 0 {
                break;
            }
            for &port in &ports[..count] {
                observe(port, &mut outstanding, &mut allowed);
                ch0.unmask(port).unwrap();
            }
        }
        assert!(outstanding.is_empty(), "seed {seed}: lost {outstanding:?}");
    }
}

/// Polls a future once, in place.
trait PollOnce {
    fn poll_once(self, cx: &mut Context<'_>) -> Poll<Result<(), Error>>;
}

impl<F: std::future::Future<Output = Result<(), Error>>> PollOnce for F {
    fn poll_once(self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        pin!(self).poll(cx)
    }
}

#[test]
fn waiter_slots_are_bounded_and_freed() {
    let platform = MockPlatform::new();
    let xen = platform.domain(0);
    let ch: RawEventChannel<MockDomain, 1> = xen.channel();
    let a = ch.alloc_unbound(DomId::SELF).unwrap();
    let b = ch.alloc_unbound(DomId::SELF).unwrap();
    let (waker, _) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut wait_a = Box::pin(a.wait());
    assert!(wait_a.as_mut().poll(&mut cx).is_pending());
    // The one slot is `a`'s while its wait lives.
    match pin!(b.wait()).poll(&mut cx) {
        Poll::Ready(Err(err)) => {
            assert_eq!(err, Error::TooManyWaiters(1));
            assert_eq!(err.kind(), ErrorKind::OutOfMemory);
        }
        other => panic!("{other:?}"),
    }
    drop(wait_a);
    assert!(pin!(b.wait()).poll(&mut cx).is_pending());
}

/// Every port of the mock domain is closed in Xen (or was never allocated:
/// `EINVAL`, as Xen answers for a port past the allocated ones).
fn assert_all_closed(xen: &MockDomain) {
    for port in 1..xen_evtchn::mock::PORTS {
        match xen.mock().evtchn_status(DomId::SELF, Port::new(port)) {
            Ok(status) => assert_eq!(status.state, ChannelState::Closed, "port {port} leaked"),
            Err(err) => assert_eq!(err, xen_hypercall::Error::Xen(Errno::EINVAL)),
        }
    }
}

#[test]
fn a_bind_on_another_vcpu_during_unbind_keeps_its_port() {
    let platform = MockPlatform::new();
    let xen = platform.domain(0);
    let ch: std::sync::Arc<Channel> = std::sync::Arc::new(xen.channel());
    let port = ch.alloc_unbound_raw(DomId::SELF).unwrap();
    // Just after Xen closed the port, another vCPU binds: Xen hands it the
    // same (lowest free) port.
    let (rebound_tx, rebound_rx) = std::sync::mpsc::channel();
    let binding = std::sync::Arc::clone(&ch);
    xen.set_close_hook(Some(Box::new(move |_| {
        let binding = std::sync::Arc::clone(&binding);
        let rebound = std::thread::spawn(move || binding.alloc_unbound_raw(DomId::SELF))
            .join()
            .unwrap();
        rebound_tx.send(rebound).unwrap();
    })));
    ch.unbind_raw(port).unwrap();
    xen.set_close_hook(None);
    let rebound = rebound_rx.recv().unwrap().unwrap();
    assert_eq!(rebound, port);
    // The new binding is this handle's, and armed.
    assert!(!xen.page().is_masked(rebound));
    ch.unbind_raw(rebound).unwrap();
    assert_all_closed(&xen);
}

#[test]
fn concurrent_binds_and_unbinds_lose_no_port() {
    const CYCLES: usize = if cfg!(miri) { 20 } else { 5_000 };
    let platform = MockPlatform::new();
    let xen = platform.domain(0);
    let ch: std::sync::Arc<Channel> = std::sync::Arc::new(xen.channel());
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let ch = std::sync::Arc::clone(&ch);
            std::thread::spawn(move || {
                for _ in 0..CYCLES {
                    let port = ch.alloc_unbound_raw(DomId::SELF)?;
                    ch.unbind_raw(port)?;
                }
                Ok::<(), Error>(())
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap().unwrap();
    }
    assert_all_closed(&xen);
}

#[test]
fn unbind_wakes_the_ports_waiter() {
    let (_platform, _xen, ch) = one_domain();
    let port = ch.alloc_unbound(DomId::SELF).unwrap().into_raw();
    let (waker, wakes) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut wait = Box::pin(ch.wait_port(port));
    assert!(wait.as_mut().poll(&mut cx).is_pending());
    ch.unbind_raw(port).unwrap();
    assert_eq!(wakes.load(Ordering::SeqCst), 1);
    assert_eq!(
        wait.as_mut().poll(&mut cx),
        Poll::Ready(Err(Error::NotBound(port)))
    );
}

#[cfg(not(miri))]
#[test]
fn wait_pending_clears_a_left_upcall_instead_of_spinning() {
    let platform = MockPlatform::new();
    let xen = platform.domain(0);
    let ch: std::sync::Arc<Channel> = std::sync::Arc::new(xen.channel());
    let a = ch.alloc_unbound_raw(DomId::SELF).unwrap();
    let b = ch.bind_interdomain_raw(DomId::SELF, a).unwrap();
    // Xen raised the upcall for `b`'s bind-time event; no handler cleared it.
    assert!(xen.page().upcall_is_pending());
    let mut ports = [Port::new(0); 4];
    assert_eq!(ch.take_pending(&mut ports).unwrap(), 1);
    ch.unmask(b).unwrap();
    // Nothing is pending: Xen would block in SCHEDOP_poll, which the mock
    // refuses (it cannot sleep). With the upcall flag left set, `do_poll`
    // returns at once instead, and a wait that does not clear it spins.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let waiting = std::sync::Arc::clone(&ch);
    std::thread::spawn(move || {
        let mut ports = [Port::new(0); 4];
        let _ = done_tx.send(waiting.wait_pending(&mut ports));
    });
    let result = done_rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("wait_pending spins in SCHEDOP_poll");
    assert_eq!(result.unwrap_err().kind(), ErrorKind::Unsupported);
    assert!(!xen.page().upcall_is_pending());
}

#[test]
fn a_stale_wait_cannot_release_a_new_waiter_of_the_same_port_number() {
    let (_platform, _xen, ch) = one_domain();
    let a = ch.alloc_unbound(DomId::SELF).unwrap();
    let (waker, _) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let old = ch.bind_interdomain_raw(DomId::SELF, a.port()).unwrap();
    assert!(pin!(ch.wait_port(old)).poll(&mut cx).is_ready());
    let mut stale = Box::pin(ch.wait_port(old));
    assert!(stale.as_mut().poll(&mut cx).is_pending());
    ch.unbind_raw(old).unwrap();
    // Xen hands the number out again; the new port's bind-time event is consumed.
    let new = ch.bind_interdomain_raw(DomId::SELF, a.port()).unwrap();
    assert_eq!(new, old);
    assert!(pin!(ch.wait_port(new)).poll(&mut cx).is_ready());
    let (fresh_waker, fresh_wakes) = counting_waker();
    let mut fresh = Box::pin(ch.wait_port(new));
    assert!(
        fresh
            .as_mut()
            .poll(&mut Context::from_waker(&fresh_waker))
            .is_pending()
    );
    // The stale future goes: the fresh one's registration stays.
    drop(stale);
    a.notify().unwrap();
    ch.handle_upcall();
    assert_eq!(fresh_wakes.load(Ordering::SeqCst), 1);
    assert!(fresh.as_mut().poll(&mut cx).is_ready());
    ch.unbind_raw(new).unwrap();
}

#[test]
fn adopt_takes_a_port_bound_elsewhere() {
    let (_platform, xen, ch) = one_domain();
    // Bound by someone else (as the domain builder binds the xenstore port).
    let port = xen.evtchn_alloc_unbound(DomId::SELF, DomId::SELF).unwrap();
    assert_eq!(ch.unmask(port), Err(Error::NotBound(port)));
    assert_eq!(ch.adopt(port), Ok(port));
    assert!(!xen.page().is_masked(port));
    let peer = ch.bind_interdomain(DomId::SELF, port).unwrap();
    assert_eq!(take_all(&ch), vec![peer.port()]);
    peer.unmask().unwrap();
    peer.notify().unwrap();
    assert_eq!(take_all(&ch), vec![port]);
    ch.unbind_raw(port).unwrap();
    assert_eq!(
        xen.mock().evtchn_status(DomId::SELF, port).unwrap().state,
        ChannelState::Closed
    );
    assert_eq!(
        ch.adopt(Port::new(5000)),
        Err(Error::PortOutOfRange(Port::new(5000)))
    );
}

/// After a resume in a new domain the old ports are gone and their numbers may be someone
/// else's (here the toolstack's new xenstore port): the resumed handle must not close it.
#[test]
fn resume_forgets_the_old_domain_s_ports() {
    let (_platform, xen, mut ch) = one_domain();
    let old = ch.alloc_unbound_raw(DomId::new(0)).unwrap();
    // The restore: the new domain has none of the old ports; the toolstack binds its own, which
    // gets the same number.
    xen.evtchn_close(old).unwrap();
    let toolstack = xen
        .evtchn_alloc_unbound(DomId::SELF, DomId::new(0))
        .unwrap();
    assert_eq!(toolstack, old);
    // SAFETY: the page outlives `ch`, which `one_domain` keeps beside it.
    ch.resume(unsafe { xen.shared_info() });
    assert!(matches!(ch.unbind_raw(old), Err(Error::NotBound(p)) if p == old));
    assert!(matches!(
        xen.evtchn_status(DomId::SELF, toolstack).unwrap().state,
        ChannelState::Unbound { .. }
    ));
    // The resumed handle binds and waits as before.
    let fresh = ch.alloc_unbound_raw(DomId::new(0)).unwrap();
    ch.unbind_raw(fresh).unwrap();
}
