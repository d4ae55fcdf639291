//! Hypercall-safe buffers: memory that may be handed to Xen.
//!
//! A buffer wraps a borrow of the caller's data. Freestanding backends hand Xen the
//! caller's memory as it is ([`DirectConstBuffer`], [`DirectMutBuffer`]); hosted
//! backends copy it into memory the OS lets Xen access (a bounce buffer). Either
//! way the buffer borrows the data for its whole life, so it cannot outlive it.

use core::marker::PhantomData;

/// Data a hypercall buffer can wrap: a sized value, or a slice of sized values.
///
/// Sealed: it only describes the pointer shape of `T` and `[T]`, so that one
/// constructor serves objects and slices alike. The bytes themselves are
/// constrained with zerocopy's traits at each constructor.
pub trait HypercallData: private::Sealed {
    /// The number of elements of `data` (`1` for a sized value, the length for
    /// a slice).
    ///
    /// An associated function, not a method: every sized type, references
    /// included, implements this trait, so `data.element_count()` on a
    /// `data: &mut [T]` would auto-ref to `<&mut [T]>::element_count` and
    /// answer 1. Call it as `T::element_count(data)`.
    #[doc(hidden)]
    fn element_count(data: &Self) -> usize;

    /// A pointer of `Self`'s shape with `count` elements at `base`, keeping `base`'s provenance.
    #[doc(hidden)]
    fn from_raw_parts(base: *mut u8, count: usize) -> *mut Self;
}

impl<T> HypercallData for T {
    fn element_count(_data: &Self) -> usize {
        1
    }

    fn from_raw_parts(base: *mut u8, _count: usize) -> *mut Self {
        base.cast()
    }
}

impl<T> HypercallData for [T] {
    fn element_count(data: &Self) -> usize {
        data.len()
    }

    fn from_raw_parts(base: *mut u8, count: usize) -> *mut Self {
        core::ptr::slice_from_raw_parts_mut(base.cast(), count)
    }
}

mod private {
    pub trait Sealed {}
    impl<T> Sealed for T {}
    impl<T> Sealed for [T] {}
}

/// A read-only hypercall-safe view of some data.
pub trait XenConstBuffer<T: ?Sized> {
    /// The pointer to hand to Xen.
    ///
    /// It is valid for reads of `size_of_val(data)` bytes, holding a copy of the
    /// data, for as long as this buffer lives; null in a child process forked
    /// after a hosted backend made it (see [`XenHypercall`](crate::XenHypercall)'s
    /// `# Safety`).
    fn as_hypercall_ptr(&self) -> *const T;
}

/// A read-write hypercall-safe view of some data.
///
/// What Xen wrote is in the data once the buffer is dropped: a bounce buffer
/// copies it back in its `Drop` (the data is
/// [`FromBytes`](zerocopy::FromBytes), so every byte pattern Xen may leave is a
/// valid value), a zero-copy buffer has nothing to copy. The data stays
/// mutably borrowed until then, so the copy-back cannot be skipped or observed
/// half-done.
pub trait XenMutBuffer<T: ?Sized> {
    /// The pointer to hand to Xen.
    ///
    /// It is valid for reads and writes of `size_of_val(data)` bytes, initially
    /// holding a copy of the data, for as long as this buffer lives; null in a
    /// child process forked after a hosted backend made it (see
    /// [`XenHypercall`](crate::XenHypercall)'s `# Safety`).
    fn as_hypercall_ptr(&mut self) -> *mut T;
}

/// A zero-copy [`XenConstBuffer`]: hands Xen the caller's memory.
#[derive(Debug)]
pub struct DirectConstBuffer<'a, T: ?Sized>(&'a T);

impl<'a, T: ?Sized> DirectConstBuffer<'a, T> {
    /// Wraps `data` without copying it.
    pub const fn new(data: &'a T) -> Self {
        Self(data)
    }
}

impl<T: ?Sized> XenConstBuffer<T> for DirectConstBuffer<'_, T> {
    fn as_hypercall_ptr(&self) -> *const T {
        self.0
    }
}

/// A zero-copy [`XenMutBuffer`]: hands Xen the caller's memory, so there is
/// nothing to copy back.
#[derive(Debug)]
pub struct DirectMutBuffer<'a, T: ?Sized> {
    ptr: *mut T,
    _borrow: PhantomData<&'a mut T>,
}

impl<'a, T: ?Sized> DirectMutBuffer<'a, T> {
    /// Wraps `data` without copying it.
    pub fn new(data: &'a mut T) -> Self {
        Self {
            ptr: data,
            _borrow: PhantomData,
        }
    }
}

impl<T: ?Sized> XenMutBuffer<T> for DirectMutBuffer<'_, T> {
    fn as_hypercall_ptr(&mut self) -> *mut T {
        self.ptr
    }
}

// SAFETY: `DirectMutBuffer` is a `&'a mut T` kept as a raw pointer (so that the
// pointer handed to Xen is not re-derived from a reference on each call); it is
// exactly as thread-safe as that reference.
unsafe impl<T: ?Sized + Send> Send for DirectMutBuffer<'_, T> {}
// SAFETY: as above; `&DirectMutBuffer` gives no access to `T` at all.
unsafe impl<T: ?Sized + Sync> Sync for DirectMutBuffer<'_, T> {}
