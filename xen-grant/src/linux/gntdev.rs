//! `/dev/xen/gntdev`: mapping and copying pages other domains granted.

use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};

use xen_hypercall::DomId;
use xen_shared::{ReadOnlyMem, SharedMem};

use super::sys::{self, GrantRefArg};
use super::{Leaks, Pages, UnmapNotify, open_device, set_unmap_notify};
use crate::error::os_errno;
use crate::{Error, GrantRef, GrantStatus, PAGE_SIZE};

/// The gntdev device path.
pub const GNTDEV_DEVICE: &str = "/dev/xen/gntdev";

/// An open `/dev/xen/gntdev`: maps pages other domains granted to this one.
#[derive(Debug)]
pub struct Gntdev {
    fd: OwnedFd,
    leaks: Leaks,
}

impl Gntdev {
    /// Opens `/dev/xen/gntdev` (close-on-exec).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] with `open`'s errno (`ENOENT` when the `xen-gntdev` module is not
    /// loaded, `EACCES` without access to the node).
    pub fn open() -> Result<Self, Error> {
        Ok(Self {
            fd: open_device(GNTDEV_DEVICE)?,
            leaks: Leaks::default(),
        })
    }

    /// How many mappings gntdev refused to release (`UNMAP_GRANT_REF`) when
    /// they were dropped: each stays mapped, its grant pinned, until this
    /// device is closed. Never expected: the index is gntdev's own.
    pub fn leaked(&self) -> u32 {
        self.leaks.get()
    }

