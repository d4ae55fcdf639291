//! The backend's core: takes the frontend's requests off the ring, validates each against the
//! disk, hands the valid ones to a [`BlockIo`] in batches and answers every request, valid or
//! not. No OS here: the data path (grant copies, file I/O) is the [`BlockIo`]'s, the ring's
//! memory is any [`RingMemory`], so a hostile frontend can be played against it in tests.
//!
//! Validation follows what Linux's blkback refuses (`dispatch_rw_block_io`,
//! `xen_vbd_translate`), made exact: an operation this backend does not offer, no segment
//! for a read or write, more than [`MAX_SEGMENTS`], a segment whose `first_sect..=last_sect`
//! is empty or leaves its page, a range that overflows or ends past the disk, a write to a
//! read-only disk. Each is answered with `BLKIF_RSP_ERROR` (`BLKIF_RSP_EOPNOTSUPP` for an
//! operation not offered) and never reaches the [`BlockIo`]. A grant the frontend never made is
//! the [`BlockIo`]'s to find (Xen refuses the copy or map): it fails that request alone. Ring
//! indices the frontend could not have produced are a [`ReqRingError`]: the caller disconnects.

use xen_grant::GrantRef;
use xen_shared::ReqRingError;
use xen_shared::req_ring::{BackRing, ShapeError};
use xen_shared::ring::RingMemory;

use crate::abi::{
    MAX_SEGMENTS, OP_FLUSH_DISKCACHE, OP_READ, OP_WRITE, RSP_EOPNOTSUPP, RSP_ERROR, RSP_OKAY,
    Request, RingRequest, SECTOR_SIZE,
};

/// Sectors (of [`SECTOR_SIZE`]) in one 4 KiB page: a segment's `last_sect` is below this.
const SECTORS_PER_PAGE: u8 = (4096 / SECTOR_SIZE) as u8;

/// The most requests handed to [`BlockIo::perform`] at once.
pub const BATCH: usize = 32;

/// The disk a backend serves, as the frontend is told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disk {
    /// Its size in 512-byte sectors (`sectors`).
    pub sectors: u64,
    /// Whether writes are refused (`info` has `VDISK_READONLY`).
    pub readonly: bool,
}

/// What a valid request asks of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Read the range into the segments.
    Read,
    /// Write the segments to the range.
    Write,
    /// Write the segments (if any) to the range, then make everything written durable
    /// (`BLKIF_OP_FLUSH_DISKCACHE`; Linux's blkfront sends its FUA writes this way).
    Flush,
}

/// One segment of a valid request: bytes `offset..offset + len` of a granted page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataSegment {
    /// The page's grant reference (not yet proven: Xen checks it when it is used).
    pub gref: GrantRef,
    /// The first byte in the page (`first_sect * 512`).
    pub offset: u16,
    /// The bytes (`(last_sect - first_sect + 1) * 512`), at most 4096 - `offset`.
    pub len: u16,
}

/// A request that passed every check: its segments, in order, cover `len()` bytes of the disk
/// from byte `offset()`, all within the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    id: u64,
    operation: u8,
    kind: Kind,
    sector: u64,
    segments: [DataSegment; MAX_SEGMENTS],
    count: u8,
    len: u32,
}

impl Checked {
    /// The frontend's id, echoed in the response.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The request's `operation` byte, echoed in the response.
    pub fn operation(&self) -> u8 {
        self.operation
    }

    /// What it asks.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The first sector (512-byte units; 0 for a bare flush).
    pub fn sector(&self) -> u64 {
        self.sector
    }

    /// The first byte on the disk.
    pub fn offset(&self) -> u64 {
        self.sector * SECTOR_SIZE as u64
    }

    /// The segments, in disk order.
    pub fn segments(&self) -> &[DataSegment] {
        &self.segments[..usize::from(self.count)]
    }

    /// The bytes the segments cover.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the request moves no data (a bare flush).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether it reads the disk (writes the frontend's pages).
    pub fn reads_disk(&self) -> bool {
        self.kind == Kind::Read
    }
}

