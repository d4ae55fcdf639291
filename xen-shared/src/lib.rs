#![doc = include_str!("../README.md")]
#![no_std]
#![deny(unsafe_code)]

#[cfg(test)]
extern crate std;

#[allow(unsafe_code)]
mod mem;
pub mod req_ring;
pub mod ring;

pub use mem::{AccessError, PAGE_SIZE, ReadOnlyMem, SharedAtomic, SharedMem, SharedPage};
pub use req_ring::{BackRing, FrontRing, InFlight, ReqRingError, ShapeError, UnknownId};
pub use ring::{
    Consumer, ConsumerCursor, CursorError, LayoutError, Producer, ProducerCursor, RingError,
    RingLayout, RingMemory,
};
