//! The domU's event channel with dom0 through xen-evtchn's freestanding
//! backend: allocated, awaited (a future woken after `SCHEDOP_poll`),
//! notified and closed by `RawEventChannel`.

use core::future::Future;
use core::pin::pin;
use core::ptr::NonNull;
use core::task::{Context, Poll, Waker};

use xen_evtchn::{AsyncEventChannel, EventChannel, RawEventChannel};
use xen_hypercall::sched::Deadline;
use xen_hypercall::{DomId, Error, Port, XenHypercall};

use super::{DomuError, Events};

/// The channel of the exchange: one port, no upcalls.
pub(crate) type Channel<H> = RawEventChannel<H, 2>;

fn evtchn_error(error: xen_evtchn::Error) -> DomuError {
    match error {
        xen_evtchn::Error::Hypercall(e) => DomuError::Xen(e),
        _ => DomuError::Xen(Error::InvalidInput("xen-evtchn refused the port")),
    }
}

impl<H: XenHypercall<Error = Error> + Copy> Events<H> {
    /// The channel over this domain's backend and shared info page.
    pub(crate) fn channel(&self) -> Channel<H> {
        RawEventChannel::new(self.h, self.evtchn_shared_info())
    }

    /// The shared info page as xen-evtchn takes it.
    pub(crate) fn evtchn_shared_info(&self) -> xen_evtchn::SharedInfo {
        let page = NonNull::new(self.shared.page().cast_mut()).unwrap_or(NonNull::dangling());
        // SAFETY: the domain's shared info page, mapped for the program's life
        // and accessed only atomically (the guest's `SharedInfo` contract).
        unsafe { xen_evtchn::SharedInfo::new(page) }
    }

    /// Allocates a port dom0 may bind to.
    pub(crate) fn alloc_for_dom0(&self, channel: &Channel<H>) -> Result<Port, DomuError> {
        channel
            .alloc_unbound_raw(DomId::new(0))
            .map_err(evtchn_error)
    }

    /// Awaits one delivery on `port` (see [`block_on`](Self::block_on)).
    pub(crate) fn await_event(
        &self,
        channel: &Channel<H>,
        port: Port,
        deadline: u64,
        what: &'static str,
    ) -> Result<(), DomuError> {
        self.block_on(channel, deadline, what, channel.wait_port(port))?
            .map_err(evtchn_error)
    }

    /// Runs `future`, one that waits only on `channel`'s ports: it is polled, and between
    /// polls the vCPU sleeps in `SCHEDOP_poll` until an event or `deadline` (each poll of a
    /// port looks at its pending bit, so no waker is needed).
    pub(crate) fn block_on<F: Future>(
        &self,
        channel: &Channel<H>,
        deadline: u64,
        what: &'static str,
        future: F,
    ) -> Result<F::Output, DomuError> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut future = pin!(future);
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return Ok(output);
            }
            if self.now() >= deadline {
                return Err(DomuError::TimedOut(what));
            }
            channel
                .poll_and_dispatch(Some(Deadline::from_nanos(deadline)))
                .map_err(evtchn_error)?;
        }
    }
}
