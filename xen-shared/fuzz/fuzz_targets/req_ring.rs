//! The request/response ring against a hostile peer driven by the fuzzer's input (the same
//! peer and checks as the tests, `tests/support/req_peer.rs`): the peer's producer index read
//! at most once per batch (twice in a final check) and with Acquire, impossible indices a
//! typed error that consumes nothing, no access outside the entry array, the accounting always
//! within the ring.
#![no_main]

#[path = "../../tests/support/req_peer.rs"]
mod req_peer;

use libfuzzer_sys::fuzz_target;
use req_peer::{Chaos, Hostile, Outcomes, Req, Rsp, back_step, front_step};
use xen_shared::{BackRing, FrontRing, SharedPage};

/// The fuzzer's input as the peer's decisions (zeros once it runs out).
struct Script<'a>(&'a [u8]);

impl Chaos for Script<'_> {
    fn next(&mut self) -> u64 {
        let n = self.0.len().min(8);
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        let mut bytes = [0u8; 8];
        bytes[..n].copy_from_slice(head);
        u64::from_le_bytes(bytes)
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, rest)) = input.split_first() else {
        return;
    };
    // Operations come from the even bytes, the peer's moves from the rest.
    let ops: Vec<u8> = rest.iter().step_by(2).copied().collect();
    let moves: Vec<u8> = rest.iter().skip(1).step_by(2).copied().collect();
    let start = [0, u32::MAX - 3, u32::MAX / 2, 1 << 31][usize::from(first >> 1) % 4];
    let page = SharedPage::new();
    let mut outcomes = Outcomes::default();
    if first % 2 == 0 {
        let peer = Hostile::back(page.mem(), Script(&moves), start);
        let mut front = FrontRing::<Req, Rsp, _>::attach(&peer, 0, start).unwrap();
        for &op in &ops {
            front_step(&peer, &mut front, op, &mut outcomes);
        }
    } else {
        let peer = Hostile::front(page.mem(), Script(&moves), start);
        let mut back = BackRing::<Req, Rsp, _>::attach(&peer, 0, start).unwrap();
        for &op in &ops {
            back_step(&peer, &mut back, op, &mut outcomes);
        }
    }
});
