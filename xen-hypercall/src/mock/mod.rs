//! A mock Xen hypervisor for tests: a [`XenHypercall`] backend that interprets
//! the hypercalls of this crate's typed wrappers with Xen's semantics.
//!
//! [`MockXen`] models one Xen with several domains. Each handle acts as one
//! domain; [`MockXen::domain`] gives a handle for another domain of the same
//! hypervisor, so interdomain event channels can be tested end to end.
//!
//! Like Xen, the mock reaches the caller's memory only through the addresses
//! in the hypercall's arguments, copying exactly the C structure's size in and
//! out: a wrapper that passes a wrong pointer, size, mutability or lifetime is
//! caught by Miri (`cargo +nightly miri test`, with
//! `MIRIFLAGS=-Zmiri-permissive-provenance` since the mock turns the integer
//! arguments back into pointers). With [`BufferMode::Bounce`] the buffers are
//! separate copies, as in a hosted backend.
//!
//! What is modelled:
//!
//! - `xen_version`: every sub-op, from [`MockConfig`]. As with Xen's default
//!   policy, `XENVER_commandline` and `XENVER_build_id` need a privileged domain.
//! - `console_io`: writes are captured ([`MockXen::output`]), reads consume
//!   queued input ([`MockXen::push_input`]); the console domain (a privileged
//!   one) only, else `EPERM`.
//! - `sched_op`: yield, block, shutdown, shutdown_code, poll, and suspend (its
//!   third argument recorded, the toolstack's answer set with
//!   [`MockXen::set_suspend_cancels`]). The mock cannot
//!   sleep: a deadline in the future advances its clock ([`MockXen::now`]) to
//!   it, and a block or poll that would wait forever (nothing pending, no
//!   deadline) fails with [`Error::Unsupported`] instead of hanging.
//! - `event_channel_op`: alloc_unbound, bind_interdomain, bind_virq, bind_ipi,
//!   bind_vcpu, close, send, status, unmask, reset over per-domain tables of
//!   the 2-level ABI's 4096 ports, with pending and mask bits.
//! - `hvm_op`: get/set_param (every domain is HVM; unset params read 0).
//! - `memory_op`: `XENMEM_add_to_physmap` of `XENMAPSPACE_shared_info`, recorded,
//!   and of `XENMAPSPACE_grant_table` (grows the table), recorded.
//! - `grant_table_op`: query_size, setup_table, get_version, map_grant_ref,
//!   unmap_grant_ref and copy over version-1 tables in page-aligned frames the
//!   mock owns. Frame numbers are the mock's: a test gives its pages one with
//!   [`MockXen::register_page`] and finds the table frames `setup_table`
//!   returns with [`MockXen::frame_address`]. Mappings pin entries with
//!   `GTF_reading`/`GTF_writing` as Xen does, but map nothing at `host_addr`:
//!   [`MockXen::mapped_at`] says which page a mapping there would show.
//! - `physdev_op`: `PHYSDEVOP_set_iopl`, recorded.
//! - `sysctl`: `XEN_SYSCTL_readconsole` over a 16 KiB log ring that holds
//!   [`MockXen::log`] lines and the console domain's `CONSOLEIO_write`s (as Xen
//!   does with `console_to_ring`); another interface version is `EACCES`
//!   ([`MockXen::set_sysctl_interface_version`]), a domain without privilege `EPERM`.
//! - domain control: `domctl` getdomaininfo, pausedomain, unpausedomain,
//!   destroydomain, max_mem, getvcpuinfo and `sysctl` getdomaininfolist, physinfo,
//!   with Xen's order of checks (see [`MockXen::set_domctl_interface_version`]).
//!
//! Errors are Xen's: `EINVAL` for bad ports and arguments, `ESRCH` for unknown
//! domains, `EPERM` for acting on another domain without privilege, `ENOSPC`
//! when out of ports, `ENOENT` for unknown vCPUs, `EFAULT` for NULL, `ENOSYS`
//! for hypercalls and sub-ops the mock does not know.

mod buffers;
mod ctrl;
mod grant;
mod guest;
mod hypervisor;

use core::mem::{offset_of, size_of};
use std::string::String;
use std::sync::{Arc, Mutex, MutexGuard};
use std::vec::Vec;

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes};

pub use self::buffers::{BufferMode, MockConstBuffer, MockMutBuffer};
use self::grant::GrantDomains;
use self::guest::Guest;
use self::hypervisor::{Domain, Hypervisor, MAX_PORTS, refuse, status_of};
use crate::buffer::{HypercallData, XenConstBuffer, XenMutBuffer};
use crate::grant_table::{GrantCopy, GrantStatus};
use crate::version::Version;
use crate::{
    DomId, Errno, Error, Gfn, HvmParam, MapSpace, Port, ShutdownReason, Virq, XenHypercall,
};

