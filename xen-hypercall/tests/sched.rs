//! `SchedOps` against the mock.
#![cfg(feature = "mock")]

mod common;

use xen_hypercall::mock::MockXen;
use xen_hypercall::prelude::*;
use xen_hypercall::sched::{Deadline, POLL_MAX_PORTS, SuspendOutcome};
use xen_hypercall::{Errno, Error, ErrorKind};

#[test]
fn yield_is_counted() {
    for xen in common::mocks() {
        xen.sched_yield().unwrap();
        xen.sched_yield().unwrap();
        assert_eq!(xen.yields(), 2);
    }
}

#[test]
fn shutdown_and_shutdown_code_are_recorded() {
    for xen in common::mocks() {
        assert_eq!(xen.last_shutdown(), None);
        xen.shutdown_code(ShutdownReason::CRASH).unwrap();
        assert_eq!(xen.last_shutdown_code(), Some(ShutdownReason::CRASH));
        assert_eq!(xen.last_shutdown(), None);
        xen.shutdown(ShutdownReason::POWEROFF).unwrap();
        assert_eq!(xen.last_shutdown(), Some(ShutdownReason::POWEROFF));
    }
}

/// A suspend without the start-info frame in the third argument would let the
/// toolstack write into whatever frame the register held: `shutdown` and
/// `shutdown_code` refuse it before any hypercall.
#[test]
fn shutdown_refuses_suspend() {
    for xen in common::mocks() {
        let err = xen.shutdown(ShutdownReason::SUSPEND).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        let err = xen.shutdown_code(ShutdownReason::SUSPEND).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        assert_eq!(xen.last_shutdown(), None);
        assert_eq!(xen.last_shutdown_code(), None);
        assert_eq!(xen.last_suspend_record(), None);
    }
}

#[test]
fn suspend_passes_the_start_info_frame_and_reports_the_outcome() {
    for xen in common::mocks() {
        // SAFETY: the mock writes no start-info page, and nothing is shared.
        let outcome = unsafe { xen.suspend(0x1234) }.unwrap();
        assert_eq!(outcome, SuspendOutcome::Cancelled);
        assert_eq!(xen.last_suspend_record(), Some(0x1234));
        assert_eq!(xen.last_shutdown(), Some(ShutdownReason::SUSPEND));
        xen.set_suspend_cancels(false);
        // SAFETY: as above.
        let outcome = unsafe { xen.suspend(0x5678) }.unwrap();
        assert_eq!(outcome, SuspendOutcome::Resumed);
        assert_eq!(xen.last_suspend_record(), Some(0x5678));
    }
}

#[test]
fn poll_returns_at_once_when_a_port_is_pending() {
    for xen in common::mocks() {
        let a = xen.evtchn_bind_ipi(0).unwrap();
        let b = xen.evtchn_bind_ipi(0).unwrap();
        xen.evtchn_send(b).unwrap();
        xen.poll(&[a, b], None).unwrap();
        // A masked pending port still ends a poll.
        xen.set_masked(b, true);
        xen.poll(&[b], None).unwrap();
        assert_eq!(xen.now(), 0, "no time passed");
    }
}

#[test]
fn poll_with_a_deadline_returns_at_the_deadline() {
    for xen in common::mocks() {
        let a = xen.evtchn_bind_ipi(0).unwrap();
        xen.set_now(1_000);
        // In the past (and at time 0, which is not Xen's "no timeout").
        xen.poll(&[a], Some(Deadline::from_nanos(500))).unwrap();
        xen.poll(&[a], Some(Deadline::from_nanos(0))).unwrap();
        assert_eq!(xen.now(), 1_000);
        // In the future: the mock's clock moves there.
        xen.poll(&[a], Some(Deadline::from_nanos(5_000_000)))
            .unwrap();
        assert_eq!(xen.now(), 5_000_000);
        // No port at all, with a deadline: a sleep.
        xen.poll(&[], Some(Deadline::from_nanos(6_000_000)))
            .unwrap();
        assert_eq!(xen.now(), 6_000_000);
    }
}

#[test]
fn poll_that_would_wait_forever_is_a_typed_error() {
    for xen in common::mocks() {
        let a = xen.evtchn_bind_ipi(0).unwrap();
        let err = xen.poll(&[a], None).unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        let err = xen.sched_block().unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
    }
}

#[test]
fn block_returns_when_an_unmasked_event_is_pending() {
    for xen in common::mocks() {
        let a = xen.evtchn_bind_ipi(0).unwrap();
        xen.set_masked(a, true);
        xen.evtchn_send(a).unwrap();
        assert!(xen.sched_block().is_err(), "a masked event does not wake");
        xen.evtchn_unmask(a).unwrap();
        xen.sched_block().unwrap();
    }
}

#[test]
fn poll_errors() {
    for xen in common::mocks() {
        let too_many = vec![Port(1); POLL_MAX_PORTS + 1];
        assert_eq!(
            xen.poll(&too_many, Some(Deadline::from_nanos(1))),
            Err(Error::Xen(Errno::EINVAL))
        );
        let max = vec![Port(1); POLL_MAX_PORTS];
        xen.poll(&max, Some(Deadline::from_nanos(1))).unwrap();
        assert_eq!(
            xen.poll(&[Port(4096)], Some(Deadline::from_nanos(1))),
            Err(Error::Xen(Errno::EINVAL))
        );
    }
}

#[test]
fn unknown_sched_sub_op_is_enosys() {
    let xen = MockXen::new();
    // SAFETY: sched_op sub-op 99 does not exist; the argument is NULL.
    let ret = unsafe { xen.hypercall2(xen_sys::__HYPERVISOR_sched_op as usize, [99, 0]) };
    assert_eq!(ret, Err(Error::Xen(Errno::ENOSYS)));
}
