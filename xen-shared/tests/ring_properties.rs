//! Property tests of the byte ring: against a `VecDeque` model with an honest peer, and against a
//! hostile peer that rewrites indices and data between and during operations. Deterministic
//! (seeded), so a failure replays; fewer rounds under Miri.

mod support {
    pub(crate) mod hostile;
    pub(crate) mod rng;
}

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};

use support::hostile::{Cursors, Hostile, Outcome, cursor_step, step};
use support::rng::Rng;
use xen_shared::{
    Consumer, ConsumerCursor, Producer, ProducerCursor, RingError, RingLayout, SharedMem,
    SharedPage,
};

const LAYOUTS: [RingLayout; 4] = [
    RingLayout::CONSOLE_IN,
    RingLayout::CONSOLE_OUT,
    RingLayout::XENSTORE_REQ,
    RingLayout::XENSTORE_RSP,
];

const ROUNDS: usize = if cfg!(miri) { 4 } else { 200 };
const OPS: usize = if cfg!(miri) { 40 } else { 400 };
/// The honest peer's operations: fewer under Miri, where each byte through the ring costs much
/// (each operation moves up to a ring and more; the unit tests cover the full ring and the 2^32
/// wrap directly). The hostile peer keeps [`OPS`]: it must meet every outcome.
const HONEST_OPS: usize = if cfg!(miri) { 16 } else { 400 };

impl Rng {
    /// An index value: often near the 2^32 wrap or near a legal value, sometimes anything.
    fn index_near(&mut self, legal: u32, size: u32) -> u32 {
        match self.below(4) {
            0 => self.next() as u32,
            1 => legal.wrapping_add(size).wrapping_add(self.below(3) as u32),
            2 => u32::MAX - self.below(3000) as u32,
            _ => legal.wrapping_add(self.below(size as usize + 1) as u32),
        }
    }
}

fn index(mem: SharedMem<'_>, offset: usize) -> &AtomicU32 {
    mem.atomic::<AtomicU32>(offset).unwrap()
}

#[test]
fn an_honest_peer_sees_the_model_bytes_in_order() {
    let mut rng = Rng(1);
    for round in 0..ROUNDS {
        let page = SharedPage::new();
        let mem = page.mem();
        let layout = LAYOUTS[round % LAYOUTS.len()];
        // Start anywhere, often just before the 2^32 wrap.
        let start = rng.index_near(0, layout.size);
        index(mem, layout.prod).store(start, Ordering::Relaxed);
        index(mem, layout.cons).store(start, Ordering::Relaxed);
        let mut tx = Producer::new(mem, layout).unwrap();
        let mut rx = Consumer::new(mem, layout).unwrap();
        let mut model = VecDeque::new();
        let mut next_byte = 0u8;
        for _ in 0..HONEST_OPS {
            let len = rng.below(layout.size as usize + 300);
            if rng.below(2) == 0 {
                let src: Vec<u8> = (0..len)
                    .map(|_| {
                        next_byte = next_byte.wrapping_add(1);
                        next_byte
                    })
                    .collect();
                let n = tx.write(&src).unwrap();
                assert_eq!(n, len.min(layout.size as usize - model.len()));
                model.extend(&src[..n]);
                next_byte = next_byte.wrapping_sub((len - n) as u8);
            } else {
                let mut dst = vec![0u8; len];
                let n = rx.read(&mut dst).unwrap();
                assert_eq!(n, len.min(model.len()));
                let expected: Vec<u8> = model.drain(..n).collect();
                assert_eq!(dst[..n], expected[..]);
            }
            assert_eq!(tx.unconsumed().unwrap(), model.len());
            assert_eq!(rx.available().unwrap(), model.len());
            assert_eq!(tx.free().unwrap(), layout.size as usize - model.len());
        }
    }
}

