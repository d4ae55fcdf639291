//! The tokio integration: one `/dev/xen/evtchn` fd in one [`AsyncFd`],
//! demultiplexed to per-port wakers, without a thread.

use std::boxed::Box;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use xen_hypercall::{DomId, Port, Virq};

use crate::linux::{EvtchnDevice, READ_BATCH};
use crate::{AsyncEventChannel, Error, EventChannel, WaiterTicket};

/// A readiness wait on the fd, for readable or error (the driver reports an
/// overflow as `POLLERR` alone).
type Readiness = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// Event channels through `/dev/xen/evtchn`, awaitable on tokio: the RFC's
/// `TokioEventChannel`.
///
/// Whichever future is polled reads every queued port in page-sized batches
/// until a read finds none, records each as delivered, re-arms them with one
/// `write` per batch, and wakes the waiter of each. One pending waiter's
/// waker watches the fd; it hands that duty to another pending waiter (waking
/// it) as soon as it completes or is dropped, so a completed future or stream
/// that is not polled again starves no one. Dropping the handle closes the
/// fd, which unbinds every port.
///
/// Ports are re-armed as soon as their delivery is recorded, so
/// [`EventChannel::unmask`] has nothing to do here (it only checks the port).
/// Must be created inside a tokio runtime with IO enabled.
#[derive(Debug)]
pub struct TokioEventChannel {
    fd: Arc<AsyncFd<EvtchnDevice>>,
    table: Mutex<Table>,
}

/// Who waits for what, and the deliveries not yet consumed.
#[derive(Default)]
struct Table {
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
    readiness: Option<Readiness>,
    /// The waiter whose waker the readiness wait holds.
    watcher: Option<Watcher>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Watcher {
    /// The waiter of a port, by its registration's ticket.
    Port(Port, WaiterTicket),
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

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("delivered", &self.delivered.len())
            .field("waiters", &self.wakers.len())
            .field("watcher", &self.watcher)
            .finish_non_exhaustive()
    }
}

impl Table {
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

impl TokioEventChannel {
    /// Opens `/dev/xen/evtchn` and registers it with the current tokio runtime.
    pub fn open() -> Result<Self, Error> {
        Self::new(EvtchnDevice::open()?)
    }

    /// Wraps an open device; registers it for readable and error readiness.
    pub fn new(device: EvtchnDevice) -> Result<Self, Error> {
        // `register_with_interest` panics outside a runtime: refuse first.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Unsupported(
                "TokioEventChannel must be created inside a tokio runtime",
            ));
        }
        let interest = Interest::READABLE | Interest::ERROR;
        // SAFETY: `EvtchnDevice` owns its fd (an `OwnedFd` it never replaces),
        // open until the device is dropped, which happens only with the
        // `AsyncFd` that owns it; `as_raw_fd` always returns that fd.
        let fd = unsafe { AsyncFd::register_with_interest(device, interest) }.map_err(|e| {
            let (_, error) = e.into_parts();
            match error.raw_os_error() {
                Some(errno) => Error::Os {
                    operation: "registering with tokio",
                    errno,
                },
                None => Error::Unsupported("AsyncFd needs a tokio runtime with IO enabled"),
            }
        })?;
        Ok(Self {
            fd: Arc::new(fd),
            table: Mutex::default(),
        })
    }

    /// The device, for its own methods (`restrict`, `bind_static_raw`, ...).
    pub fn device(&self) -> &EvtchnDevice {
        self.fd.get_ref()
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
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
    fn drain(&self, table: &mut Table) -> Result<(), Error> {
        let mut ports = [Port::new(0); READ_BATCH];
        loop {
            let count = self.device().take_pending(&mut ports)?;
            if count == 0 {
                return Ok(());
            }
            let batch = &ports[..count];
            batch.iter().for_each(|&port| table.record(port));
            // Ports read here are masked by the driver; one unbound since is
            // skipped by it (no bookkeeping lookup, no allocation).
            self.device().rearm(batch)?;
        }
    }

    /// Watches the fd with `cx`'s waker, draining it each time it is ready,
    /// until it has nothing more. The caller has just drained it.
    fn pump(&self, table: &mut Table, cx: &mut Context<'_>, me: Watcher) -> Result<(), Error> {
        loop {
            let readiness = table.readiness.get_or_insert_with(|| {
                let fd = Arc::clone(&self.fd);
                Box::pin(async move {
                    let mut guard = fd.ready(Interest::READABLE | Interest::ERROR).await?;
                    // Cleared before the caller drains: a later event is a new edge.
                    guard.clear_ready();
                    Ok(())
                })
            });
            table.watcher = Some(me);
            match readiness.as_mut().poll(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(result) => {
                    table.readiness = None;
                    result.map_err(|e| Error::Os {
                        operation: "waiting for the fd",
                        errno: e.raw_os_error().unwrap_or(0),
                    })?;
                    self.drain(table)?;
                }
            }
        }
    }
}

