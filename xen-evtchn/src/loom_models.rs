//! Loom models of the wake-up and bookkeeping logic: the real code (the tokio
//! backend's demultiplexer, `EvtchnDevice`, `RawEventChannel`) over the
//! driver-faithful mocks, with loom's atomics and locks in the bookkeeping and
//! in the mock driver's ring, so that loom tries every interleaving of the
//! threads at those points (within its preemption bound).
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p xen-evtchn --features mock --release --lib loom_models`

use std::boxed::Box;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::vec::Vec;

use loom::sync::{Mutex, Notify};
use loom::thread;
use xen_hypercall::{DomId, Port};

use crate::demux::{Demux, Readiness};
use crate::linux::EvtchnDevice;
use crate::mock::{EvtchnDriver, MockPlatform};
use crate::{Error, EventChannel, RawEventChannel, WaiterTicket};

/// Runs `model` under loom with `preemptions` as the preemption bound
/// (unless `LOOM_MAX_PREEMPTIONS` says otherwise); each model must finish in
/// well under a minute.
fn check(preemptions: usize, model: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(preemptions);
    builder.check(model);
}

/// An edge-triggered reactor's readiness of the mock driver's fd: the
/// driver's wake-up sets it and wakes the one waker it holds (as tokio's
/// `AsyncFd` with one readiness wait); `poll_ready` clears it.
#[derive(Clone, Default)]
struct ModelReadiness(Arc<Mutex<ReadinessState>>);

#[derive(Default)]
struct ReadinessState {
    ready: bool,
    waker: Option<Waker>,
}

impl ModelReadiness {
    /// The driver woke its readers: an edge.
    fn edge(&self) {
        let mut state = self.0.lock().unwrap();
        state.ready = true;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }
}

impl Readiness for ModelReadiness {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let mut state = self.0.lock().unwrap();
        if core::mem::take(&mut state.ready) {
            return Poll::Ready(Ok(()));
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A demultiplexer over a fresh mock driver, with `ports` bound (loopback
/// peers are not needed: the model fires ports directly).
struct Fixture {
    driver: Arc<EvtchnDriver>,
    device: Arc<EvtchnDevice>,
    demux: Arc<Mutex<Demux<ModelReadiness>>>,
    ports: Vec<Port>,
}

impl Fixture {
    fn new(ports: usize) -> Self {
        let driver = EvtchnDriver::with_ring_size(4);
        let device = Arc::new(driver.device());
        let ports = (0..ports)
            .map(|_| device.alloc_unbound_raw(DomId::SELF).unwrap())
            .collect();
        let readiness = ModelReadiness::default();
        let edge = readiness.clone();
        driver.set_wake_hook(Some(Box::new(move || edge.edge())));
        Self {
            driver,
            device,
            demux: Arc::new(Mutex::new(Demux::new(readiness))),
            ports,
        }
    }

    /// A waiter of `port`: blocks its thread until the port's delivery
    /// (loom reports a deadlock if nothing ever wakes it).
    fn wait_port(&self, port: Port) {
        let mut ticket = WaiterTicket::NONE;
        loom::future::block_on(poll_fn(|cx| {
            self.demux
                .lock()
                .unwrap()
                .poll_port(&self.device, port, &mut ticket, cx)
        }))
        .unwrap();
        // Completed: as a `WaitPort` is then dropped.
        self.demux.lock().unwrap().forget_port(port, ticket);
    }

    /// One item of the stream of deliveries; the stream is not dropped.
    fn next_any(&self) -> Port {
        loom::future::block_on(poll_fn(|cx| {
            self.demux.lock().unwrap().poll_any(&self.device, cx)
        }))
        .unwrap()
    }
}

/// Proves the drain cannot miss the driver's wake rule (defect 1): the
/// driver wakes readers only when its ring goes from empty to non-empty, and
/// a port queued while a `read` copies is neither returned by it nor
/// announced; a waiter of that port must still get it, in every interleaving
/// of Xen's interrupts with the waiter's reads. (With a drain that stops at
/// the first short read, loom finds the waiter asleep forever.)
#[test]
fn drain_misses_no_port_queued_during_a_read() {
    // Three: the waiter is preempted after its first read (`a` fires and
    // wakes it), Xen after that, and the waiter again while it copies `a`
    // (`b` fires).
    check(3, || {
        let fixture = Arc::new(Fixture::new(2));
        let (a, b) = (fixture.ports[0], fixture.ports[1]);
        let xen = {
            let driver = Arc::clone(&fixture.driver);
            thread::spawn(move || {
                driver.fire(a);
                driver.fire(b);
            })
        };
        fixture.wait_port(b);
        xen.join().unwrap();
    });
}

/// Proves a waiter that completes without being polled again (an `Events`
/// stream that returned a port) hands the fd watch over (defect 6): another
/// task's waiter is still woken by its port's event, whichever waiter
/// registered last, while the stream's task waits for it.
#[test]
fn a_completed_waiter_hands_the_fd_watch_over() {
    check(2, || {
        let fixture = Arc::new(Fixture::new(2));
        let (a, b) = (fixture.ports[0], fixture.ports[1]);
        let done = Arc::new(Notify::new());
        let waiter = {
            let (fixture, done) = (Arc::clone(&fixture), Arc::clone(&done));
            thread::spawn(move || {
                fixture.wait_port(b);
                done.notify();
            })
        };
        let xen = {
            let driver = Arc::clone(&fixture.driver);
            thread::spawn(move || {
                driver.fire(a);
                driver.fire(b);
            })
        };
        // The stream yields a port (`a`, or `b` if the waiter's drain
        // consumed nothing yet), then is held without being polled.
        let first = fixture.next_any();
        assert!(first == a || first == b);
        if first == a {
            done.wait();
        }
        xen.join().unwrap();
        if first == b {
            // The stream took `b`'s delivery: the waiter needs another one.
            fixture.driver.fire(b);
        }
        waiter.join().unwrap();
    });
}

/// Proves `EvtchnDevice`'s bookkeeping survives a bind on another thread
/// while an unbind returns (defect 5): Xen hands the lowest free port out
/// again, and in every interleaving each thread unbinds what it bound and
/// nothing stays bound, in the handle or in Xen.
#[test]
fn device_bind_and_unbind_race_keeps_the_bookkeeping() {
    check(2, || {
        let driver = EvtchnDriver::new();
        let device = Arc::new(driver.device());
        let other = {
            let device = Arc::clone(&device);
            thread::spawn(move || {
                let port = device.alloc_unbound_raw(DomId::SELF).unwrap();
                device.unbind_raw(port).unwrap();
            })
        };
        let port = device.alloc_unbound_raw(DomId::SELF).unwrap();
        device.unbind_raw(port).unwrap();
        other.join().unwrap();
        assert!(device.bound_ports().is_empty());
        assert!(driver.xen_ports().is_empty());
    });
}

/// Proves `RawEventChannel`'s owned set survives a bind on another vCPU
/// while an unbind returns (defect 5): in every interleaving of the owned
/// bits' updates with the hypercalls, each thread unbinds what it bound, and
/// every port ends closed and masked.
#[test]
fn freestanding_bind_and_unbind_race_keeps_the_owned_set() {
    check(2, || {
        let platform = MockPlatform::new();
        let xen = platform.domain(0);
        let channel: Arc<RawEventChannel<_, 1>> = Arc::new(xen.channel());
        let other = {
            let channel = Arc::clone(&channel);
            thread::spawn(move || {
                let port = channel.alloc_unbound_raw(DomId::SELF).unwrap();
                channel.unbind_raw(port).unwrap();
            })
        };
        let port = channel.alloc_unbound_raw(DomId::SELF).unwrap();
        channel.unbind_raw(port).unwrap();
        other.join().unwrap();
        for port in [Port::new(1), Port::new(2)] {
            assert_eq!(channel.unmask(port), Err(Error::NotBound(port)));
            assert!(xen.page().is_masked(port));
        }
    });
}
