//! The toolstack's hot-plug and the backend's first xenbus step, over xen-store's mock daemon
//! (its permissions are enforced as the real daemon's).
#![cfg(feature = "linux")]

use std::io::Write as _;

use xen_blk::linux::{BlockBackend, MAX_RING_PAGE_ORDER, USERSPACE_CLASS, add_vbd, remove_vbd};
use xen_bus::XenbusState;
use xen_hypercall::DomId;
use xen_store::mock::MockStore;
use xen_store::{Client, ErrorKind, Store};

const GUEST: DomId = DomId(5);
const XVDB: u32 = 202 << 8 | 16;

#[test]
#[cfg_attr(miri, ignore = "the backend reads a file's size")]
fn hot_plug_writes_both_directories_with_the_toolstacks_permissions() {
    let store = MockStore::new();
    let mut dom0 = Client::new(store.connect(DomId(0)));
    let mut guest = Client::new(store.connect(GUEST));
    let paths = add_vbd(
        &mut dom0,
        USERSPACE_CLASS,
        GUEST,
        DomId(0),
        XVDB,
        "xvdb",
        false,
    )
    .unwrap();
    assert_eq!(paths.frontend, "/local/domain/5/device/vbd/51728");
    assert_eq!(paths.backend, "/local/domain/0/backend/qdisk/5/51728");
    let front = |key: &str| format!("{}/{key}", paths.frontend);
    let back = |key: &str| format!("{}/{key}", paths.backend);
    // The guest finds its backend, may write its own state and read, not write, the backend's.
    assert_eq!(
        guest.read(&front("backend")).unwrap(),
        paths.backend.as_bytes()
    );
    assert_eq!(guest.read(&front("backend-id")).unwrap(), b"0");
    assert_eq!(guest.read(&front("virtual-device")).unwrap(), b"51728");
    guest.write(&front("state"), b"1").unwrap();
    assert_eq!(guest.read(&back("state")).unwrap(), b"1");
    assert_eq!(guest.read(&back("frontend-id")).unwrap(), b"5");
    let refused = guest.write(&back("state"), b"4").unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::PermissionDenied, "{refused:?}");
    // Another guest sees neither.
    let mut other = Client::new(store.connect(DomId(6)));
    assert!(other.read(&front("backend")).is_err());
    assert!(other.read(&back("state")).is_err());

    let mut file = tempfile();
    file.write_all(&[0; 8 * 512 + 100]).unwrap();
    let backend = BlockBackend::new(&mut dom0, &paths.backend, file, false).unwrap();
    assert_eq!(backend.disk().sectors, 8);
    assert_eq!(guest.read(&back("state")).unwrap(), b"2");
    assert_eq!(guest.read(&back("feature-flush-cache")).unwrap(), b"1");
    assert_eq!(
        guest.read(&back("max-ring-page-order")).unwrap(),
        MAX_RING_PAGE_ORDER.to_string().as_bytes()
    );
    assert_eq!(
        backend.device().peer_state(&mut dom0).unwrap(),
        XenbusState::Initialising
    );

    remove_vbd(&mut dom0, &paths).unwrap();
    assert_eq!(
        dom0.read(&front("backend")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        dom0.read(&back("state")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

/// An unlinked file in the temporary directory.
fn tempfile() -> std::fs::File {
    let path = std::env::temp_dir().join(format!("xen-blk-hotplug-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}
