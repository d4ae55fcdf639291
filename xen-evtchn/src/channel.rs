//! The base trait, the awaitable trait, and the futures built on them.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use futures_core::Stream;
use xen_hypercall::{DomId, Port, Virq};

use crate::{BoundPort, Error};

/// An event-channel interface: binding, signalling, unbinding, and taking what
/// is pending. The RFC's `EventChannel`.
///
/// The `*_raw` methods work on bare port numbers; the provided methods wrap
/// them into [`BoundPort`]s, which unbind on drop.
///
/// Delivery contract (libxenevtchn's): [`take_pending`](Self::take_pending)
/// hands out each pending port once, masked; the caller does its work (re-reads
/// the shared ring) and then calls [`unmask`](Self::unmask). Events are
/// coalesced: one delivery stands for one or more notifications. A port may be
/// reported without a notification right after it is bound interdomain (Xen
/// marks it pending) and after the handle recovered from an overflow (every
/// bound port is reported once). A notification is never lost.
pub trait EventChannel {
    /// Allocates a port that domain `remote` may bind to.
    ///
    /// # Errors
    ///
    /// Xen's `EVTCHNOP_alloc_unbound` code as [`Error::Hypercall`] or, through
    /// Linux's device, [`Error::Os`]: `ESRCH` for no domain `remote`, `ENOSPC`
    /// when no port is free; `EACCES` from a restricted Linux fd.
    #[doc(alias("xenevtchn_bind_unbound_port", "EVTCHNOP_alloc_unbound"))]
    fn alloc_unbound_raw(&self, remote: DomId) -> Result<Port, Error>;
    /// Connects a new local port to `remote_port`, an unbound port of `remote`
    /// that allows this domain. The new port starts pending.
    ///
    /// # Errors
    ///
    /// Xen's `EVTCHNOP_bind_interdomain` code as [`Error::Hypercall`] or
    /// [`Error::Os`]: `EINVAL` when `remote_port` is not an unbound port of
    /// `remote` offered to this domain, `ESRCH` for no domain `remote`; `EACCES`
    /// from a Linux fd restricted to another domain.
    #[doc(alias("xenevtchn_bind_interdomain", "EVTCHNOP_bind_interdomain"))]
    fn bind_interdomain_raw(&self, remote: DomId, remote_port: Port) -> Result<Port, Error>;
    /// Binds a new port to the virtual interrupt `virq` (on vCPU 0).
    ///
    /// # Errors
    ///
    /// Xen's `EVTCHNOP_bind_virq` code as [`Error::Hypercall`] or [`Error::Os`]:
    /// `EINVAL` for an unknown `virq`, `EEXIST` when it is already bound on
    /// vCPU 0; `EACCES` from a restricted Linux fd.
    #[doc(alias("xenevtchn_bind_virq", "EVTCHNOP_bind_virq"))]
    fn bind_virq_raw(&self, virq: Virq) -> Result<Port, Error>;
    /// Unbinds (closes) `port`, which this handle bound.
    ///
    /// # Errors
    ///
    /// [`Error::PortOutOfRange`] or [`Error::NotBound`] for a port this handle
    /// did not bind (or already unbound); the device's or Xen's
    /// `EVTCHNOP_close` error otherwise, the port then still bound here.
    #[doc(alias("xenevtchn_unbind", "EVTCHNOP_close"))]
    fn unbind_raw(&self, port: Port) -> Result<(), Error>;
    /// Signals the other end of `port`.
    ///
    /// # Errors
    ///
    /// [`Error::PortOutOfRange`] for a port beyond the ABI; a port this handle
    /// did not bind: [`Error::NotBound`] (freestanding) or [`Error::Os`] with
    /// `ENOTCONN` (Linux's driver); Xen's `EVTCHNOP_send` code otherwise.
    #[doc(alias("xenevtchn_notify", "EVTCHNOP_send"))]
    fn notify(&self, port: Port) -> Result<(), Error>;
    /// Re-arms `port` after [`take_pending`](Self::take_pending) reported it.
    ///
    /// # Errors
    ///
    /// [`Error::PortOutOfRange`] or [`Error::NotBound`] for a port this handle
    /// did not bind; the device's or Xen's error for the unmask itself.
    #[doc(alias("xenevtchn_unmask", "EVTCHNOP_unmask"))]
    fn unmask(&self, port: Port) -> Result<(), Error>;
    /// Re-arms several ports, in as few calls as the backend allows.
    fn unmask_all(&self, ports: &[Port]) -> Result<(), Error> {
        ports.iter().try_for_each(|&port| self.unmask(port))
    }
    /// Fills `ports` with pending ports, without waiting; returns how many.
    fn take_pending(&self, ports: &mut [Port]) -> Result<usize, Error>;
    /// Waits until a port is pending, then fills `ports` as
    /// [`take_pending`](Self::take_pending) does (at least one, if `ports` is
    /// not empty).
    fn wait_pending(&self, ports: &mut [Port]) -> Result<usize, Error>;

