#![doc = include_str!("../README.md")]
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod buffer;
mod call;
pub mod console;
mod error;
pub mod event_channel;
pub mod grant_table;
pub mod hvm;
mod hypercall;
pub mod ioctl;
pub mod memory;
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub mod mock;
pub mod physdev;
pub mod prelude;
pub mod sched;
pub mod sysctl;
mod types;
pub mod version;

pub use buffer::{DirectConstBuffer, DirectMutBuffer, HypercallData, XenConstBuffer, XenMutBuffer};
pub use error::{Errno, Error, ErrorKind, decode_result};
pub use hypercall::XenHypercall;
pub use types::{DomId, Gfn, HvmParam, MapSpace, Port, ShutdownReason, Virq};
