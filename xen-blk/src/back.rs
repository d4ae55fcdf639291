//! The backend's core: takes the frontend's requests off the ring, validates each against the
//! disk, hands the valid ones to a [`BlockIo`] in batches and answers every request, valid or
//! not. No OS here: the data path (grant copies, file I/O) is the [`BlockIo`]'s, the ring's
//! memory is any [`RingMemory`], so a hostile frontend can be played against it in tests.
//!
//! Validation follows what Linux's blkback refuses (`dispatch_rw_block_io`,
//! `xen_vbd_translate`), made exact: an operation this backend does not offer, no segment
//! for a read or write, more than [`MAX_SEGMENTS`] (or [`MAX_INDIRECT_SEGMENTS`] in an indirect
//! request, whose `indirect_op` must be a read or a write), a segment whose
//! `first_sect..=last_sect` is empty or leaves its page, a range that overflows or ends past the
//! disk, a write to a read-only disk. Each is answered with `BLKIF_RSP_ERROR`
//! (`BLKIF_RSP_EOPNOTSUPP` for an operation not offered) and never reaches the [`BlockIo`]. A
//! grant the frontend never made is the [`BlockIo`]'s to find (Xen refuses the copy or map):
//! it fails that request alone. Ring
//! indices the frontend could not have produced are a [`ReqRingError`]: the caller disconnects.

use xen_grant::GrantRef;
use xen_shared::ReqRingError;
use xen_shared::req_ring::{BackRing, ShapeError};
use xen_shared::ring::RingMemory;

use alloc::vec::Vec;

use crate::abi::{
    IndirectRequest, MAX_INDIRECT_PAGES, MAX_SEGMENTS, OP_FLUSH_DISKCACHE, OP_INDIRECT, OP_READ,
    OP_WRITE, RSP_EOPNOTSUPP, RSP_ERROR, RSP_OKAY, Request, RingRequest, SECTOR_SIZE,
    SEGMENTS_PER_INDIRECT_PAGE, Segment,
};

/// Sectors (of [`SECTOR_SIZE`]) in one 4 KiB page: a segment's `last_sect` is below this.
const SECTORS_PER_PAGE: u8 = (4096 / SECTOR_SIZE) as u8;

/// The most requests handed to [`BlockIo::perform`] at once.
pub const BATCH: usize = 32;

/// The most segments of an indirect request (`feature-max-indirect-segments`): 256 KiB. Linux's
/// blkfront uses at most 32 unless told otherwise (its `max_indirect_segments`).
pub const MAX_INDIRECT_SEGMENTS: usize = 64;

const _: () =
    assert!(MAX_INDIRECT_SEGMENTS.div_ceil(SEGMENTS_PER_INDIRECT_PAGE) <= MAX_INDIRECT_PAGES);

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
    segments: [DataSegment; MAX_INDIRECT_SEGMENTS],
    count: u8,
    len: u32,
}

