//! Just enough of Linux's `/dev/xen/evtchn` and `/dev/xen/gntdev` for the dom0 half of the
//! cross-domain exchange (the project's own event-channel and grant-table crates will replace these).
//! Ioctl numbers and layouts: Linux `include/uapi/xen/evtchn.h` and `gntdev.h`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

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

/// `struct ioctl_gntdev_grant_ref`.
#[repr(C)]
struct GrantRef {
    domid: u32,
    reference: u32,
}

/// `struct ioctl_gntdev_map_grant_ref` with one reference.
#[repr(C)]
struct MapGrantRef {
    count: u32,
    pad: u32,
    index: u64,
    refs: [GrantRef; 1],
}

/// `struct ioctl_gntdev_unmap_grant_ref`.
#[repr(C)]
struct UnmapGrantRef {
    index: u64,
    count: u32,
    pad: u32,
}

// IOCTL_GNTDEV_MAP_GRANT_REF = _IOC(_IOC_NONE, 'G', 0, 24).
nix::ioctl_readwrite_bad!(gntdev_map_grant_ref, 0x0018_4700, MapGrantRef);
// IOCTL_GNTDEV_UNMAP_GRANT_REF = _IOC(_IOC_NONE, 'G', 1, 16).
nix::ioctl_write_ptr_bad!(gntdev_unmap_grant_ref, 0x0010_4701, UnmapGrantRef);

/// The page size of the granted page.
pub(crate) const PAGE_SIZE: usize = 4096;

/// A page another domain granted, mapped through `/dev/xen/gntdev`. The other domain may write it
/// at any time: it is read and written only through volatile accesses.
#[derive(Debug)]
pub(crate) struct GrantMapping {
    device: File,
    index: u64,
    page: Option<NonNull<u8>>,
    released: bool,
}

impl GrantMapping {
    /// Maps grant `reference` of domain `domid`.
    pub(crate) fn map(domid: u32, reference: u32) -> Result<Self, String> {
        use std::os::fd::AsRawFd;
        let device = open("/dev/xen/gntdev")?;
        let mut request = MapGrantRef {
            count: 1,
            pad: 0,
            index: 0,
            refs: [GrantRef { domid, reference }],
        };
        // SAFETY: `IOCTL_GNTDEV_MAP_GRANT_REF` reads `count` references after the header and
        // writes `index`; `request` is `struct ioctl_gntdev_map_grant_ref` with exactly one
        // reference, live and exclusively borrowed for the call.
        unsafe { gntdev_map_grant_ref(device.as_raw_fd(), &mut request) }.map_err(|e| {
            format!("IOCTL_GNTDEV_MAP_GRANT_REF (domain {domid}, ref {reference}): {e}")
        })?;
        let index = request.index;
        let mut mapping = Self {
            device,
            index,
            page: None,
            released: false,
        };
        let offset = i64::try_from(index).map_err(|_| format!("bad gntdev index {index:#x}"))?;
        let length = NonZeroUsize::new(PAGE_SIZE).expect("non-zero");
        // SAFETY: a new shared mapping chosen by the kernel (no address hint), so it aliases no
        // Rust object; gntdev backs it with the granted page at `offset` (the index the map ioctl
        // returned). Dropping `mapping` on failure unmaps the grant reference.
        let page = unsafe {
            mmap(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                mapping.device.as_fd(),
                offset,
            )
        }
        .map_err(|e| format!("mmap of grant (domain {domid}, ref {reference}): {e}"))?;
        mapping.page = Some(page.cast());
        Ok(mapping)
    }

    /// Reads `length` bytes at `offset`.
    pub(crate) fn read(&self, offset: usize, length: usize) -> Vec<u8> {
        let page = self.page.expect("mapped");
        assert!(offset + length <= PAGE_SIZE, "read past the page");
        (offset..offset + length)
            .map(|at| {
                let byte = page.as_ptr().wrapping_add(at);
                // SAFETY: `at` < PAGE_SIZE (asserted), so `byte` is inside the live mapping of
                // one page; a volatile read, as the other domain may write it concurrently.
                unsafe { byte.read_volatile() }
            })
            .collect()
    }

    /// Writes `bytes` at `offset`.
    pub(crate) fn write(&self, offset: usize, bytes: &[u8]) {
        let page = self.page.expect("mapped");
        assert!(offset + bytes.len() <= PAGE_SIZE, "write past the page");
        for (at, value) in (offset..).zip(bytes) {
            let byte = page.as_ptr().wrapping_add(at);
            // SAFETY: `at` < PAGE_SIZE (asserted), so `byte` is inside the live, writable
            // mapping; a volatile write, as the other domain may read it concurrently.
            unsafe { byte.write_volatile(*value) }
        }
    }

    /// Unmaps the page and the grant reference, reporting failures.
    pub(crate) fn unmap(mut self) -> Result<(), String> {
        self.release()
    }

    fn release(&mut self) -> Result<(), String> {
        use std::os::fd::AsRawFd;
        self.released = true;
        if let Some(page) = self.page.take() {
            // SAFETY: `page` is the one-page mapping made in `map`, unmapped once (taken out of
            // `self.page`); no reference into it exists (accesses are by value).
            unsafe { munmap(page.cast(), PAGE_SIZE) }.map_err(|e| format!("munmap: {e}"))?;
        }
        let request = UnmapGrantRef {
            index: self.index,
            count: 1,
            pad: 0,
        };
        // SAFETY: `IOCTL_GNTDEV_UNMAP_GRANT_REF` reads `struct ioctl_gntdev_unmap_grant_ref`
        // through the pointer, valid for the call.
        unsafe { gntdev_unmap_grant_ref(self.device.as_raw_fd(), &request) }
            .map(drop)
            .map_err(|e| {
                format!(
                    "IOCTL_GNTDEV_UNMAP_GRANT_REF (index {:#x}): {e}",
                    self.index
                )
            })
    }
}

impl Drop for GrantMapping {
    fn drop(&mut self) {
        // Nowhere to report a failure here; closing the device releases the reference anyway.
        if !self.released {
            let _ = self.release();
        }
    }
}
