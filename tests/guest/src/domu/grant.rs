//! This domain's grant table through xen-grant: its size, its set-up (PV), the
//! table over frame 0, and the page granted to dom0.

use core::ptr::NonNull;

use xen_grant::{GrantPage, GrantTable};
use xen_hypercall::prelude::*;
use xen_hypercall::{Error, XenHypercall};

use super::DomuError;

/// `GNTTABOP_query_size` for this domain: (frames in use, most frames allowed).
pub(crate) fn query_size<H: XenHypercall<Error = Error>>(h: &H) -> Result<(u32, u32), DomuError> {
    let size = h.gnttab_query_size(DomId::SELF)?;
    Ok((size.frames, size.max_frames))
}

/// `GNTTABOP_setup_table` for this domain, one frame: the frame Xen returns (a
/// machine frame for a PV guest).
#[cfg(feature = "pv")]
pub(crate) fn setup_table<H: XenHypercall<Error = Error>>(h: &H) -> Result<u64, DomuError> {
    let mut frames = [0u64; 1];
    h.gnttab_setup_table(DomId::SELF, &mut frames)?;
    Ok(frames[0])
}

/// The table whose frame 0 is mapped at `frame0`.
///
/// # Safety
///
/// `frame0` is grant table frame 0 of this domain (version 1), mapped for reads
/// and writes for the rest of the program and used only through the returned table.
pub(crate) unsafe fn table<H: XenHypercall<Error = Error>>(
    h: H,
    frame0: *mut u8,
) -> Result<GrantTable<H>, DomuError> {
    let frame0 = NonNull::new(frame0).ok_or(DomuError::Unexpected("grant table at null"))?;
    // SAFETY: the caller's contract; the toolstack's entries (0 and 1) grant
    // the console and xenstore rings, which this program reaches only through
    // volatile accesses.
    unsafe { GrantTable::new(h, frame0, 1) }.map_err(DomuError::Grant)
}

/// A static page of this program, reached only through volatile accesses, by
/// the frame number Xen knows it by.
#[derive(Debug)]
pub(crate) struct StaticPage {
    pub(crate) frame: u64,
}

// SAFETY: `frame` names a static page (always allocated) that this program
// reads and writes only with volatile accesses (the caller of `grant_access`
// gives the frame `Platform::frame_of` computed for it).
unsafe impl GrantPage for StaticPage {
    fn frame(&self) -> u64 {
        self.frame
    }
}
