//! `/dev/xen/gntalloc`: granting pages of this process to another domain.

use std::os::fd::{AsFd, OwnedFd};

use xen_hypercall::DomId;
use xen_shared::SharedMem;

use super::sys;
use super::{Leaks, Pages, UnmapNotify, open_device, set_unmap_notify};
use crate::error::os_errno;
use crate::{Error, GrantRef};

/// The gntalloc device path.
pub const GNTALLOC_DEVICE: &str = "/dev/xen/gntalloc";

/// gntalloc's module parameter `limit`: how many pages all its users together
/// may have shared at once (`ALLOC_GREF` past it is `ENOSPC`).
const LIMIT_PARAMETER: &str = "/sys/module/xen_gntalloc/parameters/limit";

/// `limit`'s default in `drivers/xen/gntalloc.c`.
const DEFAULT_LIMIT: usize = 1024;

/// gntalloc's `limit` now: the module parameter, or its default when it
/// cannot be read (a negative one allows nothing).
fn limit() -> usize {
    std::fs::read_to_string(LIMIT_PARAMETER)
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok())
        .map_or(DEFAULT_LIMIT, |limit| usize::try_from(limit).unwrap_or(0))
}

/// An open `/dev/xen/gntalloc`: allocates pages and grants them to another domain.
#[derive(Debug)]
pub struct Gntalloc {
    fd: OwnedFd,
    leaks: Leaks,
}

impl Gntalloc {
    /// Opens `/dev/xen/gntalloc` (close-on-exec).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] with `open`'s errno (`ENOENT` when the `xen-gntalloc` module is not
    /// loaded, `EACCES` without access to the node).
    pub fn open() -> Result<Self, Error> {
        Ok(Self {
            fd: open_device(GNTALLOC_DEVICE)?,
            leaks: Leaks::default(),
        })
    }

    /// How many shares gntalloc refused to give back (`DEALLOC_GREF`) when
    /// they were dropped: their pages stay allocated and granted until this
    /// device is closed. Never expected: the index is gntalloc's own.
    pub fn leaked(&self) -> u32 {
        self.leaks.get()
    }

    /// Allocates `count` zeroed pages, grants `domid` access to them
    /// (writable unless `readonly`) and maps them into this process.
    ///
    /// The kernel limits how many pages its users may have shared at once
    /// (module parameter `limit`, 1024 by default): past it, `ENOSPC`. A
    /// `count` over the limit is refused so before anything is allocated for
    /// it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for no page, [`Error::BadDomain`] for a `domid` that is not
    /// a domain, [`Error::Os`] when gntalloc refuses (`ENOSPC` past its `limit`, `ENOMEM`).
    #[doc(alias("xengntshr_share_pages", "IOCTL_GNTALLOC_ALLOC_GREF"))]
    pub fn share(&self, domid: DomId, count: usize, readonly: bool) -> Result<Share<'_>, Error> {
        if count == 0 {
            return Err(Error::InvalidInput("no page to share"));
        }
        if !domid.is_domain() {
            return Err(Error::BadDomain(domid));
        }
        // The kernel refuses the count only after the call, which needs
        // 4 bytes per page from this process first.
        if count > DEFAULT_LIMIT && count > limit() {
            return Err(Error::Os {
                operation: "IOCTL_GNTALLOC_ALLOC_GREF",
                errno: xen_hypercall::Errno::ENOSPC,
            });
        }
        let count32 = u32::try_from(count).map_err(|_| Error::InvalidInput("too many pages"))?;
        // The 16-byte header and `count` u32 references (at least 24 bytes,
        // the structure's padded size), as u64 words for alignment.
        let words = (16 + 4 * count).div_ceil(8).max(3);
        let mut arg = vec![0u64; words];
        let header = sys::AllocGref {
            domid: domid.0,
            flags: if readonly {
                0
            } else {
                sys::GNTALLOC_FLAG_WRITABLE
            },
            count: count32,
            index: 0,
            gref_ids: [0],
        };
        arg[0] =
            u64::from(header.domid) | u64::from(header.flags) << 16 | u64::from(header.count) << 32;
        // SAFETY: ALLOC_GREF reads the header (`copy_from_user` of
        // `sizeof(op)`, 24 bytes), writes `op.count` u32 references at
        // `gref_ids` (offset 16) and the header back
        // (`gntalloc_ioctl_alloc`); `arg` holds max(24, 16 + 4 * count)
        // bytes. The pages it allocates are the kernel's until mapped below.
        unsafe {
            sys::ioctl(
                self.fd.as_fd(),
                sys::IOCTL_GNTALLOC_ALLOC_GREF,
                arg.as_mut_ptr(),
            )
        }
        .map_err(|errno| Error::Os {
            operation: "IOCTL_GNTALLOC_ALLOC_GREF",
            errno: os_errno(errno),
        })?;
        let index = arg[1];
        let grefs = (0..count)
            .map(|i| {
                let word = arg[2 + i / 2];
                GrantRef(if i % 2 == 0 {
                    word as u32
                } else {
                    (word >> 32) as u32
                })
            })
            .collect();
        let pages = Pages::map(&self.fd, index, count, true).map_err(|errno| {
            self.leaks.count(self.dealloc(index, count32));
            Error::Os {
                operation: "mmap of /dev/xen/gntalloc",
                errno: os_errno(errno),
            }
        })?;
        Ok(Share {
            dev: self,
            pages,
            index,
            count: count32,
            grefs,
        })
    }

    /// `DEALLOC_GREF`: gives the pages back; the kernel ends each grant once
    /// the other domain has unmapped it.
    fn dealloc(&self, index: u64, count: u32) -> Result<(), Error> {
        let mut arg = sys::DeallocGref { index, count };
        // SAFETY: DEALLOC_GREF reads one `ioctl_gntalloc_dealloc_gref` (16
        // bytes); the pages it releases are no longer mapped in this process.
        unsafe { sys::ioctl(self.fd.as_fd(), sys::IOCTL_GNTALLOC_DEALLOC_GREF, &mut arg) }
            .map(drop)
            .map_err(|errno| Error::Os {
                operation: "IOCTL_GNTALLOC_DEALLOC_GREF",
                errno: os_errno(errno),
            })
    }
}

