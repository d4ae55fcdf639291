//! `VersionOps` against the mock.
#![cfg(feature = "mock")]

mod common;

use xen_hypercall::mock::MockConfig;
use xen_hypercall::prelude::*;
use xen_hypercall::version::{BUILD_ID_CAPACITY, Features, Version};
use xen_hypercall::{Errno, Error};

fn config() -> MockConfig {
    MockConfig {
        version: Version {
            major: 4,
            minor: 17,
        },
        extraversion: ".3-pre".into(),
        capabilities: "xen-3.0-x86_64 hvm-3.0-x86_64".into(),
        changeset: "Tue Jan 2 2024 abcdef".into(),
        commandline: "console=com1,vga dom0_mem=1G".into(),
        compiler: "rustc-mock".into(),
        compile_by: "builder".into(),
        compile_domain: "example.org".into(),
        compile_date: "2024-01-02".into(),
        virt_start: 0xffff_8000_0000_0000,
        features: 0b1010_0101,
        pagesize: 4096,
        guest_handle: *b"0123456789abcdef",
        build_id: Some((1..=20).collect()),
        ..MockConfig::default()
    }
}

#[test]
fn every_sub_op_reports_the_configuration() {
    for xen in common::mocks_with(config()) {
        assert_eq!(
            xen.xen_version().unwrap(),
            Version {
                major: 4,
                minor: 17
            }
        );
        assert_eq!(xen.xen_version().unwrap().to_string(), "4.17");
        assert_eq!(xen.extraversion().unwrap(), ".3-pre");
        assert_eq!(
            xen.capabilities().unwrap().to_str().unwrap(),
            "xen-3.0-x86_64 hvm-3.0-x86_64"
        );
        assert_eq!(xen.changeset().unwrap(), "Tue Jan 2 2024 abcdef");
        assert_eq!(
            xen.commandline().unwrap().to_string(),
            "console=com1,vga dom0_mem=1G"
        );
        let info = xen.compile_info().unwrap();
        assert_eq!(info.compiler, "rustc-mock");
        assert_eq!(info.compile_by, "builder");
        assert_eq!(info.compile_domain, "example.org");
        assert_eq!(info.compile_date, "2024-01-02");
        assert_eq!(
            xen.platform_parameters().unwrap().virt_start,
            0xffff_8000_0000_0000
        );
        assert_eq!(xen.features(0).unwrap(), 0b1010_0101);
        assert_eq!(
            xen.feature_flags().unwrap(),
            Features::WRITABLE_PAGE_TABLES
                | Features::AUTO_TRANSLATED_PHYSMAP
                | Features::MMU_PT_UPDATE_PRESERVE_AD
                | Features::GNTTAB_MAP_AVAIL_BITS
        );
        assert_eq!(xen.pagesize().unwrap(), 4096);
        assert_eq!(&xen.guest_handle().unwrap().0, b"0123456789abcdef");
        let id = xen.build_id().unwrap();
        assert_eq!(id.as_bytes(), (1..=20).collect::<Vec<u8>>());
        assert_eq!(id.to_string(), "0102030405060708090a0b0c0d0e0f1011121314");
    }
}

#[test]
fn strings_longer_than_the_c_array_are_truncated_with_their_nul() {
    let cfg = MockConfig {
        extraversion: "-a-very-long-extraversion".into(),
        ..config()
    };
    for xen in common::mocks_with(cfg.clone()) {
        let extra = xen.extraversion().unwrap();
        assert_eq!(extra.as_bytes(), &b"-a-very-long-ex"[..]);
        assert_eq!(extra.as_bytes().len(), 15);
    }
}

#[test]
fn invalid_utf8_is_reported_and_displayed_lossily() {
    let cfg = MockConfig {
        // Not UTF-8 once truncated in the middle of `é` (2 bytes) at 15 bytes.
        extraversion: "12345678901234é".into(),
        ..config()
    };
    for xen in common::mocks_with(cfg.clone()) {
        let extra = xen.extraversion().unwrap();
        assert!(extra.to_str().is_err());
        assert_eq!(extra.to_string(), "12345678901234\u{FFFD}");
    }
}

#[test]
fn unknown_feature_submap_is_einval() {
    for xen in common::mocks() {
        assert_eq!(xen.features(1), Err(Error::Xen(Errno::EINVAL)));
    }
}

#[test]
fn build_id_that_does_not_fit_is_enobufs() {
    let cfg = MockConfig {
        build_id: Some(vec![7; BUILD_ID_CAPACITY + 1]),
        ..config()
    };
    for xen in common::mocks_with(cfg.clone()) {
        assert_eq!(xen.build_id(), Err(Error::Xen(Errno::ENOBUFS)));
    }
    let cfg = MockConfig {
        build_id: Some(vec![7; BUILD_ID_CAPACITY]),
        ..config()
    };
    for xen in common::mocks_with(cfg.clone()) {
        assert_eq!(
            xen.build_id().unwrap().as_bytes(),
            &[7; BUILD_ID_CAPACITY][..]
        );
    }
}

#[test]
fn missing_build_id_is_enodata() {
    let cfg = MockConfig {
        build_id: None,
        ..config()
    };
    for xen in common::mocks_with(cfg.clone()) {
        assert_eq!(xen.build_id().unwrap_err().errno(), Some(Errno::ENODATA));
    }
}

#[test]
fn unprivileged_domain_may_not_read_commandline_or_build_id() {
    for xen in common::mocks_with(config()) {
        let domu = xen.domain(DomId::new(3));
        assert_eq!(domu.commandline(), Err(Error::Xen(Errno::EPERM)));
        assert_eq!(domu.build_id(), Err(Error::Xen(Errno::EPERM)));
        // The others are open to every domain.
        assert_eq!(domu.extraversion().unwrap(), ".3-pre");
        assert_eq!(domu.xen_version().unwrap().minor, 17);
    }
}

#[test]
fn unknown_sub_op_is_enosys() {
    let xen = xen_hypercall::mock::MockXen::new();
    // SAFETY: xen_version sub-op 1000 does not exist; the argument is NULL.
    let ret = unsafe { xen.hypercall2(xen_sys::__HYPERVISOR_xen_version as usize, [1000, 0]) };
    assert_eq!(ret, Err(Error::Xen(Errno::ENOSYS)));
    // SAFETY: hypercall 60 does not exist.
    let ret = unsafe { xen.hypercall0(60) };
    assert_eq!(ret, Err(Error::Xen(Errno::ENOSYS)));
}
