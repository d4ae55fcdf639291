//! The demultiplexer of the tokio backend, apart from the runtime: one
//! `/dev/xen/evtchn` fd, its deliveries recorded per port, the waker of each
//! waiter, and the one waiter whose waker watches the fd's readiness.
//!
//! The runtime gives only [`Readiness`]; the loom models drive the same code
//! with a modelled fd.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU64;
use std::task::{Context, Poll, Waker};

use xen_hypercall::Port;

use crate::linux::{EvtchnDevice, READ_BATCH};
use crate::{Error, EventChannel, WaiterTicket};

/// The fd's readiness, as an edge-triggered reactor reports it.
pub(crate) trait Readiness {
    /// `Ready` once the fd became readable (or in error) since the last
    /// `Ready`, clearing that readiness: a later event is a new edge.
    /// Otherwise keeps `cx`'s waker (only the latest one) to wake on the edge.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>>;
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
    /// The waiter whose waker the readiness holds.
    watcher: Option<Watcher>,
}

/// A waiter, as the fd's watcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Watcher {
    /// The waiter of a port, by its registration's ticket.
    Port(Port, WaiterTicket),
    /// The stream's waiter.
    Any,
}

impl Watcher {
    /// Whether `self` (a waiter retiring) is `other` (a registered one).
    fn matches(self, other: Self) -> bool {
        match (self, other) {
            (Self::Port(port, ticket), Self::Port(other_port, other_ticket)) => {
                port == other_port && ticket.matches(other_ticket)
            }
            (Self::Any, Self::Any) => true,
            _ => false,
        }
    }
}

impl<R> core::fmt::Debug for Demux<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Demux")
            .field("delivered", &self.delivered.len())
            .field("waiters", &self.wakers.len())
            .field("watcher", &self.watcher)
            .finish_non_exhaustive()
    }
}

// The loom models build this without the tokio backend, which alone uses some methods.
#[cfg_attr(not(feature = "tokio-1"), allow(dead_code))]
impl<R: Readiness> Demux<R> {
    pub(crate) fn new(readiness: R) -> Self {
        Self {
            delivered: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            wakers: HashMap::new(),
            last_ticket: 0,
            any: None,
            readiness,
            watcher: None,
        }
    }

    /// `AsyncEventChannel::poll_port_with` on `device`.
    pub(crate) fn poll_port(
        &mut self,
        device: &EvtchnDevice,
        port: Port,
        ticket: &mut WaiterTicket,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        // A delivery another poll recorded needs no `read`.
        if self.consume(port) {
            return self.complete_port(port, *ticket, Ok(()));
        }
        if let Err(error) = self.drain(device) {
            return self.complete_port(port, *ticket, Err(error));
        }
        if self.consume(port) {
            return self.complete_port(port, *ticket, Ok(()));
        }
        if !device.is_bound(port) {
            return self.complete_port(port, *ticket, Err(Error::NotBound(port)));
        }
        self.register(port, ticket, cx.waker());
        if let Err(error) = self.pump(device, cx, Watcher::Port(port, *ticket)) {
            return self.complete_port(port, *ticket, Err(error));
        }
        if self.consume(port) {
            return self.complete_port(port, *ticket, Ok(()));
        }
        Poll::Pending
    }

    /// `AsyncEventChannel::poll_any` on `device`.
    pub(crate) fn poll_any(
        &mut self,
        device: &EvtchnDevice,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Port, Error>> {
        // A delivery another poll recorded needs no `read`.
        if let Some(port) = self.consume_oldest() {
            return self.complete_any(Ok(port));
        }
        if let Err(error) = self.drain(device) {
            return self.complete_any(Err(error));
        }
        if let Some(port) = self.consume_oldest() {
            return self.complete_any(Ok(port));
        }
        if !self
            .any
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            self.any = Some(cx.waker().clone());
        }
        if let Err(error) = self.pump(device, cx, Watcher::Any) {
            return self.complete_any(Err(error));
        }
        match self.consume_oldest() {
            Some(port) => self.complete_any(Ok(port)),
            None => Poll::Pending,
        }
    }

