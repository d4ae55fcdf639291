#![doc = include_str!("../README.md")]
#![no_std]
#![deny(unsafe_code)]

#[cfg(test)]
extern crate std;

#[allow(unsafe_code)]
mod mem;
pub mod ring;

pub use mem::{AccessError, PAGE_SIZE, ReadOnlyMem, SharedAtomic, SharedMem, SharedPage};
pub use ring::{Consumer, LayoutError, Producer, RingError, RingLayout, RingMemory};
