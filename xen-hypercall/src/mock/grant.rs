//! The mock's grant tables (common/grant_table.c, version 1 only).
//!
//! Each domain's table lives in page-aligned frames the mock owns. Frame
//! numbers are the mock's own (see [`MockXen::register_page`](super::MockXen::register_page)):
//! a test "maps" its table by asking the mock for the address of the frames
//! `GNTTABOP_setup_table` hands out. Grant entries are read and
//! updated with 32-bit atomics on `{flags, domid}`, as Xen's `grant_combo`, and
//! a mapping pins its entry with `GTF_reading`/`GTF_writing` until unmapped.

use std::boxed::Box;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::vec::Vec;

use super::hypervisor::refuse;
use crate::grant_table::GrantStatus;
use crate::{Errno, Error};

/// Entries of a version-1 table per 4 KiB frame.
pub(super) const ENTRIES_PER_FRAME: u32 = 4096 / 8;
/// `INITIAL_NR_GRANT_FRAMES`: a new table's size.
const INITIAL_FRAMES: usize = 1;

const GTF_TYPE_MASK: u32 = xen_sys::GTF_type_mask;
const GTF_PERMIT_ACCESS: u32 = xen_sys::GTF_permit_access;
const GTF_READONLY: u32 = xen_sys::GTF_readonly;
const GTF_READING: u32 = xen_sys::GTF_reading;
const GTF_WRITING: u32 = xen_sys::GTF_writing;
const GTF_SUB_PAGE: u32 = xen_sys::GTF_sub_page;

/// One frame of a grant table: 512 `grant_entry_v1`s as `{flags | domid << 16, frame}` words.
#[repr(C, align(4096))]
pub(super) struct TableFrame([AtomicU32; 1024]);

impl TableFrame {
    fn new() -> Box<Self> {
        Box::new(Self([const { AtomicU32::new(0) }; 1024]))
    }

    /// The page's address, its provenance exposed for the test that maps it.
    fn address(&self) -> usize {
        core::ptr::from_ref(self).expose_provenance()
    }
}

impl core::fmt::Debug for TableFrame {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "TableFrame({:#x})", self.address())
    }
}

/// Pins on one entry: how many mappings read and write it, and by whom.
#[derive(Clone, Copy, Debug, Default)]
struct Pins {
    mapper: u16,
    readers: u32,
    writers: u32,
}

/// One mapping a domain made (`struct grant_mapping`).
#[derive(Clone, Copy, Debug)]
struct Mapping {
    dom: u16,
    gref: u32,
    readonly: bool,
    /// Where the caller asked for the page (`host_addr`).
    host_addr: u64,
    /// The granted frame.
    frame: u64,
}

/// A domain's grant table, and the mappings it made of others' grants.
#[derive(Debug)]
pub(super) struct Grants {
    frames: Vec<Box<TableFrame>>,
    max_frames: u32,
    /// Pins on this domain's entries, by reference.
    pins: BTreeMap<u32, Pins>,
    /// This domain's mappings, indexed by handle.
    maptrack: Vec<Option<Mapping>>,
}

impl Grants {
    pub(super) fn new(max_frames: u32) -> Self {
        Self {
            frames: (0..INITIAL_FRAMES).map(|_| TableFrame::new()).collect(),
            max_frames,
            pins: BTreeMap::new(),
            maptrack: Vec::new(),
        }
    }

    pub(super) fn nr_frames(&self) -> u32 {
        self.frames.len() as u32
    }

    pub(super) fn max_frames(&self) -> u32 {
        self.max_frames
    }

    /// Grows the table to `nr` frames (`gnttab_grow_table`); false past the maximum.
    pub(super) fn grow(&mut self, nr: u32) -> bool {
        if nr > self.max_frames {
            return false;
        }
        while self.frames.len() < nr as usize {
            self.frames.push(TableFrame::new());
        }
        true
    }

    /// The address of table frame `index`.
    pub(super) fn frame_address(&self, index: usize) -> Option<usize> {
        self.frames.get(index).map(|f| f.address())
    }

    fn entries(&self) -> u32 {
        self.nr_frames() * ENTRIES_PER_FRAME
    }

    /// The `{flags, domid}` word and the frame word of entry `gref`.
    fn entry(&self, gref: u32) -> Option<(&AtomicU32, &AtomicU32)> {
        let frame = self.frames.get((gref / ENTRIES_PER_FRAME) as usize)?;
        let word = (gref % ENTRIES_PER_FRAME) as usize * 2;
        Some((&frame.0[word], &frame.0[word + 1]))
    }

