#![doc = include_str!("../README.md")]
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

pub use xen_hypercall as hypercall;
pub use xen_hypercall::prelude;
pub use xen_hypercall::{Errno, Error, ErrorKind, XenHypercall};
pub use xen_sys as sys;

/// Freestanding backends using inline assembly.
#[cfg(feature = "native")]
#[cfg_attr(docsrs, doc(cfg(feature = "native")))]
pub use xen_hypercall_native as native;

/// The Linux userland backend over `/dev/xen/privcmd`.
#[cfg(feature = "privcmd")]
#[cfg_attr(docsrs, doc(cfg(feature = "privcmd")))]
pub use xen_hypercall_privcmd as privcmd;

/// Memory shared with another domain, and Xen's byte rings.
#[cfg(feature = "shared")]
#[cfg_attr(docsrs, doc(cfg(feature = "shared")))]
pub use xen_shared as shared;

/// Event channels.
#[cfg(feature = "evtchn")]
#[cfg_attr(docsrs, doc(cfg(feature = "evtchn")))]
pub use xen_evtchn as evtchn;

/// Grant tables.
#[cfg(feature = "grant")]
#[cfg_attr(docsrs, doc(cfg(feature = "grant")))]
pub use xen_grant as grant;

/// The guest console.
#[cfg(feature = "console")]
#[cfg_attr(docsrs, doc(cfg(feature = "console")))]
pub use xen_console as console;

/// The xenstore client.
#[cfg(feature = "store")]
#[cfg_attr(docsrs, doc(cfg(feature = "store")))]
pub use xen_store as store;

/// The xenbus device layer of PV drivers: device states, negotiation, teardown.
#[cfg(feature = "bus")]
#[cfg_attr(docsrs, doc(cfg(feature = "bus")))]
pub use xen_bus as bus;

/// The PV block frontend.
#[cfg(feature = "blk")]
#[cfg_attr(docsrs, doc(cfg(feature = "blk")))]
pub use xen_blk as blk;

/// Domain control of a toolstack domain: list, pause, destroy domains; the host's facts.
#[cfg(feature = "ctrl")]
#[cfg_attr(docsrs, doc(cfg(feature = "ctrl")))]
pub use xen_ctrl as ctrl;
