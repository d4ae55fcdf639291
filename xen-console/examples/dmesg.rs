//! `dmesg [--clear] [--follow]`: Xen's log, as `xl dmesg` prints it, in dom0.
//!
//! `--follow` keeps printing what Xen logs afterwards. It wakes every 200 ms to look again (a
//! `Wait` channel made of a sleep); a channel bound to `VIRQ_CON_RING` through `xen-evtchn`
//! wakes it only when Xen logs something.

use std::io::Write as _;
use std::time::Duration;

use xen_console::{FnChannel, Wake, XenLog};
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
        let tick = FnChannel::new(
            || Ok::<_, std::convert::Infallible>(()),
            || {
                std::thread::sleep(Duration::from_millis(200));
                Ok(Wake::Event)
            },
        );
        for chunk in log.follow(tick, Some(all.next_index)) {
            stdout.write_all(&chunk?.text)?;
            stdout.flush()?;
        }
    }
    Ok(())
}
