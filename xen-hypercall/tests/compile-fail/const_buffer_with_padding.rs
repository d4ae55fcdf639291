//! Padding bytes are uninitialized: a type with padding cannot be handed to
//! Xen, even read-only.
use xen_hypercall::XenHypercall;

#[repr(C)]
#[derive(zerocopy::Immutable)]
struct Padded {
    tag: u8,
    value: u32,
}

fn send<H: XenHypercall>(h: &H) {
    let data = Padded { tag: 1, value: 2 };
    let _buf = h.make_const_buffer(&data);
}

fn main() {}
