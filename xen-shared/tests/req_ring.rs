//! The request/response ring (`io/ring.h`): front and back over one page and over 4 pages,
//! across the 2^32 wrap, notification decisions against a transcription of the C macros, a
//! hostile peer, and the two halves on two threads. Deterministic (seeded); fewer rounds
//! under Miri.

mod support {
    pub(crate) mod req_peer;
    pub(crate) mod rng;
}

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use support::req_peer::{Hostile, Outcomes, Req, Rsp, back_step, front_step, req};
use support::rng::Rng;
use xen_shared::req_ring::{HEADER_SIZE, entry_size, ring_entries};
use xen_shared::{
    BackRing, FrontRing, InFlight, PAGE_SIZE, ReqRingError, ShapeError, SharedMem, SharedPage,
    UnknownId,
};
use zerocopy::FromZeros;

/// The response an honest back end gives to `r`.
fn rsp_for(r: &Req) -> Rsp {
    Rsp {
        id: r.id,
        status: r.body[25] as i32,
        pad: 0,
    }
}

type Front<'a> = FrontRing<Req, Rsp, SharedMem<'a>>;
type Back<'a> = BackRing<Req, Rsp, SharedMem<'a>>;

const ROUNDS: usize = if cfg!(miri) { 3 } else { 100 };
const OPS: usize = if cfg!(miri) { 30 } else { 500 };

fn words(pages: usize) -> Vec<AtomicU32> {
    (0..pages * PAGE_SIZE / 4)
        .map(|_| AtomicU32::new(0))
        .collect()
}

fn index(mem: SharedMem<'_>, offset: usize) -> &AtomicU32 {
    mem.atomic::<AtomicU32>(offset).unwrap()
}

#[test]
fn sizes_follow_const_ring_size() {
    assert_eq!(entry_size::<Req, Rsp>(), 112);
    // blkif on one page: (4096 - 64) / 112 = 36, rounded down to 32; on 4 pages 145 -> 128.
    assert_eq!(ring_entries(112, PAGE_SIZE), 32);
    assert_eq!(ring_entries(112, 4 * PAGE_SIZE), 128);
    // netif tx (12-byte requests, 4-byte responses): 336 -> 256; rx (8/8): 504 -> 256.
    assert_eq!(entry_size::<[u32; 3], u32>(), 12);
    assert_eq!(ring_entries(12, PAGE_SIZE), 256);
    assert_eq!(ring_entries(8, PAGE_SIZE), 256);
    // A union is as large as its larger member, rounded up to its larger alignment.
    assert_eq!(entry_size::<[u32; 3], u64>(), 16);
    assert_eq!(ring_entries(4096, PAGE_SIZE), 0);
    assert_eq!(ring_entries(1, HEADER_SIZE), 0);
    let page = SharedPage::new();
    assert_eq!(Front::init(page.mem(), 0).unwrap().size(), 32);
    assert_eq!(
        Front::init(page.mem(), 1).unwrap_err(),
        ShapeError::TooShort {
            order: 1,
            needed: 8192,
            len: 4096
        }
    );
    assert_eq!(
        Back::init(page.mem(), 200).unwrap_err(),
        ShapeError::OrderTooLarge(200)
    );
    assert!(matches!(
        FrontRing::<[u8; 4096], u8, _>::init(page.mem(), 0),
        Err(ShapeError::NoEntry { .. })
    ));
    let four = words(4);
    let mem = SharedMem::from_words(&four);
    assert_eq!(Back::init(mem, 2).unwrap().size(), 128);
}

#[test]
fn init_writes_the_shared_header() {
    let page = SharedPage::new();
    let mem = page.mem();
    mem.write(0, &[0xff; 64]).unwrap();
    Front::init_at(mem, 0, 7).unwrap();
    let mut header = [0u8; 64];
    mem.read(0, &mut header).unwrap();
    let word = |i: usize| u32::from_ne_bytes(header[i..i + 4].try_into().unwrap());
    assert_eq!([word(0), word(4), word(8), word(12)], [7, 8, 7, 8]);
    assert!(header[16..].iter().all(|b| *b == 0));
}