impl AsFd for Gntalloc {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Pages this process granted to another domain, mapped here; unmapped and
/// given back on drop (Linux ends each grant once the peer unmapped it).
#[derive(Debug)]
pub struct Share<'d> {
    dev: &'d Gntalloc,
    pages: Pages,
    index: u64,
    count: u32,
    grefs: Vec<GrantRef>,
}

impl Share<'_> {
    /// The references to give the other domain, one per page, in order.
    pub fn grefs(&self) -> &[GrantRef] {
        &self.grefs
    }

    /// The shared pages, for atomic access: the other domain may change them
    /// at any time.
    pub fn mem(&self) -> SharedMem<'_> {
        // Mapped writable in `Gntalloc::share`.
        self.pages.mem().unwrap_or(SharedMem::from_words(&[]))
    }

    /// The number of bytes shared (4096 per page).
    pub fn len(&self) -> usize {
        self.pages.len
    }

    /// Whether nothing is shared (never: a share has at least one page).
    pub fn is_empty(&self) -> bool {
        self.pages.len == 0
    }

    /// Asks Linux to clear a byte and/or signal an event channel when this
    /// process's mapping goes away, also when it dies.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a byte outside the share; [`Error::Os`] with gntalloc's
    /// `EINVAL` for a port not bound through the evtchn device.
    pub fn notify_on_unmap(&self, notify: UnmapNotify) -> Result<(), Error> {
        set_unmap_notify(
            self.dev.fd.as_fd(),
            sys::IOCTL_GNTALLOC_SET_UNMAP_NOTIFY,
            self.index,
            self.len(),
            notify,
        )
    }
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        let released = self.dev.dealloc(self.index, self.count);
        self.dev.leaks.count(released);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "Miri opens no device")]
    fn a_count_past_the_limit_is_refused_before_any_allocation() {
        // A device that answers every ioctl with `ENOTTY`: only a refusal
        // before the call gives `ENOSPC`.
        let dev = Gntalloc {
            fd: std::fs::File::open("/dev/null").unwrap().into(),
            leaks: Leaks::default(),
        };
        let refused = dev.share(DomId(1), 1 << 28, false).unwrap_err();
        assert_eq!(
            refused,
            Error::Os {
                operation: "IOCTL_GNTALLOC_ALLOC_GREF",
                errno: xen_hypercall::Errno::ENOSPC,
            }
        );
    }
}
