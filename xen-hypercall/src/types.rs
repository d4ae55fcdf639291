//! Identifiers and values exchanged with Xen.
//!
//! Each is a newtype over the C integer with associated consts taken from
//! `xen-sys`, never a Rust enum: a value Xen hands back that this crate does not
//! know is still representable.

use core::fmt;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A domain id (`domid_t`).
#[repr(transparent)]
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct DomId(pub u16);

impl DomId {
    /// `DOMID_SELF`: the calling domain.
    pub const SELF: Self = Self(xen_sys::DOMID_SELF);
    /// `DOMID_FIRST_RESERVED`: ids from this one up are special, not domains.
    pub const FIRST_RESERVED: Self = Self(xen_sys::DOMID_FIRST_RESERVED);
    /// `DOMID_IO`: I/O memory.
    pub const IO: Self = Self(xen_sys::DOMID_IO);
    /// `DOMID_XEN`: the hypervisor's own pages.
    pub const XEN: Self = Self(xen_sys::DOMID_XEN);
    /// `DOMID_COW`: copy-on-write (shared) pages.
    pub const COW: Self = Self(xen_sys::DOMID_COW);
    /// `DOMID_INVALID`: no domain.
    pub const INVALID: Self = Self(xen_sys::DOMID_INVALID);
    /// `DOMID_IDLE`: the idle domain.
    pub const IDLE: Self = Self(xen_sys::DOMID_IDLE);

    /// The domain with this id.
    pub const fn new(id: u16) -> Self {
        Self(id)
    }

    /// The raw `domid_t`.
    pub const fn raw(self) -> u16 {
        self.0
    }

    /// Whether this is a real domain's id rather than one of the reserved ids
    /// (`DOMID_SELF` and up).
    pub const fn is_domain(self) -> bool {
        self.0 < xen_sys::DOMID_FIRST_RESERVED
    }
}

impl fmt::Debug for DomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Self::SELF => "DOMID_SELF",
            Self::IO => "DOMID_IO",
            Self::XEN => "DOMID_XEN",
            Self::COW => "DOMID_COW",
            Self::INVALID => "DOMID_INVALID",
            Self::IDLE => "DOMID_IDLE",
            _ => return write!(f, "DomId({})", self.0),
        };
        f.write_str(name)
    }
}

impl fmt::Display for DomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// An event channel port (`evtchn_port_t`), local to a domain.
///
/// `repr(transparent)`, so a `&[Port]` is an `evtchn_port_t` array Xen can read.
#[repr(transparent)]
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
)]
pub struct Port(pub u32);

impl Port {
    /// The port with this number.
    pub const fn new(port: u32) -> Self {
        Self(port)
    }

    /// The raw `evtchn_port_t`.
    pub const fn raw(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port {}", self.0)
    }
}

/// A virtual interrupt (`VIRQ_*`, `public/xen.h`) an event channel can be bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Virq(pub u32);

impl Virq {
    /// `VIRQ_TIMER` (per vCPU): timebase update, and/or requested timeout.
    pub const TIMER: Self = Self(xen_sys::VIRQ_TIMER);
    /// `VIRQ_DEBUG` (per vCPU): request to dump debug info.
    pub const DEBUG: Self = Self(xen_sys::VIRQ_DEBUG);
    /// `VIRQ_CONSOLE` (global, dom0): bytes received on the emergency console.
    pub const CONSOLE: Self = Self(xen_sys::VIRQ_CONSOLE);
    /// `VIRQ_DOM_EXC` (global, dom0): exceptional event for some domain.
    pub const DOM_EXC: Self = Self(xen_sys::VIRQ_DOM_EXC);
    /// `VIRQ_TBUF` (global, dom0): trace buffer has records available.
    pub const TBUF: Self = Self(xen_sys::VIRQ_TBUF);
    /// `VIRQ_DEBUGGER` (global, dom0): a domain has paused for debugging.
    pub const DEBUGGER: Self = Self(xen_sys::VIRQ_DEBUGGER);
    /// `VIRQ_XENOPROF` (per vCPU): new profiling sample available.
    pub const XENOPROF: Self = Self(xen_sys::VIRQ_XENOPROF);
    /// `VIRQ_CON_RING` (global, dom0): bytes received on the console.
    pub const CON_RING: Self = Self(xen_sys::VIRQ_CON_RING);
    /// `VIRQ_PCPU_STATE` (global, dom0): physical CPU state changed.
    pub const PCPU_STATE: Self = Self(xen_sys::VIRQ_PCPU_STATE);
    /// `VIRQ_MEM_EVENT` (global, dom0): a memory event has occurred.
    pub const MEM_EVENT: Self = Self(xen_sys::VIRQ_MEM_EVENT);
    /// `VIRQ_ARGO` (global): Argo interdomain message notification.
    pub const ARGO: Self = Self(xen_sys::VIRQ_ARGO);
    /// `VIRQ_ENOMEM` (global, dom0): the hypervisor is low on heap memory.
    pub const ENOMEM: Self = Self(xen_sys::VIRQ_ENOMEM);
    /// `VIRQ_XENPMU` (per vCPU): performance counter interrupt.
    pub const XENPMU: Self = Self(xen_sys::VIRQ_XENPMU);
    /// The number of virtual interrupts (`NR_VIRQS`); valid ones are below it.
    pub const COUNT: u32 = xen_sys::NR_VIRQS;

