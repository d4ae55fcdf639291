//! The Linux and tokio backends on `mock::EvtchnDriver`, a mock of
//! `/dev/xen/evtchn` with the driver's exact delivery rules, driven from other
//! threads while the code under test reads. Every wait has a deadline.
#![cfg(all(target_os = "linux", feature = "mock", not(miri)))]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use xen_evtchn::linux::EvtchnDevice;
use xen_evtchn::mock::EvtchnDriver;
use xen_evtchn::{BoundPort, DomId, EventChannel, Port};

/// A bind on another thread while `channel` unbinds a port: just after Xen
/// closed it, before the unbind returns. Xen hands the lowest free port out
/// again, so the bind gets the same number; the unbind's bookkeeping must not
/// forget the new binding (which then could be neither unbound nor awaited).
fn bind_during_unbind<C: EventChannel + Send + Sync + 'static>(
    driver: &EvtchnDriver,
    channel: &Arc<C>,
) {
    let port = channel.alloc_unbound_raw(DomId::SELF).unwrap();
    let (rebound_tx, rebound_rx) = std::sync::mpsc::channel();
    let binding = Arc::clone(channel);
    driver.set_unbind_hook(Some(Box::new(move |_| {
        let binding = Arc::clone(&binding);
        let rebound = thread::spawn(move || binding.alloc_unbound_raw(DomId::SELF))
            .join()
            .unwrap();
        rebound_tx.send(rebound).unwrap();
    })));
    channel.unbind_raw(port).unwrap();
    driver.set_unbind_hook(None);
    let rebound = rebound_rx.recv().unwrap().unwrap();
    assert_eq!(rebound, port, "Xen hands out the lowest free port");
    channel.unbind_raw(rebound).unwrap();
    assert_eq!(driver.xen_ports(), Vec::<Port>::new(), "leaked in Xen");
}

#[test]
fn concurrent_bind_and_unbind_keep_the_device_bookkeeping() {
    let driver = EvtchnDriver::new();
    let device = Arc::new(driver.device());
    bind_during_unbind(&driver, &device);
    assert_eq!(device.bound_ports(), Vec::<Port>::new());
}

/// Another thread reads while a bind is inside its ioctl, after the driver
/// queued the event Xen marks pending at bind: it must not be handed the port
/// before the device records it, or its unmask is refused and the port stays
/// masked (seen on a two-vCPU dom0). The reader is given 200 ms: long enough
/// to finish if nothing holds it back.
#[test]
fn a_port_pending_at_bind_is_not_handed_out_before_it_is_recorded() {
    let driver = EvtchnDriver::new();
    let device = Arc::new(driver.device());
    let a = device.alloc_unbound_raw(DomId::SELF).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let reader = Arc::clone(&device);
    driver.set_bind_hook(Some(Box::new(move |_| {
        let reader = Arc::clone(&reader);
        let done_tx = done_tx.clone();
        thread::spawn(move || {
            let mut ports = [Port::new(0); 8];
            let result = reader.take_pending(&mut ports).and_then(|count| {
                reader.unmask_all(&ports[..count])?;
                Ok(ports[..count].to_vec())
            });
            done_tx.send(result).unwrap();
        });
        // Lets the reader run inside the bind, as another vCPU would.
        thread::sleep(std::time::Duration::from_millis(200));
    })));
    let b = device.bind_interdomain_raw(DomId::SELF, a).unwrap();
    driver.set_bind_hook(None);
    let read = done_rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("the reader finished");
    assert_eq!(
        read,
        Ok(vec![b]),
        "the reader got the bound port and re-armed it"
    );
    assert!(driver.is_enabled(b), "left masked");
}

/// A port of `device` and one bound to it, with the bind's pending event read (`b` masked).
fn drained_loopback(device: &EvtchnDevice) -> (BoundPort<&EvtchnDevice>, BoundPort<&EvtchnDevice>) {
    let a = device.alloc_unbound(DomId::SELF).unwrap();
    let b = device.bind_interdomain(DomId::SELF, a.port()).unwrap();
    let mut ports = [Port::new(0); 8];
    assert_eq!(device.take_pending(&mut ports).unwrap(), 1);
    (a, b)
}

