//! A mock blkback serving a RAM disk: xen-store's mock for xenbus, xen-hypercall's mock Xen for
//! the grant tables (dom0 maps the domU's grants, which pins them as real Xen does), a
//! `BackRing` over the mapped ring page, and an event channel that only counts notifications.

#![allow(dead_code)]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::task::{Context, Poll, Waker};
use xen_blk::abi::{self, Request, Response, RingRequest};
use xen_bus::{Device, DevicePage, XenbusState};

use xen_evtchn::{AsyncEventChannel, DomId, EventChannel, Port, Virq};
use xen_grant::{GrantPage, GrantRef, GrantTable, MapSlot, MappedGrant};
use xen_hypercall::mock::MockXen;
use xen_hypercall::prelude::*;
use xen_shared::{BackRing, SharedMem};
use xen_store::mock::{MockConnection, MockStore};
use xen_store::{Client, Store};
use zerocopy::IntoBytes;

/// The domU.
pub(crate) const DOMU: DomId = DomId(1);
/// Its disk's frontend directory.
pub(crate) const FRONT: &str = "/local/domain/1/device/vbd/768";
/// The backend's.
pub(crate) const BACK: &str = "/local/domain/0/backend/vbd/1/768";

/// How many spins a test waits for the backend before giving up (a hung test fails instead).
pub(crate) const SPINS: u32 = if cfg!(miri) { 20_000 } else { 2_000_000 };

/// A page of the domU, known to the mock Xen by a frame number.
#[repr(C, align(4096))]
pub(crate) struct TestPage {
    words: [AtomicU32; 1024],
    xen: MockXen,
}

/// A share of a [`TestPage`]: what the frontend is given.
#[derive(Clone)]
pub(crate) struct Page(pub(crate) Arc<TestPage>);

impl Page {
    pub(crate) fn new(xen: &MockXen) -> Self {
        Self(Arc::new(TestPage {
            words: [const { AtomicU32::new(0) }; 1024],
            xen: xen.clone(),
        }))
    }
}

// SAFETY: the mock knows the page's bytes by this frame (the `Arc` keeps them allocated and in
// place while any share lives, a leaked grant's too); they are only accessed atomically, by the
// tests (through `SharedMem`) and the mock.
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

/// Where dom0 maps a domU page: the mock maps nothing itself and tells where the page is.
#[derive(Debug)]
pub(crate) struct Slot {
    xen: MockXen,
    host_addr: u64,
}

// SAFETY: the mock keeps nothing at `host_addr`; while a page is mapped there, `page` is the
// granted page itself (alive while granted, accessed atomically).
unsafe impl MapSlot for Slot {
    fn host_addr(&self) -> u64 {
        self.host_addr
    }

    fn page(&self) -> NonNull<u8> {
        NonNull::new(
            self.xen
                .mapped_at(self.host_addr)
                .expect("a page is mapped"),
        )
        .unwrap()
    }
}

/// The frontend's event channel: ports numbered from 10, notifications counted.
#[derive(Debug, Default)]
pub(crate) struct Events {
    pub(crate) allocated: AtomicU32,
    pub(crate) notified: AtomicUsize,
    pub(crate) closed: Mutex<Vec<Port>>,
    /// The backend's notification of the frontend's port: pending until a poll of the port
    /// takes it, and the waker of the task waiting for it.
    pub(crate) delivery: Mutex<(bool, Option<Waker>)>,
    /// The backend's notifications.
    pub(crate) signalled: AtomicUsize,
}

impl Events {
    /// The backend notifies the port: it stays pending and the waiting task is woken (as an
    /// event channel's upcall does).
    pub(crate) fn signal(&self) {
        self.signalled.fetch_add(1, Ordering::Relaxed);
        let mut delivery = self.delivery.lock().unwrap();
        delivery.0 = true;
        if let Some(waker) = delivery.1.take() {
            waker.wake();
        }
    }
}

impl AsyncEventChannel for Events {
    fn poll_port(&self, _: Port, cx: &mut Context<'_>) -> Poll<Result<(), xen_evtchn::Error>> {
        let mut delivery = self.delivery.lock().unwrap();
        if std::mem::take(&mut delivery.0) {
            return Poll::Ready(Ok(()));
        }
        delivery.1 = Some(cx.waker().clone());
        Poll::Pending
    }
    fn poll_any(&self, _: &mut Context<'_>) -> Poll<Result<Port, xen_evtchn::Error>> {
        unimplemented!()
    }
    fn forget_port(&self, _: Port) {
        self.delivery.lock().unwrap().1 = None;
    }
}