/// Fills the ring, answers everything, drains the answers, many times: every request is
/// answered exactly once, in order, with its own payload.
fn exchange(mem: SharedMem<'_>, order: u8, start: u32, rounds: usize) {
    let mut front = Front::init_at(mem, order, start).unwrap();
    let mut back = Back::attach(mem, order, start).unwrap();
    let size = front.size();
    let mut next_id = 0u64;
    let mut expected = next_id;
    for round in 0..rounds {
        // Vary the depth: from one request up to a full ring.
        let depth = 1 + (round * 7) as u32 % size;
        for _ in 0..depth {
            front.start_request(&req(next_id)).unwrap();
            next_id += 1;
        }
        assert_eq!(front.free_requests(), size - depth);
        front.push_requests().unwrap();
        assert_eq!(back.unconsumed_requests().unwrap(), depth);
        while let Some(r) = back.next_request().unwrap() {
            back.start_response(&rsp_for(&r)).unwrap();
        }
        assert_eq!(
            back.start_response(&rsp_for(&req(0))),
            Err(ReqRingError::NoRequestToAnswer)
        );
        back.push_responses().unwrap();
        while let Some(r) = front.next_response().unwrap() {
            assert_eq!(r, rsp_for(&req(expected)));
            expected += 1;
        }
        assert_eq!(expected, next_id);
        assert_eq!(front.free_requests(), size);
    }
}

#[test]
fn front_and_back_exchange_over_one_page() {
    let page = SharedPage::new();
    exchange(page.mem(), 0, 0, ROUNDS);
}

#[test]
fn front_and_back_exchange_over_four_pages() {
    let pages = words(4);
    exchange(SharedMem::from_words(&pages), 2, 0, ROUNDS);
}

#[test]
fn the_indices_wrap_at_two_to_the_32() {
    let page = SharedPage::new();
    exchange(page.mem(), 0, u32::MAX - 40, ROUNDS);
    let pages = words(4);
    exchange(SharedMem::from_words(&pages), 2, u32::MAX - 3, ROUNDS);
}

#[test]
fn a_full_ring_refuses_a_request_and_frees_slots_per_consumed_response() {
    let page = SharedPage::new();
    let mut front = Front::init_at(page.mem(), 0, u32::MAX - 5).unwrap();
    let mut back = Back::attach(page.mem(), 0, u32::MAX - 5).unwrap();
    for id in 0..32 {
        front.start_request(&req(id)).unwrap();
    }
    assert!(front.is_full());
    assert_eq!(front.start_request(&req(99)), Err(ReqRingError::Full));
    front.push_requests().unwrap();
    // The back answers one; the slot frees only once the front consumed that response.
    let first = back.next_request().unwrap().unwrap();
    back.start_response(&rsp_for(&first)).unwrap();
    back.push_responses().unwrap();
    assert!(front.is_full());
    assert_eq!(front.in_flight(), 32);
    assert_eq!(front.next_response().unwrap(), Some(rsp_for(&req(0))));
    assert_eq!(front.free_requests(), 1);
    front.start_request(&req(32)).unwrap();
    assert_eq!(front.start_request(&req(33)), Err(ReqRingError::Full));
}

/// `DEFINE_RING_TYPES` and its macros, transcribed from `io/ring.h` over plain integers: the
/// model the notification decisions are checked against.
#[derive(Debug)]
struct CModel {
    // struct NAME_sring
    req_prod: u32,
    req_event: u32,
    rsp_prod: u32,
    rsp_event: u32,
    // struct NAME_front_ring
    req_prod_pvt: u32,
    rsp_cons: u32,
    // struct NAME_back_ring
    rsp_prod_pvt: u32,
    req_cons: u32,
    nr_ents: u32,
}

