//! The freestanding backend: event channels over any [`XenHypercall`] and the
//! shared info page (2-level ABI, vCPU 0), `no_std`, without allocation.

mod shared_info;

use core::sync::atomic::Ordering;
use core::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use xen_hypercall::prelude::*;
use xen_hypercall::sched::{Deadline, POLL_MAX_PORTS};

use self::shared_info::{Bit, WORD_BITS, WORDS};
pub use self::shared_info::{PORTS, SharedInfo};
use crate::sync::AtomicU64;
use crate::waiters::Waiters;
use crate::{AsyncEventChannel, Error, EventChannel, WaiterTicket};

/// Event channels over hypercalls and the shared info page: the RFC's
/// `RawEventChannel`. Implements both [`EventChannel`] and
/// [`AsyncEventChannel`]; futures are woken by [`handle_upcall`](Self::handle_upcall)
/// (from an interrupt handler) or by [`poll_and_dispatch`](Self::poll_and_dispatch)
/// (a guest without interrupts, waiting in `SCHEDOP_poll`).
///
/// One handle per domain: it owns the delivery state of vCPU 0
/// (`evtchn_pending_sel`, `evtchn_upcall_pending`) and of the ports it binds,
/// which are bound to vCPU 0. Up to `WAITERS` ports can be awaited at once
/// (a slot is freed when its [`WaitPort`](crate::WaitPort) is dropped).
#[derive(Debug)]
pub struct RawEventChannel<H, const WAITERS: usize = 32> {
    hypercall: H,
    shared: SharedInfo,
    /// The ports bound through this handle, one bit each.
    owned: [AtomicU64; WORDS],
    waiters: Waiters<WAITERS>,
    /// The waiter of [`AsyncEventChannel::poll_any`].
    any: AtomicWaker,
}