/// Why a request was refused without touching the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// An operation this backend does not offer (barrier, discard, indirect, unknown).
    #[error("operation {0} is not offered")]
    Unsupported(u8),
    /// A read or write with no segment.
    #[error("a read or write with no segment")]
    NoSegment,
    /// More segments than a request holds.
    #[error("{0} segments, at most {MAX_SEGMENTS}")]
    TooManySegments(u8),
    /// A segment whose sectors are empty or leave the page.
    #[error("segment {index} covers sectors {first}..={last} of a page of 8")]
    BadSegment {
        /// The segment's index.
        index: u8,
        /// Its `first_sect`.
        first: u8,
        /// Its `last_sect`.
        last: u8,
    },
    /// The range overflows or ends past the disk.
    #[error("{count} sectors at sector {sector} end past the disk's {disk}")]
    OutOfRange {
        /// The first sector.
        sector: u64,
        /// The sectors asked for.
        count: u64,
        /// The disk's sectors.
        disk: u64,
    },
    /// A write (or flush with data) to a read-only disk.
    #[error("a write to a read-only disk")]
    ReadOnly,
}

impl Refusal {
    /// The status the frontend is answered with.
    pub fn status(&self) -> i16 {
        match self {
            Self::Unsupported(_) => RSP_EOPNOTSUPP,
            _ => RSP_ERROR,
        }
    }
}

/// Validates one request slot against `disk`.
pub fn check(slot: &RingRequest, disk: &Disk) -> Result<Checked, Refusal> {
    let kind = match slot.operation() {
        OP_READ => Kind::Read,
        OP_WRITE => Kind::Write,
        OP_FLUSH_DISKCACHE => Kind::Flush,
        other => return Err(Refusal::Unsupported(other)),
    };
    let request: Request = slot.get();
    let count = request.nr_segments;
    if usize::from(count) > MAX_SEGMENTS {
        return Err(Refusal::TooManySegments(count));
    }
    if count == 0 && kind != Kind::Flush {
        return Err(Refusal::NoSegment);
    }
    let mut segments = Checked::EMPTY.segments;
    let mut sectors = 0u64;
    for (index, (seg, out)) in request.seg.iter().zip(&mut segments).enumerate() {
        if index == usize::from(count) {
            break;
        }
        let (first, last) = (seg.first_sect, seg.last_sect);
        if first > last || last >= SECTORS_PER_PAGE {
            return Err(Refusal::BadSegment {
                index: index as u8,
                first,
                last,
            });
        }
        let n = u16::from(last - first) + 1;
        *out = DataSegment {
            gref: GrantRef(seg.gref),
            offset: u16::from(first) * SECTOR_SIZE as u16,
            len: n * SECTOR_SIZE as u16,
        };
        sectors += u64::from(n);
    }
    let sector = request.sector_number;
    let out_of_range = Refusal::OutOfRange {
        sector,
        count: sectors,
        disk: disk.sectors,
    };
    // A bare flush names no range (Linux's blkback does not check its sector either).
    if sectors > 0
        && sector
            .checked_add(sectors)
            .is_none_or(|end| end > disk.sectors)
    {
        return Err(out_of_range);
    }
    if disk.readonly && kind != Kind::Read && sectors > 0 {
        return Err(Refusal::ReadOnly);
    }
    Ok(Checked {
        id: request.id,
        operation: slot.operation(),
        kind,
        // So that `offset` is a byte on the disk for every checked request.
        sector: if sectors == 0 { 0 } else { sector },
        segments,
        count,
        len: (sectors * SECTOR_SIZE as u64) as u32,
    })
}

/// The data path: moves valid requests' bytes between the frontend's granted pages and the
/// disk.
pub trait BlockIo {
    /// Performs `requests` and sets `statuses[i]` to request `i`'s outcome (`RSP_OKAY` or
    /// `RSP_ERROR`; `statuses` comes filled with `RSP_ERROR` and is as long as `requests`).
    /// Requests of one batch may be done in any order: the frontend only sends overlapping
    /// requests together if it does not care which lands first (blkif has no ordering between
    /// requests in flight).
    fn perform(&mut self, requests: &[Checked], statuses: &mut [i16]);
}

