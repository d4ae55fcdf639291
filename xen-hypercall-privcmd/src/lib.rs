#![doc = include_str!("../README.md")]
#![cfg(target_os = "linux")]

mod buffer;
mod foreign;
mod sys;

use std::fs::{File, OpenOptions as FsOpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno as OsErrno;
use xen_hypercall::{
    DomId, Errno, Error, HypercallData, XenConstBuffer, XenHypercall, XenMutBuffer,
};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use buffer::Pool;
pub use buffer::{BufferStats, MAX_CACHED_PAGES, PrivcmdConstBuffer, PrivcmdMutBuffer};
pub use foreign::{ForeignMapping, ResourceType};
pub use sys::BufferSource;

/// The privcmd device node.
pub const PRIVCMD_DEVICE: &str = "/dev/xen/privcmd";
/// The device giving hypercall-safe pages (Linux 4.18 and later).
pub const HYPERCALL_DEVICE: &str = "/dev/xen/hypercall";
/// The Linux module providing both devices.
pub const PRIVCMD_MODULE: &str = "xen-privcmd";

/// No restriction (`DOMID_INVALID` is never a real domain).
const UNRESTRICTED: u32 = u32::MAX;

/// Xen hypercalls from Linux userland through `/dev/xen/privcmd`.
///
/// Open it once and share it: it is `Send + Sync`, and every method takes `&self`.
/// Buffers for hypercall arguments come from hypercall-safe pages (see the crate
/// documentation) and are cached, so steady-state hypercalls make no `mmap` calls.
#[derive(Debug)]
#[doc(alias("IOCTL_PRIVCMD_HYPERCALL", "xencall_open"))]
pub struct Privcmd {
    fd: OwnedFd,
    pool: Pool,
    /// The domain the fd is restricted to, or [`UNRESTRICTED`].
    restricted: AtomicU32,
}

/// How to open a [`Privcmd`]: [`Privcmd::open`] with everything at its default.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// The buffer source required, or `None` for the device where it exists.
    source: Option<BufferSource>,
}

impl OpenOptions {
    /// The defaults: buffers from `/dev/xen/hypercall`, or from locked
    /// anonymous memory where that device does not exist (Linux before 4.18).
    pub const fn new() -> Self {
        Self { source: None }
    }

    /// Takes every buffer from `source`, whatever exists:
    /// [`BufferSource::HypercallDevice`] refuses the locked-anonymous fallback
    /// (opening fails where the device is missing);
    /// [`BufferSource::LockedAnonymous`] uses the fallback even where the device
    /// exists (for tests).
    pub const fn buffer_source(mut self, source: BufferSource) -> Self {
        self.source = Some(source);
        self
    }

    /// Opens `/dev/xen/privcmd` (and `/dev/xen/hypercall`, if present and wanted).
    ///
    /// # Errors
    ///
    /// [`Error::NotOnXen`] when this is not a Xen domain, [`Error::DriverNotLoaded`]
    /// when the `xen-privcmd` module is not loaded, [`Error::PermissionDenied`]
    /// when a device may not be opened, [`Error::Unsupported`] when
    /// [`BufferSource::HypercallDevice`] is required and the device is missing,
    /// [`Error::Os`] for anything else.
    pub fn open(&self) -> Result<Privcmd, Error> {
        let fd = open_device(PRIVCMD_DEVICE)
            .map_err(|errno| open_error(errno, PRIVCMD_DEVICE, Path::new("/")))?;
        let hypercall_dev = match self.source {
            // Missing or unopenable: fall back, as libxencall does.
            None => open_device(HYPERCALL_DEVICE).ok(),
            Some(BufferSource::HypercallDevice) => {
                Some(open_device(HYPERCALL_DEVICE).map_err(hypercall_device_error)?)
            }
            Some(BufferSource::LockedAnonymous) => None,
        };
        Ok(Privcmd {
            fd,
            pool: Pool::new(hypercall_dev)?,
            restricted: AtomicU32::new(UNRESTRICTED),
        })
    }
}

fn open_device(path: &str) -> Result<OwnedFd, OsErrno> {
    FsOpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_CLOEXEC)
        .open(path)
        .map(|file: File| file.into())
        .map_err(|e| OsErrno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO)))
}

/// Explains why opening `device` failed; `root` is where `/dev` and `/sys` are looked up.
fn open_error(errno: OsErrno, device: &'static str, root: &Path) -> Error {
    match errno {
        OsErrno::ENOENT | OsErrno::ENODEV | OsErrno::ENXIO => {
            if is_xen_domain(root) {
                Error::DriverNotLoaded {
                    device,
                    module: PRIVCMD_MODULE,
                }
            } else {
                Error::NotOnXen("/dev/xen does not exist and /sys/hypervisor/type is not \"xen\"")
            }
        }
        OsErrno::EACCES | OsErrno::EPERM => Error::PermissionDenied { device },
        errno => Error::Os {
            operation: "open of /dev/xen/privcmd",
            errno: Errno::from_raw(errno as i32),
        },
    }
}

