//! The guest side: this domain's grant table, its entries, and the grants
//! made through it.
//!
//! A version-1 entry is 8 bytes: `{u16 flags; domid_t domid; u32 frame}`. Xen
//! updates `flags` and `domid` together with a 32-bit compare-and-exchange
//! (common/grant_table.c, `union grant_combo`), setting `GTF_reading` and
//! `GTF_writing` while another domain has the page mapped or is copying it.
//! This module does the same: the first word of an entry is one `AtomicU32`
//! (`flags | domid << 16` on these little-endian targets), the second the
//! frame. Entries are never reached through a reference to their layout.
//!
//! Which references are free is kept in the table itself, so no allocator is
//! needed: an entry whose word is 0 is free, and a reference is taken by
//! swapping 0 for `RESERVED` (`GTF_invalid`, domid `DOMID_INVALID`), which Xen
//! refuses to map or copy like any invalid entry.

use core::fmt;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};

use xen_hypercall::grant_table::GrantRef;
use xen_hypercall::prelude::*;
use xen_hypercall::{Gfn, MapSpace};

use crate::Error;

/// Bytes of a grant table frame (a Xen page).
pub const PAGE_SIZE: usize = 4096;
/// Version-1 entries per table frame.
pub const ENTRIES_PER_FRAME: u32 = (PAGE_SIZE / size_of::<xen_sys::grant_entry_v1>()) as u32;

const GTF_PERMIT_ACCESS: u32 = xen_sys::GTF_permit_access;
const GTF_READONLY: u32 = xen_sys::GTF_readonly;
/// The flags Xen sets while another domain uses the page.
const GTF_IN_USE: u32 = xen_sys::GTF_reading | xen_sys::GTF_writing;
/// The word of a reference that is taken but grants nothing.
const RESERVED: u32 = (xen_sys::DOMID_INVALID as u32) << 16;

const _: () = {
    use core::mem::offset_of;
    use xen_sys::grant_entry_v1 as e;
    assert!(size_of::<e>() == 8);
    assert!(offset_of!(e, flags) == 0 && offset_of!(e, domid) == 2 && offset_of!(e, frame) == 4);
    // `flags | domid << 16` is the first word only on little-endian targets.
    assert!(cfg!(target_endian = "little"));
};

/// A page that may be granted to another domain.
///
/// # Safety
///
/// An implementer promises that:
///
/// - [`frame`](Self::frame) is the number by which Xen knows one whole 4 KiB
///   page (a machine frame for a PV guest, a guest frame for HVM/PVH/Arm),
///   and it stays the same while the value lives;
/// - the page stays allocated to this domain while the value lives, and for
///   good if the value is leaked: a [`Grant`] that is `mem::forget`-ed (safe)
///   never ends the access, so a value that borrows its page must borrow it
///   for `'static` (a value that owns it, say through an `Arc`, leaks it);
/// - while the value lives, this program accesses the page only atomically or
///   volatilely (for example only through `xen-shared` views), never through a
///   reference to non-atomic data: another domain may write it at any time.
pub unsafe trait GrantPage {
    /// The page's frame number as Xen knows it.
    fn frame(&self) -> u64;
}

// SAFETY: a `'static` reference's page is never freed, and `P`'s other
// promises hold for as long as `P` does. (A shorter borrow would end, and its
// page could be freed, while a forgotten `Grant` still grants it.)
unsafe impl<P: GrantPage + ?Sized> GrantPage for &'static P {
    fn frame(&self) -> u64 {
        (**self).frame()
    }
}

/// This domain's (version-1) grant table, mapped into its address space.
///
/// Hands out grant references (never the toolstack's, below
/// [`GrantRef::FIRST_UNRESERVED`]) and writes their entries; every method
/// takes `&self`, so grants can be made and ended from several threads.
pub struct GrantTable<H> {
    h: H,
    /// The first word of entry 0; entry `r`'s words are `2r` and `2r + 1`.
    base: NonNull<AtomicU32>,
    entries: u32,
    /// Where the next search for a free reference starts.
    cursor: AtomicU32,
    /// Grants dropped while the peer still used them (see [`Grant`]).
    leaked: AtomicU32,
}