/// An unmask of a batch that holds a port not bound here re-arms the others,
/// and names that port.
#[test]
fn unmask_all_re_arms_the_bound_ports_of_a_batch_with_an_unbound_one() {
    let driver = EvtchnDriver::new();
    let device = driver.device();
    let (_a, b) = drained_loopback(&device);
    assert!(!driver.is_enabled(b.port()));
    let stranger = Port::new(b.port().raw() + 10);
    assert_eq!(
        device.unmask_all(&[stranger, b.port()]),
        Err(xen_evtchn::Error::NotBound(stranger))
    );
    assert!(
        driver.is_enabled(b.port()),
        "the bound port was left masked"
    );
}

#[test]
fn a_port_queued_during_a_read_is_returned_by_take_pending() {
    let driver = EvtchnDriver::new();
    let device = driver.device();
    let (a, b) = drained_loopback(&device);
    let mut ports = [Port::new(0); 8];
    b.unmask().unwrap();
    // `a` fires while the read copies `b`: the ring is not empty then, so the
    // driver wakes nobody; only a further read finds it.
    let fired = Arc::new(AtomicBool::new(false));
    let (hook_fired, hook_driver, port) = (Arc::clone(&fired), Arc::clone(&driver), a.port());
    driver.set_read_hook(Some(Box::new(move |count| {
        if count > 0 && !hook_fired.swap(true, Ordering::SeqCst) {
            hook_driver.fire(port);
        }
    })));
    driver.fire(b.port());
    assert_eq!(device.take_pending(&mut ports).unwrap(), 1);
    assert_eq!(ports[0], b.port());
    assert!(fired.load(Ordering::SeqCst));
    assert_eq!(driver.queued(), 1);
    assert_eq!(device.take_pending(&mut ports).unwrap(), 1);
    assert_eq!(ports[0], a.port());
}

#[test]
fn an_overflowed_ring_reports_every_bound_port() {
    let driver = EvtchnDriver::with_ring_size(2);
    let device = driver.device();
    let ports: Vec<_> = (0..3)
        .map(|_| device.alloc_unbound(DomId::SELF).unwrap())
        .collect();
    for port in &ports {
        driver.fire(port.port());
    }
    assert!(driver.overflowed());
    let mut got = [Port::new(0); 8];
    let count = device.take_pending(&mut got).unwrap();
    let mut got = got[..count].to_vec();
    got.sort();
    assert_eq!(got, ports.iter().map(|p| p.port()).collect::<Vec<_>>());
    assert_eq!(device.overflows(), 1);
    assert!(!driver.overflowed());
}

/// A blocking device: `take_pending` still returns at once when nothing is queued, and
/// `wait_pending`'s one blocking read recovers an overflow like the non-blocking read.
#[test]
fn a_blocking_device_takes_without_waiting_and_recovers_an_overflow() {
    let driver = EvtchnDriver::with_ring_size(2);
    let device = driver.device();
    device.set_blocking().unwrap();
    let ports: Vec<_> = (0..3)
        .map(|_| device.alloc_unbound(DomId::SELF).unwrap())
        .collect();
    let mut got = [Port::new(0); 8];
    assert_eq!(device.take_pending(&mut got).unwrap(), 0);
    for port in &ports {
        driver.fire(port.port());
    }
    assert!(driver.overflowed());
    let count = device.wait_pending(&mut got).unwrap();
    let mut got = got[..count].to_vec();
    got.sort();
    assert_eq!(got, ports.iter().map(|p| p.port()).collect::<Vec<_>>());
    assert_eq!(device.overflows(), 1);
    assert!(!driver.overflowed());
}

#[cfg(feature = "tokio-1")]
mod tokio_backend {
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;
    use std::task::Poll;
    use std::time::Duration;

    use futures_core::Stream;
    use xen_evtchn::tokio::TokioEventChannel;
    use xen_evtchn::{AsyncEventChannel, Error};

    use super::*;
    use crate::common::within;

    const DEADLINE: Duration = Duration::from_secs(2);

