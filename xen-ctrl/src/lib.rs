#![doc = include_str!("../README.md")]
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

mod error;
mod hypercall;
mod info;

use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

use xen_hypercall::version::VersionOps;
use xen_hypercall::{DomId, Errno, XenHypercall};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

pub use error::Error;
pub use info::{DomainFlags, DomainInfo, PhysCaps, PhysInfo, VcpuInfo};

/// The domctl interface versions this crate speaks, newest first: `0x17` (Xen 4.19 to 4.21),
/// `0x15` (Xen 4.17).
pub const KNOWN_DOMCTL_VERSIONS: [u32; 2] = [
    xen_sys::xen_4_20::XEN_DOMCTL_INTERFACE_VERSION,
    xen_sys::xen_4_17::XEN_DOMCTL_INTERFACE_VERSION,
];
const _: () = assert!(KNOWN_DOMCTL_VERSIONS[0] == 0x17 && KNOWN_DOMCTL_VERSIONS[1] == 0x15);

/// Which of Xen's two versioned toolstack interfaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InterfaceKind {
    /// `domctl`: per-domain control.
    Domctl,
    /// `sysctl`: system-wide control.
    Sysctl,
}

impl fmt::Display for InterfaceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Domctl => "domctl",
            Self::Sysctl => "sysctl",
        })
    }
}

/// The structure layouts of one Xen release, from its headers (`xen_sys::xen_4_17`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
enum Abi {
    /// Xen 4.17: domctl `0x15`, sysctl `0x15`.
    Xen4_17 = 1,
    /// Xen 4.20: domctl `0x17`, sysctl `0x15`.
    Xen4_20 = 2,
}

impl Abi {
    fn from_domctl_version(version: u32) -> Option<Self> {
        match version {
            xen_sys::xen_4_17::XEN_DOMCTL_INTERFACE_VERSION => Some(Self::Xen4_17),
            xen_sys::xen_4_20::XEN_DOMCTL_INTERFACE_VERSION => Some(Self::Xen4_20),
            _ => None,
        }
    }
}

/// Runs `$body` with `sys` naming the xen-sys module of `$abi`'s release: the one place where
/// a proven interface version chooses the structure layouts.
macro_rules! with_abi {
    ($abi:expr, $body:expr) => {
        match $abi {
            Abi::Xen4_17 => {
                use xen_sys::xen_4_17 as sys;
                $body
            }
            Abi::Xen4_20 => {
                use xen_sys::xen_4_20 as sys;
                $body
            }
        }
    };
}

/// The interface versions the running Xen was found to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Interface {
    abi: Abi,
}

impl Interface {
    /// `XEN_DOMCTL_INTERFACE_VERSION` of the running Xen.
    pub fn domctl_version(&self) -> u32 {
        with_abi!(self.abi, sys::XEN_DOMCTL_INTERFACE_VERSION)
    }

    /// `XEN_SYSCTL_INTERFACE_VERSION` this crate uses with the running Xen.
    pub fn sysctl_version(&self) -> u32 {
        with_abi!(self.abi, sys::XEN_SYSCTL_INTERFACE_VERSION)
    }
}

/// How many domains one `XEN_SYSCTL_getdomaininfolist` asks for.
const LIST_BATCH: usize = 16;

/// The control plane of a toolstack domain (dom0), over any [`XenHypercall`] backend: Linux's
/// privcmd, or a freestanding dom0's native hypercalls.
///
/// Xen refuses a `domctl` or `sysctl` whose `interface_version` is not its own with `EACCES`,
/// and the layouts of their structures follow that version. The first call finds the version
/// the running Xen speaks ([`XenCtrl::interface`]) and every later call uses it, so one binary
/// runs on every release in [`KNOWN_DOMCTL_VERSIONS`].
pub struct XenCtrl<H> {
    hypercall: H,
    /// The proven [`Abi`] as its `u8`, 0 before the first probe. Concurrent first calls may
    /// both probe; they store the same value.
    abi: AtomicU8,
}

impl<H: fmt::Debug> fmt::Debug for XenCtrl<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XenCtrl")
            .field("hypercall", &self.hypercall)
            .field("abi", &self.abi.load(Ordering::Relaxed))
            .finish()
    }
}

