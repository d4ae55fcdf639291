//! `xl list`: every domain with its memory, vCPUs, state and CPU time; names from xenstore
//! are left to `xen-store`. Run it as root in dom0.

#[cfg(target_os = "linux")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctrl = xen_ctrl::XenCtrl::new(xen_hypercall_privcmd::Privcmd::open()?);
    println!(
        "{:>5} {:>8} {:>5} {:>6} {:>9}",
        "ID", "Mem", "VCPUs", "State", "Time(s)"
    );
    for domain in ctrl.domains() {
        let d = domain?;
        println!(
            "{:>5} {:>8} {:>5} {:>6} {:>9.1}",
            d.domid.0,
            d.memory_kib() / 1024,
            d.online_vcpus,
            String::from_utf8_lossy(&d.state_letters()),
            d.cpu_time_ns as f64 / 1e9,
        );
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn main() {}
