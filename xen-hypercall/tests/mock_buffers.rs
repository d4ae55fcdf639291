//! The mock's two buffer modes behave as the backends they stand for.
#![cfg(feature = "mock")]

use xen_hypercall::mock::{BufferMode, MockXen};
use xen_hypercall::{DomId, XenConstBuffer, XenHypercall, XenMutBuffer};
use zerocopy::FromZeros;

/// `EVTCHNOP_alloc_unbound` by hand: the port is read from the data once the
/// buffer is dropped.
fn alloc_unbound(xen: &MockXen) -> u32 {
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
    drop(buf);
    op.port
}

/// Nothing to forget: dropping a bounce buffer copies what Xen wrote back.
#[test]
fn dropping_a_mut_buffer_leaves_what_xen_wrote_in_the_data() {
    let direct = MockXen::new();
    assert_eq!(alloc_unbound(&direct), 1);
    let bounce = direct.with_buffers(BufferMode::Bounce);
    assert_eq!(alloc_unbound(&bounce), 2);
    assert_eq!(alloc_unbound(&bounce), 3);
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
        drop(buf);
    }
}
