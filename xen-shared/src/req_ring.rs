//! Xen's request/response rings (`io/ring.h`, `DEFINE_RING_TYPES`): the ring of PV devices
//! (block, network, SCSI, USB, ...).
//!
//! The shared memory, 2^order pages, starts with a 64-byte header (`req_prod`, `req_event`,
//! `rsp_prod`, `rsp_event`, then padding) and holds a power-of-two array of entries, each the
//! size of `union { Req req; Rsp rsp; }`. The front end writes requests into the array and
//! publishes them by advancing `req_prod`; the back end copies them out, answers each with a
//! response written into the slot of a request it consumed, and publishes them by advancing
//! `rsp_prod`. The consumers' indices are private (not in the page): a slot is free again for
//! the front once it consumed the response in it.
//!
//! [`FrontRing`] and [`BackRing`] are the two halves. As in C, each keeps its own indices
//! privately and never reads them back from the page: the only shared values either reads are
//! the peer's producer index, once per batch and validated against what the peer could have
//! produced ([`ReqRingError::ProducerOverflow`], Linux's `RING_*_PROD_OVERFLOW`, made exact),
//! and the peer's event index, which only decides whether to notify. Entries are copied in and
//! out whole, so a request or response is a local value the peer can no longer change.
//!
//! Notifications follow the C macros: a push reports whether the peer asked to be woken for one
//! of the entries it published (`RING_PUSH_*_AND_CHECK_NOTIFY`), and a consumer about to sleep
//! asks to be woken for the next entry and checks once more (`RING_FINAL_CHECK_FOR_*`). The
//! caller sends the event-channel notification.

use core::marker::PhantomData;
use core::sync::atomic::{Ordering, fence};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::mem::{AccessError, PAGE_SIZE};
use crate::ring::RingMemory;

/// Offset of `req_prod` in the shared header.
const REQ_PROD: usize = 0;
/// Offset of `req_event`.
const REQ_EVENT: usize = 4;
/// Offset of `rsp_prod`.
const RSP_PROD: usize = 8;
/// Offset of `rsp_event`.
const RSP_EVENT: usize = 12;
/// `offsetof(struct NAME_sring, ring)`: four indices, 4 bytes `pvt`, 44 bytes `__pad` (Linux's
/// copy of the header names them `pad[48]`).
pub const HEADER_SIZE: usize = 64;

/// The largest ring this module builds: 2^31 entries, so that `prod - cons <= size` tells a
/// legal count from a wrapped one.
const MAX_ENTRIES: usize = 1 << 31;

/// The size of one ring entry, `sizeof(union { Req req; Rsp rsp; })`: the larger of the two,
/// rounded up to the larger alignment, as C lays out a union.
pub const fn entry_size<Req, Rsp>() -> usize {
    let size = max(size_of::<Req>(), size_of::<Rsp>());
    let align = max(align_of::<Req>(), align_of::<Rsp>());
    size.div_ceil(align) * align
}

/// The number of entries of a ring in `bytes` of memory (`__CONST_RING_SIZE` / `__RING_SIZE`):
/// as many entries as fit after the header, rounded down to a power of two; 0 if none fits.
pub const fn ring_entries(entry_size: usize, bytes: usize) -> usize {
    if entry_size == 0 || bytes <= HEADER_SIZE {
        return 0;
    }
    let fit = (bytes - HEADER_SIZE) / entry_size;
    if fit == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - fit.leading_zeros())
    }
}

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// Memory that cannot hold the ring asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShapeError {
    /// The memory is shorter than the 2^order pages of the ring.
    #[error("a ring of page order {order} needs {needed} bytes, the memory has {len}")]
    TooShort {
        /// The ring page order asked for.
        order: u8,
        /// The bytes 2^order pages take.
        needed: usize,
        /// The memory's size.
        len: usize,
    },
    /// 2^order pages do not fit the address space, or would hold more than 2^31 entries.
    #[error("ring page order {0} is too large")]
    OrderTooLarge(u8),
    /// Not one entry fits after the header.
    #[error("a {entry_size}-byte entry does not fit a ring of {bytes} bytes")]
    NoEntry {
        /// The entry size.
        entry_size: usize,
        /// The ring's size in bytes.
        bytes: usize,
    },
    /// The memory refused an access (only a [`RingMemory`] that changed size can cause this).
    #[error(transparent)]
    Access(#[from] AccessError),
}

