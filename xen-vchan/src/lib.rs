#![doc = include_str!("../README.md")]
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

mod endpoint;
mod error;
mod layout;
#[cfg(all(feature = "linux", target_os = "linux"))]
#[cfg_attr(docsrs, doc(cfg(feature = "linux")))]
pub mod linux;
#[cfg(all(feature = "tokio-1", target_os = "linux"))]
mod sync;

pub use endpoint::{Endpoint, PeerState, RingPages, Role, Shared, Step};
pub use error::{Corruption, Error};
pub use layout::{Order, Orders};
