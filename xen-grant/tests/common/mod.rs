//! What the mock tests share: two domains of one mock, a table, and a page.

#![allow(dead_code)]

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use xen_grant::{GrantPage, GrantTable};
use xen_hypercall::mock::{BufferMode, MockConfig, MockXen};
use xen_hypercall::prelude::*;

/// The domU of [`domains`].
pub(crate) const DOMU: DomId = DomId(1);

/// A page of shared memory, known to the mock by a frame number.
#[repr(C, align(4096))]
pub(crate) struct TestPage {
    bytes: [AtomicU8; 4096],
    xen: MockXen,
}

impl TestPage {
    pub(crate) fn new(xen: &MockXen) -> Arc<Self> {
        Arc::new(Self {
            bytes: [const { AtomicU8::new(0) }; 4096],
            xen: xen.clone(),
        })
    }

    pub(crate) fn write(&self, offset: usize, bytes: &[u8]) {
        for (cell, byte) in self.bytes[offset..].iter().zip(bytes) {
            cell.store(*byte, Ordering::Relaxed);
        }
    }

    pub(crate) fn read(&self, offset: usize, len: usize) -> Vec<u8> {
        self.bytes[offset..offset + len]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }
}

// SAFETY: the mock knows the page's bytes by this frame number (the same for
// as long as the page stays where it is: it is in an `Arc`); they are only accessed
// through atomics, by the tests and the mock. Registering from `&self` each
// time exposes a pointer valid for as long as this borrow.
unsafe impl GrantPage for TestPage {
    fn frame(&self) -> u64 {
        self.xen.register_page(self.bytes.as_ptr().cast())
    }
}

/// A share of a page, to grant: the page lives while any share does (also a
/// share in a leaked grant).
pub(crate) struct PageArc(pub(crate) Arc<TestPage>);

// SAFETY: as for `TestPage`, which the `Arc` keeps allocated and in place.
unsafe impl GrantPage for PageArc {
    fn frame(&self) -> u64 {
        self.0.frame()
    }
}

/// dom0 (privileged) and domain 1 of one mock, for each buffer mode.
pub(crate) fn domains() -> Vec<(MockXen, MockXen)> {
    [BufferMode::Direct, BufferMode::Bounce]
        .into_iter()
        .map(|mode| {
            let dom0 = MockXen::with_config(MockConfig {
                buffers: mode,
                ..MockConfig::default()
            });
            let domu = dom0.domain(DOMU).with_buffers(mode);
            (dom0, domu)
        })
        .collect()
}

/// `h`'s table, one frame, set up the PV way: setup_table, then "map" the frame.
pub(crate) fn table(h: &MockXen) -> GrantTable<MockXen> {
    let mut frames = [0u64; 1];
    h.gnttab_setup_table(DomId::SELF, &mut frames).unwrap();
    let table = NonNull::new(h.frame_address(frames[0]).unwrap()).unwrap();
    // SAFETY: the mock's table frame 0 is the page at `frames[0] << 12`, alive
    // as long as the mock, and only this table and the mock touch it.
    unsafe { GrantTable::new(h.clone(), table, 1) }.unwrap()
}
