//! A disk in memory behind the backend's core, and a hostile frontend that writes whatever its
//! [`Chaos`] says into the ring: shared by the backend's tests and its fuzz target.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use xen_blk::abi::{
    IndirectRequest, MAX_SEGMENTS, OP_FLUSH_DISKCACHE, OP_INDIRECT, OP_READ, OP_WRITE, RSP_OKAY,
    Request, RingRequest, SECTOR_SIZE, Segment,
};
use xen_blk::back::{BATCH, Backend, BlockIo, Checked, Disk, Kind, MAX_INDIRECT_SEGMENTS};
use xen_grant::GrantRef;
use xen_shared::{ReqRingError, RingMemory, SharedPage};
use zerocopy::IntoBytes;

/// `req_prod` in the ring's header.
pub(crate) const REQ_PROD: usize = 0;
/// `req_event`.
pub(crate) const REQ_EVENT: usize = 4;
/// `rsp_prod`.
pub(crate) const RSP_PROD: usize = 8;

/// A disk in memory and the pages the frontend granted: a request naming a grant not in
/// `grants` fails, as Xen refuses the copy. Asserts what validation promises: every request it
/// is given lies within the disk, each segment within its page.
pub(crate) struct MemIo {
    pub(crate) disk: Vec<u8>,
    pub(crate) grants: BTreeMap<u32, [u8; 4096]>,
    pub(crate) flushes: u32,
    pub(crate) performed: u32,
}

