//! The locks of the async client: `std`'s, or `loom`'s when the models run (`--cfg loom`).

#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
