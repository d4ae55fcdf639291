//! Toolstack requests against the in-process xenstore, written as xl writes them.
// Not under Miri: this path has no unsafe code, and the in-process daemon takes seconds a request
// there (xen-store's own tests run it under Miri).
#![cfg(all(feature = "control", not(miri)))]

use xen_guest::control::{self, ControlWatches, Features, ShutdownRequest};
use xen_store::mock::MockStore;
use xen_store::{Client, DomId, Store};

const DOMID: DomId = DomId(7);

/// A node the toolstack makes in the guest's home, owned by the guest (libxl makes
/// `control/shutdown` and `control/sysrq` so).
fn toolstack_node(store: &MockStore, path: &str, value: &[u8]) {
    store.write_as_dom0(path, value);
    let mut dom0 = Client::new(store.connect(DomId(0)));
    dom0.set_perms(
        path,
        &[xen_store::Perm::new(DOMID, xen_store::Access::None)],
    )
    .unwrap();
}

fn guest(store: &MockStore) -> Client<xen_store::mock::MockConnection> {
    toolstack_node(store, "/local/domain/7/control", b"");
    toolstack_node(store, "/local/domain/7/control/shutdown", b"");
    Client::new(store.connect(DOMID))
}

#[test]
fn a_request_is_taken_once_and_acknowledged_by_clearing_it() {
    let store = MockStore::new();
    let mut xs = guest(&store);
    let watches = ControlWatches::new(&mut xs, Features::POWEROFF | Features::REBOOT).unwrap();
    let mut dom0 = Client::new(store.connect(DomId(0)));
    assert_eq!(
        dom0.read("/local/domain/7/control/feature-poweroff")
            .unwrap(),
        b"1"
    );
    assert_eq!(
        dom0.read("/local/domain/7/control/feature-reboot").unwrap(),
        b"1"
    );
    assert!(
        dom0.read("/local/domain/7/control/feature-suspend")
            .is_err()
    );

    // The watch fires once when set: nothing is pending then.
    let first = xs.next_event().unwrap();
    assert!(watches.is_shutdown(first.watch) || watches.is_sysrq(first.watch));
    assert_eq!(control::take_shutdown(&mut xs).unwrap(), None);

    for (text, request) in [
        (&b"poweroff"[..], ShutdownRequest::Poweroff),
        (b"reboot", ShutdownRequest::Reboot),
        (b"halt", ShutdownRequest::Halt),
        (b"suspend", ShutdownRequest::Suspend),
        (b"hibernate", ShutdownRequest::Other("hibernate".into())),
    ] {
        dom0.write("/local/domain/7/control/shutdown", text)
            .unwrap();
        assert_eq!(control::take_shutdown(&mut xs).unwrap(), Some(request));
        // Cleared: what xl waits for, and a second look finds nothing.
        assert_eq!(dom0.read("/local/domain/7/control/shutdown").unwrap(), b"");
        assert_eq!(control::take_shutdown(&mut xs).unwrap(), None);
    }
}

#[test]
fn sysrq_and_a_missing_node() {
    let store = MockStore::new();
    let mut xs = guest(&store);
    assert_eq!(control::take_sysrq(&mut xs).unwrap(), None);
    toolstack_node(&store, "/local/domain/7/control/sysrq", b"t");
    assert_eq!(control::take_sysrq(&mut xs).unwrap(), Some(b't'));
    assert_eq!(control::take_sysrq(&mut xs).unwrap(), None);
}

#[test]
fn each_request_maps_to_its_shutdown_reason() {
    use xen_hypercall::ShutdownReason;
    assert_eq!(
        ShutdownRequest::Poweroff.reason(),
        Some(ShutdownReason::POWEROFF)
    );
    assert_eq!(
        ShutdownRequest::Halt.reason(),
        Some(ShutdownReason::POWEROFF)
    );
    assert_eq!(
        ShutdownRequest::Reboot.reason(),
        Some(ShutdownReason::REBOOT)
    );
    assert_eq!(
        ShutdownRequest::Suspend.reason(),
        Some(ShutdownReason::SUSPEND)
    );
    assert_eq!(ShutdownRequest::parse("crash").reason(), None);
}

#[test]
fn a_suspend_not_advertised_is_left_unacknowledged_for_xl_to_cancel() {
    let store = MockStore::new();
    let mut xs = guest(&store);
    let watches = ControlWatches::new(&mut xs, Features::POWEROFF).unwrap();
    let mut dom0 = Client::new(store.connect(DomId(0)));
    dom0.write("/local/domain/7/control/shutdown", b"suspend")
        .unwrap();
    assert_eq!(watches.take_shutdown(&mut xs).unwrap(), None);
    assert_eq!(
        dom0.read("/local/domain/7/control/shutdown").unwrap(),
        b"suspend"
    );
    // xl cancels by clearing it; a request the guest handles is taken as before.
    dom0.write("/local/domain/7/control/shutdown", b"poweroff")
        .unwrap();
    assert_eq!(
        watches.take_shutdown(&mut xs).unwrap(),
        Some(ShutdownRequest::Poweroff)
    );
    // Advertised, a suspend is taken and acknowledged.
    let suspending = ControlWatches::new(&mut xs, Features::SUSPEND).unwrap();
    dom0.write("/local/domain/7/control/shutdown", b"suspend")
        .unwrap();
    assert_eq!(
        suspending.take_shutdown(&mut xs).unwrap(),
        Some(ShutdownRequest::Suspend)
    );
    assert_eq!(dom0.read("/local/domain/7/control/shutdown").unwrap(), b"");
}