impl support::hostile::Chaos for Rng {
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

#[test]
fn a_hostile_peer_gets_typed_errors_and_never_an_out_of_bounds_access() {
    let mut rng = Rng(2);
    let mut outcomes = Vec::new();
    for round in 0..ROUNDS {
        let page = SharedPage::new();
        let layout = LAYOUTS[round % LAYOUTS.len()];
        let peer = Hostile::new(page.mem(), layout, Rng(round as u64));
        let mut tx = Producer::new(&peer, layout).unwrap();
        let mut rx = Consumer::new(&peer, layout).unwrap();
        let mut buf = vec![0x5a; layout.size as usize * 2];
        for _ in 0..OPS {
            let len = rng.below(buf.len());
            let op = rng.next() as u8;
            outcomes.push(step(&peer, &mut tx, &mut rx, op, len, &mut buf));
        }
    }
    // The peer's moves must have produced every kind of outcome, or the test proved little:
    // each at least 1% of the operations (under Miri's few operations, at least once).
    let floor = if cfg!(miri) {
        1
    } else {
        outcomes.len() / 100 + 1
    };
    for kind in [Outcome::Corrupt, Outcome::Nothing, Outcome::Moved] {
        let count = outcomes.iter().filter(|o| **o == kind).count();
        assert!(count >= floor, "{kind:?}: {count} of {}", outcomes.len());
    }
}

/// Cursors (validated once, then one peer index per look) against the hostile peer: each look
/// reads only the peer's index, refuses a count the ring cannot hold or that moved the wrong
/// way, and each copy moves what the last look found and nothing beyond.
#[test]
fn cursors_against_a_hostile_peer_read_one_index_per_look_and_refuse_regressions() {
    let mut rng = Rng(4);
    let mut outcomes = Vec::new();
    let mut refusals = 0;
    for round in 0..ROUNDS {
        let page = SharedPage::new();
        let mem = page.mem();
        let layout = LAYOUTS[round % LAYOUTS.len()];
        let start = rng.index_near(0, layout.size);
        index(mem, layout.prod).store(start, Ordering::Relaxed);
        index(mem, layout.cons).store(start, Ordering::Relaxed);
        let mut cursors = Cursors {
            tx: ProducerCursor::new(&mem, layout).unwrap(),
            rx: ConsumerCursor::new(&mem, layout).unwrap(),
            prod: start,
            cons: start,
        };
        let peer = Hostile::new(mem, layout, Rng(round as u64 + 1000));
        let mut buf = vec![0x5a; layout.size as usize * 2];
        for _ in 0..OPS {
            let len = rng.below(buf.len());
            let op = rng.next() as u8;
            match cursor_step(&peer, &mut cursors, op, len, &mut buf) {
                Some(outcome) => outcomes.push(outcome),
                None => {
                    refusals += 1;
                    break;
                }
            }
        }
    }
    // Every kind of outcome happened, or the test proved little.
    assert!(
        refusals >= if cfg!(miri) { 1 } else { ROUNDS / 4 },
        "{refusals} refusals"
    );
    for kind in [Outcome::Nothing, Outcome::Moved] {
        assert!(outcomes.contains(&kind), "no {kind:?}");
    }
}

#[test]
fn a_peer_thread_scribbling_concurrently_is_not_a_data_race() {
    // Under Miri this checks that ring and peer, both on atomics, never race in Rust's model.
    let page = SharedPage::new();
    let mem = page.mem();
    let layout = RingLayout::CONSOLE_OUT;
    let steps = if cfg!(miri) { 50 } else { 20_000 };
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = Rng(3);
            for _ in 0..steps {
                let v = rng.index_near(0, layout.size);
                index(mem, [layout.prod, layout.cons][rng.below(2)]).store(v, Ordering::Release);
                mem.write(layout.data + rng.below(2048), &[rng.next() as u8])
                    .unwrap();
            }
        });
        let mut tx = Producer::new(mem, layout).unwrap();
        let mut rx = Consumer::new(mem, layout).unwrap();
        let mut buf = [0u8; 300];
        for _ in 0..steps {
            for result in [tx.write(&buf), rx.read(&mut buf)] {
                match result {
                    Ok(n) => assert!(n <= buf.len()),
                    Err(e) => assert!(matches!(e, RingError::Corrupt { .. })),
                }
            }
        }
    });
}
