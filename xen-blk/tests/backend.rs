//! The backend's core against a frontend on the mock ring: valid requests served, every
//! malformed one answered with an error and never performed, a grant never made failing its
//! request alone, an impossible ring index a disconnect; and a hostile frontend, seeded.

mod support {
    #![allow(dead_code)]
    pub(crate) mod hostile_front;
}

use std::sync::atomic::Ordering;

use support::hostile_front::{
    Chaos, MemIo, REQ_EVENT, REQ_PROD, descriptors, hostile_run, indirect, request,
};
use xen_blk::abi::{
    MAX_SEGMENTS, OP_DISCARD, OP_FLUSH_DISKCACHE, OP_INDIRECT, OP_READ, OP_WRITE, OP_WRITE_BARRIER,
    RSP_EOPNOTSUPP, RSP_ERROR, RSP_OKAY, Request, Response, RingRequest, Segment,
};
use xen_blk::back::{BATCH, Backend, Counts, Disk, MAX_INDIRECT_SEGMENTS};
use xen_shared::{FrontRing, ReqRingError, RingMemory, SharedMem, SharedPage};

const DISK: Disk = Disk {
    sectors: 64,
    readonly: false,
};

/// Sends `requests`, lets the backend serve them, returns the responses in order.
fn exchange(
    front: &mut FrontRing<RingRequest, Response, SharedMem<'_>>,
    back: &mut Backend<SharedMem<'_>>,
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
        page.mem().load_index(REQ_EVENT, Ordering::SeqCst),
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
        .store_index(REQ_PROD, 34, Ordering::SeqCst)
        .unwrap();
    assert!(matches!(
        back.serve(&mut io),
        Err(ReqRingError::ProducerOverflow { prod: 34, .. })
    ));
    // Behind what was consumed is as impossible.
    page.mem()
        .store_index(REQ_PROD, 0, Ordering::SeqCst)
        .unwrap();
    assert!(back.serve(&mut io).is_err());
    assert_eq!(io.performed, 1);
}

#[test]
fn indirect_requests_carry_many_segments_and_are_answered_with_their_indirect_op() {
    let page = SharedPage::new();
    let mut front = FrontRing::init(page.mem(), 0).unwrap();
    let disk = Disk {
        sectors: 256,
        ..DISK
    };
    let mut back = Backend::new(page.mem(), 0, disk).unwrap();
    let mut io = MemIo::new(disk.sectors);
    // 20 whole pages: grants 100..120, written as 20 x 8 sectors from sector 0.
    for g in 100..120u32 {
        io.grants.insert(g, [g as u8; 4096]);
    }
    let segs: Vec<_> = (100..120u32).map(|g| (g, 0, 7)).collect();
    descriptors(&mut io, 7, &segs);
    let rsp = exchange(
        &mut front,
        &mut back,
        &mut io,
        &[indirect(OP_WRITE, 1, 0, 20, &[7])],
    );
    assert_eq!(
        (rsp[0].id, rsp[0].operation, rsp[0].status),
        (1, OP_WRITE, RSP_OKAY)
    );
    for (i, g) in (100..120u32).enumerate() {
        assert!(
            io.disk[i * 4096..(i + 1) * 4096]
                .iter()
                .all(|&b| b == g as u8)
        );
    }
    // Read back sectors 8..=15 (page 101's bytes) into page 200's sectors 0..=7.
    io.grants.insert(200, [0; 4096]);
    descriptors(&mut io, 8, &[(200, 0, 7)]);
    let rsp = exchange(
        &mut front,
        &mut back,
        &mut io,
        &[indirect(OP_READ, 2, 8, 1, &[8])],
    );
    assert_eq!((rsp[0].operation, rsp[0].status), (OP_READ, RSP_OKAY));
    assert!(io.grants[&200].iter().all(|&b| b == 101));
}

#[test]
fn malformed_indirect_requests_are_refused_with_their_indirect_op() {
    let page = SharedPage::new();
    let mut front = FrontRing::init(page.mem(), 0).unwrap();
    let mut back = Backend::new(page.mem(), 0, DISK).unwrap();
    let mut io = MemIo::new(DISK.sectors);
    io.grants.insert(1, [0; 4096]);
    descriptors(&mut io, 7, &[(1, 0, 7), (1, 3, 2)]);
    descriptors(&mut io, 8, &[(1, 0, 7); 9]);
    let max = MAX_INDIRECT_SEGMENTS as u16;
    let cases = [
        // A flush or anything else is not an indirect operation.
        (
            indirect(OP_FLUSH_DISKCACHE, 1, 0, 1, &[7]),
            OP_FLUSH_DISKCACHE,
        ),
        (indirect(OP_INDIRECT, 2, 0, 1, &[7]), OP_INDIRECT),
        (indirect(OP_READ, 3, 0, 0, &[7]), OP_READ),
        (indirect(OP_READ, 4, 0, max + 1, &[7]), OP_READ),
        // The descriptor page is a grant never made.
        (indirect(OP_READ, 5, 0, 1, &[99]), OP_READ),
        // Its second segment is empty.
        (indirect(OP_WRITE, 6, 0, 2, &[7]), OP_WRITE),
        // 9 pages from sector 0 end past the disk's 64 sectors.
        (indirect(OP_READ, 7, 0, 9, &[8]), OP_READ),
    ];
    let slots: Vec<_> = cases.iter().map(|(r, _)| *r).collect();
    let rsp = exchange(&mut front, &mut back, &mut io, &slots);
    for ((slot, operation), rsp) in cases.iter().zip(&rsp) {
        assert_eq!(
            (rsp.id, rsp.operation, rsp.status),
            (slot.id(), *operation, RSP_ERROR)
        );
    }
    assert_eq!(io.performed, 0);
    assert_eq!(back.counts().refused, cases.len() as u64);
}

/// A tiny deterministic generator (xorshift64*), so the hostile runs repeat.
struct Rng(u64);

impl Chaos for Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Thousands of hostile runs: the backend never panics, hands the data path only requests
/// within the disk and their pages, answers every request it took exactly once, and
/// disconnects at an impossible index (which some runs publish).
#[test]
fn a_hostile_frontend_gets_answers_or_a_disconnect_never_a_panic() {
    let runs = if cfg!(miri) { 10 } else { 3000 };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut disconnects, mut answered) = (0, 0);
    for _ in 0..runs {
        let outcome = hostile_run(&mut rng);
        disconnects += u32::from(outcome.disconnected);
        answered += outcome.answered;
    }
    assert!(
        cfg!(miri) || (disconnects > 0 && answered > 1000),
        "{disconnects} {answered}"
    );
}
