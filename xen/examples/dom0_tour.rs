//! One dom0 program through the facade's layers: a hypercall (privcmd), a xenstore read
//! (the daemon's socket or `/dev/xen/xenbus`), and an event channel looped back to itself
//! (`/dev/xen/evtchn`).
//!
//!     cargo build --release --example dom0_tour --features privcmd,evtchn,store,linux
//!
//! Run it as root in dom0, or in the testbed:
//! `cargo xtask testbed run --dom0 <static build of this example>`.

use xen::evtchn::EventChannel;
use xen::evtchn::linux::EvtchnDevice;
use xen::prelude::*;
use xen::privcmd::Privcmd;
use xen::store::Store;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Hypercalls: the typed wrappers of `xen::prelude` on the privcmd backend.
    let xen = Privcmd::open()?;
    println!("Xen {}{}", xen.xen_version()?, xen.extraversion()?);

    // Xenstore: the same operations as libxenstore's `xs_read`.
    let mut store = xen::store::Client::open()?;
    println!("this domain is named {:?}", store.read_string("name")?);

    // Event channels: offer a port to this domain, bind it, and notify it.
    let device = EvtchnDevice::open()?;
    let offered = device.alloc_unbound(DomId::new(0))?;
    let bound = device.bind_interdomain(DomId::new(0), offered.port())?;
    bound.notify()?;
    // A delivery means "look again", coalesced: the bind's own pending mark and the
    // notification may arrive as one.
    let mut ports = [Port::new(0); 4];
    let delivered = device.wait_pending(&mut ports)?;
    println!(
        "notified {}; delivered {:?}",
        bound.port(),
        &ports[..delivered]
    );
    device.unmask_all(&ports[..delivered])?;
    Ok(())
}
