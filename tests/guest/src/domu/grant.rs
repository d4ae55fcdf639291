//! This domain's grant table, version 1 (`public/grant_table.h`): its size, its
//! set-up (PV), and granting and ending access to one of our pages.
//!
//! `grant_table_op` has no typed wrapper in xen-hypercall yet (the project's
//! grant crate will provide one): the calls here are raw `XenHypercall` calls
//! with xen-sys types. Test-kernel-local.

use core::mem::{offset_of, size_of};
use core::ptr;
use core::sync::atomic::{AtomicU16, Ordering};

use xen_hypercall::{DomId, Error, XenHypercall, XenMutBuffer};
use xen_sys::grant_entry_v1;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use super::DomuError;

/// `grant_table_op` with one `T` (IN/OUT, no pointer except where `T` holds one
/// that the caller made valid).
///
/// # Safety
///
/// `cmd` takes a `T` (grant_table.h), and every guest handle in `arg` points into a
/// live hypercall buffer of the right size that Xen may write.
unsafe fn grant_table_op<H, T>(h: &H, cmd: u32, arg: &mut T) -> Result<(), DomuError>
where
    H: XenHypercall<Error = Error>,
    T: FromBytes + IntoBytes,
{
    let mut buffer = h.make_mut_buffer(arg)?;
    let op = xen_sys::__HYPERVISOR_grant_table_op as usize;
    let uop = buffer.as_hypercall_ptr() as usize;
    // SAFETY: `uop` points at one `T` (count 1) in a live buffer Xen may read and
    // write; the caller vouches for `cmd` and the handles inside `T`.
    unsafe { h.hypercall3(op, [cmd as usize, uop, 1]) }?;
    // Dropping the buffer puts what Xen wrote into `arg`.
    drop(buffer);
    Ok(())
}

/// Turns a `GNTST_*` status into a result.
fn status(status: i16) -> Result<(), DomuError> {
    match status {
        0 => Ok(()),
        other => Err(DomuError::GrantStatus(other)),
    }
}

/// `GNTTABOP_query_size` for this domain: (frames in use, most frames allowed).
pub(crate) fn query_size<H: XenHypercall<Error = Error>>(h: &H) -> Result<(u32, u32), DomuError> {
    let mut arg = xen_sys::gnttab_query_size::new_zeroed();
    arg.dom = DomId::SELF.raw();
    // SAFETY: GNTTABOP_query_size takes a `gnttab_query_size_t`: IN `dom`; OUT
    // `nr_frames`, `max_nr_frames`, `status`. No pointer.
    unsafe { grant_table_op(h, xen_sys::GNTTABOP_query_size, &mut arg) }?;
    status(arg.status)?;
    Ok((arg.nr_frames, arg.max_nr_frames))
}

/// `GNTTABOP_setup_table` for this domain, one frame: the frame Xen returns (a
/// machine frame for a PV guest).
#[cfg(feature = "pv")]
pub(crate) fn setup_table<H: XenHypercall<Error = Error>>(h: &H) -> Result<u64, DomuError> {
    let mut frames: [xen_sys::xen_pfn_t; 1] = [0];
    let mut frames_buffer = h.make_mut_buffer(&mut frames)?;
    let mut arg = xen_sys::gnttab_setup_table::new_zeroed();
    arg.dom = DomId::SELF.raw();
    arg.nr_frames = 1;
    arg.frame_list = xen_sys::GuestHandle::from_mut_ptr(frames_buffer.as_hypercall_ptr().cast());
    // SAFETY: GNTTABOP_setup_table takes a `gnttab_setup_table_t`: IN `dom`,
    // `nr_frames`; OUT `status` and `nr_frames` entries of `frame_list`, which
    // points at a live buffer of one `xen_pfn_t`.
    unsafe { grant_table_op(h, xen_sys::GNTTABOP_setup_table, &mut arg) }?;
    // Dropping the buffer puts the frame Xen wrote into `frames`.
    drop(frames_buffer);
    status(arg.status)?;
    Ok(frames[0])
}

/// A grant reference into frame 0 of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GrantRef(pub(crate) u32);

/// Frame 0 of this domain's grant table (v1 entries), once mapped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GrantTable(*mut u8);

impl GrantTable {
    /// Entries in one frame.
    const ENTRIES: u32 = (4096 / size_of::<grant_entry_v1>()) as u32;

    /// # Safety
    ///
    /// `frame` is grant table frame 0 of this domain (version 1), mapped for reads
    /// and writes for the rest of the program and used by Rust only through this
    /// type.
    pub(crate) unsafe fn new(frame: *mut u8) -> Self {
        Self(frame)
    }

    fn entry(&self, gref: GrantRef) -> Result<*mut u8, DomuError> {
        if gref.0 >= Self::ENTRIES {
            return Err(DomuError::Unexpected("grant reference outside frame 0"));
        }
        Ok(self
            .0
            .wrapping_add(gref.0 as usize * size_of::<grant_entry_v1>()))
    }

    fn flags_of(&self, gref: GrantRef) -> Result<&AtomicU16, DomuError> {
        let at = self
            .entry(gref)?
            .wrapping_add(offset_of!(grant_entry_v1, flags));
        // SAFETY: `flags` is the 2-aligned first field of an entry inside the
        // mapped frame (`new`, `entry`), which Xen updates with atomic
        // compare-exchange: atomics are the right access.
        Ok(unsafe { AtomicU16::from_ptr(at.cast()) })
    }

    /// The entry's current `GTF_*` flags.
    pub(crate) fn flags(&self, gref: GrantRef) -> Result<u16, DomuError> {
        Ok(self.flags_of(gref)?.load(Ordering::Acquire))
    }

    /// Lets `domid` map `frame` read-write through `gref`, which must be unused.
    pub(crate) fn grant(&self, gref: GrantRef, domid: DomId, frame: u32) -> Result<(), DomuError> {
        let flags = self.flags_of(gref)?;
        let current = flags.load(Ordering::Acquire);
        if current != 0 {
            return Err(DomuError::GrantInUse(current));
        }
        let entry = self.entry(gref)?;
        // SAFETY: `domid` and `frame` are fields of the entry inside the mapped
        // frame; Xen reads them only once `flags` says the entry is valid, which
        // the release store below orders after these writes.
        unsafe {
            ptr::write_volatile(
                entry
                    .wrapping_add(offset_of!(grant_entry_v1, domid))
                    .cast::<u16>(),
                domid.raw(),
            );
        }
        // SAFETY: as above, for `frame` (4-aligned).
        unsafe {
            ptr::write_volatile(
                entry
                    .wrapping_add(offset_of!(grant_entry_v1, frame))
                    .cast::<u32>(),
                frame,
            );
        }
        flags.store(xen_sys::GTF_permit_access as u16, Ordering::Release);
        Ok(())
    }

    /// Ends access through `gref`: refused (`GrantInUse`) while the grantee has
    /// it mapped (`GTF_reading`/`GTF_writing`), else the entry is cleared
    /// atomically, so that a racing map fails.
    pub(crate) fn end_access(&self, gref: GrantRef) -> Result<(), DomuError> {
        let flags = self.flags_of(gref)?;
        let busy = (xen_sys::GTF_reading | xen_sys::GTF_writing) as u16;
        let mut current = flags.load(Ordering::Acquire);
        loop {
            if current & busy != 0 {
                return Err(DomuError::GrantInUse(current));
            }
            match flags.compare_exchange(current, 0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(seen) => current = seen,
            }
        }
    }
}