impl<H: XenHypercall, const WAITERS: usize> RawEventChannel<H, WAITERS>
where
    Error: From<H::Error>,
{
    /// Event channels of this domain through `hypercall` and `shared`.
    #[cfg(not(all(test, loom)))]
    pub const fn new(hypercall: H, shared: SharedInfo) -> Self {
        Self {
            hypercall,
            shared,
            owned: [const { AtomicU64::new(0) }; WORDS],
            waiters: Waiters::new(),
            any: AtomicWaker::new(),
        }
    }

    /// Event channels of this domain through `hypercall` and `shared`
    /// (with loom's atomics, not `const`).
    #[cfg(all(test, loom))]
    pub fn new(hypercall: H, shared: SharedInfo) -> Self {
        Self {
            hypercall,
            shared,
            owned: core::array::from_fn(|_| AtomicU64::new(0)),
            waiters: Waiters::new(),
            any: AtomicWaker::new(),
        }
    }

    /// The hypercall backend.
    pub fn hypercall(&self) -> &H {
        &self.hypercall
    }

    /// Starts over after this domain was resumed in a new domain
    /// (`SCHEDOP_shutdown(suspend)` answered "resumed": `xl restore`, a
    /// migration), with `shared`, its shared info page mapped again.
    ///
    /// The new domain has none of the old one's ports: every port this handle
    /// bound or adopted is forgotten (not closed: its number may already be
    /// another channel's, such as the new xenstore or console port), so bind
    /// them again (the peer rebinds its end to the new numbers) and adopt the
    /// new xenstore and console ports. `&mut self` proves that no
    /// [`BoundPort`](crate::BoundPort) or [`WaitPort`](crate::WaitPort) of the
    /// old ports is alive. After a suspend that was cancelled (a checkpoint)
    /// the domain, its shared info page and its ports are unchanged: do not
    /// call this.
    pub fn resume(&mut self, shared: SharedInfo) {
        self.shared = shared;
        for word in &self.owned {
            word.store(0, Ordering::Release);
        }
        self.waiters = Waiters::new();
        self.any = AtomicWaker::new();
    }

    /// `port`'s bit, if this handle bound it.
    fn owned_bit(&self, port: Port) -> Result<Bit, Error> {
        let bit = Bit::of(port)?;
        if self.owned[bit.word].load(Ordering::Acquire) & bit.mask == 0 {
            return Err(Error::NotBound(port));
        }
        Ok(bit)
    }

    /// Takes a port Xen just allocated: refuses one past the 2-level ABI
    /// (closing it), records it as owned and arms it.
    fn take_new(&self, port: Port) -> Result<Port, Error> {
        if let Err(error) = Bit::of(port) {
            let _ = self.hypercall.evtchn_close(port);
            return Err(error);
        }
        self.adopt(port).inspect_err(|_| {
            // The caller never learns the port: close it rather than leak it
            // (the arm's error is the one to report).
            let _ = self.unbind_raw(port);
        })
    }

    /// Adopts `port`, a port of this domain bound to vCPU 0 by someone else
    /// (such as the xenstore and console ports the domain builder binds and
    /// `start_info` or the HVM parameters name): records it as this handle's,
    /// and arms it. From then on it is this handle's like a port it bound:
    /// [`unbind_raw`](EventChannel::unbind_raw) closes it.
    ///
    /// Safe: a port two handles (or a handle and other code) both think
    /// theirs loses or duplicates deliveries, never memory safety. The caller
    /// makes sure nothing else takes, masks or closes it.
    ///
    /// # Errors
    ///
    /// [`Error::PortOutOfRange`] for a port the 2-level ABI cannot name,
    /// [`Error::Hypercall`] if `EVTCHNOP_unmask` fails.
    pub fn adopt(&self, port: Port) -> Result<Port, Error> {
        let bit = Bit::of(port)?;
        self.owned[bit.word].fetch_or(bit.mask, Ordering::AcqRel);
        self.arm(port, bit)?;
        Ok(port)
    }

    /// Unmasks `bit`, then closes the race with an event that arrived while
    /// it was masked (Xen did not raise `pending_sel` for it): if pending,
    /// mask again and let `EVTCHNOP_unmask` unmask and re-raise the upcall,
    /// which only Xen can do for HVM/PVH guests and ports of other vCPUs.
    fn arm(&self, port: Port, bit: Bit) -> Result<(), Error> {
        self.shared.clear_mask(bit);
        if self.shared.is_pending(bit) {
            self.shared.set_mask(bit);
            self.hypercall.evtchn_unmask(port)?;
        }
        Ok(())
    }

    /// The owned, unmasked ports (at most [`POLL_MAX_PORTS`]), for `SCHEDOP_poll`.
    fn armed_ports(&self, ports: &mut [Port; POLL_MAX_PORTS]) -> Result<usize, Error> {
        let mut count = 0;
        for word in 0..WORDS {
            let mut bits = self.owned[word].load(Ordering::Acquire)
                & !self.shared.mask(word).load(Ordering::Acquire);
            while bits != 0 {
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                let slot = ports.get_mut(count).ok_or(Error::Unsupported(
                    "waiting without upcalls on more than 128 armed ports (SCHEDOP_poll's limit)",
                ))?;
                *slot = Bit::port(word, bit);
                count += 1;
            }
        }
        Ok(count)
    }

    /// Waits in `SCHEDOP_poll` until an armed port of this handle is pending
    /// or `deadline` (Xen system time) passes, then wakes the futures of the
    /// pending ports. For guests that take no upcall; returns at once if no
    /// port is armed.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] with more than [`POLL_MAX_PORTS`] armed ports,
    /// [`Error::Hypercall`] if `SCHEDOP_poll` fails.
    pub fn poll_and_dispatch(&self, deadline: Option<Deadline>) -> Result<(), Error> {
        let mut ports = [Port::new(0); POLL_MAX_PORTS];
        let count = self.armed_ports(&mut ports)?;
        if count > 0 {
            self.hypercall.poll(&ports[..count], deadline)?;
        }
        self.dispatch_all();
        Ok(())
    }

    /// The upcall handler: call it from the event-channel interrupt (PV
    /// callback, HVM/PVH upcall vector, arm's PPI). Clears
    /// `evtchn_upcall_pending`, takes `evtchn_pending_sel` and wakes the
    /// futures of every pending, unmasked port it names (the 2-level demux).
    /// Deliveries stay pending until a future consumes them.
    pub fn handle_upcall(&self) {
        // SeqCst: the clear is ordered before reading the selector on every
        // architecture (a full barrier, as the ABI asks on arm).
        self.shared.upcall_pending().store(0, Ordering::SeqCst);
        let sel = self.shared.pending_sel().swap(0, Ordering::SeqCst);
        self.wake_deliverable(sel);
    }

    /// The upcall's work without an upcall, for a guest that waits in
    /// `SCHEDOP_poll`: clears `evtchn_upcall_pending` and the selector (Xen's
    /// `do_poll` returns at once while the flag is set and not masked, and
    /// only the guest clears it), then wakes the waiters of every
    /// deliverable port (a port pending while the selector was already set
    /// raised no bit of its own).
    fn dispatch_all(&self) {
        self.shared.upcall_pending().store(0, Ordering::SeqCst);
        self.shared.pending_sel().swap(0, Ordering::SeqCst);
        self.wake_deliverable(u64::MAX);
    }

    /// Wakes the waiters of the pending, unmasked, owned ports of the words in `sel`.
    fn wake_deliverable(&self, sel: u64) {
        let mut any = false;
        for word in 0..WORDS {
            if sel & (1 << word) == 0 {
                continue;
            }
            let mut bits = self.shared.deliverable(word) & self.owned[word].load(Ordering::Acquire);
            while bits != 0 {
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                self.waiters.wake(Bit::port(word, bit));
                any = true;
            }
        }
        if any {
            self.any.wake();
        }
    }

    /// Claims the first deliverable owned port: clears its pending bit.
    fn claim_any(&self) -> Option<(Port, Bit)> {
        for word in 0..WORDS {
            let mut bits = self.shared.deliverable(word) & self.owned[word].load(Ordering::Acquire);
            while bits != 0 {
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                let port = Bit::port(word, bit);
                let bit = Bit {
                    word,
                    mask: 1 << bit,
                };
                if self.shared.take_pending(bit) {
                    return Some((port, bit));
                }
            }
        }
        None
    }
}

