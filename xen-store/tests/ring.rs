//! The blocking client over the shared xenstore ring (`xen-shared`'s byte ring), with a daemon
//! thread pumping the page to the in-process server; and a daemon writing impossible indices.
//! Also under Miri.
#![cfg(feature = "mock")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use xen_shared::{RingLayout, SharedPage};
use xen_store::mock::{MockRingServer, MockStore, OUTSTANDING_QUOTA};
use xen_store::ring::{Doorbell, RingTransport};
use xen_store::{Access, Client, DomId, Error, Perm, ProtocolError, Store};

/// Counts notifications; waiting just yields (the test's daemon polls the page), and gives
/// up (`TimedOut`) after a deadline: a deadlock fails, it never hangs.
#[derive(Clone)]
struct Bell(Arc<AtomicUsize>, std::time::Instant);

impl Default for Bell {
    fn default() -> Self {
        Self(Arc::default(), std::time::Instant::now())
    }
}

impl Doorbell for Bell {
    fn notify(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn wait(&mut self) -> Result<(), embedded_io::ErrorKind> {
        if self.1.elapsed() > std::time::Duration::from_secs(if cfg!(miri) { 600 } else { 10 }) {
            return Err(embedded_io::ErrorKind::TimedOut);
        }
        std::thread::yield_now();
        Ok(())
    }
}

/// Serves the page as xenstored would, for domain `domid`, until `stop`.
fn daemon(page: &SharedPage, store: &MockStore, domid: DomId, stop: &AtomicBool) {
    let mut server = MockRingServer::new(store, page.mem(), domid, OUTSTANDING_QUOTA).unwrap();
    while !stop.load(Ordering::Relaxed) {
        if !server.pump() {
            std::thread::yield_now();
        }
    }
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn a_guest_client_over_the_ring() {
    let page = SharedPage::new();
    let store = MockStore::new();
    // As the toolstack does: the domain's home, owned by the domain.
    let mut dom0 = Client::new(store.connect(DomId(0)));
    dom0.write("/local/domain/7/name", b"guest-7").unwrap();
    for node in ["/local/domain/7", "/local/domain/7/name"] {
        dom0.set_perms(node, &[Perm::new(DomId(7), Access::None)])
            .unwrap();
    }
    let stop = AtomicBool::new(false);
    let bell = Bell::default();
    std::thread::scope(|s| {
        s.spawn(|| daemon(&page, &store, DomId(7), &stop));
        // Stops the daemon however this thread leaves the scope (a failed assertion too).
        let _stop = StopOnDrop(&stop);
        let mut xs = Client::new(RingTransport::new(page.mem(), bell.clone()).unwrap());
        // Relative paths resolve under the domain's home.
        assert_eq!(xs.read_string("name").unwrap(), "guest-7");
        // More than a ring's worth in flight, and values larger than the ring.
        let big = vec![b'x'; 3000];
        xs.write("data/big", &big).unwrap();
        assert_eq!(xs.read("data/big").unwrap(), big);
        let tickets: Vec<_> = (0..40)
            .map(|i| {
                xs.submit(xen_store::op::write(&format!("data/{i}"), b"v").unwrap(), 0)
                    .unwrap()
            })
            .collect();
        for ticket in tickets {
            xs.wait(ticket).unwrap();
        }
        assert_eq!(xs.directory("data").unwrap().len(), 41);
        let watch = xs.watch("data/w").unwrap();
        assert_eq!(xs.next_event().unwrap().path, "data/w");
        store.write_as_dom0("/local/domain/7/data/w", b"1");
        let event = xs.next_event().unwrap();
        assert_eq!((event.watch, event.path.as_str()), (watch, "data/w"));
    });
    assert!(bell.0.load(Ordering::Relaxed) > 0);
}

/// More requests queued than the rings and xenstored's quota of outstanding replies hold:
/// flushing them must take replies as it goes, or the daemon stops reading and the guest
/// waits for room forever.
#[test]
fn many_queued_requests_do_not_deadlock_against_the_quota() {
    let page = SharedPage::new();
    let store = MockStore::new();
    let mut dom0 = Client::new(store.connect(DomId(0)));
    // Long replies: a few fill the response ring, then the quota counts (shorter under
    // Miri, where each byte through the ring costs much).
    let value = vec![b'v'; if cfg!(miri) { 100 } else { 500 }];
    dom0.write("/local/domain/7/v", &value).unwrap();
    for node in ["/local/domain/7", "/local/domain/7/v"] {
        dom0.set_perms(node, &[Perm::new(DomId(7), Access::None)])
            .unwrap();
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| daemon(&page, &store, DomId(7), &stop));
        let _stop = StopOnDrop(&stop);
        let mut xs = Client::new(RingTransport::new(page.mem(), Bell::default()).unwrap());
        // At most 9 in the response ring, 20 outstanding, ~56 in the request ring: 100 is
        // past all.
        let tickets: Vec<_> = (0..100)
            .map(|_| xs.queue(xen_store::op::read("v").unwrap(), 0).unwrap())
            .collect();
        xs.flush().unwrap();
        for ticket in tickets {
            assert_eq!(xs.wait(ticket).unwrap(), value);
        }
    });
}