/// What the mock's `xen_version` reports, and how it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockConfig {
    /// `XENVER_version`.
    pub version: Version,
    /// `XENVER_extraversion` (truncated to 15 bytes, as Xen's array holds 16 with the NUL).
    pub extraversion: String,
    /// `XENVER_compile_info.compiler`.
    pub compiler: String,
    /// `XENVER_compile_info.compile_by`.
    pub compile_by: String,
    /// `XENVER_compile_info.compile_domain`.
    pub compile_domain: String,
    /// `XENVER_compile_info.compile_date`.
    pub compile_date: String,
    /// `XENVER_capabilities`.
    pub capabilities: String,
    /// `XENVER_changeset`.
    pub changeset: String,
    /// `XENVER_commandline`.
    pub commandline: String,
    /// `XENVER_platform_parameters.virt_start`.
    pub virt_start: u64,
    /// `XENVER_get_features`, submap 0.
    pub features: u32,
    /// `XENVER_pagesize`.
    pub pagesize: usize,
    /// `XENVER_guest_handle`, for every domain.
    pub guest_handle: [u8; 16],
    /// `XENVER_build_id`; `None` answers `ENODATA`, as a Xen built without one.
    pub build_id: Option<Vec<u8>>,
    /// vCPUs of each new domain.
    pub vcpus: u32,
    /// The highest event channel port of each domain (the domain's
    /// `max_evtchn_port`; `xl` gives guests 1023 by default). Capped by the
    /// 2-level ABI's 4096 ports.
    pub max_evtchn_port: u32,
    /// The most grant table frames each domain may have
    /// (`max_grant_frames`; Xen's default is 64).
    pub max_grant_frames: u32,
    /// How the first handle makes buffers.
    pub buffers: BufferMode,
}

impl Default for MockConfig {
    /// A Xen 4.17 on x86_64, one vCPU per domain, zero-copy buffers.
    fn default() -> Self {
        Self {
            version: Version {
                major: 4,
                minor: 17,
            },
            extraversion: ".0".into(),
            compiler: "gcc (Debian 12.2.0-14) 12.2.0".into(),
            compile_by: "mock".into(),
            compile_domain: "example.org".into(),
            compile_date: "Thu Jan  1 00:00:00 UTC 1970".into(),
            capabilities: "xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64".into(),
            changeset: "unavailable".into(),
            commandline: "console=com1 loglvl=all".into(),
            virt_start: 0xffff_8000_0000_0000,
            features: 0,
            pagesize: 4096,
            guest_handle: [0; 16],
            build_id: Some(std::vec![0x5a; 20]),
            vcpus: 1,
            max_evtchn_port: MAX_PORTS - 1,
            max_grant_frames: 64,
            buffers: BufferMode::Direct,
        }
    }
}

/// A mock Xen hypervisor, seen from one of its domains.
///
/// Cloning gives another handle to the same domain. `Send + Sync`: handles may
/// be used from several threads, each hypercall taking the hypervisor's lock.
#[derive(Clone, Debug)]
pub struct MockXen {
    xen: Arc<Mutex<Hypervisor>>,
    domid: u16,
    buffers: BufferMode,
}

impl Default for MockXen {
    fn default() -> Self {
        Self::new()
    }
}

impl MockXen {
    /// A Xen with the [default configuration](MockConfig::default), seen from
    /// domain 0, which is privileged.
    pub fn new() -> Self {
        Self::with_config(MockConfig::default())
    }

    /// A Xen with `config`, seen from domain 0, which is privileged.
    pub fn with_config(config: MockConfig) -> Self {
        let buffers = config.buffers;
        Self {
            xen: Arc::new(Mutex::new(Hypervisor::new(config))),
            domid: 0,
            buffers,
        }
    }

    /// A handle acting as domain `id` of the same hypervisor, creating the
    /// domain (unprivileged, with no event channel) if it does not exist.
    ///
    /// # Panics
    ///
    /// If `id` is not a real domain's id (`DomId::SELF` and the other reserved ids).
    pub fn domain(&self, id: DomId) -> Self {
        assert!(id.is_domain(), "{id} is a reserved id, not a domain");
        let mut xen = self.lock();
        let domain = Domain::new(false, &xen.config);
        xen.domains.entry(id.0).or_insert(domain);
        Self {
            xen: Arc::clone(&self.xen),
            domid: id.0,
            buffers: self.buffers,
        }
    }

    /// The same handle, making its buffers as `mode` says.
    pub fn with_buffers(&self, mode: BufferMode) -> Self {
        Self {
            buffers: mode,
            ..self.clone()
        }
    }

    /// The domain this handle acts as.
    pub fn domid(&self) -> DomId {
        DomId(self.domid)
    }

    /// Makes this domain privileged (may act on other domains, use the
    /// console, read the command line) or not.
    pub fn set_privileged(&self, privileged: bool) {
        self.with_domain(|d| d.privileged = privileged);
    }

    /// Everything written to Xen's console so far.
    pub fn output(&self) -> Vec<u8> {
        self.lock().console_output.clone()
    }

    /// The largest byte count any `console_io` call of this hypervisor passed
    /// (what one hypercall made a hosted backend bounce).
    pub fn largest_console_count(&self) -> usize {
        self.lock().largest_console_count
    }

    /// Appends `text` to Xen's log ring, as Xen's own `printk` would.
    pub fn log(&self, text: &[u8]) {
        self.lock().conring.puts(text);
    }

