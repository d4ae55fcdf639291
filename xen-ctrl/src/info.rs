//! What Xen reports about domains, their vCPUs and the host.

use xen_hypercall::{DomId, ShutdownReason};

bitflags::bitflags! {
    /// A domain's state (`XEN_DOMINF_*`, `public/domctl.h`), without the shutdown reason, which
    /// is [`DomainInfo::shutdown_reason`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct DomainFlags: u32 {
        /// `XEN_DOMINF_dying`: being destroyed.
        const DYING = xen_sys::xen_4_17::XEN_DOMINF_dying;
        /// `XEN_DOMINF_hvm_guest`: an HVM or PVH guest.
        const HVM_GUEST = xen_sys::xen_4_17::XEN_DOMINF_hvm_guest;
        /// `XEN_DOMINF_shutdown`: shut down, for [`DomainInfo::shutdown_reason`].
        const SHUTDOWN = xen_sys::xen_4_17::XEN_DOMINF_shutdown;
        /// `XEN_DOMINF_paused`: paused by the toolstack.
        const PAUSED = xen_sys::xen_4_17::XEN_DOMINF_paused;
        /// `XEN_DOMINF_blocked`: every online vCPU waits for an event.
        const BLOCKED = xen_sys::xen_4_17::XEN_DOMINF_blocked;
        /// `XEN_DOMINF_running`: a vCPU is running on a physical CPU now.
        const RUNNING = xen_sys::xen_4_17::XEN_DOMINF_running;
        /// `XEN_DOMINF_debugged`: a debugger is attached.
        const DEBUGGED = xen_sys::xen_4_17::XEN_DOMINF_debugged;
        /// `XEN_DOMINF_xs_domain`: the xenstore domain.
        const XS_DOMAIN = xen_sys::xen_4_17::XEN_DOMINF_xs_domain;
        /// `XEN_DOMINF_hap`: uses hardware-assisted paging.
        const HAP = xen_sys::xen_4_17::XEN_DOMINF_hap;
    }
}

/// The bits of `flags` holding the shutdown reason.
const SHUTDOWN_SHIFT: u32 = xen_sys::xen_4_17::XEN_DOMINF_shutdownshift;
const SHUTDOWN_MASK: u32 = xen_sys::xen_4_17::XEN_DOMINF_shutdownmask;
const _: () = {
    use xen_sys::xen_4_20 as next;
    assert!(SHUTDOWN_SHIFT == next::XEN_DOMINF_shutdownshift);
    assert!(SHUTDOWN_MASK == next::XEN_DOMINF_shutdownmask);
    assert!(DomainFlags::all().bits() & (SHUTDOWN_MASK << SHUTDOWN_SHIFT) == 0);
};

/// One domain as `XEN_DOMCTL_getdomaininfo` and `XEN_SYSCTL_getdomaininfolist` report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DomainInfo {
    /// The domain's id.
    pub domid: DomId,
    /// Its state.
    pub flags: DomainFlags,
    /// Why it shut down, when [`DomainFlags::SHUTDOWN`] is set.
    pub shutdown_reason: Option<ShutdownReason>,
    /// Pages it holds now (`tot_pages`).
    pub tot_pages: u64,
    /// The most pages it may hold (`max_pages`).
    pub max_pages: u64,
    /// Pages claimed for it but not yet allocated (`outstanding_pages`).
    pub outstanding_pages: u64,
    /// Pages it shares with other domains (memory sharing).
    pub shr_pages: u64,
    /// Pages paged out (memory paging).
    pub paged_pages: u64,
    /// The guest frame of its shared info page.
    pub shared_info_frame: u64,
    /// CPU time its vCPUs have run, in nanoseconds.
    pub cpu_time_ns: u64,
    /// vCPUs online.
    pub online_vcpus: u32,
    /// The highest vCPU id (`XEN_INVALID_MAX_VCPU_ID` when it has none).
    pub max_vcpu_id: u32,
    /// Its XSM security id.
    pub ssidref: u32,
    /// The handle the toolstack gave it (the UUID `xl list -l` shows).
    pub handle: [u8; 16],
    /// Its CPU pool.
    pub cpupool: u32,
    /// Guest physical address bits (0 when Xen does not say).
    pub gpaddr_bits: u8,
}

impl DomainInfo {
    /// Splits Xen's `flags` into state and shutdown reason.
    pub(crate) fn state(flags: u32) -> (DomainFlags, Option<ShutdownReason>) {
        let state = DomainFlags::from_bits_retain(flags & !(SHUTDOWN_MASK << SHUTDOWN_SHIFT));
        let reason = state
            .contains(DomainFlags::SHUTDOWN)
            .then_some(ShutdownReason((flags >> SHUTDOWN_SHIFT) & SHUTDOWN_MASK));
        (state, reason)
    }