    /// Whether this interrupt is raised once for the domain (bound on vCPU 0)
    /// rather than per vCPU. Xen's `virq_is_global` (common/event_channel.c);
    /// the architecture interrupts `VIRQ_ARCH_*` are counted as global.
    pub const fn is_global(self) -> bool {
        !matches!(
            self,
            Self::TIMER | Self::DEBUG | Self::XENOPROF | Self::XENPMU
        )
    }
}

/// Why a domain shuts down (`SHUTDOWN_*`, `public/sched.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShutdownReason(pub u32);

impl ShutdownReason {
    /// `SHUTDOWN_poweroff`: the domain exits normally; clean up and kill.
    pub const POWEROFF: Self = Self(xen_sys::SHUTDOWN_poweroff);
    /// `SHUTDOWN_reboot`: clean up, kill, and then restart.
    pub const REBOOT: Self = Self(xen_sys::SHUTDOWN_reboot);
    /// `SHUTDOWN_suspend`: clean up, save the suspend info, kill. Only through
    /// [`SchedOps::suspend`](crate::sched::SchedOps::suspend), which passes the
    /// start-info frame; `shutdown` and `shutdown_code` refuse it.
    pub const SUSPEND: Self = Self(xen_sys::SHUTDOWN_suspend);
    /// `SHUTDOWN_crash`: tell the control software the domain crashed.
    pub const CRASH: Self = Self(xen_sys::SHUTDOWN_crash);
    /// `SHUTDOWN_watchdog`: restart because the watchdog timed out.
    pub const WATCHDOG: Self = Self(xen_sys::SHUTDOWN_watchdog);
    /// `SHUTDOWN_soft_reset`: the domain asks to be soft reset.
    pub const SOFT_RESET: Self = Self(xen_sys::SHUTDOWN_soft_reset);
}

/// An HVM parameter index (`HVM_PARAM_*`, `public/hvm/params.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HvmParam(pub u32);