    /// Makes the mock accept only sysctl interface version `version` (a different Xen release).
    pub fn set_sysctl_interface_version(&self, version: u32) {
        self.lock().sysctl_version = version;
    }

    /// Queues `bytes` as console input, for `CONSOLEIO_read`.
    pub fn push_input(&self, bytes: &[u8]) {
        self.lock().console_input.extend(bytes);
    }

    /// Whether `port` of this domain is pending (its bit in the shared info page).
    pub fn is_pending(&self, port: Port) -> bool {
        self.with_domain(|d| d.channel(port.0).is_some_and(|c| c.pending))
    }

    /// Whether `port` of this domain is masked.
    pub fn is_masked(&self, port: Port) -> bool {
        self.with_domain(|d| d.channel(port.0).is_some_and(|c| c.masked))
    }

    /// Sets or clears `port`'s mask bit, as the guest does in the shared info page.
    pub fn set_masked(&self, port: Port, masked: bool) {
        self.with_domain(|d| {
            if let Some(c) = d.channels.get_mut(port.0 as usize) {
                c.masked = masked;
            }
        });
    }

    /// Clears `port`'s pending bit, as the guest does in the shared info page.
    pub fn clear_pending(&self, port: Port) {
        self.with_domain(|d| {
            if let Some(c) = d.channels.get_mut(port.0 as usize) {
                c.pending = false;
            }
        });
    }

    /// Raises `virq` on `vcpu` of this domain, as Xen does when the event
    /// occurs; returns the port it made pending, if the VIRQ is bound.
    pub fn raise_virq(&self, virq: Virq, vcpu: u32) -> Option<Port> {
        self.with_domain(|d| {
            let port = *d.virqs.get(&(vcpu, virq.0))?;
            d.set_pending(port);
            Some(Port(port))
        })
    }

    /// Xen's system time, in nanoseconds (starts at 0, moves only when a poll
    /// waits for a deadline or [`set_now`](Self::set_now) is called).
    pub fn now(&self) -> u64 {
        self.lock().now
    }

    /// Sets Xen's system time, in nanoseconds.
    pub fn set_now(&self, nanos: u64) {
        self.lock().now = nanos;
    }

    /// The reason this domain last shut down with, if it did.
    pub fn last_shutdown(&self) -> Option<ShutdownReason> {
        self.with_domain(|d| d.shutdown)
    }

    /// The third argument of this domain's last `SHUTDOWN_suspend` (the
    /// start-info frame a PV guest passes), if it suspended.
    pub fn last_suspend_record(&self) -> Option<u64> {
        self.with_domain(|d| d.suspend_record)
    }

    /// Whether the toolstack cancels this domain's suspends (the hypercall
    /// returns 1, the default) or restores it in a new domain (0).
    pub fn set_suspend_cancels(&self, cancels: bool) {
        self.with_domain(|d| d.suspend_cancels = cancels);
    }

    /// The reason recorded by `SCHEDOP_shutdown_code`, if any.
    pub fn last_shutdown_code(&self) -> Option<ShutdownReason> {
        self.with_domain(|d| d.shutdown_code)
    }

    /// How many times this domain yielded.
    pub fn yields(&self) -> u64 {
        self.with_domain(|d| d.yields)
    }

    /// The I/O privilege level this domain set, if it did.
    pub fn iopl(&self) -> Option<u32> {
        self.with_domain(|d| d.iopl)
    }

    /// The mappings this domain's `XENMEM_add_to_physmap` calls made.
    pub fn physmap(&self) -> Vec<(MapSpace, u64, Gfn)> {
        self.with_domain(|d| d.physmap.clone())
    }

    /// Gives the 4 KiB page at `page` a frame number, by which grant entries
    /// and grant copies name it (frame numbers are global, like machine
    /// frames). Registering a page again gives the same number.
    ///
    /// The mock copies into and out of the page when a grant copy names it:
    /// see the contract of `GrantTableOps::gnttab_copy`.
    pub fn register_page(&self, page: *const u8) -> u64 {
        self.lock().frame_of(page.expose_provenance())
    }

    /// The address of frame `frame` (a registered page, or a grant table
    /// frame `setup_table` returned), with its provenance.
    pub fn frame_address(&self, frame: u64) -> Option<*mut u8> {
        let address = self.lock().frame_address(frame)?;
        Some(core::ptr::with_exposed_provenance_mut(address))
    }

    /// The address of the page this domain mapped at `host_addr` with
    /// `GNTTABOP_map_grant_ref` and has not unmapped (the latest such mapping):
    /// where a guest would see the granted page. The mock maps nothing itself.
    pub fn mapped_at(&self, host_addr: u64) -> Option<*mut u8> {
        let mut xen = self.lock();
        let frame = xen.grants_mut(self.domid().0)?.mapped_at(host_addr)?;
        let address = GrantDomains::frame_address(&*xen, frame)?;
        Some(core::ptr::with_exposed_provenance_mut(address))
    }

    /// Sets HVM parameter `param` of this domain, as the toolstack does when
    /// it builds the domain.
    pub fn preset_hvm_param(&self, param: HvmParam, value: u64) {
        self.with_domain(|d| d.hvm_params.insert(param.0, value));
    }

