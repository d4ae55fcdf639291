//! The shared info page, written by Xen at any time: accessed only through
//! atomics, never through references to its (zerocopy) layout.

use core::sync::atomic::{AtomicU64, Ordering};

use xen_hypercall::Port;
use xen_sys::shared_info;

/// Bits per `xen_ulong_t` of the 2-level event channel bitmaps (64 on x86_64 and arm).
const BITS: u32 = u64::BITS;

/// The shared info page of this domain, once mapped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SharedInfo(*const u8);

impl SharedInfo {
    /// # Safety
    ///
    /// `page` is this domain's shared info page, mapped for reads and writes
    /// for the rest of the program, and used by Rust only through this type.
    pub(crate) unsafe fn new(page: *const u8) -> Self {
        Self(page)
    }

    /// The page's address.
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.0
    }

    fn pending_word(&self, port: Port) -> Option<&AtomicU64> {
        let index = usize::try_from(port.raw() / BITS).ok()?;
        let offset = core::mem::offset_of!(shared_info, evtchn_pending);
        if index >= size_of::<[u64; 64]>() / size_of::<u64>() {
            return None;
        }
        let word = self.0.wrapping_add(offset + index * 8).cast::<AtomicU64>();
        // SAFETY:
        // - `evtchn_pending` is `xen_ulong_t[sizeof(xen_ulong_t) * 8]` at this
        //   offset of `shared_info` (public/xen.h; layout asserted in xen-sys), u64 on
        //   x86_64 and arm, 8-aligned; `index` < 64 keeps `word` inside it.
        // - The page is mapped for the program's life (`new`), and Xen updates it
        //   with atomic operations, so atomics are the right access.
        Some(unsafe { &*word })
    }

    /// Whether `port`'s pending bit is set.
    pub(crate) fn is_pending(&self, port: Port) -> bool {
        self.pending_word(port)
            .is_some_and(|word| word.load(Ordering::Acquire) & (1 << (port.raw() % BITS)) != 0)
    }

    /// Clears `port`'s pending bit (the guest's half of the 2-level ABI).
    pub(crate) fn clear_pending(&self, port: Port) {
        if let Some(word) = self.pending_word(port) {
            word.fetch_and(!(1 << (port.raw() % BITS)), Ordering::AcqRel);
        }
    }
}
