//! `XEN_GUEST_HANDLE(T)`: a guest address that Xen dereferences.

use core::fmt;
use core::marker::PhantomData;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A guest pointer to `T` inside a hypercall argument: `XEN_GUEST_HANDLE(T)` in C.
///
/// On x86_64 Xen's headers declare it as `struct { T *p; }`, on Arm as
/// `union { T *p; uint64_aligned_t q; }`: on both 64-bit architectures 8 bytes, 8-byte aligned.
/// Holding the address as a `u64` keeps every structure that carries a handle plain data
/// (zerocopy's `FromBytes` and `IntoBytes`), and lets a toolstack describe another
/// architecture's guest. Making a handle is safe; whoever passes it to Xen vouches for it.
#[repr(transparent)]
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GuestHandle<T: ?Sized> {
    address: u64,
    pointee: PhantomData<fn() -> *const T>,
}

// A handle is an address: it neither owns nor borrows the `T` it names.
impl<T: ?Sized> Clone for GuestHandle<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: ?Sized> Copy for GuestHandle<T> {}

impl<T: ?Sized> PartialEq for GuestHandle<T> {
    fn eq(&self, other: &Self) -> bool {
        self.address == other.address
    }
}

impl<T: ?Sized> Eq for GuestHandle<T> {}

impl<T: ?Sized> Default for GuestHandle<T> {
    fn default() -> Self {
        Self::null()
    }
}

impl<T: ?Sized> fmt::Debug for GuestHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuestHandle({:#x})", self.address)
    }
}

impl<T: ?Sized> GuestHandle<T> {
    /// The null handle (Xen reads it as "no buffer").
    pub const fn null() -> Self {
        Self::from_address(0)
    }

    /// A handle holding a raw guest address (for another domain or architecture).
    pub const fn from_address(address: u64) -> Self {
        Self {
            address,
            pointee: PhantomData,
        }
    }

    /// A handle to data Xen only reads.
    ///
    /// The pointer's provenance is exposed, so that code that turns the handle back into a
    /// pointer (a test double playing Xen, say) may use it.
    pub fn from_ptr(ptr: *const T) -> Self {
        Self::from_address(ptr.cast::<()>().expose_provenance() as u64)
    }

    /// A handle to data Xen writes.
    pub fn from_mut_ptr(ptr: *mut T) -> Self {
        Self::from_ptr(ptr.cast_const())
    }

    /// The guest address.
    pub const fn address(self) -> u64 {
        self.address
    }

    /// Whether this is the null handle.
    pub const fn is_null(self) -> bool {
        self.address == 0
    }
}

impl<T> GuestHandle<T> {
    /// The handle as a pointer in this address space, with the provenance that
    /// [`from_ptr`](Self::from_ptr) or [`from_mut_ptr`](Self::from_mut_ptr) exposed.
    ///
    /// Only meaningful when the handle names memory of the running program.
    pub fn as_ptr(self) -> *const T {
        core::ptr::with_exposed_provenance(self.address as usize)
    }

    /// Like [`as_ptr`](Self::as_ptr), for data to write.
    pub fn as_mut_ptr(self) -> *mut T {
        core::ptr::with_exposed_provenance_mut(self.address as usize)
    }
}

const _: () = {
    assert!(core::mem::size_of::<GuestHandle<u8>>() == 8);
    assert!(core::mem::align_of::<GuestHandle<u8>>() == 8);
};

#[cfg(test)]
mod tests {
    use super::GuestHandle;

    #[test]
    fn a_handle_round_trips_to_the_same_pointer() {
        let mut value = 7u32;
        let handle = GuestHandle::from_mut_ptr(&raw mut value);
        assert!(!handle.is_null());
        assert_eq!(handle.address(), (&raw const value).addr() as u64);
        assert_eq!(handle.as_ptr(), &raw const value);
        assert_eq!(GuestHandle::from_ptr(&raw const value), handle);
    }

    #[test]
    fn null_is_the_default_and_address_zero() {
        let handle = GuestHandle::<u8>::default();
        assert!(handle.is_null());
        assert_eq!(handle, GuestHandle::null());
        assert_eq!(handle.address(), 0);
        assert_eq!(GuestHandle::<u8>::from_address(0x1000).address(), 0x1000);
    }
}
