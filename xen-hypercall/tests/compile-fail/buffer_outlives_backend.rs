//! A buffer borrows the backend that made it (a bounce buffer may come from
//! the backend's pool): it cannot outlive it.
use xen_hypercall::{XenConstBuffer, XenHypercall};

static DATA: u32 = 5;

fn keep<H: XenHypercall>(open: impl Fn() -> H) -> *const u32 {
    let buf;
    {
        let h = open();
        buf = h.make_const_buffer(&DATA).unwrap();
    }
    buf.as_hypercall_ptr()
}

fn main() {}
