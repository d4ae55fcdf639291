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
    #[cfg(not(feature = "domu"))]
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
    #[cfg(not(feature = "domu"))]
    pub(crate) fn is_pending(&self, port: Port) -> bool {
        self.pending_word(port)
            .is_some_and(|word| word.load(Ordering::Acquire) & (1 << (port.raw() % BITS)) != 0)
    }

    /// Takes `port`'s pending bit: whether it was set (it is clear afterwards).
    #[cfg(feature = "domu")]
    pub(crate) fn take_pending(&self, port: Port) -> bool {
        let bit = 1 << (port.raw() % BITS);
        self.pending_word(port)
            .is_some_and(|word| word.fetch_and(!bit, Ordering::AcqRel) & bit != 0)
    }

    /// Clears `port`'s pending bit (the guest's half of the 2-level ABI).
    pub(crate) fn clear_pending(&self, port: Port) {
        if let Some(word) = self.pending_word(port) {
            word.fetch_and(!(1 << (port.raw() % BITS)), Ordering::AcqRel);
        }
    }
}

impl SharedInfo {
    /// The page's address.
    #[cfg(feature = "domu")]
    pub(crate) fn page(&self) -> *const u8 {
        self.0
    }

    /// Xen's system time (ns since Xen booted), the clock of `SCHEDOP_poll`'s
    /// deadline: vCPU 0's `vcpu_time_info` extrapolated with the TSC
    /// (public/xen.h, "vcpu_time_info").
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn system_time_ns(&self) -> u64 {
        use core::mem::offset_of;
        use core::sync::atomic::{AtomicU32, fence};
        use xen_sys::{vcpu_info, vcpu_time_info};

        let time = offset_of!(shared_info, vcpu_info) + offset_of!(vcpu_info, time);
        let at = |field: usize| self.0.wrapping_add(time + field);
        // SAFETY: `vcpu_info[0].time` of the mapped shared info
        // page (`new`; offsets from xen-sys, 8-aligned): `version` (u32), and the
        // u64 words at 8 (`tsc_timestamp`), 16 (`system_time`) and 24
        // (`tsc_to_system_mul` u32, `tsc_shift` i8 in the next byte); Xen
        // rewrites them at any time, so atomics are the right access.
        let version = unsafe {
            AtomicU32::from_ptr(at(offset_of!(vcpu_time_info, version)).cast_mut().cast())
        };
        // SAFETY: as above.
        let stamp = unsafe {
            AtomicU64::from_ptr(
                at(offset_of!(vcpu_time_info, tsc_timestamp))
                    .cast_mut()
                    .cast(),
            )
        };
        // SAFETY: as above.
        let system = unsafe {
            AtomicU64::from_ptr(
                at(offset_of!(vcpu_time_info, system_time))
                    .cast_mut()
                    .cast(),
            )
        };
        // SAFETY: as above.
        let scale = unsafe {
            AtomicU64::from_ptr(
                at(offset_of!(vcpu_time_info, tsc_to_system_mul))
                    .cast_mut()
                    .cast(),
            )
        };
        loop {
            // Xen makes `version` odd while it updates the fields.
            let before = version.load(Ordering::Acquire);
            let (stamp, system, scale) = (
                stamp.load(Ordering::Relaxed),
                system.load(Ordering::Relaxed),
                scale.load(Ordering::Relaxed),
            );
            // SAFETY: `rdtsc` reads the time stamp counter; no memory, no stack.
            let tsc = unsafe { core::arch::x86_64::_rdtsc() };
            fence(Ordering::Acquire);
            if before % 2 == 1 || version.load(Ordering::Relaxed) != before {
                continue;
            }
            let mul = scale as u32;
            let shift = (scale >> 32) as u8 as i8;
            let mut delta = tsc.wrapping_sub(stamp);
            delta = if shift >= 0 {
                delta << shift
            } else {
                delta >> -shift
            };
            let ns = ((u128::from(delta) * u128::from(mul)) >> 32) as u64;
            return system.wrapping_add(ns);
        }
    }

    /// Xen's system time (ns since Xen booted), the clock of `SCHEDOP_poll`'s
    /// deadline, or later: Arm's shared info carries no time, and Xen's clock is
    /// the physical counter minus its value when Xen booted (xen/arch/arm/time.c),
    /// which EL1 may read (Xen sets `CNTHCTL_EL2.EL1PCTEN`). Without that boot
    /// value, a deadline from this is up to Xen's boot time late.
    #[cfg(target_arch = "aarch64")]
    pub(crate) fn system_time_ns(&self) -> u64 {
        let (count, frequency): (u64, u64);
        // SAFETY: reads of the counter and its frequency; no memory, no stack.
        unsafe {
            core::arch::asm!(
                "isb",
                "mrs {count}, cntpct_el0",
                "mrs {frequency}, cntfrq_el0",
                count = out(reg) count,
                frequency = out(reg) frequency,
                options(nomem, nostack, preserves_flags),
            );
        }
        if frequency == 0 {
            return u64::MAX;
        }
        (u128::from(count) * 1_000_000_000 / u128::from(frequency)) as u64
    }
}
