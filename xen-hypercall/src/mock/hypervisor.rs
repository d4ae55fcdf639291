//! The mock's model of Xen's state and the semantics of each modelled sub-op.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::vec::Vec;

use super::MockConfig;
use super::grant::{GrantDomains, Grants};
use crate::grant_table::GrantStatus;
use crate::{DomId, Errno, Error, Gfn, HvmParam, MapSpace, ShutdownReason, Virq};

/// Ports a domain has with the 2-level event channel ABI on a 64-bit guest:
/// `BITS_PER_EVTCHN_WORD` squared (public/xen.h, `EVTCHN_2L_NR_CHANNELS`).
pub(super) const MAX_PORTS: u32 = 64 * 64;

pub(super) const fn refuse(errno: Errno) -> Error {
    Error::Xen(errno)
}

/// What a port is bound to (Xen's `ECS_*` states).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Binding {
    Free,
    /// Port 0, never allocated (`ECS_RESERVED`).
    Reserved,
    Unbound {
        remote: u16,
    },
    Interdomain {
        dom: u16,
        port: u32,
    },
    Virq(u32),
    Ipi,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Channel {
    pub(super) binding: Binding,
    pub(super) vcpu: u32,
    pub(super) pending: bool,
    pub(super) masked: bool,
}

impl Channel {
    const FREE: Self = Self {
        binding: Binding::Free,
        vcpu: 0,
        pending: false,
        masked: false,
    };
}

/// One domain of the mock.
#[derive(Debug)]
pub(super) struct Domain {
    pub(super) privileged: bool,
    /// Ports this domain may have: `max_evtchn_port + 1`, at most [`MAX_PORTS`].
    max_ports: u32,
    pub(super) vcpus: u32,
    /// Indexed by port; grows as ports are allocated, up to [`MAX_PORTS`].
    pub(super) channels: Vec<Channel>,
    /// The ports of `channels` that are `Binding::Free`, so the lowest is found
    /// at once.
    free: BTreeSet<u32>,
    /// `(vcpu, virq)` -> port.
    pub(super) virqs: BTreeMap<(u32, u32), u32>,
    pub(super) hvm_params: BTreeMap<u32, u64>,
    pub(super) shutdown: Option<ShutdownReason>,
    pub(super) shutdown_code: Option<ShutdownReason>,
    /// The third argument of the last `SHUTDOWN_suspend`.
    pub(super) suspend_record: Option<u64>,
    /// Whether a suspend returns 1 (cancelled) rather than 0 (resumed).
    pub(super) suspend_cancels: bool,
    pub(super) iopl: Option<u32>,
    pub(super) physmap: Vec<(MapSpace, u64, Gfn)>,
    pub(super) yields: u64,
    pub(super) grants: Grants,
}

impl Domain {
    pub(super) fn new(privileged: bool, config: &MockConfig) -> Self {
        let mut reserved = Channel::FREE;
        reserved.binding = Binding::Reserved;
        Self {
            privileged,
            max_ports: config.max_evtchn_port.saturating_add(1).min(MAX_PORTS),
            vcpus: config.vcpus,
            channels: std::vec![reserved],
            free: BTreeSet::new(),
            virqs: BTreeMap::new(),
            hvm_params: BTreeMap::new(),
            shutdown: None,
            shutdown_code: None,
            suspend_record: None,
            suspend_cancels: true,
            iopl: None,
            physmap: Vec::new(),
            yields: 0,
            grants: Grants::new(config.max_grant_frames),
        }
    }

    /// The channel at `port`, if the port exists (`port_is_valid`).
    pub(super) fn channel(&self, port: u32) -> Option<&Channel> {
        self.channels.get(port as usize)
    }

    fn channel_mut(&mut self, port: u32) -> Option<&mut Channel> {
        self.channels.get_mut(port as usize)
    }

