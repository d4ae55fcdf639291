//! Another domain's memory mapped into this process: `IOCTL_PRIVCMD_MMAPBATCH_V2` (frames by
//! number) and `IOCTL_PRIVCMD_MMAP_RESOURCE` (a domain's resources: grant table frames, ioreq
//! pages, vmtrace buffers), on a mapping of the handle's own privcmd fd.
//!
//! The memory belongs to another domain, which may write it at any time: it is reachable only
//! through `xen_shared::SharedMem` views ([`ForeignMapping::page`], [`ForeignMapping::all`]), never
//! as `&`/`&mut`. A page Xen refused stays unmapped (touching it would be `SIGBUS`), so views
//! are only given of mapped pages. Dropping the mapping unmaps it.

use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::time::Duration;

use nix::errno::Errno as OsErrno;
use xen_hypercall::version::{Features, VersionOps};
use xen_hypercall::{DomId, Errno, Error};
use xen_shared::SharedMem;

use crate::Privcmd;
use crate::sys;

/// The Xen page size: Xen's frames are 4 KiB, and privcmd maps one per Linux page only when
/// Linux's pages are 4 KiB too.
const XEN_PAGE_SIZE: usize = 4096;

/// How often pages Xen reports paged out (`ENOENT`) are asked for again before their error is
/// returned, and the pause before each round (xenpaging brings a page back in milliseconds).
const PAGED_RETRIES: u32 = 100;
const PAGED_RETRY_PAUSE: Duration = Duration::from_millis(1);

/// A resource of a domain that `IOCTL_PRIVCMD_MMAP_RESOURCE` maps (`XENMEM_resource_*`,
/// `public/memory.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResourceType(pub u32);

impl ResourceType {
    /// `XENMEM_resource_ioreq_server`: an ioreq server's pages.
    pub const IOREQ_SERVER: Self = Self(xen_sys::XENMEM_resource_ioreq_server);
    /// `XENMEM_resource_grant_table`: the grant table; `id` 0 is the shared frames
    /// (`XENMEM_resource_grant_table_id_shared`), 1 the status frames.
    pub const GRANT_TABLE: Self = Self(xen_sys::XENMEM_resource_grant_table);
    /// `XENMEM_resource_vmtrace_buf`: a vCPU's processor trace buffer.
    pub const VMTRACE_BUF: Self = Self(xen_sys::XENMEM_resource_vmtrace_buf);
}

/// Pages of another domain mapped read-write into this process. Unmapped on drop.
///
/// Not `Clone`; `Send` and `Sync` (its views are atomic accesses).
#[derive(Debug)]
pub struct ForeignMapping {
    base: NonNull<u8>,
    /// Xen pages (4 KiB) in the mapping.
    pages: usize,
    /// Per page: `None` when mapped, else Xen's (or Linux's) refusal.
    errors: Vec<Option<Errno>>,
}

// SAFETY: the mapping is plain memory owned by this value; every access to it goes through
// `SharedMem` views (atomic byte accesses), which may be used from any thread.
unsafe impl Send for ForeignMapping {}
// SAFETY: as for `Send`: shared access only through atomic `SharedMem` views.
unsafe impl Sync for ForeignMapping {}

impl ForeignMapping {
    /// Reserves `pages` pages of address space on `privcmd`'s fd: a `privcmd` VMA that maps
    /// nothing until an ioctl fills it.
    fn reserve(privcmd: &Privcmd, pages: usize) -> Result<Self, Error> {
        if sys::page_size() != XEN_PAGE_SIZE {
            return Err(Error::Unsupported(
                "foreign mappings need 4 KiB Linux pages (one Xen frame per page)",
            ));
        }
        let len = pages
            .checked_mul(XEN_PAGE_SIZE)
            .filter(|&len| len > 0 && len <= isize::MAX as usize)
            .ok_or(Error::Xen(Errno::EINVAL))?;
        let base = sys::map_privcmd(privcmd.as_fd(), len).map_err(|errno| Error::Os {
            operation: "mmap of /dev/xen/privcmd",
            errno: Errno::from_raw(errno as i32),
        })?;
        Ok(Self {
            base,
            pages,
            errors: vec![None; pages],
        })
    }

