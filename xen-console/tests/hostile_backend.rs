//! A bounded, deterministic fuzz of the console ring: random writes, reads, flushes and line
//! reads against a backend that mostly behaves (checked against a `VecDeque` model of each
//! direction) and sometimes writes impossible indices or scribbles over the page (which must
//! give typed errors, never a panic or a wrong byte count). Fewer rounds under Miri.

// xen-shared's seeded test generator (the same one its ring property tests use).
#[path = "../../xen-shared/tests/support/rng.rs"]
mod rng;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};

use rng::Rng;
use xen_console::{ConsoleRing, Error, FnChannel, Wake};
use xen_shared::{Consumer, Producer, RingLayout, SharedMem, SharedPage};

const ROUNDS: u64 = if cfg!(miri) { 3 } else { 300 };
const OPS: usize = if cfg!(miri) { 30 } else { 300 };
/// The largest transfer tried, by the guest or the backend (smaller under Miri: every byte is
/// an interpreted atomic access).
const MAX_LEN: usize = if cfg!(miri) { 400 } else { 3000 };

/// The backend and the models of what it has received and what it may still send.
struct Peer<'a> {
    mem: SharedMem<'a>,
    out: Consumer<SharedMem<'a>>,
    input: Producer<SharedMem<'a>>,
    rng: Rng,
    received: Vec<u8>,
    /// Bytes the backend put into `in` that the guest has not read yet.
    in_flight: VecDeque<u8>,
    corrupted: bool,
}

impl Peer<'_> {
    /// The backend's move during a wait: consume, produce, or (rarely) misbehave.
    fn act(&mut self) -> Wake {
        match self.rng.below(12) {
            0 => {
                // Impossible indices: the guest must refuse the ring from now on.
                let which = [RingLayout::CONSOLE_OUT, RingLayout::CONSOLE_IN][self.rng.below(2)];
                let cons = self.mem.atomic::<AtomicU32>(which.cons).unwrap();
                let prod = self.mem.atomic::<AtomicU32>(which.prod).unwrap();
                let p = prod.load(Ordering::Relaxed);
                cons.store(
                    p.wrapping_sub(which.size + 1 + self.rng.below(1 << 20) as u32),
                    Ordering::Relaxed,
                );
                self.corrupted = true;
                Wake::Event
            }
            1 => Wake::TimedOut,
            2..=6 => {
                let mut buf = vec![0u8; self.rng.below(MAX_LEN)];
                match self.out.read(&mut buf) {
                    Ok(n) => self.received.extend_from_slice(&buf[..n]),
                    Err(_) => assert!(self.corrupted),
                }
                Wake::Event
            }
            _ => {
                let data: Vec<u8> = (0..self.rng.below(MAX_LEN / 2))
                    .map(|_| b"ab\ncd"[self.rng.below(5)])
                    .collect();
                match self.input.write(&data) {
                    Ok(n) => self.in_flight.extend(&data[..n]),
                    Err(_) => assert!(self.corrupted),
                }
                Wake::Event
            }
        }
    }
}

#[test]
fn random_operations_against_a_sometimes_hostile_backend() {
    let mut corrupt_errors = 0;
    let mut bytes_through = 0;
    for round in 0..ROUNDS {
        let page = SharedPage::new();
        let mem = page.mem();
        // Start near the 2^32 wrap of the indices in every other round.
        if round % 2 == 1 {
            for layout in [RingLayout::CONSOLE_OUT, RingLayout::CONSOLE_IN] {
                let start = u32::MAX - (round as u32 * 37) % 4000;
                mem.atomic::<AtomicU32>(layout.cons)
                    .unwrap()
                    .store(start, Ordering::Relaxed);
                mem.atomic::<AtomicU32>(layout.prod)
                    .unwrap()
                    .store(start, Ordering::Relaxed);
            }
        }
        let peer = Rc::new(RefCell::new(Peer {
            mem,
            out: Consumer::new(mem, RingLayout::CONSOLE_OUT).unwrap(),
            input: Producer::new(mem, RingLayout::CONSOLE_IN).unwrap(),
            rng: Rng(round.wrapping_mul(0x1234_5678_9abc)),
            received: Vec::new(),
            in_flight: VecDeque::new(),
            corrupted: false,
        }));
        let waiter = peer.clone();
        let channel = FnChannel::new(
            || Ok::<_, Infallible>(()),
            move || Ok(waiter.borrow_mut().act()),
        );
        let mut con = ConsoleRing::new(mem, channel).unwrap();
        let mut rng = Rng(round);
        let mut sent = Vec::new();
        for _ in 0..OPS {
            let len = rng.below(MAX_LEN);
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let mut buf = vec![0u8; len];
            let op = rng.below(6);
            let result = match op {
                0 => con.try_write(&data).inspect(|&n| {
                    sent.extend_from_slice(&data[..n]);
                }),
                1 => con.write(&data).inspect(|&n| {
                    sent.extend_from_slice(&data[..n]);
                }),
                2 => con.flush().map(|()| 0),
                3 => con.read(&mut buf),
                4 => con.read_line(&mut buf),
                _ => con.try_read(&mut buf),
            };
            let corrupted = peer.borrow().corrupted;
            match result {
                Ok(n) => {
                    assert!(n <= len);
                    // Bytes read are exactly the backend's, in order (while it behaved).
                    if op >= 3 && !corrupted {
                        let mut p = peer.borrow_mut();
                        assert!(n <= p.in_flight.len(), "read {n} bytes never sent");
                        let expected: Vec<u8> = p.in_flight.drain(..n).collect();
                        assert_eq!(buf[..n], expected[..]);
                    }
                }
                Err(Error::Ring(_)) => {
                    assert!(corrupted, "a ring error from an honest backend");
                    corrupt_errors += 1;
                    break;
                }
                Err(Error::TimedOut | Error::Stalled { .. }) => {}
                Err(Error::Channel(e)) => match e {},
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        let p = peer.borrow();
        // What the backend received is a prefix of what was sent, byte for byte.
        assert!(
            sent.starts_with(&p.received),
            "round {round}: received bytes differ"
        );
        bytes_through += p.received.len();
    }
    // The backend misbehaved in some rounds and moved plenty in the others.
    assert!(
        corrupt_errors as u64 * 10 > ROUNDS,
        "{corrupt_errors} ring errors"
    );
    assert!(
        bytes_through as u64 > ROUNDS * MAX_LEN as u64 / 3,
        "{bytes_through} bytes"
    );
}