/// How many requests a backend answered, by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Answered `RSP_OKAY`.
    pub done: u64,
    /// Valid, but the [`BlockIo`] failed them (a bad grant, an I/O error).
    pub failed: u64,
    /// Refused by validation.
    pub refused: u64,
}

/// The backend's half of one connected ring.
#[derive(Debug)]
pub struct Backend<M> {
    ring: BackRing<RingRequest, crate::abi::Response, M>,
    disk: Disk,
    counts: Counts,
}

impl<M: RingMemory> Backend<M> {
    /// The back half of the ring of 2^`order` pages the frontend initialised in `mem`.
    pub fn new(mem: M, order: u8, disk: Disk) -> Result<Self, ShapeError> {
        Ok(Self {
            ring: BackRing::init(mem, order)?,
            disk,
            counts: Counts::default(),
        })
    }

    /// The disk served.
    pub fn disk(&self) -> Disk {
        self.disk
    }

    /// The requests answered so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The ring's memory (to unmap it).
    pub fn into_memory(self) -> M {
        self.ring.into_memory()
    }

    /// Serves every request the frontend published, until none is left and the frontend is
    /// asked to notify for the next (`RING_FINAL_CHECK_FOR_REQUESTS`): a request published
    /// after that comes with an event, so the caller may sleep on the port. Returns whether
    /// the frontend must be notified of responses.
    ///
    /// [`ReqRingError`] if the frontend's `req_prod` is impossible: the ring cannot be trusted
    /// any more and the caller must disconnect (every request taken before was answered).
    pub fn serve(&mut self, io: &mut impl BlockIo) -> Result<bool, ReqRingError> {
        let mut notify = false;
        loop {
            let result = self.serve_batch(io);
            // Answers already started are published even when the ring turned bad.
            notify |= self.ring.push_responses()?;
            if !result? {
                continue;
            }
            if !self.ring.final_check_for_requests()? {
                return Ok(notify);
            }
        }
    }

    /// Takes up to [`BATCH`] requests and answers them; `Ok(true)` if the ring ran dry
    /// before the batch was full.
    fn serve_batch(&mut self, io: &mut impl BlockIo) -> Result<bool, ReqRingError> {
        let mut valid = [Checked::EMPTY; BATCH];
        let mut taken = 0;
        let mut dry = false;
        let mut error = None;
        while taken < BATCH {
            let slot = match self.ring.next_request() {
                Ok(Some(slot)) => slot,
                Ok(None) => {
                    dry = true;
                    break;
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            };
            match check(&slot, &self.disk) {
                Ok(checked) => {
                    valid[taken] = checked;
                    taken += 1;
                }
                Err(refusal) => {
                    self.counts.refused += 1;
                    self.respond(slot.id(), slot.operation(), refusal.status())?;
                }
            }
        }
        let valid = &valid[..taken];
        let mut statuses = [RSP_ERROR; BATCH];
        if !valid.is_empty() {
            io.perform(valid, &mut statuses[..taken]);
        }
        for (request, &status) in valid.iter().zip(&statuses) {
            // Anything but success is a failure to the frontend.
            let status = if status == RSP_OKAY {
                self.counts.done += 1;
                RSP_OKAY
            } else {
                self.counts.failed += 1;
                RSP_ERROR
            };
            self.respond(request.id, request.operation, status)?;
        }
        match error {
            Some(e) => Err(e),
            None => Ok(dry),
        }
    }

    fn respond(&mut self, id: u64, operation: u8, status: i16) -> Result<(), ReqRingError> {
        self.ring.start_response(&crate::abi::Response {
            id,
            operation,
            status,
            ..Default::default()
        })
    }
}

impl Checked {
    /// A placeholder for unused batch entries.
    const EMPTY: Self = Self {
        id: 0,
        operation: 0,
        kind: Kind::Read,
        sector: 0,
        segments: [DataSegment {
            gref: GrantRef(0),
            offset: 0,
            len: 0,
        }; MAX_SEGMENTS],
        count: 0,
        len: 0,
    };
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::vec::Vec;

