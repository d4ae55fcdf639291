//! The toolstack's domain control: `domctl` getdomaininfo, pausedomain, unpausedomain,
//! destroydomain, max_mem, getvcpuinfo, and `sysctl` getdomaininfolist and physinfo, in the order
//! of checks of Xen's `do_domctl` (`xen/common/domctl.c`) and `do_sysctl` (`sysctl.c`):
//! interface version (`EACCES`), then the domain (`ESRCH`; Xen 4.17's getdomaininfo is the
//! exception, below), then XSM (`EPERM` for an
//! unprivileged caller as the dummy policy answers, `EACCES` when
//! [`MockXen::set_xsm_denies`] plays a FLASK policy that denies), then the command.
//!
//! The mock speaks one domctl interface version at a time
//! ([`MockXen::set_domctl_interface_version`]; Xen 4.17's `0x15` by default, 4.20's is `0x17`).
//! The structures these commands use have the same layout in both releases (asserted below), so
//! one decoding serves both.

use std::collections::BTreeMap;

use zerocopy::{FromBytes, FromZeros, IntoBytes};

use super::MockXen;
use super::guest::Guest;
use super::hypervisor::{Hypervisor, refuse};
use crate::{DomId, Errno, Error};

use xen_sys::xen_4_17 as abi;

/// Xen 4.17's domctl interface version, whose getdomaininfo looks for the next domain.
const DOMCTL_4_17: u32 = abi::XEN_DOMCTL_INTERFACE_VERSION;

const _: () = {
    use core::mem::size_of;
    use xen_sys::xen_4_20 as next;
    assert!(size_of::<abi::xen_domctl>() == size_of::<next::xen_domctl>());
    assert!(size_of::<abi::xen_sysctl>() == size_of::<next::xen_sysctl>());
    assert!(
        size_of::<abi::xen_domctl_getdomaininfo>() == size_of::<next::xen_domctl_getdomaininfo>()
    );
    assert!(size_of::<abi::xen_sysctl_physinfo>() == size_of::<next::xen_sysctl_physinfo>());
    assert!(size_of::<abi::xen_domctl_getvcpuinfo>() == size_of::<next::xen_domctl_getvcpuinfo>());
};

/// What the toolstack sees of a domain beyond what other hypercalls model.
#[derive(Debug, Clone)]
pub(super) struct DomainControl {
    /// `controller_pause_count`: pauses by the toolstack not yet undone.
    pub(super) pauses: u32,
    pub(super) tot_pages: u64,
    pub(super) max_pages: u64,
    pub(super) cpu_time: u64,
    pub(super) handle: [u8; 16],
}

impl Default for DomainControl {
    fn default() -> Self {
        Self {
            pauses: 0,
            tot_pages: 256,
            max_pages: 512,
            cpu_time: 0,
            handle: [0; 16],
        }
    }
}

/// The hypervisor-wide state of domain control.
#[derive(Debug)]
pub(super) struct Control {
    pub(super) domctl_version: u32,
    /// A FLASK policy denying the toolstack's commands (`EACCES`).
    pub(super) xsm_denies: bool,
    pub(super) domains: BTreeMap<u16, DomainControl>,
    pub(super) physinfo: abi::xen_sysctl_physinfo,
}

impl Default for Control {
    fn default() -> Self {
        let mut physinfo = abi::xen_sysctl_physinfo::new_zeroed();
        physinfo.threads_per_core = 1;
        physinfo.cores_per_socket = 2;
        physinfo.nr_cpus = 2;
        physinfo.max_cpu_id = 1;
        physinfo.nr_nodes = 1;
        physinfo.cpu_khz = 2_000_000;
        physinfo.capabilities = abi::XEN_SYSCTL_PHYSCAP_hvm | abi::XEN_SYSCTL_PHYSCAP_pv;
        physinfo.total_pages = 0x4_0000;
        physinfo.free_pages = 0x1_0000;
        physinfo.max_mfn = 0x4_0000;
        Self {
            domctl_version: abi::XEN_DOMCTL_INTERFACE_VERSION,
            xsm_denies: false,
            domains: BTreeMap::new(),
            physinfo,
        }
    }
}

