//! `EventChannelOps` against the mock: success and error paths, across domains.
#![cfg(feature = "mock")]

mod common;

use xen_hypercall::event_channel::ChannelState;
use xen_hypercall::mock::MockXen;
use xen_hypercall::prelude::*;
use xen_hypercall::{Errno, Error};

fn errno<T: std::fmt::Debug>(result: Result<T, Error>) -> Errno {
    result.unwrap_err().errno().expect("a Xen error")
}

fn state(xen: &MockXen, port: Port) -> ChannelState {
    xen.evtchn_status(DomId::SELF, port).unwrap().state
}

#[test]
fn interdomain_channel_carries_events_both_ways() {
    for dom0 in common::mocks() {
        let domu = dom0.domain(DomId::new(1));
        // dom0 offers a port to domain 1, which binds to it.
        let offered = dom0
            .evtchn_alloc_unbound(DomId::SELF, DomId::new(1))
            .unwrap();
        assert_eq!(offered, Port(1), "port 0 is reserved");
        let status = dom0.evtchn_status(DomId::SELF, offered).unwrap();
        let unbound = ChannelState::Unbound {
            remote_dom: DomId::new(1),
        };
        assert_eq!((status.state, status.vcpu), (unbound, 0));
        let local = domu
            .evtchn_bind_interdomain(DomId::new(0), offered)
            .unwrap();
        assert_eq!(
            state(&domu, local),
            ChannelState::Interdomain {
                dom: DomId::new(0),
                port: offered
            }
        );
        assert_eq!(
            state(&dom0, offered),
            ChannelState::Interdomain {
                dom: DomId::new(1),
                port: local
            }
        );
        // Xen marks the new local port pending, in case events were lost.
        assert!(domu.is_pending(local));
        domu.clear_pending(local);

        dom0.evtchn_send(offered).unwrap();
        assert!(domu.is_pending(local));
        assert!(!dom0.is_pending(offered));
        domu.evtchn_send(local).unwrap();
        assert!(dom0.is_pending(offered));

        // Closing one end leaves the other unbound, waiting for the closer.
        domu.evtchn_close(local).unwrap();
        assert_eq!(state(&domu, local), ChannelState::Closed);
        assert_eq!(
            state(&dom0, offered),
            ChannelState::Unbound {
                remote_dom: DomId::new(1)
            }
        );
        // Sending on an unbound port is silently dropped.
        dom0.evtchn_send(offered).unwrap();
        // And domain 1 can bind again.
        let again = domu
            .evtchn_bind_interdomain(DomId::new(0), offered)
            .unwrap();
        assert_eq!(again, local, "the lowest free port is reused");
    }
}

#[test]
fn loopback_channel_within_one_domain() {
    for xen in common::mocks() {
        let a = xen.evtchn_alloc_unbound(DomId::SELF, DomId::SELF).unwrap();
        let b = xen.evtchn_bind_interdomain(DomId::SELF, a).unwrap();
        xen.clear_pending(b);
        xen.evtchn_send(a).unwrap();
        assert!(xen.is_pending(b));
        assert!(!xen.is_pending(a));
    }
}

#[test]
fn bind_interdomain_checks_the_remote_port() {
    for dom0 in common::mocks() {
        let domu = dom0.domain(DomId::new(1));
        let other = dom0.domain(DomId::new(2));
        let offered = dom0
            .evtchn_alloc_unbound(DomId::SELF, DomId::new(1))
            .unwrap();
        // Only the domain the port was offered to may bind.
        assert_eq!(
            errno(other.evtchn_bind_interdomain(DomId::new(0), offered)),
            Errno::EINVAL
        );
        // A port that is not unbound, or does not exist.
        assert_eq!(
            errno(domu.evtchn_bind_interdomain(DomId::new(0), Port(0))),
            Errno::EINVAL
        );
        assert_eq!(
            errno(domu.evtchn_bind_interdomain(DomId::new(0), Port(77))),
            Errno::EINVAL
        );
        assert_eq!(
            errno(domu.evtchn_bind_interdomain(DomId::new(0), Port(u32::MAX))),
            Errno::EINVAL
        );
        // A domain that does not exist.
        assert_eq!(
            errno(domu.evtchn_bind_interdomain(DomId::new(9), offered)),
            Errno::ESRCH
        );
        // A port can be bound once; the refused binds used up no local port.
        let local = domu
            .evtchn_bind_interdomain(DomId::new(0), offered)
            .unwrap();
        assert_eq!(local, Port(1));
        assert_eq!(
            errno(domu.evtchn_bind_interdomain(DomId::new(0), offered)),
            Errno::EINVAL
        );
    }
}

