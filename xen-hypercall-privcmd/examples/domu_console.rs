//! Reads what a domU last wrote to its console, as xenconsoled does: its console ring's frame
//! from xenstore (`/local/domain/<id>/console/ring-ref`), mapped with `IOCTL_PRIVCMD_MMAPBATCH_V2`,
//! read through the atomic view, never a reference. Run it as root in dom0: `domu_console 3`.

#[cfg(target_os = "linux")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use xen_hypercall::DomId;
    use xen_hypercall_privcmd::Privcmd;
    use xen_store::{Client, Store, unix::Local};

    let domid: u16 = std::env::args()
        .nth(1)
        .ok_or("usage: domu_console DOMID")?
        .parse()?;
    let mut store = Client::new(Local::socket()?);
    let frame: u64 = store
        .read_string(&format!("/local/domain/{domid}/console/ring-ref"))?
        .parse()?;
    let mapping = Privcmd::open()?.map_foreign(DomId(domid), &[frame])?;
    let ring = mapping
        .page(0)
        .map_err(|e| format!("frame {frame:#x}: {e}"))?;
    // `xencons_interface` (io/console.h): out[2048] at 1024, out_prod at 3084.
    let mut prod = [0u8; 4];
    ring.read(3084, &mut prod)?;
    let prod = u32::from_ne_bytes(prod);
    let mut text = Vec::new();
    for back in (1..=prod.min(2048)).rev() {
        let mut byte = [0u8];
        ring.read(1024 + (prod.wrapping_sub(back) % 2048) as usize, &mut byte)?;
        text.push(byte[0]);
    }
    print!("{}", String::from_utf8_lossy(&text));
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn main() {}
