//! A hostile peer of the request/response ring, shared by the tests and the libFuzzer target:
//! ring memory whose peer moves before every index load and after every store, as a source of
//! chaos decides (its producer index anywhere, near the legal limit or behind; its event index
//! to garbage; a scribbled entry). It counts the loads of the peer's producer index per
//! operation, remembers the last value, and refuses any byte access outside the entry array
//! (and the header's padding). [`front_step`] and [`back_step`] run one operation of a half
//! and judge it.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU32, Ordering};

use xen_shared::req_ring::HEADER_SIZE;
use xen_shared::{AccessError, BackRing, FrontRing, ReqRingError, RingMemory, SharedMem};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// A request shaped like blkif's (112 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct Req {
    pub(crate) id: u64,
    pub(crate) body: [u32; 26],
}

/// A response shaped like blkif's (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct Rsp {
    pub(crate) id: u64,
    pub(crate) status: i32,
    pub(crate) pad: u32,
}

/// A request with payload derived from its id.
pub(crate) fn req(id: u64) -> Req {
    Req {
        id,
        body: std::array::from_fn(|i| id as u32 ^ i as u32),
    }
}

/// Where the peer's decisions come from.
pub(crate) trait Chaos {
    /// The next decision.
    fn next(&mut self) -> u64;
}

/// The ring's entries on one page: 32 of 112 bytes.
const ARRAY_END: usize = HEADER_SIZE + 32 * 112;

/// The hostile peer's memory (one page). Its producer index is `req_prod` (0) or `rsp_prod`
/// (8); the other one is the ring's.
pub(crate) struct Hostile<'a, S> {
    mem: SharedMem<'a>,
    chaos: RefCell<S>,
    /// The peer's producer and event index offsets.
    peer_prod: usize,
    peer_event: usize,
    /// Per operation: loads of the peer's producer index, and the last value returned.
    prod_loads: Cell<u32>,
    prod_seen: Cell<Option<u32>>,
}

impl<'a, S: Chaos> Hostile<'a, S> {
    /// A hostile back end (producing `rsp_prod`, arming `req_event`) of a ring the front
    /// initialised at `start`.
    pub(crate) fn back(mem: SharedMem<'a>, chaos: S, start: u32) -> Self {
        FrontRing::<Req, Rsp, _>::init_at(mem, 0, start).unwrap();
        Self::new(mem, chaos, 8, 4)
    }

    /// A hostile front end (producing `req_prod`, arming `rsp_event`) that initialised the ring
    /// at `start`.
    pub(crate) fn front(mem: SharedMem<'a>, chaos: S, start: u32) -> Self {
        FrontRing::<Req, Rsp, _>::init_at(mem, 0, start).unwrap();
        Self::new(mem, chaos, 0, 12)
    }

    fn new(mem: SharedMem<'a>, chaos: S, peer_prod: usize, peer_event: usize) -> Self {
        Self {
            mem,
            chaos: RefCell::new(chaos),
            peer_prod,
            peer_event,
            prod_loads: Cell::new(0),
            prod_seen: Cell::new(None),
        }
    }

    fn index(&self, offset: usize) -> &AtomicU32 {
        self.mem.atomic::<AtomicU32>(offset).unwrap()
    }

    fn meddle(&self) {
        let mut chaos = self.chaos.borrow_mut();
        let prod = self.index(self.peer_prod);
        let choice = chaos.next();
        let value = chaos.next();
        match choice % 10 {
            0 => prod.store(value as u32, Ordering::Relaxed),
            // Within 35 of where it is, either way.
            1 => prod.store(
                prod.load(Ordering::Relaxed)
                    .wrapping_add((value % 70) as u32)
                    .wrapping_sub(35),
                Ordering::Relaxed,
            ),
            // Near the other producer index: mostly legal (a back end answering what it was
            // asked, a front end filling what is free).
            2 => {
                let other = self.index(8 - self.peer_prod).load(Ordering::Relaxed);
                let v = if self.peer_prod == 8 {
                    other.wrapping_sub((value % 4) as u32)
                } else {
                    other.wrapping_add((value % 33) as u32)
                };
                prod.store(v, Ordering::Relaxed);
            }
            3 => self
                .index(self.peer_event)
                .store(value as u32, Ordering::Relaxed),
            4 => {
                let at = HEADER_SIZE + (value as usize >> 8) % (ARRAY_END - HEADER_SIZE);
                self.mem.write(at, &[value as u8]).unwrap();
            }
            _ => {}
        }
    }

    fn begin(&self) {
        self.prod_loads.set(0);
        self.prod_seen.set(None);
    }

