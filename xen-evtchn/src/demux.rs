//! The demultiplexer of the tokio backend, apart from the runtime: one
//! `/dev/xen/evtchn` fd, its deliveries recorded per port, the waker of each
//! waiter, and the fd's readiness, which the channel watches with a waker of
//! its own, so that no waiter depends on another one being polled.
//!
//! The runtime gives only [`Readiness`]; the loom models drive the same code
//! with a modelled fd.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU64;
use std::os::fd::AsFd;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};

use core::sync::atomic::Ordering::AcqRel;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use xen_hypercall::{Errno, Port};

use crate::linux::{EvtchnDevice, READ_BATCH};
use crate::sync::{AtomicBool, Mutex, MutexGuard, TryLockError};
use crate::{Error, EventChannel, WaiterTicket};

/// The fd's readiness, as an edge-triggered reactor reports it.
pub(crate) trait Readiness: Send + 'static {
    /// `Ready` once the fd became readable (or in error) since the last
    /// `Ready`, clearing that readiness: a later event is a new edge.
    /// Otherwise keeps `cx`'s waker (only the latest one) to wake on the edge,
    /// never from inside this call.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>>;
}

/// One channel: its device, the table of deliveries and waiters, and the
/// channel's own readiness waker.
///
/// Who wakes whom: the fd's readiness holds only [`Core::waker`], never a
/// waiter's. On an edge the reactor wakes it; whoever then holds the table
/// (the waking thread if the table is free, else the holder, before it
/// unlocks) services the readiness: drains the fd until it is empty, which
/// wakes the waiter of each port read, and polls the readiness again, so the
/// next edge wakes the channel again. A waiter is woken by its port's
/// delivery whether or not any other future is ever polled.
pub(crate) struct Core<R> {
    device: Arc<EvtchnDevice>,
    table: Mutex<Demux<R>>,
    /// A readiness wake-up came: the table's next holder services it.
    woken: AtomicBool,
    /// Readable while a delivery is recorded and a blocking waiter waits.
    signal: Arc<EventFd>,
    /// The channel's readiness waker (a weak reference to this core).
    waker: Waker,
}

/// The waker the fd's readiness holds: services the readiness of its core,
/// if the core still exists (it does not keep it alive).
struct ReadinessWaker<R>(Weak<Core<R>>);

impl<R: Readiness> Wake for ReadinessWaker<R> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(core) = self.0.upgrade() {
            core.readiness_woken();
        }
    }
}

impl<R> core::fmt::Debug for Core<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Core")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

