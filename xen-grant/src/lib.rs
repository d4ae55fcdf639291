#![doc = include_str!("../README.md")]
#![cfg_attr(not(feature = "std"), no_std)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
#[cfg(feature = "linux")]
#[cfg_attr(docsrs, doc(cfg(feature = "linux")))]
pub mod linux;
mod map;
mod table;

pub use error::Error;
pub use map::{MapError, MapSlot, MappedGrant, UnmapError};
pub use table::{
    CopyOp, CopyPtr, ENTRIES_PER_FRAME, Grant, GrantAccessError, GrantPage, GrantTable, PAGE_SIZE,
    StillInUse,
};
pub use xen_hypercall::grant_table::{GrantRef, GrantStatus};
/// The domain id and errno types of the hypercall layer, which this crate's API uses.
pub use xen_hypercall::{DomId, Errno};
