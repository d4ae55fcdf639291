//! The raw hypercall primitive every backend implements.

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::Error;
use crate::buffer::{HypercallData, XenConstBuffer, XenMutBuffer};

/// A way to make Xen hypercalls: inline assembly in a freestanding guest, a
/// device such as Linux's `/dev/xen/privcmd` in userland, or a mock in tests.
///
/// The raw `hypercallN` functions issue hypercall `op` with `N` arguments and
/// decode its result, a C `long`, as [`decode_result`](crate::decode_result)
/// does: `-4095..=-1` is `-XEN_Exxx`, returned as [`Error::Xen`]; any other
/// value is returned as `Ok`, reinterpreted as `usize` (Xen's error codes are
/// all small, and `memory_op` returns values wider than 31 bits). A backend
/// may also fail on its own, before or instead of reaching Xen, with its own
/// errors. The safe, typed wrappers of this crate are built on them.
///
/// # Safety
///
/// The safe wrappers of this crate (and of users) hand Xen pointers obtained
/// from this trait and rely on these promises for their soundness. An
/// implementer promises that:
///
/// - `hypercallN(op, args)` asks the Xen hypervisor (or a faithful model of it)
///   to perform hypercall `op` with exactly these arguments, on behalf of the
///   calling domain, and returns only once Xen has completed it. It reads or
///   writes no memory except as that hypercall does. A result in `-4095..=-1`
///   is returned as `Err` holding [`Error::Xen`]; every other result as `Ok`.
/// - [`make_const_buffer`](Self::make_const_buffer) returns a buffer whose
///   pointer is valid, for Xen, for reads of `size_of_val(data)` bytes holding
///   the bytes of `data`, for as long as the buffer lives.
/// - [`make_mut_buffer`](Self::make_mut_buffer) returns a buffer whose pointer
///   is valid, for Xen, for reads and writes of `size_of_val(data)` bytes,
///   initially holding the bytes of `data`, for as long as the buffer lives, and
///   aliasing no memory other than `data`'s. When the buffer is dropped, `data`
///   holds exactly the bytes that were at that pointer.
/// - A buffer's pointer, if it does not point at `data` itself, points at
///   memory no other live Rust value uses.
///
/// One exception, for hosted backends whose buffer memory is not inherited by
/// `fork` (Linux's `/dev/xen/hypercall` pages, `MADV_DONTFORK` memory): in a
/// child process forked while a buffer was live, that buffer's pointer is null.
/// The child's address space may by then hold other memory at the parent's
/// address, and a null argument makes Xen fail the hypercall with `EFAULT`
/// (userland never maps page 0) instead of writing there; dropping such a
/// mutable buffer copies nothing back.
pub unsafe trait XenHypercall {
    /// The error this backend returns. Every backend of this project uses
    /// [`Error`]; the bound lets the typed wrappers report their own failures.
    type Error: From<Error> + core::error::Error;

    /// Issues hypercall `op` with no argument.
    ///
    /// # Safety
    ///
    /// The hypercall must be well formed for Xen's ABI and must not make Xen
    /// access memory that Rust code does not allow it to, during or after the
    /// call: every pointer argument points into a live buffer from this
    /// interface of the right size and mutability, and the operation's other
    /// effects (mappings, shared pages) do not break any Rust invariant.
    unsafe fn hypercall0(&self, op: usize) -> Result<usize, Self::Error>;

    /// Issues hypercall `op` with one argument.
    ///
    /// # Safety
    ///
    /// As for [`hypercall0`](Self::hypercall0).
    unsafe fn hypercall1(&self, op: usize, arg: usize) -> Result<usize, Self::Error>;

    /// Issues hypercall `op` with two arguments.
    ///
    /// # Safety
    ///
    /// As for [`hypercall0`](Self::hypercall0).
    unsafe fn hypercall2(&self, op: usize, args: [usize; 2]) -> Result<usize, Self::Error>;