    /// The memory `xl list` shows, in KiB: pages held and claimed, 4 KiB each.
    pub fn memory_kib(&self) -> u64 {
        self.tot_pages
            .saturating_add(self.outstanding_pages)
            .saturating_mul(4)
    }

    /// The six state letters of `xl list` (`r-----`, `--p---`, `---sc-`): running, blocked,
    /// paused, shut down, the shutdown reason (`-` poweroff, `r` reboot, `s` suspend,
    /// `c` crash, `w` watchdog, `S` soft reset, `?` unknown), dying.
    pub fn state_letters(&self) -> [u8; 6] {
        let letter = |flag, c| if self.flags.contains(flag) { c } else { b'-' };
        let reason = match self.shutdown_reason.map(|r| r.0) {
            None => b'-',
            Some(code) => b"-rscwS".get(code as usize).copied().unwrap_or(b'?'),
        };
        [
            letter(DomainFlags::RUNNING, b'r'),
            letter(DomainFlags::BLOCKED, b'b'),
            letter(DomainFlags::PAUSED, b'p'),
            letter(DomainFlags::SHUTDOWN, b's'),
            reason,
            letter(DomainFlags::DYING, b'd'),
        ]
    }
}

/// One vCPU as `XEN_DOMCTL_getvcpuinfo` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VcpuInfo {
    /// Whether it is up.
    pub online: bool,
    /// Whether it waits for an event.
    pub blocked: bool,
    /// Whether it runs on a physical CPU now.
    pub running: bool,
    /// CPU time it has run, in nanoseconds.
    pub cpu_time_ns: u64,
    /// The physical CPU it runs or last ran on.
    pub cpu: u32,
}

bitflags::bitflags! {
    /// What the host's Xen can do (`XEN_SYSCTL_PHYSCAP_*`, `public/sysctl.h`): the
    /// `virt_caps` of `xl info`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PhysCaps: u32 {
        /// HVM guests.
        const HVM = xen_sys::xen_4_17::XEN_SYSCTL_PHYSCAP_hvm;
        /// PV guests.
        const PV = xen_sys::xen_4_17::XEN_SYSCTL_PHYSCAP_pv;
        /// Device pass-through (an IOMMU).
        const DIRECTIO = xen_sys::xen_4_17::XEN_SYSCTL_PHYSCAP_directio;
        /// Hardware-assisted paging.
        const HAP = xen_sys::xen_4_17::XEN_SYSCTL_PHYSCAP_hap;
        /// Shadow paging.
        const SHADOW = xen_sys::xen_4_17::XEN_SYSCTL_PHYSCAP_shadow;
        /// The IOMMU shares HAP page tables.
        const IOMMU_HAP_PT_SHARE = xen_sys::xen_4_17::XEN_SYSCTL_PHYSCAP_iommu_hap_pt_share;
        /// Processor trace for guests.
        const VMTRACE = xen_sys::xen_4_17::XEN_SYSCTL_PHYSCAP_vmtrace;
        /// Virtual performance counters.
        const VPMU = xen_sys::xen_4_17::XEN_SYSCTL_PHYSCAP_vpmu;
        /// Grant table version 1.
        const GNTTAB_V1 = xen_sys::xen_4_17::XEN_SYSCTL_PHYSCAP_gnttab_v1;
        /// Grant table version 2.
        const GNTTAB_V2 = xen_sys::xen_4_17::XEN_SYSCTL_PHYSCAP_gnttab_v2;
    }
}

/// The host as `XEN_SYSCTL_physinfo` reports it (what `xl info` shows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PhysInfo {
    /// `threads_per_core`.
    pub threads_per_core: u32,
    /// `cores_per_socket`.
    pub cores_per_socket: u32,
    /// CPUs Xen runs on (`nr_cpus`).
    pub nr_cpus: u32,
    /// The highest CPU id.
    pub max_cpu_id: u32,
    /// NUMA nodes.
    pub nr_nodes: u32,
    /// The highest NUMA node id.
    pub max_node_id: u32,
    /// CPU frequency, in kHz (`cpu_mhz` in `xl info` is this / 1000).
    pub cpu_khz: u32,
    /// What Xen can do (`virt_caps`). Bits this crate does not name are kept.
    pub capabilities: PhysCaps,
    /// Architecture-specific capabilities (on Arm, the SVE vector length).
    pub arch_capabilities: u32,
    /// Host memory, in pages (`total_memory` in `xl info` is this * 4 / 1024 MiB).
    pub total_pages: u64,
    /// Free host memory, in pages.
    pub free_pages: u64,
    /// Pages waiting to be scrubbed.
    pub scrub_pages: u64,
    /// Pages claimed by domains but not yet allocated.
    pub outstanding_pages: u64,
    /// The highest machine frame.
    pub max_mfn: u64,
    /// The CPU's feature words (`hw_caps`).
    pub hw_cap: [u32; 8],
}