    /// A port in use (not free nor reserved), or `EINVAL` as Xen answers.
    fn bound_channel_mut(&mut self, port: u32) -> Result<&mut Channel, Error> {
        match self.channel_mut(port) {
            Some(chn) if !matches!(chn.binding, Binding::Free | Binding::Reserved) => Ok(chn),
            _ => Err(refuse(Errno::EINVAL)),
        }
    }

    /// The lowest free port, growing the table if needed (`get_free_port`);
    /// `ENOSPC` when all [`MAX_PORTS`] are in use. Not yet marked used.
    fn free_port(&mut self) -> Result<u32, Error> {
        if let Some(&port) = self.free.first() {
            return Ok(port);
        }
        let port = self.channels.len() as u32;
        if port >= self.max_ports {
            return Err(refuse(Errno::ENOSPC));
        }
        self.channels.push(Channel::FREE);
        // Free until `bind`: a sub-op that fails after this leaves it free.
        self.free.insert(port);
        Ok(port)
    }

    /// Binds free port `port` to `binding`, notifying `vcpu`; the mask bit,
    /// which lives in shared memory, is left as the guest set it.
    fn bind(&mut self, port: u32, binding: Binding, vcpu: u32) {
        if let Some(chn) = self.channel_mut(port) {
            chn.binding = binding;
            chn.vcpu = vcpu;
            chn.pending = false;
            self.free.remove(&port);
        }
    }

    fn check_vcpu(&self, vcpu: u32) -> Result<(), Error> {
        if vcpu < self.vcpus {
            Ok(())
        } else {
            Err(refuse(Errno::ENOENT))
        }
    }

    pub(super) fn set_pending(&mut self, port: u32) {
        if let Some(chn) = self.channel_mut(port) {
            chn.pending = true;
        }
    }
}

/// Xen's log ring, as `drivers/char/console.c` keeps it: a power-of-two array and two
/// free-running positions, the oldest byte kept (`c`) and the next one written (`p`).
#[derive(Debug)]
pub(super) struct Conring {
    pub(super) bytes: Vec<u8>,
    pub(super) c: u32,
    pub(super) p: u32,
}

/// Xen's default `conring_size`.
const CONRING_SIZE: usize = 16384;

impl Default for Conring {
    fn default() -> Self {
        Self {
            bytes: std::vec![0; CONRING_SIZE],
            c: 0,
            p: 0,
        }
    }
}

impl Conring {
    fn size(&self) -> u32 {
        self.bytes.len() as u32
    }

    /// `conring_puts`: appends, dropping the oldest bytes when full.
    pub(super) fn puts(&mut self, text: &[u8]) {
        for &b in text {
            let at = (self.p & (self.size() - 1)) as usize;
            self.bytes[at] = b;
            self.p = self.p.wrapping_add(1);
        }
        if self.p.wrapping_sub(self.c) > self.size() {
            self.c = self.p.wrapping_sub(self.size());
        }
    }

    /// `read_console_ring`: the bytes from the start position (`index` if incremental and still
    /// in the ring, else the oldest) up to `max`, and the position after them; `clear` then
    /// drops what was read.
    pub(super) fn read(
        &mut self,
        incremental: bool,
        index: u32,
        max: u32,
        clear: bool,
    ) -> (Vec<u8>, u32) {
        let (mut c, p) = (self.c, self.p);
        let in_ring = if c <= p {
            c < index && index <= p
        } else {
            c < index || index <= p
        };
        if incremental && in_ring {
            c = index;
        }
        let mut out = Vec::new();
        while c != p && (out.len() as u32) < max {
            out.push(self.bytes[(c & (self.size() - 1)) as usize]);
            c = c.wrapping_add(1);
        }
        if clear {
            self.c = if p.wrapping_sub(c) > self.size() {
                p.wrapping_sub(self.size())
            } else {
                c
            };
        }
        (out, c)
    }
}

