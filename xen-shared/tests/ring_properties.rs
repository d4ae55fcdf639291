//! Property tests of the byte ring: against a `VecDeque` model with an honest peer, and against a
//! hostile peer that rewrites indices and data between and during operations. Deterministic
//! (seeded), so a failure replays; fewer rounds under Miri.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};

use xen_shared::{
    AccessError, Consumer, Producer, RingError, RingLayout, RingMemory, SharedMem, SharedPage,
};

const LAYOUTS: [RingLayout; 4] = [
    RingLayout::CONSOLE_IN,
    RingLayout::CONSOLE_OUT,
    RingLayout::XENSTORE_REQ,
    RingLayout::XENSTORE_RSP,
];

const ROUNDS: usize = if cfg!(miri) { 4 } else { 200 };
const OPS: usize = if cfg!(miri) { 40 } else { 400 };

/// splitmix64: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
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
        for _ in 0..OPS {
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

/// Shared memory played by a hostile peer: before and after every access it may rewrite an
/// index or data bytes. It counts index loads and remembers what each returned and what was stored.
struct Hostile<'a> {
    mem: SharedMem<'a>,
    layout: RingLayout,
    rng: RefCell<Rng>,
    /// Per operation: loads of (cons, prod), the values they returned, and the stored value.
    loads: Cell<(u32, u32)>,
    seen: Cell<(Option<u32>, Option<u32>)>,
    stored: Cell<Option<(usize, u32)>>,
}

impl<'a> Hostile<'a> {
    fn new(mem: SharedMem<'a>, layout: RingLayout, seed: u64) -> Self {
        Self {
            mem,
            layout,
            rng: RefCell::new(Rng(seed)),
            loads: Cell::new((0, 0)),
            seen: Cell::new((None, None)),
            stored: Cell::new(None),
        }
    }

    fn begin(&self) {
        self.loads.set((0, 0));
        self.seen.set((None, None));
        self.stored.set(None);
    }

    /// The peer's move: usually nothing, sometimes a new index or scribbled data.
    fn meddle(&self) {
        let mut rng = self.rng.borrow_mut();
        let size = self.layout.size;
        match rng.below(6) {
            0 => {
                let cons = index(self.mem, self.layout.cons).load(Ordering::Relaxed);
                let v = rng.index_near(cons, size);
                index(self.mem, self.layout.prod).store(v, Ordering::Relaxed);
            }
            1 => {
                let prod = index(self.mem, self.layout.prod).load(Ordering::Relaxed);
                let v = rng.index_near(prod.wrapping_sub(size), size);
                index(self.mem, self.layout.cons).store(v, Ordering::Relaxed);
            }
            2 => {
                let at = rng.below(size as usize);
                let byte = rng.next() as u8;
                self.mem.write(self.layout.data + at, &[byte]).unwrap();
            }
            _ => {}
        }
    }
}

impl RingMemory for Hostile<'_> {
    fn len(&self) -> usize {
        self.mem.len()
    }
    fn load_index(&self, offset: usize, order: Ordering) -> Result<u32, AccessError> {
        self.meddle();
        let v = self.mem.load_index(offset, order)?;
        let (mut cons, mut prod) = self.loads.get();
        let (mut seen_cons, mut seen_prod) = self.seen.get();
        if offset == self.layout.cons {
            cons += 1;
            seen_cons = Some(v);
        } else if offset == self.layout.prod {
            prod += 1;
            seen_prod = Some(v);
        } else {
            panic!("load of a non-index offset {offset}");
        }
        self.loads.set((cons, prod));
        self.seen.set((seen_cons, seen_prod));
        self.meddle();
        Ok(v)
    }
    fn store_index(&self, offset: usize, value: u32, order: Ordering) -> Result<(), AccessError> {
        assert!(
            self.stored.get().is_none(),
            "two index stores in one operation"
        );
        assert_eq!(
            order,
            Ordering::Release,
            "an index is published with Release"
        );
        self.stored.set(Some((offset, value)));
        self.mem.store_index(offset, value, order)?;
        self.meddle();
        Ok(())
    }
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), AccessError> {
        assert!(offset >= self.layout.data);
        assert!(offset + dst.len() <= self.layout.data + self.layout.size as usize);
        self.meddle();
        self.mem.read(offset, dst)
    }
    fn write(&self, offset: usize, src: &[u8]) -> Result<(), AccessError> {
        assert!(offset >= self.layout.data);
        assert!(offset + src.len() <= self.layout.data + self.layout.size as usize);
        self.mem.write(offset, src)?;
        self.meddle();
        Ok(())
    }
}