/// A failed ring operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReqRingError {
    /// The peer's producer index claims entries that cannot exist (more than it could have
    /// produced, or fewer than were already consumed): the peer is broken or hostile, and the
    /// ring should be abandoned (Linux's blkback "bogus ring requests", blkfront's "illegal
    /// number of responses"). Nothing was consumed.
    #[error("impossible producer index {prod}: {prod} - {cons} exceeds the {max} entries possible")]
    ProducerOverflow {
        /// The producer index as read.
        prod: u32,
        /// This side's consumer index.
        cons: u32,
        /// How many unconsumed entries could exist.
        max: u32,
    },
    /// No free slot for a request (`RING_FULL`): wait for responses.
    #[error("the ring is full")]
    Full,
    /// A response with no consumed request left to answer: its slot would overwrite a request.
    #[error("no consumed request is left to answer")]
    NoRequestToAnswer,
    /// The memory refused an access (only a [`RingMemory`] that changed size can cause this).
    #[error(transparent)]
    Access(#[from] AccessError),
}

/// Where the array lives and how large it is, checked once against the memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    /// `RING_SIZE`: a power of two, at most 2^31.
    entries: u32,
    entry_size: usize,
}

impl Shape {
    fn new<Req, Rsp>(len: usize, order: u8) -> Result<Self, ShapeError> {
        const {
            assert!(
                align_of::<Req>() <= HEADER_SIZE && align_of::<Rsp>() <= HEADER_SIZE,
                "an entry aligned beyond the 64-byte header would move the array"
            );
        }
        let entry_size = entry_size::<Req, Rsp>();
        if u32::from(order) >= usize::BITS - PAGE_SIZE.trailing_zeros() {
            return Err(ShapeError::OrderTooLarge(order));
        }
        let bytes = PAGE_SIZE << order;
        let entries = ring_entries(entry_size, bytes);
        if entries > MAX_ENTRIES {
            return Err(ShapeError::OrderTooLarge(order));
        }
        if entries == 0 {
            return Err(ShapeError::NoEntry { entry_size, bytes });
        }
        if len < bytes {
            return Err(ShapeError::TooShort {
                order,
                needed: bytes,
                len,
            });
        }
        Ok(Self {
            // At most 2^31: checked above.
            entries: entries as u32,
            entry_size,
        })
    }

    /// The offset of the entry for ring index `index` (masked: always inside the array).
    fn slot(&self, index: u32) -> usize {
        HEADER_SIZE + (index & (self.entries - 1)) as usize * self.entry_size
    }
}

/// Reads the peer's producer index once and checks that `prod - cons <= max`; Acquire, so the
/// entries the peer wrote before publishing it are visible to the reads that follow (Linux
/// reads it, then `virt_rmb()`).
fn peer_prod<M: RingMemory>(
    mem: &M,
    offset: usize,
    cons: u32,
    max: u32,
) -> Result<u32, ReqRingError> {
    let prod = mem.load_index(offset, Ordering::Acquire)?;
    if prod.wrapping_sub(cons) > max {
        return Err(ReqRingError::ProducerOverflow { prod, cons, max });
    }
    Ok(prod)
}

/// Publishes our producer index `new` (was `old`) and says whether the peer asked to be woken
/// for one of the entries in `old..new` (`RING_PUSH_*_AND_CHECK_NOTIFY`): its event index lies
/// in `(old, new]`.
///
/// Release on the store: the entries written before are visible before the index (C's
/// `xen_wmb()`). Then a full barrier (C's `xen_mb()`) between that store and the load of the
/// event index: the peer, going to sleep, stores its event index, makes the same barrier and
/// loads our producer index (`RING_FINAL_CHECK_FOR_*`). Neither Acquire nor Release orders a
/// store before a later load; with a SeqCst fence on both sides at least one side sees the
/// other's store, so either we see the new event index and notify, or the peer sees our new
/// index and does not sleep: the wake-up cannot be lost.
fn publish<M: RingMemory>(
    mem: &M,
    prod_offset: usize,
    event_offset: usize,
    old: u32,
    new: u32,
) -> Result<bool, AccessError> {
    mem.store_index(prod_offset, new, Ordering::Release)?;
    fence(Ordering::SeqCst);
    let event = mem.load_index(event_offset, Ordering::Relaxed)?;
    Ok(new.wrapping_sub(event) < new.wrapping_sub(old))
}

