//! While a mutable buffer exists (Xen may be writing), the data cannot be written.
use xen_hypercall::{XenHypercall, XenMutBuffer};

fn race<H: XenHypercall>(h: &H) {
    let mut data = 0u32;
    let mut buf = h.make_mut_buffer(&mut data).unwrap();
    data = 1;
    buf.as_hypercall_ptr();
}

fn main() {}
