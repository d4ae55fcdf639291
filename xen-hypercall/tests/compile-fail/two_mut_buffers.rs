//! Two mutable buffers cannot wrap the same data.
use xen_hypercall::{XenHypercall, XenMutBuffer};

fn alias<H: XenHypercall>(h: &H) {
    let mut data = [0u64; 2];
    let mut a = h.make_mut_buffer(&mut data).unwrap();
    let mut b = h.make_mut_buffer(&mut data).unwrap();
    a.as_hypercall_ptr();
    b.as_hypercall_ptr();
}

fn main() {}