impl<H> XenCtrl<H>
where
    H: XenHypercall<Error = xen_hypercall::Error>,
{
    /// Domain control over `hypercall`. Nothing is called until the first operation.
    pub fn new(hypercall: H) -> Self {
        Self {
            hypercall,
            abi: AtomicU8::new(0),
        }
    }

    /// The hypercall backend.
    pub fn hypercall(&self) -> &H {
        &self.hypercall
    }

    /// The interface versions the running Xen speaks, found on the first call.
    ///
    /// The probe is `XEN_DOMCTL_getvcpuinfo` of `DOMID_INVALID`, a domain that never exists,
    /// with each known version. Xen's `do_domctl` (xen/common/domctl.c, 4.17 and 4.20) checks, in
    /// this order: the interface version (`EACCES`), then, for every command but a few
    /// (createdomain, device assignment, vm_event, and on 4.17 getdomaininfo, which looks for
    /// the next domain up after asking XSM), the domain (`rcu_lock_domain_by_id`, `ESRCH`), and
    /// only then XSM (`xsm_domctl`). So `ESRCH` proves the version whatever the security
    /// policy, `EACCES` refutes it, and an XSM denial cannot be mistaken for either. Every
    /// `EACCES` after the probe is therefore the policy's: [`Error::Denied`].
    ///
    /// # Errors
    ///
    /// [`Error::UnknownInterface`] when Xen speaks no domctl version this crate knows,
    /// [`Error::Xen`] for another refusal of the probe, [`Error::Hypercall`] when the backend
    /// fails.
    pub fn interface(&self) -> Result<Interface, Error> {
        match self.abi.load(Ordering::Relaxed) {
            1 => return Ok(Interface { abi: Abi::Xen4_17 }),
            2 => return Ok(Interface { abi: Abi::Xen4_20 }),
            _ => {}
        }
        for version in KNOWN_DOMCTL_VERSIONS {
            let abi = Abi::from_domctl_version(version).expect("a known version");
            let probe = with_abi!(abi, {
                let mut op = sys::xen_domctl::new_zeroed();
                op.cmd = sys::XEN_DOMCTL_getvcpuinfo;
                op.interface_version = version;
                op.domain = DomId::INVALID.0;
                hypercall::domctl(&self.hypercall, &mut op)
            });
            match probe {
                Err(xen_hypercall::Error::Xen(Errno::EACCES)) => continue,
                Err(xen_hypercall::Error::Xen(Errno::ESRCH)) => {
                    self.abi.store(abi as u8, Ordering::Relaxed);
                    return Ok(Interface { abi });
                }
                // No domain answers for DOMID_INVALID: Xen broke its own order of checks.
                Ok(_) => return Err(Error::Xen(Errno::EINVAL)),
                Err(xen_hypercall::Error::Xen(errno)) => return Err(Error::Xen(errno)),
                Err(other) => return Err(Error::Hypercall(other)),
            }
        }
        Err(Error::UnknownInterface(InterfaceKind::Domctl))
    }

    /// Issues domctl `cmd` on `domid`; `fill` writes its payload into the union, `read`
    /// decodes Xen's answer from it.
    fn domctl<T>(
        &self,
        cmd: u32,
        domid: DomId,
        fill: impl FnOnce(&mut [u8]),
        read: impl FnOnce(Abi, &[u8]) -> T,
    ) -> Result<T, Error> {
        let abi = self.interface()?.abi;
        with_abi!(abi, {
            let mut op = sys::xen_domctl::new_zeroed();
            op.cmd = cmd;
            op.interface_version = sys::XEN_DOMCTL_INTERFACE_VERSION;
            op.domain = domid.0;
            fill(op.u.as_mut_bytes());
            hypercall::domctl(&self.hypercall, &mut op)
                .map_err(|e| Error::from_proven(e, Some(domid)))?;
            Ok(read(abi, op.u.as_bytes()))
        })
    }

    /// `XEN_DOMCTL_getdomaininfo`: domain `domid`.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchDomain`] for no domain `domid`, [`Error::Denied`] when Xen's policy
    /// refuses the caller (not a toolstack domain), [`Error::UnknownInterface`] when Xen speaks
    /// no domctl version this crate knows, [`Error::Hypercall`] when the backend fails.
    pub fn domain_info(&self, domid: DomId) -> Result<DomainInfo, Error> {
        // Reserved ids are never domains (Xen 4.17 answers EINVAL for them, later ESRCH).
        if domid.0 >= DomId::FIRST_RESERVED.0 {
            self.interface()?;
            return Err(Error::NoSuchDomain(domid));
        }
        let info = self.domctl(
            with_abi!(Abi::Xen4_17, sys::XEN_DOMCTL_getdomaininfo),
            domid,
            |_| {},
            decode_domain_info,
        )?;
        // Xen 4.17 answers for the next domain up when the one asked for is missing (4.18 and
        // later refuse with ESRCH).
        if info.domid != domid {
            return Err(Error::NoSuchDomain(domid));
        }
        Ok(info)
    }

    /// `XEN_DOMCTL_pausedomain`: stops scheduling domain `domid` until as many
    /// [`unpause_domain`](Self::unpause_domain)s. A domain cannot pause itself (`EINVAL`).
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchDomain`] for no domain `domid`, [`Error::Denied`] when Xen's policy
    /// refuses the caller (not a toolstack domain), [`Error::UnknownInterface`] when Xen speaks
    /// no domctl version this crate knows, [`Error::Hypercall`] when the backend fails.
    /// [`Error::Xen`] with `EINVAL` for this domain itself.
    pub fn pause_domain(&self, domid: DomId) -> Result<(), Error> {
        let cmd = with_abi!(Abi::Xen4_17, sys::XEN_DOMCTL_pausedomain);
        self.domctl(cmd, domid, |_| {}, |_, _| ())
    }

    /// `XEN_DOMCTL_unpausedomain`: undoes one [`pause_domain`](Self::pause_domain); `EINVAL`
    /// when the toolstack has not paused it.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchDomain`] for no domain `domid`, [`Error::Denied`] when Xen's policy
    /// refuses the caller (not a toolstack domain), [`Error::UnknownInterface`] when Xen speaks
    /// no domctl version this crate knows, [`Error::Hypercall`] when the backend fails.
    /// [`Error::Xen`] with `EINVAL` for a domain that is not paused.
    pub fn unpause_domain(&self, domid: DomId) -> Result<(), Error> {
        let cmd = with_abi!(Abi::Xen4_17, sys::XEN_DOMCTL_unpausedomain);
        self.domctl(cmd, domid, |_| {}, |_, _| ())
    }

    /// `XEN_DOMCTL_destroydomain`: kills domain `domid` and frees its memory. The toolstack's
    /// other state about it (xenstore, backends) is the caller's to clean up, as `xl destroy`
    /// does.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchDomain`] for no domain `domid`, [`Error::Denied`] when Xen's policy
    /// refuses the caller (not a toolstack domain), [`Error::UnknownInterface`] when Xen speaks
    /// no domctl version this crate knows, [`Error::Hypercall`] when the backend fails.
    pub fn destroy_domain(&self, domid: DomId) -> Result<(), Error> {
        let cmd = with_abi!(Abi::Xen4_17, sys::XEN_DOMCTL_destroydomain);
        self.domctl(cmd, domid, |_| {}, |_, _| ())
    }

    /// `XEN_DOMCTL_max_mem`: the most memory domain `domid` may hold, in KiB (Xen rounds down
    /// to pages).
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchDomain`] for no domain `domid`, [`Error::Denied`] when Xen's policy
    /// refuses the caller (not a toolstack domain), [`Error::UnknownInterface`] when Xen speaks
    /// no domctl version this crate knows, [`Error::Hypercall`] when the backend fails.
    pub fn set_max_mem(&self, domid: DomId, max_kib: u64) -> Result<(), Error> {
        let cmd = with_abi!(Abi::Xen4_17, sys::XEN_DOMCTL_max_mem);
        self.domctl(
            cmd,
            domid,
            |union| union[..8].copy_from_slice(&max_kib.to_ne_bytes()),
            |_, _| (),
        )
    }

    /// `XEN_DOMCTL_getvcpuinfo`: vCPU `vcpu` of domain `domid`; `EINVAL` for a vCPU id beyond
    /// the domain's, `ESRCH` (as [`Error::Xen`]) for one not created.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchDomain`] for no domain `domid`, [`Error::Denied`] when Xen's policy
    /// refuses the caller (not a toolstack domain), [`Error::UnknownInterface`] when Xen speaks
    /// no domctl version this crate knows, [`Error::Hypercall`] when the backend fails.
    /// [`Error::Xen`] with `EINVAL` for a `vcpu` beyond the domain's maximum, `ESRCH` for one
    /// it has not created.
    pub fn vcpu_info(&self, domid: DomId, vcpu: u32) -> Result<VcpuInfo, Error> {
        let cmd = with_abi!(Abi::Xen4_17, sys::XEN_DOMCTL_getvcpuinfo);
        let info = self.domctl(
            cmd,
            domid,
            |union| union[..4].copy_from_slice(&vcpu.to_ne_bytes()),
            decode_vcpu_info,
        );
        match info {
            // ESRCH names either the domain (`do_domctl`'s lookup) or a vCPU never created
            // (domctl.c, getvcpuinfo): the domain's existence tells which.
            Err(Error::NoSuchDomain(_)) => match self.domain_info(domid) {
                Ok(_) => Err(Error::Xen(Errno::ESRCH)),
                Err(error) => Err(error),
            },
            other => other,
        }
    }

    /// `XEN_SYSCTL_physinfo`: the host's CPUs, memory and capabilities.
    ///
    /// # Errors
    ///
    /// [`Error::Denied`] when Xen's policy refuses the caller, [`Error::UnknownInterface`]
    /// when Xen speaks no interface version this crate knows, [`Error::Hypercall`] when the
    /// backend fails.
    pub fn physinfo(&self) -> Result<PhysInfo, Error> {
        let abi = self.interface()?.abi;
        with_abi!(abi, {
            let mut op = sys::xen_sysctl::new_zeroed();
            op.cmd = sys::XEN_SYSCTL_physinfo;
            op.interface_version = sys::XEN_SYSCTL_INTERFACE_VERSION;
            hypercall::physinfo(&self.hypercall, &mut op).map_err(|e| self.sysctl_error(e))?;
            let (raw, _) = sys::xen_sysctl_physinfo::read_from_prefix(op.u.as_bytes())
                .expect("the union holds a physinfo");
            Ok(PhysInfo {
                threads_per_core: raw.threads_per_core,
                cores_per_socket: raw.cores_per_socket,
                nr_cpus: raw.nr_cpus,
                max_cpu_id: raw.max_cpu_id,
                nr_nodes: raw.nr_nodes,
                max_node_id: raw.max_node_id,
                cpu_khz: raw.cpu_khz,
                capabilities: PhysCaps::from_bits_retain(raw.capabilities),
                arch_capabilities: raw.arch_capabilities,
                total_pages: raw.total_pages,
                free_pages: raw.free_pages,
                scrub_pages: raw.scrub_pages,
                outstanding_pages: raw.outstanding_pages,
                max_mfn: raw.max_mfn,
                hw_cap: raw.hw_cap,
            })
        })
    }

    /// `XEN_SYSCTL_getdomaininfolist`: the domains with ids from `first` up, in id order, into
    /// `out`; returns how many were written. Fewer than `out.len()` means there are no more;
    /// otherwise continue from the last one's id + 1. [`domains`](Self::domains) does that.
    ///
    /// # Errors
    ///
    /// [`Error::Denied`] when Xen's policy refuses the caller, [`Error::UnknownInterface`]
    /// when Xen speaks no interface version this crate knows, [`Error::Hypercall`] when the
    /// backend fails.
    pub fn domain_list(&self, first: DomId, out: &mut [DomainInfo]) -> Result<usize, Error> {
        let abi = self.interface()?.abi;
        let mut written = 0;
        let mut next = first;
        while written < out.len() {
            let want = (out.len() - written).min(LIST_BATCH);
            let got = with_abi!(abi, {
                let mut raw = [sys::xen_domctl_getdomaininfo::new_zeroed(); LIST_BATCH];
                let got = hypercall::getdomaininfolist::<_, sys::xen_sysctl>(
                    &self.hypercall,
                    next.0,
                    &mut raw[..want],
                )
                .map_err(|e| self.sysctl_error(e))?;
                for (slot, entry) in out[written..].iter_mut().zip(&raw[..got]) {
                    *slot = decode_domain_info(abi, entry.as_bytes());
                }
                got
            });
            written += got;
            if got < want {
                break;
            }
            match out[written - 1].domid.0.checked_add(1) {
                Some(id) if id < DomId::FIRST_RESERVED.0 => next = DomId(id),
                _ => break,
            }
        }
        Ok(written)
    }

    /// Every domain, in id order, fetched 16 at a time without allocating.
    pub fn domains(&self) -> Domains<'_, H> {
        Domains {
            ctrl: self,
            batch: [None; LIST_BATCH],
            at: 0,
            next: Some(DomId(0)),
        }
    }

    /// A sysctl's error once the domctl version is proven. Sysctls have no probe that XSM cannot
    /// deny (`do_sysctl` checks the version, then `xsm_sysctl`, before any command), so the
    /// sysctl version is the one of the release the domctl probe proved; `EACCES` is then the
    /// policy's, unless `XENVER_version` (which no policy denies: xsm/dummy.h and
    /// flask/hooks.c, `xen_version`) names a release newer than that layout's.
    fn sysctl_error(&self, error: xen_hypercall::Error) -> Error {
        if error == xen_hypercall::Error::Xen(Errno::EACCES) {
            let newest = self.abi.load(Ordering::Relaxed) == Abi::Xen4_20 as u8;
            let newer = match self.hypercall.xen_version() {
                Ok(v) => newest && (v.major, v.minor) > (4, 20),
                Err(_) => false,
            };
            if newer {
                return Error::UnknownInterface(InterfaceKind::Sysctl);
            }
        }
        Error::from_proven(error, None)
    }
}