    /// A channel on a fresh mock driver.
    fn channel() -> (Arc<EvtchnDriver>, Arc<TokioEventChannel>) {
        let driver = EvtchnDriver::new();
        let channel = TokioEventChannel::new(driver.device()).unwrap();
        (driver, Arc::new(channel))
    }

    /// A loopback pair whose bind-time delivery is consumed; the ports stay
    /// bound (the channel's fd unbinds them).
    async fn loopback(channel: &TokioEventChannel) -> (Port, Port) {
        let a = channel.alloc_unbound(DomId::SELF).unwrap().into_raw();
        let b = channel.bind_interdomain(DomId::SELF, a).unwrap().into_raw();
        within(DEADLINE, channel.wait_port(b))
            .await
            .unwrap()
            .unwrap();
        (a, b)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_port_queued_during_the_drain_is_not_lost() {
        let (driver, channel) = channel();
        let (a, b) = loopback(&channel).await;
        // As interrupts on another CPU: `b` fires just after the waiter's
        // first read found the ring empty (a wake-up: the fd is ready), and
        // `a` while the read after that copies `b` (no wake-up: the ring is
        // not empty). Only a read after that one finds `a`.
        let step = Arc::new(AtomicUsize::new(0));
        let (hook_step, hook_driver) = (Arc::clone(&step), Arc::clone(&driver));
        driver.set_read_hook(Some(Box::new(move |count| {
            match (hook_step.load(Ordering::SeqCst), count) {
                (0, 0) => hook_driver.fire(b),
                (1, 1) => hook_driver.fire(a),
                _ => return,
            }
            hook_step.fetch_add(1, Ordering::SeqCst);
        })));
        // Only `a` is awaited: no other waiter reads the fd for it.
        let waiter = {
            let channel = Arc::clone(&channel);
            tokio::spawn(async move { within(DEADLINE, channel.wait_port(a)).await })
        };
        waiter.await.unwrap().unwrap().unwrap();
        assert_eq!(step.load(Ordering::SeqCst), 2);
        within(DEADLINE, channel.wait_port(b))
            .await
            .unwrap()
            .unwrap();
        driver.set_read_hook(None);
        // Later events still reach their waiters.
        for _ in 0..100 {
            driver.fire(a);
            within(DEADLINE, channel.wait_port(a))
                .await
                .unwrap()
                .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_stream_that_is_not_polled_again_starves_no_waiter() {
        let (driver, channel) = channel();
        let (_, b1) = loopback(&channel).await;
        let (_, b2) = loopback(&channel).await;
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        // Task 2 waits on `b2` and tells task 1 when it got it.
        let waiter = {
            let channel = Arc::clone(&channel);
            tokio::spawn(async move {
                let result = within(DEADLINE, channel.wait_port(b2)).await;
                let _ = done_tx.send(());
                result
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Task 1 takes one event from its stream, then waits for task 2
        // while holding the stream without polling it.
        let streamer = {
            let channel = Arc::clone(&channel);
            tokio::spawn(async move {
                let mut events = pin!(channel.events());
                let next = std::future::poll_fn(|cx| events.as_mut().poll_next(cx));
                let port = within(DEADLINE, next).await.unwrap().unwrap().unwrap();
                first_tx.send(port).unwrap();
                within(DEADLINE, done_rx).await.unwrap().unwrap();
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        driver.fire(b1);
        assert_eq!(within(DEADLINE, first_rx).await.unwrap().unwrap(), b1);
        driver.fire(b2);
        waiter.await.unwrap().unwrap().unwrap();
        streamer.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_completed_wait_that_is_not_dropped_starves_no_waiter() {
        let (driver, channel) = channel();
        let (_, b1) = loopback(&channel).await;
        let (_, b2) = loopback(&channel).await;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let waiter = {
            let channel = Arc::clone(&channel);
            tokio::spawn(async move {
                let result = within(DEADLINE, channel.wait_port(b2)).await;
                let _ = done_tx.send(());
                result
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let holder = {
            let channel = Arc::clone(&channel);
            tokio::spawn(async move {
                let mut wait = pin!(channel.wait_port(b1));
                within(DEADLINE, wait.as_mut()).await.unwrap().unwrap();
                first_tx.send(()).unwrap();
                // `wait` completed and lives on, unpolled.
                within(DEADLINE, done_rx).await.unwrap().unwrap();
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        driver.fire(b1);
        within(DEADLINE, first_rx).await.unwrap().unwrap();
        driver.fire(b2);
        waiter.await.unwrap().unwrap().unwrap();
        holder.await.unwrap();
    }

    /// A waiter that is pending, alive and never polled again (a future kept
    /// in a struct, or `&mut fut` in a `select!` loop whose other branch runs
    /// long), and polled after every other waiter: the other waiters are still
    /// woken by their ports' events.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_pending_waiter_that_is_not_polled_again_starves_no_waiter() {
        let (driver, channel) = channel();
        let (_, idle) = loopback(&channel).await;
        let (_, b1) = loopback(&channel).await;
        let (_, b2) = loopback(&channel).await;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let waiters: Vec<_> = [b1, b2]
            .into_iter()
            .map(|port| {
                let channel = Arc::clone(&channel);
                tokio::spawn(async move { within(DEADLINE, channel.wait_port(port)).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (polled_tx, polled_rx) = tokio::sync::oneshot::channel();
        let holder = {
            let channel = Arc::clone(&channel);
            tokio::spawn(async move {
                let mut idle = pin!(channel.wait_port(idle));
                // Polled once, last of all waiters, then kept unpolled while
                // this task awaits something else.
                let polled = std::future::poll_fn(|cx| Poll::Ready(idle.as_mut().poll(cx))).await;
                assert!(polled.is_pending());
                polled_tx.send(()).unwrap();
                within(DEADLINE, done_rx).await.unwrap().unwrap();
            })
        };
        within(DEADLINE, polled_rx).await.unwrap().unwrap();
        driver.fire(b1);
        driver.fire(b2);
        for waiter in waiters {
            waiter.await.unwrap().unwrap().unwrap();
        }
        done_tx.send(()).unwrap();
        holder.await.unwrap();
    }

    /// A thread blocked in `wait_pending` while the runtime's reactor runs:
    /// the channel's readiness service reads the fd before the thread can,
    /// and the thread is still woken, by the delivery it records.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_pending_is_woken_when_the_channel_reads_the_fd_first() {
        let (driver, channel) = channel();
        let (_, b) = loopback(&channel).await;
        for _ in 0..20 {
            let (tx, rx) = std::sync::mpsc::channel();
            let blocking = Arc::clone(&channel);
            let waiter = thread::spawn(move || {
                let mut ports = [Port::new(0); 4];
                let count = blocking.wait_pending(&mut ports);
                tx.send(count.map(|count| ports[..count].to_vec())).unwrap();
            });
            tokio::time::sleep(Duration::from_millis(5)).await;
            driver.fire(b);
            let got = tokio::task::spawn_blocking(move || rx.recv_timeout(DEADLINE))
                .await
                .unwrap()
                .expect("wait_pending returned: no lost wake-up");
            assert_eq!(got.unwrap(), [b]);
            waiter.join().unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_bind_and_unbind_keep_the_table() {
        let (driver, channel) = channel();
        let racing = Arc::clone(&channel);
        tokio::task::spawn_blocking(move || bind_during_unbind(&driver, &racing))
            .await
            .unwrap();
        assert_eq!(channel.device().bound_ports(), Vec::<Port>::new());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_stale_wait_cannot_release_a_new_waiter_of_the_same_port_number() {
        let (driver, channel) = channel();
        let (a, old) = loopback(&channel).await;
        let (_, other) = loopback(&channel).await;
        let mut stale = Box::pin(channel.wait_port(old));
        let noop = std::task::Waker::noop();
        assert!(
            stale
                .as_mut()
                .poll(&mut std::task::Context::from_waker(noop))
                .is_pending()
        );
        channel.unbind_raw(old).unwrap();
        // Xen hands the number out again; the bind-time event is consumed.
        let new = channel.bind_interdomain_raw(DomId::SELF, a).unwrap();
        assert_eq!(new, old);
        within(DEADLINE, channel.wait_port(new))
            .await
            .unwrap()
            .unwrap();
        let fresh = {
            let channel = Arc::clone(&channel);
            tokio::spawn(async move { within(DEADLINE, channel.wait_port(new)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Another waiter, polled last.
        let other_waiter = {
            let channel = Arc::clone(&channel);
            tokio::spawn(async move { within(DEADLINE, channel.wait_port(other)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The stale future goes: the fresh one's registration stays.
        drop(stale);
        driver.fire(new);
        fresh.await.unwrap().unwrap().unwrap();
        driver.fire(other);
        other_waiter.await.unwrap().unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_overflow_under_waiters_delivers_every_port() {
        let driver = EvtchnDriver::with_ring_size(2);
        let channel = Arc::new(TokioEventChannel::new(driver.device()).unwrap());
        let ports: Vec<Port> = (0..4)
            .map(|_| channel.alloc_unbound(DomId::SELF).unwrap().into_raw())
            .collect();
        let waiters: Vec<_> = ports
            .iter()
            .map(|&port| {
                let channel = Arc::clone(&channel);
                tokio::spawn(async move { within(DEADLINE, channel.wait_port(port)).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The reader is held inside its read until every port fired: the
        // ring (2 slots) overflows.
        let fired = Arc::new(AtomicBool::new(false));
        let hook_fired = Arc::clone(&fired);
        driver.set_read_hook(Some(Box::new(move |_| {
            while !hook_fired.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(1));
            }
        })));
        let firing = Arc::clone(&driver);
        thread::spawn(move || {
            ports.iter().for_each(|&port| firing.fire(port));
            fired.store(true, Ordering::SeqCst);
        })
        .join()
        .unwrap();
        for waiter in waiters {
            waiter.await.unwrap().unwrap().unwrap();
        }
        assert_eq!(channel.device().overflows(), 1);
    }

    /// Many ports, each awaited by its own task, signalled from other threads
    /// while other tasks bind and unbind: every signal reaches its waiter.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_waiters_and_binds_lose_nothing() {
        const PORTS: usize = 64;
        const ROUNDS: usize = 100;
        const CHURN: usize = 4;
        let (driver, channel) = channel();
        let (fire_tx, fire_rx) = std::sync::mpsc::channel::<Port>();
        // Xen's interrupts, from two threads.
        let fire_rx = Arc::new(std::sync::Mutex::new(fire_rx));
        let firing: Vec<_> = (0..2)
            .map(|_| {
                let (driver, fire_rx) = (Arc::clone(&driver), Arc::clone(&fire_rx));
                thread::spawn(move || {
                    while let Ok(port) = fire_rx.lock().unwrap().recv() {
                        driver.fire(port);
                    }
                })
            })
            .collect();
        let waiters: Vec<_> = (0..PORTS)
            .map(|_| {
                let channel = Arc::clone(&channel);
                let fire_tx = fire_tx.clone();
                let port = channel.alloc_unbound(DomId::SELF).unwrap().into_raw();
                tokio::spawn(async move {
                    for _ in 0..ROUNDS {
                        fire_tx.send(port).unwrap();
                        within(DEADLINE, channel.wait_port(port)).await??;
                    }
                    Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
                })
            })
            .collect();
        drop(fire_tx);
        let churn: Vec<_> = (0..CHURN)
            .map(|_| {
                let channel = Arc::clone(&channel);
                tokio::spawn(async move {
                    for _ in 0..ROUNDS {
                        let port = channel.alloc_unbound(DomId::SELF)?;
                        port.close()?;
                        tokio::task::yield_now().await;
                    }
                    Ok::<(), Error>(())
                })
            })
            .collect();
        for waiter in waiters {
            waiter.await.unwrap().unwrap();
        }
        for task in churn {
            task.await.unwrap().unwrap();
        }
        for thread in firing {
            thread.join().unwrap();
        }
        assert_eq!(channel.device().bound_ports().len(), PORTS);
    }
}
