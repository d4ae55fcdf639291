//! Pages granted to the peer: a device's ring, or the buffers of a request.

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::Ordering;

use xen_grant::{Grant, GrantPage, GrantRef, GrantTable};
use xen_hypercall::{DomId, XenHypercall};
use xen_shared::{AccessError, PAGE_SIZE, RingMemory, SharedMem};

use crate::Error;

/// [`GrantedPages::grant`] failed: why, and the pages back (but for any the peer mapped
/// before it was told of them: those stay granted, leaked, as a dropped [`Grant`] does).
pub struct GrantRefused<P> {
    /// Why.
    pub error: Error,
    /// The pages.
    pub pages: Vec<P>,
}

impl<P> fmt::Debug for GrantRefused<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantRefused")
            .field("error", &self.error)
            .field("pages", &self.pages.len())
            .finish()
    }
}

/// A page a driver shares with its peer: one it may grant ([`GrantPage`]) and reach through a
/// [`SharedMem`] view (the only way this program touches it, as `GrantPage` requires).
pub trait DevicePage: GrantPage {
    /// A view of the whole page ([`PAGE_SIZE`] bytes; a shorter view makes accesses beyond it
    /// fail with [`AccessError`], nothing worse).
    fn mem(&self) -> SharedMem<'_>;
}

/// Pages granted to one peer, in order: the memory of a shared ring (a [`RingMemory`] spanning
/// them, for `xen-shared`'s rings) or the data pages of a request.
///
/// [`end`](Self::end) ends the grants, refusing while the peer still has a page mapped (the
/// grant table's `GTF_reading`/`GTF_writing`); dropped with a page still mapped, that page and
/// its reference are leaked rather than reused (see [`Grant`]).
pub struct GrantedPages<'t, H: XenHypercall<Error = xen_hypercall::Error>, P: DevicePage> {
    grants: Vec<Grant<'t, H, P>>,
}

impl<'t, H: XenHypercall<Error = xen_hypercall::Error>, P: DevicePage> GrantedPages<'t, H, P> {
    /// Grants `peer` access to each of `pages` (read-only if `readonly`). If one grant fails,
    /// those made are ended (the peer cannot know them yet) and the pages given back.
    ///
    /// # Errors
    ///
    /// [`GrantRefused`] with the grant table's error ([`Error::Grant`], e.g. no free reference)
    /// and every page given back.
    pub fn grant(
        table: &'t GrantTable<H>,
        peer: DomId,
        pages: impl IntoIterator<Item = P>,
        readonly: bool,
    ) -> Result<Self, GrantRefused<P>> {
        let mut grants = Vec::new();
        let mut pages = pages.into_iter();
        while let Some(page) = pages.next() {
            match table.grant_access(peer, page, readonly) {
                Ok(grant) => grants.push(grant),
                Err(refused) => {
                    let mut back: Vec<P> = Self { grants }.end().unwrap_or_default();
                    back.push(refused.page);
                    back.extend(pages);
                    return Err(GrantRefused {
                        error: Error::Grant(refused.error),
                        pages: back,
                    });
                }
            }
        }
        Ok(Self { grants })
    }

    /// No pages.
    pub fn empty() -> Self {
        Self { grants: Vec::new() }
    }

    /// Moves the last `count` pages (with their grants) out into a set of their own: to lend
    /// pages granted once (persistently) to one request. `None` if there are fewer.
    pub fn take_last(&mut self, count: usize) -> Option<Self> {
        let at = self.grants.len().checked_sub(count)?;
        Some(Self {
            grants: self.grants.split_off(at),
        })
    }

    /// Moves every page of `other` (with its grant) to the end of these.
    pub fn append(&mut self, other: &mut Self) {
        self.grants.append(&mut other.grants);
    }

    /// How many pages.
    pub fn len(&self) -> usize {
        self.grants.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// The references, in page order (to publish, or to put in a request).
    pub fn refs(&self) -> impl ExactSizeIterator<Item = GrantRef> + '_ {
        self.grants.iter().map(Grant::gref)
    }

