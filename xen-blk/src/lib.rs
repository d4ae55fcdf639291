#![doc = include_str!("../README.md")]
#![cfg_attr(not(feature = "linux"), no_std)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(any(test, feature = "linux"))]
extern crate std;

pub mod abi;
pub mod back;
mod error;
mod front;
#[cfg(feature = "linux")]
#[cfg_attr(docsrs, doc(cfg(feature = "linux")))]
pub mod linux;

pub use error::{ConnectError, Error, IoError, ProtocolError};
pub use front::{Completion, Discard, Frontend, Geometry, MAX_IN_FLIGHT, Operation, RequestId};
pub use xen_bus::{Deadline, DevicePage};
