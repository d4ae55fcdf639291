//! The lock the tokio channel's wakers use: loom's in the loom models (`--cfg loom`, unit
//! tests), so that they explore every interleaving around it; the standard one otherwise.

#[cfg(all(test, loom))]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::{Mutex, MutexGuard};