/// Asks the peer to notify for the entry at `cons` (stores `cons + 1` into our event index),
/// then orders that store before the re-read of the peer's producer index that follows (the
/// `xen_mb()` of `RING_FINAL_CHECK_FOR_*`; see [`publish`] for the other half).
fn arm_event<M: RingMemory>(mem: &M, event_offset: usize, cons: u32) -> Result<(), AccessError> {
    mem.store_index(event_offset, cons.wrapping_add(1), Ordering::Relaxed)?;
    fence(Ordering::SeqCst);
    Ok(())
}

/// The front half of a request/response ring: produces requests, consumes responses
/// (`NAME_front_ring`).
///
/// `Req` and `Rsp` are the protocol's request and response types (for example blkif's
/// `blkif_request` and `blkif_response`); every entry is copied in or out as a whole.
pub struct FrontRing<Req, Rsp, M> {
    mem: M,
    shape: Shape,
    /// `req_prod_pvt`: where the next request goes.
    req_prod_pvt: u32,
    /// The value last stored into the shared `req_prod`.
    req_pushed: u32,
    /// `rsp_cons`: the next response to consume.
    rsp_cons: u32,
    /// The back's `rsp_prod` as last read and validated (`rsp_cons..=rsp_seen` are
    /// published responses).
    rsp_seen: u32,
    _entries: PhantomData<fn(Req) -> Rsp>,
}