/// Xen's global state as the mock models it.
#[derive(Debug)]
pub(super) struct Hypervisor {
    pub(super) config: MockConfig,
    pub(super) domains: BTreeMap<u16, Domain>,
    pub(super) console_output: Vec<u8>,
    pub(super) console_input: VecDeque<u8>,
    /// The largest `count` any `console_io` call passed.
    pub(super) largest_console_count: usize,
    /// Xen's log ring (what `XEN_SYSCTL_readconsole` reads).
    pub(super) conring: Conring,
    /// The sysctl interface version this Xen accepts.
    pub(super) sysctl_version: u32,
    /// Xen system time, in nanoseconds.
    pub(super) now: u64,
    /// The pages the mock knows by frame number: frame `FIRST_FRAME + i` is at `pages[i]`.
    pages: Vec<usize>,
    /// Domain control (domctl, and sysctl's domain list and physinfo).
    pub(super) control: super::ctrl::Control,
}

/// The mock's first frame number (frame 0 is never a page).
const FIRST_FRAME: u64 = 0x100;

impl Hypervisor {
    pub(super) fn new(config: MockConfig) -> Self {
        let mut domains = BTreeMap::new();
        domains.insert(0, Domain::new(true, &config));
        Self {
            config,
            domains,
            console_output: Vec::new(),
            console_input: VecDeque::new(),
            largest_console_count: 0,
            conring: Conring::default(),
            sysctl_version: xen_sys::XEN_SYSCTL_INTERFACE_VERSION,
            now: 0,
            pages: Vec::new(),
            control: Default::default(),
        }
    }

    /// The frame number of the page at `address`, giving it one if it has none.
    pub(super) fn frame_of(&mut self, address: usize) -> u64 {
        let index = match self.pages.iter().position(|&a| a == address) {
            Some(index) => index,
            None => {
                self.pages.push(address);
                self.pages.len() - 1
            }
        };
        FIRST_FRAME + index as u64
    }

    pub(super) fn domain(&self, id: u16) -> &Domain {
        &self.domains[&id]
    }

    pub(super) fn domain_mut(&mut self, id: u16) -> &mut Domain {
        self.domains
            .get_mut(&id)
            .expect("a handle's domain always exists")
    }

    /// Resolves `dom` as `rcu_lock_domain_by_any_id` does (`DOMID_SELF` is the
    /// caller), then checks the caller may act on it (XSM's `XSM_TARGET`):
    /// `ESRCH` if it does not exist, `EPERM` if it is another domain and the
    /// caller is not privileged.
    pub(super) fn target(&self, caller: u16, dom: u16) -> Result<u16, Error> {
        let id = if dom == DomId::SELF.0 { caller } else { dom };
        if !self.domains.contains_key(&id) {
            return Err(refuse(Errno::ESRCH));
        }
        if id != caller && !self.domain(caller).privileged {
            return Err(refuse(Errno::EPERM));
        }
        Ok(id)
    }

    /// [`target`](Self::target) as the grant table sub-ops report it, in the
    /// operation's status: `GNTST_bad_domain`, `GNTST_permission_denied`.
    pub(super) fn grant_target(&self, caller: u16, dom: u16) -> Result<u16, GrantStatus> {
        match self.target(caller, dom) {
            Ok(d) => Ok(d),
            Err(Error::Xen(Errno::ESRCH)) => Err(GrantStatus::BAD_DOMAIN),
            Err(_) => Err(GrantStatus::PERMISSION_DENIED),
        }
    }

    // ---- event channels (common/event_channel.c) ----

    pub(super) fn alloc_unbound(
        &mut self,
        caller: u16,
        dom: u16,
        remote: u16,
    ) -> Result<u32, Error> {
        let d = self.target(caller, dom)?;
        let remote = if remote == DomId::SELF.0 {
            caller
        } else {
            remote
        };
        let domain = self.domain_mut(d);
        let port = domain.free_port()?;
        domain.bind(port, Binding::Unbound { remote }, 0);
        Ok(port)
    }