// The loom models build this without the tokio backend, which alone uses some methods.
#[cfg_attr(not(feature = "tokio-1"), allow(dead_code))]
impl<R: Readiness> Core<R> {
    /// A channel on `device`, whose readiness `readiness` reports; starts
    /// watching it.
    pub(crate) fn new(device: Arc<EvtchnDevice>, readiness: R) -> Result<Arc<Self>, Error> {
        let signal = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).map_err(
            |errno| Error::Os {
                operation: "eventfd",
                errno: Errno::from_raw(errno as i32),
            },
        )?;
        let signal = Arc::new(signal);
        let core = Arc::new_cyclic(|weak: &Weak<Self>| Self {
            device,
            table: Mutex::new(Demux::new(readiness, Arc::clone(&signal))),
            woken: AtomicBool::new(false),
            signal,
            waker: Waker::from(Arc::new(ReadinessWaker(weak.clone()))),
        });
        // The first service registers the waker with the readiness.
        core.readiness_woken();
        Ok(core)
    }

    /// The device.
    pub(crate) fn device(&self) -> &EvtchnDevice {
        &self.device
    }

    /// `AsyncEventChannel::poll_port_with`.
    pub(crate) fn poll_port(
        &self,
        port: Port,
        ticket: &mut WaiterTicket,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        self.with_table(|table, device| table.poll_port(device, port, ticket, cx))
    }

    /// `AsyncEventChannel::poll_any`.
    pub(crate) fn poll_any(&self, cx: &mut Context<'_>) -> Poll<Result<Port, Error>> {
        self.with_table(|table, device| table.poll_any(device, cx))
    }

    /// `EventChannel::take_pending`: the oldest deliveries.
    pub(crate) fn take_pending(&self, ports: &mut [Port]) -> Result<usize, Error> {
        self.with_table(|table, device| table.take_pending(device, ports))
    }

    /// `EventChannel::wait_pending`: blocks in `poll(2)` until the fd is
    /// readable or a delivery is recorded (by the readiness service or a
    /// waiter's drain, which read the fd before this thread could), then
    /// takes the oldest deliveries. Needs no runtime: the fd's own readiness
    /// (level-triggered in `poll`) wakes it.
    pub(crate) fn wait_pending(&self, ports: &mut [Port]) -> Result<usize, Error> {
        loop {
            let count = self.with_table(|table, device| {
                let count = table.take_pending(device, ports)?;
                if count == 0 && !ports.is_empty() {
                    table.block();
                }
                Ok::<_, Error>(count)
            })?;
            if count > 0 || ports.is_empty() {
                return Ok(count);
            }
            let waited = self.wait_readable();
            self.with_table(|table, _| table.unblock());
            waited?;
        }
    }

    /// Waits until the device or the signal is readable.
    fn wait_readable(&self) -> Result<(), Error> {
        let mut fds = [
            PollFd::new(self.device.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.signal.as_fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(errno) => Err(Error::Os {
                operation: "poll",
                errno: Errno::from_raw(errno as i32),
            }),
        }
    }

    /// Unbinds `port` and forgets its delivery, waking its waiter. The table
    /// is held throughout: a bind on another thread may get this port number
    /// as soon as it is closed, and its deliveries and waiter are recorded
    /// under that lock only after this cleanup, so it cannot remove them.
    pub(crate) fn unbind(&self, port: Port) -> Result<(), Error> {
        self.with_table(|table, device| table.unbind(device, port))
    }

    /// The waiter of `port` holding `ticket` is dropped.
    pub(crate) fn forget_port(&self, port: Port, ticket: WaiterTicket) {
        self.with_table(|table, _| table.forget_port(port, ticket));
    }

    /// The stream's waiter is dropped.
    pub(crate) fn forget_any(&self) {
        self.with_table(|table, _| table.any = None);
    }

    /// Runs `f` on the table, then releases it.
    fn with_table<T>(&self, f: impl FnOnce(&mut Demux<R>, &EvtchnDevice) -> T) -> T {
        // Every mutation completes before the lock is released.
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let out = f(&mut table, &self.device);
        self.release(table);
        out
    }

    /// The readiness woke the channel: services it now if the table is free,
    /// else leaves it to the holder (never waits for the table, which a
    /// holder may keep across a system call).
    fn readiness_woken(&self) {
        self.woken.swap(true, AcqRel);
        match self.table.try_lock() {
            Ok(table) => self.release(table),
            Err(TryLockError::Poisoned(poisoned)) => self.release(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => {}
        }
    }

    /// Releases the table, servicing the readiness first if it woke the
    /// channel meanwhile.
    ///
    /// No wake-up is left unserviced. Every access to `woken` is a
    /// read-modify-write (`AcqRel`), so they are totally ordered and each
    /// reads the latest value. A waking thread sets it (W1), then tries the
    /// lock (W2); a holder, after unlocking (H1), reads it again (H2) and, if
    /// set, takes the lock back. If W2 fails, its holder H has H2 after W1:
    /// were H2 before W1, W1 would read from H2's release sequence, so H1
    /// would happen before W2 and W2 would not find the table held by H. So
    /// H2 reads `true` (unless a holder cleared it by servicing it) and H
    /// takes the table back, or finds it held by a later holder, whose own
    /// swap at its release comes after W1 by the same argument and services
    /// it. The service reads from W1's release sequence, so it sees the edge
    /// the reactor recorded before W1.
    fn release<'a>(&'a self, mut table: MutexGuard<'a, Demux<R>>) {
        loop {
            if self.woken.swap(false, AcqRel) {
                table.service(&self.device, &self.waker);
            }
            // Loom schedules no other thread at a mutex release: let one run
            // here, so the models explore a wake-up between check and unlock.
            #[cfg(all(test, loom))]
            loom::thread::yield_now();
            drop(table);
            // A read-modify-write, not a load: see above.
            if !self.woken.fetch_or(false, AcqRel) {
                return;
            }
            table = match self.table.try_lock() {
                Ok(table) => table,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
        }
    }
}

/// Deliveries and waiters of one fd, and its readiness.
pub(crate) struct Demux<R> {
    /// Ports with a delivery, and its sequence number in `order`.
    delivered: HashMap<Port, u64>,
    /// Deliveries in arrival order, for the stream; entries whose sequence
    /// number no longer matches `delivered` were consumed by a port's waiter.
    order: VecDeque<(Port, u64)>,
    next_seq: u64,
    /// The waker of each port's waiter, and its registration's ticket.
    wakers: HashMap<Port, (WaiterTicket, Waker)>,
    /// The last ticket handed out.
    last_ticket: u64,
    any: Option<Waker>,
    readiness: R,
    /// Why the readiness can no longer wake anyone (the runtime shut down).
    failed: Option<Error>,
    /// Threads blocked in `wait_pending`.
    blocked: usize,
    /// Their wake-up when another thread records a delivery; `signalled`
    /// says whether it is readable.
    signal: Arc<EventFd>,
    signalled: bool,
}

impl<R> core::fmt::Debug for Demux<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Demux")
            .field("delivered", &self.delivered.len())
            .field("waiters", &self.wakers.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<R: Readiness> Demux<R> {
    fn new(readiness: R, signal: Arc<EventFd>) -> Self {
        Self {
            delivered: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            wakers: HashMap::new(),
            last_ticket: 0,
            any: None,
            readiness,
            failed: None,
            blocked: 0,
            signal,
            signalled: false,
        }
    }

    fn poll_port(
        &mut self,
        device: &EvtchnDevice,
        port: Port,
        ticket: &mut WaiterTicket,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        // A delivery recorded before needs no `read`.
        if self.consume(port) {
            return self.complete_port(port, *ticket, Ok(()));
        }
        // What is queued now would wake this waiter through the readiness;
        // reading it here saves that round through the reactor.
        if let Err(error) = self.drain(device) {
            return self.complete_port(port, *ticket, Err(error));
        }
        if self.consume(port) {
            return self.complete_port(port, *ticket, Ok(()));
        }
        if !device.is_bound(port) {
            return self.complete_port(port, *ticket, Err(Error::NotBound(port)));
        }
        if let Some(error) = self.failed {
            return self.complete_port(port, *ticket, Err(error));
        }
        self.register(port, ticket, cx.waker());
        Poll::Pending
    }

    fn poll_any(
        &mut self,
        device: &EvtchnDevice,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Port, Error>> {
        if let Some(port) = self.consume_oldest() {
            return self.complete_any(Ok(port));
        }
        if let Err(error) = self.drain(device) {
            return self.complete_any(Err(error));
        }
        if let Some(port) = self.consume_oldest() {
            return self.complete_any(Ok(port));
        }
        if let Some(error) = self.failed {
            return self.complete_any(Err(error));
        }
        if !self
            .any
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            self.any = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    fn take_pending(&mut self, device: &EvtchnDevice, ports: &mut [Port]) -> Result<usize, Error> {
        self.drain(device)?;
        let mut count = 0;
        while count < ports.len() {
            let Some(port) = self.consume_oldest() else {
                break;
            };
            ports[count] = port;
            count += 1;
        }
        Ok(count)
    }

    fn unbind(&mut self, device: &EvtchnDevice, port: Port) -> Result<(), Error> {
        device.unbind_raw(port)?;
        self.delivered.remove(&port);
        if let Some((_, waker)) = self.wakers.remove(&port) {
            // Its waiter learns the port is gone.
            waker.wake();
        }
        Ok(())
    }

    /// Forgets the registration of `port`'s waiter if `ticket` stands for it
    /// (not a later waiter's of the same port number).
    fn forget_port(&mut self, port: Port, ticket: WaiterTicket) {
        if self
            .wakers
            .get(&port)
            .is_some_and(|(registered, _)| ticket.matches(*registered))
        {
            self.wakers.remove(&port);
        }
    }

    /// A thread blocks in `wait_pending`: it found no delivery recorded, so
    /// the signal has nothing to say until the next one.
    fn block(&mut self) {
        self.blocked += 1;
        if core::mem::take(&mut self.signalled) {
            let _ = self.signal.read();
        }
    }

    /// A thread left its wait in `wait_pending`.
    fn unblock(&mut self) {
        self.blocked -= 1;
    }

    /// The readiness woke the channel: until it is pending again, drains the
    /// fd each time it is ready. Polled with `waker`, the channel's, it wakes
    /// the channel on the next edge.
    fn service(&mut self, device: &EvtchnDevice, waker: &Waker) {
        let mut cx = Context::from_waker(waker);
        while self.failed.is_none() {
            match self.readiness.poll_ready(&mut cx) {
                Poll::Pending => return,
                Poll::Ready(Err(error)) => {
                    // No edge will wake anyone now: every waiter returns the error.
                    self.failed = Some(error);
                    self.wake_all();
                }
                // Cleared: what the drain misses is a new edge.
                Poll::Ready(Ok(())) => {
                    if self.drain(device).is_err() {
                        // Each waiter drains when polled, and returns the error.
                        self.wake_all();
                    }
                }
            }
        }
    }

    /// Reads every queued port, records them, and re-arms them in one write
    /// per batch, until a read finds the queue empty.
    ///
    /// A short read does not mean the queue is empty: the driver wakes readers
    /// only when its ring goes from empty to non-empty, and `evtchn_read`
    /// snapshots `ring_prod`, copies, and only then advances `ring_cons`, so a
    /// port queued during the copy is neither returned nor announced. Only a
    /// read that finds the ring empty (`EAGAIN`) guarantees that the next
    /// port queued is a new edge, which wakes the channel.
    fn drain(&mut self, device: &EvtchnDevice) -> Result<(), Error> {
        let mut ports = [Port::new(0); READ_BATCH];
        loop {
            let count = device.take_pending(&mut ports)?;
            if count == 0 {
                return Ok(());
            }
            let batch = &ports[..count];
            batch.iter().for_each(|&port| self.record(port));
            // Ports read here are masked by the driver; one unbound since is
            // skipped by it (no bookkeeping lookup, no allocation).
            device.rearm(batch)?;
        }
    }

    fn record(&mut self, port: Port) {
        if self.delivered.contains_key(&port) {
            return; // Coalesced with the unconsumed delivery.
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.delivered.insert(port, seq);
        self.order.push_back((port, seq));
        if let Some((_, waker)) = self.wakers.get(&port) {
            waker.wake_by_ref();
        }
        if let Some(waker) = &self.any {
            waker.wake_by_ref();
        }
        if self.blocked > 0 && !self.signalled {
            self.signalled = true;
            let _ = self.signal.write(1);
        }
    }

    /// Wakes every waiter, to look again.
    fn wake_all(&mut self) {
        self.wakers
            .values()
            .for_each(|(_, waker)| waker.wake_by_ref());
        if let Some(waker) = &self.any {
            waker.wake_by_ref();
        }
        if self.blocked > 0 && !self.signalled {
            self.signalled = true;
            let _ = self.signal.write(1);
        }
    }

    fn consume(&mut self, port: Port) -> bool {
        let consumed = self.delivered.remove(&port).is_some();
        // Drop stale entries now and then, so `order` stays proportional.
        if consumed && self.order.len() > 2 * self.delivered.len() + 64 {
            let delivered = &self.delivered;
            self.order.retain(|(p, seq)| delivered.get(p) == Some(seq));
        }
        consumed
    }

    fn consume_oldest(&mut self) -> Option<Port> {
        while let Some((port, seq)) = self.order.pop_front() {
            if self.delivered.get(&port) == Some(&seq) {
                self.delivered.remove(&port);
                return Some(port);
            }
        }
        None
    }

    /// `port`'s waiter holding `ticket` completes with `result`: its
    /// registration, if it made one, is forgotten.
    fn complete_port<T>(&mut self, port: Port, ticket: WaiterTicket, result: T) -> Poll<T> {
        if ticket != WaiterTicket::NONE {
            self.forget_port(port, ticket);
        }
        Poll::Ready(result)
    }

    /// The stream's waiter completes with `result`: its waker is forgotten.
    fn complete_any<T>(&mut self, result: T) -> Poll<T> {
        self.any = None;
        Poll::Ready(result)
    }

    /// Registers `waker` for `port`'s waiter holding `ticket`, replacing the
    /// port's previous waker; sets `ticket` to the registration's.
    fn register(&mut self, port: Port, ticket: &mut WaiterTicket, waker: &Waker) {
        match self.wakers.get_mut(&port) {
            Some((registered, old)) => {
                if !old.will_wake(waker) {
                    *old = waker.clone();
                }
                *ticket = *registered;
            }
            None => {
                self.last_ticket += 1;
                let new =
                    NonZeroU64::new(self.last_ticket).map_or(WaiterTicket::NONE, WaiterTicket::new);
                self.wakers.insert(port, (new, waker.clone()));
                *ticket = new;
            }
        }
    }
}