    /// How many 4 KiB pages the mapping spans (mapped or not).
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Page `index`'s error: `None` when it is mapped.
    pub fn error(&self, index: usize) -> Option<Errno> {
        self.errors.get(index).copied().flatten()
    }

    /// Every page's error, in order: `None` for the mapped ones.
    pub fn errors(&self) -> &[Option<Errno>] {
        &self.errors
    }

    /// A view of page `index`.
    ///
    /// # Errors
    ///
    /// Why the page is not mapped (`ENOENT`: still paged out after the retries; `EINVAL`: no
    /// such frame; `EPERM`/`EACCES`: refused); `EINVAL` for an `index` out of range.
    pub fn page(&self, index: usize) -> Result<SharedMem<'_>, Errno> {
        match self.errors.get(index) {
            None => Err(Errno::EINVAL),
            Some(Some(error)) => Err(*error),
            Some(None) => {
                let ptr = self.base.as_ptr().wrapping_add(index * XEN_PAGE_SIZE);
                let ptr = NonNull::new(ptr).expect("inside a mapping, so not null");
                Ok(self.view(ptr, XEN_PAGE_SIZE))
            }
        }
    }

    /// A view of the whole mapping, when every page is mapped.
    pub fn all(&self) -> Option<SharedMem<'_>> {
        self.errors
            .iter()
            .all(Option::is_none)
            .then(|| self.view(self.base, self.pages * XEN_PAGE_SIZE))
    }

    /// The one place a view of the mapping is made.
    fn view(&self, ptr: NonNull<u8>, len: usize) -> SharedMem<'_> {
        // SAFETY:
        // - `ptr..ptr + len` lies in this mapping (callers: one page, or all of it) and every
        //   page in it is mapped read-write to a foreign frame (its error is `None`: privcmd
        //   installed the PTE, `xen_remap_domain_gfn_array` / `_mfn_array` in
        //   drivers/xen/privcmd.c); the mapping lives until `self` is dropped, which the
        //   borrow of `self` in the returned lifetime forbids while the view exists;
        // - this crate never makes a reference to the mapping's bytes: all accesses go through
        //   `SharedMem` views (atomic);
        // - `len <= pages * 4096 <= isize::MAX` (checked in `reserve`).
        unsafe { SharedMem::from_raw_parts(ptr, len) }
    }
}

impl Drop for ForeignMapping {
    fn drop(&mut self) {
        // SAFETY: `base` and the length are the whole mapping `reserve` made; no view outlives
        // `self` (each borrows it). Unmapping a privcmd VMA drops the foreign frames
        // (`privcmd_close` unmaps them on auto-translated domains; PV PTEs are zapped).
        unsafe { sys::unmap_privcmd(self.base, self.pages * XEN_PAGE_SIZE) };
    }
}

impl Privcmd {
    /// Maps `frames` of domain `domid` read-write, one page each, in order
    /// (`IOCTL_PRIVCMD_MMAPBATCH_V2`). For a PV domain the frames are machine frames, for an
    /// HVM, PVH or Arm domain guest frames.
    ///
    /// Pages Xen refuses stay unmapped and carry their error ([`ForeignMapping::page`]); the
    /// others are mapped. Pages reported paged out (`ENOENT`) are asked for again, at most
    /// 100 times (1 ms apart), on a dom0 that is not auto-translated (x86 PV); elsewhere
    /// Linux's retry path would map them over the first page's backing frame
    /// (`mmap_batch_fn` restarts its page index at 0), so their `ENOENT` is returned as is.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with `EINVAL` for no frames, [`Error::Restricted`] when this handle is
    /// restricted to another domain, [`Error::Os`] when Linux fails as a whole.
    #[doc(alias("IOCTL_PRIVCMD_MMAPBATCH_V2", "xenforeignmemory_map"))]
    pub fn map_foreign(&self, domid: DomId, frames: &[u64]) -> Result<ForeignMapping, Error> {
        let num = u32::try_from(frames.len())
            .ok()
            .filter(|&n| n > 0)
            .ok_or(Error::Xen(Errno::EINVAL))?;
        let mut mapping = ForeignMapping::reserve(self, frames.len())?;
        // One `int` per frame: the kernel clears and writes `num` of them (`clear_user(m.err,
        // sizeof(int) * m.num)`, privcmd.c).
        let mut errs = vec![0i32; frames.len()];
        let result = self.mmapbatch(domid, mapping.base, frames, &mut errs);
        match result {
            Ok(()) | Err(OsErrno::ENOENT) => {}
            Err(errno) => {
                return Err(self.mapping_error(errno, domid, "IOCTL_PRIVCMD_MMAPBATCH_V2"));
            }
        }
        if errs.contains(&-(OsErrno::ENOENT as i32)) && self.retries_paged() {
            self.retry_paged(domid, &mapping, frames, &mut errs);
        }
        debug_assert_eq!(errs.len(), num as usize);
        for (slot, err) in mapping.errors.iter_mut().zip(&errs) {
            *slot = (*err != 0).then(|| Errno::from_raw(err.saturating_neg()));
        }
        Ok(mapping)
    }