impl<H: XenHypercall, const WAITERS: usize> EventChannel for RawEventChannel<H, WAITERS>
where
    Error: From<H::Error>,
{
    fn alloc_unbound_raw(&self, remote: DomId) -> Result<Port, Error> {
        let port = self.hypercall.evtchn_alloc_unbound(DomId::SELF, remote)?;
        self.take_new(port)
    }

    fn bind_interdomain_raw(&self, remote: DomId, remote_port: Port) -> Result<Port, Error> {
        let port = self
            .hypercall
            .evtchn_bind_interdomain(remote, remote_port)?;
        self.take_new(port)
    }

    fn bind_virq_raw(&self, virq: Virq) -> Result<Port, Error> {
        let port = self.hypercall.evtchn_bind_virq(virq, 0)?;
        self.take_new(port)
    }

    fn unbind_raw(&self, port: Port) -> Result<(), Error> {
        let bit = Bit::of(port)?;
        // Given up before the close, taken back if it fails: once Xen closed
        // the port, a bind on another vCPU may get the same number and adopt
        // it, and nothing here may touch it after that. The atomic claim also
        // makes a second unbind of the port `NotBound`.
        if self.owned[bit.word].fetch_and(!bit.mask, Ordering::AcqRel) & bit.mask == 0 {
            return Err(Error::NotBound(port));
        }
        // Masked: a later port with this number stays quiet until adopted.
        let was_masked = self.shared.swap_mask(bit, true);
        if let Err(error) = self.hypercall.evtchn_close(port) {
            self.owned[bit.word].fetch_or(bit.mask, Ordering::AcqRel);
            if !was_masked {
                // Re-armed as `unmask` does, so an event of the meantime is not lost.
                let _ = self.arm(port, bit);
            }
            return Err(error.into());
        }
        // Its waiter learns the port is gone (`NotBound`) when it looks again.
        self.waiters.evict(port);
        Ok(())
    }

    fn notify(&self, port: Port) -> Result<(), Error> {
        self.owned_bit(port)?;
        Ok(self.hypercall.evtchn_send(port)?)
    }

    fn unmask(&self, port: Port) -> Result<(), Error> {
        let bit = self.owned_bit(port)?;
        self.arm(port, bit)
    }

    fn take_pending(&self, ports: &mut [Port]) -> Result<usize, Error> {
        let mut count = 0;
        while count < ports.len() {
            let Some((port, bit)) = self.claim_any() else {
                break;
            };
            // Masked until the caller's `unmask`: a new event stays pending
            // meanwhile, and `unmask` delivers it.
            self.shared.set_mask(bit);
            ports[count] = port;
            count += 1;
        }
        Ok(count)
    }

    /// Waits in `SCHEDOP_poll` on the armed ports of this handle.
    ///
    /// Before each look it does the upcall's work (clears
    /// `evtchn_upcall_pending` and the selector, wakes awaiting futures):
    /// Xen's `do_poll` returns at once while that flag is set and not masked
    /// (`local_events_need_delivery`), and only the guest clears it, so a
    /// flag left set would turn the wait into a spin. [`Error::NothingToWaitFor`]
    /// if no port of this handle is armed (every one reported and not yet
    /// unmasked): no event could end the wait.
    fn wait_pending(&self, ports: &mut [Port]) -> Result<usize, Error> {
        loop {
            self.dispatch_all();
            let count = self.take_pending(ports)?;
            if count > 0 || ports.is_empty() {
                return Ok(count);
            }
            let mut armed = [Port::new(0); POLL_MAX_PORTS];
            let armed_count = self.armed_ports(&mut armed)?;
            if armed_count == 0 {
                return Err(Error::NothingToWaitFor);
            }
            self.hypercall.poll(&armed[..armed_count], None)?;
        }
    }
}

