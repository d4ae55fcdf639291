//! Loom models of the wake-up and bookkeeping logic: the real code (the tokio
//! backend's channel core, `EvtchnDevice`, `RawEventChannel`) over the
//! driver-faithful mocks, with loom's atomics and locks in the bookkeeping and
//! in the mock driver's ring, so that loom tries every interleaving of the
//! threads at those points (within its preemption bound).
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p xen-rust-evtchn --features mock --release --lib loom_models`

use std::boxed::Box;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::vec::Vec;

use loom::sync::{Condvar, Mutex, Notify};
use loom::thread;
use xen_hypercall::{DomId, Port};

use crate::demux::{Core, Readiness};
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

/// Runs `future` to completion on this thread, blocking it while the future
/// is pending: loom reports a deadlock if nothing wakes it. (Not
/// `loom::future::block_on`, which may poll again with no wake-up and so
/// hide a lost one; nor a park token, which loom's mutexes may clear.)
fn block_on<F: Future>(future: F) -> F::Output {
    #[derive(Default)]
    struct Woken {
        woken: Mutex<bool>,
        changed: Condvar,
    }
    impl Wake for Woken {
        fn wake(self: Arc<Self>) {
            *self.woken.lock().unwrap() = true;
            self.changed.notify_one();
        }
    }
    let woken = Arc::new(Woken::default());
    let waker = Waker::from(Arc::clone(&woken));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        let mut flag = woken.woken.lock().unwrap();
        while !*flag {
            flag = woken.changed.wait(flag).unwrap();
        }
        *flag = false;
    }
}

/// An edge-triggered reactor's readiness of the mock driver's fd, as tokio's
/// `AsyncFd` with one readiness wait: the driver's wake-up sets it and hands
/// the one waker it holds to the reactor thread, which wakes it (never the
/// driver's interrupt itself, which holds the driver's lock); `poll_ready`
/// clears it.
#[derive(Clone)]
struct ModelReadiness(Arc<Reactor>);

struct Reactor {
    state: Mutex<ReactorState>,
    /// Something for the reactor thread to do.
    turn: Notify,
}

#[derive(Default)]
struct ReactorState {
    ready: bool,
    /// The waker of the readiness wait.
    waker: Option<Waker>,
    /// The waker of an edge, for the reactor thread to wake.
    fired: Option<Waker>,
    stopped: bool,
}

impl ModelReadiness {
    fn new() -> Self {
        Self(Arc::new(Reactor {
            state: Mutex::new(ReactorState::default()),
            turn: Notify::new(),
        }))
    }

    /// The driver woke its readers: an edge.
    fn edge(&self) {
        let mut state = self.0.state.lock().unwrap();
        state.ready = true;
        if let Some(waker) = state.waker.take() {
            state.fired = Some(waker);
            self.0.turn.notify();
        }
    }

    /// The reactor thread: wakes the waker of each edge, until stopped.
    fn run(&self) {
        loop {
            self.0.turn.wait();
            let (fired, stopped) = {
                let mut state = self.0.state.lock().unwrap();
                (state.fired.take(), state.stopped)
            };
            if let Some(waker) = fired {
                waker.wake();
            }
            if stopped {
                return;
            }
        }
    }

    fn stop(&self) {
        self.0.state.lock().unwrap().stopped = true;
        self.0.turn.notify();
    }
}

impl Readiness for ModelReadiness {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let mut state = self.0.state.lock().unwrap();
        if core::mem::take(&mut state.ready) {
            return Poll::Ready(Ok(()));
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A channel over a fresh mock driver, with `ports` bound (loopback peers
/// are not needed: the model fires ports directly), and its reactor thread.
struct Fixture {
    driver: Arc<EvtchnDriver>,
    core: Arc<Core<ModelReadiness>>,
    readiness: ModelReadiness,
    reactor: Option<thread::JoinHandle<()>>,
    ports: Vec<Port>,
}

impl Fixture {
    fn new(ports: usize) -> Self {
        let driver = EvtchnDriver::with_ring_size(4);
        let device = Arc::new(driver.device());
        let ports = (0..ports)
            .map(|_| device.alloc_unbound_raw(DomId::SELF).unwrap())
            .collect();
        let readiness = ModelReadiness::new();
        let edge = readiness.clone();
        driver.set_wake_hook(Some(Box::new(move || edge.edge())));
        let core = Core::new(device, readiness.clone()).unwrap();
        let reactor = {
            let readiness = readiness.clone();
            Some(thread::spawn(move || readiness.run()))
        };
        Self {
            driver,
            core,
            readiness,
            reactor,
            ports,
        }
    }

    /// A waiter of `port`: blocks its thread until the port's delivery
    /// (loom reports a deadlock if nothing ever wakes it).
    fn wait_port(&self, port: Port) {
        let mut ticket = WaiterTicket::NONE;
        block_on(poll_fn(|cx| self.core.poll_port(port, &mut ticket, cx))).unwrap();
        // Completed: as a `WaitPort` is then dropped.
        self.core.forget_port(port, ticket);
    }

    /// Stops the reactor thread.
    fn stop(&mut self) {
        self.readiness.stop();
        if let Some(reactor) = self.reactor.take() {
            reactor.join().unwrap();
        }
    }
}

/// Proves the drain cannot miss the driver's wake rule (defect 1): the
/// driver wakes readers only when its ring goes from empty to non-empty, and
/// a port queued while a `read` copies is neither returned by it nor
/// announced; a waiter of that port must still get it, in every interleaving
/// of Xen's interrupts with the waiter's reads and the channel's readiness
/// service. (With a drain that stops at the first short read, loom finds the
/// waiter asleep forever.)
#[test]
fn drain_misses_no_port_queued_during_a_read() {
    // Three: the waiter is preempted after its first read (`a` fires and
    // wakes the channel), Xen after that, and the waiter again while it
    // copies `a` (`b` fires).
    check(3, || {
        let mut fixture = Fixture::new(2);
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
        fixture.stop();
    });
}

/// Proves no waiter depends on another future being polled (defect 6): a
/// waiter of `idle` is polled once (possibly after the other waiter's last
/// poll) and never again, and the waiter of `b` is still woken by `b`'s
/// event, through the channel's own readiness waker, in every interleaving of
/// the reactor's wake-up with the waiters' polls and the service's drain. It
/// also proves the hand-over of a wake-up that finds the table held (the
/// `woken` flag): without the holder's check after unlocking, loom finds the
/// waiter asleep forever.
#[test]
fn a_pending_waiter_that_is_not_polled_again_starves_no_waiter() {
    check(2, || {
        let mut fixture = Fixture::new(2);
        let (idle, b) = (fixture.ports[0], fixture.ports[1]);
        let holder = {
            let core = Arc::clone(&fixture.core);
            thread::spawn(move || {
                // A task that polls its wait once and not again.
                let mut ticket = WaiterTicket::NONE;
                let mut cx = Context::from_waker(Waker::noop());
                assert!(core.poll_port(idle, &mut ticket, &mut cx).is_pending());
            })
        };
        let xen = {
            let driver = Arc::clone(&fixture.driver);
            thread::spawn(move || driver.fire(b))
        };
        fixture.wait_port(b);
        holder.join().unwrap();
        xen.join().unwrap();
        fixture.stop();
    });
}

/// Proves the hand-over of a readiness wake-up that finds the table held
/// (the `woken` flag, `Core::release`): the reactor wakes the channel while
/// another thread holds the table, at any point of its critical section and
/// release, and the fd is still drained (by the waking thread or by the
/// holder) before both are done. Without the holder's check after
/// unlocking, loom finds the port left in the ring.
#[test]
fn a_readiness_wake_while_the_table_is_held_is_serviced() {
    check(3, || {
        let mut fixture = Fixture::new(1);
        let port = fixture.ports[0];
        // An edge: the reactor thread wakes the channel.
        fixture.driver.fire(port);
        // Meanwhile this thread holds the table, as any waiter does.
        fixture.core.forget_any();
        fixture.stop();
        assert_eq!(fixture.driver.queued(), 0, "the wake-up was not serviced");
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