    /// Allocates a port that domain `remote` may bind to; unbound on drop.
    ///
    /// # Errors
    ///
    /// As the backend's [`alloc_unbound_raw`](Self::alloc_unbound_raw): Xen's
    /// `EVTCHNOP_alloc_unbound` errors ([`Error::Hypercall`], e.g. `ESRCH` for no domain
    /// `remote`, `ENOSPC` when out of ports) or the device's ([`Error::Os`]).
    #[doc(alias("xenevtchn_bind_unbound_port", "EVTCHNOP_alloc_unbound"))]
    fn alloc_unbound(&self, remote: DomId) -> Result<BoundPort<&Self>, Error> {
        let port = self.alloc_unbound_raw(remote)?;
        Ok(BoundPort::from_raw(self, port))
    }
    /// Connects to `remote_port` of domain `remote`; unbound on drop.
    ///
    /// # Errors
    ///
    /// As [`bind_interdomain_raw`](Self::bind_interdomain_raw).
    #[doc(alias("xenevtchn_bind_interdomain", "EVTCHNOP_bind_interdomain"))]
    fn bind_interdomain(
        &self,
        remote: DomId,
        remote_port: Port,
    ) -> Result<BoundPort<&Self>, Error> {
        let port = self.bind_interdomain_raw(remote, remote_port)?;
        Ok(BoundPort::from_raw(self, port))
    }
    /// Binds to the virtual interrupt `virq`; unbound on drop.
    ///
    /// # Errors
    ///
    /// As [`bind_virq_raw`](Self::bind_virq_raw).
    #[doc(alias("xenevtchn_bind_virq", "EVTCHNOP_bind_virq"))]
    fn bind_virq(&self, virq: Virq) -> Result<BoundPort<&Self>, Error> {
        let port = self.bind_virq_raw(virq)?;
        Ok(BoundPort::from_raw(self, port))
    }
}

/// An event channel that can be awaited: a poll-based core any executor can
/// drive (tokio, an interrupt-driven `no_std` one), with a per-port future and
/// a [`Stream`] of pending ports on top. The RFC's `AsyncEventChannel`.
///
/// Waiting consumes one delivery and re-arms the port: the caller then
/// re-checks its shared state (a wake-up says "look again", not "one
/// message"). Futures are cancellation-safe: a delivery is consumed only by a
/// `poll_*` call that returns `Ready`, so a dropped future loses nothing.
pub trait AsyncEventChannel: EventChannel {
    /// Ready once `port` has a delivery no earlier call consumed; consumes it.
    /// Otherwise registers `cx`'s waker for `port`. One waiter per port: a
    /// second future on the same port replaces the first one's waker, and
    /// dropping either forgets the port's waker.
    fn poll_port(&self, port: Port, cx: &mut Context<'_>) -> Poll<Result<(), Error>>;
    /// Ready with a port that has an unconsumed delivery; consumes it.
    /// Otherwise registers `cx`'s waker for any port (one such waiter).
    fn poll_any(&self, cx: &mut Context<'_>) -> Poll<Result<Port, Error>>;
    /// Called when a waiter of `port` is dropped (completed or cancelled):
    /// the implementation may forget its waker and release whatever else it
    /// kept for that waiter (a waker slot, a table entry).
    fn forget_port(&self, port: Port) {
        let _ = port;
    }
    /// [`poll_port`](Self::poll_port) for the waiter holding `ticket`, which
    /// [`WaitPort`] keeps between polls: the implementation records in it
    /// which registration is this waiter's, so that
    /// [`forget_port_with`](Self::forget_port_with) cannot release a later
    /// waiter's (the port unbound meanwhile and its number bound again).
    fn poll_port_with(
        &self,
        port: Port,
        ticket: &mut WaiterTicket,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        let _ = ticket;
        self.poll_port(port, cx)
    }
    /// [`forget_port`](Self::forget_port) for the waiter holding `ticket`:
    /// forgets the port's registration only if it is still that waiter's.
    fn forget_port_with(&self, port: Port, ticket: WaiterTicket) {
        let _ = ticket;
        self.forget_port(port)
    }
    /// As [`forget_port`](Self::forget_port), for the waiter of [`poll_any`](Self::poll_any).
    fn forget_any(&self) {}

    /// A future that resolves when `port` is signalled.
    fn wait_port(&self, port: Port) -> WaitPort<'_, Self> {
        WaitPort {
            channel: self,
            port,
            ticket: WaiterTicket::NONE,
        }
    }
    /// The stream of signalled ports, each delivery once.
    fn events(&self) -> Events<'_, Self> {
        Events { channel: self }
    }
}

/// The future of [`AsyncEventChannel::wait_port`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct WaitPort<'a, C: AsyncEventChannel + ?Sized> {
    channel: &'a C,
    port: Port,
    ticket: WaiterTicket,
}

/// Which registration of a port's waker is one waiter's: a backend hands out
/// a new ticket per registration, so a waiter whose port was unbound (its
/// registration dropped) cannot, when dropped later, release the registration
/// of a waiter of a new port with the same number.
/// [`NONE`](Self::NONE) (no registration yet) matches any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WaiterTicket(u64);

impl WaiterTicket {
    /// No registration yet; forgetting with it forgets whatever the port has.
    pub const NONE: Self = Self(0);

    /// A ticket from a backend's counter (not 0).
    pub const fn new(raw: core::num::NonZeroU64) -> Self {
        Self(raw.get())
    }

    /// Whether this ticket stands for registration `other` (`NONE` stands for any).
    pub fn matches(self, other: Self) -> bool {
        self == Self::NONE || self == other
    }
}

impl<C: AsyncEventChannel + ?Sized> Future for WaitPort<'_, C> {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.channel.poll_port_with(this.port, &mut this.ticket, cx)
    }
}

impl<C: AsyncEventChannel + ?Sized> Drop for WaitPort<'_, C> {
    fn drop(&mut self) {
        self.channel.forget_port_with(self.port, self.ticket);
    }
}

/// The stream of [`AsyncEventChannel::events`]; it never ends.
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct Events<'a, C: AsyncEventChannel + ?Sized> {
    channel: &'a C,
}

impl<C: AsyncEventChannel + ?Sized> Stream for Events<'_, C> {
    type Item = Result<Port, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.channel.poll_any(cx).map(Some)
    }
}

impl<C: AsyncEventChannel + ?Sized> Drop for Events<'_, C> {
    fn drop(&mut self) {
        self.channel.forget_any();
    }
}