impl<Req, Rsp, M> FrontRing<Req, Rsp, M>
where
    Req: IntoBytes + Immutable,
    Rsp: FromBytes + IntoBytes + KnownLayout,
    M: RingMemory,
{
    /// Initialises the shared ring in the first 2^`order` pages of `mem` (`SHARED_RING_INIT`:
    /// both producer indices 0, both event indices 1, the padding zero) and its front half
    /// (`FRONT_RING_INIT`). Done before the pages are granted to the back end.
    ///
    /// # Errors
    ///
    /// [`ShapeError`]: the memory is shorter than 2^`order` pages, the order is too large, or no
    /// entry fits after the header.
    pub fn init(mem: M, order: u8) -> Result<Self, ShapeError> {
        Self::init_at(mem, order, 0)
    }

    /// As [`init`](Self::init), with every index starting at `index` instead of 0 (any start
    /// works; a back end must then [`attach`](BackRing::attach) at the same index).
    ///
    /// # Errors
    ///
    /// [`ShapeError`]: the memory is shorter than 2^`order` pages, the order is too large, or no
    /// entry fits after the header.
    pub fn init_at(mem: M, order: u8, index: u32) -> Result<Self, ShapeError> {
        let ring = Self::attach(mem, order, index)?;
        ring.mem
            .write(RSP_EVENT + 4, &[0; HEADER_SIZE - RSP_EVENT - 4])?;
        for (offset, value) in [
            (REQ_EVENT, index.wrapping_add(1)),
            (RSP_EVENT, index.wrapping_add(1)),
            (REQ_PROD, index),
            (RSP_PROD, index),
        ] {
            ring.mem.store_index(offset, value, Ordering::Release)?;
        }
        Ok(ring)
    }

    /// The front half of a ring already initialised, with every index at `index`
    /// (`FRONT_RING_ATTACH`). The shared memory is not touched.
    ///
    /// # Errors
    ///
    /// [`ShapeError`]: the memory is shorter than 2^`order` pages, the order is too large, or no
    /// entry fits after the header.
    pub fn attach(mem: M, order: u8, index: u32) -> Result<Self, ShapeError> {
        Ok(Self {
            shape: Shape::new::<Req, Rsp>(mem.len(), order)?,
            mem,
            req_prod_pvt: index,
            req_pushed: index,
            rsp_cons: index,
            rsp_seen: index,
            _entries: PhantomData,
        })
    }

    /// The number of entries (`RING_SIZE`).
    pub fn size(&self) -> u32 {
        self.shape.entries
    }

    /// Requests that [`start_request`](Self::start_request) can still queue
    /// (`RING_FREE_REQUESTS`): slots neither holding a request nor an unconsumed response.
    pub fn free_requests(&self) -> u32 {
        self.shape.entries - self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Whether no request can be queued (`RING_FULL`).
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// Requests queued or in flight: started and not yet answered by a consumed response.
    pub fn in_flight(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Copies `req` into the next free slot; it reaches the back end with the next
    /// [`push_requests`](Self::push_requests).
    ///
    /// # Errors
    ///
    /// [`ReqRingError::Full`] if no slot is free, [`ReqRingError::Access`] if the memory
    /// refuses the copy.
    pub fn start_request(&mut self, req: &Req) -> Result<(), ReqRingError> {
        if self.is_full() {
            return Err(ReqRingError::Full);
        }
        self.mem
            .write(self.shape.slot(self.req_prod_pvt), req.as_bytes())?;
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publishes the started requests; `true` if the back end must be notified
    /// (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`: it asked for an event at one of them).
    ///
    /// # Errors
    ///
    /// [`ReqRingError::Access`] if the memory refuses the access (it changed size).
    pub fn push_requests(&mut self) -> Result<bool, ReqRingError> {
        let (old, new) = (self.req_pushed, self.req_prod_pvt);
        let notify = publish(&self.mem, REQ_PROD, REQ_EVENT, old, new)?;
        self.req_pushed = new;
        Ok(notify)
    }

    /// Takes the next published response, if any. The back end's `rsp_prod` is read when the
    /// responses seen so far are used up, once per call at most, and must lie between the
    /// responses consumed and the requests pushed.
    ///
    /// # Errors
    ///
    /// [`ReqRingError::ProducerOverflow`] if the peer's producer index is impossible (nothing is
    /// consumed: abandon the ring), [`ReqRingError::Access`] if the memory refuses the access.
    pub fn next_response(&mut self) -> Result<Option<Rsp>, ReqRingError> {
        if self.rsp_cons == self.rsp_seen {
            self.read_rsp_prod()?;
            if self.rsp_cons == self.rsp_seen {
                return Ok(None);
            }
        }
        let mut rsp = Rsp::new_zeroed();
        self.mem
            .read(self.shape.slot(self.rsp_cons), rsp.as_mut_bytes())?;
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(rsp))
    }

    /// Responses published and not yet consumed (reads `rsp_prod` once).
    ///
    /// # Errors
    ///
    /// [`ReqRingError::ProducerOverflow`] if the peer's producer index is impossible (nothing is
    /// consumed: abandon the ring), [`ReqRingError::Access`] if the memory refuses the access.
    pub fn unconsumed_responses(&mut self) -> Result<u32, ReqRingError> {
        self.read_rsp_prod()?;
        Ok(self.rsp_seen.wrapping_sub(self.rsp_cons))
    }

    /// Before waiting for an event: whether responses are waiting; if none, asks the back end
    /// to notify for the next one and checks once more (`RING_FINAL_CHECK_FOR_RESPONSES`).
    /// `false` means a response published from now on comes with a notification.
    ///
    /// # Errors
    ///
    /// [`ReqRingError::ProducerOverflow`] if the peer's producer index is impossible (nothing is
    /// consumed: abandon the ring), [`ReqRingError::Access`] if the memory refuses the access.
    pub fn final_check_for_responses(&mut self) -> Result<bool, ReqRingError> {
        if self.unconsumed_responses()? > 0 {
            return Ok(true);
        }
        arm_event(&self.mem, RSP_EVENT, self.rsp_cons)?;
        Ok(self.unconsumed_responses()? > 0)
    }

    /// The memory the ring lives in.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Gives the memory back (to end its grants once the back end unmapped it).
    pub fn into_memory(self) -> M {
        self.mem
    }

    /// Reads and validates `rsp_prod`: a response takes the slot of a request the back end
    /// consumed, so there are at most as many as requests pushed and not yet answered (tighter
    /// than Linux's `RING_RESPONSE_PROD_OVERFLOW`, which allows the ring's size, and which an
    /// honest back end meets all the same).
    fn read_rsp_prod(&mut self) -> Result<(), ReqRingError> {
        let max = self.req_pushed.wrapping_sub(self.rsp_cons);
        self.rsp_seen = peer_prod(&self.mem, RSP_PROD, self.rsp_cons, max)?;
        Ok(())
    }
}

impl<Req, Rsp, M: core::fmt::Debug> core::fmt::Debug for FrontRing<Req, Rsp, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FrontRing")
            .field("mem", &self.mem)
            .field("entries", &self.shape.entries)
            .field("req_prod_pvt", &self.req_prod_pvt)
            .field("rsp_cons", &self.rsp_cons)
            .finish_non_exhaustive()
    }
}

/// The back half of a request/response ring: consumes requests, produces responses
/// (`NAME_back_ring`).
pub struct BackRing<Req, Rsp, M> {
    mem: M,
    shape: Shape,
    /// `req_cons`: the next request to consume.
    req_cons: u32,
    /// The front's `req_prod` as last read and validated.
    req_seen: u32,
    /// `rsp_prod_pvt`: where the next response goes.
    rsp_prod_pvt: u32,
    /// The value last stored into the shared `rsp_prod`.
    rsp_pushed: u32,
    _entries: PhantomData<fn(Rsp) -> Req>,
}