impl EventChannel for Events {
    fn alloc_unbound_raw(&self, remote: DomId) -> Result<Port, xen_evtchn::Error> {
        assert_eq!(remote, DomId(0), "the port is for the backend");
        Ok(Port(10 + self.allocated.fetch_add(1, Ordering::Relaxed)))
    }
    fn bind_interdomain_raw(&self, _: DomId, _: Port) -> Result<Port, xen_evtchn::Error> {
        unimplemented!()
    }
    fn bind_virq_raw(&self, _: Virq) -> Result<Port, xen_evtchn::Error> {
        unimplemented!()
    }
    fn unbind_raw(&self, port: Port) -> Result<(), xen_evtchn::Error> {
        self.closed.lock().unwrap().push(port);
        Ok(())
    }
    fn notify(&self, _: Port) -> Result<(), xen_evtchn::Error> {
        self.notified.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn unmask(&self, _: Port) -> Result<(), xen_evtchn::Error> {
        Ok(())
    }
    fn take_pending(&self, _: &mut [Port]) -> Result<usize, xen_evtchn::Error> {
        Ok(0)
    }
    fn wait_pending(&self, _: &mut [Port]) -> Result<usize, xen_evtchn::Error> {
        unimplemented!()
    }
}

/// How the backend misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// As Linux's blkback.
    Honest,
    /// Answers the `n`-th request with an id never issued.
    BadId(usize),
    /// Answers the `n`-th request with the id of the one before (answered already).
    DuplicateId(usize),
    /// Publishes an `rsp_prod` 5 past the responses it could give, at the `n`-th request.
    OverflowRspProd(usize),
    /// Answers the `n`-th request with this status.
    Status(usize, i16),
    /// Keeps the `n`-th request's data pages mapped after answering it, until it disconnects.
    KeepMapped(usize),
    /// Answers with random ids, operations and statuses, and now and then a random `rsp_prod`
    /// (xorshift from this seed).
    Random(u64),
}

/// xorshift64*: deterministic, so a failure is reproducible from its seed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The disk's description, as the backend publishes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Disk {
    pub(crate) sectors: u64,
    pub(crate) sector_size: u32,
    pub(crate) read_only: bool,
    pub(crate) flush: bool,
    pub(crate) discard: bool,
    /// `feature-max-indirect-segments` (0: not offered).
    pub(crate) indirect: u32,
    pub(crate) mode: Mode,
}

impl Default for Disk {
    fn default() -> Self {
        Self {
            sectors: if cfg!(miri) { 64 } else { 2048 },
            sector_size: 512,
            read_only: false,
            flush: true,
            discard: true,
            indirect: 0,
            mode: Mode::Honest,
        }
    }
}

/// One domU with its disk, and the mock dom0 serving it.
pub(crate) struct Env {
    pub(crate) dom0: MockXen,
    pub(crate) domu: MockXen,
    pub(crate) store: MockStore,
    pub(crate) table: GrantTable<MockXen>,
    pub(crate) events: Events,
    pub(crate) disk: Disk,
    /// The RAM disk's bytes.
    pub(crate) ram: Mutex<Vec<u8>>,
    /// Requests the backend served, by operation.
    pub(crate) served: Mutex<Vec<u8>>,
    /// The backend stops serving (and goes through its disconnect) once this is set, or when
    /// the frontend goes `Closing`.
    pub(crate) stop: AtomicBool,
    /// Where the backend maps the next data page (each mapping its own place: some are kept).
    next_slot: AtomicU64,
}

impl Env {
    pub(crate) fn new(disk: Disk) -> Self {
        let dom0 = MockXen::new();
        let domu = dom0.domain(DOMU);
        let mut frames = [0u64; 1];
        domu.gnttab_setup_table(DomId::SELF, &mut frames).unwrap();
        let frame0 = NonNull::new(domu.frame_address(frames[0]).unwrap()).unwrap();
        // SAFETY: the mock's table frame 0 of the domU, alive as long as the mock; only this
        // table and the mock touch it.
        let table = unsafe { GrantTable::new(domu.clone(), frame0, 1) }.unwrap();
        let store = MockStore::new();
        let w = |path: &str, value: &str| store.write_as_dom0(path, value.as_bytes());
        w(&format!("{FRONT}/backend"), BACK);
        w(&format!("{FRONT}/backend-id"), "0");
        w(&format!("{FRONT}/state"), "1");
        w(&format!("{BACK}/frontend"), FRONT);
        w(&format!("{BACK}/frontend-id"), "1");
        w(&format!("{BACK}/state"), "1");
        let ram = (0..disk.sectors as usize * 512)
            .map(|i| (i / 512) as u8 ^ 0x5a)
            .collect();
        Self {
            dom0,
            domu,
            store,
            table,
            events: Events::default(),
            disk,
            ram: Mutex::new(ram),
            served: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            next_slot: AtomicU64::new(0x2000_0000),
        }
    }

