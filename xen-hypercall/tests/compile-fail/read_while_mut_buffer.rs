//! While a mutable buffer exists, the data cannot even be read.
use xen_hypercall::{XenHypercall, XenMutBuffer};

fn peek<H: XenHypercall>(h: &H) -> u32 {
    let mut data = 0u32;
    let mut buf = h.make_mut_buffer(&mut data).unwrap();
    let seen = data;
    buf.as_hypercall_ptr();
    seen
}

fn main() {}
