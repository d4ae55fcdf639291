//! Grant table cases: this domain's table set up and mapped the guest kind's
//! way, entries written by `xen-grant`, and Xen using them: copies out of a
//! grant, a grant mapped by its own domain (which pins it, so ending the
//! access is refused until the unmap), and every refusal as a typed error.
//!
//! A dom0 guest grants to itself (domain 0): Xen checks the entry's domain
//! against the mapper's, so the entries' domid, frame and flags are all proven.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, Ordering};

use xen_grant::{CopyOp, CopyPtr, GrantPage, GrantRef, GrantStatus, GrantTable};
use xen_hypercall::Error;
use xen_hypercall::grant_table::{GrantHandle, MapFlags};
use xen_hypercall::prelude::*;

use crate::cases::{CaseResult, Fail, GuestReporter, fail};

// The runner expects these cases: `GUEST_GRANT_CASES` in tests/testbed/src/scenario.rs.

/// This domain's id: the freestanding guests boot as dom0.
const SELF_ID: DomId = DomId(0);

/// A page of this guest that it grants, copies into, or maps over.
#[repr(C, align(4096))]
struct Page([AtomicU8; 4096]);

impl Page {
    const fn new() -> Self {
        Self([const { AtomicU8::new(0) }; 4096])
    }

    fn address(&self) -> usize {
        self.0.as_ptr() as usize
    }

    fn fill(&self, seed: u8) {
        for (i, byte) in self.0.iter().enumerate() {
            byte.store(pattern(seed, i), Ordering::Relaxed);
        }
    }

    /// The first offset whose byte is not `pattern(seed, offset)`.
    fn mismatch(&self, seed: u8) -> Option<usize> {
        (0..4096).find(|&i| self.0[i].load(Ordering::Relaxed) != pattern(seed, i))
    }
}

fn pattern(seed: u8, offset: usize) -> u8 {
    (offset as u8).wrapping_mul(7).wrapping_add(seed)
}

/// Where the table's frame 0 is mapped.
static TABLE_SLOT: Page = Page::new();
/// Granted pages.
static GRANTED: Page = Page::new();
static GRANTED_RO: Page = Page::new();
/// Copies land here.
static LOCAL: Page = Page::new();
/// A grant of ours is mapped over this page (which is a hole afterwards: never
/// used again). On PVH the granted page's own gfn becomes a hole too: Xen keeps
/// one gfn per frame, so `GRANTED` is not read after the mapping.
static MAP_SLOT: Page = Page::new();

/// How this guest kind names its pages to Xen and maps its table.
trait GuestMemory {
    /// The frame number Xen knows for the page at `address`.
    fn frame(&self, address: usize) -> u64;

    /// Maps grant table frame 0 over `TABLE_SLOT`.
    ///
    /// # Safety
    ///
    /// `TABLE_SLOT` is used afterwards only as the grant table.
    unsafe fn map_table<H: XenHypercall<Error = Error>>(&self, h: &H) -> Result<(), Error>;
}

/// A static page of this guest, granted.
struct Static<'m, M> {
    page: &'static Page,
    memory: &'m M,
}

// SAFETY: `Page` is a static (always allocated) of atomics, accessed only
// atomically; `frame` is how this guest kind names it to Xen.
unsafe impl<M: GuestMemory> GrantPage for Static<'_, M> {
    fn frame(&self) -> u64 {
        self.memory.frame(self.page.address())
    }
}

/// PV: machine frames. The image is mapped from virtual address 0 (VIRT_BASE
/// 0), so the page at `va` is pfn `va >> 12`, and start_info's `mfn_list`
/// turns pfns into machine frames.
#[cfg(feature = "pv")]
pub(crate) struct Pv {
    mfn_list: *const u64,
}

#[cfg(feature = "pv")]
impl Pv {
    /// # Safety
    ///
    /// `mfn_list` is start_info's `mfn_list`: a mapped array of the domain's
    /// machine frames, indexed by pfn, covering this image.
    pub(crate) unsafe fn new(mfn_list: u64) -> Self {
        Self {
            mfn_list: mfn_list as *const u64,
        }
    }
}

#[cfg(feature = "pv")]
impl GuestMemory for Pv {
    fn frame(&self, address: usize) -> u64 {
        // SAFETY: the pfn of a page of this image is within `mfn_list`, which
        // Xen maps read-only for the domain's life (`Pv::new`).
        unsafe { self.mfn_list.wrapping_add(address >> 12).read_volatile() }
    }