    fn lock(&self) -> MutexGuard<'_, Hypervisor> {
        // A test that panicked while holding the lock left a consistent state:
        // every mutation completes before the lock is released.
        self.xen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn with_domain<R>(&self, f: impl FnOnce(&mut Domain) -> R) -> R {
        f(self.lock().domain_mut(self.domid))
    }

    /// Performs hypercall `op`.
    ///
    /// # Safety
    ///
    /// Every address in `args` that the sub-op dereferences is 0 or valid for
    /// the access Xen makes (the contract of [`XenHypercall::hypercall0`]).
    unsafe fn dispatch(&self, op: usize, args: [usize; 5]) -> Result<usize, Error> {
        let Ok(op) = u32::try_from(op) else {
            return Err(refuse(Errno::ENOSYS));
        };
        // Xen's handlers take `cmd` as a C `int`/`unsigned int`.
        let cmd = args[0] as u32;
        // SAFETY: the caller vouches for every address the sub-op dereferences,
        // and each handler accesses only those, with the sizes Xen's public
        // headers give.
        let guest = unsafe { Guest::new() };
        match op {
            xen_sys::__HYPERVISOR_xen_version => self.xen_version(&guest, cmd, args[1]),
            xen_sys::__HYPERVISOR_console_io => self.console_io(&guest, cmd, args[1], args[2]),
            xen_sys::__HYPERVISOR_sched_op => self.sched_op(&guest, cmd, args[1], args[2]),
            xen_sys::__HYPERVISOR_event_channel_op => self.event_channel_op(&guest, cmd, args[1]),
            xen_sys::__HYPERVISOR_hvm_op => self.hvm_op(&guest, cmd, args[1]),
            // memory_op's low bits are the sub-op, the high ones a continuation.
            xen_sys::__HYPERVISOR_memory_op => {
                self.memory_op(&guest, args[0] & MEMOP_CMD_MASK, args[1])
            }
            xen_sys::__HYPERVISOR_physdev_op => self.physdev_op(&guest, cmd, args[1]),
            xen_sys::__HYPERVISOR_sysctl => self.sysctl(&guest, args[0]),
            xen_sys::__HYPERVISOR_domctl => self.domctl(&guest, args[0]),
            xen_sys::__HYPERVISOR_grant_table_op => {
                self.grant_table_op(&guest, cmd, args[1], args[2] as u32)
            }
            _ => Err(refuse(Errno::ENOSYS)),
        }
    }

    fn xen_version(&self, guest: &Guest, cmd: u32, arg: usize) -> Result<usize, Error> {
        let xen = self.lock();
        let config = &xen.config;
        let privileged = xen.domain(self.domid).privileged;
        // `arg` points at the structure public/version.h names for `cmd`.
        match cmd {
            xen_sys::XENVER_version => {
                Ok((usize::from(config.version.major) << 16) | usize::from(config.version.minor))
            }
            xen_sys::XENVER_extraversion => {
                let s = c_string::<xen_sys::xen_extraversion_t>(&config.extraversion);
                guest.write(arg, &s).map(|()| 0)
            }
            xen_sys::XENVER_compile_info => {
                let mut info = xen_sys::xen_compile_info::new_zeroed();
                info.compiler = c_string(&config.compiler);
                info.compile_by = c_string(&config.compile_by);
                info.compile_domain = c_string(&config.compile_domain);
                info.compile_date = c_string(&config.compile_date);
                guest.write(arg, &info).map(|()| 0)
            }
            xen_sys::XENVER_capabilities => {
                let s = c_string::<xen_sys::xen_capabilities_info_t>(&config.capabilities);
                guest.write(arg, &s).map(|()| 0)
            }
            xen_sys::XENVER_changeset => {
                let s = c_string::<xen_sys::xen_changeset_info_t>(&config.changeset);
                guest.write(arg, &s).map(|()| 0)
            }
            xen_sys::XENVER_commandline => {
                if !privileged {
                    return Err(refuse(Errno::EPERM));
                }
                let s = c_string::<xen_sys::xen_commandline_t>(&config.commandline);
                guest.write(arg, &s).map(|()| 0)
            }
            xen_sys::XENVER_platform_parameters => {
                let mut params = xen_sys::xen_platform_parameters::new_zeroed();
                params.virt_start = config.virt_start;
                guest.write(arg, &params).map(|()| 0)
            }
            xen_sys::XENVER_get_features => {
                let mut info: xen_sys::xen_feature_info = guest.read(arg)?;
                if info.submap_idx >= xen_sys::XENFEAT_NR_SUBMAPS {
                    return Err(refuse(Errno::EINVAL));
                }
                info.submap = config.features;
                guest.write(arg, &info).map(|()| 0)
            }
            xen_sys::XENVER_pagesize => Ok(config.pagesize),
            xen_sys::XENVER_guest_handle => guest.write(arg, &config.guest_handle).map(|()| 0),
            xen_sys::XENVER_build_id => {
                if !privileged {
                    return Err(refuse(Errno::EPERM));
                }
                // Xen reads the `len` header first, unless the handle is NULL
                // (a query of the size).
                let capacity = if arg == 0 {
                    None
                } else {
                    let len: u32 = guest.read(arg)?;
                    if len == 0 {
                        return Err(refuse(Errno::EINVAL));
                    }
                    Some(len as usize)
                };
                let id = config.build_id.as_deref().ok_or(refuse(Errno::ENODATA))?;
                match capacity {
                    None => Ok(id.len()),
                    Some(capacity) if id.len() > capacity => Err(refuse(Errno::ENOBUFS)),
                    Some(_) => {
                        let buf = arg + offset_of!(xen_sys::xen_build_id, buf);
                        guest.write_bytes(buf, id).map(|()| id.len())
                    }
                }
            }
            _ => Err(refuse(Errno::ENOSYS)),
        }
    }