    use xen_shared::SharedPage;
    use xen_shared::req_ring::FrontRing;
    use xen_shared::ring::RingMemory;

    use super::*;
    use crate::abi::{OP_DISCARD, OP_INDIRECT, OP_WRITE_BARRIER, Response, Segment};

    /// A disk in memory and the pages the frontend granted: a request naming a grant not in
    /// `grants` fails, as Xen refuses the copy.
    struct MemIo {
        disk: Vec<u8>,
        grants: BTreeMap<u32, [u8; 4096]>,
        flushes: u32,
        performed: u32,
    }

    impl MemIo {
        fn new(sectors: u64) -> Self {
            Self {
                disk: std::vec![0; sectors as usize * SECTOR_SIZE],
                grants: BTreeMap::new(),
                flushes: 0,
                performed: 0,
            }
        }
    }

    impl BlockIo for MemIo {
        fn perform(&mut self, requests: &[Checked], statuses: &mut [i16]) {
            assert!(requests.len() <= BATCH && requests.len() == statuses.len());
            for (request, status) in requests.iter().zip(statuses) {
                self.performed += 1;
                // Validation's promise: the range lies within the disk, each segment in its page.
                let start = usize::try_from(request.offset()).unwrap();
                assert!(start + request.len() <= self.disk.len());
                if request
                    .segments()
                    .iter()
                    .any(|s| !self.grants.contains_key(&s.gref.0))
                {
                    continue;
                }
                let mut at = start;
                for seg in request.segments() {
                    let (offset, len) = (usize::from(seg.offset), usize::from(seg.len));
                    assert!(len > 0 && offset + len <= 4096);
                    let page = self.grants.get_mut(&seg.gref.0).unwrap();
                    match request.kind() {
                        Kind::Read => {
                            page[offset..offset + len].copy_from_slice(&self.disk[at..at + len])
                        }
                        Kind::Write | Kind::Flush => {
                            self.disk[at..at + len].copy_from_slice(&page[offset..offset + len])
                        }
                    }
                    at += len;
                }
                if request.kind() == Kind::Flush {
                    self.flushes += 1;
                }
                *status = RSP_OKAY;
            }
        }
    }

    const DISK: Disk = Disk {
        sectors: 64,
        readonly: false,
    };

    fn request(operation: u8, id: u64, sector: u64, segs: &[(u32, u8, u8)]) -> RingRequest {
        let mut request = Request {
            operation,
            nr_segments: segs.len() as u8,
            id,
            sector_number: sector,
            ..Default::default()
        };
        for (out, &(gref, first_sect, last_sect)) in request.seg.iter_mut().zip(segs) {
            *out = Segment {
                gref,
                first_sect,
                last_sect,
                _pad: [0; 2],
            };
        }
        RingRequest::new(&request)
    }

    /// Sends `requests`, lets the backend serve them, returns the responses in order.
    fn exchange(
        front: &mut FrontRing<RingRequest, Response, xen_shared::SharedMem<'_>>,
        back: &mut Backend<xen_shared::SharedMem<'_>>,
        io: &mut MemIo,
        requests: &[RingRequest],
    ) -> Vec<Response> {
        for r in requests {
            front.start_request(r).unwrap();
        }
        front.push_requests().unwrap();
        back.serve(io).unwrap();
        let mut responses = Vec::new();
        while let Some(rsp) = front.next_response().unwrap() {
            responses.push(rsp);
        }
        responses
    }

