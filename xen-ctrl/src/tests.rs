extern crate std;
use std::vec::Vec;

use xen_hypercall::mock::{BufferMode, MockXen};
use xen_hypercall::{DomId, Errno, ShutdownReason};

use super::*;

/// A Xen speaking domctl `version`, with domains 1, 2 and 7 besides dom0, through buffers made
/// as `mode` says.
fn xen(version: u32, mode: BufferMode) -> MockXen {
    let xen = MockXen::new().with_buffers(mode);
    xen.set_domctl_interface_version(version);
    for id in [1, 2, 7] {
        xen.domain(DomId(id));
    }
    xen
}

fn each_release(test: impl Fn(&MockXen)) {
    for version in KNOWN_DOMCTL_VERSIONS {
        for mode in [BufferMode::Direct, BufferMode::Bounce] {
            test(&xen(version, mode));
        }
    }
}

#[test]
fn the_interface_version_is_found_and_remembered() {
    for version in KNOWN_DOMCTL_VERSIONS {
        let ctrl = XenCtrl::new(xen(version, BufferMode::Direct));
        assert_eq!(ctrl.interface().unwrap().domctl_version(), version);
        assert_eq!(ctrl.interface().unwrap().sysctl_version(), 0x15);
        // Remembered: a Xen that now refuses every version is not asked again.
        ctrl.hypercall().set_domctl_interface_version(0x99);
        assert_eq!(ctrl.interface().unwrap().domctl_version(), version);
    }
}

#[test]
fn an_unknown_version_is_a_typed_error() {
    let ctrl = XenCtrl::new(xen(0x16, BufferMode::Direct));
    assert_eq!(
        ctrl.domain_info(DomId(1)),
        Err(Error::UnknownInterface(InterfaceKind::Domctl))
    );
}

#[test]
fn an_xsm_denial_is_not_a_version_mismatch() {
    each_release(|xen| {
        xen.set_xsm_denies(true);
        let ctrl = XenCtrl::new(xen.clone());
        assert_eq!(
            ctrl.domain_info(DomId(1)),
            Err(Error::Denied(Errno::EACCES))
        );
        assert_eq!(ctrl.physinfo(), Err(Error::Denied(Errno::EACCES)));
        assert!(ctrl.interface().is_ok());
    });
}

#[test]
fn an_unprivileged_domain_is_denied() {
    let xen = xen(0x15, BufferMode::Direct);
    let ctrl = XenCtrl::new(xen.domain(DomId(1)));
    assert_eq!(
        ctrl.pause_domain(DomId(2)),
        Err(Error::Denied(Errno::EPERM))
    );
}

#[test]
fn domain_info_reports_the_domain() {
    each_release(|xen| {
        xen.set_domain_pages(DomId(7), 1000, 2048);
        xen.set_domain_handle(DomId(7), [7; 16]);
        let ctrl = XenCtrl::new(xen.clone());
        let info = ctrl.domain_info(DomId(7)).unwrap();
        assert_eq!(info.domid, DomId(7));
        assert_eq!((info.tot_pages, info.max_pages), (1000, 2048));
        assert_eq!(info.handle, [7; 16]);
        assert_eq!(info.online_vcpus, 1);
        assert_eq!(info.flags, DomainFlags::BLOCKED);
        assert_eq!(&info.state_letters(), b"-b----");
        assert_eq!(info.memory_kib(), 4000);
    });
}

#[test]
fn a_bad_domid_is_no_such_domain() {
    each_release(|xen| {
        let ctrl = XenCtrl::new(xen.clone());
        assert_eq!(
            ctrl.domain_info(DomId(3)),
            Err(Error::NoSuchDomain(DomId(3)))
        );
        assert_eq!(
            ctrl.pause_domain(DomId(3)),
            Err(Error::NoSuchDomain(DomId(3)))
        );
        assert_eq!(
            ctrl.destroy_domain(DomId(3)),
            Err(Error::NoSuchDomain(DomId(3)))
        );
        assert_eq!(
            ctrl.vcpu_info(DomId(3), 0),
            Err(Error::NoSuchDomain(DomId(3)))
        );
        // Past the last domain, and a reserved id (Xen 4.17 looks for the next domain up).
        assert_eq!(
            ctrl.domain_info(DomId(8)),
            Err(Error::NoSuchDomain(DomId(8)))
        );
        assert_eq!(
            ctrl.domain_info(DomId::INVALID),
            Err(Error::NoSuchDomain(DomId::INVALID))
        );
    });
}

