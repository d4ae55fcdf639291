//! A dom0 daemon on tokio: offers an event channel to a domain and answers
//! each notification, while also watching Xen's console ring (VIRQ_CON_RING),
//! all on one `/dev/xen/evtchn` fd and one thread.
//!
//! Usage (as root in dom0): `tokio_daemon <domid>`; the domain binds to the
//! printed port (e.g. with `EVTCHNOP_bind_interdomain`) and notifies it.

use std::process::ExitCode;

use xen_evtchn::tokio::TokioEventChannel;
use xen_evtchn::{DomId, Error, EventChannel, Virq};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Some(domid) = std::env::args().nth(1).and_then(|a| a.parse::<u16>().ok()) else {
        eprintln!("usage: tokio_daemon <domid>");
        return ExitCode::from(2);
    };
    match serve(DomId::new(domid)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tokio_daemon: {error} ({:?})", error.kind());
            ExitCode::FAILURE
        }
    }
}

async fn serve(domid: DomId) -> Result<(), Error> {
    let channel = TokioEventChannel::open()?;
    let port = channel.alloc_unbound(domid)?;
    println!("offering {} to domain {domid}", port.port());
    // VIRQ_CON_RING can be bound once per domain: xenconsoled may hold it.
    let console = channel.bind_virq(Virq::CON_RING).ok();
    loop {
        tokio::select! {
            result = port.wait() => {
                result?;
                println!("notified by domain {domid}; answering");
                port.notify()?;
            }
            Some(result) = async { match &console { Some(c) => Some(c.wait().await), None => None } } => {
                result?;
                println!("Xen wrote to its console ring");
            }
        }
    }
}