    /// Maps the pages `domid` granted with `grefs`, in order, writable unless
    /// `readonly`. Xen checks the grants when the pages are mapped into this
    /// process: a wrong, revoked or read-only (for a writable mapping)
    /// reference is [`Error::MapRefused`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for no reference or too many, [`Error::Os`] when gntdev
    /// refuses the references (`ENOMEM` past its `limit`), [`Error::MapRefused`] when Xen
    /// refuses to map them.
    #[doc(alias(
        "xengnttab_map_grant_ref",
        "xengnttab_map_grant_refs",
        "IOCTL_GNTDEV_MAP_GRANT_REF"
    ))]
    pub fn map(
        &self,
        domid: DomId,
        grefs: &[GrantRef],
        readonly: bool,
    ) -> Result<Mapping<'_>, Error> {
        let first = *grefs
            .first()
            .ok_or(Error::InvalidInput("no grant reference to map"))?;
        let count = u32::try_from(grefs.len())
            .map_err(|_| Error::InvalidInput("too many grant references"))?;
        // The header (count, pad, index) and the references, as one array of
        // `ioctl_gntdev_grant_ref`s (8 bytes each, like the header's halves).
        let mut arg = vec![GrantRefArg::default(); 2 + grefs.len()];
        arg[0].domid = count;
        for (slot, gref) in arg[2..].iter_mut().zip(grefs) {
            *slot = GrantRefArg {
                domid: u32::from(domid.0),
                gref: gref.0,
            };
        }
        // SAFETY: MAP_GRANT_REF reads the 16-byte header and `count`
        // references (`gntdev_ioctl_map_grant_ref`: `copy_from_user` of
        // `sizeof(op)`, then of `op.count` refs from `u->refs`) and writes the
        // header back (`copy_to_user(u, &op, sizeof(op))`, 24 bytes): `arg`
        // holds 16 + 8 * count >= 24 bytes. It only reserves an index; nothing
        // is mapped yet.
        unsafe {
            sys::ioctl(
                self.fd.as_fd(),
                sys::IOCTL_GNTDEV_MAP_GRANT_REF,
                arg.as_mut_ptr(),
            )
        }
        .map_err(|errno| Error::Os {
            operation: "IOCTL_GNTDEV_MAP_GRANT_REF",
            errno: os_errno(errno),
        })?;
        let index = u64::from(arg[1].domid) | u64::from(arg[1].gref) << 32;
        match Pages::map(&self.fd, index, grefs.len(), !readonly) {
            Ok(pages) => Ok(Mapping {
                dev: self,
                pages,
                index,
                count,
            }),
            Err(errno) => {
                self.leaks.count(self.unmap_index(index, count));
                Err(Error::MapRefused {
                    domid,
                    gref: first,
                    errno: os_errno(errno),
                })
            }
        }
    }

    /// `UNMAP_GRANT_REF`: releases the reservation `index` (the mapping itself
    /// goes when it is `munmap`ed).
    fn unmap_index(&self, index: u64, count: u32) -> Result<(), Error> {
        let mut arg = sys::UnmapGrantRef {
            index,
            count,
            pad: 0,
        };
        // SAFETY: UNMAP_GRANT_REF reads one `ioctl_gntdev_unmap_grant_ref`
        // (16 bytes) and releases the index's grant map, whose pages are no
        // longer mapped in this process.
        unsafe { sys::ioctl(self.fd.as_fd(), sys::IOCTL_GNTDEV_UNMAP_GRANT_REF, &mut arg) }
            .map(drop)
            .map_err(|errno| Error::Os {
                operation: "IOCTL_GNTDEV_UNMAP_GRANT_REF",
                errno: os_errno(errno),
            })
    }

    /// `SET_MAX_GRANTS`: limits how many grants this fd may map, on old
    /// kernels. Current ones have no such limit and no such ioctl (gntdev's
    /// ioctl switch answers `-ENOIOCTLCMD`): their `ENOTTY` is success, as
    /// libxengnttab takes it.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] with the driver's errno (`ENOTTY` is success, as above).
    pub fn set_max_grants(&self, count: u32) -> Result<(), Error> {
        let mut arg = sys::SetMaxGrants { count };
        // SAFETY: SET_MAX_GRANTS reads one `u32`.
        match unsafe { sys::ioctl(self.fd.as_fd(), sys::IOCTL_GNTDEV_SET_MAX_GRANTS, &mut arg) } {
            Ok(_) | Err(nix::errno::Errno::ENOTTY) => Ok(()),
            Err(errno) => Err(Error::Os {
                operation: "IOCTL_GNTDEV_SET_MAX_GRANTS",
                errno: os_errno(errno),
            }),
        }
    }

    /// `GRANT_COPY`: each segment copies `len` bytes between a granted page
    /// and this process's memory (or two granted pages), done by Xen without
    /// mapping anything.
    ///
    /// To repeat the same copies, prepare them once with [`CopyBatch`] and
    /// use [`copy_batch`](Self::copy_batch).
    ///
    /// # Errors
    ///
    /// The first segment Xen refused ([`Error::Copy`], its index; the segments
    /// before it were copied), and those of [`CopyBatch::new`] and
    /// [`copy_batch`](Self::copy_batch).
    #[doc(alias("xengnttab_grant_copy", "IOCTL_GNTDEV_GRANT_COPY"))]
    pub fn copy(&self, segments: &mut [CopySegment<'_>]) -> Result<(), Error> {
        self.copy_batch(&mut CopyBatch::new(segments)?)
    }

    /// `GRANT_COPY` of a prepared batch, in one ioctl.
    ///
    /// # Errors
    ///
    /// [`Error::Copy`] for the first segment Xen refused (see [`CopyBatch::statuses`]),
    /// [`Error::InvalidInput`] for more segments than the ioctl counts,
    /// [`Error::Os`] if the ioctl fails.
    pub fn copy_batch(&self, batch: &mut CopyBatch<'_>) -> Result<(), Error> {
        let raw = &mut batch.raw;
        let mut arg = sys::GrantCopy {
            count: u32::try_from(raw.len())
                .map_err(|_| Error::InvalidInput("too many copy segments"))?,
            segments: raw.as_mut_ptr(),
        };
        // SAFETY: GRANT_COPY reads `ioctl_gntdev_grant_copy` (16 bytes) and
        // `count` segments at `segments` (`raw`, live until after the call),
        // writing back each segment's `status` (`gntdev_ioctl_grant_copy`).
        // Xen, through the kernel (which pins the pages of the given virtual
        // addresses), reads each local source, a `&[u8]` of at least `len`
        // bytes, and writes each local destination, a `&mut [u8]` of at least
        // `len` bytes: `CopyBatch::new` checked the lengths, and the batch
        // borrows the segments, hence their buffers, for as long as it lives.
        unsafe { sys::ioctl(self.fd.as_fd(), sys::IOCTL_GNTDEV_GRANT_COPY, &mut arg) }.map_err(
            |errno| Error::Os {
                operation: "IOCTL_GNTDEV_GRANT_COPY",
                errno: os_errno(errno),
            },
        )?;
        match raw.iter().position(|s| s.status != 0) {
            Some(index) => Err(Error::Copy {
                index,
                status: GrantStatus(raw[index].status),
            }),
            None => Ok(()),
        }
    }
}