#[test]
fn pause_and_unpause() {
    each_release(|xen| {
        let ctrl = XenCtrl::new(xen.clone());
        ctrl.pause_domain(DomId(2)).unwrap();
        assert!(xen.is_paused(DomId(2)));
        let info = ctrl.domain_info(DomId(2)).unwrap();
        assert!(info.flags.contains(DomainFlags::PAUSED));
        assert_eq!(&info.state_letters(), b"-bp---");
        ctrl.unpause_domain(DomId(2)).unwrap();
        assert!(!xen.is_paused(DomId(2)));
        // Not paused any more, and a domain cannot pause itself.
        assert_eq!(
            ctrl.unpause_domain(DomId(2)),
            Err(Error::Xen(Errno::EINVAL))
        );
        assert_eq!(ctrl.pause_domain(DomId(0)), Err(Error::Xen(Errno::EINVAL)));
    });
}

#[test]
fn destroy_removes_the_domain() {
    each_release(|xen| {
        let ctrl = XenCtrl::new(xen.clone());
        ctrl.destroy_domain(DomId(2)).unwrap();
        assert!(!xen.domain_exists(DomId(2)));
        assert_eq!(
            ctrl.domain_info(DomId(2)),
            Err(Error::NoSuchDomain(DomId(2)))
        );
        let ids: Vec<u16> = ctrl.domains().map(|d| d.unwrap().domid.0).collect();
        assert_eq!(ids, [0, 1, 7]);
    });
}

#[test]
fn max_mem_and_vcpu_info() {
    each_release(|xen| {
        let ctrl = XenCtrl::new(xen.clone());
        ctrl.set_max_mem(DomId(1), 8192).unwrap();
        assert_eq!(ctrl.domain_info(DomId(1)).unwrap().max_pages, 2048);
        let vcpu = ctrl.vcpu_info(DomId(1), 0).unwrap();
        assert!(vcpu.online && vcpu.blocked && !vcpu.running);
        assert_eq!(ctrl.vcpu_info(DomId(1), 5), Err(Error::Xen(Errno::EINVAL)));
    });
}

#[test]
fn shutdown_reason_is_split_from_the_flags() {
    let (flags, reason) = DomainInfo::state(
        xen_sys::xen_4_17::XEN_DOMINF_shutdown
            | xen_sys::xen_4_17::XEN_DOMINF_dying
            | (3 << xen_sys::xen_4_17::XEN_DOMINF_shutdownshift),
    );
    assert_eq!(flags, DomainFlags::SHUTDOWN | DomainFlags::DYING);
    assert_eq!(reason, Some(ShutdownReason::CRASH));
    let mut info = DomainInfo::EMPTY;
    (info.flags, info.shutdown_reason) = (flags, reason);
    assert_eq!(&info.state_letters(), b"---scd");
    info.shutdown_reason = Some(ShutdownReason(9));
    assert_eq!(&info.state_letters(), b"---s?d");
}

#[test]
fn domains_pages_through_every_domain() {
    each_release(|xen| {
        // More domains than one batch holds.
        let many: Vec<u16> = (1..=40).map(|i| i * 3).collect();
        for &id in &many {
            xen.domain(DomId(id));
        }
        let ctrl = XenCtrl::new(xen.clone());
        let ids: Vec<u16> = ctrl.domains().map(|d| d.unwrap().domid.0).collect();
        let mut expected: Vec<u16> = [0, 1, 2, 7].into_iter().chain(many).collect();
        expected.sort_unstable();
        expected.dedup();
        assert_eq!(ids, expected);
        // A short output slice gets a prefix, and continuing from the last id + 1 the rest.
        let mut out = [DomainInfo::EMPTY; 3];
        assert_eq!(ctrl.domain_list(DomId(2), &mut out).unwrap(), 3);
        assert_eq!(out.map(|d| d.domid.0), [2, 3, 6]);
        assert_eq!(ctrl.domain_list(DomId(121), &mut out).unwrap(), 0);
    });
}

#[test]
fn physinfo_reports_the_host() {
    each_release(|xen| {
        let info = XenCtrl::new(xen.clone()).physinfo().unwrap();
        assert_eq!((info.nr_cpus, info.cores_per_socket), (2, 2));
        assert_eq!(info.capabilities, PhysCaps::HVM | PhysCaps::PV);
        assert_eq!(info.total_pages, 0x4_0000);
    });
}
