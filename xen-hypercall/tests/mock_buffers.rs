//! The mock's two buffer modes behave as the backends they stand for.
#![cfg(feature = "mock")]

use xen_hypercall::mock::{BufferMode, MockXen};
use xen_hypercall::{DomId, XenConstBuffer, XenHypercall, XenMutBuffer};
use zerocopy::FromZeros;

/// `EVTCHNOP_alloc_unbound` by hand, calling `update` only if asked to.
fn alloc_unbound(xen: &MockXen, update: bool) -> u32 {
    let mut op = xen_sys::evtchn_alloc_unbound::new_zeroed();
    op.dom = DomId::SELF.0;
    op.remote_dom = DomId::SELF.0;
    let mut buf = xen.make_mut_buffer(&mut op).unwrap();
    let addr = buf.as_hypercall_ptr().expose_provenance();
    // SAFETY: EVTCHNOP_alloc_unbound with a live, writable `evtchn_alloc_unbound_t`.
    unsafe {
        xen.hypercall2(
            xen_sys::__HYPERVISOR_event_channel_op as usize,
            [xen_sys::EVTCHNOP_alloc_unbound as usize, addr],
        )
    }
    .unwrap();
    if update {
        buf.update();
    }
    drop(buf);
    op.port
}

#[test]
fn bounce_buffers_need_update_and_direct_ones_do_not() {
    let direct = MockXen::new();
    assert_eq!(alloc_unbound(&direct, false), 1);
    let bounce = direct.with_buffers(BufferMode::Bounce);
    // Xen wrote port 2 into the bounce copy; without `update` the caller sees nothing.
    assert_eq!(alloc_unbound(&bounce, false), 0);
    assert_eq!(alloc_unbound(&bounce, true), 3);
}

#[test]
fn bounce_buffers_are_separate_aligned_copies() {
    let xen = MockXen::new().with_buffers(BufferMode::Bounce);
    let words = [1u64, 2, 3];
    let buf = xen.make_const_buffer(&words[..]).unwrap();
    let ptr = buf.as_hypercall_ptr();
    assert_ne!(ptr.cast::<u64>(), words.as_ptr());
    assert_eq!(ptr.len(), 3);
    assert!(ptr.cast::<u64>().is_aligned());
    // SAFETY: the buffer is alive and holds a copy of `words`.
    assert_eq!(unsafe { &*ptr }, &words);

    let direct = xen.with_buffers(BufferMode::Direct);
    let buf = direct.make_const_buffer(&words[..]).unwrap();
    assert_eq!(buf.as_hypercall_ptr().cast::<u64>(), words.as_ptr());
}

#[test]
fn empty_slices_are_fine_in_both_modes() {
    for mode in [BufferMode::Direct, BufferMode::Bounce] {
        let xen = MockXen::new().with_buffers(mode);
        let mut empty: [u8; 0] = [];
        let mut buf = xen.make_mut_buffer(&mut empty[..]).unwrap();
        assert_eq!(buf.as_hypercall_ptr().len(), 0);
        buf.update();
    }
}
