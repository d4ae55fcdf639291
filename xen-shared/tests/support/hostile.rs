//! A hostile ring peer, shared by the property tests and the libFuzzer target: ring memory
//! whose every access may be preceded and followed by the peer rewriting an index or
//! scribbling data, as a source of chaos bytes (a seeded generator, or the fuzzer's input)
//! decides. It counts index loads, remembers the values they returned and the index stored,
//! and refuses any access outside the data array; [`step`] runs one operation and judges it.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU32, Ordering};

use xen_shared::{
    AccessError, Consumer, ConsumerCursor, Producer, ProducerCursor, RingError, RingLayout,
    RingMemory, SharedMem,
};

/// Where the peer's decisions come from.
pub(crate) trait Chaos {
    /// The next decision byte.
    fn byte(&mut self) -> u8;
    /// Four decision bytes as an index value.
    fn word(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
}

/// The hostile peer's memory.
pub(crate) struct Hostile<'a, S> {
    mem: SharedMem<'a>,
    pub(crate) layout: RingLayout,
    pub(crate) chaos: RefCell<S>,
    /// Per operation: loads of [cons, prod], the values they returned, the index stored.
    loads: Cell<[u32; 2]>,
    seen: Cell<[Option<u32>; 2]>,
    stored: Cell<Option<(usize, u32)>>,
}

impl<'a, S: Chaos> Hostile<'a, S> {
    pub(crate) fn new(mem: SharedMem<'a>, layout: RingLayout, chaos: S) -> Self {
        Self {
            mem,
            layout,
            chaos: RefCell::new(chaos),
            loads: Cell::new([0, 0]),
            seen: Cell::new([None, None]),
            stored: Cell::new(None),
        }
    }

    fn index(&self, offset: usize) -> &AtomicU32 {
        self.mem.atomic::<AtomicU32>(offset).unwrap()
    }

    /// The peer's move: usually nothing; sometimes any index value, a near-legal one, or a
    /// scribbled data byte.
    fn meddle(&self) {
        let mut chaos = self.chaos.borrow_mut();
        let (prod, cons, size) = (self.layout.prod, self.layout.cons, self.layout.size);
        match chaos.byte() % 16 {
            0 => self.index(prod).store(chaos.word(), Ordering::Relaxed),
            1 => self.index(cons).store(chaos.word(), Ordering::Relaxed),
            2..=4 => {
                // cons + [0, size + 3]: around the legal limit.
                let c = self.index(cons).load(Ordering::Relaxed);
                let d = u32::from(chaos.byte()) * size / 255 + u32::from(chaos.byte() % 4);
                self.index(prod).store(c.wrapping_add(d), Ordering::Relaxed);
            }
            5 => {
                let at = chaos.word() as usize % size as usize;
                let byte = chaos.byte();
                self.mem.write(self.layout.data + at, &[byte]).unwrap();
            }
            _ => {}
        }
    }

    fn check_data(&self, offset: usize, len: usize) {
        let end = self.layout.data + self.layout.size as usize;
        assert!(
            self.layout.data <= offset && offset + len <= end,
            "{len} bytes at {offset}: outside the data array"
        );
    }
}

impl<S: Chaos> RingMemory for Hostile<'_, S> {
    fn len(&self) -> usize {
        self.mem.len()
    }
    fn load_index(&self, offset: usize, order: Ordering) -> Result<u32, AccessError> {
        assert!(offset == self.layout.prod || offset == self.layout.cons);
        self.meddle();
        let v = self.mem.load_index(offset, order)?;
        let which = usize::from(offset == self.layout.prod);
        let mut loads = self.loads.get();
        loads[which] += 1;
        assert_eq!(loads[which], 1, "an index read twice in one operation");
        self.loads.set(loads);
        let mut seen = self.seen.get();
        seen[which] = Some(v);
        self.seen.set(seen);
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
        self.check_data(offset, dst.len());
        self.meddle();
        self.mem.read(offset, dst)
    }
    fn write(&self, offset: usize, src: &[u8]) -> Result<(), AccessError> {
        self.check_data(offset, src.len());
        self.mem.write(offset, src)?;
        self.meddle();
        Ok(())
    }
}

/// What one operation did, as judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Corrupt,
    Nothing,
    Moved,
}

