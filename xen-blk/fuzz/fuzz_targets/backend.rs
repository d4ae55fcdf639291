//! The backend's core against a hostile frontend whose every decision comes from the fuzzer's
//! input (the same frontend and checks as the tests, `tests/support/hostile_front.rs`): every
//! request taken answered once, only valid requests reach the data path, an impossible ring
//! index a disconnect, never a panic.
#![no_main]

#[path = "../../tests/support/hostile_front.rs"]
#[allow(dead_code)]
mod hostile_front;

use hostile_front::{Chaos, hostile_run};
use libfuzzer_sys::fuzz_target;

/// The fuzzer's input as the frontend's decisions (zeros once it runs out).
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
    hostile_run(&mut Script(input));
});
