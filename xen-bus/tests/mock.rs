//! xen-bus over xen-store's mock daemon and the mock Xen's grant table.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use xen_bus::{Attempts, Device, DevicePage, Error, GrantedPages, Publication, XenbusState};
use xen_grant::{GrantPage, GrantRef, GrantTable};
use xen_hypercall::mock::MockXen;
use xen_hypercall::prelude::*;
use xen_shared::{FrontRing, RingMemory, SharedMem};
use xen_store::mock::MockStore;
use xen_store::{Client, Store};

const FRONT: &str = "/local/domain/1/device/vif/0";
const BACK: &str = "/local/domain/0/backend/vif/1/0";

fn store() -> MockStore {
    let store = MockStore::new();
    store.write_as_dom0(&format!("{FRONT}/backend"), BACK.as_bytes());
    store.write_as_dom0(&format!("{FRONT}/backend-id"), b"0");
    store.write_as_dom0(&format!("{BACK}/frontend"), FRONT.as_bytes());
    store.write_as_dom0(&format!("{BACK}/frontend-id"), b"1");
    store
}

#[test]
fn each_end_finds_the_other_and_reads_its_keys() {
    let store = store();
    let mut xs = Client::new(store.connect(DomId(0)));
    let front = Device::frontend(&mut xs, FRONT).unwrap();
    assert_eq!((front.peer_path(), front.peer_id()), (BACK, DomId(0)));
    let back = Device::backend(&mut xs, &format!("{BACK}/")).unwrap();
    assert_eq!((back.path(), back.peer_id()), (BACK, DomId(1)));
    // No state node reads as Unknown.
    assert_eq!(front.peer_state(&mut xs).unwrap(), XenbusState::Unknown);
    store.write_as_dom0(&format!("{BACK}/feature-sg"), b"1");
    store.write_as_dom0(&format!("{BACK}/feature-gso-tcpv4"), b"0");
    assert!(front.peer_feature(&mut xs, "sg").unwrap());
    assert!(!front.peer_feature(&mut xs, "gso-tcpv4").unwrap());
    assert!(!front.peer_feature(&mut xs, "absent").unwrap());
    store.write_as_dom0(&format!("{BACK}/state"), b"9");
    let bad = front.peer_state(&mut xs).unwrap_err();
    assert!(
        matches!(bad, Error::BadValue { ref value, .. } if value == "9"),
        "{bad:?}"
    );
    store.write_as_dom0(&format!("{BACK}/feature-sg"), b"yes");
    assert!(matches!(
        front.peer_feature(&mut xs, "sg"),
        Err(Error::BadValue { .. })
    ));
}

#[test]
fn a_bad_or_missing_peer_is_a_typed_error() {
    let store = store();
    let mut xs = Client::new(store.connect(DomId(0)));
    store.write_as_dom0(&format!("{FRONT}/backend-id"), b"32752");
    assert!(matches!(
        Device::frontend(&mut xs, FRONT),
        Err(Error::BadValue { .. })
    ));
    assert!(matches!(
        Device::frontend(&mut xs, "/local/domain/1/device/vif/9"),
        Err(Error::Missing { .. })
    ));
}

#[test]
fn publishing_writes_the_keys_and_the_state_together() {
    let store = store();
    let mut xs = Client::new(store.connect(DomId(0)));
    let front = Device::frontend(&mut xs, FRONT).unwrap();
    let refs = [8, 9, 10, 11].map(GrantRef);
    let publication = Publication::new()
        .ring_refs(refs.into_iter())
        .unwrap()
        .event_channel(Port(5))
        .value("request-rx-copy", 1);
    front
        .publish(&mut xs, &publication, XenbusState::Initialised)
        .unwrap();
    let read = |xs: &mut Client<_>, key: &str| xs.read(&format!("{FRONT}/{key}")).unwrap();
    assert_eq!(read(&mut xs, "ring-page-order"), b"2");
    assert_eq!(read(&mut xs, "ring-ref0"), b"8");
    assert_eq!(read(&mut xs, "ring-ref3"), b"11");
    assert_eq!(read(&mut xs, "event-channel"), b"5");
    assert_eq!(read(&mut xs, "request-rx-copy"), b"1");
    assert_eq!(read(&mut xs, "state"), b"3");
    assert_eq!(store.open_transactions(), 0);
    let three = Publication::new().ring_refs([1, 2, 3].map(GrantRef).into_iter());
    assert!(matches!(three, Err(Error::InvalidInput(_))));
    let one = Publication::new()
        .ring_refs([GrantRef(8)].into_iter())
        .unwrap();
    assert_eq!(one.entries().collect::<Vec<_>>(), [("ring-ref", "8")]);
}

