//! `event_channel_op`: allocating, binding, signalling and closing event
//! channels (`public/event_channel.h`).
//!
//! Whether a port is pending or masked lives in the shared info page, not in a
//! hypercall: see the event channel crate for delivery.

use core::mem::{offset_of, size_of};

use zerocopy::{FromBytes, FromZeros, IntoBytes};

use crate::call::{with_in, with_inout};
use crate::{DomId, Port, Virq, XenHypercall};

/// What an event channel is connected to, decoded from `evtchn_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChannelState {
    /// `EVTCHNSTAT_closed`: the port is not in use.
    Closed,
    /// `EVTCHNSTAT_unbound`: allocated, waiting for `remote_dom` to bind to it.
    Unbound {
        /// The domain allowed to bind to this port.
        remote_dom: DomId,
    },
    /// `EVTCHNSTAT_interdomain`: connected to `port` of domain `dom`.
    Interdomain {
        /// The remote domain.
        dom: DomId,
        /// The remote domain's port.
        port: Port,
    },
    /// `EVTCHNSTAT_pirq`: bound to this physical IRQ.
    Pirq(u32),
    /// `EVTCHNSTAT_virq`: bound to this virtual IRQ.
    Virq(Virq),
    /// `EVTCHNSTAT_ipi`: an inter-processor interrupt within the domain.
    Ipi,
    /// A status value this crate does not know (from a newer Xen).
    Unknown(u32),
}

/// The state of an event channel, from `EVTCHNOP_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ChannelStatus {
    /// What the channel is connected to.
    pub state: ChannelState,
    /// The vCPU the channel notifies.
    pub vcpu: u32,
}

/// `evtchn_status_t` as words: its union member keeps it from being `IntoBytes`,
/// so the wrapper hands Xen this array of the same size and alignment and
/// decodes the union's members from its bytes.
type StatusWords = [u32; size_of::<xen_sys::evtchn_status>() / size_of::<u32>()];

const _: () = {
    assert!(size_of::<StatusWords>() == size_of::<xen_sys::evtchn_status>());
    assert!(
        core::mem::align_of::<StatusWords>() == core::mem::align_of::<xen_sys::evtchn_status>()
    );
    assert!(
        offset_of!(xen_sys::evtchn_status, u) + size_of::<xen_sys::evtchn_status__bindgen_ty_1>()
            <= size_of::<StatusWords>()
    );
};

/// Decodes Xen's `evtchn_status_t`, checking the status before reading the
/// union member it selects.
fn decode_status(words: &StatusWords) -> ChannelStatus {
    let raw: xen_sys::evtchn_status = zerocopy::transmute!(*words);
    let union_bytes = &words.as_bytes()[offset_of!(xen_sys::evtchn_status, u)..];
    // Each member lies within the union, so `read_from_prefix` cannot fail;
    // should it, the status is reported as unknown rather than misread.
    let unknown = ChannelState::Unknown(raw.status);
    let state = match raw.status {
        xen_sys::EVTCHNSTAT_closed => ChannelState::Closed,
        xen_sys::EVTCHNSTAT_unbound => {
            xen_sys::evtchn_status__bindgen_ty_1__bindgen_ty_1::read_from_prefix(union_bytes)
                .map_or(unknown, |(unbound, _)| ChannelState::Unbound {
                    remote_dom: DomId(unbound.dom),
                })
        }
        xen_sys::EVTCHNSTAT_interdomain => {
            xen_sys::evtchn_status__bindgen_ty_1__bindgen_ty_2::read_from_prefix(union_bytes)
                .map_or(unknown, |(interdomain, _)| ChannelState::Interdomain {
                    dom: DomId(interdomain.dom),
                    port: Port(interdomain.port),
                })
        }
        xen_sys::EVTCHNSTAT_pirq => {
            u32::read_from_prefix(union_bytes).map_or(unknown, |(pirq, _)| ChannelState::Pirq(pirq))
        }
        xen_sys::EVTCHNSTAT_virq => u32::read_from_prefix(union_bytes)
            .map_or(unknown, |(virq, _)| ChannelState::Virq(Virq(virq))),
        xen_sys::EVTCHNSTAT_ipi => ChannelState::Ipi,
        _ => unknown,
    };
    ChannelStatus {
        state,
        vcpu: raw.vcpu,
    }
}