impl MockXen {
    /// Makes the mock speak domctl interface version `version` (Xen 4.17: `0x15`, 4.20: `0x17`);
    /// any other is refused with `EACCES`, as Xen does.
    pub fn set_domctl_interface_version(&self, version: u32) {
        self.lock().control.domctl_version = version;
    }

    /// Plays an XSM (FLASK) policy that denies (`EACCES`) every domctl and sysctl once the
    /// interface version and the domain are found good, as Xen's `xsm_domctl` / `xsm_sysctl` do.
    pub fn set_xsm_denies(&self, denies: bool) {
        self.lock().control.xsm_denies = denies;
    }

    /// Sets what `getdomaininfo` reports of domain `id` (which must exist: see
    /// [`MockXen::domain`]): pages in use, the maximum, its handle (UUID) and CPU time.
    pub fn set_domain_pages(&self, id: DomId, tot_pages: u64, max_pages: u64) {
        let mut xen = self.lock();
        let control = xen.control.domains.entry(id.0).or_default();
        control.tot_pages = tot_pages;
        control.max_pages = max_pages;
    }

    /// Sets the UUID `getdomaininfo` reports for domain `id`.
    pub fn set_domain_handle(&self, id: DomId, handle: [u8; 16]) {
        self.lock().control.domains.entry(id.0).or_default().handle = handle;
    }

    /// Whether the toolstack paused domain `id` (its `controller_pause_count` is not 0).
    pub fn is_paused(&self, id: DomId) -> bool {
        self.lock()
            .control
            .domains
            .get(&id.0)
            .is_some_and(|d| d.pauses > 0)
    }

    /// Whether domain `id` exists (it was not destroyed).
    pub fn domain_exists(&self, id: DomId) -> bool {
        self.lock().domains.contains_key(&id.0)
    }

    /// `do_domctl`: `arg` points at a `xen_domctl`.
    pub(super) fn domctl(&self, guest: &Guest, arg: usize) -> Result<usize, Error> {
        let mut xen = self.lock();
        let mut op: abi::xen_domctl = guest.read(arg)?;
        if op.interface_version != xen.control.domctl_version {
            return Err(refuse(Errno::EACCES));
        }
        let mut domid = op.domain;
        if !xen.domains.contains_key(&domid) {
            // Xen 4.17 (domctl 0x15) lets getdomaininfo of a missing domain through to XSM,
            // then answers for the next domain up (EINVAL for a reserved id, ESRCH past the
            // last); later releases refuse it here like every other command.
            if op.cmd != abi::XEN_DOMCTL_getdomaininfo || op.interface_version != DOMCTL_4_17 {
                return Err(refuse(Errno::ESRCH));
            }
            xsm_check(&xen, self.domid)?;
            if domid >= DomId::FIRST_RESERVED.0 {
                return Err(refuse(Errno::EINVAL));
            }
            domid = *xen
                .domains
                .range(domid..)
                .next()
                .ok_or(refuse(Errno::ESRCH))?
                .0;
        }
        xsm_check(&xen, self.domid)?;
        let union = op.u.as_mut_bytes();
        match op.cmd {
            abi::XEN_DOMCTL_getdomaininfo => {
                let info = domain_info(&xen, domid);
                union[..size_of_val(&info)].copy_from_slice(info.as_bytes());
            }
            abi::XEN_DOMCTL_pausedomain => {
                if domid == self.domid {
                    return Err(refuse(Errno::EINVAL));
                }
                xen.control.domains.entry(domid).or_default().pauses += 1;
                return Ok(0);
            }
            abi::XEN_DOMCTL_unpausedomain => {
                let control = xen.control.domains.entry(domid).or_default();
                if control.pauses == 0 {
                    return Err(refuse(Errno::EINVAL));
                }
                control.pauses -= 1;
                return Ok(0);
            }
            abi::XEN_DOMCTL_destroydomain => {
                if domid == self.domid {
                    return Err(refuse(Errno::EINVAL));
                }
                xen.domains.remove(&domid);
                xen.control.domains.remove(&domid);
                return Ok(0);
            }
            abi::XEN_DOMCTL_max_mem => {
                let (max_mem, _) = abi::xen_domctl_max_mem::read_from_prefix(union)
                    .map_err(|_| refuse(Errno::EFAULT))?;
                xen.control.domains.entry(domid).or_default().max_pages = max_mem.max_memkb >> 2;
                return Ok(0);
            }
            abi::XEN_DOMCTL_getvcpuinfo => {
                let (mut vcpu, _) = abi::xen_domctl_getvcpuinfo::read_from_prefix(union)
                    .map_err(|_| refuse(Errno::EFAULT))?;
                if vcpu.vcpu >= xen.domain(domid).vcpus {
                    return Err(refuse(Errno::EINVAL));
                }
                let paused = xen
                    .control
                    .domains
                    .get(&domid)
                    .is_some_and(|d| d.pauses > 0);
                vcpu.online = 1;
                vcpu.blocked = u8::from(!paused);
                vcpu.running = 0;
                vcpu.cpu_time = xen.control.domains.get(&domid).map_or(0, |d| d.cpu_time);
                vcpu.cpu = vcpu.vcpu % xen.control.physinfo.nr_cpus.max(1);
                union[..size_of_val(&vcpu)].copy_from_slice(vcpu.as_bytes());
            }
            _ => return Err(refuse(Errno::ENOSYS)),
        }
        guest.write(arg, &op).map(|()| 0)
    }