#[test]
fn remote_operations_need_privilege() {
    for dom0 in common::mocks() {
        let domu = dom0.domain(DomId::new(1));
        // dom0 may allocate in domain 1 on its behalf.
        let port = dom0
            .evtchn_alloc_unbound(DomId::new(1), DomId::new(0))
            .unwrap();
        assert_eq!(
            domu.evtchn_status(DomId::SELF, port).unwrap().state,
            ChannelState::Unbound {
                remote_dom: DomId::new(0)
            }
        );
        assert!(dom0.evtchn_status(DomId::new(1), port).is_ok());
        // Domain 1 may not act on dom0.
        assert_eq!(
            errno(domu.evtchn_alloc_unbound(DomId::new(0), DomId::SELF)),
            Errno::EPERM
        );
        assert_eq!(
            errno(domu.evtchn_status(DomId::new(0), Port(1))),
            Errno::EPERM
        );
        assert_eq!(errno(domu.evtchn_reset(DomId::new(0))), Errno::EPERM);
        // A domain that does not exist is ESRCH, checked first.
        assert_eq!(
            errno(domu.evtchn_alloc_unbound(DomId::new(42), DomId::SELF)),
            Errno::ESRCH
        );
        assert_eq!(
            errno(dom0.evtchn_status(DomId::new(42), Port(1))),
            Errno::ESRCH
        );
        assert_eq!(errno(dom0.evtchn_reset(DomId::new(42))), Errno::ESRCH);
        // Once privileged, it may.
        domu.set_privileged(true);
        domu.evtchn_alloc_unbound(DomId::new(0), DomId::SELF)
            .unwrap();
    }
}

#[test]
fn virq_binding() {
    for xen in common::mocks() {
        let timer = xen.evtchn_bind_virq(Virq::TIMER, 0).unwrap();
        let status = xen.evtchn_status(DomId::SELF, timer).unwrap();
        assert_eq!(
            (status.state, status.vcpu),
            (ChannelState::Virq(Virq::TIMER), 0)
        );
        assert_eq!(errno(xen.evtchn_bind_virq(Virq::TIMER, 0)), Errno::EEXIST);
        // A global VIRQ binds on vCPU 0 only.
        assert_eq!(
            errno(xen.evtchn_bind_virq(Virq::CON_RING, 1)),
            Errno::EINVAL
        );
        // Past NR_VIRQS.
        assert_eq!(
            errno(xen.evtchn_bind_virq(Virq(Virq::COUNT), 0)),
            Errno::EINVAL
        );
        // A vCPU the domain does not have.
        assert_eq!(errno(xen.evtchn_bind_virq(Virq::DEBUG, 3)), Errno::ENOENT);

        assert_eq!(xen.raise_virq(Virq::TIMER, 0), Some(timer));
        assert!(xen.is_pending(timer));
        assert_eq!(xen.raise_virq(Virq::DEBUG, 0), None);
        // A send on a VIRQ port is refused.
        assert_eq!(errno(xen.evtchn_send(timer)), Errno::EINVAL);
        // Closing frees the VIRQ for binding again.
        xen.evtchn_close(timer).unwrap();
        assert_eq!(xen.evtchn_bind_virq(Virq::TIMER, 0).unwrap(), timer);
    }
}

#[test]
fn ipi_and_vcpu_binding() {
    for xen in common::mocks() {
        let ipi = xen.evtchn_bind_ipi(0).unwrap();
        assert_eq!(state(&xen, ipi), ChannelState::Ipi);
        xen.evtchn_send(ipi).unwrap();
        assert!(xen.is_pending(ipi));
        assert_eq!(errno(xen.evtchn_bind_ipi(1)), Errno::ENOENT);
        // An IPI port's vCPU cannot change; an unbound port's can (to a vCPU that exists).
        assert_eq!(errno(xen.evtchn_bind_vcpu(ipi, 0)), Errno::EINVAL);
        let unbound = xen.evtchn_alloc_unbound(DomId::SELF, DomId::SELF).unwrap();
        xen.evtchn_bind_vcpu(unbound, 0).unwrap();
        assert_eq!(errno(xen.evtchn_bind_vcpu(unbound, 7)), Errno::ENOENT);
        assert_eq!(errno(xen.evtchn_bind_vcpu(Port(99), 0)), Errno::EINVAL);
        let con = xen.evtchn_bind_virq(Virq::CON_RING, 0).unwrap();
        xen.evtchn_bind_vcpu(con, 0).unwrap();
        let timer = xen.evtchn_bind_virq(Virq::TIMER, 0).unwrap();
        assert_eq!(errno(xen.evtchn_bind_vcpu(timer, 0)), Errno::EINVAL);
    }
}

#[test]
fn unmask_and_bad_ports() {
    for xen in common::mocks() {
        let port = xen.evtchn_bind_ipi(0).unwrap();
        xen.set_masked(port, true);
        xen.evtchn_send(port).unwrap();
        // A masked port still becomes pending.
        assert!(xen.is_pending(port) && xen.is_masked(port));
        xen.evtchn_unmask(port).unwrap();
        assert!(!xen.is_masked(port));
        assert!(xen.is_pending(port));

        for bad in [Port(0), Port(4095), Port(4096), Port(u32::MAX)] {
            assert_eq!(errno(xen.evtchn_close(bad)), Errno::EINVAL, "{bad}");
            assert_eq!(errno(xen.evtchn_send(bad)), Errno::EINVAL, "{bad}");
        }
        assert_eq!(errno(xen.evtchn_unmask(Port(4096))), Errno::EINVAL);
        assert_eq!(
            errno(xen.evtchn_status(DomId::SELF, Port(4096))),
            Errno::EINVAL
        );
        // Closing twice.
        xen.evtchn_close(port).unwrap();
        assert_eq!(errno(xen.evtchn_close(port)), Errno::EINVAL);
        assert!(!xen.is_pending(port), "closing clears pending");
    }
}

