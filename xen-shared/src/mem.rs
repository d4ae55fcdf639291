//! Views of memory another domain may write at any time.

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

/// The size of a Xen page (the ABI's granularity on x86 and Arm).
pub const PAGE_SIZE: usize = 4096;

/// An access that does not fit the shared region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The bytes lie (partly) outside the region.
    #[error("{len} bytes at offset {offset} do not fit a {size}-byte shared region")]
    OutOfBounds {
        /// The first byte asked for, relative to the region.
        offset: usize,
        /// How many bytes were asked for.
        len: usize,
        /// The size of the region.
        size: usize,
    },
    /// An atomic value's address is not a multiple of its size.
    #[error("offset {offset} is not {align}-byte aligned")]
    Misaligned {
        /// The offset asked for, relative to the region.
        offset: usize,
        /// The alignment the value needs.
        align: usize,
    },
}

/// A view of memory that another domain (or device) may read and write at any time.
///
/// Like rust-vmm's `VolatileSlice`: the bounds are checked once, when a view or a value is taken,
/// and every access is atomic, so the compiler never assumes the bytes keep their value. Bytes are
/// copied in and out with relaxed atomic byte accesses; the view is never turned into `&[u8]` or
/// `&mut [u8]`. Atomics rather than volatile accesses, because a view may also be shared by
/// threads of this program (a ring and its peer in a test, a page mapped twice): volatile accesses
/// from two threads would be a data race, atomic ones are not.
///
/// A `SharedMem` is a cheap `Copy` handle; its lifetime ties it to the memory it views.
#[derive(Clone, Copy)]
pub struct SharedMem<'a> {
    bytes: &'a [AtomicU8],
}

impl<'a> SharedMem<'a> {
    /// A view of `len` bytes at `ptr`.
    ///
    /// # Safety
    ///
    /// For the whole lifetime `'a`:
    /// - `ptr..ptr + len` is mapped, readable and writable, and is neither unmapped nor freed
    ///   (for a foreign mapping: unmapped only after `'a` ends);
    /// - this program accesses those bytes only atomically (through `SharedMem` views, atomic types
    ///   or `UnsafeCell` contents accessed atomically): no `&`/`&mut` to a non-atomic type covers
    ///   them and no plain or volatile access is made while the view exists (another domain or a
    ///   device may access them in any way);
    /// - `len <= isize::MAX`.
    pub const unsafe fn from_raw_parts(ptr: NonNull<u8>, len: usize) -> Self {
        // SAFETY: `AtomicU8` has the size and alignment of `u8` and every bit pattern is valid;
        // the caller promises the bytes are valid for `'a`, accessed only atomically in this
        // program, and at most `isize::MAX` long, which is what a shared slice of atomics needs.
        let bytes = unsafe { core::slice::from_raw_parts(ptr.as_ptr().cast::<AtomicU8>(), len) };
        Self { bytes }
    }

    /// A view of memory already typed as atomics (safe: atomics may be written by anyone).
    pub const fn from_atomics(bytes: &'a [AtomicU8]) -> Self {
        Self { bytes }
    }

    /// The size of the view in bytes.
    pub const fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the view is empty.
    pub const fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The address of the first byte (to hand to Xen, or to compute a frame number).
    pub const fn as_ptr(&self) -> *mut u8 {
        self.bytes.as_ptr().cast::<u8>().cast_mut()
    }

    /// The part of this view of `len` bytes starting at `offset`.
    pub fn subslice(&self, offset: usize, len: usize) -> Result<SharedMem<'a>, AccessError> {
        Ok(Self {
            bytes: self.range(offset, len)?,
        })
    }

    /// Copies `dst.len()` bytes starting at `offset` out of the shared memory.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), AccessError> {
        let src = self.range(offset, dst.len())?;
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.load(Ordering::Relaxed);
        }
        Ok(())
    }

    /// Copies `src` into the shared memory starting at `offset`.
    pub fn write(&self, offset: usize, src: &[u8]) -> Result<(), AccessError> {
        let dst = self.range(offset, src.len())?;
        for (d, s) in dst.iter().zip(src) {
            d.store(*s, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Sets `len` bytes starting at `offset` to `byte`.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), AccessError> {
        for d in self.range(offset, len)? {
            d.store(byte, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The atomic value at `offset` (`AtomicU8`, `AtomicU16`, `AtomicU32` or `AtomicU64`), in
    /// bounds and naturally aligned.
    ///
    /// The caller uses the atomic's own API (`load(Ordering::Acquire)` on a peer's index, …).
    /// Do not mix access sizes on the same bytes within this program: an access of another size
    /// (a byte [`read`](Self::read), another atomic type) that races with this atomic's from
    /// another thread is undefined behaviour in Rust's memory model, which this method does not
    /// prevent.
    pub fn atomic<A: SharedAtomic>(&self, offset: usize) -> Result<&'a A, AccessError> {
        let size = core::mem::size_of::<A>();
        let bytes = self.range(offset, size)?;
        let ptr = bytes.as_ptr().cast::<A>();
        if !ptr.is_aligned() {
            return Err(AccessError::Misaligned {
                offset,
                align: core::mem::align_of::<A>(),
            });
        }
        // SAFETY:
        // - `ptr` is non-null and aligned (checked above) and `size_of::<A>()` bytes from it are
        //   inside this view (`range` checked), valid for `'a` by the view's construction;
        // - `A` is an atomic integer (sealed `SharedAtomic`): every bit pattern is valid and it
        //   permits mutation through a shared reference, as the other domain's writes need;
        // - the view's contract says this program touches the bytes only atomically.
        Ok(unsafe { &*ptr })
    }

    fn range(&self, offset: usize, len: usize) -> Result<&'a [AtomicU8], AccessError> {
        let end = offset.checked_add(len);
        match end {
            Some(end) if end <= self.bytes.len() => Ok(&self.bytes[offset..end]),
            _ => Err(AccessError::OutOfBounds {
                offset,
                len,
                size: self.bytes.len(),
            }),
        }
    }
}

impl fmt::Debug for SharedMem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The contents are the peer's to change: print where the view is, not what it holds.
        f.debug_struct("SharedMem")
            .field("ptr", &self.as_ptr())
            .field("len", &self.len())
            .finish()
    }
}