// SAFETY: the table is reached only through atomics, so sharing or sending
// the pointer between threads is as safe as sharing `H`.
unsafe impl<H: Send> Send for GrantTable<H> {}
// SAFETY: as above.
unsafe impl<H: Sync> Sync for GrantTable<H> {}

impl<H> fmt::Debug for GrantTable<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantTable")
            .field("base", &self.base)
            .field("entries", &self.entries)
            .field("leaked", &self.leaked)
            .finish_non_exhaustive()
    }
}

impl<H: XenHypercall<Error = xen_hypercall::Error>> GrantTable<H> {
    /// Maps grant table frames `0..nr_frames` of this domain at guest frames
    /// `first_gfn..first_gfn + nr_frames` (`XENMEM_add_to_physmap`,
    /// `XENMAPSPACE_grant_table`): how an HVM, PVH or Arm guest maps its table.
    /// Xen grows the table as needed. A PV guest instead calls
    /// `gnttab_setup_table` and maps the machine frames it returns.
    ///
    /// # Safety
    ///
    /// The caller guarantees the contract of `MemoryOps::add_to_physmap` for
    /// each of those guest frames: no Rust value lives there, and the pages
    /// are used afterwards only as a grant table (through [`GrantTable::new`]).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] if Xen refuses a frame (one beyond the domain's `max_grant_frames`, or
    /// `XENMEM_add_to_physmap` on a PV guest); the frames before it stay mapped.
    pub unsafe fn map_into_physmap(h: &H, first_gfn: Gfn, nr_frames: u32) -> Result<(), Error> {
        for index in 0..nr_frames {
            let gfn = Gfn(first_gfn.0 + u64::from(index));
            // SAFETY: the caller's contract covers every frame of the range.
            unsafe { h.add_to_physmap(DomId::SELF, MapSpace::GRANT_TABLE, index.into(), gfn)? };
        }
        Ok(())
    }

    /// The grant table whose frames `0..nr_frames` are mapped, in order and
    /// contiguously, at `table`.
    ///
    /// # Safety
    ///
    /// The caller guarantees that, while the returned value lives:
    ///
    /// - `table` is where this domain's grant table frames `0..nr_frames`
    ///   are mapped, readable and writable (on PV: the frames
    ///   `gnttab_setup_table` returned; on HVM/PVH/Arm: the guest frames given
    ///   to [`map_into_physmap`](Self::map_into_physmap));
    /// - no other code writes the entries from [`GrantRef::FIRST_UNRESERVED`]
    ///   up (only this value and Xen do), and no Rust reference covers the
    ///   table;
    /// - every entry this value did not write (the toolstack's reserved ones)
    ///   grants only memory that is accessed atomically or volatilely (the
    ///   console and xenstore rings), as [`GrantPage`] requires.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a frame count outside 1..=8388607 or a `table` not 4-byte
    /// aligned.
    pub unsafe fn new(h: H, table: NonNull<u8>, nr_frames: u32) -> Result<Self, Error> {
        let entries = nr_frames
            .checked_mul(ENTRIES_PER_FRAME)
            .filter(|&n| n > GrantRef::FIRST_UNRESERVED.0)
            .ok_or(Error::InvalidInput(
                "a grant table needs 1 to 8388607 frames",
            ))?;
        if !table.cast::<AtomicU32>().is_aligned() {
            return Err(Error::InvalidInput("a grant table must be 4-byte aligned"));
        }
        Ok(Self {
            h,
            base: table.cast(),
            entries,
            cursor: AtomicU32::new(GrantRef::FIRST_UNRESERVED.0),
            leaked: AtomicU32::new(0),
        })
    }

    /// The backend this table was made with.
    pub fn hypercall(&self) -> &H {
        &self.h
    }