impl MemIo {
    pub(crate) fn new(sectors: u64) -> Self {
        Self {
            disk: vec![0; sectors as usize * SECTOR_SIZE],
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

    fn read_indirect(&mut self, grefs: &[GrantRef], out: &mut [Segment]) -> bool {
        assert!(!grefs.is_empty() && out.len() <= grefs.len() * 512);
        for (chunk, gref) in out.as_mut_bytes().chunks_mut(4096).zip(grefs) {
            let Some(page) = self.grants.get(&gref.0) else {
                return false;
            };
            chunk.copy_from_slice(&page[..chunk.len()]);
        }
        true
    }
}

/// An indirect request: `operation` as `indirect_op`, the segment descriptors in the pages
/// `grefs`, `count` of them.
pub(crate) fn indirect(
    operation: u8,
    id: u64,
    sector: u64,
    count: u16,
    grefs: &[u32],
) -> RingRequest {
    let mut request = IndirectRequest {
        operation: OP_INDIRECT,
        indirect_op: operation,
        nr_segments: count,
        id,
        sector_number: sector,
        ..Default::default()
    };
    request.indirect_grefs[..grefs.len()].copy_from_slice(grefs);
    RingRequest::new(&request)
}

/// Writes `segs` (`(gref, first_sect, last_sect)`) as descriptors into page `gref` of `io`.
pub(crate) fn descriptors(io: &mut MemIo, gref: u32, segs: &[(u32, u8, u8)]) {
    let page = io.grants.entry(gref).or_insert([0; 4096]);
    for (i, &(g, first_sect, last_sect)) in segs.iter().enumerate() {
        let seg = Segment {
            gref: g,
            first_sect,
            last_sect,
            _pad: [0; 2],
        };
        page[i * 8..i * 8 + 8].copy_from_slice(seg.as_bytes());
    }
}

/// A request slot: `segs` are `(gref, first_sect, last_sect)`.
pub(crate) fn request(operation: u8, id: u64, sector: u64, segs: &[(u32, u8, u8)]) -> RingRequest {
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

/// Where the hostile frontend's decisions come from.
pub(crate) trait Chaos {
    /// The next decision.
    fn next(&mut self) -> u64;

    /// A decision below `n` (> 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What one hostile run saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Requests answered.
    pub(crate) answered: u64,
    /// Whether the backend refused an impossible index (and the run stopped there).
    pub(crate) disconnected: bool,
}

/// One run of a hostile frontend on a one-page ring over a 64-sector disk: a few rounds of
/// slots filled with garbage shaped like requests (random operations, segment counts,
/// sectors, grants, `first_sect`/`last_sect`), published with the true `req_prod` or, now and
/// then, a random one. Checks that the backend answers exactly the requests it took, each once
/// (`rsp_prod` moves by the count answered), and stops at the first impossible index; never
/// panics (`MemIo` asserts what validation promises).
pub(crate) fn hostile_run(chaos: &mut impl Chaos) -> Outcome {
    let disk = Disk {
        sectors: 64,
        readonly: chaos.below(4) == 0,
    };
    let page = SharedPage::new();
    let mem = page.mem();
    let mut back = Backend::new(mem, 0, disk).unwrap();
    let mut io = MemIo::new(disk.sectors);
    for gref in 0..4 {
        io.grants.insert(gref, [gref as u8; 4096]);
    }
    // Page 3 holds valid descriptors (whole pages of grants 0 to 3), the others bytes that read
    // as descriptors naming grants never made, or empty or out-of-page sectors.
    let valid: Vec<_> = (0..MAX_INDIRECT_SEGMENTS as u32)
        .map(|i| (i % 4, 0, 7))
        .collect();
    descriptors(&mut io, 3, &valid);
    let mut outcome = Outcome::default();
    let (mut req_prod, mut rsp_seen) = (0u32, 0u32);
    for _ in 0..(chaos.below(6) + 1) {
        let free = 32 - req_prod.wrapping_sub(rsp_seen);
        let count = chaos.below(u64::from(free) + 1) as u32;
        for i in 0..count {
            let mut request = Request {
                operation: [OP_READ, OP_WRITE, OP_FLUSH_DISKCACHE, chaos.next() as u8]
                    [chaos.below(4) as usize],
                nr_segments: chaos.below(MAX_SEGMENTS as u64 + 3) as u8,
                id: chaos.next(),
                sector_number: if chaos.below(4) == 0 {
                    chaos.next()
                } else {
                    chaos.below(70)
                },
                ..Default::default()
            };
            for seg in &mut request.seg {
                *seg = Segment {
                    gref: chaos.below(6) as u32,
                    first_sect: chaos.below(10) as u8,
                    last_sect: chaos.below(10) as u8,
                    _pad: [0; 2],
                };
            }
            let slot_bytes = if chaos.below(5) == 0 {
                let grefs = [0, 1, 2, 3, 4, 5].map(|_| chaos.below(6) as u32);
                let count = chaos.below(MAX_INDIRECT_SEGMENTS as u64 + 3) as u16;
                indirect(
                    request.operation,
                    request.id,
                    request.sector_number,
                    count,
                    &grefs,
                )
            } else {
                RingRequest::new(&request)
            };
            let slot = 64 + (req_prod.wrapping_add(i) % 32) as usize * 112;
            mem.write(slot, slot_bytes.as_bytes()).unwrap();
        }
        req_prod = req_prod.wrapping_add(count);
        let published = if chaos.below(10) == 0 {
            chaos.next() as u32
        } else {
            req_prod
        };
        mem.store_index(REQ_PROD, published, Ordering::SeqCst)
            .unwrap();
        let before = back.counts();
        let result = back.serve(&mut io);
        let after = back.counts();
        let answered = (after.done + after.failed + after.refused)
            - (before.done + before.failed + before.refused);
        let rsp_prod = mem.load_index(RSP_PROD, Ordering::SeqCst).unwrap();
        assert_eq!(u64::from(rsp_prod.wrapping_sub(rsp_seen)), answered);
        outcome.answered += answered;
        rsp_seen = rsp_prod;
        match result {
            // A random index that happened to be possible: what it claims was taken.
            Ok(_) => req_prod = published,
            Err(ReqRingError::ProducerOverflow { .. }) => {
                outcome.disconnected = true;
                return outcome;
            }
            Err(other) => panic!("{other:?}"),
        }
        // Everything published was answered.
        assert_eq!(rsp_prod, req_prod);
    }
    outcome
}