impl HvmParam {
    /// `HVM_PARAM_CALLBACK_IRQ`: how event channel upcalls are delivered.
    pub const CALLBACK_IRQ: Self = Self(xen_sys::HVM_PARAM_CALLBACK_IRQ);
    /// `HVM_PARAM_STORE_PFN`: the xenstore ring's frame.
    pub const STORE_PFN: Self = Self(xen_sys::HVM_PARAM_STORE_PFN);
    /// `HVM_PARAM_STORE_EVTCHN`: the xenstore event channel.
    pub const STORE_EVTCHN: Self = Self(xen_sys::HVM_PARAM_STORE_EVTCHN);
    /// `HVM_PARAM_PAE_ENABLED`: whether PAE is enabled.
    pub const PAE_ENABLED: Self = Self(xen_sys::HVM_PARAM_PAE_ENABLED);
    /// `HVM_PARAM_IOREQ_PFN`: the ioreq page's frame.
    pub const IOREQ_PFN: Self = Self(xen_sys::HVM_PARAM_IOREQ_PFN);
    /// `HVM_PARAM_BUFIOREQ_PFN`: the buffered ioreq page's frame.
    pub const BUFIOREQ_PFN: Self = Self(xen_sys::HVM_PARAM_BUFIOREQ_PFN);
    /// `HVM_PARAM_VIRIDIAN`: the Viridian (Hyper-V) enlightenments (x86 only).
    #[cfg(target_arch = "x86_64")]
    pub const VIRIDIAN: Self = Self(xen_sys::HVM_PARAM_VIRIDIAN);
    /// `HVM_PARAM_TIMER_MODE`: how virtual timers behave when the guest is not running.
    pub const TIMER_MODE: Self = Self(xen_sys::HVM_PARAM_TIMER_MODE);
    /// `HVM_PARAM_HPET_ENABLED`: whether the HPET is emulated.
    pub const HPET_ENABLED: Self = Self(xen_sys::HVM_PARAM_HPET_ENABLED);
    /// `HVM_PARAM_IDENT_PT`: the identity-map page table's address.
    pub const IDENT_PT: Self = Self(xen_sys::HVM_PARAM_IDENT_PT);
    /// `HVM_PARAM_DM_DOMAIN`: the device model's domain.
    pub const DM_DOMAIN: Self = Self(xen_sys::HVM_PARAM_DM_DOMAIN);
    /// `HVM_PARAM_ACPI_S_STATE`: the ACPI sleep state.
    pub const ACPI_S_STATE: Self = Self(xen_sys::HVM_PARAM_ACPI_S_STATE);
    /// `HVM_PARAM_VM86_TSS`: the VM86 TSS's address.
    pub const VM86_TSS: Self = Self(xen_sys::HVM_PARAM_VM86_TSS);
    /// `HVM_PARAM_VPT_ALIGN`: whether virtual platform timers are aligned.
    pub const VPT_ALIGN: Self = Self(xen_sys::HVM_PARAM_VPT_ALIGN);
    /// `HVM_PARAM_CONSOLE_PFN`: the PV console ring's frame.
    pub const CONSOLE_PFN: Self = Self(xen_sys::HVM_PARAM_CONSOLE_PFN);
    /// `HVM_PARAM_CONSOLE_EVTCHN`: the PV console's event channel.
    pub const CONSOLE_EVTCHN: Self = Self(xen_sys::HVM_PARAM_CONSOLE_EVTCHN);
    /// `HVM_PARAM_ACPI_IOPORTS_LOCATION`: which ACPI PM1a port block is used.
    pub const ACPI_IOPORTS_LOCATION: Self = Self(xen_sys::HVM_PARAM_ACPI_IOPORTS_LOCATION);
    /// `HVM_PARAM_NESTEDHVM`: whether nested virtualisation is enabled.
    pub const NESTEDHVM: Self = Self(xen_sys::HVM_PARAM_NESTEDHVM);
    /// `HVM_PARAM_BUFIOREQ_EVTCHN`: the buffered ioreq event channel.
    pub const BUFIOREQ_EVTCHN: Self = Self(xen_sys::HVM_PARAM_BUFIOREQ_EVTCHN);
    /// `HVM_PARAM_PAGING_RING_PFN`: the paging ring's frame.
    pub const PAGING_RING_PFN: Self = Self(xen_sys::HVM_PARAM_PAGING_RING_PFN);
    /// `HVM_PARAM_MONITOR_RING_PFN`: the monitor ring's frame.
    pub const MONITOR_RING_PFN: Self = Self(xen_sys::HVM_PARAM_MONITOR_RING_PFN);
    /// `HVM_PARAM_SHARING_RING_PFN`: the sharing ring's frame.
    pub const SHARING_RING_PFN: Self = Self(xen_sys::HVM_PARAM_SHARING_RING_PFN);
    /// `HVM_PARAM_TRIPLE_FAULT_REASON`: the shutdown reason on a triple fault.
    pub const TRIPLE_FAULT_REASON: Self = Self(xen_sys::HVM_PARAM_TRIPLE_FAULT_REASON);
    /// `HVM_PARAM_IOREQ_SERVER_PFN`: the first ioreq server frame.
    pub const IOREQ_SERVER_PFN: Self = Self(xen_sys::HVM_PARAM_IOREQ_SERVER_PFN);
    /// `HVM_PARAM_NR_IOREQ_SERVER_PAGES`: the number of ioreq server frames.
    pub const NR_IOREQ_SERVER_PAGES: Self = Self(xen_sys::HVM_PARAM_NR_IOREQ_SERVER_PAGES);
    /// `HVM_PARAM_VM_GENERATION_ID_ADDR`: the VM generation id's address.
    pub const VM_GENERATION_ID_ADDR: Self = Self(xen_sys::HVM_PARAM_VM_GENERATION_ID_ADDR);
    /// `HVM_PARAM_ALTP2M`: the alternate p2m mode.
    pub const ALTP2M: Self = Self(xen_sys::HVM_PARAM_ALTP2M);
    /// `HVM_PARAM_X87_FIP_WIDTH`: the x87 FIP/FDP width.
    pub const X87_FIP_WIDTH: Self = Self(xen_sys::HVM_PARAM_X87_FIP_WIDTH);
    /// `HVM_PARAM_VM86_TSS_SIZED`: the VM86 TSS's address and size.
    pub const VM86_TSS_SIZED: Self = Self(xen_sys::HVM_PARAM_VM86_TSS_SIZED);
    /// `HVM_PARAM_MCA_CAP`: the machine-check capabilities.
    pub const MCA_CAP: Self = Self(xen_sys::HVM_PARAM_MCA_CAP);
    /// The number of HVM parameters (`HVM_NR_PARAMS`); valid indices are below it.
    pub const COUNT: u32 = xen_sys::HVM_NR_PARAMS;
}

/// A space a frame can be mapped from with `XENMEM_add_to_physmap`
/// (`XENMAPSPACE_*`, `public/memory.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MapSpace(pub u32);

impl MapSpace {
    /// `XENMAPSPACE_shared_info`: the domain's shared info page (index 0).
    pub const SHARED_INFO: Self = Self(xen_sys::XENMAPSPACE_shared_info);
    /// `XENMAPSPACE_grant_table`: a grant table frame (index = frame number,
    /// `| XENMAPIDX_grant_table_status` for status frames).
    pub const GRANT_TABLE: Self = Self(xen_sys::XENMAPSPACE_grant_table);
    /// `XENMAPSPACE_gmfn`: another frame of the same domain (index = its GFN),
    /// which moves: its old GFN becomes a hole.
    pub const GMFN: Self = Self(xen_sys::XENMAPSPACE_gmfn);
}

/// A guest frame number (`xen_pfn_t`): a guest physical address shifted right
/// by the page size's bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gfn(pub u64);