    /// Asks again, page by page, for the pages still paged out.
    fn retry_paged(
        &self,
        domid: DomId,
        mapping: &ForeignMapping,
        frames: &[u64],
        errs: &mut [i32],
    ) {
        let paged = -(OsErrno::ENOENT as i32);
        for _ in 0..PAGED_RETRIES {
            let mut any = false;
            for (index, err) in errs.iter_mut().enumerate().filter(|(_, e)| **e == paged) {
                let page = NonNull::new(mapping.base.as_ptr().wrapping_add(index * XEN_PAGE_SIZE))
                    .expect("inside a mapping, so not null");
                let mut one = [0i32];
                // The page is unmapped (it failed), which privcmd requires of a retry
                // (`privcmd_vma_range_is_mapped`).
                match self.mmapbatch(domid, page, &frames[index..=index], &mut one) {
                    Ok(()) | Err(OsErrno::ENOENT) => *err = one[0],
                    Err(errno) => *err = -(errno as i32),
                }
                any |= *err == paged;
            }
            if !any {
                return;
            }
            std::thread::sleep(PAGED_RETRY_PAUSE);
        }
    }

    /// Whether paged-out pages may be retried: only when this dom0 is not auto-translated
    /// (`XENFEAT_auto_translated_physmap`); unknown (a restricted handle) counts as not.
    fn retries_paged(&self) -> bool {
        self.feature_flags()
            .is_ok_and(|f| !f.contains(Features::AUTO_TRANSLATED_PHYSMAP))
    }

    /// One `IOCTL_PRIVCMD_MMAPBATCH_V2` of `frames` at `addr` (inside a mapping of this fd),
    /// with `errs` (one per frame) receiving each page's error.
    fn mmapbatch(
        &self,
        domid: DomId,
        addr: NonNull<u8>,
        frames: &[u64],
        errs: &mut [i32],
    ) -> Result<(), OsErrno> {
        assert_eq!(frames.len(), errs.len(), "one error slot per frame");
        let mut batch = sys::PrivcmdMmapBatchV2 {
            num: u32::try_from(frames.len()).map_err(|_| OsErrno::EINVAL)?,
            dom: domid.0,
            addr: addr.as_ptr() as u64,
            arr: frames.as_ptr() as u64,
            err: errs.as_mut_ptr() as u64,
        };
        // SAFETY:
        // - `self.fd` is an open privcmd fd;
        // - privcmd reads `num` frames from `arr` (`gather_array`): `frames` holds `num`;
        // - it clears then writes `num` ints at `err` (`clear_user(m.err, sizeof(int) * m.num)`,
        //   `mmap_return_error`): `errs` holds `num` ints and no reference to it is live;
        // - it maps only inside the privcmd VMA at `addr`, which it checks (`find_vma`,
        //   `vm_ops == &privcmd_vm_ops`, the range within `vm_start..vm_end`): `addr` lies in a
        //   mapping of this fd that this process owns (`ForeignMapping`), of which no view
        //   exists yet for the pages being mapped (they are unmapped: a whole fresh VMA, or
        //   pages that failed before).
        unsafe { sys::privcmd_mmapbatch_v2(self.fd.as_fd(), &mut batch) }
    }

