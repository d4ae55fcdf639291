//! The synchronisation primitives the backends' bookkeeping uses: loom's in
//! the loom models (`--cfg loom`, unit tests), so that they explore every
//! interleaving around them; the standard ones otherwise.

#[cfg(not(all(test, loom)))]
pub(crate) use core::sync::atomic::{AtomicU32, AtomicU64};
#[cfg(all(test, loom))]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64};

// The tokio backend's channel core alone uses these.
#[cfg(all(
    not(all(test, loom)),
    target_os = "linux",
    any(feature = "tokio-1", all(loom, feature = "mock"))
))]
pub(crate) use core::sync::atomic::AtomicBool;
#[cfg(all(test, loom))]
pub(crate) use loom::sync::atomic::AtomicBool;

#[cfg(all(test, loom))]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(all(
    target_os = "linux",
    any(feature = "tokio-1", all(loom, feature = "mock"))
))]
pub(crate) use std::sync::TryLockError;
#[cfg(all(feature = "linux", target_os = "linux", not(all(test, loom))))]
pub(crate) use std::sync::{Mutex, MutexGuard};
