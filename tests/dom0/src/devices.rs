//! The dom0 half of the cross-domain exchange's devices: an interdomain port through
//! xen-evtchn's `/dev/xen/evtchn` backend, and the granted page, mapped through xen-grant's
//! gntdev side.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use xen_evtchn::linux::EvtchnDevice;
use xen_evtchn::{DomId, EventChannel, Port};
use xen_grant::GrantRef;
use xen_grant::linux::{Gntdev, Mapping};

/// One interdomain port on its own `/dev/xen/evtchn` handle, through xen-evtchn's Linux backend
/// (the port is unbound when the handle closes).
#[derive(Debug)]
pub(crate) struct InterdomainPort {
    device: EvtchnDevice,
    local: Port,
}

impl InterdomainPort {
    /// Binds `remote_port` of `remote_domain` to a new local port.
    pub(crate) fn bind(remote_domain: u32, remote_port: u32) -> Result<Self, String> {
        let device = EvtchnDevice::open().map_err(|e| format!("open /dev/xen/evtchn: {e}"))?;
        let domain =
            u16::try_from(remote_domain).map_err(|_| format!("bad domid {remote_domain}"))?;
        let local = device
            .bind_interdomain_raw(DomId::new(domain), Port::new(remote_port))
            .map_err(|e| {
                format!("bind_interdomain (domain {remote_domain}, port {remote_port}): {e}")
            })?;
        Ok(Self { device, local })
    }

    /// Allocates a port that `remote_domain` may bind.
    pub(crate) fn alloc_unbound(remote_domain: u32) -> Result<Self, String> {
        let device = EvtchnDevice::open().map_err(|e| format!("open /dev/xen/evtchn: {e}"))?;
        let domain =
            u16::try_from(remote_domain).map_err(|_| format!("bad domid {remote_domain}"))?;
        let local = device
            .alloc_unbound_raw(DomId::new(domain))
            .map_err(|e| format!("alloc_unbound (for domain {remote_domain}): {e}"))?;
        Ok(Self { device, local })
    }

    /// The local port.
    pub(crate) fn port(&self) -> Port {
        self.local
    }

    /// Notifies the remote end.
    pub(crate) fn notify(&self) -> Result<(), String> {
        self.device
            .notify(self.local)
            .map_err(|e| format!("notify ({}): {e}", self.local))
    }

    /// Waits up to `timeout` for an event on the local port; every port read is unmasked.
    /// Fails on a timeout.
    pub(crate) fn wait(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut ports = [Port::new(0); 16];
        loop {
            let count = self
                .device
                .take_pending(&mut ports)
                .map_err(|e| format!("take_pending: {e}"))?;
            self.device
                .unmask_all(&ports[..count])
                .map_err(|e| format!("unmask: {e}"))?;
            if ports[..count].contains(&self.local) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no event on {} within {} s",
                    self.local,
                    timeout.as_secs()
                ));
            }
            let millis = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
            self.device
                .wait_readable(millis)
                .map_err(|e| format!("poll: {e}"))?;
        }
    }
}

/// The gntdev device every mapping of this program goes through, opened once.
fn gntdev() -> Result<&'static Gntdev, String> {
    static GNTDEV: OnceLock<Result<Gntdev, String>> = OnceLock::new();
    GNTDEV
        .get_or_init(|| Gntdev::open().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
}

/// A page another domain granted, mapped through `/dev/xen/gntdev` with xen-grant. The other
/// domain may write it at any time: it is reached only through xen-grant's atomic accesses.
#[derive(Debug)]
pub(crate) struct GrantMapping(Mapping<'static>);

impl GrantMapping {
    /// Maps grant `reference` of domain `domid`.
    pub(crate) fn map(domid: u32, reference: u32) -> Result<Self, String> {
        let domid = u16::try_from(domid).map_err(|_| format!("domid {domid}"))?;
        gntdev()?
            .map(DomId::new(domid), &[GrantRef::new(reference)], false)
            .map(Self)
            .map_err(|e| format!("mapping grant ref {reference} of domain {domid}: {e}"))
    }

    /// Reads `length` bytes at `offset`.
    pub(crate) fn read(&self, offset: usize, length: usize) -> Result<Vec<u8>, String> {
        let mut bytes = vec![0; length];
        self.0.read(offset, &mut bytes).map_err(|e| e.to_string())?;
        Ok(bytes)
    }

    /// Writes `bytes` at `offset`.
    pub(crate) fn write(&self, offset: usize, bytes: &[u8]) -> Result<(), String> {
        let mem = self.0.mem().ok_or("the mapping is read-only")?;
        mem.write(offset, bytes).map_err(|e| e.to_string())
    }

    /// Unmaps the page and the grant reference, reporting failures.
    pub(crate) fn unmap(self) -> Result<(), String> {
        self.0.unmap().map_err(|e| e.to_string())
    }
}
