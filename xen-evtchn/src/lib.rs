#![doc = include_str!("../README.md")]
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(test, feature = "std"))]
extern crate std;

mod channel;
#[cfg(all(
    target_os = "linux",
    any(feature = "tokio-1", all(loom, feature = "mock"))
))]
mod demux;
mod error;
pub mod freestanding;
#[cfg(all(feature = "linux", target_os = "linux"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "linux", target_os = "linux"))))]
pub mod linux;
#[cfg(all(test, loom, feature = "mock", target_os = "linux"))]
mod loom_models;
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub mod mock;
mod port;
mod sync;
#[cfg(all(feature = "tokio-1", target_os = "linux"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "tokio-1", target_os = "linux"))))]
pub mod tokio;
mod waiters;

pub use channel::{AsyncEventChannel, EventChannel, Events, WaitPort, WaiterTicket};
pub use error::Error;
pub use freestanding::{RawEventChannel, SharedInfo};
pub use port::BoundPort;
pub use xen_hypercall::{DomId, Errno, ErrorKind, Port, Virq};