impl<Req, Rsp, M> BackRing<Req, Rsp, M>
where
    Req: FromBytes + IntoBytes + KnownLayout,
    Rsp: IntoBytes + Immutable,
    M: RingMemory,
{
    /// The back half of a ring the front end initialised (`BACK_RING_INIT`), in the first
    /// 2^`order` pages of `mem`.
    ///
    /// # Errors
    ///
    /// [`ShapeError`]: the memory is shorter than 2^`order` pages, the order is too large, or no
    /// entry fits after the header.
    pub fn init(mem: M, order: u8) -> Result<Self, ShapeError> {
        Self::attach(mem, order, 0)
    }

    /// The back half of a ring whose indices are all at `index` (`BACK_RING_ATTACH`).
    ///
    /// # Errors
    ///
    /// [`ShapeError`]: the memory is shorter than 2^`order` pages, the order is too large, or no
    /// entry fits after the header.
    pub fn attach(mem: M, order: u8, index: u32) -> Result<Self, ShapeError> {
        Ok(Self {
            shape: Shape::new::<Req, Rsp>(mem.len(), order)?,
            mem,
            req_cons: index,
            req_seen: index,
            rsp_prod_pvt: index,
            rsp_pushed: index,
            _entries: PhantomData,
        })
    }

    /// The number of entries (`RING_SIZE`).
    pub fn size(&self) -> u32 {
        self.shape.entries
    }

    /// Requests consumed and not yet answered by a started response.
    pub fn unanswered(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    /// Takes the next published request, if any. The front end's `req_prod` is read when the
    /// requests seen so far are used up, once per call at most, and must lie between the
    /// requests consumed and the slots the front end may fill (`RING_REQUEST_PROD_OVERFLOW`,
    /// made exact: it also refuses a `req_prod` behind the requests consumed). So no more than
    /// the ring's size is ever consumed beyond the responses pushed
    /// (`RING_REQUEST_CONS_OVERFLOW` cannot happen).
    ///
    /// # Errors
    ///
    /// [`ReqRingError::ProducerOverflow`] if the peer's producer index is impossible (nothing is
    /// consumed: abandon the ring), [`ReqRingError::Access`] if the memory refuses the access.
    pub fn next_request(&mut self) -> Result<Option<Req>, ReqRingError> {
        if self.req_cons == self.req_seen {
            self.read_req_prod()?;
            if self.req_cons == self.req_seen {
                return Ok(None);
            }
        }
        let mut req = Req::new_zeroed();
        self.mem
            .read(self.shape.slot(self.req_cons), req.as_mut_bytes())?;
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(Some(req))
    }

    /// Requests published and not yet consumed (reads `req_prod` once).
    ///
    /// # Errors
    ///
    /// [`ReqRingError::ProducerOverflow`] if the peer's producer index is impossible (nothing is
    /// consumed: abandon the ring), [`ReqRingError::Access`] if the memory refuses the access.
    pub fn unconsumed_requests(&mut self) -> Result<u32, ReqRingError> {
        self.read_req_prod()?;
        Ok(self.req_seen.wrapping_sub(self.req_cons))
    }

    /// Before waiting for an event: whether requests are waiting; if none, asks the front end
    /// to notify for the next one and checks once more (`RING_FINAL_CHECK_FOR_REQUESTS`).
    /// `false` means a request published from now on comes with a notification.
    ///
    /// # Errors
    ///
    /// [`ReqRingError::ProducerOverflow`] if the peer's producer index is impossible (nothing is
    /// consumed: abandon the ring), [`ReqRingError::Access`] if the memory refuses the access.
    pub fn final_check_for_requests(&mut self) -> Result<bool, ReqRingError> {
        if self.unconsumed_requests()? > 0 {
            return Ok(true);
        }
        arm_event(&self.mem, REQ_EVENT, self.req_cons)?;
        Ok(self.unconsumed_requests()? > 0)
    }

    /// Copies `rsp` into the slot of the oldest consumed, unanswered request; it reaches the
    /// front end with the next [`push_responses`](Self::push_responses).
    ///
    /// # Errors
    ///
    /// [`ReqRingError::NoRequestToAnswer`] if every consumed request has its response,
    /// [`ReqRingError::Access`] if the memory refuses the copy.
    pub fn start_response(&mut self, rsp: &Rsp) -> Result<(), ReqRingError> {
        if self.unanswered() == 0 {
            return Err(ReqRingError::NoRequestToAnswer);
        }
        self.mem
            .write(self.shape.slot(self.rsp_prod_pvt), rsp.as_bytes())?;
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publishes the started responses; `true` if the front end must be notified
    /// (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`).
    ///
    /// # Errors
    ///
    /// [`ReqRingError::Access`] if the memory refuses the access (it changed size).
    pub fn push_responses(&mut self) -> Result<bool, ReqRingError> {
        let (old, new) = (self.rsp_pushed, self.rsp_prod_pvt);
        let notify = publish(&self.mem, RSP_PROD, RSP_EVENT, old, new)?;
        self.rsp_pushed = new;
        Ok(notify)
    }

    /// The memory the ring lives in.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Gives the memory back.
    pub fn into_memory(self) -> M {
        self.mem
    }

    /// Reads and validates `req_prod`: the front end may fill a slot once it consumed the
    /// response in it, and it can only have consumed pushed responses, so `req_prod` is at most
    /// `rsp_pushed + size`.
    fn read_req_prod(&mut self) -> Result<(), ReqRingError> {
        let limit = self.rsp_pushed.wrapping_add(self.shape.entries);
        let max = limit.wrapping_sub(self.req_cons);
        self.req_seen = peer_prod(&self.mem, REQ_PROD, self.req_cons, max)?;
        Ok(())
    }
}

impl<Req, Rsp, M: core::fmt::Debug> core::fmt::Debug for BackRing<Req, Rsp, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BackRing")
            .field("mem", &self.mem)
            .field("entries", &self.shape.entries)
            .field("req_cons", &self.req_cons)
            .field("rsp_prod_pvt", &self.rsp_prod_pvt)
            .finish_non_exhaustive()
    }
}