/// Why `/dev/xen/hypercall` could not be opened when it is required (privcmd,
/// from the same module, is open: the module is loaded).
fn hypercall_device_error(errno: OsErrno) -> Error {
    match errno {
        OsErrno::ENOENT | OsErrno::ENODEV | OsErrno::ENXIO => Error::Unsupported(
            "/dev/xen/hypercall does not exist (Linux before 4.18) and \
             BufferSource::HypercallDevice was required",
        ),
        OsErrno::EACCES | OsErrno::EPERM => Error::PermissionDenied {
            device: HYPERCALL_DEVICE,
        },
        errno => Error::Os {
            operation: "open of /dev/xen/hypercall",
            errno: Errno::from_raw(errno as i32),
        },
    }
}

/// Whether this looks like a Xen domain: `/dev/xen` exists (some Xen driver is
/// loaded) or the kernel reports the hypervisor as Xen.
fn is_xen_domain(root: &Path) -> bool {
    root.join("dev/xen").is_dir()
        || std::fs::read(root.join("sys/hypervisor/type")).is_ok_and(|t| t.trim_ascii() == b"xen")
}

/// The error of a failed `IOCTL_PRIVCMD_HYPERCALL`: Xen's code, the
/// restriction that caused it, or Linux's own failure.
///
/// Linux returns Xen's `-XEN_Exxx` as the errno (the numbers are Linux's on x86
/// and Arm), and its own errors the same way. They are told apart as far as
/// they can be: `privcmd_ioctl_hypercall` fails by itself only with `EPERM` on
/// a restricted fd and `EFAULT` when it cannot read the request (never: it is
/// a live local), and the ioctl dispatcher with `ENOTTY`, which Xen's
/// `errno.h` does not have. So a code Xen defines is Xen's (or the
/// restriction's), any other is the OS's.
///
/// An `EPERM` on an fd this process did not restrict is asked about once more
/// (`refused_by_linux`): Linux restricts a domU's fds by itself.
fn hypercall_error(
    errno: OsErrno,
    restricted: u32,
    refused_by_linux: impl FnOnce() -> bool,
) -> Error {
    let xen = Errno::from_raw(errno as i32);
    match (errno, u16::try_from(restricted)) {
        // A restricted privcmd refuses every hypercall with EPERM (XSA-482).
        (OsErrno::EPERM, Ok(domid)) => Error::Restricted { domid },
        (OsErrno::EPERM, Err(_)) if refused_by_linux() => Error::RestrictedByKernel,
        _ if xen.name().is_some() => Error::Xen(xen),
        _ => Error::Os {
            operation: "IOCTL_PRIVCMD_HYPERCALL",
            errno: Errno::from_raw(errno as i32),
        },
    }
}

impl Privcmd {
    /// Opens `/dev/xen/privcmd` with the default [`OpenOptions`].
    ///
    /// # Errors
    ///
    /// As [`OpenOptions::open`].
    pub fn open() -> Result<Self, Error> {
        OpenOptions::new().open()
    }