    pub(super) fn bind_interdomain(
        &mut self,
        caller: u16,
        remote_dom: u16,
        remote_port: u32,
    ) -> Result<u32, Error> {
        let rd = if remote_dom == DomId::SELF.0 {
            caller
        } else {
            remote_dom
        };
        if !self.domains.contains_key(&rd) {
            return Err(refuse(Errno::ESRCH));
        }
        let lport = self.domain_mut(caller).free_port()?;
        match self.domain(rd).channel(remote_port) {
            Some(chn) if chn.binding == (Binding::Unbound { remote: caller }) => {}
            _ => return Err(refuse(Errno::EINVAL)),
        }
        let local = self.domain_mut(caller);
        local.bind(
            lport,
            Binding::Interdomain {
                dom: rd,
                port: remote_port,
            },
            0,
        );
        // Xen marks the local port pending: events sent to the unbound remote
        // port may have been lost.
        local.set_pending(lport);
        let remote = self.domain_mut(rd);
        if let Some(chn) = remote.channel_mut(remote_port) {
            chn.binding = Binding::Interdomain {
                dom: caller,
                port: lport,
            };
        }
        Ok(lport)
    }

    pub(super) fn bind_virq(&mut self, caller: u16, virq: u32, vcpu: u32) -> Result<u32, Error> {
        if virq >= Virq::COUNT {
            return Err(refuse(Errno::EINVAL));
        }
        if Virq(virq).is_global() && vcpu != 0 {
            return Err(refuse(Errno::EINVAL));
        }
        let domain = self.domain_mut(caller);
        domain.check_vcpu(vcpu)?;
        if domain.virqs.contains_key(&(vcpu, virq)) {
            return Err(refuse(Errno::EEXIST));
        }
        let port = domain.free_port()?;
        domain.bind(port, Binding::Virq(virq), vcpu);
        domain.virqs.insert((vcpu, virq), port);
        Ok(port)
    }

    pub(super) fn bind_ipi(&mut self, caller: u16, vcpu: u32) -> Result<u32, Error> {
        let domain = self.domain_mut(caller);
        domain.check_vcpu(vcpu)?;
        let port = domain.free_port()?;
        domain.bind(port, Binding::Ipi, vcpu);
        Ok(port)
    }

    pub(super) fn bind_vcpu(&mut self, caller: u16, port: u32, vcpu: u32) -> Result<(), Error> {
        let domain = self.domain_mut(caller);
        domain.check_vcpu(vcpu)?;
        let chn = domain.bound_channel_mut(port)?;
        match chn.binding {
            Binding::Virq(virq) if Virq(virq).is_global() => chn.vcpu = vcpu,
            Binding::Unbound { .. } | Binding::Interdomain { .. } => chn.vcpu = vcpu,
            _ => return Err(refuse(Errno::EINVAL)),
        }
        Ok(())
    }