/// The daemon gave up on the ring (`error` set): a typed error, not a wait until a deadline.
#[test]
fn an_error_the_daemon_posts_on_the_page_is_a_typed_error() {
    use xen_store::ring::RingTransportError;
    let page = SharedPage::new();
    // `struct xenstore_domain_interface`: after the two rings and four indices,
    // `server_features`, `connection`, `error`.
    let error_field = 2 * 1024 + 4 * 4 + 2 * 4;
    page.mem()
        .atomic::<AtomicU32>(error_field)
        .unwrap()
        .store(2, Ordering::Relaxed);
    let mut xs = Client::new(RingTransport::new(page.mem(), Impatient).unwrap());
    let error = xs.read("name").unwrap_err();
    assert!(
        matches!(error, Error::RingAborted(RingTransportError::Daemon(2))),
        "{error:?}"
    );
    assert_eq!(error.kind(), xen_store::ErrorKind::Disconnected);
    let page = SharedPage::new();
    page.mem()
        .atomic::<AtomicU32>(error_field - 4)
        .unwrap()
        .store(1, Ordering::Relaxed);
    let mut xs = Client::new(RingTransport::new(page.mem(), Impatient).unwrap());
    let error = xs.read("name").unwrap_err();
    assert!(
        matches!(error, Error::RingAborted(RingTransportError::Reconnecting)),
        "{error:?}"
    );
}

/// Gives up at once: a daemon that never answers.
struct Impatient;

impl Doorbell for Impatient {
    fn notify(&mut self) {}
    fn wait(&mut self) -> Result<(), embedded_io::ErrorKind> {
        Err(embedded_io::ErrorKind::TimedOut)
    }
}

#[test]
fn a_doorbell_that_gives_up_fails_the_request() {
    let page = SharedPage::new();
    let mut xs = Client::new(RingTransport::new(page.mem(), Impatient).unwrap());
    let error = xs.read("name").unwrap_err();
    assert!(
        matches!(error, Error::Transport(embedded_io::ErrorKind::TimedOut)),
        "{error:?}"
    );
}

#[test]
fn impossible_indices_from_the_daemon_are_a_typed_error() {
    let page = SharedPage::new();
    // The daemon claims more reply bytes than the ring holds.
    page.mem()
        .atomic::<AtomicU32>(RingLayout::XENSTORE_RSP.prod)
        .unwrap()
        .store(5000, Ordering::Relaxed);
    let mut xs = Client::new(RingTransport::new(page.mem(), Bell::default()).unwrap());
    let error = xs.read("name").unwrap_err();
    assert!(
        matches!(error, Error::Protocol(ProtocolError::RingIndices)),
        "{error:?}"
    );
    assert!(xs.read("name").is_err());
}