    /// The `index`-th page.
    pub fn page(&self, index: usize) -> Option<&P> {
        self.grants.get(index).map(Grant::page)
    }

    /// Whether the peer has any of the pages mapped (or is copying one).
    pub fn in_use(&self) -> bool {
        self.grants.iter().any(Grant::in_use)
    }

    /// Ends every grant and gives the pages back; if the peer still has some mapped, ends the
    /// others (their pages are dropped) and gives back those still granted.
    ///
    /// # Errors
    ///
    /// `self`, holding the pages the peer still has mapped (the others are ended and dropped).
    pub fn end(mut self) -> Result<Vec<P>, Self> {
        let pages = self.end_unmapped();
        if self.is_empty() {
            Ok(pages)
        } else {
            Err(self)
        }
    }

    /// Ends the grant of every page the peer no longer maps and gives those pages back; the
    /// others stay here, granted (call again once the peer unmapped them).
    pub fn end_unmapped(&mut self) -> Vec<P> {
        let mut pages = Vec::new();
        for grant in core::mem::take(&mut self.grants) {
            match grant.end() {
                Ok(page) => pages.push(page),
                Err(still) => self.grants.push(still.0),
            }
        }
        pages
    }

    /// The page holding byte `offset` of the span, and the offset in it.
    fn locate(&self, offset: usize) -> Result<(SharedMem<'_>, usize), AccessError> {
        let page = self
            .grants
            .get(offset / PAGE_SIZE)
            .ok_or(AccessError::OutOfBounds {
                offset,
                len: 0,
                size: self.len() * PAGE_SIZE,
            })?;
        Ok((page.page().mem(), offset % PAGE_SIZE))
    }

    /// Calls `f(page, offset in page, range of the buffer)` for each page piece of
    /// `offset..offset + len`.
    fn pieces(
        &self,
        offset: usize,
        len: usize,
        mut f: impl FnMut(SharedMem<'_>, usize, core::ops::Range<usize>) -> Result<(), AccessError>,
    ) -> Result<(), AccessError> {
        let size = self.len() * PAGE_SIZE;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(AccessError::OutOfBounds { offset, len, size });
        }
        let mut done = 0;
        while done < len {
            let (mem, at) = self.locate(offset + done)?;
            let n = (PAGE_SIZE - at).min(len - done);
            f(mem, at, done..done + n)?;
            done += n;
        }
        Ok(())
    }
}

/// The pages as one span of `len() * PAGE_SIZE` bytes; an access crossing a page boundary is
/// split (the ring's entries need not divide a page). Indices are 4-byte aligned, so never split.
impl<H: XenHypercall<Error = xen_hypercall::Error>, P: DevicePage> RingMemory
    for GrantedPages<'_, H, P>
{
    fn len(&self) -> usize {
        self.grants.len() * PAGE_SIZE
    }

    fn load_index(&self, offset: usize, order: Ordering) -> Result<u32, AccessError> {
        let (mem, at) = self.locate(offset)?;
        mem.load_index(at, order)
    }

    fn store_index(&self, offset: usize, value: u32, order: Ordering) -> Result<(), AccessError> {
        let (mem, at) = self.locate(offset)?;
        mem.store_index(at, value, order)
    }

    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), AccessError> {
        self.pieces(offset, dst.len(), |mem, at, range| {
            mem.read(at, &mut dst[range])
        })
    }

    fn write(&self, offset: usize, src: &[u8]) -> Result<(), AccessError> {
        self.pieces(offset, src.len(), |mem, at, range| {
            mem.write(at, &src[range])
        })
    }
}

impl<H: XenHypercall<Error = xen_hypercall::Error>, P: DevicePage> fmt::Debug
    for GrantedPages<'_, H, P>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.refs()).finish()
    }
}
