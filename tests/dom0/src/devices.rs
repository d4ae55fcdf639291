//! The dom0 half of the cross-domain exchange's devices: an interdomain port through
//! xen-evtchn's `/dev/xen/evtchn` backend, and just enough of `/dev/xen/gntdev` (the project's
//! grant-table crate will replace it).
//! Ioctl numbers and layouts: Linux `include/uapi/xen/evtchn.h` and `gntdev.h`.

use std::fs::{File, OpenOptions};
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use xen_evtchn::linux::EvtchnDevice;
use xen_evtchn::{DomId, EventChannel, Port};

use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

/// Opens a device read-write.
fn open(path: &str) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("open {path}: {e}"))
}

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
