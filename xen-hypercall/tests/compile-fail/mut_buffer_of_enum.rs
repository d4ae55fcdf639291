//! Xen may write any value into a mutable buffer: a Rust enum (an unknown
//! discriminant is undefined behaviour) cannot be wrapped.
use xen_hypercall::XenHypercall;

#[repr(u32)]
#[derive(Clone, Copy)]
enum Status {
    Closed = 0,
    Open = 1,
}

fn status<H: XenHypercall>(h: &H) {
    let mut status = [Status::Closed, Status::Open];
    let _buf = h.make_mut_buffer(&mut status[..]);
}

fn main() {}