    /// Issues hypercall `op` with three arguments.
    ///
    /// # Safety
    ///
    /// As for [`hypercall0`](Self::hypercall0).
    unsafe fn hypercall3(&self, op: usize, args: [usize; 3]) -> Result<usize, Self::Error>;

    /// Issues hypercall `op` with four arguments.
    ///
    /// # Safety
    ///
    /// As for [`hypercall0`](Self::hypercall0).
    unsafe fn hypercall4(&self, op: usize, args: [usize; 4]) -> Result<usize, Self::Error>;

    /// Issues hypercall `op` with five arguments.
    ///
    /// # Safety
    ///
    /// As for [`hypercall0`](Self::hypercall0).
    unsafe fn hypercall5(&self, op: usize, args: [usize; 5]) -> Result<usize, Self::Error>;

    /// Wraps `data` (a value or a slice) in a buffer Xen may read.
    ///
    /// The buffer borrows both `self` and `data` (Rust 2024 return-position
    /// `impl Trait` captures every lifetime in scope), so it cannot outlive them.
    fn make_const_buffer<T>(&self, data: &T) -> Result<impl XenConstBuffer<T>, Self::Error>
    where
        T: ?Sized + HypercallData + IntoBytes + Immutable;

    /// Wraps `data` (a value or a slice) in a buffer Xen may read and write.
    ///
    /// The buffer borrows `data` mutably until it is dropped; from then on
    /// `data` holds what Xen wrote.
    fn make_mut_buffer<T>(&self, data: &mut T) -> Result<impl XenMutBuffer<T>, Self::Error>
    where
        T: ?Sized + HypercallData + FromBytes + IntoBytes;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DirectConstBuffer, DirectMutBuffer};

    struct Echo;

    // SAFETY: test-only backend; it never hands pointers to anything.
    unsafe impl XenHypercall for Echo {
        type Error = Error;
        unsafe fn hypercall0(&self, op: usize) -> Result<usize, Error> {
            Ok(op)
        }
        unsafe fn hypercall1(&self, op: usize, _: usize) -> Result<usize, Error> {
            Ok(op)
        }
        unsafe fn hypercall2(&self, op: usize, _: [usize; 2]) -> Result<usize, Error> {
            Ok(op)
        }
        unsafe fn hypercall3(&self, op: usize, _: [usize; 3]) -> Result<usize, Error> {
            Ok(op)
        }
        unsafe fn hypercall4(&self, op: usize, _: [usize; 4]) -> Result<usize, Error> {
            Ok(op)
        }
        unsafe fn hypercall5(&self, op: usize, _: [usize; 5]) -> Result<usize, Error> {
            Ok(op)
        }
        fn make_const_buffer<T>(&self, data: &T) -> Result<impl XenConstBuffer<T>, Error>
        where
            T: ?Sized + HypercallData + IntoBytes + Immutable,
        {
            Ok(DirectConstBuffer::new(data))
        }
        fn make_mut_buffer<T>(&self, data: &mut T) -> Result<impl XenMutBuffer<T>, Error>
        where
            T: ?Sized + HypercallData + FromBytes + IntoBytes,
        {
            Ok(DirectMutBuffer::new(data))
        }
    }

    #[test]
    fn buffers_cover_objects_and_slices() {
        let value = 7u64;
        let mut words = [0u32; 4];
        let h = Echo;
        let c = h.make_const_buffer(&value).unwrap();
        assert_eq!(c.as_hypercall_ptr(), &value as *const u64);
        let mut m = h.make_mut_buffer(&mut words[..]).unwrap();
        let ptr = m.as_hypercall_ptr();
        assert_eq!(ptr.len(), 4);
        // SAFETY: the buffer is live and `ptr` is its only way to the words.
        unsafe { (*ptr)[2] = 9 };
        drop(m);
        // Zero-copy: what was written through the pointer is in the data.
        assert_eq!(words, [0, 0, 9, 0]);
    }
}