    /// `_set_status_v1`: checks that entry `gref` grants `to` access (for
    /// writing unless `readonly`) and sets `GTF_reading` (and `GTF_writing`).
    /// Returns the granted frame.
    fn pin(&mut self, gref: u32, to: u16, readonly: bool) -> Result<u64, GrantStatus> {
        if gref >= self.entries() {
            return Err(GrantStatus::BAD_GNTREF);
        }
        let pins = self.pins.get(&gref).copied().unwrap_or_default();
        let pinned = pins.readers + pins.writers > 0;
        if pinned && pins.mapper != to {
            return Err(GrantStatus::GENERAL_ERROR);
        }
        let (header, frame) = self.entry(gref).ok_or(GrantStatus::BAD_GNTREF)?;
        if !pinned || (!readonly && pins.writers == 0) {
            let mut current = header.load(Ordering::Acquire);
            // Xen retries a few times if the guest races the update.
            for _ in 0..5 {
                let flags = current & 0xffff;
                let domid = (current >> 16) as u16;
                if !pinned
                    && ((flags & (GTF_TYPE_MASK | GTF_SUB_PAGE)) != GTF_PERMIT_ACCESS
                        || domid != to)
                {
                    return Err(GrantStatus::GENERAL_ERROR);
                }
                if !readonly && flags & GTF_READONLY != 0 {
                    return Err(GrantStatus::GENERAL_ERROR);
                }
                let set = GTF_READING | if readonly { 0 } else { GTF_WRITING };
                match header.compare_exchange(
                    current,
                    current | set,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break,
                    Err(now) => current = now,
                }
            }
        }
        let frame = u64::from(frame.load(Ordering::Acquire));
        let pins = self.pins.entry(gref).or_default();
        pins.mapper = to;
        if readonly {
            pins.readers += 1;
        } else {
            pins.writers += 1;
        }
        Ok(frame)
    }

    /// Drops one pin of entry `gref`, clearing the flags no pin needs any more.
    fn unpin(&mut self, gref: u32, readonly: bool) {
        let Some(pins) = self.pins.get_mut(&gref) else {
            return;
        };
        if readonly {
            pins.readers = pins.readers.saturating_sub(1);
        } else {
            pins.writers = pins.writers.saturating_sub(1);
        }
        let mut clear = 0;
        if pins.writers == 0 {
            clear |= GTF_WRITING;
        }
        if pins.readers + pins.writers == 0 {
            clear |= GTF_READING;
            self.pins.remove(&gref);
        }
        if let Some((header, _)) = self.entry(gref) {
            header.fetch_and(!clear, Ordering::AcqRel);
        }
    }

    /// The frame this domain mapped at `host_addr` (the latest mapping there).
    pub(super) fn mapped_at(&self, host_addr: u64) -> Option<u64> {
        self.maptrack
            .iter()
            .rev()
            .flatten()
            .find(|m| m.host_addr == host_addr)
            .map(|m| m.frame)
    }

    fn new_handle(&mut self, mapping: Mapping) -> u32 {
        match self.maptrack.iter().position(Option::is_none) {
            Some(handle) => {
                self.maptrack[handle] = Some(mapping);
                handle as u32
            }
            None => {
                self.maptrack.push(Some(mapping));
                (self.maptrack.len() - 1) as u32
            }
        }
    }
}

/// What the mock's grant table sub-ops need of the hypervisor: the domains'
/// tables, and where its frames are.
pub(super) trait GrantDomains {
    /// The table of domain `id`, if it exists.
    fn grants_mut(&mut self, id: u16) -> Option<&mut Grants>;

    /// The address of frame `frame`, if the mock knows it.
    fn frame_address(&self, frame: u64) -> Option<usize>;
}

/// `GNTTABOP_map_grant_ref` by domain `caller` of `dom`'s `gref` at
/// `host_addr`: the handle and the granted frame's address (`dev_bus_addr`).
pub(super) fn map(
    xen: &mut impl GrantDomains,
    caller: u16,
    dom: u16,
    gref: u32,
    flags: u32,
    host_addr: u64,
) -> Result<(u32, u64), GrantStatus> {
    if flags & (xen_sys::GNTMAP_host_map | xen_sys::GNTMAP_device_map) == 0 {
        return Err(GrantStatus::BAD_GNTREF);
    }
    let readonly = flags & xen_sys::GNTMAP_readonly != 0;
    let remote = xen.grants_mut(dom).ok_or(GrantStatus::BAD_DOMAIN)?;
    let frame = remote.pin(gref, caller, readonly)?;
    let local = xen.grants_mut(caller).ok_or(GrantStatus::BAD_DOMAIN)?;
    let handle = local.new_handle(Mapping {
        dom,
        gref,
        readonly,
        host_addr,
        frame,
    });
    Ok((handle, frame << 12))
}

