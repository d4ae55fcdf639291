#![doc = include_str!("../README.md")]
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cpuid;
pub use cpuid::{CpuVendor, XenCpuid, XenVersion};

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use x86_64::{HvmHypercall, HvmInstruction, HypercallPage, HypercallPageFrame, PvHypercall};

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use aarch64::Aarch64Hypercall;

/// Implements [`xen_hypercall::XenHypercall`] for a backend whose raw calls are
/// `self.raw0(op)` .. `self.raw5(op, [a0, a1, a2, a3, a4])`, each returning Xen's `long`.
/// Buffers are zero-copy: Xen is handed the caller's own memory.
macro_rules! impl_xen_hypercall {
    ($backend:ty) => {
        // SAFETY: the implementer's promises of `XenHypercall`'s `# Safety`:
        // - each `hypercallN` issues exactly op `op` with these arguments through the
        //   backend's `rawN`, whose constructor contract (see the type's `# Safety`) makes
        //   the instruction a hypercall of the calling domain, completed on return; the asm
        //   touches no other memory; `decode_result` maps negative `long`s to `Error::Xen`.
        // - Buffers are the caller's memory itself (`DirectConstBuffer`/`DirectMutBuffer`):
        //   valid for `size_of_val(data)` bytes for the borrow, holding `data`'s bytes,
        //   aliasing nothing else; `update` has nothing to copy. Xen reaches them through
        //   the guest's own page tables (x86 PV/HVM linear addresses, arm64 stage-1 VAs),
        //   which the constructor contract requires to be set up for Xen.
        unsafe impl xen_hypercall::XenHypercall for $backend {
            type Error = xen_hypercall::Error;

            #[inline(always)]
            unsafe fn hypercall0(&self, op: usize) -> Result<usize, Self::Error> {
                // SAFETY: forwarded from this function's contract.
                xen_hypercall::decode_result(unsafe { self.raw0(op) }?)
            }

            #[inline(always)]
            unsafe fn hypercall1(&self, op: usize, arg: usize) -> Result<usize, Self::Error> {
                // SAFETY: forwarded from this function's contract.
                xen_hypercall::decode_result(unsafe { self.raw1(op, arg) }?)
            }

            #[inline(always)]
            unsafe fn hypercall2(&self, op: usize, args: [usize; 2]) -> Result<usize, Self::Error> {
                // SAFETY: forwarded from this function's contract.
                xen_hypercall::decode_result(unsafe { self.raw2(op, args) }?)
            }

            #[inline(always)]
            unsafe fn hypercall3(&self, op: usize, args: [usize; 3]) -> Result<usize, Self::Error> {
                // SAFETY: forwarded from this function's contract.
                xen_hypercall::decode_result(unsafe { self.raw3(op, args) }?)
            }

            #[inline(always)]
            unsafe fn hypercall4(&self, op: usize, args: [usize; 4]) -> Result<usize, Self::Error> {
                // SAFETY: forwarded from this function's contract.
                xen_hypercall::decode_result(unsafe { self.raw4(op, args) }?)
            }

            #[inline(always)]
            unsafe fn hypercall5(&self, op: usize, args: [usize; 5]) -> Result<usize, Self::Error> {
                // SAFETY: forwarded from this function's contract.
                xen_hypercall::decode_result(unsafe { self.raw5(op, args) }?)
            }

            #[inline(always)]
            fn make_const_buffer<T>(
                &self,
                data: &T,
            ) -> Result<impl xen_hypercall::XenConstBuffer<T>, Self::Error>
            where
                T: ?Sized
                    + xen_hypercall::HypercallData
                    + zerocopy::IntoBytes
                    + zerocopy::Immutable,
            {
                Ok(xen_hypercall::DirectConstBuffer::new(data))
            }

            #[inline(always)]
            fn make_mut_buffer<T>(
                &self,
                data: &mut T,
            ) -> Result<impl xen_hypercall::XenMutBuffer<T>, Self::Error>
            where
                T: ?Sized
                    + xen_hypercall::HypercallData
                    + zerocopy::FromBytes
                    + zerocopy::IntoBytes,
            {
                Ok(xen_hypercall::DirectMutBuffer::new(data))
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use impl_xen_hypercall;