    /// Restricts this fd to hypercalls about domain `domid` (`IOCTL_PRIVCMD_RESTRICT`).
    ///
    /// Irreversible. Linux then refuses `IOCTL_PRIVCMD_HYPERCALL` altogether (only
    /// `dm_op` and foreign mappings of `domid` remain): later hypercalls fail
    /// with [`Error::Restricted`].
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if Linux refuses (e.g. `EINVAL` when already restricted to
    /// another domain).
    #[doc(alias("IOCTL_PRIVCMD_RESTRICT"))]
    pub fn restrict(&self, domid: DomId) -> Result<(), Error> {
        let domid = domid.raw();
        // SAFETY:
        // - the fd is an open privcmd fd owned by `self`;
        // - `IOCTL_PRIVCMD_RESTRICT` reads one `domid_t` (u16) from the pointer,
        //   which points at a live local (`include/uapi/xen/privcmd.h`).
        unsafe { sys::privcmd_restrict(self.fd.as_raw_fd(), &domid) }.map_err(|errno| {
            Error::Os {
                operation: "IOCTL_PRIVCMD_RESTRICT",
                errno: Errno::from_raw(errno as i32),
            }
        })?;
        self.restricted.store(u32::from(domid), Ordering::Relaxed);
        Ok(())
    }

    /// The domain this fd is restricted to, if any.
    pub fn restricted_to(&self) -> Option<DomId> {
        u16::try_from(self.restricted.load(Ordering::Relaxed))
            .ok()
            .map(DomId::new)
    }

    /// Where this handle's hypercall buffers come from.
    pub fn buffer_source(&self) -> BufferSource {
        self.pool.source()
    }

    /// How many `mmap`/`munmap` calls the buffer cache has made so far, and how
    /// often `/dev/xen/hypercall` refused a mapping. In steady state (buffers of
    /// at most [`MAX_CACHED_PAGES`] pages, a few live at once) these stop growing.
    pub fn buffer_stats(&self) -> BufferStats {
        self.pool.stats()
    }

    #[inline]
    fn call(&self, op: usize, args: [usize; 5]) -> Result<usize, Error> {
        let mut call = sys::PrivcmdHypercall {
            op: op as u64,
            arg: args.map(|a| a as u64),
        };
        // SAFETY: the caller of `hypercallN` guarantees the hypercall only makes
        // Xen access memory Rust allows it to; `self.fd` is an open privcmd fd.
        match unsafe { sys::privcmd_hypercall(self.fd.as_fd(), &mut call) } {
            Ok(ret) => xen_hypercall::decode_result(ret),
            Err(errno) => Err(self.hypercall_error(errno)),
        }
    }

    /// The error of a failed `IOCTL_PRIVCMD_HYPERCALL` on this fd.
    #[cold]
    fn hypercall_error(&self, errno: OsErrno) -> Error {
        hypercall_error(errno, self.restricted.load(Ordering::Relaxed), || {
            self.refused_by_linux()
        })
    }

    /// Whether Linux refuses every hypercall on this fd. In a domU, privcmd opens each fd
    /// already restricted, to the domain in the domU's xenstore `target` key or to
    /// `DOMID_IDLE` when there is none (`init_restrict` in `drivers/xen/privcmd.c`, the
    /// XSA-482 fix, unless the module's `unrestricted` is set), and a restricted fd answers
    /// every `IOCTL_PRIVCMD_HYPERCALL` with `EPERM`. Xen never refuses `XENVER_version` (XSM's
    /// dummy policy and FLASK both answer it before any permission check), so an `EPERM` for
    /// it is Linux's.
    fn refused_by_linux(&self) -> bool {
        let mut call = sys::PrivcmdHypercall {
            op: u64::from(xen_sys::__HYPERVISOR_xen_version),
            arg: [u64::from(xen_sys::XENVER_version), 0, 0, 0, 0],
        };
        // SAFETY: `XENVER_version` takes no buffer: Xen returns the version as the result and
        // reads or writes no guest memory (`do_xen_version`), so the null argument is never
        // used; `self.fd` is an open privcmd fd.
        let result = unsafe { sys::privcmd_hypercall(self.fd.as_fd(), &mut call) };
        matches!(result, Err(OsErrno::EPERM))
    }
}

impl AsFd for Privcmd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Privcmd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

// SAFETY:
// - each `hypercallN` passes `op` and its arguments (the rest zero) to
//   `IOCTL_PRIVCMD_HYPERCALL`, which makes exactly that hypercall for the calling
//   domain and returns when Xen is done (Linux `drivers/xen/privcmd.c`,
//   `privcmd_ioctl_hypercall`); a `-XEN_Exxx` result comes back as errno, returned
//   as `Error::Xen` (or `Error::Restricted`, for the EPERM of a restricted fd);
// - buffers are copies in whole pages, sized for the data, initialised with its
//   bytes, owned by one buffer at a time (`buffer::Pool`), and live as long as
//   the buffer (in the process that made them: null in a forked child). The
//   pages come from `/dev/xen/hypercall`, which Linux never moves (VM_IO,
//   commit c51b3c639e01), or, where that device is missing, locked anonymous
//   memory, which Linux may still migrate or compact: it unmaps the page and
//   flushes the TLB before copying it, so Xen's access in that window faults
//   and the hypercall fails with EFAULT (the reason for that commit), and
//   never reaches a page this process no longer owns;
//   dropping a mutable buffer copies exactly those bytes back.
unsafe impl XenHypercall for Privcmd {
    type Error = Error;

    unsafe fn hypercall0(&self, op: usize) -> Result<usize, Error> {
        self.call(op, [0; 5])
    }

    unsafe fn hypercall1(&self, op: usize, arg: usize) -> Result<usize, Error> {
        self.call(op, [arg, 0, 0, 0, 0])
    }

    unsafe fn hypercall2(&self, op: usize, args: [usize; 2]) -> Result<usize, Error> {
        self.call(op, [args[0], args[1], 0, 0, 0])
    }

    unsafe fn hypercall3(&self, op: usize, args: [usize; 3]) -> Result<usize, Error> {
        self.call(op, [args[0], args[1], args[2], 0, 0])
    }

    unsafe fn hypercall4(&self, op: usize, args: [usize; 4]) -> Result<usize, Error> {
        self.call(op, [args[0], args[1], args[2], args[3], 0])
    }

    unsafe fn hypercall5(&self, op: usize, args: [usize; 5]) -> Result<usize, Error> {
        self.call(op, args)
    }

    fn make_const_buffer<T>(&self, data: &T) -> Result<impl XenConstBuffer<T>, Error>
    where
        T: ?Sized + HypercallData + IntoBytes + Immutable,
    {
        PrivcmdConstBuffer::new(&self.pool, data)
    }

    fn make_mut_buffer<T>(&self, data: &mut T) -> Result<impl XenMutBuffer<T>, Error>
    where
        T: ?Sized + HypercallData + FromBytes + IntoBytes,
    {
        PrivcmdMutBuffer::new(&self.pool, data)
    }
}

#[cfg(test)]
mod tests;
