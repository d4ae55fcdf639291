//! Guest memory as the mock reaches it: only through the addresses in the
//! hypercall's arguments, copying exactly the C size in or out, as Xen's
//! `copy_from_guest`/`copy_to_guest` do.

use std::vec::Vec;

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::{Errno, Error};

/// Xen's answer to a NULL guest handle where it needs memory.
const FAULT: Error = Error::Xen(Errno::EFAULT);

/// Access to the calling domain's memory for the duration of one hypercall.
///
/// Its methods are safe because making one is not: whoever makes a `Guest`
/// vouches for every access the mock then makes through it. The mock makes one
/// per hypercall, relying on the contract of
/// [`XenHypercall`](crate::XenHypercall)'s `hypercallN` (the hypercall is well
/// formed for Xen's ABI), and accesses only the addresses and sizes that
/// public headers define for that sub-op.
#[derive(Debug)]
pub(super) struct Guest(());

impl Guest {
    /// # Safety
    ///
    /// Until it is dropped, every `read*(addr, ..)` through this value is of an
    /// address that is 0 or valid for reads of that many initialized bytes,
    /// and every `write*(addr, ..)` of one that is 0 or valid for writes of
    /// that many bytes, with no live Rust reference to them.
    pub(super) unsafe fn new() -> Self {
        Self(())
    }

    /// Copies a `T` in from guest address `addr`.
    pub(super) fn read<T: FromBytes>(&self, addr: usize) -> Result<T, Error> {
        if addr == 0 {
            return Err(FAULT);
        }
        let ptr = core::ptr::with_exposed_provenance::<T>(addr);
        // SAFETY: `addr` is readable for `size_of::<T>()` initialized bytes
        // (`Guest::new`); `read_unaligned` needs no alignment, and every byte
        // pattern is a valid `T` (`FromBytes`).
        Ok(unsafe { ptr.read_unaligned() })
    }

    /// Copies `len` bytes in from guest address `addr`.
    pub(super) fn read_bytes(&self, addr: usize, len: usize) -> Result<Vec<u8>, Error> {
        if len == 0 {
            return Ok(Vec::new());
        }
        if addr == 0 {
            return Err(FAULT);
        }
        let ptr = core::ptr::with_exposed_provenance::<u8>(addr);
        let mut bytes = Vec::<u8>::with_capacity(len);
        // SAFETY:
        // - `ptr` is readable for `len` bytes (`Guest::new`);
        // - `bytes` has capacity for `len` bytes and is a fresh allocation, so
        //   the two do not overlap.
        unsafe { bytes.as_mut_ptr().copy_from_nonoverlapping(ptr, len) };
        // SAFETY: the `len` bytes were just initialized by the copy.
        unsafe { bytes.set_len(len) };
        Ok(bytes)
    }

    /// Copies `bytes` out to guest address `addr`.
    pub(super) fn write_bytes(&self, addr: usize, bytes: &[u8]) -> Result<(), Error> {
        if bytes.is_empty() {
            return Ok(());
        }
        if addr == 0 {
            return Err(FAULT);
        }
        let ptr = core::ptr::with_exposed_provenance_mut::<u8>(addr);
        // SAFETY:
        // - `ptr` is writable for `bytes.len()` bytes, with no live reference
        //   to them (`Guest::new`);
        // - `bytes` is the mock's own memory, not the guest's: no overlap.
        unsafe { ptr.copy_from_nonoverlapping(bytes.as_ptr(), bytes.len()) };
        Ok(())
    }

    /// Copies a `T` out to guest address `addr`.
    pub(super) fn write<T: IntoBytes + Immutable>(
        &self,
        addr: usize,
        value: &T,
    ) -> Result<(), Error> {
        self.write_bytes(addr, value.as_bytes())
    }
}