/// Grant copies checked and laid out for the kernel once, to be done any
/// number of times with [`Gntdev::copy_batch`]. Borrows the segments, hence
/// their local buffers, for as long as it lives.
#[derive(Debug)]
pub struct CopyBatch<'s> {
    raw: Vec<sys::CopySegment>,
    _segments: PhantomData<&'s mut ()>,
}

impl<'s> CopyBatch<'s> {
    /// Checks `segments` (a local buffer at least `len` long, a granted side
    /// within its page) and lays them out.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a local buffer shorter than its segment's `len`.
    pub fn new(segments: &'s mut [CopySegment<'_>]) -> Result<Self, Error> {
        let raw = segments
            .iter_mut()
            .map(CopySegment::raw)
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Self {
            raw,
            _segments: PhantomData,
        })
    }

    /// How many segments.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether there is no segment.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Each segment's status after [`Gntdev::copy_batch`]: Xen tries every segment of a
    /// batch, so one refused grant leaves the others copied, and this tells which. The kernel
    /// writes a segment's status only when it fails (`gntdev_copy`), so a status is the first
    /// failure since the batch was made, `GNTST_okay` (0) if none.
    pub fn statuses(&self) -> impl ExactSizeIterator<Item = GrantStatus> + '_ {
        self.raw.iter().map(|s| GrantStatus(s.status))
    }
}

impl AsFd for Gntdev {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Pages another domain granted, mapped into this process; unmapped on drop.
#[derive(Debug)]
pub struct Mapping<'d> {
    dev: &'d Gntdev,
    pages: Pages,
    index: u64,
    count: u32,
}

impl Mapping<'_> {
    /// The number of bytes mapped (4096 per reference).
    pub fn len(&self) -> usize {
        self.pages.len
    }

    /// Whether nothing is mapped (never: a mapping has at least one page).
    pub fn is_empty(&self) -> bool {
        self.pages.len == 0
    }

    /// The mapped pages, for atomic access: the granting domain may change them
    /// at any time. `None` for a read-only mapping (use
    /// [`read_only`](Self::read_only)).
    pub fn mem(&self) -> Option<SharedMem<'_>> {
        self.pages.mem()
    }

    /// The mapped pages, for atomic loads only (a read-only mapping, or a
    /// writable one read).
    pub fn read_only(&self) -> ReadOnlyMem<'_> {
        self.pages.read_only()
    }

    /// Copies `dst.len()` bytes at `offset` out of the mapping (read-only or not).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] if the bytes are outside the mapping.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), Error> {
        self.pages.read(offset, dst)
    }

    /// The address of the first byte (for `GET_OFFSET_FOR_VADDR`, or to tell
    /// mappings apart).
    pub fn address(&self) -> u64 {
        self.pages.address()
    }

    /// Asks Linux to clear a byte and/or signal an event channel when this
    /// mapping goes away, also when the process dies: how a backend tells its
    /// frontend it is gone. A byte to clear needs a writable mapping.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a byte outside the mapping; [`Error::Os`] with gntdev's
    /// `EINVAL` for a byte to clear in a read-only mapping or a port not bound through the
    /// evtchn device.
    pub fn notify_on_unmap(&self, notify: UnmapNotify) -> Result<(), Error> {
        set_unmap_notify(
            self.dev.fd.as_fd(),
            sys::IOCTL_GNTDEV_SET_UNMAP_NOTIFY,
            self.index,
            self.len(),
            notify,
        )
    }

    /// `GET_OFFSET_FOR_VADDR`: the device offset and page count gntdev
    /// records for the mapping at `address`.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] with gntdev's `EINVAL` if no gntdev mapping of this process covers
    /// `address`.
    pub fn offset_for_address(&self, address: u64) -> Result<(u64, u32), Error> {
        let mut arg = sys::GetOffsetForVaddr {
            vaddr: address,
            ..Default::default()
        };
        // SAFETY: GET_OFFSET_FOR_VADDR reads and writes one
        // `ioctl_gntdev_get_offset_for_vaddr` (24 bytes); it only looks up
        // the mapping.
        unsafe {
            sys::ioctl(
                self.dev.fd.as_fd(),
                sys::IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR,
                &mut arg,
            )
        }
        .map_err(|errno| Error::Os {
            operation: "IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR",
            errno: os_errno(errno),
        })?;
        Ok((arg.offset, arg.count))
    }

    /// Unmaps now, reporting a failure of the final `UNMAP_GRANT_REF`
    /// (dropping does the same and counts a failure in [`Gntdev::leaked`]).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if the final `UNMAP_GRANT_REF` fails (the mapping itself is gone).
    pub fn unmap(self) -> Result<(), Error> {
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used again; its pages are dropped once, here.
        let pages = unsafe { core::ptr::read(&this.pages) };
        drop(pages);
        this.dev.unmap_index(this.index, this.count)
    }
}

