//! The mock's hypercall buffers: the caller's memory, or bounce copies.

use core::marker::PhantomData;
use core::ptr::NonNull;
use std::alloc::{self, Layout};

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::Error;
use crate::buffer::{
    DirectConstBuffer, DirectMutBuffer, HypercallData, XenConstBuffer, XenMutBuffer,
};

/// How [`MockXen`](super::MockXen) makes hypercall buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BufferMode {
    /// Hand the mock the caller's own memory, as a freestanding backend does.
    #[default]
    Direct,
    /// Copy the data into a separate heap allocation, as a hosted backend does
    /// with its hypercall-safe memory (copied back when a mutable buffer is
    /// dropped): a wrapper that reads the data through another path, or uses a
    /// pointer after its buffer is dropped, then sees stale data or fails
    /// under Miri.
    Bounce,
}

/// A heap allocation with the size and alignment of some `T` (at least one
/// byte, so that empty slices need no special case).
#[derive(Debug)]
struct Bounce {
    ptr: NonNull<u8>,
    layout: Layout,
    len: usize,
}

impl Bounce {
    /// Allocates a copy of `bytes`, aligned to `align`.
    fn new(bytes: &[u8], align: usize) -> Result<Self, Error> {
        let len = bytes.len();
        let layout = Layout::from_size_align(len.max(1), align)
            .map_err(|_| Error::OutOfMemory { bytes: len })?;
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { alloc::alloc(layout) };
        let ptr = NonNull::new(raw).ok_or(Error::OutOfMemory { bytes: len })?;
        // SAFETY:
        // - `bytes` is valid for reads of `len` bytes;
        // - `ptr` was just allocated with at least `len` bytes, so it is valid
        //   for writes and does not overlap `bytes`.
        unsafe { ptr.as_ptr().copy_from_nonoverlapping(bytes.as_ptr(), len) };
        Ok(Self { ptr, layout, len })
    }

    /// The bytes currently in the allocation.
    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` bytes, all initialized (copied in by
        // `new`, then only ever overwritten with bytes), and not mutated while
        // `&self` is borrowed (only `&mut self` hands out a writable pointer).
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Bounce {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated with `layout` by the global allocator and
        // is freed only here.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// A [`XenConstBuffer`] of [`MockXen`](super::MockXen).
#[derive(Debug)]
pub struct MockConstBuffer<'a, T: ?Sized> {
    inner: ConstInner<'a, T>,
}

#[derive(Debug)]
enum ConstInner<'a, T: ?Sized> {
    Direct(DirectConstBuffer<'a, T>),
    Bounce {
        bounce: Bounce,
        count: usize,
        _data: PhantomData<&'a T>,
    },
}

impl<'a, T> MockConstBuffer<'a, T>
where
    T: ?Sized + HypercallData + IntoBytes + Immutable,
{
    pub(super) fn new(data: &'a T, mode: BufferMode) -> Result<Self, Error> {
        let inner = match mode {
            BufferMode::Direct => ConstInner::Direct(DirectConstBuffer::new(data)),
            BufferMode::Bounce => ConstInner::Bounce {
                bounce: Bounce::new(data.as_bytes(), core::mem::align_of_val(data))?,
                count: T::element_count(data),
                _data: PhantomData,
            },
        };
        Ok(Self { inner })
    }
}

impl<T: ?Sized + HypercallData> XenConstBuffer<T> for MockConstBuffer<'_, T> {
    fn as_hypercall_ptr(&self) -> *const T {
        match &self.inner {
            ConstInner::Direct(direct) => direct.as_hypercall_ptr(),
            ConstInner::Bounce { bounce, count, .. } => {
                T::from_raw_parts(bounce.ptr.as_ptr(), *count).cast_const()
            }
        }
    }
}

/// A [`XenMutBuffer`] of [`MockXen`](super::MockXen); a bounce copy goes back
/// into the data when it is dropped.
#[derive(Debug)]
pub struct MockMutBuffer<'a, T: ?Sized + FromBytes + IntoBytes> {
    inner: MutInner<'a, T>,
}

#[derive(Debug)]
enum MutInner<'a, T: ?Sized> {
    Direct(DirectMutBuffer<'a, T>),
    Bounce {
        bounce: Bounce,
        count: usize,
        data: &'a mut T,
    },
}

impl<'a, T> MockMutBuffer<'a, T>
where
    T: ?Sized + HypercallData + FromBytes + IntoBytes,
{
    pub(super) fn new(data: &'a mut T, mode: BufferMode) -> Result<Self, Error> {
        let inner = match mode {
            BufferMode::Direct => MutInner::Direct(DirectMutBuffer::new(data)),
            BufferMode::Bounce => {
                let align = core::mem::align_of_val(data);
                MutInner::Bounce {
                    bounce: Bounce::new(data.as_mut_bytes(), align)?,
                    count: T::element_count(data),
                    data,
                }
            }
        };
        Ok(Self { inner })
    }
}

impl<T> XenMutBuffer<T> for MockMutBuffer<'_, T>
where
    T: ?Sized + HypercallData + FromBytes + IntoBytes,
{
    fn as_hypercall_ptr(&mut self) -> *mut T {
        match &mut self.inner {
            MutInner::Direct(direct) => direct.as_hypercall_ptr(),
            MutInner::Bounce { bounce, count, .. } => {
                T::from_raw_parts(bounce.ptr.as_ptr(), *count)
            }
        }
    }
}

impl<T: ?Sized + FromBytes + IntoBytes> Drop for MockMutBuffer<'_, T> {
    fn drop(&mut self) {
        if let MutInner::Bounce { bounce, data, .. } = &mut self.inner {
            data.as_mut_bytes().copy_from_slice(bounce.bytes());
        }
    }
}