/// What one operation did, as judged.
#[derive(Debug, PartialEq)]
enum Outcome {
    Corrupt,
    Nothing,
    Moved,
}

/// Checks one operation's outcome against what the peer let it see.
fn judge(
    peer: &Hostile<'_>,
    result: Result<usize, RingError>,
    requested: usize,
    producing: bool,
    publishes: bool,
) -> Outcome {
    let layout = peer.layout;
    let (cons_loads, prod_loads) = peer.loads.get();
    assert!(
        cons_loads <= 1 && prod_loads <= 1,
        "indices read {cons_loads}/{prod_loads} times"
    );
    let (cons, prod) = peer.seen.get();
    let (cons, prod) = (cons.unwrap(), prod.unwrap());
    let used = prod.wrapping_sub(cons);
    match result {
        Err(RingError::Corrupt {
            prod: p,
            cons: c,
            size,
        }) => {
            assert_eq!((p, c, size), (prod, cons, layout.size));
            assert!(used > layout.size);
            assert!(peer.stored.get().is_none());
            Outcome::Corrupt
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(n) => {
            assert!(used <= layout.size);
            let room = if producing { layout.size - used } else { used } as usize;
            assert_eq!(n, requested.min(room));
            let expected = match (n, producing, publishes) {
                (0, _, _) | (_, _, false) => None,
                (_, true, true) => Some((layout.prod, prod.wrapping_add(n as u32))),
                (_, false, true) => Some((layout.cons, cons.wrapping_add(n as u32))),
            };
            assert_eq!(peer.stored.get(), expected);
            if n == 0 {
                Outcome::Nothing
            } else {
                Outcome::Moved
            }
        }
    }
}

#[test]
fn a_hostile_peer_gets_typed_errors_and_never_an_out_of_bounds_access() {
    let mut rng = Rng(2);
    let mut outcomes = Vec::new();
    for round in 0..ROUNDS {
        let page = SharedPage::new();
        let layout = LAYOUTS[round % LAYOUTS.len()];
        let peer = Hostile::new(page.mem(), layout, round as u64);
        let mut tx = Producer::new(&peer, layout).unwrap();
        let mut rx = Consumer::new(&peer, layout).unwrap();
        for _ in 0..OPS {
            let len = rng.below(layout.size as usize * 2);
            let mut buf = vec![0x5a; len];
            peer.begin();
            outcomes.push(match rng.below(5) {
                0 => judge(&peer, tx.write(&buf), len, true, true),
                1 => judge(&peer, rx.read(&mut buf), len, false, true),
                2 => judge(&peer, rx.peek(&mut buf), len, false, false),
                3 => judge(&peer, tx.free(), usize::MAX, true, false),
                _ => judge(&peer, rx.available(), usize::MAX, false, false),
            });
        }
    }
    // The peer's moves must have produced every kind of outcome, or the test proved little.
    for kind in [Outcome::Corrupt, Outcome::Nothing, Outcome::Moved] {
        let count = outcomes.iter().filter(|o| **o == kind).count();
        assert!(
            count * 50 > outcomes.len(),
            "{kind:?}: {count} of {}",
            outcomes.len()
        );
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