    #[test]
    fn a_write_then_a_read_round_trip_through_the_disk() {
        let page = SharedPage::new();
        let mut front = FrontRing::init(page.mem(), 0).unwrap();
        let mut back = Backend::new(page.mem(), 0, DISK).unwrap();
        let mut io = MemIo::new(DISK.sectors);
        io.grants.insert(7, [0xab; 4096]);
        io.grants.insert(8, [0; 4096]);
        // Sectors 2..=3 of page 7 to disk sectors 10..=11, then read back into page 8's 5..=6.
        let rsp = exchange(
            &mut front,
            &mut back,
            &mut io,
            &[
                request(OP_WRITE, 1, 10, &[(7, 2, 3)]),
                request(OP_READ, 2, 10, &[(8, 5, 6)]),
            ],
        );
        assert_eq!(rsp.len(), 2);
        assert!(rsp.iter().all(|r| r.status == RSP_OKAY));
        assert_eq!((rsp[0].id, rsp[0].operation), (1, OP_WRITE));
        assert_eq!((rsp[1].id, rsp[1].operation), (2, OP_READ));
        assert!(io.disk[10 * 512..12 * 512].iter().all(|&b| b == 0xab));
        assert!(io.disk[..10 * 512].iter().all(|&b| b == 0));
        let page8 = io.grants[&8];
        assert!(page8[5 * 512..7 * 512].iter().all(|&b| b == 0xab));
        assert!(page8[..5 * 512].iter().all(|&b| b == 0));
        assert_eq!(
            back.counts(),
            Counts {
                done: 2,
                failed: 0,
                refused: 0
            }
        );
    }

    #[test]
    fn every_malformed_request_is_answered_with_an_error_and_never_performed() {
        let page = SharedPage::new();
        let mut front = FrontRing::init(page.mem(), 0).unwrap();
        let mut back = Backend::new(page.mem(), 0, DISK).unwrap();
        let mut io = MemIo::new(DISK.sectors);
        io.grants.insert(1, [0; 4096]);
        let mut too_many = Request {
            operation: OP_READ,
            nr_segments: MAX_SEGMENTS as u8 + 1,
            id: 3,
            ..Default::default()
        };
        too_many.seg = [Segment {
            gref: 1,
            first_sect: 0,
            last_sect: 0,
            _pad: [0; 2],
        }; MAX_SEGMENTS];
        let cases = [
            (
                request(OP_WRITE_BARRIER, 1, 0, &[(1, 0, 0)]),
                RSP_EOPNOTSUPP,
            ),
            (request(OP_DISCARD, 2, 0, &[]), RSP_EOPNOTSUPP),
            (request(OP_INDIRECT, 9, 0, &[]), RSP_EOPNOTSUPP),
            (request(200, 10, 0, &[]), RSP_EOPNOTSUPP),
            (RingRequest::new(&too_many), RSP_ERROR),
            (request(OP_READ, 4, 0, &[]), RSP_ERROR),
            (request(OP_WRITE, 5, 0, &[(1, 3, 2)]), RSP_ERROR),
            (request(OP_WRITE, 6, 0, &[(1, 0, 8)]), RSP_ERROR),
            // The last sector is 63: 63..=64 ends past it.
            (request(OP_READ, 7, 63, &[(1, 0, 1)]), RSP_ERROR),
            (request(OP_READ, 8, u64::MAX, &[(1, 0, 0)]), RSP_ERROR),
            (request(OP_WRITE, 11, 64, &[(1, 0, 0)]), RSP_ERROR),
        ];
        let slots: Vec<_> = cases.iter().map(|(r, _)| *r).collect();
        let rsp = exchange(&mut front, &mut back, &mut io, &slots);
        assert_eq!(rsp.len(), cases.len());
        for ((slot, status), rsp) in cases.iter().zip(&rsp) {
            assert_eq!(
                (rsp.id, rsp.operation, rsp.status),
                (slot.id(), slot.operation(), *status)
            );
        }
        assert_eq!(io.performed, 0);
        assert_eq!(back.counts().refused, cases.len() as u64);
        // The last sector itself, and a bare flush anywhere, are fine.
        let rsp = exchange(
            &mut front,
            &mut back,
            &mut io,
            &[
                request(OP_READ, 12, 63, &[(1, 7, 7)]),
                request(OP_FLUSH_DISKCACHE, 13, u64::MAX, &[]),
            ],
        );
        assert!(rsp.iter().all(|r| r.status == RSP_OKAY), "{rsp:?}");
        assert_eq!(io.flushes, 1);
    }