impl EventChannel for TokioEventChannel {
    fn alloc_unbound_raw(&self, remote: DomId) -> Result<Port, Error> {
        self.device().alloc_unbound_raw(remote)
    }

    fn bind_interdomain_raw(&self, remote: DomId, remote_port: Port) -> Result<Port, Error> {
        self.device().bind_interdomain_raw(remote, remote_port)
    }

    fn bind_virq_raw(&self, virq: Virq) -> Result<Port, Error> {
        self.device().bind_virq_raw(virq)
    }

    fn unbind_raw(&self, port: Port) -> Result<(), Error> {
        // The table stays locked from the unbind to the cleanup: a bind on
        // another thread may get this port number as soon as it is closed,
        // and its deliveries and waiter are recorded under this lock only
        // after this cleanup, so it cannot remove them.
        let mut table = self.table();
        self.device().unbind_raw(port)?;
        table.delivered.remove(&port);
        if let Some((_, waker)) = table.wakers.remove(&port) {
            // Its waiter learns the port is gone.
            waker.wake();
        }
        Ok(())
    }

    fn notify(&self, port: Port) -> Result<(), Error> {
        self.device().notify(port)
    }

    fn unmask(&self, port: Port) -> Result<(), Error> {
        if !self.device().is_bound(port) {
            return Err(Error::NotBound(port));
        }
        Ok(())
    }

    fn take_pending(&self, ports: &mut [Port]) -> Result<usize, Error> {
        let mut table = self.table();
        self.drain(&mut table)?;
        let mut count = 0;
        while count < ports.len() {
            let Some(port) = table.consume_oldest() else {
                break;
            };
            ports[count] = port;
            count += 1;
        }
        Ok(count)
    }

    fn wait_pending(&self, ports: &mut [Port]) -> Result<usize, Error> {
        loop {
            let count = self.take_pending(ports)?;
            if count > 0 || ports.is_empty() {
                return Ok(count);
            }
            self.device().wait_readable(-1)?;
        }
    }
}

impl AsyncEventChannel for TokioEventChannel {
    fn poll_port(&self, port: Port, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.poll_port_with(port, &mut WaiterTicket::default(), cx)
    }

    fn poll_port_with(
        &self,
        port: Port,
        ticket: &mut WaiterTicket,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        let mut table = self.table();
        // A delivery another poll recorded needs no `read`.
        if table.consume(port) {
            return table.complete_port(port, *ticket, Ok(()));
        }
        if let Err(error) = self.drain(&mut table) {
            return table.complete_port(port, *ticket, Err(error));
        }
        if table.consume(port) {
            return table.complete_port(port, *ticket, Ok(()));
        }
        if !self.device().is_bound(port) {
            return table.complete_port(port, *ticket, Err(Error::NotBound(port)));
        }
        table.register(port, ticket, cx.waker());
        if let Err(error) = self.pump(&mut table, cx, Watcher::Port(port, *ticket)) {
            return table.complete_port(port, *ticket, Err(error));
        }
        if table.consume(port) {
            return table.complete_port(port, *ticket, Ok(()));
        }
        Poll::Pending
    }

    fn poll_any(&self, cx: &mut Context<'_>) -> Poll<Result<Port, Error>> {
        let mut table = self.table();
        // A delivery another poll recorded needs no `read`.
        if let Some(port) = table.consume_oldest() {
            return table.complete_any(Ok(port));
        }
        if let Err(error) = self.drain(&mut table) {
            return table.complete_any(Err(error));
        }
        if let Some(port) = table.consume_oldest() {
            return table.complete_any(Ok(port));
        }
        if !table
            .any
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            table.any = Some(cx.waker().clone());
        }
        if let Err(error) = self.pump(&mut table, cx, Watcher::Any) {
            return table.complete_any(Err(error));
        }
        match table.consume_oldest() {
            Some(port) => table.complete_any(Ok(port)),
            None => Poll::Pending,
        }
    }

    fn forget_port(&self, port: Port) {
        self.forget_port_with(port, WaiterTicket::NONE);
    }

    fn forget_port_with(&self, port: Port, ticket: WaiterTicket) {
        self.table().retire(Watcher::Port(port, ticket));
    }

    fn forget_any(&self) {
        self.table().retire(Watcher::Any);
    }
}