    fn console_io(
        &self,
        guest: &Guest,
        cmd: u32,
        count: usize,
        buffer: usize,
    ) -> Result<usize, Error> {
        let mut xen = self.lock();
        if !matches!(cmd, xen_sys::CONSOLEIO_write | xen_sys::CONSOLEIO_read) {
            return Err(refuse(Errno::ENOSYS));
        }
        if !xen.domain(self.domid).privileged {
            return Err(refuse(Errno::EPERM));
        }
        // Xen's count is an `unsigned int`.
        let count = count as u32 as usize;
        xen.largest_console_count = xen.largest_console_count.max(count);
        if cmd == xen_sys::CONSOLEIO_write {
            // CONSOLEIO_write's `buffer` holds `count` bytes.
            let bytes = guest.read_bytes(buffer, count)?;
            xen.console_output.extend_from_slice(&bytes);
            xen.conring.puts(&bytes);
            Ok(0)
        } else {
            let n = count.min(xen.console_input.len());
            let bytes: Vec<u8> = xen.console_input.iter().take(n).copied().collect();
            // CONSOLEIO_read's `buffer` has room for `count` >= `n` bytes.
            guest.write_bytes(buffer, &bytes)?;
            xen.console_input.drain(..n);
            Ok(n)
        }
    }

    fn sysctl(&self, guest: &Guest, arg: usize) -> Result<usize, Error> {
        type ReadConsole = xen_sys::xen_sysctl_readconsole;
        let mut xen = self.lock();
        // `arg` points at a `xen_sysctl`: `cmd`, `interface_version`, a 128-byte union.
        let mut op: [u8; 136] = guest.read(arg)?;
        let version = u32::from_ne_bytes([op[4], op[5], op[6], op[7]]);
        if version != xen.sysctl_version {
            return Err(refuse(Errno::EACCES));
        }
        if !xen.domain(self.domid).privileged {
            return Err(refuse(Errno::EPERM));
        }
        if u32::from_ne_bytes([op[0], op[1], op[2], op[3]]) != xen_sys::XEN_SYSCTL_readconsole {
            return self.sysctl_control(&xen, guest, arg, op);
        }
        let union = &mut op[8..8 + size_of::<ReadConsole>()];
        let mut rc = ReadConsole::read_from_bytes(union).map_err(|_| refuse(Errno::EFAULT))?;
        let (text, next) = xen
            .conring
            .read(rc.incremental != 0, rc.index, rc.count, rc.clear != 0);
        // `buffer` has room for `count` >= `text.len()` bytes.
        guest.write_bytes(rc.buffer.address() as usize, &text)?;
        rc.count = text.len() as u32;
        rc.index = next;
        union.copy_from_slice(rc.as_bytes());
        guest.write(arg, &op).map(|()| 0)
    }

    /// `extra` is the third argument: the start-info frame of a PV suspend.
    fn sched_op(&self, guest: &Guest, cmd: u32, arg: usize, extra: usize) -> Result<usize, Error> {
        let mut xen = self.lock();
        let domid = self.domid;
        // `arg` points at the structure public/sched.h names for `cmd`.
        match cmd {
            xen_sys::SCHEDOP_yield => {
                xen.domain_mut(domid).yields += 1;
                Ok(0)
            }
            xen_sys::SCHEDOP_block => {
                let deliverable = xen
                    .domain(domid)
                    .channels
                    .iter()
                    .any(|c| c.pending && !c.masked);
                if deliverable {
                    Ok(0)
                } else {
                    Err(WAITS_FOREVER)
                }
            }
            xen_sys::SCHEDOP_shutdown | xen_sys::SCHEDOP_shutdown_code => {
                let arg: xen_sys::sched_shutdown = guest.read(arg)?;
                let reason = Some(ShutdownReason(arg.reason));
                let domain = xen.domain_mut(domid);
                if cmd == xen_sys::SCHEDOP_shutdown {
                    domain.shutdown = reason;
                    if reason == Some(ShutdownReason::SUSPEND) {
                        // The toolstack saves the domain, reading the frame in
                        // the third argument, and answers 1 (cancelled) or 0.
                        domain.suspend_record = Some(extra as u64);
                        return Ok(usize::from(domain.suspend_cancels));
                    }
                } else {
                    domain.shutdown_code = reason;
                }
                Ok(0)
            }
            xen_sys::SCHEDOP_poll => {
                let poll: xen_sys::sched_poll = guest.read(arg)?;
                if poll.nr_ports > 128 {
                    return Err(refuse(Errno::EINVAL));
                }
                let len = poll.nr_ports as usize * size_of::<u32>();
                let address =
                    usize::try_from(poll.ports.address()).map_err(|_| refuse(Errno::EFAULT))?;
                // `ports` is a handle to `nr_ports` ports.
                let bytes = guest.read_bytes(address, len)?;
                let ports: Vec<u32> = bytes
                    .chunks_exact(size_of::<u32>())
                    .filter_map(|b| u32::read_from_bytes(b).ok())
                    .collect();
                if xen.any_pending(domid, &ports)? {
                    return Ok(0);
                }
                match poll.timeout {
                    0 => Err(WAITS_FOREVER),
                    deadline => {
                        // Sleep until the deadline: move the clock there.
                        xen.now = xen.now.max(deadline);
                        Ok(0)
                    }
                }
            }
            _ => Err(refuse(Errno::ENOSYS)),
        }
    }

