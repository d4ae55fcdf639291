//! Per-port waker slots without allocation, for the freestanding backend.

use core::sync::atomic::{AtomicU32, Ordering};
use core::task::Waker;

use atomic_waker::AtomicWaker;
use xen_hypercall::Port;

use crate::Error;

/// The port number of a free slot (no port has it: ports are below 2^17).
const FREE: u32 = u32::MAX;

/// `N` slots, each holding the latest waker of one port.
#[derive(Debug)]
pub(crate) struct Waiters<const N: usize> {
    ports: [AtomicU32; N],
    wakers: [AtomicWaker; N],
}

impl<const N: usize> Waiters<N> {
    pub(crate) const fn new() -> Self {
        Self {
            ports: [const { AtomicU32::new(FREE) }; N],
            wakers: [const { AtomicWaker::new() }; N],
        }
    }

    /// Registers `waker` for `port`, replacing the port's previous one.
    pub(crate) fn register(&self, port: Port, waker: &Waker) -> Result<(), Error> {
        let slot = match self.find(port) {
            Some(slot) => slot,
            None => self
                .ports
                .iter()
                .position(|p| {
                    p.compare_exchange(FREE, port.raw(), Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                })
                .ok_or(Error::TooManyWaiters(N))?,
        };
        self.wakers[slot].register(waker);
        Ok(())
    }

    /// Wakes `port`'s waiter, if it has one.
    pub(crate) fn wake(&self, port: Port) {
        if let Some(slot) = self.find(port) {
            self.wakers[slot].wake();
        }
    }

    /// Frees `port`'s slot (its waiter completed or was dropped); returns
    /// the waker it held.
    pub(crate) fn release(&self, port: Port) -> Option<Waker> {
        let slot = self.find(port)?;
        let waker = self.wakers[slot].take();
        self.ports[slot].store(FREE, Ordering::Release);
        waker
    }

    /// Frees `port`'s slot because the port was unbound, waking its waiter:
    /// still pending, it looks again and learns the port is gone.
    pub(crate) fn evict(&self, port: Port) {
        if let Some(waker) = self.release(port) {
            waker.wake();
        }
    }

    fn find(&self, port: Port) -> Option<usize> {
        self.ports
            .iter()
            .position(|p| p.load(Ordering::Acquire) == port.raw())
    }
}