    /// How many entries the table has (references `0..entries`).
    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// How many grants were dropped while the other domain still had their
    /// page mapped (or was copying it): each keeps its reference taken and its
    /// page for good (see [`Grant`]).
    pub fn leaked(&self) -> u32 {
        self.leaked.load(Ordering::Relaxed)
    }

    /// The two words of entry `gref`: `flags | domid << 16`, and the frame.
    fn words(&self, gref: GrantRef) -> (&AtomicU32, &AtomicU32) {
        // SAFETY:
        // - `base` is 4-byte aligned (checked in `new`) and the `entries * 8`
        //   bytes from it, `2 * entries` u32 words, are the mapped table
        //   (`new`'s contract);
        // - the table stays mapped while `self` lives, and is accessed only
        //   with atomics by this program and Xen (`new`'s contract), which
        //   `AtomicU32` (the layout of `u32`) allows through shared references.
        let words =
            unsafe { core::slice::from_raw_parts(self.base.as_ptr(), self.entries as usize * 2) };
        let index = gref.0 as usize * 2;
        (&words[index], &words[index + 1])
    }

    /// Takes a free reference (its word goes from 0 to `RESERVED`).
    fn take_ref(&self) -> Option<GrantRef> {
        let first = GrantRef::FIRST_UNRESERVED.0;
        let usable = self.entries - first;
        let start = self
            .cursor
            .load(Ordering::Relaxed)
            .clamp(first, self.entries - 1);
        for step in 0..usable {
            let gref = GrantRef(first + (start - first + step) % usable);
            let (word, _) = self.words(gref);
            if word
                .compare_exchange(0, RESERVED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                self.cursor.store(gref.0 + 1, Ordering::Relaxed);
                return Some(gref);
            }
        }
        None
    }

    /// Grants `domid` access to `page` (read-only if `readonly`), as
    /// `gnttab_grant_foreign_access`: the frame and domain are written first,
    /// then the flags, with release ordering.
    ///
    /// # Errors
    ///
    /// Each gives the page back: [`Error::NoFreeReference`] when no reference
    /// is free, [`Error::BadDomain`] when `domid` is not a domain (`DOMID_SELF`
    /// and the other reserved ids never match a mapper), and
    /// [`Error::FrameTooLarge`] when the frame does not fit a version-1 entry
    /// (32 bits).
    pub fn grant_access<P: GrantPage>(
        &self,
        domid: DomId,
        page: P,
        readonly: bool,
    ) -> Result<Grant<'_, H, P>, GrantAccessError<P>> {
        let refuse = |error, page| Err(GrantAccessError { error, page });
        if !domid.is_domain() {
            return refuse(Error::BadDomain(domid), page);
        }
        let Ok(frame) = u32::try_from(page.frame()) else {
            return refuse(Error::FrameTooLarge(page.frame()), page);
        };
        let Some(gref) = self.take_ref() else {
            return refuse(
                Error::NoFreeReference {
                    entries: self.entries,
                },
                page,
            );
        };
        let (word, frame_word) = self.words(gref);
        frame_word.store(frame, Ordering::Relaxed);
        let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
        // Release: Xen must see the frame before the flags that let it use it.
        word.store(flags | u32::from(domid.0) << 16, Ordering::Release);
        Ok(Grant {
            table: self,
            gref,
            page: ManuallyDrop::new(page),
        })
    }

    /// Whether another domain has the page of `gref` mapped, or is copying it
    /// (`GTF_reading`/`GTF_writing`).
    pub fn in_use(&self, gref: GrantRef) -> bool {
        gref.0 < self.entries && self.words(gref).0.load(Ordering::Acquire) & GTF_IN_USE != 0
    }

    /// Ends access through `gref` and frees the reference, unless another
    /// domain is using the page (`gnttab_end_foreign_access_ref`): the entry
    /// is cleared with one compare-and-exchange that fails if Xen has set
    /// `GTF_reading` or `GTF_writing` meanwhile.
    fn end(&self, gref: GrantRef) -> Result<(), Error> {
        let (word, _) = self.words(gref);
        let mut current = word.load(Ordering::Acquire);
        loop {
            if current & GTF_IN_USE != 0 {
                return Err(Error::StillInUse(gref));
            }
            match word.compare_exchange(current, 0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(now) => current = now,
            }
        }
    }

    /// Copies with `GNTTABOP_copy`, in batches of 16.
    ///
    /// # Errors
    ///
    /// The first copy Xen refused ([`Error::Copy`], its index in `ops`): the copies
    /// before it were done, and so may be the later ones of its batch (Xen tries every
    /// copy of a hypercall); no later batch is issued. [`Error::Xen`] if the hypercall
    /// itself fails.
    pub fn copy(&self, ops: &[CopyOp<'_>]) -> Result<(), Error> {
        const BATCH: usize = 16;
        for (chunk_index, chunk) in ops.chunks(BATCH).enumerate() {
            let mut batch = [CopyOp::EMPTY; BATCH];
            for (slot, op) in batch.iter_mut().zip(chunk) {
                *slot = op.raw();
            }
            let batch = &mut batch[..chunk.len()];
            // SAFETY: every destination is either a `GrantPage` (accessed only
            // atomically or volatilely, by its contract), a page granted by
            // this domain (a `GrantPage`, or a toolstack ring, by `new`'s
            // contract), or another domain's page.
            unsafe { self.h.gnttab_copy(batch)? };
            if let Some((i, op)) = batch
                .iter()
                .enumerate()
                .find(|(_, op)| !op.status().is_okay())
            {
                return Err(Error::Copy {
                    index: chunk_index * BATCH + i,
                    status: op.status(),
                });
            }
        }
        Ok(())
    }
}