    fn event_channel_op(&self, guest: &Guest, cmd: u32, arg: usize) -> Result<usize, Error> {
        let mut xen = self.lock();
        let me = self.domid;
        // `arg` points at the structure public/event_channel.h names for `cmd`.
        match cmd {
            xen_sys::EVTCHNOP_alloc_unbound => {
                let mut op: xen_sys::evtchn_alloc_unbound = guest.read(arg)?;
                op.port = xen.alloc_unbound(me, op.dom, op.remote_dom)?;
                guest.write(arg, &op).map(|()| 0)
            }
            xen_sys::EVTCHNOP_bind_interdomain => {
                let mut op: xen_sys::evtchn_bind_interdomain = guest.read(arg)?;
                op.local_port = xen.bind_interdomain(me, op.remote_dom, op.remote_port)?;
                guest.write(arg, &op).map(|()| 0)
            }
            xen_sys::EVTCHNOP_bind_virq => {
                let mut op: xen_sys::evtchn_bind_virq = guest.read(arg)?;
                op.port = xen.bind_virq(me, op.virq, op.vcpu)?;
                guest.write(arg, &op).map(|()| 0)
            }
            xen_sys::EVTCHNOP_bind_ipi => {
                let mut op: xen_sys::evtchn_bind_ipi = guest.read(arg)?;
                op.port = xen.bind_ipi(me, op.vcpu)?;
                guest.write(arg, &op).map(|()| 0)
            }
            xen_sys::EVTCHNOP_bind_vcpu => {
                let op: xen_sys::evtchn_bind_vcpu = guest.read(arg)?;
                xen.bind_vcpu(me, op.port, op.vcpu).map(|()| 0)
            }
            xen_sys::EVTCHNOP_close => {
                let op: xen_sys::evtchn_close = guest.read(arg)?;
                xen.close(me, op.port).map(|()| 0)
            }
            xen_sys::EVTCHNOP_send => {
                let op: xen_sys::evtchn_send = guest.read(arg)?;
                xen.send(me, op.port).map(|()| 0)
            }
            xen_sys::EVTCHNOP_status => {
                // The union keeps `evtchn_status` from being `IntoBytes`: copy
                // its bytes and place each field at its C offset.
                let size = size_of::<xen_sys::evtchn_status>();
                let mut bytes = guest.read_bytes(arg, size)?;
                let op = xen_sys::evtchn_status::read_from_bytes(&bytes)
                    .map_err(|_| refuse(Errno::EFAULT))?;
                let (binding, vcpu) = xen.status(me, op.dom, op.port)?;
                let (status, union) = status_of(binding);
                put(
                    &mut bytes,
                    offset_of!(xen_sys::evtchn_status, status),
                    &status,
                );
                put(&mut bytes, offset_of!(xen_sys::evtchn_status, vcpu), &vcpu);
                let u = offset_of!(xen_sys::evtchn_status, u);
                bytes[u..].fill(0);
                bytes[u..u + union.len()].copy_from_slice(&union);
                guest.write_bytes(arg, &bytes).map(|()| 0)
            }
            xen_sys::EVTCHNOP_unmask => {
                let op: xen_sys::evtchn_unmask = guest.read(arg)?;
                xen.unmask(me, op.port).map(|()| 0)
            }
            xen_sys::EVTCHNOP_reset => {
                let op: xen_sys::evtchn_reset = guest.read(arg)?;
                xen.reset(me, op.dom).map(|()| 0)
            }
            _ => Err(refuse(Errno::ENOSYS)),
        }
    }

    fn hvm_op(&self, guest: &Guest, cmd: u32, arg: usize) -> Result<usize, Error> {
        let mut xen = self.lock();
        if !matches!(cmd, xen_sys::HVMOP_get_param | xen_sys::HVMOP_set_param) {
            return Err(refuse(Errno::ENOSYS));
        }
        // Both sub-ops take an `xen_hvm_param_t` (hvm_op.h).
        let mut op: xen_sys::xen_hvm_param = guest.read(arg)?;
        let (dom, index) = xen.hvm_param(self.domid, op.domid, op.index)?;
        let params = &mut xen.domain_mut(dom).hvm_params;
        if cmd == xen_sys::HVMOP_set_param {
            params.insert(index, op.value);
            Ok(0)
        } else {
            op.value = params.get(&index).copied().unwrap_or(0);
            // HVMOP_get_param writes `value` back.
            guest.write(arg, &op).map(|()| 0)
        }
    }