impl Drop for Mapping<'_> {
    fn drop(&mut self) {
        // `self.pages` is unmapped after this, by its own Drop; gntdev keeps
        // the grant map until both the munmap and UNMAP_GRANT_REF happened.
        let released = self.dev.unmap_index(self.index, self.count);
        self.dev.leaks.count(released);
    }
}

/// Where a [`CopySegment`] reads.
#[derive(Debug)]
pub enum CopySource<'a> {
    /// This process's memory.
    Local(&'a [u8]),
    /// Byte `offset` of the page `domid` granted with `gref`.
    Grant {
        /// The granting domain.
        domid: DomId,
        /// Its reference.
        gref: GrantRef,
        /// The byte offset in the page.
        offset: u16,
    },
}

/// Where a [`CopySegment`] writes.
#[derive(Debug)]
pub enum CopyDest<'a> {
    /// This process's memory.
    Local(&'a mut [u8]),
    /// Byte `offset` of the page `domid` granted with `gref`.
    Grant {
        /// The granting domain.
        domid: DomId,
        /// Its reference.
        gref: GrantRef,
        /// The byte offset in the page.
        offset: u16,
    },
}

/// One grant copy of `len` bytes. A granted side's offset plus `len` must
/// stay within its page; a local side must hold at least `len` bytes.
#[derive(Debug)]
pub struct CopySegment<'a> {
    /// Where the bytes come from.
    pub source: CopySource<'a>,
    /// Where they go.
    pub dest: CopyDest<'a>,
    /// How many bytes (at most a page).
    pub len: u16,
}

/// `{u32 ref; u16 offset; u16 domid}` as the union's 8 bytes.
fn foreign(domid: DomId, gref: GrantRef, offset: u16, len: u16) -> Result<u64, Error> {
    if usize::from(offset) + usize::from(len) > PAGE_SIZE {
        return Err(Error::InvalidInput(
            "a grant copy may not cross the end of a granted page",
        ));
    }
    Ok(u64::from(gref.0) | u64::from(offset) << 32 | u64::from(domid.0) << 48)
}

impl CopySegment<'_> {
    fn raw(&mut self) -> Result<sys::CopySegment, Error> {
        const SOURCE_GREF: u16 = xen_sys::GNTCOPY_source_gref as u16;
        const DEST_GREF: u16 = xen_sys::GNTCOPY_dest_gref as u16;
        let len = self.len;
        let short = Error::InvalidInput("a local buffer is shorter than the copy");
        let mut flags = 0;
        let source = match &self.source {
            CopySource::Local(bytes) if bytes.len() >= usize::from(len) => bytes.as_ptr() as u64,
            CopySource::Local(_) => return Err(short),
            CopySource::Grant {
                domid,
                gref,
                offset,
            } => {
                flags |= SOURCE_GREF;
                foreign(*domid, *gref, *offset, len)?
            }
        };
        let dest = match &mut self.dest {
            CopyDest::Local(bytes) if bytes.len() >= usize::from(len) => bytes.as_mut_ptr() as u64,
            CopyDest::Local(_) => return Err(short),
            CopyDest::Grant {
                domid,
                gref,
                offset,
            } => {
                flags |= DEST_GREF;
                foreign(*domid, *gref, *offset, len)?
            }
        };
        Ok(sys::CopySegment {
            source,
            dest,
            len,
            flags,
            status: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that answers every ioctl with `ENOTTY`, as current gntdev
    /// does for `SET_MAX_GRANTS`.
    fn without_ioctls() -> Gntdev {
        Gntdev {
            fd: std::fs::File::open("/dev/null").unwrap().into(),
            leaks: Leaks::default(),
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri runs no ioctl")]
    fn set_max_grants_on_a_kernel_without_it_succeeds() {
        assert_eq!(without_ioctls().set_max_grants(64), Ok(()));
    }
}