    /// `EventChannel::take_pending` on `device`: the oldest deliveries.
    pub(crate) fn take_pending(
        &mut self,
        device: &EvtchnDevice,
        ports: &mut [Port],
    ) -> Result<usize, Error> {
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

    /// Unbinds `port` through `device` and forgets its delivery, waking its
    /// waiter. The caller holds the demultiplexer's lock throughout: a bind on
    /// another thread may get this port number as soon as it is closed, and
    /// its deliveries and waiter are recorded under that lock only after this
    /// cleanup, so it cannot remove them.
    pub(crate) fn unbind(&mut self, device: &EvtchnDevice, port: Port) -> Result<(), Error> {
        device.unbind_raw(port)?;
        self.delivered.remove(&port);
        if let Some((_, waker)) = self.wakers.remove(&port) {
            // Its waiter learns the port is gone.
            waker.wake();
        }
        Ok(())
    }

    /// The waiter of `port` holding `ticket` is dropped.
    pub(crate) fn forget_port(&mut self, port: Port, ticket: WaiterTicket) {
        self.retire(Watcher::Port(port, ticket));
    }

    /// The stream's waiter is dropped.
    pub(crate) fn forget_any(&mut self) {
        self.retire(Watcher::Any);
    }

    /// Reads every queued port, records them, and re-arms them in one write
    /// per batch, until a read finds the queue empty.
    ///
    /// A short read does not mean the queue is empty: the driver wakes readers
    /// only when its ring goes from empty to non-empty, and `evtchn_read`
    /// snapshots `ring_prod`, copies, and only then advances `ring_cons`, so a
    /// port queued during the copy is neither returned nor announced. Only a
    /// read that finds the ring empty (`EAGAIN`) guarantees that the next
    /// port queued wakes the fd's watcher again.
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

    /// Watches the fd with `cx`'s waker, draining it each time it is ready,
    /// until it has nothing more. The caller has just drained it.
    fn pump(
        &mut self,
        device: &EvtchnDevice,
        cx: &mut Context<'_>,
        me: Watcher,
    ) -> Result<(), Error> {
        loop {
            self.watcher = Some(me);
            match self.readiness.poll_ready(cx) {
                Poll::Pending => return Ok(()),
                // Cleared: what the drain misses is a new edge.
                Poll::Ready(result) => {
                    result?;
                    self.drain(device)?;
                }
            }
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

    /// `done` will not be polled again soon (it completed or was dropped):
    /// forgets its waker and hands its fd watch, if it has it, to another
    /// waiter, which is woken to take it up.
    fn retire(&mut self, done: Watcher) {
        match done {
            Watcher::Port(port, ticket) => {
                // Not a later waiter's registration of the same port number.
                if self
                    .wakers
                    .get(&port)
                    .is_some_and(|(t, _)| ticket.matches(*t))
                {
                    self.wakers.remove(&port);
                }
            }
            Watcher::Any => self.any = None,
        }
        if !self.watcher.is_some_and(|watcher| done.matches(watcher)) {
            return;
        }
        self.watcher = None;
        let next = self
            .wakers
            .values()
            .map(|(_, w)| w)
            .next()
            .or(self.any.as_ref());
        if let Some(waker) = next {
            waker.wake_by_ref();
        }
    }

    /// `port`'s waiter holding `ticket` completes with `result`: it retires
    /// first, if it registered.
    fn complete_port<T>(&mut self, port: Port, ticket: WaiterTicket, result: T) -> Poll<T> {
        if ticket != WaiterTicket::NONE {
            self.retire(Watcher::Port(port, ticket));
        }
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

    /// The stream's waiter completes with `result`: it retires first.
    fn complete_any<T>(&mut self, result: T) -> Poll<T> {
        self.retire(Watcher::Any);
        Poll::Ready(result)
    }
}