/// Decodes a release's `xen_domctl_getdomaininfo` from `bytes`.
fn decode_domain_info(abi: Abi, bytes: &[u8]) -> DomainInfo {
    with_abi!(abi, {
        let (raw, _) = sys::xen_domctl_getdomaininfo::read_from_prefix(bytes)
            .expect("the union holds a getdomaininfo");
        let (flags, shutdown_reason) = DomainInfo::state(raw.flags);
        DomainInfo {
            domid: DomId(raw.domain),
            flags,
            shutdown_reason,
            tot_pages: raw.tot_pages,
            max_pages: raw.max_pages,
            outstanding_pages: raw.outstanding_pages,
            shr_pages: raw.shr_pages,
            paged_pages: raw.paged_pages,
            shared_info_frame: raw.shared_info_frame,
            cpu_time_ns: raw.cpu_time,
            online_vcpus: raw.nr_online_vcpus,
            max_vcpu_id: raw.max_vcpu_id,
            ssidref: raw.ssidref,
            handle: raw.handle,
            cpupool: raw.cpupool,
            gpaddr_bits: raw.gpaddr_bits,
        }
    })
}

/// Decodes a release's `xen_domctl_getvcpuinfo` from `bytes`.
fn decode_vcpu_info(abi: Abi, bytes: &[u8]) -> VcpuInfo {
    with_abi!(abi, {
        let (raw, _) = sys::xen_domctl_getvcpuinfo::read_from_prefix(bytes)
            .expect("the union holds a getvcpuinfo");
        VcpuInfo {
            online: raw.online != 0,
            blocked: raw.blocked != 0,
            running: raw.running != 0,
            cpu_time_ns: raw.cpu_time,
            cpu: raw.cpu,
        }
    })
}