#[test]
fn waiting_for_the_peer_sees_its_change_and_gives_up_at_the_deadline() {
    let store = store();
    let mut xs = Client::new(store.connect(DomId(0)));
    let front = Device::frontend(&mut xs, FRONT).unwrap();
    store.write_as_dom0(&format!("{BACK}/state"), b"2");
    // Already there.
    let state = front
        .wait_for_peer_ready(&mut xs, XenbusState::InitWait, &mut Attempts(0))
        .unwrap();
    assert_eq!(state, XenbusState::InitWait);
    // Not there, and the bound allows no sleep.
    let error = front
        .wait_for_peer_ready(&mut xs, XenbusState::Connected, &mut Attempts(0))
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::TimedOut {
                last: XenbusState::InitWait
            }
        ),
        "{error:?}"
    );
    // A change made while waiting wakes the wait.
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let mut xs = Client::new(store.connect(DomId(0)));
            front.wait_for_peer_ready(&mut xs, XenbusState::Connected, &mut Attempts(100))
        });
        store.write_as_dom0(&format!("{BACK}/state"), b"4");
        assert_eq!(waiter.join().unwrap().unwrap(), XenbusState::Connected);
    });
    // A peer closing instead is an error.
    store.write_as_dom0(&format!("{BACK}/state"), b"5");
    let error = front
        .wait_for_peer_ready(&mut xs, XenbusState::Connected, &mut Attempts(10))
        .unwrap_err();
    assert!(
        matches!(error, Error::PeerClosing(XenbusState::Closing)),
        "{error:?}"
    );
}

#[test]
fn close_releases_only_after_going_closed() {
    let store = store();
    let mut xs = Client::new(store.connect(DomId(0)));
    let front = Device::frontend(&mut xs, FRONT).unwrap();
    store.write_as_dom0(&format!("{BACK}/state"), b"4");
    std::thread::scope(|s| {
        // The peer, as blkback: Closing after the frontend's Closing, Closed (having
        // "unmapped") after its Closed.
        s.spawn(|| {
            let mut xs = Client::new(store.connect(DomId(0)));
            let back = Device::backend(&mut xs, BACK).unwrap();
            back.wait_for_peer(&mut xs, |s| s == XenbusState::Closing, &mut Attempts(100))
                .unwrap();
            back.switch_state(&mut xs, XenbusState::Closing).unwrap();
            back.wait_for_peer(&mut xs, |s| s == XenbusState::Closed, &mut Attempts(100))
                .unwrap();
            back.switch_state(&mut xs, XenbusState::Closed).unwrap();
        });
        let mut states = Vec::new();
        let mut releases = 0;
        let mut release = || {
            releases += 1;
            let own = store_state(&store);
            states.push(own);
            // Released once the peer is Closed (it unmapped).
            store_peer_state(&store) == b"6"
        };
        front
            .close(&mut xs, &mut release, &mut Attempts(100))
            .unwrap();
        assert!(releases >= 1);
        assert!(
            states.iter().all(|s| s == b"6"),
            "released only once Closed"
        );
    });
    assert_eq!(front.state(&mut xs).unwrap(), XenbusState::Closed);
}

fn store_state(store: &MockStore) -> Vec<u8> {
    Client::new(store.connect(DomId(0)))
        .read(&format!("{FRONT}/state"))
        .unwrap()
}

