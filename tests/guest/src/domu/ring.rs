//! One direction of a byte ring shared with another domain (the console's and
//! xenstore's layout: a power-of-two byte array, a consumer index and a
//! producer index, free-running `u32`s).
//!
//! The other domain may write anything at any time: each of its indexes is
//! read once per operation (acquire), checked (`prod - cons` never exceeds the
//! ring's size), and never used for anything but a count; the bytes are copied
//! with volatile accesses. Our own index is kept by the caller, never read back
//! from the shared page, and published with release ordering.

use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

use super::DomuError;

/// One direction of a shared byte ring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ByteRing {
    data: *mut u8,
    /// A power of two.
    size: u32,
    cons: *mut u32,
    prod: *mut u32,
}

impl ByteRing {
    /// The ring of `size` bytes at `data`, with its indexes at `cons` and `prod`.
    ///
    /// # Safety
    ///
    /// `data` (`size` bytes, a power of two) and the two 4-aligned indexes lie in a
    /// page shared with Xen or another domain, mapped for the rest of the program
    /// and accessed by Rust only through `ByteRing`s; the indexes are accessed by
    /// the other side only atomically (as Xen's ring protocols require).
    pub(crate) unsafe fn new(data: *mut u8, size: u32, cons: *mut u32, prod: *mut u32) -> Self {
        debug_assert!(size.is_power_of_two());
        Self {
            data,
            size,
            cons,
            prod,
        }
    }

    fn index(at: *mut u32) -> &'static AtomicU32 {
        // SAFETY: `at` is a 4-aligned index in the shared page (`new`), mapped for
        // the program's life, accessed only atomically by both sides.
        unsafe { AtomicU32::from_ptr(at) }
    }

    /// The producer's index as published (for the producer: its starting point).
    pub(crate) fn load_prod(&self) -> u32 {
        Self::index(self.prod).load(Ordering::Acquire)
    }

    /// The consumer's index as published (for the consumer: its starting point).
    pub(crate) fn load_cons(&self) -> u32 {
        Self::index(self.cons).load(Ordering::Acquire)
    }

    /// The bytes between `cons` and `prod`, or an error when the distance is
    /// impossible (the other side wrote a bad index).
    fn used(&self, cons: u32, prod: u32) -> Result<u32, DomuError> {
        let used = prod.wrapping_sub(cons);
        if used > self.size {
            return Err(DomuError::BadRing);
        }
        Ok(used)
    }

    /// Producer: the bytes written after our index `prod` and not yet consumed.
    pub(crate) fn unconsumed(&self, prod: u32) -> Result<u32, DomuError> {
        self.used(self.load_cons(), prod)
    }

    /// Producer: copies as much of `bytes` as fits after our index `prod`,
    /// publishes it and returns how many bytes were written.
    pub(crate) fn produce(&self, prod: &mut u32, bytes: &[u8]) -> Result<usize, DomuError> {
        let free = self.size - self.unconsumed(*prod)?;
        let count = bytes.len().min(free as usize);
        for (offset, &byte) in bytes[..count].iter().enumerate() {
            let at = prod.wrapping_add(offset as u32) & (self.size - 1);
            // SAFETY: `at` < `size`, inside the shared array (`new`); a volatile
            // write, as the other domain may read the byte at any time.
            unsafe { ptr::write_volatile(self.data.wrapping_add(at as usize), byte) };
        }
        *prod = prod.wrapping_add(count as u32);
        Self::index(self.prod).store(*prod, Ordering::Release);
        Ok(count)
    }

    /// Consumer: the bytes available after our index `cons`.
    pub(crate) fn available(&self, cons: u32) -> Result<u32, DomuError> {
        self.used(cons, self.load_prod())
    }

    /// Consumer: copies up to `out.len()` available bytes after our index
    /// `cons`, releases them to the producer and returns how many were copied.
    pub(crate) fn consume(&self, cons: &mut u32, out: &mut [u8]) -> Result<usize, DomuError> {
        let count = out.len().min(self.available(*cons)? as usize);
        for (offset, byte) in out[..count].iter_mut().enumerate() {
            let at = cons.wrapping_add(offset as u32) & (self.size - 1);
            // SAFETY: `at` < `size`, inside the shared array (`new`); a volatile
            // read, as the other domain may write the page at any time.
            *byte = unsafe { ptr::read_volatile(self.data.wrapping_add(at as usize)) };
        }
        *cons = cons.wrapping_add(count as u32);
        Self::index(self.cons).store(*cons, Ordering::Release);
        Ok(count)
    }
}
