//! Data behind a shared reference may change through an `UnsafeCell` while Xen
//! reads it: interior mutability cannot be wrapped in a read-only buffer.
use core::cell::Cell;

use xen_hypercall::XenHypercall;

fn send<H: XenHypercall>(h: &H) {
    let data = Cell::new(1u32);
    let _buf = h.make_const_buffer(&data);
}

fn main() {}
