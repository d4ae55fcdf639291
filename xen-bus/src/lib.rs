#![doc = include_str!("../README.md")]
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

mod deadline;
mod device;
mod error;
mod pages;
mod state;

pub use deadline::{Attempts, Deadline, Forever};
pub use device::{Device, Publication, Role};
pub use error::Error;
pub use pages::{DevicePage, GrantRefused, GrantedPages};
pub use state::{UnknownState, XenbusState};