/// Runs operation `op % 5` (write, read, peek, free, available) for up to `len` bytes of `buf`
/// and checks it against what the peer let it see: a transfer never exceeds what the indices
/// read allow, impossible indices are `RingError::Corrupt`, and only the operation's own index
/// is stored, advanced by exactly the count.
pub(crate) fn step<S: Chaos>(
    peer: &Hostile<'_, S>,
    tx: &mut Producer<&Hostile<'_, S>>,
    rx: &mut Consumer<&Hostile<'_, S>>,
    op: u8,
    len: usize,
    buf: &mut [u8],
) -> Outcome {
    peer.loads.set([0, 0]);
    peer.seen.set([None, None]);
    peer.stored.set(None);
    let (producing, publishes, result) = match op % 5 {
        0 => (true, true, tx.write(&buf[..len])),
        1 => (false, true, rx.read(&mut buf[..len])),
        2 => (false, false, rx.peek(&mut buf[..len])),
        3 => (true, false, tx.free().map(|n| n.min(len))),
        _ => (false, false, rx.available().map(|n| n.min(len))),
    };
    let layout = peer.layout;
    let [cons, prod] = peer.seen.get().map(|v| v.expect("both indices read"));
    let used = prod.wrapping_sub(cons);
    match result {
        Err(RingError::Corrupt {
            prod: p,
            cons: c,
            size,
        }) => {
            assert_eq!((p, c, size), (prod, cons, layout.size));
            assert!(used > layout.size);
            assert_eq!(peer.stored.get(), None);
            Outcome::Corrupt
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(n) => {
            assert!(used <= layout.size);
            let room = if producing { layout.size - used } else { used };
            assert_eq!(n, len.min(room as usize));
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

/// A producer and a consumer cursor on the hostile peer's ring, and their own indices as the
/// test tracks them (the cursors keep theirs private).
pub(crate) struct Cursors {
    pub(crate) tx: ProducerCursor,
    pub(crate) rx: ConsumerCursor,
    pub(crate) prod: u32,
    pub(crate) cons: u32,
}

/// Runs cursor operation `op % 4` (producer look, write, consumer look, read) for up to `len`
/// bytes of `buf` and checks it: a look reads the peer's index once and no other, and accepts
/// it only if the count it gives is possible and moved the allowed way (bytes unconsumed only
/// shrink, bytes ready only grow); a write or read reads no index, moves what the last look
/// found, and stores its own index advanced by exactly the count. `None` once a cursor
/// refused the peer's index (the channel is over).
pub(crate) fn cursor_step<S: Chaos>(
    peer: &Hostile<'_, S>,
    c: &mut Cursors,
    op: u8,
    len: usize,
    buf: &mut [u8],
) -> Option<Outcome> {
    peer.loads.set([0, 0]);
    peer.seen.set([None, None]);
    peer.stored.set(None);
    let size = peer.layout.size;
    match op % 4 {
        look @ (0 | 2) => {
            let producer = look == 0;
            let then = if producer {
                c.tx.unconsumed()
            } else {
                c.rx.ready()
            };
            let result = if producer {
                c.tx.look(peer)
            } else {
                c.rx.look(peer)
            };
            let [cons, prod] = peer.seen.get();
            assert_eq!(peer.stored.get(), None);
            // The peer's index only: the producer's look reads cons, the consumer's prod.
            let now = if producer {
                assert_eq!(prod, None, "the producer's look reads only cons");
                c.prod.wrapping_sub(cons.expect("cons read"))
            } else {
                assert_eq!(cons, None, "the consumer's look reads only prod");
                prod.expect("prod read").wrapping_sub(c.cons)
            };
            let allowed = |now: u32| if producer { now <= then } else { now >= then };
            match result {
                Err(RingError::Corrupt { size: s, .. }) => {
                    assert_eq!(s, size);
                    assert!(now > size);
                    None
                }
                Err(RingError::Backwards { then: t, now: n }) => {
                    assert_eq!((t, n), (then, now));
                    assert!(now <= size && !allowed(now));
                    None
                }
                Err(e) => panic!("unexpected error {e}"),
                Ok(n) => {
                    assert_eq!(n, now);
                    assert!(now <= size && allowed(now));
                    Some(Outcome::Nothing)
                }
            }
        }
        op => {
            let producer = op == 1;
            let room = if producer { c.tx.free() } else { c.rx.ready() };
            let result = if producer {
                c.tx.write(peer, &buf[..len])
            } else {
                c.rx.read(peer, &mut buf[..len])
            };
            assert_eq!(peer.seen.get(), [None, None], "a copy reads no index");
            let n = result.expect("a copy of what the last look found cannot fail");
            let (index, own) = if producer {
                (peer.layout.prod, &mut c.prod)
            } else {
                (peer.layout.cons, &mut c.cons)
            };
            assert_eq!(n, len.min(room as usize));
            let expected = (n > 0).then(|| (index, own.wrapping_add(n as u32)));
            assert_eq!(peer.stored.get(), expected);
            *own = own.wrapping_add(n as u32);
            Some(if n == 0 {
                Outcome::Nothing
            } else {
                Outcome::Moved
            })
        }
    }
}