    /// The number of frames of resource `kind`/`id` of domain `domid`
    /// (`IOCTL_PRIVCMD_MMAP_RESOURCE` with `num = 0, addr = 0`, which privcmd answers from
    /// `XENMEM_acquire_resource`'s size query).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with Xen's refusal (e.g. `EINVAL` for an unknown resource),
    /// [`Error::Restricted`] for another domain than this handle's restriction.
    pub fn resource_size(&self, domid: DomId, kind: ResourceType, id: u32) -> Result<u64, Error> {
        let mut resource = sys::PrivcmdMmapResource {
            dom: domid.0,
            pad: 0,
            kind: kind.0,
            id,
            idx: 0,
            num: 0,
            addr: 0,
        };
        // SAFETY: `self.fd` is an open privcmd fd; with `num == 0 && addr == 0` privcmd only
        // queries the size and writes it into `num` of the structure (`__put_user(
        // xdata.nr_frames, &udata->num)`), which points at a live local; nothing is mapped.
        unsafe { sys::privcmd_mmap_resource(self.fd.as_fd(), &mut resource) }
            .map_err(|errno| self.mapping_error(errno, domid, "IOCTL_PRIVCMD_MMAP_RESOURCE"))?;
        Ok(resource.num)
    }

    /// Maps frames `first..first + count` of resource `kind`/`id` of domain `domid` read-write
    /// (`IOCTL_PRIVCMD_MMAP_RESOURCE`); [`resource_size`](Self::resource_size) tells how many
    /// there are. All or nothing: on success every page is mapped.
    ///
    /// # Errors
    ///
    /// As [`resource_size`](Self::resource_size); `EINVAL` for `count == 0`.
    #[doc(alias("IOCTL_PRIVCMD_MMAP_RESOURCE", "xenforeignmemory_map_resource"))]
    pub fn map_resource(
        &self,
        domid: DomId,
        kind: ResourceType,
        id: u32,
        first: u32,
        count: u32,
    ) -> Result<ForeignMapping, Error> {
        if count == 0 {
            return Err(Error::Xen(Errno::EINVAL));
        }
        let mapping = ForeignMapping::reserve(self, count as usize)?;
        let mut resource = sys::PrivcmdMmapResource {
            dom: domid.0,
            pad: 0,
            kind: kind.0,
            id,
            idx: first,
            num: u64::from(count),
            addr: mapping.base.as_ptr() as u64,
        };
        // SAFETY:
        // - `self.fd` is an open privcmd fd; the structure is a live local privcmd reads;
        // - privcmd maps `num` frames at `addr` inside the privcmd VMA it finds there
        //   (`find_vma`, `vm_ops == &privcmd_vm_ops`): the fresh mapping of exactly `count`
        //   pages just made on this fd, owned by `mapping`, with no view yet. (privcmd checks
        //   neither the VMA's start nor its end here: mapping exactly `count` pages at its start
        //   is what keeps the remap inside it.)
        unsafe { sys::privcmd_mmap_resource(self.fd.as_fd(), &mut resource) }
            .map_err(|errno| self.mapping_error(errno, domid, "IOCTL_PRIVCMD_MMAP_RESOURCE"))?;
        Ok(mapping)
    }

    /// The error of a mapping ioctl that failed as a whole: the restriction's `EPERM`, Xen's
    /// code (privcmd passes Xen's through, and they are Linux's), or Linux's own.
    fn mapping_error(&self, errno: OsErrno, domid: DomId, operation: &'static str) -> Error {
        match (errno, self.restricted_to()) {
            (OsErrno::EPERM, Some(restricted)) if restricted != domid => Error::Restricted {
                domid: restricted.0,
            },
            _ if Errno::from_raw(errno as i32).name().is_some() => {
                Error::Xen(Errno::from_raw(errno as i32))
            }
            _ => Error::Os {
                operation,
                errno: Errno::from_raw(errno as i32),
            },
        }
    }
}
