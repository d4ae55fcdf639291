//! A Linux dom0 program: shares a page with gntalloc, as a frontend in a guest would grant
//! one, and maps that grant with gntdev, as a backend does; each side sees the other's
//! bytes. Here both ends are dom0 itself, so it runs alone:
//!
//!     cargo build --release --example dom0_share_and_map --features linux
//!
//! Run it as root in dom0 (the `xen-gntalloc` and `xen-gntdev` modules loaded), or in the
//! testbed: `cargo xtask testbed run --dom0 <static build of this example>`.

use xen_grant::DomId;
use xen_grant::linux::{Gntalloc, Gntdev};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The granting side: one page of this process, writable by domain 0.
    let gntalloc = Gntalloc::open()?;
    let share = gntalloc.share(DomId::new(0), 1, false)?;
    share.mem().write(0, b"hello from the granter")?;
    println!("granted {:?}", share.grefs());

    // The mapping side: the references and the granter's id would come from xenstore.
    let gntdev = Gntdev::open()?;
    let mapping = gntdev.map(DomId::new(0), share.grefs(), false)?;
    let mut seen = [0; 22];
    mapping.read(0, &mut seen)?;
    println!("mapped: {}", String::from_utf8_lossy(&seen));

    // The page is another domain's memory: written through an atomic view, never `&mut [u8]`.
    if let Some(mem) = mapping.mem() {
        mem.write(0, b"reply from the mapper!")?;
    }
    share.mem().read(0, &mut seen)?;
    println!("the granter sees: {}", String::from_utf8_lossy(&seen));

    // Unmapped before the share ends (dropping does the same, ignoring errors).
    mapping.unmap()?;
    Ok(())
}
