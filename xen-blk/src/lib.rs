#![doc = include_str!("../README.md")]
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod abi;
mod error;
mod front;

pub use error::{ConnectError, Error, IoError, ProtocolError};
pub use front::{Completion, Discard, Frontend, Geometry, MAX_IN_FLIGHT, Operation, RequestId};
pub use xen_bus::{Deadline, DevicePage};