    fn memory_op(&self, guest: &Guest, cmd: usize, arg: usize) -> Result<usize, Error> {
        let mut xen = self.lock();
        if cmd != xen_sys::XENMEM_add_to_physmap as usize {
            return Err(refuse(Errno::ENOSYS));
        }
        // XENMEM_add_to_physmap takes an `xen_add_to_physmap_t` (memory.h).
        let op: xen_sys::xen_add_to_physmap = guest.read(arg)?;
        let dom = xen.target(self.domid, op.domid)?;
        let space = MapSpace(op.space);
        if space == MapSpace::GRANT_TABLE {
            grant::map_table_frame(&mut xen.domain_mut(dom).grants, op.idx)?;
        } else if space == MapSpace::SHARED_INFO {
            // The shared info page has one frame, index 0.
            if op.idx != 0 {
                return Err(refuse(Errno::EINVAL));
            }
        } else {
            return Err(Error::Unsupported(
                "the mock models only XENMAPSPACE_shared_info and XENMAPSPACE_grant_table",
            ));
        }
        xen.domain_mut(dom)
            .physmap
            .push((space, op.idx, Gfn(op.gpfn)));
        Ok(0)
    }

    fn grant_table_op(
        &self,
        guest: &Guest,
        cmd: u32,
        arg: usize,
        count: u32,
    ) -> Result<usize, Error> {
        let mut xen = self.lock();
        let me = self.domid;
        // `arg` points at `count` structures of the kind public/grant_table.h
        // names for `cmd`.
        match cmd {
            xen_sys::GNTTABOP_query_size => {
                one(count)?;
                let mut op: xen_sys::gnttab_query_size = guest.read(arg)?;
                op.status = match xen.grant_target(me, op.dom) {
                    Ok(d) => {
                        let grants = &xen.domain(d).grants;
                        op.nr_frames = grants.nr_frames();
                        op.max_nr_frames = grants.max_frames();
                        GrantStatus::OKAY.0
                    }
                    Err(status) => status.0,
                };
                guest.write(arg, &op).map(|()| 0)
            }
            xen_sys::GNTTABOP_setup_table => {
                one(count)?;
                let mut op: xen_sys::gnttab_setup_table = guest.read(arg)?;
                let list =
                    usize::try_from(op.frame_list.address()).map_err(|_| refuse(Errno::EFAULT))?;
                let status = match xen.grant_target(me, op.dom) {
                    Ok(d) => {
                        let grants = &mut xen.domain_mut(d).grants;
                        if grants.grow(op.nr_frames) {
                            let addresses: Vec<usize> = (0..op.nr_frames as usize)
                                .filter_map(|i| grants.frame_address(i))
                                .collect();
                            for (i, address) in addresses.into_iter().enumerate() {
                                let number = xen.frame_of(address);
                                // `frame_list` holds `nr_frames` `xen_pfn_t`s.
                                guest.write(list + i * size_of::<u64>(), &number)?;
                            }
                            GrantStatus::OKAY
                        } else {
                            GrantStatus::GENERAL_ERROR
                        }
                    }
                    Err(status) => status,
                };
                op.status = status.0;
                guest.write(arg, &op).map(|()| 0)
            }
            xen_sys::GNTTABOP_get_version => {
                one(count)?;
                let mut op: xen_sys::gnttab_get_version = guest.read(arg)?;
                xen.target(me, op.dom)?;
                op.version = 1;
                guest.write(arg, &op).map(|()| 0)
            }
            xen_sys::GNTTABOP_map_grant_ref => {
                for i in 0..count as usize {
                    let at = arg + i * size_of::<xen_sys::gnttab_map_grant_ref>();
                    let mut op: xen_sys::gnttab_map_grant_ref = guest.read(at)?;
                    match grant::map(&mut *xen, me, op.dom, op.ref_, op.flags, op.host_addr) {
                        Ok((handle, bus)) => {
                            op.handle = handle;
                            op.dev_bus_addr = bus;
                            op.status = GrantStatus::OKAY.0;
                        }
                        Err(status) => op.status = status.0,
                    }
                    guest.write(at, &op)?;
                }
                Ok(0)
            }
            xen_sys::GNTTABOP_unmap_grant_ref => {
                for i in 0..count as usize {
                    let at = arg + i * size_of::<xen_sys::gnttab_unmap_grant_ref>();
                    let mut op: xen_sys::gnttab_unmap_grant_ref = guest.read(at)?;
                    op.status = match grant::unmap(&mut *xen, me, op.handle, op.host_addr) {
                        Ok(()) => GrantStatus::OKAY.0,
                        Err(status) => status.0,
                    };
                    guest.write(at, &op)?;
                }
                Ok(0)
            }
            xen_sys::GNTTABOP_copy => {
                for i in 0..count as usize {
                    let at = arg + i * size_of::<GrantCopy>();
                    let op: GrantCopy = guest.read(at)?;
                    let len = usize::from(op.len());
                    // The frames a copy names are the caller's (the contract
                    // of `gnttab_copy`): read the source, then write the dest.
                    let status = grant::copy_one(&mut *xen, me, &op, |dest, source| {
                        let bytes = guest.read_bytes(source, len)?;
                        guest.write_bytes(dest, &bytes)
                    })?;
                    // Xen writes back only the status.
                    guest.write(at + offset_of!(xen_sys::gnttab_copy, status), &status.0)?;
                }
                Ok(0)
            }
            _ => Err(refuse(Errno::ENOSYS)),
        }
    }