    unsafe fn map_table<H: XenHypercall<Error = Error>>(&self, h: &H) -> Result<(), Error> {
        /// PTE bits: present, writable, user (64-bit PV kernels), accessed, dirty.
        const PTE_FLAGS: u64 = 0x1 | 0x2 | 0x4 | 0x20 | 0x40;
        let mut frames = [0u64; 1];
        h.gnttab_setup_table(DomId::SELF, &mut frames)?;
        let va = TABLE_SLOT.address();
        // SAFETY: update_va_mapping(va, pte, UVMF_INVLPG) (public/xen.h)
        // replaces the PTE of `va`, a static page used afterwards only as the
        // grant table (the caller's contract), with a writable mapping of the
        // table's frame 0, which Xen lets the domain map.
        unsafe {
            h.hypercall3(
                xen_sys::__HYPERVISOR_update_va_mapping as usize,
                [
                    va,
                    ((frames[0] << 12) | PTE_FLAGS) as usize,
                    xen_sys::UVMF_INVLPG as usize,
                ],
            )
        }?;
        Ok(())
    }
}

/// PVH and Arm: guest frames, identity-mapped; the table goes into the
/// physmap with `XENMEM_add_to_physmap`.
#[cfg(not(feature = "pv"))]
pub(crate) struct Translated;

#[cfg(not(feature = "pv"))]
impl GuestMemory for Translated {
    fn frame(&self, address: usize) -> u64 {
        address as u64 >> 12
    }

    unsafe fn map_table<H: XenHypercall<Error = Error>>(&self, h: &H) -> Result<(), Error> {
        // SAFETY: `TABLE_SLOT` is a static page used afterwards only as the
        // grant table (the caller's contract), accessed only through atomics.
        unsafe {
            GrantTable::map_into_physmap(h, xen_hypercall::Gfn(self.frame(TABLE_SLOT.address())), 1)
        }
        .map_err(|e| match e {
            xen_grant::Error::Xen(e) => e,
            _ => Error::InvalidInput("mapping the grant table"),
        })
    }
}

/// Checks `result` is Xen's grant status `expected`.
fn expect_status<T: core::fmt::Debug>(
    result: Result<T, Error>,
    expected: GrantStatus,
) -> CaseResult {
    match result {
        Err(Error::Grant(status)) if status == expected => Ok(()),
        other => fail!("expected {expected:?}, got {other:?}"),
    }
}

/// Checks `result` is a refused copy with status `expected`.
fn expect_copy(result: Result<(), xen_grant::Error>, expected: GrantStatus) -> CaseResult {
    match result {
        Err(xen_grant::Error::Copy { status, .. }) if status == expected => Ok(()),
        other => fail!("expected copy {expected:?}, got {other:?}"),
    }
}

fn grant_error(e: xen_grant::Error) -> Fail {
    Fail::new(format_args!("{e}"))
}