    /// The domain control commands of `do_sysctl`, after its version and privilege checks:
    /// `op` is the caller's `xen_sysctl` at `arg`.
    pub(super) fn sysctl_control(
        &self,
        xen: &Hypervisor,
        guest: &Guest,
        arg: usize,
        op: [u8; 136],
    ) -> Result<usize, Error> {
        let mut op = abi::xen_sysctl::read_from_bytes(&op).map_err(|_| refuse(Errno::EFAULT))?;
        xsm_check(xen, self.domid)?;
        let union = op.u.as_mut_bytes();
        match op.cmd {
            abi::XEN_SYSCTL_physinfo => {
                let info = xen.control.physinfo;
                union[..size_of_val(&info)].copy_from_slice(info.as_bytes());
            }
            abi::XEN_SYSCTL_getdomaininfolist => {
                let (mut list, _) = abi::xen_sysctl_getdomaininfolist::read_from_prefix(union)
                    .map_err(|_| refuse(Errno::EFAULT))?;
                let mut written = 0u32;
                let entry = size_of::<abi::xen_domctl_getdomaininfo>();
                for &id in xen.domains.keys().filter(|&&id| id >= list.first_domain) {
                    if written == list.max_domains {
                        break;
                    }
                    let info = domain_info(xen, id);
                    let at = list.buffer.address() as usize + written as usize * entry;
                    guest.write(at, &info)?;
                    written += 1;
                }
                list.num_domains = written;
                union[..size_of_val(&list)].copy_from_slice(list.as_bytes());
            }
            _ => return Err(refuse(Errno::ENOSYS)),
        }
        guest.write(arg, &op).map(|()| 0)
    }
}

/// `xsm_domctl` / `xsm_sysctl`: the dummy policy lets only the control domain through
/// (`EPERM`); a denying FLASK policy answers `EACCES`.
fn xsm_check(xen: &Hypervisor, caller: u16) -> Result<(), Error> {
    if xen.control.xsm_denies {
        Err(refuse(Errno::EACCES))
    } else if !xen.domain(caller).privileged {
        Err(refuse(Errno::EPERM))
    } else {
        Ok(())
    }
}

/// `getdomaininfo()` of domain `id`, which exists.
fn domain_info(xen: &Hypervisor, id: u16) -> abi::xen_domctl_getdomaininfo {
    let domain = xen.domain(id);
    let control = xen.control.domains.get(&id).cloned().unwrap_or_default();
    let mut info = abi::xen_domctl_getdomaininfo::new_zeroed();
    info.domain = id;
    // Every vCPU is online and blocked (waiting for an event), as an idle guest's are.
    info.flags = abi::XEN_DOMINF_blocked
        | if control.pauses > 0 {
            abi::XEN_DOMINF_paused
        } else {
            0
        }
        | match domain.shutdown {
            Some(reason) => abi::XEN_DOMINF_shutdown | (reason.0 << abi::XEN_DOMINF_shutdownshift),
            None => 0,
        };
    info.tot_pages = control.tot_pages;
    info.max_pages = control.max_pages;
    info.cpu_time = control.cpu_time;
    info.nr_online_vcpus = domain.vcpus;
    info.max_vcpu_id = domain.vcpus.saturating_sub(1);
    info.handle = control.handle;
    info
}