/// One side of a [`CopyOp`]: a page another domain granted, or a page of ours.
#[derive(Clone, Copy)]
pub enum CopyPtr<'a> {
    /// Byte `offset` of the page `domid` granted with `gref`.
    Grant {
        /// The granting domain.
        domid: DomId,
        /// Its reference.
        gref: GrantRef,
        /// The byte offset in the page.
        offset: u16,
    },
    /// Byte `offset` of one of this domain's pages.
    Page {
        /// The page (shared memory: Xen writes it when it is the destination).
        page: &'a dyn GrantPage,
        /// The byte offset in the page.
        offset: u16,
    },
}

impl fmt::Debug for CopyPtr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Grant {
                domid,
                gref,
                offset,
            } => write!(f, "Grant({domid}, {gref}, +{offset})"),
            Self::Page { page, offset } => {
                write!(f, "Page(frame {:#x}, +{offset})", (*page).frame())
            }
        }
    }
}

impl CopyPtr<'_> {
    fn raw(&self) -> (xen_hypercall::grant_table::CopyPtr, bool) {
        use xen_hypercall::grant_table::CopyPtr as Raw;
        match *self {
            Self::Grant {
                domid,
                gref,
                offset,
            } => (Raw::gref(domid, gref, offset), true),
            Self::Page { page, offset } => (Raw::frame(page.frame(), offset), false),
        }
    }
}

/// One grant copy: `len` bytes from `source` to `dest`; each side's offset
/// plus `len` must stay within its page (else `GNTST_bad_copy_arg`).
#[derive(Clone, Copy, Debug)]
pub struct CopyOp<'a> {
    /// Where the bytes come from.
    pub source: CopyPtr<'a>,
    /// Where they go.
    pub dest: CopyPtr<'a>,
    /// How many bytes.
    pub len: u16,
}

impl CopyOp<'_> {
    const EMPTY: xen_hypercall::grant_table::GrantCopy = {
        let nothing = xen_hypercall::grant_table::CopyPtr::frame(0, 0);
        xen_hypercall::grant_table::GrantCopy::new(nothing, false, nothing, false, 0)
    };

    fn raw(&self) -> xen_hypercall::grant_table::GrantCopy {
        let (source, source_is_gref) = self.source.raw();
        let (dest, dest_is_gref) = self.dest.raw();
        xen_hypercall::grant_table::GrantCopy::new(
            source,
            source_is_gref,
            dest,
            dest_is_gref,
            self.len,
        )
    }
}