impl Checked {
    /// The frontend's id, echoed in the response.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The operation the response carries: the request's `operation`, or an indirect
    /// request's `indirect_op` (as Linux's blkback answers, and blkfront expects).
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
    /// More segments than a request holds ([`MAX_SEGMENTS`], or [`MAX_INDIRECT_SEGMENTS`]
    /// for an indirect one).
    #[error("{0} segments, more than a request may hold")]
    TooManySegments(u16),
    /// An indirect request whose `indirect_op` is neither read nor write.
    #[error("indirect operation {0} is not a read or a write")]
    BadIndirectOperation(u8),
    /// An indirect request's segment pages could not be read (a grant refused).
    #[error("the indirect segment pages are not readable")]
    IndirectUnreadable,
    /// A segment whose sectors are empty or leave the page.
    #[error("segment {index} covers sectors {first}..={last} of a page of 8")]
    BadSegment {
        /// The segment's index.
        index: u16,
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

/// Validates one request slot against `disk`. An indirect request's segments are read with
/// `indirect` (the pages' grant references, the descriptors to fill; `false` if a page could
/// not be read) once its header passed, then checked as a direct request's.
///
/// # Errors
///
/// The [`Refusal`] to answer the frontend with (its [`status`](Refusal::status)): an
/// unsupported operation, no or too many segments, a bad indirect operation or unreadable
/// segment pages, a segment leaving its page, or sectors past the disk's end or a write to a
/// read-only disk.
pub fn check(
    slot: &RingRequest,
    disk: &Disk,
    indirect: impl FnOnce(&[GrantRef], &mut [Segment]) -> bool,
) -> Result<Checked, Refusal> {
    let mut descriptors = [Segment::default(); MAX_INDIRECT_SEGMENTS];
    let (operation, id, sector, descriptors) = match slot.operation() {
        OP_INDIRECT => {
            let request: IndirectRequest = slot.get();
            let operation = request.indirect_op;
            if operation != OP_READ && operation != OP_WRITE {
                return Err(Refusal::BadIndirectOperation(operation));
            }
            let count = usize::from(request.nr_segments);
            if count == 0 {
                return Err(Refusal::NoSegment);
            }
            if count > MAX_INDIRECT_SEGMENTS {
                return Err(Refusal::TooManySegments(request.nr_segments));
            }
            let pages = count.div_ceil(SEGMENTS_PER_INDIRECT_PAGE);
            let grefs = request.indirect_grefs.map(GrantRef);
            if !indirect(&grefs[..pages], &mut descriptors[..count]) {
                return Err(Refusal::IndirectUnreadable);
            }
            (
                operation,
                request.id,
                request.sector_number,
                &descriptors[..count],
            )
        }
        operation => {
            let request: Request = slot.get();
            let count = usize::from(request.nr_segments);
            if count > MAX_SEGMENTS {
                return Err(Refusal::TooManySegments(count as u16));
            }
            descriptors[..count].copy_from_slice(&request.seg[..count]);
            (
                operation,
                request.id,
                request.sector_number,
                &descriptors[..count],
            )
        }
    };
    let kind = match operation {
        OP_READ => Kind::Read,
        OP_WRITE => Kind::Write,
        OP_FLUSH_DISKCACHE => Kind::Flush,
        other => return Err(Refusal::Unsupported(other)),
    };
    if descriptors.is_empty() && kind != Kind::Flush {
        return Err(Refusal::NoSegment);
    }
    let mut segments = Checked::EMPTY.segments;
    let mut sectors = 0u64;
    for (index, (seg, out)) in descriptors.iter().zip(&mut segments).enumerate() {
        let (first, last) = (seg.first_sect, seg.last_sect);
        if first > last || last >= SECTORS_PER_PAGE {
            return Err(Refusal::BadSegment {
                index: index as u16,
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
        id,
        operation,
        kind,
        // So that `offset` is a byte on the disk for every checked request.
        sector: if sectors == 0 { 0 } else { sector },
        segments,
        count: descriptors.len() as u8,
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

    /// Copies an indirect request's segment descriptors (`out.len()` of them, 512 per page) out
    /// of the frontend's pages `grefs`; `false` if a page could not be read (a grant refused).
    fn read_indirect(&mut self, grefs: &[GrantRef], out: &mut [Segment]) -> bool;
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
    /// The valid requests of one batch (kept to reuse its allocation).
    batch: Vec<Checked>,
}

impl<M: RingMemory> Backend<M> {
    /// The back half of the ring of 2^`order` pages the frontend initialised in `mem`.
    ///
    /// # Errors
    ///
    /// [`ShapeError`] if `mem` is shorter than 2^`order` pages or the order is too large.
    pub fn new(mem: M, order: u8, disk: Disk) -> Result<Self, ShapeError> {
        Ok(Self {
            ring: BackRing::init(mem, order)?,
            disk,
            counts: Counts::default(),
            batch: Vec::with_capacity(BATCH),
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
    /// # Errors
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
        let mut valid = core::mem::take(&mut self.batch);
        valid.clear();
        let mut dry = false;
        let mut error = None;
        while valid.len() < BATCH {
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
            match check(&slot, &self.disk, |grefs, out| io.read_indirect(grefs, out)) {
                Ok(checked) => valid.push(checked),
                Err(refusal) => {
                    self.counts.refused += 1;
                    let operation = match slot.operation() {
                        OP_INDIRECT => slot.get::<IndirectRequest>().indirect_op,
                        operation => operation,
                    };
                    self.respond(slot.id(), operation, refusal.status())?;
                }
            }
        }
        let mut statuses = [RSP_ERROR; BATCH];
        let statuses = &mut statuses[..valid.len()];
        if !valid.is_empty() {
            io.perform(&valid, statuses);
        }
        let mut result = Ok(());
        for (request, &status) in valid.iter().zip(statuses.iter()) {
            // Anything but success is a failure to the frontend.
            let status = if status == RSP_OKAY {
                self.counts.done += 1;
                RSP_OKAY
            } else {
                self.counts.failed += 1;
                RSP_ERROR
            };
            result = result.and(self.respond(request.id, request.operation, status));
        }
        self.batch = valid;
        result?;
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
        }; MAX_INDIRECT_SEGMENTS],
        count: 0,
        len: 0,
    };
}