    pub(crate) fn client(&self) -> Client<MockConnection> {
        Client::new(self.store.connect(DomId(0)))
    }

    pub(crate) fn pages(&self, n: usize) -> Vec<Page> {
        (0..n).map(|_| Page::new(&self.domu)).collect()
    }

    /// A sleep that spins (the backend is another thread), giving up after [`SPINS`].
    pub(crate) fn sleeper() -> impl FnMut() -> bool {
        let mut left = SPINS;
        move || {
            std::thread::yield_now();
            left = left.saturating_sub(1);
            left > 0
        }
    }

    /// The backend, as Linux's blkback: publishes the disk and `InitWait`, maps the ring once
    /// the frontend is `Initialised`, goes `Connected`, serves requests until the frontend goes
    /// `Closing` (or `stop`), then unmaps everything, goes `Closing`, and `Closed` once the
    /// frontend is.
    pub(crate) fn run_backend(&self) {
        let mut xs = self.client();
        let d = self.disk;
        let w = |xs: &mut Client<MockConnection>, key: &str, value: String| {
            xs.write(&format!("{BACK}/{key}"), value.as_bytes())
                .unwrap();
        };
        w(&mut xs, "sectors", d.sectors.to_string());
        w(&mut xs, "sector-size", d.sector_size.to_string());
        w(&mut xs, "info", if d.read_only { "4" } else { "0" }.into());
        w(&mut xs, "mode", if d.read_only { "r" } else { "w" }.into());
        w(&mut xs, "feature-flush-cache", (d.flush as u8).to_string());
        if d.discard {
            w(&mut xs, "feature-discard", "1".into());
        }
        if d.indirect > 0 {
            w(
                &mut xs,
                "feature-max-indirect-segments",
                d.indirect.to_string(),
            );
        }
        let device = Device::backend(&mut xs, BACK).unwrap();
        device.switch_state(&mut xs, XenbusState::InitWait).unwrap();
        let mut bound = xen_bus::Attempts(1000);
        device
            .wait_for_peer_ready(&mut xs, XenbusState::Initialised, &mut bound)
            .unwrap();
        let ring_ref = device.read_peer_u64(&mut xs, "ring-ref").unwrap().unwrap();
        assert!(
            device
                .read_peer_u64(&mut xs, "event-channel")
                .unwrap()
                .is_some()
        );
        let ring_map = MappedGrant::map(
            &self.dom0,
            DOMU,
            GrantRef(ring_ref as u32),
            Slot {
                xen: self.dom0.clone(),
                host_addr: 0x1000_0000,
            },
            false,
        )
        .unwrap();
        let mut ring =
            BackRing::<RingRequest, Response, _>::init(ring_map.mem().unwrap(), 0).unwrap();
        device
            .switch_state(&mut xs, XenbusState::Connected)
            .unwrap();
        let mut kept = Vec::new();
        let mut count = 0;
        let mut previous_id = None;
        let mut idle = 0u32;
        let mut rng = Rng(match d.mode {
            Mode::Random(seed) => seed | 1,
            _ => 1,
        });
        loop {
            let mut served = false;
            while let Ok(Some(request)) = ring.next_request() {
                served = true;
                let (id, mut rsp, mapped) = self.serve(&request);
                match d.mode {
                    Mode::BadId(n) if n == count => rsp.id = 1000 + id,
                    Mode::DuplicateId(n) if n == count => rsp.id = previous_id.unwrap(),
                    Mode::Status(n, status) if n == count => rsp.status = status,
                    Mode::KeepMapped(n) if n == count => kept.extend(mapped),
                    Mode::Random(_) => {
                        match rng.below(8) {
                            0 => rsp.id = rng.below(40),
                            1 => rsp.operation = rng.below(8) as u8,
                            2 => rsp.status = rng.next() as i16,
                            _ => {}
                        }
                        drop(mapped);
                    }
                    _ => drop(mapped),
                }
                previous_id = Some(id);
                ring.start_response(&rsp).unwrap();
                let random_prod = matches!(d.mode, Mode::Random(_)) && rng.below(16) == 0;
                if random_prod || matches!(d.mode, Mode::OverflowRspProd(n) if n == count) {
                    if ring.push_responses().unwrap() {
                        self.events.signal();
                    }
                    let mem = ring.memory();
                    let prod = mem.atomic::<AtomicU32>(8).unwrap();
                    let by = if random_prod { rng.next() as u32 } else { 5 };
                    prod.fetch_add(by, Ordering::Release);
                } else if ring.push_responses().unwrap() {
                    // `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`: only when the frontend asked.
                    self.events.signal();
                }
                count += 1;
            }
            if served {
                idle = 0;
                continue;
            }
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            // Idle: look at the frontend's state now and then.
            idle += 1;
            if idle % 64 == 0 && device.peer_state(&mut xs).unwrap().is_closing() {
                break;
            }
            std::thread::yield_now();
        }
        // Close as Linux's blkback does (`frontend_changed`): `Closing` when the frontend is,
        // and only once it is `Closed`, disconnect (unmap everything) and go `Closed`.
        let mut bound = xen_bus::Attempts(1000);
        device
            .wait_for_peer(&mut xs, |s| s.is_closing(), &mut bound)
            .unwrap();
        device.switch_state(&mut xs, XenbusState::Closing).unwrap();
        let mut bound = xen_bus::Attempts(1000);
        device
            .wait_for_peer(&mut xs, |s| s == XenbusState::Closed, &mut bound)
            .unwrap();
        drop(kept);
        drop(ring_map);
        device.switch_state(&mut xs, XenbusState::Closed).unwrap();
    }

