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

    /// `SCHEDOP_block`: enables event delivery, then sleeps until an event is
    /// pending for this vCPU.
    ///
    /// Xen first clears this vCPU's `evtchn_upcall_mask` (sched.h: "If called
    /// with event upcalls masked, this operation will atomically reenable event
    /// delivery and check for pending events before blocking";
    /// `vcpu_block_enable_events` in `common/sched/core.c`), so the vCPU takes
    /// the upcall for whatever woke it, and upcalls stay enabled on return: a
    /// caller that had them masked must mask them again itself.
    fn sched_block(&self) -> Result<(), Self::Error> {
        // SAFETY: SCHEDOP_block takes no argument (sched.h: "@arg == NULL").
        unsafe { without_arg(self, xen_sys::__HYPERVISOR_sched_op, xen_sys::SCHEDOP_block)? };
        Ok(())
    }

    /// `SCHEDOP_shutdown`: shuts this domain down for `reason`.
    ///
    /// Returns only on error. [`ShutdownReason::SUSPEND`] is refused with
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) before any hypercall:
    /// a suspend takes a third argument and has a result, so it is
    /// [`suspend`](Self::suspend).
    fn shutdown(&self, reason: ShutdownReason) -> Result<(), Self::Error> {
        shutdown_op(self, xen_sys::SCHEDOP_shutdown, reason)
    }

    /// `SCHEDOP_shutdown_code`: latches the reason the domain reports when it
    /// later shuts down, whatever reason that shutdown gives (a crash included;
    /// the first latched code wins: `domain_shutdown` in `common/domain.c`).
    ///
    /// [`ShutdownReason::SUSPEND`] is refused with
    /// [`Error::InvalidInput`](crate::Error::InvalidInput): a later shutdown
    /// would be reported as a suspend without the start-info frame that
    /// [`suspend`](Self::suspend) passes.
    fn shutdown_code(&self, reason: ShutdownReason) -> Result<(), Self::Error> {
        shutdown_op(self, xen_sys::SCHEDOP_shutdown_code, reason)
    }

    /// `SCHEDOP_shutdown` with `SHUTDOWN_suspend`: asks the toolstack to save
    /// this domain (for a later restore, a migration or a checkpoint) and
    /// returns when the domain runs again.
    ///
    /// On an x86 PV guest, `start_info_frame` is the machine frame (MFN) of the
    /// domain's start-info page, passed as the third hypercall argument (RDX)
    /// as `public/sched.h` requires; elsewhere (HVM, PVH, Arm) it is ignored:
    /// pass 0.
    ///
    /// # Safety
    ///
    /// - On x86 PV, `start_info_frame` is the MFN of this domain's own
    ///   start-info page. The toolstack's save reads the register and its
    ///   restore writes into the page it names (`process_start_info` in
    ///   libxenguest: `store_mfn`, `store_evtchn`, `console.domU`, ...), so no
    ///   Rust reference to that page may be live across this call; read it
    ///   afterwards through raw pointers.
    /// - On [`SuspendOutcome::Resumed`] the domain runs in a new domain on
    ///   possibly another host: every mapping shared with Xen or another domain
    ///   (the shared info page, grant mappings, rings) and, on PV, every machine
    ///   frame number is stale. The caller does not access memory through such
    ///   a mapping, nor hand such a frame to Xen, before re-establishing it.
    unsafe fn suspend(&self, start_info_frame: u64) -> Result<SuspendOutcome, Self::Error> {
        let mut arg = xen_sys::sched_shutdown::new_zeroed();
        arg.reason = xen_sys::SHUTDOWN_suspend;
        let buf = self.make_const_buffer(&arg)?;
        // SAFETY: `sched_op(SCHEDOP_shutdown, sched_shutdown_t *, start_info_mfn)`
        // (sched.h): Xen reads the IN structure (one `reason`, no pointer) and
        // returns 0 or 1 when the domain runs again.
        // - `buf` holds the structure and lives until after the call.
        // - The third argument and what the save and restore do with it, and
        //   what a restore changes, are the caller's obligations (`# Safety`).
        let ret = unsafe {
            self.hypercall3(
                xen_sys::__HYPERVISOR_sched_op as usize,
                [
                    xen_sys::SCHEDOP_shutdown as usize,
                    crate::call::addr(buf.as_hypercall_ptr()),
                    start_info_frame as usize,
                ],
            )?
        };
        drop(buf);
        Ok(SuspendOutcome::from_raw(ret))
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

/// How a [`SchedOps::suspend`] ended (`public/sched.h`: "returns 1 if suspend
/// was cancelled or the domain was merely checkpointed, and 0 if it is resuming
/// in a new domain").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SuspendOutcome {
    /// 0: the domain was restored into a new domain. Event channels, grants,
    /// the shared info mapping and the xenstore and console connections are
    /// gone and must be set up again.
    Resumed,
    /// 1: the suspend was cancelled or the domain only checkpointed: it runs on
    /// as the same domain, its connections intact.
    Cancelled,
}

impl SuspendOutcome {
    /// Decodes the hypercall's result: the toolstack sets the result register
    /// to 1 when it cancels (`xc_domain_resume`); any non-zero value is taken
    /// as a cancel, as Linux does.
    pub const fn from_raw(ret: usize) -> Self {
        if ret == 0 {
            Self::Resumed
        } else {
            Self::Cancelled
        }
    }
}

/// `SCHEDOP_shutdown` or `SCHEDOP_shutdown_code` with `reason`, refusing
/// `SHUTDOWN_suspend` (see [`SchedOps::suspend`]).
fn shutdown_op<H>(h: &H, cmd: u32, reason: ShutdownReason) -> Result<(), H::Error>
where
    H: XenHypercall + ?Sized,
{
    if reason == ShutdownReason::SUSPEND {
        return Err(crate::Error::InvalidInput(
            "SHUTDOWN_suspend needs the start-info frame and has a result: use SchedOps::suspend",
        )
        .into());
    }
    let mut arg = xen_sys::sched_shutdown::new_zeroed();
    arg.reason = reason.0;
    // SAFETY: both sub-ops take an IN `sched_shutdown_t` (sched.h): one
    // `unsigned int reason`, no pointer; Xen only reads it.
    unsafe { with_in(h, xen_sys::__HYPERVISOR_sched_op, cmd, &arg)? };
    Ok(())
}
