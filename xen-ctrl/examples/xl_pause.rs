//! `xl pause DOMID` / `xl unpause DOMID`: `xl_pause pause 3`, `xl_pause unpause 3`.

#[cfg(target_os = "linux")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use xen_hypercall::DomId;

    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, domid) = match args.as_slice() {
        [command, domid] => (command.as_str(), DomId(domid.parse()?)),
        _ => return Err("usage: xl_pause pause|unpause DOMID".into()),
    };
    let ctrl = xen_ctrl::XenCtrl::new(xen_hypercall_privcmd::Privcmd::open()?);
    match command {
        "pause" => ctrl.pause_domain(domid)?,
        "unpause" => ctrl.unpause_domain(domid)?,
        _ => return Err(format!("unknown command {command}").into()),
    }
    let info = ctrl.domain_info(domid)?;
    println!(
        "{} {}",
        domid.0,
        String::from_utf8_lossy(&info.state_letters())
    );
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn main() {}