/// Issues `event_channel_op(cmd, &mut arg)` for a sub-op with OUT fields.
///
/// # Safety
///
/// `T` is the structure event_channel.h names for `cmd`, which holds no pointer.
unsafe fn evtchn_inout<H, T>(h: &H, cmd: u32, arg: &mut T) -> Result<usize, H::Error>
where
    H: XenHypercall + ?Sized,
    T: FromBytes + IntoBytes,
{
    // SAFETY: `event_channel_op(int cmd, void *arg)` (event_channel.h); the
    // caller guarantees `T` is `cmd`'s pointer-free argument, so Xen accesses
    // only its `size_of::<T>()` bytes.
    unsafe { with_inout(h, xen_sys::__HYPERVISOR_event_channel_op, cmd, arg) }
}

/// Issues `event_channel_op(cmd, &arg)` for a sub-op with only IN fields.
///
/// # Safety
///
/// `T` is the structure event_channel.h names for `cmd`, which holds no
/// pointer and which Xen only reads.
unsafe fn evtchn_in<H, T>(h: &H, cmd: u32, arg: &T) -> Result<usize, H::Error>
where
    H: XenHypercall + ?Sized,
    T: IntoBytes + zerocopy::Immutable,
{
    // SAFETY: as for `evtchn_inout`, and the caller guarantees Xen only reads `T`.
    unsafe { with_in(h, xen_sys::__HYPERVISOR_event_channel_op, cmd, arg) }
}

/// `event_channel_op` sub-ops, on every [`XenHypercall`] backend.
///
/// Errors, as Xen reports them: `XEN_EINVAL` for a port the domain does not
/// have or in the wrong state, `XEN_ESRCH` for a domain that does not exist,
/// `XEN_EPERM` for a domain the caller may not act on, `XEN_ENOSPC` when the
/// domain has no free port, `XEN_ENOENT` for a vCPU that does not exist.
pub trait EventChannelOps: XenHypercall {
    /// `EVTCHNOP_alloc_unbound`: allocates a port in `dom` that `remote_dom`
    /// may bind to with [`evtchn_bind_interdomain`](Self::evtchn_bind_interdomain).
    ///
    /// # Errors
    ///
    /// Xen's code: `XEN_ESRCH` for no domain `dom`, `XEN_EPERM` for another domain the caller
    /// may not act on, `XEN_ENOSPC` when `dom` has no free port.
    #[doc(alias("EVTCHNOP_alloc_unbound"))]
    fn evtchn_alloc_unbound(&self, dom: DomId, remote_dom: DomId) -> Result<Port, Self::Error> {
        let mut arg = xen_sys::evtchn_alloc_unbound::new_zeroed();
        arg.dom = dom.0;
        arg.remote_dom = remote_dom.0;
        // SAFETY: EVTCHNOP_alloc_unbound takes an `evtchn_alloc_unbound_t`
        // (event_channel.h): IN `dom`, `remote_dom`; OUT `port`. No pointer.
        unsafe { evtchn_inout(self, xen_sys::EVTCHNOP_alloc_unbound, &mut arg)? };
        Ok(Port(arg.port))
    }

    /// `EVTCHNOP_bind_interdomain`: connects a new local port to
    /// `remote_port`, an unbound port of `remote_dom` that allows this domain.
    ///
    /// Xen marks the new local port pending, since events sent to the unbound
    /// remote port may have been lost.
    ///
    /// # Errors
    ///
    /// Xen's code: `XEN_EINVAL` when `remote_port` is not an unbound port of `remote_dom` that
    /// allows this domain, `XEN_ESRCH` for no domain `remote_dom`, `XEN_ENOSPC` when this domain
    /// has no free port.
    #[doc(alias("EVTCHNOP_bind_interdomain"))]
    fn evtchn_bind_interdomain(
        &self,
        remote_dom: DomId,
        remote_port: Port,
    ) -> Result<Port, Self::Error> {
        let mut arg = xen_sys::evtchn_bind_interdomain::new_zeroed();
        arg.remote_dom = remote_dom.0;
        arg.remote_port = remote_port.0;
        // SAFETY: EVTCHNOP_bind_interdomain takes an `evtchn_bind_interdomain_t`
        // (event_channel.h): IN `remote_dom`, `remote_port`; OUT `local_port`.
        // No pointer.
        unsafe { evtchn_inout(self, xen_sys::EVTCHNOP_bind_interdomain, &mut arg)? };
        Ok(Port(arg.local_port))
    }

