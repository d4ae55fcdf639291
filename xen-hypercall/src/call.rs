//! The two shapes every typed wrapper is built on: a hypercall whose last
//! argument points at a structure Xen only reads, or at one Xen reads and writes.

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::XenHypercall;
use crate::buffer::{XenConstBuffer, XenMutBuffer};

/// A pointer's address as a hypercall argument, exposing its provenance so that
/// a faithful model of Xen may turn the integer back into a pointer.
pub(crate) fn addr<T: ?Sized>(ptr: *const T) -> usize {
    ptr.cast::<u8>().expose_provenance()
}

/// Issues hypercall `op(cmd, &arg)` with `arg` in a read-only buffer.
///
/// # Safety
///
/// `op` with sub-op `cmd` must take a pointer to a `T` as its second argument,
/// and Xen must only read that `T` (and any memory it points to, which must be
/// live buffers of this interface for the duration of the call).
pub(crate) unsafe fn with_in<H, T>(h: &H, op: u32, cmd: u32, arg: &T) -> Result<usize, H::Error>
where
    H: XenHypercall + ?Sized,
    T: IntoBytes + Immutable,
{
    let buf = h.make_const_buffer(arg)?;
    // SAFETY: the caller guarantees the hypercall is well formed for a readable `T`;
    // `buf` is valid for reads of `size_of::<T>()` bytes until it drops, after the call.
    unsafe { h.hypercall2(op as usize, [cmd as usize, addr(buf.as_hypercall_ptr())]) }
}

/// Issues hypercall `op(cmd, &mut arg)` with `arg` in a read-write buffer;
/// `arg` then holds what Xen wrote (on failure too: some sub-ops report
/// progress in the structure).
///
/// # Safety
///
/// `op` with sub-op `cmd` must take a pointer to a `T` as its second argument,
/// and Xen must access no memory but that `T` (and any memory it points to, which
/// must be live buffers of this interface for the duration of the call).
pub(crate) unsafe fn with_inout<H, T>(
    h: &H,
    op: u32,
    cmd: u32,
    arg: &mut T,
) -> Result<usize, H::Error>
where
    H: XenHypercall + ?Sized,
    T: FromBytes + IntoBytes,
{
    let mut buf = h.make_mut_buffer(arg)?;
    let ptr = buf.as_hypercall_ptr();
    // SAFETY: the caller guarantees the hypercall is well formed for a writable `T`;
    // `buf` is valid for reads and writes of `size_of::<T>()` bytes and aliases
    // nothing else until it drops, after the call.
    let ret = unsafe { h.hypercall2(op as usize, [cmd as usize, addr(ptr)]) };
    drop(buf);
    ret
}

/// Issues hypercall `op(cmd, NULL)`: a sub-op that takes no memory.
///
/// # Safety
///
/// `op` with sub-op `cmd` must ignore its pointer argument or accept NULL, and
/// have no effect that breaks a Rust invariant.
pub(crate) unsafe fn without_arg<H>(h: &H, op: u32, cmd: u32) -> Result<usize, H::Error>
where
    H: XenHypercall + ?Sized,
{
    // SAFETY: the caller guarantees that NULL is a valid argument; no memory is passed.
    unsafe { h.hypercall2(op as usize, [cmd as usize, 0]) }
}