impl<H: XenHypercall, const WAITERS: usize> AsyncEventChannel for RawEventChannel<H, WAITERS>
where
    Error: From<H::Error>,
{
    fn poll_port(&self, port: Port, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.poll_port_with(port, &mut WaiterTicket::default(), cx)
    }

    fn poll_port_with(
        &self,
        port: Port,
        ticket: &mut WaiterTicket,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        let bit = match self.owned_bit(port) {
            Ok(bit) => bit,
            Err(error) => return Poll::Ready(Err(error)),
        };
        if self.shared.take_pending(bit) {
            return Poll::Ready(Ok(()));
        }
        if let Err(error) = self.waiters.register(port, ticket, cx.waker()) {
            return Poll::Ready(Err(error));
        }
        // An upcall between the check and the registration woke nobody: look again.
        if self.shared.take_pending(bit) {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }

    fn forget_port(&self, port: Port) {
        self.forget_port_with(port, WaiterTicket::NONE);
    }

    fn forget_port_with(&self, port: Port, ticket: WaiterTicket) {
        drop(self.waiters.release(port, ticket));
    }

    fn poll_any(&self, cx: &mut Context<'_>) -> Poll<Result<Port, Error>> {
        if let Some((port, _)) = self.claim_any() {
            return Poll::Ready(Ok(port));
        }
        self.any.register(cx.waker());
        match self.claim_any() {
            Some((port, _)) => Poll::Ready(Ok(port)),
            None => Poll::Pending,
        }
    }
}

const _: () = assert!(WORD_BITS as usize == WORDS);