    /// `EVTCHNOP_bind_virq`: binds a new port to `virq` on `vcpu` (`0` for a
    /// global VIRQ). `XEN_EEXIST` if the VIRQ is already bound on that vCPU.
    ///
    /// # Errors
    ///
    /// Xen's code: `XEN_EINVAL` for an unknown VIRQ or a global one on a vCPU other than 0,
    /// `XEN_ENOENT` for no vCPU `vcpu`, `XEN_EEXIST` if the VIRQ is already bound on it.
    #[doc(alias("EVTCHNOP_bind_virq"))]
    fn evtchn_bind_virq(&self, virq: Virq, vcpu: u32) -> Result<Port, Self::Error> {
        let mut arg = xen_sys::evtchn_bind_virq::new_zeroed();
        arg.virq = virq.0;
        arg.vcpu = vcpu;
        // SAFETY: EVTCHNOP_bind_virq takes an `evtchn_bind_virq_t`
        // (event_channel.h): IN `virq`, `vcpu`; OUT `port`. No pointer.
        unsafe { evtchn_inout(self, xen_sys::EVTCHNOP_bind_virq, &mut arg)? };
        Ok(Port(arg.port))
    }

    /// `EVTCHNOP_bind_ipi`: allocates a port that signals `vcpu` of this domain.
    ///
    /// # Errors
    ///
    /// Xen's code: `XEN_ENOENT` for no vCPU `vcpu`, `XEN_ENOSPC` when no port is free.
    fn evtchn_bind_ipi(&self, vcpu: u32) -> Result<Port, Self::Error> {
        let mut arg = xen_sys::evtchn_bind_ipi::new_zeroed();
        arg.vcpu = vcpu;
        // SAFETY: EVTCHNOP_bind_ipi takes an `evtchn_bind_ipi_t`
        // (event_channel.h): IN `vcpu`; OUT `port`. No pointer.
        unsafe { evtchn_inout(self, xen_sys::EVTCHNOP_bind_ipi, &mut arg)? };
        Ok(Port(arg.port))
    }

    /// `EVTCHNOP_bind_vcpu`: makes `port` notify `vcpu`. Not allowed for IPI
    /// and per-vCPU VIRQ ports (`XEN_EINVAL`).
    ///
    /// # Errors
    ///
    /// Xen's code: `XEN_EINVAL` for a port this domain does not have or may not move,
    /// `XEN_ENOENT` for no vCPU `vcpu`.
    fn evtchn_bind_vcpu(&self, port: Port, vcpu: u32) -> Result<(), Self::Error> {
        let mut arg = xen_sys::evtchn_bind_vcpu::new_zeroed();
        arg.port = port.0;
        arg.vcpu = vcpu;
        // SAFETY: EVTCHNOP_bind_vcpu takes an IN `evtchn_bind_vcpu_t`
        // (event_channel.h: `port`, `vcpu`), read only. No pointer.
        unsafe { evtchn_in(self, xen_sys::EVTCHNOP_bind_vcpu, &arg)? };
        Ok(())
    }