impl CModel {
    /// SHARED_RING_INIT + FRONT_RING_ATTACH + BACK_RING_ATTACH at `i`.
    fn new(i: u32, nr_ents: u32) -> Self {
        Self {
            req_prod: i,
            rsp_prod: i,
            req_event: i.wrapping_add(1),
            rsp_event: i.wrapping_add(1),
            req_prod_pvt: i,
            rsp_cons: i,
            rsp_prod_pvt: i,
            req_cons: i,
            nr_ents,
        }
    }
    fn free_requests(&self) -> u32 {
        self.nr_ents - self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }
    fn has_unconsumed_responses(&self) -> u32 {
        self.rsp_prod.wrapping_sub(self.rsp_cons)
    }
    fn has_unconsumed_requests(&self) -> u32 {
        let req = self.req_prod.wrapping_sub(self.req_cons);
        let rsp = self.nr_ents - self.req_cons.wrapping_sub(self.rsp_prod_pvt);
        req.min(rsp)
    }
    fn push_requests_and_check_notify(&mut self) -> bool {
        let old = self.req_prod;
        let new = self.req_prod_pvt;
        self.req_prod = new;
        new.wrapping_sub(self.req_event) < new.wrapping_sub(old)
    }
    fn push_responses_and_check_notify(&mut self) -> bool {
        let old = self.rsp_prod;
        let new = self.rsp_prod_pvt;
        self.rsp_prod = new;
        new.wrapping_sub(self.rsp_event) < new.wrapping_sub(old)
    }
    fn final_check_for_requests(&mut self) -> bool {
        if self.has_unconsumed_requests() != 0 {
            return true;
        }
        self.req_event = self.req_cons.wrapping_add(1);
        self.has_unconsumed_requests() != 0
    }
    fn final_check_for_responses(&mut self) -> bool {
        if self.has_unconsumed_responses() != 0 {
            return true;
        }
        self.rsp_event = self.rsp_cons.wrapping_add(1);
        self.has_unconsumed_responses() != 0
    }
}

#[test]
fn notification_decisions_match_the_c_macros() {
    let mut rng = Rng(11);
    let mut notified = [0usize; 2];
    for round in 0..ROUNDS {
        let page = SharedPage::new();
        let mem = page.mem();
        let start = match round % 3 {
            0 => 0,
            1 => u32::MAX - rng.below(100) as u32,
            _ => rng.next() as u32,
        };
        let mut front = Front::init_at(mem, 0, start).unwrap();
        let mut back = Back::attach(mem, 0, start).unwrap();
        let mut c = CModel::new(start, front.size());
        for _ in 0..OPS {
            match rng.below(6) {
                0 => {
                    for _ in 0..rng.below(6) {
                        if c.free_requests() == 0 {
                            assert!(front.is_full());
                            break;
                        }
                        front.start_request(&req(0)).unwrap();
                        c.req_prod_pvt = c.req_prod_pvt.wrapping_add(1);
                    }
                    let notify = front.push_requests().unwrap();
                    assert_eq!(notify, c.push_requests_and_check_notify());
                    notified[0] += usize::from(notify);
                }
                1 => {
                    for _ in 0..rng.below(6) {
                        let got = back.next_request().unwrap();
                        assert_eq!(got.is_some(), c.has_unconsumed_requests() != 0);
                        if got.is_none() {
                            break;
                        }
                        c.req_cons = c.req_cons.wrapping_add(1);
                    }
                }
                2 => {
                    for _ in 0..rng.below(6) {
                        if c.req_cons == c.rsp_prod_pvt {
                            break;
                        }
                        back.start_response(&Rsp::new_zeroed()).unwrap();
                        c.rsp_prod_pvt = c.rsp_prod_pvt.wrapping_add(1);
                    }
                    let notify = back.push_responses().unwrap();
                    assert_eq!(notify, c.push_responses_and_check_notify());
                    notified[1] += usize::from(notify);
                }
                3 => {
                    for _ in 0..rng.below(6) {
                        let got = front.next_response().unwrap();
                        assert_eq!(got.is_some(), c.has_unconsumed_responses() != 0);
                        if got.is_none() {
                            break;
                        }
                        c.rsp_cons = c.rsp_cons.wrapping_add(1);
                    }
                }
                4 => assert_eq!(
                    back.final_check_for_requests().unwrap(),
                    c.final_check_for_requests()
                ),
                _ => assert_eq!(
                    front.final_check_for_responses().unwrap(),
                    c.final_check_for_responses()
                ),
            }
            assert_eq!(front.free_requests(), c.free_requests());
            assert_eq!(index(mem, 4).load(Ordering::Relaxed), c.req_event);
            assert_eq!(index(mem, 12).load(Ordering::Relaxed), c.rsp_event);
        }
    }
    // Both answers of both pushes must have come up, or the test proved little.
    assert!(notified.iter().all(|n| *n > 0), "{notified:?}");
}