/// Every domain, in id order: [`XenCtrl::domains`].
///
/// Domains created or destroyed while iterating may or may not be seen, as with `xl list`.
#[derive(Debug)]
pub struct Domains<'a, H> {
    ctrl: &'a XenCtrl<H>,
    batch: [Option<DomainInfo>; LIST_BATCH],
    at: usize,
    /// Where the next batch starts; `None` once the last one was fetched.
    next: Option<DomId>,
}

impl<H> Iterator for Domains<'_, H>
where
    H: XenHypercall<Error = xen_hypercall::Error>,
{
    type Item = Result<DomainInfo, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(info) = self.batch.get_mut(self.at).and_then(Option::take) {
            self.at += 1;
            return Some(Ok(info));
        }
        let first = self.next?;
        let mut infos = [DomainInfo::EMPTY; LIST_BATCH];
        let got = match self.ctrl.domain_list(first, &mut infos) {
            Ok(got) => got,
            Err(error) => {
                self.next = None;
                return Some(Err(error));
            }
        };
        self.next = match infos[..got].last() {
            Some(last) if got == LIST_BATCH && last.domid.0 + 1 < DomId::FIRST_RESERVED.0 => {
                Some(DomId(last.domid.0 + 1))
            }
            _ => None,
        };
        for (slot, info) in self.batch.iter_mut().zip(&infos[..got]) {
            *slot = Some(*info);
        }
        self.at = 0;
        if got == 0 {
            return None;
        }
        self.next()
    }
}

impl Default for DomainInfo {
    /// A placeholder for [`XenCtrl::domain_list`]'s output: `DOMID_INVALID`, all zero.
    fn default() -> Self {
        Self::EMPTY
    }
}

impl DomainInfo {
    /// A placeholder for output arrays.
    const EMPTY: Self = Self {
        domid: DomId::INVALID,
        flags: DomainFlags::empty(),
        shutdown_reason: None,
        tot_pages: 0,
        max_pages: 0,
        outstanding_pages: 0,
        shr_pages: 0,
        paged_pages: 0,
        shared_info_frame: 0,
        cpu_time_ns: 0,
        online_vcpus: 0,
        max_vcpu_id: 0,
        ssidref: 0,
        handle: [0; 16],
        cpupool: 0,
        gpaddr_bits: 0,
    };
}

#[cfg(test)]
mod tests;
