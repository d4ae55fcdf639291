//! Bulk data through the console ring ([`xen_testbed_protocol::bulk`]): 1 MiB
//! in the exchange, whose digest dom0 compares with what xenconsoled logged; and
//! the console benchmark, in which dom0 times the ring from xenconsoled's log.

use xen_hypercall::{Error, XenHypercall};
use xen_testbed_protocol::Reporter;
use xen_testbed_protocol::bulk::{self, Digest};

use super::console_ring::RingConsole;
use super::xenstore::XenStore;
use super::{Events, power_off};
use crate::fail::{CaseResult, Fail};

/// The exchange's bulk write: [`bulk::EXCHANGE_BYTES`] in 4 KiB writes, drained,
/// then `XENTEST OUT console-bulk <bytes> <digest>` ([`bulk::WRITTEN`]).
pub(crate) fn exchange_write<H: XenHypercall<Error = Error> + Copy>(
    events: Events<H>,
    reporter: &mut Reporter<RingConsole<H>>,
) -> CaseResult {
    let mut digest = Digest::new();
    let mut offset = 0;
    RingConsole(events).write_bulk(bulk::EXCHANGE_BYTES, 4096, |chunk| {
        bulk::fill(chunk, offset);
        digest.update(chunk);
        offset += chunk.len() as u64;
    })?;
    publish(reporter, offset, digest);
    Ok(())
}

/// Reports what was written: `XENTEST OUT console-bulk <bytes> <digest>`.
fn publish<H: XenHypercall<Error = Error> + Copy>(
    reporter: &mut Reporter<RingConsole<H>>,
    bytes: u64,
    digest: Digest,
) {
    reporter.out(format_args!(
        "{} {bytes} {:016x}",
        bulk::WRITTEN,
        digest.value()
    ));
}

/// If dom0 wrote [`bulk::BENCH`] (`<rounds> <bytes>`): writes `bytes` for each
/// write size of [`bulk::BENCH_WRITE_SIZES`], `rounds` times, each drained before
/// the next starts, reports `console_ring_bench` and powers off. Returns if the key
/// is absent.
pub(crate) fn bench_if_asked<H: XenHypercall<Error = Error> + Copy>(
    events: Events<H>,
    store: &mut XenStore<H>,
) {
    let mut value = [0; 32];
    let Ok(value) = store.read(bulk::BENCH, &mut value) else {
        return;
    };
    let asked = core::str::from_utf8(value)
        .ok()
        .and_then(|text| text.split_once(' '))
        .and_then(|(rounds, bytes)| Some((rounds.parse().ok()?, bytes.parse().ok()?)));
    let mut reporter = Reporter::new(RingConsole(events));
    let result = match asked {
        Some((rounds, bytes)) => bench(events, &mut reporter, rounds, bytes),
        None => Err(Fail::new(format_args!(
            "{} is {:?}, not `<rounds> <bytes>`",
            bulk::BENCH,
            value.escape_ascii()
        ))),
    };
    reporter.case("console_ring_bench", result);
    power_off(events, reporter)
}

fn bench<H: XenHypercall<Error = Error> + Copy>(
    events: Events<H>,
    reporter: &mut Reporter<RingConsole<H>>,
    rounds: u32,
    bytes: usize,
) -> CaseResult {
    let console = RingConsole(events);
    reporter.out(format_args!("{}", bulk::BENCH_START));
    console.flush()?;
    // The same 4 KiB over and over: the time is the ring's, not the pattern's.
    let mut pattern = [0; 4096];
    bulk::fill(&mut pattern, 0);
    let mut copy = |chunk: &mut [u8]| chunk.copy_from_slice(&pattern[..chunk.len()]);
    let mut total = 0u64;
    for _ in 0..rounds {
        for size in bulk::BENCH_WRITE_SIZES {
            console.write_bulk(bytes, size, &mut copy)?;
            total += bytes as u64;
        }
    }
    publish(reporter, total, Digest::new());
    Ok(())
}
