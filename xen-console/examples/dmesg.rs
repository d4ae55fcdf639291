//! `dmesg [--clear] [--follow]`: Xen's log, as `xl dmesg` prints it, in dom0.
//!
//! `--follow` keeps printing what Xen logs afterwards, woken by `VIRQ_CON_RING` (bound through
//! `/dev/xen/evtchn`), which Xen raises in dom0 when it logs something: no timer. (Only one
//! binding of that VIRQ per domain: not while xenconsoled logs the hypervisor, `--log=hv`.)

use std::io::Write as _;

use xen_console::{EvtchnPort, XenLog};
use xen_evtchn::EventChannel;
use xen_evtchn::linux::EvtchnDevice;
use xen_hypercall::Virq;
use xen_hypercall_privcmd::Privcmd;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut clear = false;
    let mut follow = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--clear" | "-c" => clear = true,
            "--follow" | "-f" => follow = true,
            _ => return Err(format!("usage: dmesg [--clear] [--follow], got `{arg}`").into()),
        }
    }
    let xen = Privcmd::open()?;
    let log = XenLog::new(&xen);
    let all = log.read_all()?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&all.text)?;
    stdout.flush()?;
    if clear {
        log.clear()?;
    }
    if follow {
        let events = EvtchnDevice::open()?;
        let con_ring = EvtchnPort::new(events.bind_virq(Virq::CON_RING)?);
        for chunk in log.follow(con_ring, Some(all.next_index)) {
            stdout.write_all(&chunk?.text)?;
            stdout.flush()?;
        }
    }
    Ok(())
}
