//! The Linux backends where no Xen runs: their errors. Real Xen is in the testbed.
#![cfg(all(target_os = "linux", feature = "linux", not(miri)))]

use xen_evtchn::linux::EvtchnDevice;
use xen_evtchn::{Error, ErrorKind};

#[test]
fn a_missing_device_is_typed() {
    let err = EvtchnDevice::open_path("/nonexistent/xen/evtchn").unwrap_err();
    assert_eq!(
        err,
        Error::DeviceMissing {
            device: "/nonexistent/xen/evtchn"
        }
    );
    assert_eq!(err.kind(), ErrorKind::NotOnXen);
    assert!(err.to_string().contains("modprobe xen-evtchn"));
}

#[test]
fn a_device_that_is_not_evtchn_answers_with_typed_os_errors() {
    // /dev/null accepts the open; every ioctl is refused (ENOTTY).
    let dev = EvtchnDevice::open_path("/dev/null").unwrap();
    use xen_evtchn::{DomId, EventChannel};
    let err = dev.alloc_unbound_raw(DomId::SELF).unwrap_err();
    assert_eq!(err.os_errno().map(|e| e.raw()), Some(nix::libc::ENOTTY));
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    // Unmasking a port this handle never bound is refused before any write.
    let port = xen_evtchn::Port::new(3);
    assert_eq!(dev.unmask(port), Err(Error::NotBound(port)));
    assert_eq!(
        dev.bind_static_raw(port).unwrap_err().kind(),
        ErrorKind::Unsupported
    );
}

#[cfg(feature = "tokio-1")]
#[test]
fn tokio_outside_a_runtime_is_refused_not_a_panic() {
    let dev = EvtchnDevice::open_path("/dev/null").unwrap();
    let err = xen_evtchn::tokio::TokioEventChannel::new(dev).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
}
