//! While a read-only buffer exists (Xen may be reading), the data cannot change.
use xen_hypercall::{XenConstBuffer, XenHypercall};

fn change<H: XenHypercall>(h: &H) -> *const u32 {
    let mut data = 0u32;
    let buf = h.make_const_buffer(&data).unwrap();
    data = 1;
    buf.as_hypercall_ptr()
}

fn main() {}