    fn slot(&self, host_addr: u64) -> Slot {
        Slot {
            xen: self.dom0.clone(),
            host_addr,
        }
    }

    /// Serves one request against the RAM disk: its response, and its data mappings.
    fn serve(&self, slot: &RingRequest) -> (u64, Response, Vec<MappedGrant<'_, MockXen, Slot>>) {
        let op = slot.operation();
        self.served.lock().unwrap().push(op);
        let mut mapped = Vec::new();
        let rw = match op {
            abi::OP_READ | abi::OP_WRITE => {
                let r: Request = slot.get();
                let n = (r.nr_segments as usize).min(abi::MAX_SEGMENTS);
                Some((op, r.id, r.sector_number, r.seg[..n].to_vec()))
            }
            abi::OP_INDIRECT => {
                let r: abi::IndirectRequest = slot.get();
                let mut segs = vec![abi::Segment::default(); r.nr_segments as usize];
                let lists = segs.chunks_mut(abi::SEGMENTS_PER_INDIRECT_PAGE);
                for (chunk, gref) in lists.zip(r.indirect_grefs) {
                    let list = MappedGrant::map(
                        &self.dom0,
                        DOMU,
                        GrantRef(gref),
                        self.slot(self.next_slot.fetch_add(4096, Ordering::Relaxed)),
                        true,
                    )
                    .unwrap();
                    list.read(0, chunk.as_mut_bytes()).unwrap();
                }
                Some((r.indirect_op, r.id, r.sector_number, segs))
            }
            _ => None,
        };
        let (id, status, op) = match (op, rw) {
            (_, Some((op, id, sector, segs))) => {
                let mut ram = self.ram.lock().unwrap();
                let mut at = sector as usize * 512;
                let mut status = abi::RSP_OKAY;
                for seg in &segs {
                    let map = MappedGrant::map(
                        &self.dom0,
                        DOMU,
                        GrantRef(seg.gref),
                        self.slot(self.next_slot.fetch_add(4096, Ordering::Relaxed)),
                        op == abi::OP_WRITE,
                    );
                    let Ok(map) = map else {
                        status = abi::RSP_ERROR;
                        break;
                    };
                    let first = seg.first_sect as usize * 512;
                    let len = (seg.last_sect as usize + 1) * 512 - first;
                    if at + len > ram.len() {
                        status = abi::RSP_ERROR;
                        break;
                    }
                    if op == abi::OP_READ {
                        map.mem().unwrap().write(first, &ram[at..at + len]).unwrap();
                    } else {
                        map.read(first, &mut ram[at..at + len]).unwrap();
                    }
                    at += len;
                    mapped.push(map);
                }
                (id, status, op)
            }
            (abi::OP_FLUSH_DISKCACHE, None) => (slot.get::<Request>().id, abi::RSP_OKAY, op),
            (abi::OP_DISCARD, None) => {
                let r: abi::DiscardRequest = slot.get();
                let mut ram = self.ram.lock().unwrap();
                let start = r.sector_number as usize * 512;
                let end = start + r.nr_sectors as usize * 512;
                ram[start..end].fill(0);
                (r.id, abi::RSP_OKAY, op)
            }
            _ => (slot.id(), abi::RSP_EOPNOTSUPP, op),
        };
        let rsp = Response {
            id,
            operation: op,
            status,
            ..Default::default()
        };
        (id, rsp, mapped)
    }
}
