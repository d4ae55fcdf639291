//! `HvmOps`, `MemoryOps` and `PhysdevOps` against the mock.
#![cfg(feature = "mock")]

mod common;

use xen_hypercall::mock::MockXen;
use xen_hypercall::prelude::*;
use xen_hypercall::{Errno, Error, Gfn, MapSpace};

#[test]
fn hvm_params_round_trip() {
    for xen in common::mocks() {
        xen.preset_hvm_param(HvmParam::STORE_EVTCHN, 3);
        assert_eq!(
            xen.hvm_get_param(DomId::SELF, HvmParam::STORE_EVTCHN)
                .unwrap(),
            3
        );
        assert_eq!(
            xen.hvm_get_param(DomId::SELF, HvmParam::CONSOLE_PFN)
                .unwrap(),
            0
        );
        // SAFETY: the mock has no guest memory a parameter could expose.
        unsafe { xen.hvm_set_param(DomId::SELF, HvmParam::CONSOLE_PFN, 0xfeff2) }.unwrap();
        assert_eq!(
            xen.hvm_get_param(DomId::SELF, HvmParam::CONSOLE_PFN)
                .unwrap(),
            0xfeff2
        );
        // dom0 (privileged) reads another domain's parameters.
        let domu = xen.domain(DomId::new(2));
        domu.preset_hvm_param(HvmParam::STORE_PFN, 0xfeffc);
        assert_eq!(
            xen.hvm_get_param(DomId::new(2), HvmParam::STORE_PFN)
                .unwrap(),
            0xfeffc
        );
    }
}

#[test]
fn hvm_param_errors() {
    for xen in common::mocks() {
        let bad = HvmParam(HvmParam::COUNT);
        assert_eq!(
            xen.hvm_get_param(DomId::SELF, bad),
            Err(Error::Xen(Errno::EINVAL))
        );
        // SAFETY: refused before any effect.
        let ret = unsafe { xen.hvm_set_param(DomId::SELF, bad, 1) };
        assert_eq!(ret, Err(Error::Xen(Errno::EINVAL)));
        assert_eq!(
            xen.hvm_get_param(DomId::new(77), HvmParam::STORE_PFN),
            Err(Error::Xen(Errno::ESRCH))
        );
        let domu = xen.domain(DomId::new(2));
        assert_eq!(
            domu.hvm_get_param(DomId::new(0), HvmParam::STORE_PFN),
            Err(Error::Xen(Errno::EPERM))
        );
        // SAFETY: refused before any effect.
        let ret = unsafe { domu.hvm_set_param(DomId::new(0), HvmParam::STORE_PFN, 1) };
        assert_eq!(ret, Err(Error::Xen(Errno::EPERM)));
    }
}

#[test]
fn shared_info_is_mapped_at_the_given_frame() {
    for xen in common::mocks() {
        // SAFETY: the mock has no guest memory; the mapping is only recorded.
        unsafe { xen.add_to_physmap(DomId::SELF, MapSpace::SHARED_INFO, 0, Gfn(0xfeffe)) }.unwrap();
        assert_eq!(xen.physmap(), [(MapSpace::SHARED_INFO, 0, Gfn(0xfeffe))]);
        // SAFETY: as above.
        let ret = unsafe { xen.add_to_physmap(DomId::SELF, MapSpace::SHARED_INFO, 1, Gfn(1)) };
        assert_eq!(
            ret,
            Err(Error::Xen(Errno::EINVAL)),
            "shared info has one frame"
        );
        // SAFETY: as above.
        let ret = unsafe { xen.add_to_physmap(DomId::new(9), MapSpace::SHARED_INFO, 0, Gfn(1)) };
        assert_eq!(ret, Err(Error::Xen(Errno::ESRCH)));
        let domu = xen.domain(DomId::new(9));
        // SAFETY: as above.
        let ret = unsafe { domu.add_to_physmap(DomId::new(0), MapSpace::SHARED_INFO, 0, Gfn(1)) };
        assert_eq!(ret, Err(Error::Xen(Errno::EPERM)));
        // SAFETY: as above.
        let ret = unsafe { xen.add_to_physmap(DomId::SELF, MapSpace::GMFN, 0, Gfn(1)) };
        assert!(matches!(ret, Err(Error::Unsupported(_))));
        // Grant table frames map (the table grows to them); a status frame does not.
        // SAFETY: as above.
        unsafe { xen.add_to_physmap(DomId::SELF, MapSpace::GRANT_TABLE, 2, Gfn(0x500)) }.unwrap();
        assert_eq!(xen.physmap()[1], (MapSpace::GRANT_TABLE, 2, Gfn(0x500)));
        let status_frame = 1 << 31;
        // SAFETY: as above.
        let ret =
            unsafe { xen.add_to_physmap(DomId::SELF, MapSpace::GRANT_TABLE, status_frame, Gfn(1)) };
        assert_eq!(ret, Err(Error::Xen(Errno::EINVAL)));
    }
}

#[test]
fn iopl_is_checked_and_recorded() {
    for xen in common::mocks() {
        assert_eq!(xen.iopl(), None);
        xen.set_iopl(3).unwrap();
        assert_eq!(xen.iopl(), Some(3));
        assert_eq!(xen.set_iopl(4), Err(Error::Xen(Errno::EINVAL)));
        assert_eq!(xen.iopl(), Some(3));
    }
}

#[test]
fn unknown_memory_and_physdev_sub_ops_are_enosys() {
    let xen = MockXen::new();
    for op in [
        xen_sys::__HYPERVISOR_memory_op,
        xen_sys::__HYPERVISOR_physdev_op,
        xen_sys::__HYPERVISOR_hvm_op,
    ] {
        // SAFETY: sub-op 63 of these does not exist / is not modelled; the argument is NULL.
        let ret = unsafe { xen.hypercall2(op as usize, [63, 0]) };
        assert_eq!(ret, Err(Error::Xen(Errno::ENOSYS)), "hypercall {op}");
    }
}
