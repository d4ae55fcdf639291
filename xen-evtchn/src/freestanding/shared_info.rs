//! The event-channel half of the shared info page (2-level ABI), which Xen
//! writes at any time: reached only through atomics, never through a
//! reference to its layout.

use core::mem::offset_of;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use xen_hypercall::Port;
use xen_sys::{shared_info, vcpu_info};

use crate::Error;

/// Bits of one `xen_ulong_t` word of the 2-level bitmaps (64 on x86_64 and arm).
pub(crate) const WORD_BITS: u32 = u64::BITS;
/// Words of `evtchn_pending` and `evtchn_mask`.
pub(crate) const WORDS: usize = 64;
/// Ports of the 2-level ABI on a 64-bit guest (`EVTCHN_2L_NR_CHANNELS`).
pub const PORTS: u32 = WORD_BITS * WORDS as u32;

const _: () = {
    assert!(size_of::<xen_sys::xen_ulong_t>() == size_of::<u64>());
    assert!(size_of::<[xen_sys::xen_ulong_t; WORDS]>() == size_of::<[u64; 64]>());
    // The page layout this module relies on (public/xen.h).
    assert!(offset_of!(shared_info, evtchn_pending) % 8 == 0);
    assert!(offset_of!(shared_info, evtchn_mask) % 8 == 0);
    assert!(offset_of!(shared_info, evtchn_mask) + WORDS * 8 <= 4096);
    assert!(offset_of!(vcpu_info, evtchn_pending_sel) % 8 == 0);
};

/// Offsets of vCPU 0's fields and of the bitmaps in the page.
const UPCALL_PENDING: usize =
    offset_of!(shared_info, vcpu_info) + offset_of!(vcpu_info, evtchn_upcall_pending);
const PENDING_SEL: usize =
    offset_of!(shared_info, vcpu_info) + offset_of!(vcpu_info, evtchn_pending_sel);
const PENDING: usize = offset_of!(shared_info, evtchn_pending);
const MASK: usize = offset_of!(shared_info, evtchn_mask);

/// A port's place in the bitmaps: the word index and the bit within it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bit {
    pub(crate) word: usize,
    pub(crate) mask: u64,
}

impl Bit {
    /// `port`'s bit, or [`Error::PortOutOfRange`] past the ABI's ports.
    pub(crate) fn of(port: Port) -> Result<Self, Error> {
        if port.raw() >= PORTS {
            return Err(Error::PortOutOfRange(port));
        }
        Ok(Self {
            word: (port.raw() / WORD_BITS) as usize,
            mask: 1 << (port.raw() % WORD_BITS),
        })
    }

    /// The port of bit `bit` of word `word`.
    pub(crate) fn port(word: usize, bit: u32) -> Port {
        Port::new(word as u32 * WORD_BITS + bit)
    }
}

/// This domain's shared info page, for its event-channel bitmaps and vCPU 0's
/// `evtchn_upcall_pending` and `evtchn_pending_sel`.
#[derive(Clone, Copy, Debug)]
pub struct SharedInfo {
    page: NonNull<u8>,
}

// SAFETY: the page is only reached through atomics (every method below), which
// any thread may use at once; `SharedInfo::new`'s contract keeps it mapped.
unsafe impl Send for SharedInfo {}
// SAFETY: as for `Send`: shared references only lead to atomic accesses.
unsafe impl Sync for SharedInfo {}

impl SharedInfo {
    /// The shared info page at `page`.
    ///
    /// # Safety
    ///
    /// - `page` is the start (page-aligned) of this domain's shared info page (mapped, e.g.
    ///   with `XENMEM_add_to_physmap` on PVH/HVM/arm, or the PV start info's
    ///   `shared_info` frame), readable and writable, for as long as the
    ///   result or a copy of it is used;
    /// - Rust code accesses the page's event words only atomically (through
    ///   this type or other atomics), never through references to its layout.
    pub const unsafe fn new(page: NonNull<u8>) -> Self {
        Self { page }
    }

    /// The page's address.
    pub fn as_ptr(&self) -> *mut u8 {
        self.page.as_ptr()
    }

    fn word_at(&self, offset: usize) -> &AtomicU64 {
        // Callers pass `PENDING`/`MASK` + 8 * (word < WORDS) or `PENDING_SEL`:
        // inside the page and 8-aligned (asserted above).
        let ptr = self.page.as_ptr().wrapping_add(offset).cast::<u64>();
        // SAFETY:
        // - `ptr` is inside the mapped page (`new`), 8-aligned: the page is
        //   page-aligned and the offsets are multiples of 8 (asserted above);
        // - Xen updates these words with atomic operations and Rust code only
        //   with atomics (`new`'s contract), so an `AtomicU64` view is sound.
        unsafe { AtomicU64::from_ptr(ptr) }
    }

    /// Word `word` of `evtchn_pending`.
    pub(crate) fn pending(&self, word: usize) -> &AtomicU64 {
        self.word_at(PENDING + 8 * (word % WORDS))
    }

    /// Word `word` of `evtchn_mask`.
    pub(crate) fn mask(&self, word: usize) -> &AtomicU64 {
        self.word_at(MASK + 8 * (word % WORDS))
    }

    /// vCPU 0's `evtchn_pending_sel`: which pending words may hold news.
    pub(crate) fn pending_sel(&self) -> &AtomicU64 {
        self.word_at(PENDING_SEL)
    }

    /// vCPU 0's `evtchn_upcall_pending`.
    pub(crate) fn upcall_pending(&self) -> &AtomicU8 {
        let ptr = self.page.as_ptr().wrapping_add(UPCALL_PENDING);
        // SAFETY: the first byte of vCPU 0's `vcpu_info` in the mapped page
        // (`new`), which Xen sets atomically; a byte is always aligned.
        unsafe { AtomicU8::from_ptr(ptr) }
    }

    /// Whether `bit` is pending.
    pub(crate) fn is_pending(&self, bit: Bit) -> bool {
        self.pending(bit.word).load(Ordering::Acquire) & bit.mask != 0
    }

    /// Clears `bit`'s pending flag; whether it was set (the claim of one delivery).
    pub(crate) fn take_pending(&self, bit: Bit) -> bool {
        self.pending(bit.word)
            .fetch_and(!bit.mask, Ordering::AcqRel)
            & bit.mask
            != 0
    }

    /// Sets `bit`'s mask flag.
    pub(crate) fn set_mask(&self, bit: Bit) {
        self.mask(bit.word).fetch_or(bit.mask, Ordering::AcqRel);
    }

    /// Sets (`true`) or clears `bit`'s mask flag; whether it was set.
    pub(crate) fn swap_mask(&self, bit: Bit, masked: bool) -> bool {
        let word = self.mask(bit.word);
        let was = if masked {
            word.fetch_or(bit.mask, Ordering::AcqRel)
        } else {
            word.fetch_and(!bit.mask, Ordering::AcqRel)
        };
        was & bit.mask != 0
    }

    /// Clears `bit`'s mask flag.
    pub(crate) fn clear_mask(&self, bit: Bit) {
        self.mask(bit.word).fetch_and(!bit.mask, Ordering::AcqRel);
    }

    /// The ports of word `word` that are pending and not masked.
    pub(crate) fn deliverable(&self, word: usize) -> u64 {
        let pending = self.pending(word).load(Ordering::Acquire);
        pending & !self.mask(word).load(Ordering::Acquire)
    }
}