impl support::req_peer::Chaos for Rng {
    fn next(&mut self) -> u64 {
        Rng::next(self)
    }
}

/// The outcome counts of hostile rounds must show every kind, or the test proved little.
fn check_outcomes(o: &Outcomes) {
    assert!(o.rejected > 0 && o.moved > 0, "{o:?}");
}

#[test]
fn a_hostile_back_end_gets_typed_errors_and_never_an_out_of_bounds_access() {
    let mut outcomes = Outcomes::default();
    for round in 0..ROUNDS {
        let page = SharedPage::new();
        let start = [0, u32::MAX - 3][round % 2];
        let peer = Hostile::back(page.mem(), Rng(round as u64), start);
        let mut front = FrontRing::<Req, Rsp, _>::attach(&peer, 0, start).unwrap();
        let mut rng = Rng(1000 + round as u64);
        for _ in 0..OPS {
            front_step(&peer, &mut front, rng.next() as u8, &mut outcomes);
        }
    }
    check_outcomes(&outcomes);
}

#[test]
fn a_hostile_front_end_gets_typed_errors_and_never_an_out_of_bounds_access() {
    let mut outcomes = Outcomes::default();
    for round in 0..ROUNDS {
        let page = SharedPage::new();
        let start = [0, u32::MAX - 3][round % 2];
        let peer = Hostile::front(page.mem(), Rng(round as u64), start);
        let mut back = BackRing::<Req, Rsp, _>::attach(&peer, 0, start).unwrap();
        let mut rng = Rng(2000 + round as u64);
        for _ in 0..OPS {
            back_step(&peer, &mut back, rng.next() as u8, &mut outcomes);
        }
    }
    check_outcomes(&outcomes);
}

#[test]
fn impossible_producer_indices_are_refused() {
    let page = SharedPage::new();
    let mem = page.mem();
    let mut front = Front::init_at(mem, 0, u32::MAX - 1).unwrap();
    let mut back = Back::attach(mem, 0, u32::MAX - 1).unwrap();
    for id in 0..3 {
        front.start_request(&req(id)).unwrap();
    }
    front.push_requests().unwrap();
    // Four responses to three requests.
    index(mem, 8).store(2, Ordering::Release);
    assert_eq!(
        front.next_response(),
        Err(ReqRingError::ProducerOverflow {
            prod: 2,
            cons: u32::MAX - 1,
            max: 3
        })
    );
    // A front claiming a whole ring more than it could have written.
    index(mem, 0).store(31, Ordering::Release);
    assert!(matches!(
        back.next_request(),
        Err(ReqRingError::ProducerOverflow { max: 32, .. })
    ));
    // Exactly a ring's worth is legal.
    index(mem, 0).store(30, Ordering::Release);
    assert_eq!(back.unconsumed_requests(), Ok(32));
    for _ in 0..3 {
        let r = back.next_request().unwrap().unwrap();
        back.start_response(&rsp_for(&r)).unwrap();
    }
    back.push_responses().unwrap();
    // A front moving its index behind what was consumed.
    index(mem, 0).store(u32::MAX - 1, Ordering::Release);
    // Requests already seen are still taken (their contents are whatever the front wrote).
    assert!(back.next_request().unwrap().is_some());
    let err = back.unconsumed_requests().unwrap_err();
    assert!(matches!(err, ReqRingError::ProducerOverflow { prod, .. } if prod == u32::MAX - 1));
    // A back moving its index behind the responses consumed.
    assert_eq!(front.next_response().unwrap().map(|r| r.id), Some(0));
    index(mem, 8).store(u32::MAX - 1, Ordering::Release);
    assert!(front.next_response().unwrap().is_some()); // still the batch read before
    assert!(front.next_response().unwrap().is_some());
    assert!(matches!(
        front.next_response(),
        Err(ReqRingError::ProducerOverflow { .. })
    ));
    // Garbage event indices only change whether to notify.
    index(mem, 4).store(0xdead_beef, Ordering::Release);
    index(mem, 12).store(0x1234_5678, Ordering::Release);
    front.start_request(&req(9)).unwrap();
    assert!(front.push_requests().is_ok());
    assert_eq!(front.free_requests(), 32 - 1);
}