    #[test]
    fn a_grant_never_made_fails_its_request_alone() {
        let page = SharedPage::new();
        let mut front = FrontRing::init(page.mem(), 0).unwrap();
        let mut back = Backend::new(page.mem(), 0, DISK).unwrap();
        let mut io = MemIo::new(DISK.sectors);
        io.grants.insert(1, [5; 4096]);
        let rsp = exchange(
            &mut front,
            &mut back,
            &mut io,
            &[
                request(OP_WRITE, 1, 0, &[(1, 0, 0), (99, 0, 0)]),
                request(OP_WRITE, 2, 8, &[(1, 0, 7)]),
            ],
        );
        assert_eq!(
            rsp.iter().map(|r| r.status).collect::<Vec<_>>(),
            [RSP_ERROR, RSP_OKAY]
        );
        assert_eq!(
            back.counts(),
            Counts {
                done: 1,
                failed: 1,
                refused: 0
            }
        );
    }

    #[test]
    fn a_read_only_disk_refuses_writes_and_data_flushes() {
        let page = SharedPage::new();
        let mut front = FrontRing::init(page.mem(), 0).unwrap();
        let disk = Disk {
            readonly: true,
            ..DISK
        };
        let mut back = Backend::new(page.mem(), 0, disk).unwrap();
        let mut io = MemIo::new(DISK.sectors);
        io.grants.insert(1, [5; 4096]);
        let rsp = exchange(
            &mut front,
            &mut back,
            &mut io,
            &[
                request(OP_WRITE, 1, 0, &[(1, 0, 0)]),
                request(OP_FLUSH_DISKCACHE, 2, 0, &[(1, 0, 0)]),
                request(OP_FLUSH_DISKCACHE, 3, 0, &[]),
                request(OP_READ, 4, 0, &[(1, 0, 0)]),
            ],
        );
        let statuses: Vec<_> = rsp.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [RSP_ERROR, RSP_ERROR, RSP_OKAY, RSP_OKAY]);
        assert!(io.disk.iter().all(|&b| b == 0));
    }

    #[test]
    fn more_requests_than_a_batch_are_all_answered_in_one_serve() {
        let page = SharedPage::new();
        let mut front = FrontRing::init(page.mem(), 0).unwrap();
        let mut back = Backend::new(page.mem(), 0, DISK).unwrap();
        let mut io = MemIo::new(DISK.sectors);
        io.grants.insert(1, [1; 4096]);
        let size = front.size() as u64;
        assert!(size as usize >= BATCH);
        let requests: Vec<_> = (0..size)
            .map(|i| request(OP_READ, i, i, &[(1, 0, 0)]))
            .collect();
        let rsp = exchange(&mut front, &mut back, &mut io, &requests);
        assert_eq!(
            rsp.iter().map(|r| r.id).collect::<Vec<_>>(),
            (0..size).collect::<Vec<_>>()
        );
        // Asked to be told of the next request: `req_event` is one past those consumed.
        assert_eq!(
            page.mem()
                .load_index(4, core::sync::atomic::Ordering::SeqCst),
            Ok(size as u32 + 1)
        );
    }

    #[test]
    fn an_impossible_req_prod_is_an_error_after_answering_what_came_before() {
        let page = SharedPage::new();
        let mut front = FrontRing::init(page.mem(), 0).unwrap();
        let mut back = Backend::new(page.mem(), 0, DISK).unwrap();
        let mut io = MemIo::new(DISK.sectors);
        io.grants.insert(1, [1; 4096]);
        let rsp = exchange(
            &mut front,
            &mut back,
            &mut io,
            &[request(OP_READ, 1, 0, &[(1, 0, 0)])],
        );
        assert_eq!(rsp.len(), 1);
        // 1 consumed and answered: `req_prod` may reach 1 + 32, not 34.
        page.mem()
            .store_index(0, 34, core::sync::atomic::Ordering::SeqCst)
            .unwrap();
        assert!(matches!(
            back.serve(&mut io),
            Err(ReqRingError::ProducerOverflow { prod: 34, .. })
        ));
        // Behind what was consumed is as impossible.
        page.mem()
            .store_index(0, 0, core::sync::atomic::Ordering::SeqCst)
            .unwrap();
        assert!(back.serve(&mut io).is_err());
        assert_eq!(io.performed, 1);
    }