#[test]
fn reset_closes_every_port() {
    for dom0 in common::mocks() {
        let domu = dom0.domain(DomId::new(4));
        let offered = dom0
            .evtchn_alloc_unbound(DomId::SELF, DomId::new(4))
            .unwrap();
        let local = domu
            .evtchn_bind_interdomain(DomId::new(0), offered)
            .unwrap();
        let ipi = domu.evtchn_bind_ipi(0).unwrap();
        // dom0 resets domain 4 (privileged).
        dom0.evtchn_reset(DomId::new(4)).unwrap();
        assert_eq!(state(&domu, local), ChannelState::Closed);
        assert_eq!(state(&domu, ipi), ChannelState::Closed);
        assert_eq!(
            state(&dom0, offered),
            ChannelState::Unbound {
                remote_dom: DomId::new(4)
            }
        );
        domu.evtchn_reset(DomId::SELF).unwrap();
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "4095 hypercalls take many minutes under Miri; every path they take is covered by the other tests"
)]
fn the_2_level_abi_has_4096_ports() {
    let xen = MockXen::new();
    // Ports 1..=4095 (port 0 is reserved).
    for expected in 1..4096 {
        assert_eq!(xen.evtchn_bind_ipi(0).unwrap(), Port(expected));
    }
    assert_eq!(errno(xen.evtchn_bind_ipi(0)), Errno::ENOSPC);
    assert_eq!(
        errno(xen.evtchn_alloc_unbound(DomId::SELF, DomId::SELF)),
        Errno::ENOSPC
    );
    xen.evtchn_close(Port(17)).unwrap();
    assert_eq!(xen.evtchn_bind_ipi(0).unwrap(), Port(17));
}

#[test]
fn unknown_sub_op_and_null_argument() {
    let xen = MockXen::new();
    // SAFETY: sub-op 200 does not exist; the argument is NULL.
    let ret = unsafe { xen.hypercall2(xen_sys::__HYPERVISOR_event_channel_op as usize, [200, 0]) };
    assert_eq!(ret, Err(Error::Xen(Errno::ENOSYS)));
    // SAFETY: a NULL argument is refused before any access (Xen: EFAULT).
    let ret = unsafe {
        xen.hypercall2(
            xen_sys::__HYPERVISOR_event_channel_op as usize,
            [xen_sys::EVTCHNOP_send as usize, 0],
        )
    };
    assert_eq!(ret, Err(Error::Xen(Errno::EFAULT)));
}

#[test]
fn handles_are_send_and_sync_and_work_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<MockXen>();
    let dom0 = MockXen::new();
    let domu = dom0.domain(DomId::new(1));
    let offered = dom0
        .evtchn_alloc_unbound(DomId::SELF, DomId::new(1))
        .unwrap();
    let local = std::thread::spawn(move || {
        let local = domu
            .evtchn_bind_interdomain(DomId::new(0), offered)
            .unwrap();
        domu.evtchn_send(local).unwrap();
        local
    })
    .join()
    .unwrap();
    assert!(dom0.is_pending(offered));
    assert_eq!(
        state(&dom0.domain(DomId::new(1)), local),
        ChannelState::Interdomain {
            dom: DomId::new(0),
            port: offered
        }
    );
}

#[test]
fn a_domain_has_at_most_max_evtchn_port_plus_one_ports() {
    let config = xen_hypercall::mock::MockConfig {
        max_evtchn_port: 7,
        ..Default::default()
    };
    for xen in common::mocks_with(config) {
        for expected in 1..=7 {
            assert_eq!(xen.evtchn_bind_ipi(0).unwrap(), Port(expected));
        }
        assert_eq!(errno(xen.evtchn_bind_ipi(0)), Errno::ENOSPC);
        assert_eq!(
            errno(xen.evtchn_alloc_unbound(DomId::SELF, DomId::SELF)),
            Errno::ENOSPC
        );
        // Ports past the limit do not exist.
        assert_eq!(errno(xen.evtchn_send(Port(8))), Errno::EINVAL);
        assert_eq!(
            xen.poll(
                &[Port(8)],
                Some(xen_hypercall::sched::Deadline::from_nanos(1))
            ),
            Err(Error::Xen(Errno::EINVAL))
        );
        xen.evtchn_close(Port(3)).unwrap();
        assert_eq!(xen.evtchn_bind_ipi(0).unwrap(), Port(3));
    }
}