#[test]
fn in_flight_ids_are_checked() {
    let mut table = InFlight::<&str, 4>::new();
    assert!(table.is_empty());
    let a = table.insert("a").unwrap();
    let b = table.insert("b").unwrap();
    assert_eq!((a, b), (0, 1));
    table.insert("c").unwrap();
    table.insert("d").unwrap();
    assert_eq!(table.insert("e"), Err("e"));
    assert_eq!(table.remove(u64::from(b)), Ok("b"));
    assert_eq!(table.remove(u64::from(b)), Err(UnknownId(1)));
    assert_eq!(table.remove(4), Err(UnknownId(4)));
    assert_eq!(table.remove(u64::MAX), Err(UnknownId(u64::MAX)));
    assert_eq!(table.get(0), Some(&"a"));
    assert_eq!(table.get(1), None);
    assert_eq!(table.insert("f"), Ok(1));
    assert_eq!(table.len(), 4);
}

/// An event channel's pending bit between two threads: `notify` sets it, `wait` waits for it
/// (until a deadline) and clears it. A notification sent before the wait is not lost.
struct Doorbell {
    pending: Mutex<bool>,
    rung: Condvar,
}

impl Doorbell {
    fn new() -> Self {
        Self {
            pending: Mutex::new(false),
            rung: Condvar::new(),
        }
    }
    fn notify(&self) {
        *self.pending.lock().unwrap() = true;
        self.rung.notify_one();
    }
    fn wait(&self, who: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut pending = self.pending.lock().unwrap();
        while !*pending {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("{who}: no notification within 20 s: a lost wake-up"));
            pending = self.rung.wait_timeout(pending, left).unwrap().0;
        }
        *pending = false;
    }
}

#[test]
fn front_and_back_on_two_threads_lose_no_notification() {
    let total: u64 = if cfg!(miri) { 60 } else { 200_000 };
    let pages = words(4);
    let mem = SharedMem::from_words(&pages);
    let start = u32::MAX - 100;
    let mut front = Front::init_at(mem, 2, start).unwrap();
    let mut back = Back::attach(mem, 2, start).unwrap();
    let (to_back, to_front) = (Doorbell::new(), Doorbell::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut answered = 0;
            while answered < total {
                let mut any = false;
                while let Some(r) = back.next_request().unwrap() {
                    back.start_response(&rsp_for(&r)).unwrap();
                    answered += 1;
                    any = true;
                }
                if any && back.push_responses().unwrap() {
                    to_front.notify();
                }
                if !any && answered < total && !back.final_check_for_requests().unwrap() {
                    to_back.wait("back");
                }
            }
        });
        let mut table = InFlight::<u64, 128>::new();
        let (mut sent, mut received) = (0u64, 0u64);
        while received < total {
            let mut started = false;
            while sent < total && !front.is_full() {
                // The id the ring carries is the table's; the payload is the sequence number.
                let id = table.insert(sent).unwrap();
                let mut r = req(sent);
                r.id = u64::from(id);
                r.body[25] = sent as u32;
                front.start_request(&r).unwrap();
                sent += 1;
                started = true;
            }
            if started && front.push_requests().unwrap() {
                to_back.notify();
            }
            let mut any = false;
            while let Some(rsp) = front.next_response().unwrap() {
                let seq = table.remove(rsp.id).unwrap();
                assert_eq!(seq, received, "responses come in order");
                assert_eq!(rsp.status, seq as u32 as i32);
                received += 1;
                any = true;
            }
            // Slots freed: queue more before waiting.
            if !any && received < total && !front.final_check_for_responses().unwrap() {
                to_front.wait("front");
            }
        }
        assert!(table.is_empty());
    });
}
