//! The domU half of the block-device run ([`exchange::blk`]): the disk dom0 serves through
//! Linux's blkback, found from this domain's frontend directory over xenstore.

use alloc::string::String;

use xen_hypercall::{Error, XenHypercall};
use xen_store::{ErrorKind, Store};
use xen_testbed_protocol::Reporter;
use xen_testbed_protocol::exchange::{self, blk};

use super::console_ring::RingConsole;
use super::xenstore::XenStore;
use crate::fail::{Fail, fail};

/// How long one request waits for xenstored.
const REQUEST_NS: u64 = 5_000_000_000;
/// How long the domU waits for the backend, and for dom0.
const WAIT_NS: u64 = blk::WAIT_SECONDS * 1_000_000_000;
/// XenbusStateInitWait (`public/io/xenbus.h`): the backend waits for the frontend.
const INIT_WAIT: &[u8] = b"2";

/// The disk dom0 announced in [`blk::BLK`], if any: its size in sectors.
pub(crate) fn requested<H: XenHypercall<Error = Error> + Copy>(
    store: &mut XenStore<H>,
) -> Option<u64> {
    let mut value = [0; 24];
    let value = store.read(blk::BLK, &mut value).ok()?;
    core::str::from_utf8(value).ok()?.parse().ok()
}

/// Runs the block steps ([`blk::DOMU_CASES`] but the last).
pub(crate) fn run<H: XenHypercall<Error = Error> + Copy>(
    r: &mut Reporter<RingConsole<H>>,
    store: &mut XenStore<H>,
) {
    let backend = match find_backend(store) {
        Ok(backend) => {
            r.out(format_args!(
                "device/vbd/{} is served by domain 0 at {backend}",
                blk::DEVID
            ));
            r.case("blk_vbd_found", Ok::<(), Fail>(()));
            backend
        }
        Err(error) => return r.case("blk_vbd_found", Err(error)),
    };
    let state = alloc::format!("{backend}/state");
    let init_wait = wait_for(store, &state, INIT_WAIT).and_then(|()| {
        store
            .client(REQUEST_NS)
            .write(exchange::READY, b"1")
            .map_err(failed("write ready"))
    });
    if init_wait.is_ok() {
        r.out(format_args!("{state} = 2 (InitWait): blkback waits for us"));
    }
    r.case("blk_backend_init_wait", init_wait);
    // Dom0 reads what this domain wrote before it goes.
    let _ = wait_for(store, blk::CHECKED, b"1");
}

/// Reads this domain's frontend directory of [`blk::DEVID`]: the backend must be dom0's; writes
/// the backend path at [`blk::SEEN_BACKEND`] and returns it.
fn find_backend<H: XenHypercall<Error = Error> + Copy>(
    store: &mut XenStore<H>,
) -> Result<String, Fail> {
    let xs = store.client(REQUEST_NS);
    let frontend = alloc::format!("device/vbd/{}", blk::DEVID);
    let backend_id = xs
        .read(&alloc::format!("{frontend}/backend-id"))
        .map_err(failed("backend-id"))?;
    if backend_id != b"0" {
        fail!("backend-id is {:?}, not dom0", backend_id.escape_ascii());
    }
    let backend = xs
        .read_string(&alloc::format!("{frontend}/backend"))
        .map_err(failed("backend"))?;
    if !backend.starts_with("/local/domain/0/backend/vbd/") {
        fail!("backend {backend:?} is not dom0's blkback");
    }
    xs.write(blk::SEEN_BACKEND, backend.as_bytes())
        .map_err(failed("write"))?;
    Ok(backend)
}

/// Waits until `path` reads `want`, re-reading it after each event of a watch on it (a missing
/// key is read again too), for up to [`WAIT_NS`].
fn wait_for<H: XenHypercall<Error = Error> + Copy>(
    store: &mut XenStore<H>,
    path: &str,
    want: &[u8],
) -> Result<(), Fail> {
    let xs = store.client(WAIT_NS);
    let watch = xs.watch(path).map_err(failed("watch"))?;
    let result = loop {
        match xs.read(path) {
            Ok(value) if value == want => break Ok(()),
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => break Err(failed("read")(error)),
        }
        if let Err(error) = xs.next_event() {
            break Err(Fail::new(format_args!(
                "waiting for {path} = {:?}: {error}",
                want.escape_ascii()
            )));
        }
    };
    let _ = xs.unwatch(watch);
    result
}

fn failed(what: &'static str) -> impl Fn(xen_store::Error) -> Fail {
    move |error| Fail::new(format_args!("{what}: {error}"))
}