    /// `evtchn_close` of `port` in domain `d`.
    pub(super) fn close(&mut self, d: u16, port: u32) -> Result<(), Error> {
        let domain = self.domain_mut(d);
        let chn = domain.bound_channel_mut(port)?;
        let (binding, vcpu) = (chn.binding, chn.vcpu);
        chn.binding = Binding::Free;
        chn.vcpu = 0;
        chn.pending = false;
        domain.free.insert(port);
        match binding {
            Binding::Virq(virq) => {
                domain.virqs.remove(&(vcpu, virq));
            }
            Binding::Interdomain { dom, port: rport } => {
                // The peer's port goes back to waiting for this domain.
                if let Some(rchn) = self
                    .domains
                    .get_mut(&dom)
                    .and_then(|p| p.channel_mut(rport))
                {
                    rchn.binding = Binding::Unbound { remote: d };
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn send(&mut self, caller: u16, port: u32) -> Result<(), Error> {
        let domain = self.domain_mut(caller);
        let chn = domain.bound_channel_mut(port)?;
        match chn.binding {
            Binding::Interdomain { dom, port: rport } => {
                if let Some(peer) = self.domains.get_mut(&dom) {
                    peer.set_pending(rport);
                }
            }
            Binding::Ipi => chn.pending = true,
            // Xen silently drops a notification on an unbound port.
            Binding::Unbound { .. } => {}
            _ => return Err(refuse(Errno::EINVAL)),
        }
        Ok(())
    }

    pub(super) fn status(&self, caller: u16, dom: u16, port: u32) -> Result<(Binding, u32), Error> {
        let d = self.target(caller, dom)?;
        let chn = self.domain(d).channel(port).ok_or(refuse(Errno::EINVAL))?;
        Ok((chn.binding, chn.vcpu))
    }

    pub(super) fn unmask(&mut self, caller: u16, port: u32) -> Result<(), Error> {
        let chn = self
            .domain_mut(caller)
            .channel_mut(port)
            .ok_or(refuse(Errno::EINVAL))?;
        chn.masked = false;
        Ok(())
    }

    pub(super) fn reset(&mut self, caller: u16, dom: u16) -> Result<(), Error> {
        let d = self.target(caller, dom)?;
        let ports = self.domain(d).channels.len() as u32;
        for port in 1..ports {
            // Free ports answer EINVAL, which a reset skips.
            let _ = self.close(d, port);
        }
        Ok(())
    }

    /// Whether any of `ports` of domain `d` is pending; `EINVAL` for a port
    /// past the domain's limit, as `do_poll` checks.
    pub(super) fn any_pending(&self, d: u16, ports: &[u32]) -> Result<bool, Error> {
        let domain = self.domain(d);
        let mut pending = false;
        for &port in ports {
            if port >= domain.max_ports {
                return Err(refuse(Errno::EINVAL));
            }
            pending |= domain.channel(port).is_some_and(|c| c.pending);
        }
        Ok(pending)
    }

    // ---- HVM params (arch/x86/hvm/hvm.c) ----

    pub(super) fn hvm_param(&self, caller: u16, dom: u16, index: u32) -> Result<(u16, u32), Error> {
        if index >= HvmParam::COUNT {
            return Err(refuse(Errno::EINVAL));
        }
        Ok((self.target(caller, dom)?, index))
    }
}

/// The `status` and the bytes of the union `u` of `evtchn_status` for a binding.
pub(super) fn status_of(binding: Binding) -> (u32, Vec<u8>) {
    use zerocopy::{FromZeros, IntoBytes};
    match binding {
        Binding::Free | Binding::Reserved => (xen_sys::EVTCHNSTAT_closed, Vec::new()),
        Binding::Unbound { remote } => {
            let mut u = xen_sys::evtchn_status__bindgen_ty_1__bindgen_ty_1::new_zeroed();
            u.dom = remote;
            (xen_sys::EVTCHNSTAT_unbound, u.as_bytes().to_vec())
        }
        Binding::Interdomain { dom, port } => {
            let mut u = xen_sys::evtchn_status__bindgen_ty_1__bindgen_ty_2::new_zeroed();
            u.dom = dom;
            u.port = port;
            (xen_sys::EVTCHNSTAT_interdomain, u.as_bytes().to_vec())
        }
        Binding::Virq(virq) => (xen_sys::EVTCHNSTAT_virq, virq.as_bytes().to_vec()),
        Binding::Ipi => (xen_sys::EVTCHNSTAT_ipi, Vec::new()),
    }
}

impl GrantDomains for Hypervisor {
    fn grants_mut(&mut self, id: u16) -> Option<&mut Grants> {
        self.domains.get_mut(&id).map(|d| &mut d.grants)
    }

    fn frame_address(&self, frame: u64) -> Option<usize> {
        let index = usize::try_from(frame.checked_sub(FIRST_FRAME)?).ok()?;
        self.pages.get(index).copied()
    }
}