    /// A tiny deterministic generator (xorshift64*), so the hostile runs repeat.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A hostile frontend writes random slots (random operations, segment counts, sectors,
    /// grants, `first_sect`/`last_sect`) and now and then a random `req_prod`. The backend
    /// never panics, hands the data path only requests within the disk and their pages
    /// (`MemIo` asserts it), answers every request it took exactly once, and stops at the
    /// first impossible index.
    #[test]
    fn a_hostile_frontend_gets_answers_or_a_disconnect_never_a_panic() {
        let rounds = if cfg!(miri) { 20 } else { 3000 };
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut disconnects = 0;
        for _ in 0..rounds {
            let page = SharedPage::new();
            let mem = page.mem();
            let mut back = Backend::new(mem, 0, DISK).unwrap();
            let mut io = MemIo::new(DISK.sectors);
            for gref in 0..4 {
                io.grants.insert(gref, [gref as u8; 4096]);
            }
            let (mut req_prod, mut rsp_seen) = (0u32, 0u32);
            for _ in 0..(rng.below(6) + 1) {
                // Fill the free slots with garbage shaped like requests.
                let free = 32 - req_prod.wrapping_sub(rsp_seen);
                let count = rng.below(u64::from(free) + 1) as u32;
                for i in 0..count {
                    let mut request = Request {
                        operation: [OP_READ, OP_WRITE, OP_FLUSH_DISKCACHE, rng.next() as u8]
                            [rng.below(4) as usize],
                        nr_segments: rng.below(14) as u8,
                        id: rng.next(),
                        sector_number: if rng.below(4) == 0 {
                            rng.next()
                        } else {
                            rng.below(70)
                        },
                        ..Default::default()
                    };
                    for seg in &mut request.seg {
                        *seg = Segment {
                            gref: rng.below(6) as u32,
                            first_sect: rng.below(10) as u8,
                            last_sect: rng.below(10) as u8,
                            _pad: [0; 2],
                        };
                    }
                    let slot = 64 + (req_prod.wrapping_add(i) % 32) as usize * 112;
                    mem.write(slot, RingRequest::new(&request).as_bytes_for_test())
                        .unwrap();
                }
                req_prod = req_prod.wrapping_add(count);
                let published = if rng.below(10) == 0 {
                    rng.next() as u32
                } else {
                    req_prod
                };
                mem.store_index(0, published, core::sync::atomic::Ordering::SeqCst)
                    .unwrap();
                let before = back.counts();
                let result = back.serve(&mut io);
                let after = back.counts();
                let answered = (after.done + after.failed + after.refused)
                    - (before.done + before.failed + before.refused);
                let rsp_prod = mem
                    .load_index(8, core::sync::atomic::Ordering::SeqCst)
                    .unwrap();
                assert_eq!(u64::from(rsp_prod.wrapping_sub(rsp_seen)), answered);
                rsp_seen = rsp_prod;
                match result {
                    // A random index that happened to be possible: what it claims was taken.
                    Ok(_) => req_prod = published,
                    Err(ReqRingError::ProducerOverflow { .. }) => {
                        disconnects += 1;
                        break;
                    }
                    Err(other) => panic!("{other:?}"),
                }
                // A well-behaved part answered everything it published.
                assert_eq!(rsp_prod, req_prod);
            }
        }
        assert!(disconnects > 0);
    }

    impl RingRequest {
        fn as_bytes_for_test(&self) -> &[u8] {
            zerocopy::IntoBytes::as_bytes(self)
        }
    }
}