    /// Checks one operation's result against what the peer let it see: an error is exactly
    /// the producer index read, impossible for its `cons` and `max`; the index was read at
    /// most `reads` times. Whether the operation was refused.
    fn judge<T: std::fmt::Debug>(&self, result: &Result<T, ReqRingError>, reads: u32) -> bool {
        assert!(
            self.prod_loads.get() <= reads,
            "the peer's index read too often"
        );
        match result {
            Err(ReqRingError::ProducerOverflow { prod, cons, max }) => {
                assert_eq!(Some(*prod), self.prod_seen.get());
                assert!(prod.wrapping_sub(*cons) > *max);
                true
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => false,
        }
    }
}

impl<S: Chaos> RingMemory for Hostile<'_, S> {
    fn len(&self) -> usize {
        self.mem.len()
    }
    fn load_index(&self, offset: usize, order: Ordering) -> Result<u32, AccessError> {
        self.meddle();
        let v = self.mem.load_index(offset, order)?;
        if offset == self.peer_prod {
            assert_eq!(
                order,
                Ordering::Acquire,
                "the peer's index is read with Acquire"
            );
            self.prod_loads.set(self.prod_loads.get() + 1);
            self.prod_seen.set(Some(v));
        }
        Ok(v)
    }
    fn store_index(&self, offset: usize, value: u32, order: Ordering) -> Result<(), AccessError> {
        assert_ne!(offset, self.peer_prod, "the peer's index is never written");
        self.mem.store_index(offset, value, order)?;
        self.meddle();
        Ok(())
    }
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), AccessError> {
        assert!(HEADER_SIZE <= offset && offset + dst.len() <= ARRAY_END);
        self.meddle();
        self.mem.read(offset, dst)
    }
    fn write(&self, offset: usize, src: &[u8]) -> Result<(), AccessError> {
        assert!(HEADER_SIZE <= offset && offset + src.len() <= ARRAY_END);
        self.mem.write(offset, src)?;
        self.meddle();
        Ok(())
    }
}

/// How the operations of hostile rounds ended.
#[derive(Debug, Default)]
pub(crate) struct Outcomes {
    /// Refused with `ProducerOverflow`.
    pub(crate) rejected: usize,
    /// Entries taken from the peer.
    pub(crate) moved: usize,
}

/// Runs operation `op` of a front end facing a hostile back end and judges it.
pub(crate) fn front_step<S: Chaos>(
    peer: &Hostile<'_, S>,
    front: &mut FrontRing<Req, Rsp, &Hostile<'_, S>>,
    op: u8,
    outcomes: &mut Outcomes,
) {
    let before = (front.free_requests(), front.in_flight());
    peer.begin();
    let refused = match op % 5 {
        0 => {
            let r = front.start_request(&req(1));
            assert!(r.is_ok() || r == Err(ReqRingError::Full));
            false
        }
        1 => peer.judge(&front.push_requests(), 0),
        2 => {
            let r = front.next_response();
            outcomes.moved += usize::from(matches!(r, Ok(Some(_))));
            peer.judge(&r, 1)
        }
        3 => peer.judge(&front.unconsumed_responses(), 1),
        _ => peer.judge(&front.final_check_for_responses(), 2),
    };
    if refused {
        outcomes.rejected += 1;
        assert_eq!((front.free_requests(), front.in_flight()), before);
    }
    // Whatever the peer did, the accounting stays within the ring.
    assert!(front.in_flight() <= front.size());
    assert_eq!(front.free_requests() + front.in_flight(), front.size());
}

/// Runs operation `op` of a back end facing a hostile front end and judges it.
pub(crate) fn back_step<S: Chaos>(
    peer: &Hostile<'_, S>,
    back: &mut BackRing<Req, Rsp, &Hostile<'_, S>>,
    op: u8,
    outcomes: &mut Outcomes,
) {
    let before = back.unanswered();
    peer.begin();
    let refused = match op % 5 {
        0 => {
            let r = back.start_response(&Rsp::new_zeroed());
            assert!(r.is_ok() || r == Err(ReqRingError::NoRequestToAnswer));
            false
        }
        1 => peer.judge(&back.push_responses(), 0),
        2 => {
            let r = back.next_request();
            outcomes.moved += usize::from(matches!(r, Ok(Some(_))));
            peer.judge(&r, 1)
        }
        3 => peer.judge(&back.unconsumed_requests(), 1),
        _ => peer.judge(&back.final_check_for_requests(), 2),
    };
    if refused {
        outcomes.rejected += 1;
        assert_eq!(back.unanswered(), before);
    }
    // RING_REQUEST_CONS_OVERFLOW never happens: at most a ring's worth unanswered.
    assert!(back.unanswered() <= back.size());
}