fn store_peer_state(store: &MockStore) -> Vec<u8> {
    Client::new(store.connect(DomId(0)))
        .read(&format!("{BACK}/state"))
        .unwrap_or_default()
}

/// A page of the domU, known to the mock Xen by a frame number.
#[repr(C, align(4096))]
struct TestPage {
    words: [AtomicU32; 1024],
    xen: MockXen,
}

struct Page(Arc<TestPage>);

// SAFETY: the mock knows the page's bytes by this frame (the `Arc` keeps them allocated and in
// place); they are only accessed atomically.
unsafe impl GrantPage for Page {
    fn frame(&self) -> u64 {
        self.0.xen.register_page(self.0.words.as_ptr().cast())
    }
}

impl DevicePage for Page {
    fn mem(&self) -> SharedMem<'_> {
        SharedMem::from_words(&self.0.words)
    }
}

fn table(domu: &MockXen) -> GrantTable<MockXen> {
    let mut frames = [0u64; 1];
    domu.gnttab_setup_table(DomId::SELF, &mut frames).unwrap();
    let frame0 = NonNull::new(domu.frame_address(frames[0]).unwrap()).unwrap();
    // SAFETY: the mock's table frame 0 of the domain, alive as long as the mock; only this
    // table and the mock touch it.
    unsafe { GrantTable::new(domu.clone(), frame0, 1) }.unwrap()
}

#[test]
fn granted_pages_span_a_multi_page_ring() {
    let domu = MockXen::new().domain(DomId(1));
    let table = table(&domu);
    let pages: Vec<Page> = (0..2)
        .map(|_| {
            Page(Arc::new(TestPage {
                words: [const { AtomicU32::new(0) }; 1024],
                xen: domu.clone(),
            }))
        })
        .collect();
    let shared: Vec<Arc<TestPage>> = pages.iter().map(|p| Arc::clone(&p.0)).collect();
    let granted = GrantedPages::grant(&table, DomId(0), pages, false).unwrap();
    assert_eq!(granted.len(), 2);
    assert_eq!(RingMemory::len(&granted), 8192);
    // A write across the page boundary lands in both pages.
    granted.write(4094, &[1, 2, 3, 4]).unwrap();
    let word = |page: usize, index: usize| shared[page].words[index].load(Ordering::Relaxed);
    assert_eq!(word(0, 1023).to_le_bytes()[2..], [1, 2]);
    assert_eq!(word(1, 0).to_le_bytes()[..2], [3, 4]);
    let mut back = [0; 4];
    granted.read(4094, &mut back).unwrap();
    assert_eq!(back, [1, 2, 3, 4]);
    assert!(granted.read(8190, &mut back).is_err(), "past the end");
    granted.store_index(4096, 7, Ordering::Relaxed).unwrap();
    assert_eq!(word(1, 0), 7);
    // A ring of order 1 over them, of 80-byte entries: 64 of them; entry 50 (bytes
    // 64 + 50 * 80 = 4064 .. 4144) crosses into the second page.
    let mut ring = FrontRing::<[u64; 10], [u64; 2], _>::init(granted, 1).unwrap();
    assert_eq!(ring.size(), 64);
    for i in 0..64u64 {
        ring.start_request(&[i; 10]).unwrap();
    }
    let granted = ring.into_memory();
    let mut entry = [0u8; 80];
    granted.read(64 + 50 * 80, &mut entry).unwrap();
    assert!(entry.chunks(8).all(|w| w == 50u64.to_ne_bytes()));
    assert_eq!(
        word(0, 1016),
        50,
        "the entry's first word, in the first page"
    );
    assert_eq!(word(1, 0), 50, "its fifth, in the second");
    let refs: Vec<_> = granted.refs().collect();
    assert_eq!(refs.len(), 2);
    assert!(!granted.in_use());
    let pages = granted.end().unwrap();
    assert_eq!(pages.len(), 2);
}
