//! Everything needed to make typed hypercalls: `use xen_hypercall::prelude::*;`.

pub use crate::console::ConsoleOps;
pub use crate::event_channel::EventChannelOps;
pub use crate::grant_table::GrantTableOps;
pub use crate::hvm::HvmOps;
pub use crate::memory::MemoryOps;
pub use crate::physdev::PhysdevOps;
pub use crate::sched::SchedOps;
pub use crate::version::VersionOps;
pub use crate::{DomId, HvmParam, Port, ShutdownReason, Virq, XenHypercall};
