//! The event-channel loop of a freestanding guest, written against any
//! `XenHypercall` backend and the shared info page, as a kernel without
//! interrupts would run it: wait in `SCHEDOP_poll`, handle, unmask.
//!
//! In a real guest `hypercall` is `xen_hypercall_native`'s backend and the page
//! is mapped with `XENMEM_add_to_physmap` (PVH, arm) or found in the PV start
//! info; here `main` runs the same code against the mock, with a second
//! domain as the peer.

use xen_evtchn::mock::MockPlatform;
use xen_evtchn::{DomId, Error, EventChannel, Port, RawEventChannel, SharedInfo};
use xen_hypercall::XenHypercall;

/// The guest's side: connect to `backend`'s port `remote`, then answer `rounds` pings.
fn guest<H>(
    hypercall: H,
    page: SharedInfo,
    backend: DomId,
    remote: Port,
    rounds: u32,
) -> Result<(), Error>
where
    H: XenHypercall,
    Error: From<H::Error>,
{
    let channel: RawEventChannel<H> = RawEventChannel::new(hypercall, page);
    let port = channel.bind_interdomain(backend, remote)?;
    let mut pending = [Port::new(0); 16];
    let mut answered = 0;
    while answered < rounds {
        let count = channel.wait_pending(&mut pending)?;
        for &p in &pending[..count] {
            if p == port.port() {
                port.notify()?;
                answered += 1;
            }
            channel.unmask(p)?;
        }
    }
    Ok(())
}

fn main() -> Result<(), Error> {
    let xen = MockPlatform::new();
    let (dom0, dom1) = (xen.domain(0), xen.domain(1));
    let backend: RawEventChannel<_> = dom0.channel();
    let offer = backend.alloc_unbound(DomId::new(1))?;
    // The mock runs one thing at a time, so the guest answers one event: the
    // one Xen raises on its new port at bind (the backend may have notified
    // before the guest was there).
    // SAFETY: `dom1`, which keeps its page alive, outlives the guest's use of it.
    let page = unsafe { dom1.shared_info() };
    guest(dom1.clone(), page, DomId::new(0), offer.port(), 1)?;
    let mut pending = [Port::new(0); 4];
    let count = backend.take_pending(&mut pending)?;
    assert_eq!(&pending[..count], &[offer.port()]);
    println!("the guest answered over {}", offer.port());
    Ok(())
}
