//! The domU's xenstore steps after the grant exchange ([`xen_testbed_protocol::exchange::store`]):
//! a watch over the ring that fires on dom0's write, and xenstored's typed refusals of a read
//! and a write outside the domU's home.

use xen_hypercall::{Error, XenHypercall};
use xen_store::{Errno, ErrorKind, Store};
use xen_testbed_protocol::Reporter;
use xen_testbed_protocol::exchange::store::{
    DOM0_PRIVATE, DOM0_SAYS, DOM0_SAYS_VALUE, OUTSIDE_HOME, WATCH_WAIT_SECONDS, WATCHING,
};

use super::console_ring::RingConsole;
use super::xenstore::XenStore;
use crate::fail::{CaseResult, Fail, fail};

/// How long one request waits for xenstored.
const REQUEST_NS: u64 = 5_000_000_000;
/// How long the domU waits for dom0's write.
const WATCH_WAIT_NS: u64 = WATCH_WAIT_SECONDS * 1_000_000_000;

/// Runs the steps and reports their cases (`exchange::store::DOMU_CASES`).
pub(crate) fn run<H: XenHypercall<Error = Error> + Copy>(
    r: &mut Reporter<RingConsole<H>>,
    store: &mut XenStore<H>,
) {
    let watched = watch_dom0_write(r, store);
    r.case("xenstore_watch_sees_dom0_write", watched);
    let read = store.client(REQUEST_NS).read(DOM0_PRIVATE).map(drop);
    r.case(
        "xenstore_dom0_key_eacces",
        refused("read", DOM0_PRIVATE, read),
    );
    let write = store
        .client(REQUEST_NS)
        .write(OUTSIDE_HOME, b"written by a domU");
    r.case(
        "xenstore_write_outside_eacces",
        refused("write", OUTSIDE_HOME, write),
    );
}

/// Watches [`DOM0_SAYS`], says so, and waits for the event of dom0's write.
fn watch_dom0_write<H: XenHypercall<Error = Error> + Copy>(
    r: &mut Reporter<RingConsole<H>>,
    store: &mut XenStore<H>,
) -> CaseResult {
    let xs = store.client(REQUEST_NS);
    let watch = xs.watch(DOM0_SAYS).map_err(failed("watch"))?;
    // xenstored fires a new watch once, for the watched path.
    let first = xs.next_event().map_err(failed("the first event"))?;
    if first.watch != watch || first.path != DOM0_SAYS {
        fail!("first event {:?} for path {}", first.watch, first.path);
    }
    xs.write(WATCHING, b"1").map_err(failed("write"))?;
    let xs = store.client(WATCH_WAIT_NS);
    let event = xs.next_event().map_err(failed("dom0's event"))?;
    if event.watch != watch || event.path != DOM0_SAYS {
        fail!("event {:?} for path {}", event.watch, event.path);
    }
    let value = xs.read(DOM0_SAYS).map_err(failed("read"))?;
    if value != DOM0_SAYS_VALUE.as_bytes() {
        fail!("{DOM0_SAYS} is {:?}", value.escape_ascii());
    }
    xs.unwatch(watch).map_err(failed("unwatch"))?;
    r.out(format_args!(
        "the watch on {DOM0_SAYS} fired on dom0's write; read {:?}",
        DOM0_SAYS_VALUE
    ));
    Ok(())
}

/// Whether `result` is xenstored's `EACCES`, typed.
fn refused(what: &str, path: &str, result: Result<(), xen_store::Error>) -> CaseResult {
    match result {
        Err(error)
            if error.errno() == Some(Errno::EACCES)
                && error.kind() == ErrorKind::PermissionDenied =>
        {
            Ok(())
        }
        Err(error) => fail!("{what} {path}: {error}, not EACCES"),
        Ok(()) => fail!("{what} {path} allowed"),
    }
}

fn failed(what: &'static str) -> impl Fn(xen_store::Error) -> Fail {
    move |error| Fail::new(format_args!("{what}: {error}"))
}
