#![doc = include_str!("../README.md")]
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod channel;
mod error;
mod evtchn;
pub mod hypervisor;
mod location;
pub mod log;
pub mod ring;

pub use channel::{AsyncWait, Channel, FnChannel, Notify, Wait, Wake};
pub use error::Error;
pub use evtchn::EvtchnPort;
pub use hypervisor::HypervisorConsole;
pub use location::{BadLocation, LocationError, RingLocation};
#[cfg(feature = "alloc")]
pub use log::LogChunk;
pub use log::{LogError, XenLog};
pub use ring::ConsoleRing;
