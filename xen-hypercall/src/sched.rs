//! `sched_op`: yielding, blocking, polling and shutting down (`public/sched.h`).

use core::fmt;

use zerocopy::FromZeros;

use crate::buffer::XenConstBuffer;
use crate::call::{with_in, without_arg};
use crate::{Port, ShutdownReason, XenHypercall};

/// A point in Xen's system time: nanoseconds since the host booted, the clock
/// of `vcpu_time_info` (`system_time` extrapolated with the TSC) and of Xen's
/// `NOW()`. `SCHEDOP_poll` takes such an absolute time, not a duration.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Deadline(u64);

impl Deadline {
    /// The deadline `nanos` nanoseconds after the host booted.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the host booted.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The value of `sched_poll.timeout`: `0` means "no timeout" to Xen, so a
    /// deadline at time 0 (long past) is sent as 1 ns, which is also past.
    const fn to_timeout(deadline: Option<Self>) -> u64 {
        match deadline {
            None => 0,
            Some(Self(0)) => 1,
            Some(Self(nanos)) => nanos,
        }
    }
}

impl fmt::Debug for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Deadline({} ns)", self.0)
    }
}

/// The most ports one [`SchedOps::poll`] may wait on; Xen refuses more with
/// `XEN_EINVAL` (`do_poll`'s "fairly arbitrary limit").
pub const POLL_MAX_PORTS: usize = 128;

/// `sched_op` sub-ops, on every [`XenHypercall`] backend.
pub trait SchedOps: XenHypercall {
    /// `SCHEDOP_yield`: gives up the CPU, staying runnable.
    fn sched_yield(&self) -> Result<(), Self::Error> {
        // SAFETY: SCHEDOP_yield takes no argument (sched.h: "@arg == NULL").
        unsafe { without_arg(self, xen_sys::__HYPERVISOR_sched_op, xen_sys::SCHEDOP_yield)? };
        Ok(())
    }

    /// `SCHEDOP_block`: sleeps until an event is delivered to this vCPU.
    ///
    /// Xen wakes the vCPU only through an upcall: events must be enabled (the
    /// vCPU's `evtchn_upcall_mask` clear) or this sleeps until one is pending.
    fn sched_block(&self) -> Result<(), Self::Error> {
        // SAFETY: SCHEDOP_block takes no argument (sched.h: "@arg == NULL").
        unsafe { without_arg(self, xen_sys::__HYPERVISOR_sched_op, xen_sys::SCHEDOP_block)? };
        Ok(())
    }

    /// `SCHEDOP_shutdown`: shuts this domain down for `reason`.
    ///
    /// Returns only if Xen lets the domain run on: after a suspend (the domain
    /// was resumed) or on error.
    fn shutdown(&self, reason: ShutdownReason) -> Result<(), Self::Error> {
        shutdown_op(self, xen_sys::SCHEDOP_shutdown, reason)
    }

    /// `SCHEDOP_shutdown_code`: records the reason the domain will report if it
    /// later shuts down without one (e.g. after a crash inside a kexec).
    fn shutdown_code(&self, reason: ShutdownReason) -> Result<(), Self::Error> {
        shutdown_op(self, xen_sys::SCHEDOP_shutdown_code, reason)
    }

    /// `SCHEDOP_poll`: sleeps until one of `ports` is pending, or until
    /// `deadline` (Xen system time) passes if there is one. Returns at once if
    /// a port is already pending or the deadline has passed.
    ///
    /// Xen returns the same `0` whether an event or the deadline woke the vCPU
    /// (or a spurious wake-up): check the ports' pending bits to tell.
    /// Fails with `XEN_EINVAL` for a port the domain does not have or more than
    /// [`POLL_MAX_PORTS`] ports.
    fn poll(&self, ports: &[Port], deadline: Option<Deadline>) -> Result<(), Self::Error> {
        // Xen refuses more ports with EINVAL (`do_poll`); give its answer before
        // copying an arbitrarily long slice into a bounce buffer.
        if ports.len() > POLL_MAX_PORTS {
            return Err(crate::Error::Xen(crate::Errno::EINVAL).into());
        }
        let nr_ports = ports.len() as u32; // At most POLL_MAX_PORTS.
        let ports_buf = self.make_const_buffer(ports)?;
        let mut arg = xen_sys::sched_poll::new_zeroed();
        arg.ports = xen_sys::GuestHandle::from_ptr(ports_buf.as_hypercall_ptr().cast());
        arg.nr_ports = nr_ports;
        arg.timeout = Deadline::to_timeout(deadline);
        // SAFETY: SCHEDOP_poll's argument is an IN `sched_poll_t` (sched.h), read
        // only: `ports` is a handle to `nr_ports` `evtchn_port_t`s, which Xen
        // reads; `timeout` is a plain number.
        // - `ports_buf` holds `nr_ports` ports (`Port` is `repr(transparent)`
        //   over `evtchn_port_t`) and lives until after the call.
        unsafe {
            with_in(
                self,
                xen_sys::__HYPERVISOR_sched_op,
                xen_sys::SCHEDOP_poll,
                &arg,
            )?
        };
        drop(ports_buf);
        Ok(())
    }
}

impl<H: XenHypercall + ?Sized> SchedOps for H {}

/// `SCHEDOP_shutdown` or `SCHEDOP_shutdown_code` with `reason`.
fn shutdown_op<H>(h: &H, cmd: u32, reason: ShutdownReason) -> Result<(), H::Error>
where
    H: XenHypercall + ?Sized,
{
    let mut arg = xen_sys::sched_shutdown::new_zeroed();
    arg.reason = reason.0;
    // SAFETY: both sub-ops take an IN `sched_shutdown_t` (sched.h): one
    // `unsigned int reason`, no pointer; Xen only reads it.
    unsafe { with_in(h, xen_sys::__HYPERVISOR_sched_op, cmd, &arg)? };
    Ok(())
}
