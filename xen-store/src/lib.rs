#![doc = include_str!("../README.md")]
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod conn;
mod error;
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub mod mock;
pub mod op;
pub mod path;
mod perms;
pub mod ring;
mod store;
#[cfg(feature = "tokio-1")]
mod sync;
#[cfg(feature = "tokio-1")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio-1")))]
pub mod tokio;
#[cfg(feature = "linux")]
#[cfg_attr(docsrs, doc(cfg(feature = "linux")))]
pub mod unix;
pub mod wire;

pub use conn::{Connection, Ticket, WATCH_BUFFER, WatchEvent, WatchId};
pub use error::{Errno, Error, ErrorKind, ProtocolError};
pub use perms::{Access, Perm};
pub use store::{Client, Store, TRANSACTION_ATTEMPTS, Transaction};
pub use xen_hypercall::DomId;
