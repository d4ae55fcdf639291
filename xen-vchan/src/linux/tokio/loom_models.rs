//! Loom models of the two-waker logic ([`poll_delivery`] and [`Wakers`], the code the channel
//! runs) over a port that behaves as the event channel's: a delivery stays pending until one
//! poll consumes it, deliveries coalesce while pending, and the port keeps the waker of its
//! last poll. Loom's lock is in [`Wakers`] and the port, so every interleaving at those points
//! is tried (within the preemption bound).
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p xen-rust-vchan --all-features --release --lib loom_models`

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::{Condvar, Mutex};
use loom::thread;

use super::{Side, Wakers, poll_delivery};

/// Runs `model` under loom with `preemptions` as the preemption bound (unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise).
fn check(preemptions: usize, model: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(preemptions);
    builder.check(model);
}

/// Runs `future` to completion on this thread, blocking it while the future is pending: loom
/// reports a deadlock if nothing wakes it (a lost wake-up).
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

/// The channel's port as `poll_port` sees it: pending or not, and the last poll's waker.
#[derive(Default)]
struct Port {
    state: Mutex<(bool, Option<Waker>)>,
}

impl Port {
    /// The peer's event: pending (if it was already, the two are one), the waker woken.
    fn deliver(&self) {
        let waker = {
            let mut state = self.state.lock().unwrap();
            state.0 = true;
            state.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state.lock().unwrap();
        if core::mem::take(&mut state.0) {
            Poll::Ready(())
        } else {
            state.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// What the peer did for each side's ring (bytes to read, room to write), the port, and the
/// lock that serialises the two sides' polls (each needs `&mut Vchan`: `tokio::io::split`'s
/// lock, or one task polling both).
#[derive(Default)]
struct Channel {
    moved: [AtomicBool; 2],
    split: Mutex<()>,
    port: Port,
    wakers: Arc<Wakers>,
}

impl Channel {
    /// One side's blocking operation as `poll_step` runs it, each poll under the split lock:
    /// look at the ring, and while nothing moved, wait for a delivery through
    /// [`poll_delivery`].
    fn wait(&self, side: Side) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| {
            let _polling = self.split.lock().unwrap();
            loop {
                if self.moved[side as usize].load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                if poll_delivery(&self.wakers, side, cx, |both| self.port.poll(both)).is_pending() {
                    return Poll::Pending;
                }
            }
        })
    }

    /// The peer moves bytes for `side` and sends the event it was asked for.
    fn peer_moves(&self, side: Side, deliver: bool) {
        self.moved[side as usize].store(true, Ordering::Release);
        if deliver {
            self.port.deliver();
        }
    }
}

/// A reader and a writer waiting at once (two tasks on two threads), the peer writing for the
/// one and reading for the other, with one event each: both finish, whichever consumes which
/// delivery, and however the two deliveries coalesce into one.
#[test]
fn an_event_for_each_side_wakes_both() {
    check(2, || {
        let channel = Arc::new(Channel::default());
        let sides = [Side::Read, Side::Write].map(|side| {
            let channel = Arc::clone(&channel);
            thread::spawn(move || block_on(channel.wait(side)))
        });
        channel.peer_moves(Side::Read, true);
        channel.peer_moves(Side::Write, true);
        for side in sides {
            side.join().unwrap();
        }
    });
}

/// The peer moves bytes for both sides and sends one event: the side that consumes it wakes
/// the other (the delivery it took was the other's too), so neither waits forever.
#[test]
fn one_event_for_both_sides_wakes_both() {
    check(3, || {
        let channel = Arc::new(Channel::default());
        let sides = [Side::Read, Side::Write].map(|side| {
            let channel = Arc::clone(&channel);
            thread::spawn(move || block_on(channel.wait(side)))
        });
        channel.peer_moves(Side::Read, false);
        channel.peer_moves(Side::Write, true);
        for side in sides {
            side.join().unwrap();
        }
    });
}