/// A response's id that names no request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("response id {0} names no request in flight")]
pub struct UnknownId(pub u64);

/// The front end's table of requests in flight, by id: what it needs to match a response to
/// its request, and to refuse an id it never issued (Linux's blkfront and netfront "incorrect
/// id" and "inactive request" checks).
///
/// Ids are slot numbers `0..N`, reused once their response is taken. `N` is usually the ring's
/// size ([`ring_entries`]). No allocation.
pub struct InFlight<T, const N: usize> {
    slots: [Option<T>; N],
    /// Free ids, `free[..free_len]`.
    free: [u32; N],
    free_len: usize,
}

impl<T, const N: usize> InFlight<T, N> {
    /// An empty table.
    pub fn new() -> Self {
        const {
            assert!(N <= u32::MAX as usize, "ids are u32");
        }
        Self {
            slots: core::array::from_fn(|_| None),
            // Handed out lowest first.
            free: core::array::from_fn(|i| (N - 1 - i) as u32),
            free_len: N,
        }
    }

    /// Records `value` under a fresh id and returns the id.
    ///
    /// # Errors
    ///
    /// `value`, given back, if all `N` ids are in flight.
    pub fn insert(&mut self, value: T) -> Result<u32, T> {
        if self.free_len == 0 {
            return Err(value);
        }
        self.free_len -= 1;
        let id = self.free[self.free_len];
        self.slots[id as usize] = Some(value);
        Ok(id)
    }

    /// Takes the value recorded under `id` (from a response: any value), freeing the id.
    ///
    /// # Errors
    ///
    /// [`UnknownId`] if no request with that id is in flight.
    pub fn remove(&mut self, id: u64) -> Result<T, UnknownId> {
        let slot = usize::try_from(id)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
            .ok_or(UnknownId(id))?;
        let value = slot.take().ok_or(UnknownId(id))?;
        // `id < N <= u32::MAX` and it was in flight, so not already in the free list.
        self.free[self.free_len] = id as u32;
        self.free_len += 1;
        Ok(value)
    }

    /// The value recorded under `id`, if in flight.
    pub fn get(&self, id: u64) -> Option<&T> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.slots.get(i))
            .and_then(Option::as_ref)
    }

    /// How many ids are in flight.
    pub fn len(&self) -> usize {
        N - self.free_len
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T, const N: usize> Default for InFlight<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> core::fmt::Debug for InFlight<T, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InFlight")
            .field("capacity", &N)
            .field("len", &self.len())
            .finish()
    }
}