    /// `EVTCHNOP_close`: closes `port`. An interdomain peer's port becomes
    /// unbound, allowing this domain to bind again.
    ///
    /// # Errors
    ///
    /// Xen's code: `XEN_EINVAL` for a port this domain does not have.
    #[doc(alias("EVTCHNOP_close"))]
    fn evtchn_close(&self, port: Port) -> Result<(), Self::Error> {
        let mut arg = xen_sys::evtchn_close::new_zeroed();
        arg.port = port.0;
        // SAFETY: EVTCHNOP_close takes an IN `evtchn_close_t` (event_channel.h:
        // `port`), read only. No pointer.
        unsafe { evtchn_in(self, xen_sys::EVTCHNOP_close, &arg)? };
        Ok(())
    }

    /// `EVTCHNOP_send`: signals the other end of `port` (the remote port of an
    /// interdomain channel, this domain's vCPU for an IPI port).
    ///
    /// # Errors
    ///
    /// Xen's code: `XEN_EINVAL` for a port this domain does not have.
    #[doc(alias("EVTCHNOP_send"))]
    fn evtchn_send(&self, port: Port) -> Result<(), Self::Error> {
        let mut arg = xen_sys::evtchn_send::new_zeroed();
        arg.port = port.0;
        // SAFETY: EVTCHNOP_send takes an IN `evtchn_send_t` (event_channel.h:
        // `port`), read only. No pointer.
        unsafe { evtchn_in(self, xen_sys::EVTCHNOP_send, &arg)? };
        Ok(())
    }

    /// `EVTCHNOP_status`: what `port` of domain `dom` is connected to.
    ///
    /// # Errors
    ///
    /// Xen's code: `XEN_ESRCH` for no domain `dom`, `XEN_EPERM` for another domain the caller
    /// may not inspect, `XEN_EINVAL` for a port `dom` does not have.
    fn evtchn_status(&self, dom: DomId, port: Port) -> Result<ChannelStatus, Self::Error> {
        let mut words = StatusWords::new_zeroed();
        let bytes = words.as_mut_bytes();
        let dom_at = offset_of!(xen_sys::evtchn_status, dom);
        let port_at = offset_of!(xen_sys::evtchn_status, port);
        bytes[dom_at..dom_at + size_of::<u16>()].copy_from_slice(&dom.0.to_ne_bytes());
        bytes[port_at..port_at + size_of::<u32>()].copy_from_slice(&port.0.to_ne_bytes());
        // SAFETY: EVTCHNOP_status takes an `evtchn_status_t` (event_channel.h):
        // IN `dom`, `port`; OUT `status`, `vcpu`, `u`. No pointer. `StatusWords`
        // has its size and alignment (asserted above) and `dom`/`port` at their
        // offsets.
        unsafe { evtchn_inout(self, xen_sys::EVTCHNOP_status, &mut words)? };
        Ok(decode_status(&words))
    }

    /// `EVTCHNOP_unmask`: clears `port`'s mask bit and, if it is pending,
    /// delivers the event.
    ///
    /// # Errors
    ///
    /// Xen's code: `XEN_EINVAL` for a port this domain does not have.
    fn evtchn_unmask(&self, port: Port) -> Result<(), Self::Error> {
        let mut arg = xen_sys::evtchn_unmask::new_zeroed();
        arg.port = port.0;
        // SAFETY: EVTCHNOP_unmask takes an IN `evtchn_unmask_t`
        // (event_channel.h: `port`), read only. No pointer.
        unsafe { evtchn_in(self, xen_sys::EVTCHNOP_unmask, &arg)? };
        Ok(())
    }

    /// `EVTCHNOP_reset`: closes every port of `dom`.
    ///
    /// # Errors
    ///
    /// Xen's code: `XEN_ESRCH` for no domain `dom`, `XEN_EPERM` for another domain the caller
    /// may not act on.
    fn evtchn_reset(&self, dom: DomId) -> Result<(), Self::Error> {
        let mut arg = xen_sys::evtchn_reset::new_zeroed();
        arg.dom = dom.0;
        // SAFETY: EVTCHNOP_reset takes an IN `evtchn_reset_t` (event_channel.h:
        // `dom`), read only. No pointer.
        unsafe { evtchn_in(self, xen_sys::EVTCHNOP_reset, &arg)? };
        Ok(())
    }
}

impl<H: XenHypercall + ?Sized> EventChannelOps for H {}
