//! A `xen-evtchn` port as a console's channel: what wakes [`ConsoleRing`](crate::ConsoleRing)
//! (its ring's port), [`Input`](crate::hypervisor::Input) (`VIRQ_CONSOLE`) and
//! [`Follow`](crate::log::Follow) (`VIRQ_CON_RING`) only when Xen signals, without a timer.

use core::ops::Deref;
use core::task::{Context, Poll};

use xen_evtchn::{AsyncEventChannel, BoundPort, EventChannel};

use crate::channel::{AsyncWait, Channel, Notify, Wait, Wake};

/// How many ports one blocking wait takes from the event channel at most.
const TAKE: usize = 8;

/// A bound port of a `xen-evtchn` event channel (reached through `R`: `&C`, `Arc<C>`, ...) as a
/// console [`Channel`]: [`Notify`] signals the port, [`Wait`] blocks in
/// [`EventChannel::wait_pending`], [`AsyncWait`] polls [`AsyncEventChannel::poll_port`].
///
/// A blocking wait takes and re-arms every pending port of the event channel, not only this one
/// (a wake-up means "look again", so one for another port is only spurious here); give the port
/// an event channel of its own (such as its own `/dev/xen/evtchn` handle) when other ports of it
/// are waited on elsewhere. The async wait consumes only this port's deliveries. Neither has a
/// deadline: [`Wake::TimedOut`] never comes from this channel.
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
}

impl<R> EvtchnPort<R>
where
    R: Deref,
    R::Target: EventChannel,
{
    /// The channel of `port` (unbound when this is dropped).
    pub fn new(port: BoundPort<R>) -> Self {
        Self { port }
    }

    /// The bound port.
    pub fn port(&self) -> &BoundPort<R> {
        &self.port
    }

    /// The bound port back.
    pub fn into_port(self) -> BoundPort<R> {
        self.port
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
        self.port
            .channel()
            .poll_port(port, cx)
            .map(|done| done.map(|()| Wake::Event))
    }
}