/// A page granted to another domain; ends the access when dropped.
///
/// Dropping it while the peer still has the page mapped cannot end the
/// access: the reference and the page are then leaked (never reused, never
/// freed), because the peer may still write the page, and counted in
/// [`GrantTable::leaked`]. Call [`end`](Self::end) to learn whether it worked
/// and keep the grant if it did not.
pub struct Grant<'t, H: XenHypercall<Error = xen_hypercall::Error>, P: GrantPage> {
    table: &'t GrantTable<H>,
    gref: GrantRef,
    page: ManuallyDrop<P>,
}

impl<'t, H: XenHypercall<Error = xen_hypercall::Error>, P: GrantPage> Grant<'t, H, P> {
    /// The reference to give the other domain.
    pub fn gref(&self) -> GrantRef {
        self.gref
    }

    /// The granted page.
    pub fn page(&self) -> &P {
        &self.page
    }

    /// Whether the other domain has the page mapped or is copying it now.
    pub fn in_use(&self) -> bool {
        self.table.in_use(self.gref)
    }

    /// Ends the access and gives the page back; while the other domain still
    /// has it mapped (or is copying it), fails with the grant unchanged.
    ///
    /// # Errors
    ///
    /// [`StillInUse`], holding the grant, still in force, while the other domain has the page
    /// mapped or is copying it.
    pub fn end(self) -> Result<P, StillInUse<'t, H, P>> {
        match self.table.end(self.gref) {
            Ok(()) => {
                let mut this = ManuallyDrop::new(self);
                // SAFETY: `this` is never used or dropped again, so the page is
                // taken out exactly once.
                Ok(unsafe { ManuallyDrop::take(&mut this.page) })
            }
            Err(_) => Err(StillInUse(self)),
        }
    }
}

impl<H: XenHypercall<Error = xen_hypercall::Error>, P: GrantPage> Drop for Grant<'_, H, P> {
    fn drop(&mut self) {
        if self.table.end(self.gref).is_ok() {
            // SAFETY: the access has ended and the page is not used again: it
            // is dropped exactly once, here.
            unsafe { ManuallyDrop::drop(&mut self.page) };
        } else {
            // The peer may still write the page: leak it, keep the reference
            // taken, and count it.
            self.table.leaked.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<H: XenHypercall<Error = xen_hypercall::Error>, P: GrantPage> fmt::Debug for Grant<'_, H, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("gref", &self.gref)
            .field("frame", &self.page.frame())
            .finish()
    }
}

/// [`Grant::end`] failed: the other domain still has the page mapped (or is
/// copying it). Holds the grant, still in force.
pub struct StillInUse<'t, H: XenHypercall<Error = xen_hypercall::Error>, P: GrantPage>(
    pub Grant<'t, H, P>,
);

impl<H: XenHypercall<Error = xen_hypercall::Error>, P: GrantPage> fmt::Debug
    for StillInUse<'_, H, P>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StillInUse").field(&self.0).finish()
    }
}

impl<H: XenHypercall<Error = xen_hypercall::Error>, P: GrantPage> fmt::Display
    for StillInUse<'_, H, P>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Error::StillInUse(self.0.gref).fmt(f)
    }
}

impl<H: XenHypercall<Error = xen_hypercall::Error>, P: GrantPage> core::error::Error
    for StillInUse<'_, H, P>
{
}

/// [`GrantTable::grant_access`] failed: why, and the page, given back.
pub struct GrantAccessError<P> {
    /// Why.
    pub error: Error,
    /// The page that was not granted.
    pub page: P,
}

impl<P> fmt::Debug for GrantAccessError<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantAccessError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<P> fmt::Display for GrantAccessError<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl<P> core::error::Error for GrantAccessError<P> {}
