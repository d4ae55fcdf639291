//! A buffer borrows the data it wraps: it cannot outlive it.
use xen_hypercall::{XenConstBuffer, XenHypercall};

fn make<H: XenHypercall>(h: &H) -> *const u64 {
    let buf;
    {
        let data = 7u64;
        buf = h.make_const_buffer(&data).unwrap();
    }
    buf.as_hypercall_ptr()
}

fn main() {}
