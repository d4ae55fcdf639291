//! A mutable buffer borrows the data it wraps: it cannot outlive it.
use xen_hypercall::{XenHypercall, XenMutBuffer};

fn make<H: XenHypercall>(h: &H) {
    let mut buf;
    {
        let mut data = [0u8; 16];
        buf = h.make_mut_buffer(&mut data[..]).unwrap();
    }
    buf.as_hypercall_ptr();
}

fn main() {}