impl<'a> From<&'a [AtomicU8]> for SharedMem<'a> {
    fn from(bytes: &'a [AtomicU8]) -> Self {
        Self::from_atomics(bytes)
    }
}

impl<'a> From<&'a SharedPage> for SharedMem<'a> {
    fn from(page: &'a SharedPage) -> Self {
        page.mem()
    }
}

mod sealed {
    pub trait Sealed {}
}

/// The atomic integers a [`SharedMem`] hands out with [`SharedMem::atomic`].
///
/// Sealed: implemented for `AtomicU8`, `AtomicU16`, `AtomicU32` and `AtomicU64`, whose size equals
/// their alignment and for which every bit pattern is valid.
pub trait SharedAtomic: sealed::Sealed + Sync {}

macro_rules! shared_atomic {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl SharedAtomic for $t {}
        const _: () = assert!(core::mem::size_of::<$t>() == core::mem::align_of::<$t>());
    )*};
}
shared_atomic!(AtomicU8, AtomicU16, AtomicU32, AtomicU64);

/// A zeroed, page-aligned page that this program owns and may share (grant) with another domain.
///
/// Its bytes are atomics, so a [`SharedMem`] view of it is safe to make; tests use it as the
/// memory of a mock peer.
#[repr(C, align(4096))]
pub struct SharedPage {
    bytes: [AtomicU8; PAGE_SIZE],
}

const _: () = assert!(core::mem::align_of::<SharedPage>() == PAGE_SIZE);

impl SharedPage {
    /// A page of zeros.
    pub const fn new() -> Self {
        Self {
            bytes: [const { AtomicU8::new(0) }; PAGE_SIZE],
        }
    }

    /// A view of the whole page.
    pub const fn mem(&self) -> SharedMem<'_> {
        SharedMem::from_atomics(&self.bytes)
    }
}

impl Default for SharedPage {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SharedPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedPage")
            .field("ptr", &self.mem().as_ptr())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let page = SharedPage::new();
        let mem = page.mem();
        assert_eq!(mem.len(), PAGE_SIZE);
        assert_eq!(
            mem.read(4090, &mut [0; 7]),
            Err(AccessError::OutOfBounds {
                offset: 4090,
                len: 7,
                size: 4096
            })
        );
        assert!(mem.write(usize::MAX, &[1]).is_err());
        assert!(mem.subslice(1, 4096).is_err());
        let sub = mem.subslice(100, 8).unwrap();
        assert_eq!(sub.len(), 8);
        assert!(sub.fill(0, 9, 1).is_err());
        assert!(sub.atomic::<AtomicU64>(4).is_err());
    }

    #[test]
    fn bytes_round_trip_and_views_alias() {
        let page = SharedPage::new();
        let mem = page.mem();
        mem.write(4000, b"hello").unwrap();
        let sub = mem.subslice(4000, 96).unwrap();
        let mut out = [0u8; 5];
        sub.read(0, &mut out).unwrap();
        assert_eq!(&out, b"hello");
        sub.fill(1, 3, b'x').unwrap();
        mem.read(4000, &mut out).unwrap();
        assert_eq!(&out, b"hxxxo");
    }

    #[test]
    fn atomics_are_aligned_and_shared() {
        let page = SharedPage::new();
        let mem = page.mem();
        assert_eq!(
            mem.atomic::<AtomicU32>(2).unwrap_err(),
            AccessError::Misaligned {
                offset: 2,
                align: 4
            }
        );
        mem.atomic::<AtomicU32>(8)
            .unwrap()
            .store(0x0403_0201, Ordering::Release);
        let mut out = [0u8; 4];
        mem.read(8, &mut out).unwrap();
        assert_eq!(u32::from_ne_bytes(out), 0x0403_0201);
        assert!(mem.atomic::<AtomicU64>(4092).is_err());
        assert!(mem.atomic::<AtomicU8>(4095).is_ok());
    }

    #[test]
    fn raw_parts_view_of_a_page() {
        let page = SharedPage::new();
        let ptr = NonNull::new(page.mem().as_ptr()).unwrap();
        // SAFETY: the page lives for the whole test, and its bytes are atomics that this test
        // accesses only through views.
        let raw = unsafe { SharedMem::from_raw_parts(ptr, 64) };
        raw.write(0, &[7; 64]).unwrap();
        let mut out = [0u8; 1];
        page.mem().read(63, &mut out).unwrap();
        assert_eq!(out, [7]);
        assert!(std::format!("{raw:?}").contains("len: 64"));
    }
}
