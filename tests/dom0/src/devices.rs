//! Just enough of Linux's `/dev/xen/evtchn` for the dom0 half of the cross-domain exchange (the
//! project's own event-channel crate will replace it; ioctl numbers and layouts: Linux
//! `include/uapi/xen/evtchn.h`), and the granted page, mapped through xen-grant's gntdev side.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use xen_grant::GrantRef;
use xen_grant::linux::{Gntdev, Mapping};
use xen_hypercall::DomId;

/// Opens a device read-write.
fn open(path: &str) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("open {path}: {e}"))
}

/// `struct ioctl_evtchn_bind_interdomain`.
#[repr(C)]
struct BindInterdomain {
    remote_domain: u32,
    remote_port: u32,
}

/// `struct ioctl_evtchn_notify` and `struct ioctl_evtchn_unbind`.
#[repr(C)]
struct PortArgument {
    port: u32,
}

// IOCTL_EVTCHN_BIND_INTERDOMAIN = _IOC(_IOC_NONE, 'E', 1, 8): returns the local port.
nix::ioctl_write_ptr_bad!(evtchn_bind_interdomain, 0x0008_4501, BindInterdomain);
// IOCTL_EVTCHN_UNBIND = _IOC(_IOC_NONE, 'E', 3, 4).
nix::ioctl_write_ptr_bad!(evtchn_unbind, 0x0004_4503, PortArgument);
// IOCTL_EVTCHN_NOTIFY = _IOC(_IOC_NONE, 'E', 4, 4).
nix::ioctl_write_ptr_bad!(evtchn_notify, 0x0004_4504, PortArgument);

/// An open `/dev/xen/evtchn` with one interdomain port bound (unbound on drop).
#[derive(Debug)]
pub(crate) struct InterdomainPort {
    device: File,
    local: u32,
}

impl InterdomainPort {
    /// Binds `remote_port` of `remote_domain` to a new local port.
    pub(crate) fn bind(remote_domain: u32, remote_port: u32) -> Result<Self, String> {
        let device = open("/dev/xen/evtchn")?;
        let argument = BindInterdomain {
            remote_domain,
            remote_port,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: the fd is an open evtchn device; the request number and `BindInterdomain` are
        // the kernel's `IOCTL_EVTCHN_BIND_INTERDOMAIN` and `struct ioctl_evtchn_bind_interdomain`
        // (two u32), which the kernel only reads through the pointer, valid for the call.
        let local = unsafe { evtchn_bind_interdomain(device.as_raw_fd(), &argument) }.map_err(
            |e| format!("IOCTL_EVTCHN_BIND_INTERDOMAIN (domain {remote_domain}, port {remote_port}): {e}"),
        )?;
        let local = u32::try_from(local).map_err(|_| format!("bad local port {local}"))?;
        Ok(Self { device, local })
    }

    /// Notifies the remote end.
    pub(crate) fn notify(&self) -> Result<(), String> {
        use std::os::fd::AsRawFd;
        let argument = PortArgument { port: self.local };
        // SAFETY: `IOCTL_EVTCHN_NOTIFY` reads one u32 (`struct ioctl_evtchn_notify`) through the
        // pointer, valid for the call; the fd is an open evtchn device.
        unsafe { evtchn_notify(self.device.as_raw_fd(), &argument) }
            .map(drop)
            .map_err(|e| format!("IOCTL_EVTCHN_NOTIFY (port {}): {e}", self.local))
    }

    /// Waits up to `timeout` for an event on the local port; every port read is written back
    /// (unmasked). Fails on a timeout.
    pub(crate) fn wait(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no event on port {} within {} s",
                    self.local,
                    timeout.as_secs()
                ));
            }
            let mut fds = [PollFd::new(self.device.as_fd(), PollFlags::POLLIN)];
            let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let ready =
                poll(&mut fds, PollTimeout::from(millis)).map_err(|e| format!("poll: {e}"))?;
            if ready == 0 {
                continue;
            }
            let mut ports = [0u8; 64];
            let read = self
                .device
                .read(&mut ports)
                .map_err(|e| format!("read /dev/xen/evtchn: {e}"))?;
            let mut seen = false;
            for port in ports[..read - read % 4].chunks_exact(4) {
                seen |= u32::from_ne_bytes(port.try_into().expect("4 bytes")) == self.local;
                // Writing the port back unmasks it.
                self.device
                    .write_all(port)
                    .map_err(|e| format!("unmask: {e}"))?;
            }
            if seen {
                return Ok(());
            }
        }
    }
}

impl Drop for InterdomainPort {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        let argument = PortArgument { port: self.local };
        // SAFETY: `IOCTL_EVTCHN_UNBIND` reads one u32 through the pointer, valid for the call.
        // Closing the fd would unbind it too: the result does not matter.
        let _ = unsafe { evtchn_unbind(self.device.as_raw_fd(), &argument) };
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
