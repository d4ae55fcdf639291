//! Per-port waker slots without allocation, for the freestanding backend.

use core::sync::atomic::Ordering;
use core::task::Waker;

use atomic_waker::AtomicWaker;
use xen_hypercall::Port;

use crate::sync::{AtomicU32, AtomicU64};
use crate::{Error, WaiterTicket};

/// The port number of a free slot (no port has it: ports are below 2^17).
const FREE: u32 = u32::MAX;

/// `N` slots, each holding the latest waker of one port, and the ticket of
/// the registration that claimed it.
#[derive(Debug)]
pub(crate) struct Waiters<const N: usize> {
    ports: [AtomicU32; N],
    tickets: [AtomicU64; N],
    wakers: [AtomicWaker; N],
    /// The last ticket handed out.
    last_ticket: AtomicU64,
}

impl<const N: usize> Waiters<N> {
    #[cfg(not(all(test, loom)))]
    pub(crate) const fn new() -> Self {
        Self {
            ports: [const { AtomicU32::new(FREE) }; N],
            tickets: [const { AtomicU64::new(0) }; N],
            wakers: [const { AtomicWaker::new() }; N],
            last_ticket: AtomicU64::new(0),
        }
    }

    /// `new`, with loom's atomics (not `const`).
    #[cfg(all(test, loom))]
    pub(crate) fn new() -> Self {
        Self {
            ports: core::array::from_fn(|_| AtomicU32::new(FREE)),
            tickets: core::array::from_fn(|_| AtomicU64::new(0)),
            wakers: [const { AtomicWaker::new() }; N],
            last_ticket: AtomicU64::new(0),
        }
    }

    /// Registers `waker` for `port`, replacing the port's previous one; sets
    /// `ticket` to the registration's (a new one if the port had none).
    pub(crate) fn register(
        &self,
        port: Port,
        ticket: &mut WaiterTicket,
        waker: &Waker,
    ) -> Result<(), Error> {
        let slot = match self.find(port) {
            Some(slot) => slot,
            None => {
                let slot = self
                    .ports
                    .iter()
                    .position(|p| {
                        p.compare_exchange(FREE, port.raw(), Ordering::AcqRel, Ordering::Acquire)
                            .is_ok()
                    })
                    .ok_or(Error::TooManyWaiters(N))?;
                // 2^64 registrations never wrap.
                let new = self.last_ticket.fetch_add(1, Ordering::Relaxed) + 1;
                self.tickets[slot].store(new, Ordering::Release);
                slot
            }
        };
        self.wakers[slot].register(waker);
        *ticket = self.ticket(slot);
        Ok(())
    }

    /// Wakes `port`'s waiter, if it has one.
    pub(crate) fn wake(&self, port: Port) {
        if let Some(slot) = self.find(port) {
            self.wakers[slot].wake();
        }
    }

    /// Frees `port`'s slot if `ticket` stands for its registration (its
    /// waiter completed or was dropped); returns the waker it held.
    pub(crate) fn release(&self, port: Port, ticket: WaiterTicket) -> Option<Waker> {
        let slot = self.find(port)?;
        if !ticket.matches(self.ticket(slot)) {
            return None; // A later waiter's registration.
        }
        let waker = self.wakers[slot].take();
        self.ports[slot].store(FREE, Ordering::Release);
        waker
    }

    /// Frees `port`'s slot because the port was unbound, waking its waiter:
    /// still pending, it looks again and learns the port is gone.
    pub(crate) fn evict(&self, port: Port) {
        if let Some(waker) = self.release(port, WaiterTicket::NONE) {
            waker.wake();
        }
    }

    fn ticket(&self, slot: usize) -> WaiterTicket {
        let raw = self.tickets[slot].load(Ordering::Acquire);
        core::num::NonZeroU64::new(raw).map_or(WaiterTicket::NONE, WaiterTicket::new)
    }

    fn find(&self, port: Port) -> Option<usize> {
        self.ports
            .iter()
            .position(|p| p.load(Ordering::Acquire) == port.raw())
    }
}
