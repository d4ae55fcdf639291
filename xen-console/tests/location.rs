//! The console ring's location from HVM parameters, as the toolstack set them (mock hypervisor):
//! both set, neither (no console), or one missing, which Linux's hvc_xen refuses too.

use xen_console::{LocationError, RingLocation};
use xen_hypercall::mock::MockXen;
use xen_hypercall::prelude::*;

fn location(
    frame: u64,
    port: u64,
) -> Result<Option<RingLocation>, LocationError<xen_hypercall::Error>> {
    let xen = MockXen::new();
    xen.preset_hvm_param(HvmParam::CONSOLE_PFN, frame);
    xen.preset_hvm_param(HvmParam::CONSOLE_EVTCHN, port);
    RingLocation::from_hvm_params(&xen)
}

#[test]
fn hvm_params_name_a_ring_only_with_both_a_frame_and_a_port() {
    assert_eq!(
        location(0xfeffc, 2).unwrap(),
        Some(RingLocation {
            frame: 0xfeffc,
            port: Port(2)
        })
    );
    assert_eq!(location(0, 0).unwrap(), None);
    for (frame, port) in [(0xfeffc, 0), (0, 2), (0xfeffc, 1 << 32)] {
        match location(frame, port) {
            Err(LocationError::Bad(bad)) => assert_eq!((bad.frame, bad.port), (frame, port)),
            other => panic!("frame {frame:#x}, port {port}: {other:?}"),
        }
    }
}