    fn physdev_op(&self, guest: &Guest, cmd: u32, arg: usize) -> Result<usize, Error> {
        let mut xen = self.lock();
        if cmd != xen_sys::PHYSDEVOP_set_iopl {
            return Err(refuse(Errno::ENOSYS));
        }
        // PHYSDEVOP_set_iopl takes a `physdev_set_iopl_t` (physdev.h).
        let op: xen_sys::physdev_set_iopl = guest.read(arg)?;
        if op.iopl > 3 {
            return Err(refuse(Errno::EINVAL));
        }
        xen.domain_mut(self.domid).iopl = Some(op.iopl);
        Ok(0)
    }
}

/// `EINVAL` unless a sub-op that takes exactly one structure got `count` 1.
fn one(count: u32) -> Result<(), Error> {
    if count == 1 {
        Ok(())
    } else {
        Err(refuse(Errno::EINVAL))
    }
}

/// `MEMOP_CMD_MASK` (public/memory.h): the sub-op bits of memory_op's `cmd`.
const MEMOP_CMD_MASK: usize = 0x3f;

/// What a block or poll that nothing could ever wake returns, instead of hanging.
const WAITS_FOREVER: Error = Error::Unsupported(
    "the mock cannot block: nothing is pending and there is no deadline, so this would wait forever",
);

/// A C `char[N]` array type holding `s`, truncated to leave room for the NUL
/// (Xen's `safe_strcpy`).
fn c_string<A: FromBytes + IntoBytes>(s: &str) -> A {
    let mut array = A::new_zeroed();
    let bytes = array.as_mut_bytes();
    let len = s.len().min(bytes.len().saturating_sub(1));
    bytes[..len].copy_from_slice(&s.as_bytes()[..len]);
    array
}

/// Writes `value`'s bytes into `bytes` at `offset`.
fn put<T: IntoBytes + Immutable>(bytes: &mut [u8], offset: usize, value: &T) {
    let value = value.as_bytes();
    bytes[offset..offset + value.len()].copy_from_slice(value);
}

// SAFETY:
// - Each `hypercallN` performs the hypercall as Xen would (the subset modelled),
//   on behalf of this handle's domain, touching no memory but what the
//   sub-op's structures point at, and returns a refusal as `Error::Xen`.
// - The buffers are `DirectConstBuffer`/`DirectMutBuffer` (the caller's memory)
//   or bounce copies (`MockConstBuffer`/`MockMutBuffer`) that hold `data`'s
//   bytes, live and aliasing nothing else as long as the buffer, and whose
//   drop copies exactly those bytes back (a mutable one).
unsafe impl XenHypercall for MockXen {
    type Error = Error;

    unsafe fn hypercall0(&self, op: usize) -> Result<usize, Error> {
        // SAFETY: forwarded from the caller.
        unsafe { self.dispatch(op, [0; 5]) }
    }

    unsafe fn hypercall1(&self, op: usize, arg: usize) -> Result<usize, Error> {
        // SAFETY: forwarded from the caller.
        unsafe { self.dispatch(op, [arg, 0, 0, 0, 0]) }
    }

    unsafe fn hypercall2(&self, op: usize, args: [usize; 2]) -> Result<usize, Error> {
        // SAFETY: forwarded from the caller.
        unsafe { self.dispatch(op, [args[0], args[1], 0, 0, 0]) }
    }

    unsafe fn hypercall3(&self, op: usize, args: [usize; 3]) -> Result<usize, Error> {
        // SAFETY: forwarded from the caller.
        unsafe { self.dispatch(op, [args[0], args[1], args[2], 0, 0]) }
    }

    unsafe fn hypercall4(&self, op: usize, args: [usize; 4]) -> Result<usize, Error> {
        // SAFETY: forwarded from the caller.
        unsafe { self.dispatch(op, [args[0], args[1], args[2], args[3], 0]) }
    }

    unsafe fn hypercall5(&self, op: usize, args: [usize; 5]) -> Result<usize, Error> {
        // SAFETY: forwarded from the caller.
        unsafe { self.dispatch(op, args) }
    }

    fn make_const_buffer<T>(&self, data: &T) -> Result<impl XenConstBuffer<T>, Error>
    where
        T: ?Sized + HypercallData + IntoBytes + Immutable,
    {
        MockConstBuffer::new(data, self.buffers)
    }

    fn make_mut_buffer<T>(&self, data: &mut T) -> Result<impl XenMutBuffer<T>, Error>
    where
        T: ?Sized + HypercallData + FromBytes + IntoBytes,
    {
        MockMutBuffer::new(data, self.buffers)
    }
}

const _: () = assert!(MAX_PORTS == 4096);
