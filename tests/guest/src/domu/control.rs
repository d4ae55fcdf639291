//! The domU half of the lifecycle run ([`exchange::CONTROL_CMDLINE`] on its command line, which
//! survives `xl reboot`): it advertises `feature-poweroff` and `feature-reboot` with
//! `xen-guest`'s control module, watches `control/shutdown`, writes [`exchange::READY`], takes
//! the toolstack's request (acknowledged by clearing the node, as xl expects) and carries it
//! out with `SCHEDOP_shutdown`. dom0 judges the run from xl's view of it; a failure here is a
//! crash, which xl reports.

use xen_guest::control::{self, ControlWatches, Features};
use xen_hypercall::Error;
use xen_hypercall::prelude::*;
use xen_store::Store;
use xen_testbed_protocol::{Reporter, exchange};

use super::console_ring::RingConsole;
use super::xenstore::XenStore;
use super::{Events, crash};
use crate::fail::{Fail, fail};

/// How long a request to xenstored may take.
const REQUEST_NS: u64 = 5_000_000_000;
/// How long the domU waits for the toolstack's request.
const REQUEST_WAIT_NS: u64 = 120_000_000_000;

/// Whether the command line asks for this run.
pub(crate) fn requested(cmdline: &[u8]) -> bool {
    cmdline
        .split(|&b| b == b' ')
        .any(|word| word == exchange::CONTROL_CMDLINE.as_bytes())
}

/// Runs the lifecycle: never returns (the domain shuts down, reboots or crashes).
pub(crate) fn run<H: XenHypercall<Error = Error> + Copy>(
    events: Events<H>,
    r: &mut Reporter<RingConsole<H>>,
    store: &mut XenStore<H>,
) -> ! {
    let reason = take_request(r, store);
    let console = RingConsole(events);
    match reason {
        Ok(reason) => {
            let _ = console.flush();
            let result = events.h.shutdown(reason);
            r.out(format_args!("SCHEDOP_shutdown returned: {result:?}"));
        }
        Err(error) => r.case("control_request", Err::<(), Fail>(error)),
    }
    let _ = console.flush();
    crash(events.h)
}

/// Advertises, watches, reports ready and waits for a request it can carry out.
fn take_request<H: XenHypercall<Error = Error> + Copy>(
    r: &mut Reporter<RingConsole<H>>,
    store: &mut XenStore<H>,
) -> Result<ShutdownReason, Fail> {
    let failed =
        |what: &'static str| move |e: xen_store::Error| Fail::new(format_args!("{what}: {e}"));
    let xs = store.client(REQUEST_NS);
    let watches =
        ControlWatches::new(xs, Features::POWEROFF | Features::REBOOT).map_err(failed("watch"))?;
    xs.write(exchange::READY, b"1").map_err(failed("ready"))?;
    r.out(format_args!(
        "control: feature-poweroff and feature-reboot advertised, watching"
    ));
    let xs = store.client(REQUEST_WAIT_NS);
    loop {
        let event = xs.next_event().map_err(failed("the toolstack's request"))?;
        if !watches.is_shutdown(event.watch) {
            continue;
        }
        // None on the watch's first firing, or once a request was taken.
        let Some(request) = control::take_shutdown(xs).map_err(failed("take"))? else {
            continue;
        };
        r.out(format_args!("control: the toolstack asked {request:?}"));
        match request.reason() {
            Some(reason) if reason != ShutdownReason::SUSPEND => return Ok(reason),
            _ => fail!("request {request:?} was not advertised"),
        }
    }
}
