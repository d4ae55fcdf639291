//! The byte ring against a hostile peer driven by the fuzzer's input (the same peer and checks
//! as the property tests, `tests/support/hostile.rs`): per operation each index is read at most
//! once, the result agrees with the values read, impossible indices are a typed error, only the
//! operation's own index is stored, and no access leaves the data array. A first byte
//! with bit 2 set runs the cursors instead (one peer index per look, no regression accepted).
#![no_main]

#[path = "../../tests/support/hostile.rs"]
mod hostile;

use hostile::{Chaos, Cursors, Hostile, cursor_step, step};
use libfuzzer_sys::fuzz_target;
use xen_shared::{Consumer, ConsumerCursor, Producer, ProducerCursor, RingLayout, SharedPage};

/// The fuzzer's input as the peer's decisions (zeros once it runs out).
struct Script<'a>(&'a [u8]);

impl Chaos for Script<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
}

const LAYOUTS: [RingLayout; 4] = [
    RingLayout::CONSOLE_IN,
    RingLayout::CONSOLE_OUT,
    RingLayout::XENSTORE_REQ,
    RingLayout::XENSTORE_RSP,
];

fuzz_target!(|input: &[u8]| {
    let Some((&first, script)) = input.split_first() else {
        return;
    };
    let page = SharedPage::new();
    let layout = LAYOUTS[usize::from(first % 4)];
    let peer = Hostile::new(page.mem(), layout, Script(script));
    let mut buf = vec![0u8; 2 * layout.size as usize];
    if first & 4 != 0 {
        // Cursors, from zeroed indices, until one refuses the peer's index.
        let mem = page.mem();
        let mut cursors = Cursors {
            tx: ProducerCursor::new(&mem, layout).unwrap(),
            rx: ConsumerCursor::new(&mem, layout).unwrap(),
            prod: 0,
            cons: 0,
        };
        while !peer.chaos.borrow().0.is_empty() {
            let op = peer.chaos.borrow_mut().byte();
            let len = (usize::from(peer.chaos.borrow_mut().byte()) << 4) % buf.len();
            if cursor_step(&peer, &mut cursors, op, len, &mut buf).is_none() {
                return;
            }
        }
        return;
    }
    let mut tx = Producer::new(&peer, layout).unwrap();
    let mut rx = Consumer::new(&peer, layout).unwrap();
    while !peer.chaos.borrow().0.is_empty() {
        let op = peer.chaos.borrow_mut().byte();
        let len = (usize::from(peer.chaos.borrow_mut().byte()) << 4) % buf.len();
        step(&peer, &mut tx, &mut rx, op, len, &mut buf);
    }
});
