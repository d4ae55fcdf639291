//! The domU's shared byte ring (`src/domu/ring.rs`, compiled here for the host):
//! bytes cross it in order across the `u32` wrap of the indexes, a full ring
//! takes only what fits, and impossible indexes written by the other side are
//! refused instead of trusted.

use std::mem::offset_of;

/// The one error the ring reports (`super::DomuError` for the ring module).
#[derive(Debug, PartialEq, Eq)]
enum DomuError {
    BadRing,
}

#[path = "../src/domu/ring.rs"]
mod ring;

use ring::ByteRing;

const SIZE: u32 = 16;

/// A page's worth of ring: the array and its two indexes.
#[repr(C)]
struct Shared {
    data: [u8; SIZE as usize],
    cons: u32,
    prod: u32,
}

/// A ring over a heap `Shared` that the test also writes as the other side.
struct Fixture {
    shared: *mut Shared,
    ring: ByteRing,
}

impl Fixture {
    /// Both indexes start at `start`.
    fn new(start: u32) -> Self {
        let shared = Box::into_raw(Box::new(Shared {
            data: [0; SIZE as usize],
            cons: start,
            prod: start,
        }));
        let field = |offset: usize| shared.cast::<u8>().wrapping_add(offset);
        // SAFETY: the allocation lives until `drop`, is reached only through raw
        // pointers meanwhile, and the indexes are 4-aligned `u32`s.
        let ring = unsafe {
            ByteRing::new(
                field(offset_of!(Shared, data)),
                SIZE,
                field(offset_of!(Shared, cons)).cast(),
                field(offset_of!(Shared, prod)).cast(),
            )
        };
        Self { shared, ring }
    }

    /// The other side writes one of its indexes (`offset` of `cons` or `prod`).
    fn other_side_writes(&self, offset: usize, index: u32) {
        let at = self.shared.cast::<u8>().wrapping_add(offset).cast::<u32>();
        // SAFETY: an index of the live allocation; no reference to it exists.
        unsafe { at.write(index) };
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // SAFETY: from `Box::into_raw` in `new`, freed once, the ring unused from now on.
        drop(unsafe { Box::from_raw(self.shared) });
    }
}

#[test]
fn bytes_cross_in_order_across_the_index_wrap() {
    let start = u32::MAX - 5;
    let fixture = Fixture::new(start);
    let ring = &fixture.ring;
    let (mut prod, mut cons) = (ring.load_prod(), ring.load_cons());
    let mut received = Vec::new();
    for chunk in [&b"hello, "[..], b"ring ", b"world, wrapped"] {
        let mut rest = chunk;
        while !rest.is_empty() {
            let written = ring.produce(&mut prod, rest).unwrap();
            rest = &rest[written..];
            let mut out = [0; 5];
            let read = ring.consume(&mut cons, &mut out).unwrap();
            received.extend_from_slice(&out[..read]);
        }
    }
    while ring.available(cons).unwrap() > 0 {
        let mut out = [0; 5];
        let read = ring.consume(&mut cons, &mut out).unwrap();
        received.extend_from_slice(&out[..read]);
    }
    assert_eq!(received, b"hello, ring world, wrapped");
    assert!(prod < start, "the indexes wrapped");
    assert_eq!(ring.unconsumed(prod), Ok(0));
}

#[test]
fn a_full_ring_takes_only_what_fits() {
    let fixture = Fixture::new(7);
    let ring = &fixture.ring;
    let mut prod = ring.load_prod();
    assert_eq!(ring.produce(&mut prod, &[1; 20]), Ok(SIZE as usize));
    assert_eq!(ring.produce(&mut prod, &[2; 3]), Ok(0));
    assert_eq!(ring.unconsumed(prod), Ok(SIZE));
}

#[test]
fn impossible_indexes_from_the_other_side_are_refused() {
    let fixture = Fixture::new(100);
    let ring = &fixture.ring;
    let mut prod = ring.load_prod();
    ring.produce(&mut prod, b"abc").unwrap();
    // The consumer claims to have consumed more than was produced.
    fixture.other_side_writes(offset_of!(Shared, cons), 104);
    assert_eq!(ring.produce(&mut prod, b"d"), Err(DomuError::BadRing));
    assert_eq!(ring.unconsumed(prod), Err(DomuError::BadRing));

    let fixture = Fixture::new(0);
    let ring = &fixture.ring;
    let mut cons = ring.load_cons();
    // The producer claims more bytes than the ring holds.
    fixture.other_side_writes(offset_of!(Shared, prod), SIZE + 1);
    let mut out = [0; 4];
    assert_eq!(ring.available(cons), Err(DomuError::BadRing));
    assert_eq!(ring.consume(&mut cons, &mut out), Err(DomuError::BadRing));
    assert_eq!(cons, 0, "nothing consumed");
}
