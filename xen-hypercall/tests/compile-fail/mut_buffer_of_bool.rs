//! Xen may write any byte into a mutable buffer: `bool` (only 0 and 1 are
//! valid) cannot be wrapped.
use xen_hypercall::XenHypercall;

fn flag<H: XenHypercall>(h: &H) {
    let mut flag = false;
    let _buf = h.make_mut_buffer(&mut flag);
}

fn main() {}
