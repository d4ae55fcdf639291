//! A `xen-evtchn` port as a console's channel: what wakes [`ConsoleRing`](crate::ConsoleRing)
//! (its ring's port), [`Input`](crate::hypervisor::Input) (`VIRQ_CONSOLE`) and
//! [`Follow`](crate::log::Follow) (`VIRQ_CON_RING`) only when Xen signals, without a timer.

use core::ops::Deref;
use core::task::{Context, Poll};

use xen_evtchn::{AsyncEventChannel, BoundPort, EventChannel, WaiterTicket};
use xen_hypercall::Port;

use crate::channel::{AsyncWait, Channel, Notify, Wait, Wake};

/// How many ports one blocking wait takes from the event channel at most.
const TAKE: usize = 8;

/// A bound port of a `xen-evtchn` event channel (reached through `R`: `&C`, `Arc<C>`, ...) as a
/// console [`Channel`]: [`Notify`] signals the port, [`Wait`] blocks in
/// [`EventChannel::wait_pending`], [`AsyncWait`] polls [`AsyncEventChannel::poll_port_with`].
///
/// A blocking wait takes and re-arms every pending port of the event channel, not only this one
/// (a wake-up means "look again", so one for another port is only spurious here); give the port
/// an event channel of its own (such as its own `/dev/xen/evtchn` handle) when other ports of it
/// are waited on elsewhere. The async wait consumes only this port's deliveries. Neither has a
/// deadline: [`Wake::TimedOut`] never comes from this channel.
///
/// An async wait registers a waker for the port, as a [`WaitPort`](xen_evtchn::WaitPort) does,
/// and releases it (only its own, by ticket) when it completes, when the port is given back
/// ([`into_port`](Self::into_port)) or unbound (dropping this). A wait whose future is dropped
/// while pending keeps its registration until the next wait replaces it.
///
/// ```no_run
/// # #[cfg(target_os = "linux")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use xen_console::{EvtchnPort, XenLog};
/// use xen_evtchn::EventChannel;
/// use xen_evtchn::linux::EvtchnDevice;
/// use xen_hypercall::Virq;
///
/// let xen = xen_hypercall_privcmd::Privcmd::open()?;
/// let events = EvtchnDevice::open()?;
/// let con_ring = EvtchnPort::new(events.bind_virq(Virq::CON_RING)?);
/// for chunk in XenLog::new(&xen).follow(con_ring, None) {
///     print!("{}", String::from_utf8_lossy(&chunk?.text));
/// }
/// # Ok(())
/// # }
/// # #[cfg(not(target_os = "linux"))]
/// # fn main() {}
/// ```
#[derive(Debug)]
pub struct EvtchnPort<R>
where
    R: Deref,
    R::Target: EventChannel,
{
    port: BoundPort<R>,
    /// The registration of a pending async wait, and how to release it.
    waiting: Option<(WaiterTicket, Forget<R::Target>)>,
}

/// Releases the registration of a port's waiter holding a ticket.
type Forget<C> = fn(&C, Port, WaiterTicket);

/// [`AsyncEventChannel::forget_port_with`], as a [`Forget`].
fn forget<C: AsyncEventChannel + ?Sized>(channel: &C, port: Port, ticket: WaiterTicket) {
    channel.forget_port_with(port, ticket);
}

impl<R> EvtchnPort<R>
where
    R: Deref,
    R::Target: EventChannel,
{
    /// The channel of `port` (unbound when this is dropped).
    pub fn new(port: BoundPort<R>) -> Self {
        Self {
            port,
            waiting: None,
        }
    }

    /// The bound port.
    pub fn port(&self) -> &BoundPort<R> {
        &self.port
    }

    /// The bound port back; a pending async wait's registration is released.
    pub fn into_port(mut self) -> BoundPort<R> {
        self.release();
        self.port
    }

    /// Releases the registration of a pending async wait, if any.
    fn release(&mut self) {
        if let Some((ticket, forget)) = self.waiting.take() {
            forget(self.port.channel(), self.port.port(), ticket);
        }
    }
}

impl<R> Channel for EvtchnPort<R>
where
    R: Deref,
    R::Target: EventChannel,
{
    type Error = xen_evtchn::Error;
}

impl<R> Notify for EvtchnPort<R>
where
    R: Deref,
    R::Target: EventChannel,
{
    fn notify(&mut self) -> Result<(), xen_evtchn::Error> {
        self.port.notify()
    }
}

impl<R> Wait for EvtchnPort<R>
where
    R: Deref,
    R::Target: EventChannel,
{
    /// Blocks until a port of the event channel is signalled, then re-arms the ports it took.
    fn wait(&mut self) -> Result<Wake, xen_evtchn::Error> {
        let channel = self.port.channel();
        let mut ports = [xen_hypercall::Port::new(0); TAKE];
        let taken = channel.wait_pending(&mut ports)?;
        channel.unmask_all(&ports[..taken])?;
        Ok(Wake::Event)
    }
}

impl<R> AsyncWait for EvtchnPort<R>
where
    R: Deref,
    R::Target: AsyncEventChannel,
{
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<Result<Wake, xen_evtchn::Error>> {
        let port = self.port.port();
        let mut ticket = self
            .waiting
            .map_or(WaiterTicket::NONE, |(ticket, _)| ticket);
        match self.port.channel().poll_port_with(port, &mut ticket, cx) {
            Poll::Pending => {
                if ticket != WaiterTicket::NONE {
                    self.waiting = Some((ticket, forget::<R::Target>));
                }
                Poll::Pending
            }
            Poll::Ready(done) => {
                // Completed: its registration goes, as a `WaitPort`'s when dropped.
                self.waiting = None;
                if ticket != WaiterTicket::NONE {
                    self.port.channel().forget_port_with(port, ticket);
                }
                Poll::Ready(done.map(|()| Wake::Event))
            }
        }
    }
}