/// Runs the grant cases; `memory` says how this guest kind names and maps pages.
#[allow(private_bounds)]
pub(crate) fn run<H, M>(h: &H, r: &mut GuestReporter<'_, H>, memory: &M)
where
    H: XenHypercall<Error = Error> + Clone,
    M: GuestMemory,
{
    r.case(
        "grant_query_size",
        (|| {
            let size = h.gnttab_query_size(DomId::SELF)?;
            if size.frames == 0 || size.max_frames < size.frames {
                fail!("implausible size {size:?}");
            }
            let version = h.gnttab_get_version(DomId::SELF)?;
            if version != 1 {
                fail!("grant table version {version}");
            }
            Ok(())
        })(),
    );
    // SAFETY: `TABLE_SLOT` is used from here on only as the grant table.
    let mapped = unsafe { memory.map_table(h) };
    let table = mapped.map_err(Fail::from).and_then(|()| {
        let slot =
            NonNull::new(TABLE_SLOT.address() as *mut u8).ok_or(Fail::new(format_args!("null")))?;
        // SAFETY: table frame 0 is now mapped at `TABLE_SLOT` for the rest of
        // the program, which reaches it only through this table; this dom0 was
        // booted by Xen directly, so no toolstack entry grants anything.
        unsafe { GrantTable::new(h.clone(), slot, 1) }.map_err(grant_error)
    });
    let table = match table {
        Ok(table) => {
            r.case("grant_table_map", Ok::<(), Fail>(()));
            table
        }
        Err(e) => return r.case("grant_table_map", Err(e)),
    };
    let page = |page: &'static Page| Static { page, memory };

    r.case(
        "grant_allocator_skips_reserved",
        (|| {
            let a = table
                .grant_access(SELF_ID, page(&GRANTED), true)
                .map_err(|e| grant_error(e.error))?;
            let b = table
                .grant_access(SELF_ID, page(&GRANTED), true)
                .map_err(|e| grant_error(e.error))?;
            if a.gref() < GrantRef::FIRST_UNRESERVED || a.gref() == b.gref() {
                fail!("handed out {} and {}", a.gref(), b.gref());
            }
            Ok(())
        })(),
    );

    GRANTED.fill(0x31);
    let granted = match table.grant_access(SELF_ID, page(&GRANTED), false) {
        Ok(grant) => grant,
        Err(e) => return r.case("grant_copy_from_grant", Err(grant_error(e.error))),
    };
    let local = page(&LOCAL);
    let from = |gref, offset| CopyPtr::Grant {
        domid: SELF_ID,
        gref,
        offset,
    };
    r.case(
        "grant_copy_from_grant",
        (|| {
            table
                .copy(&[CopyOp {
                    source: from(granted.gref(), 0),
                    dest: CopyPtr::Page {
                        page: &local,
                        offset: 0,
                    },
                    len: 4096,
                }])
                .map_err(grant_error)?;
            if let Some(at) = LOCAL.mismatch(0x31) {
                fail!("byte {at} differs after the copy");
            }
            if granted.in_use() {
                fail!("a finished copy left the entry pinned");
            }
            Ok(())
        })(),
    );

    r.case(
        "grant_copy_refusals",
        (|| {
            let ro = table
                .grant_access(SELF_ID, page(&GRANTED_RO), true)
                .map_err(|e| grant_error(e.error))?;
            let into = |gref| CopyOp {
                source: CopyPtr::Page {
                    page: &local,
                    offset: 0,
                },
                dest: from(gref, 0),
                len: 16,
            };
            // Writing into a read-only grant; past the table; a free entry.
            expect_copy(table.copy(&[into(ro.gref())]), GrantStatus::GENERAL_ERROR)?;
            expect_copy(
                table.copy(&[into(GrantRef(table.entries()))]),
                GrantStatus::BAD_GNTREF,
            )?;
            expect_copy(
                table.copy(&[into(GrantRef(table.entries() - 1))]),
                GrantStatus::GENERAL_ERROR,
            )?;
            // Crossing the end of the granted page.
            let across = CopyOp {
                source: from(granted.gref(), 4000),
                dest: CopyPtr::Page {
                    page: &local,
                    offset: 0,
                },
                len: 200,
            };
            expect_copy(table.copy(&[across]), GrantStatus::BAD_COPY_ARG)
        })(),
    );

    let gref = granted.gref();
    r.case(
        "grant_self_map_pins_until_unmap",
        (|| {
            let host_addr = MAP_SLOT.address() as u64;
            // SAFETY: `MAP_SLOT` is replaced by the granted page (the same
            // frame as `GRANTED`), reached only through atomics, and after the
            // unmap never touched again.
            let mapped =
                unsafe { h.gnttab_map_grant_ref(SELF_ID, gref, host_addr, MapFlags::HOST_MAP) }?;
            if let Some(at) = MAP_SLOT.mismatch(0x31) {
                fail!("byte {at} of the mapping differs from the granted page");
            }
            MAP_SLOT.0[5].store(0xee, Ordering::Relaxed);
            // Read the granted frame back through Xen: on PVH the mapping moved
            // the frame away from `GRANTED`'s own gfn (Xen keeps one gfn per frame).
            table
                .copy(&[CopyOp {
                    source: from(gref, 5),
                    dest: CopyPtr::Page {
                        page: &local,
                        offset: 0,
                    },
                    len: 1,
                }])
                .map_err(grant_error)?;
            let seen = LOCAL.0[0].load(Ordering::Relaxed);
            if !granted.in_use() {
                fail!("the mapping did not pin the entry");
            }
            let granted = match granted.end() {
                Ok(_) => fail!("access ended while the page was mapped"),
                Err(still) => still.0,
            };
            // SAFETY: as above; `MAP_SLOT` is not used after this.
            unsafe { h.gnttab_unmap_grant_ref(host_addr, mapped.handle) }?;
            if seen != 0xee {
                fail!("a write through the mapping was not seen in the granted page ({seen:#x})");
            }
            granted.end().map_err(|e| Fail::new(format_args!("{e}")))?;
            Ok(())
        })(),
    );

    r.case(
        "grant_revoked_refused",
        (|| {
            expect_copy(
                table.copy(&[CopyOp {
                    source: from(gref, 0),
                    dest: CopyPtr::Page {
                        page: &local,
                        offset: 0,
                    },
                    len: 1,
                }]),
                GrantStatus::GENERAL_ERROR,
            )?;
            // SAFETY: the map is refused (the entry is free), so nothing is mapped.
            let map = unsafe {
                h.gnttab_map_grant_ref(SELF_ID, gref, MAP_SLOT.address() as u64, MapFlags::HOST_MAP)
            };
            expect_status(map, GrantStatus::GENERAL_ERROR)
        })(),
    );

    // SAFETY: there is no mapping with this handle: nothing is unmapped.
    let unmapped = unsafe { h.gnttab_unmap_grant_ref(0, GrantHandle(0x7777)) };
    r.case(
        "grant_unmap_bad_handle",
        expect_status(unmapped, GrantStatus::BAD_HANDLE),
    );
}
