//! `EvtchnPort`: a `xen-evtchn` port waking a console, against xen-evtchn's mock Xen.

use std::task::{Context, Poll, Waker};

use xen_console::{AsyncWait, ConsoleRing, EvtchnPort, Notify, Wait, Wake};
use xen_evtchn::mock::{MockDomain, MockPlatform};
use xen_evtchn::{AsyncEventChannel, BoundPort, EventChannel, RawEventChannel};
use xen_hypercall::DomId;
use xen_shared::{Consumer, RingLayout, SharedPage};

type Channel = RawEventChannel<MockDomain, 4>;

/// Domain 0's channel of a mock Xen (the platform kept beside it).
fn channel() -> (MockPlatform, Channel) {
    let platform = MockPlatform::new();
    let channel = platform.domain(0).channel();
    (platform, channel)
}

/// A loopback pair of `ch`: `a` allocated, `b` bound to it (pending, as Xen marks it).
fn loopback<const N: usize>(
    ch: &RawEventChannel<MockDomain, N>,
) -> (
    BoundPort<&RawEventChannel<MockDomain, N>>,
    BoundPort<&RawEventChannel<MockDomain, N>>,
) {
    let a = ch.alloc_unbound(DomId::SELF).unwrap();
    let b = ch.bind_interdomain(DomId::SELF, a.port()).unwrap();
    (a, b)
}

#[test]
fn a_wait_returns_after_the_peer_signals_and_rearms_the_port() {
    let (_platform, ch) = channel();
    let (a, b) = loopback(&ch);
    let mut port = EvtchnPort::new(b);
    // Xen marks a newly bound port pending: that is the first wake-up.
    assert_eq!(port.wait().unwrap(), Wake::Event);
    for _ in 0..3 {
        a.notify().unwrap();
        assert_eq!(port.wait().unwrap(), Wake::Event);
    }
    // Notify reaches the peer.
    port.notify().unwrap();
    let mut pending = [xen_hypercall::Port::new(0); 4];
    assert_eq!(ch.take_pending(&mut pending).unwrap(), 1);
    assert_eq!(pending[0], a.port());
}

#[test]
fn an_async_wait_is_pending_until_the_peer_signals() {
    let (_platform, ch) = channel();
    let (a, b) = loopback(&ch);
    let mut port = EvtchnPort::new(b);
    let mut cx = Context::from_waker(Waker::noop());
    // The bind's pending event, then nothing until the peer signals.
    assert!(matches!(
        port.poll_wait(&mut cx),
        Poll::Ready(Ok(Wake::Event))
    ));
    assert!(port.poll_wait(&mut cx).is_pending());
    a.notify().unwrap();
    assert!(matches!(
        port.poll_wait(&mut cx),
        Poll::Ready(Ok(Wake::Event))
    ));
    assert!(port.poll_wait(&mut cx).is_pending());
}

#[test]
fn a_console_ring_notifies_its_backend_through_the_port() {
    let platform = MockPlatform::new();
    let ch = platform.domain(0).channel::<4>();
    let backend_port = ch.alloc_unbound(DomId::SELF).unwrap();
    let frontend_port = ch
        .bind_interdomain(DomId::SELF, backend_port.port())
        .unwrap();
    let mut drained = [xen_hypercall::Port::new(0); 4];
    ch.take_pending(&mut drained).unwrap();
    frontend_port.unmask().unwrap();
    let page = SharedPage::new();
    let mut backend = Consumer::new(page.mem(), RingLayout::CONSOLE_OUT).unwrap();
    let mut console = ConsoleRing::new(page.mem(), EvtchnPort::new(frontend_port)).unwrap();
    assert_eq!(console.try_write(b"hello").unwrap(), 5);
    assert_eq!(ch.take_pending(&mut drained).unwrap(), 1);
    assert_eq!(drained[0], backend_port.port());
    let mut out = [0; 8];
    assert_eq!(backend.read(&mut out).unwrap(), 5);
    assert_eq!(console.unconsumed().unwrap(), 0);
}

/// Domain 0's channel with one waiter slot (the platform kept beside it).
fn one_slot() -> (MockPlatform, RawEventChannel<MockDomain, 1>) {
    let platform = MockPlatform::new();
    let channel = platform.domain(0).channel::<1>();
    (platform, channel)
}

#[test]
fn a_completed_async_wait_releases_its_registration() {
    let (_platform, ch) = one_slot();
    let (a, b) = loopback(&ch);
    let mut port = EvtchnPort::new(b);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        port.poll_wait(&mut cx).is_ready(),
        "the bind's pending event"
    );
    // Registers in the only slot, then completes.
    assert!(port.poll_wait(&mut cx).is_pending());
    a.notify().unwrap();
    assert!(matches!(
        port.poll_wait(&mut cx),
        Poll::Ready(Ok(Wake::Event))
    ));
    // The slot is free for another waiter.
    let mut other = std::pin::pin!(ch.wait_port(a.port()));
    assert!(other.as_mut().poll(&mut cx).is_pending());
}

#[test]
fn a_port_given_back_during_an_async_wait_releases_its_registration() {
    let (_platform, ch) = one_slot();
    let (a, b) = loopback(&ch);
    let mut port = EvtchnPort::new(b);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        port.poll_wait(&mut cx).is_ready(),
        "the bind's pending event"
    );
    assert!(port.poll_wait(&mut cx).is_pending());
    // The wait's future is gone and the port taken back, still bound.
    let b = port.into_port();
    let mut other = std::pin::pin!(ch.wait_port(a.port()));
    assert!(other.as_mut().poll(&mut cx).is_pending());
    drop(b);
}