/// `GNTTABOP_unmap_grant_ref` by `caller` of its mapping `handle` at
/// `host_addr`: an address where the handle's page is not mapped is refused
/// (`replace_grant_host_mapping` finds another page there) and the mapping stays.
pub(super) fn unmap(
    xen: &mut impl GrantDomains,
    caller: u16,
    handle: u32,
    host_addr: u64,
) -> Result<(), GrantStatus> {
    let local = xen.grants_mut(caller).ok_or(GrantStatus::BAD_DOMAIN)?;
    let slot = local
        .maptrack
        .get_mut(handle as usize)
        .filter(|slot| slot.is_some())
        .ok_or(GrantStatus::BAD_HANDLE)?;
    if slot.is_some_and(|m| host_addr != 0 && m.host_addr != host_addr) {
        return Err(GrantStatus::GENERAL_ERROR);
    }
    let mapping = slot.take().ok_or(GrantStatus::BAD_HANDLE)?;
    if let Some(remote) = xen.grants_mut(mapping.dom) {
        remote.unpin(mapping.gref, mapping.readonly);
    }
    Ok(())
}

/// One side of a copy, resolved: the address of the page and whether a grant was pinned.
struct Side {
    addr: usize,
    pinned: Option<(u16, u32, bool)>,
}

/// Resolves one side of a `GNTTABOP_copy` for `caller` (`gnttab_copy_claim_buf`).
fn claim(
    xen: &mut impl GrantDomains,
    caller: u16,
    domid: u16,
    target: u64,
    is_gref: bool,
    readonly: bool,
) -> Result<Side, GrantStatus> {
    // "Only DOMID_SELF may reference via frame."
    if !is_gref && domid != crate::DomId::SELF.0 {
        return Err(GrantStatus::PERMISSION_DENIED);
    }
    let dom = if domid == crate::DomId::SELF.0 {
        caller
    } else {
        domid
    };
    let grants = xen.grants_mut(dom).ok_or(GrantStatus::BAD_DOMAIN)?;
    let frame = if is_gref {
        let gref = target as u32;
        let frame = grants.pin(gref, caller, readonly)?;
        let Some(addr) = xen.frame_address(frame) else {
            grants_unpin(xen, dom, gref, readonly);
            return Err(GrantStatus::BAD_PAGE);
        };
        return Ok(Side {
            addr,
            pinned: Some((dom, gref, readonly)),
        });
    } else {
        target
    };
    // `get_paged_frame` of a frame the domain does not have: `GNTST_bad_page`.
    let addr = xen.frame_address(frame).ok_or(GrantStatus::BAD_PAGE)?;
    Ok(Side { addr, pinned: None })
}

fn grants_unpin(xen: &mut impl GrantDomains, dom: u16, gref: u32, readonly: bool) {
    if let Some(grants) = xen.grants_mut(dom) {
        grants.unpin(gref, readonly);
    }
}

fn release(xen: &mut impl GrantDomains, side: &Side) {
    if let Some((dom, gref, readonly)) = side.pinned {
        grants_unpin(xen, dom, gref, readonly);
    }
}

/// One `GNTTABOP_copy` operation by `caller`: resolves both sides, then
/// `copy(dest_addr, source_addr)` moves the bytes.
pub(super) fn copy_one(
    xen: &mut impl GrantDomains,
    caller: u16,
    op: &crate::grant_table::GrantCopy,
    copy: impl FnOnce(usize, usize) -> Result<(), Error>,
) -> Result<GrantStatus, Error> {
    let (s, d) = (op.source(), op.dest());
    let source = match claim(
        xen,
        caller,
        s.domid().0,
        s.target(),
        op.source_is_gref(),
        true,
    ) {
        Ok(side) => side,
        Err(status) => return Ok(status),
    };
    let dest = match claim(
        xen,
        caller,
        d.domid().0,
        d.target(),
        op.dest_is_gref(),
        false,
    ) {
        Ok(side) => side,
        Err(status) => {
            release(xen, &source);
            return Ok(status);
        }
    };
    let len = usize::from(op.len());
    let status = if usize::from(s.offset()) + len > 4096 || usize::from(d.offset()) + len > 4096 {
        GrantStatus::BAD_COPY_ARG
    } else {
        copy(
            dest.addr + usize::from(d.offset()),
            source.addr + usize::from(s.offset()),
        )?;
        GrantStatus::OKAY
    };
    release(xen, &source);
    release(xen, &dest);
    Ok(status)
}

/// `XENMEM_add_to_physmap` of `XENMAPSPACE_grant_table` frame `idx`: grows the
/// table to include it; `EINVAL` past the maximum or for a status frame
/// (version 1 has none).
pub(super) fn map_table_frame(grants: &mut Grants, idx: u64) -> Result<(), Error> {
    if idx & u64::from(xen_sys::XENMAPIDX_grant_table_status) != 0 {
        return Err(refuse(Errno::EINVAL));
    }
    let nr = u32::try_from(idx + 1).map_err(|_| refuse(Errno::EINVAL))?;
    if grants.grow(nr) {
        Ok(())
    } else {
        Err(refuse(Errno::EINVAL))
    }
}
