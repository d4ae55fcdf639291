#![doc = include_str!("../README.md")]
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "std")]
extern crate std;

pub mod buffer;
mod error;
mod hypercall;

pub use buffer::{DirectConstBuffer, DirectMutBuffer, HypercallData, XenConstBuffer, XenMutBuffer};
pub use error::{decode_result, Errno, Error, ErrorKind};
pub use hypercall::XenHypercall;
