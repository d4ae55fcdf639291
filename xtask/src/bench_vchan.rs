//! `cargo xtask bench vchan [--rounds N] [--mib M]`: xen-vchan against Debian's libxenvchan in
//! one x86_64 dom0 boot.
//!
//! Builds `tests/dom0/libxenvchan_peer.c` statically against `libxen-dev`, runs the interop
//! cases (`xen-dom0-tests vchan`: our server with a C client and the reverse, 16 MiB each way,
//! a C peer dying mid-stream, ours on tokio), then times one-way throughput, ours against
//! libxenvchan's, for 64-byte, 4-KiB and 64-KiB writes through 64-KiB rings
//! (`xen-dom0-tests vchan bench`), and prints MB/s medians and `bench vchan …` lines.

use std::time::Duration;

use crate::bench::{Bench, Report, Samples};
use xen_testbed::initramfs::Preamble;

const USAGE: &str = "usage: cargo xtask bench vchan [--rounds N] [--mib M]";

/// The cases of `xen-dom0-tests vchan` (tests/dom0/src/vchan.rs) and of its `bench`.
const CASES: &[&str] = &[
    "vchan_rust_server_c_client_in_page",
    "vchan_rust_server_c_client_own_pages",
    "vchan_c_server_rust_client_in_page",
    "vchan_c_server_rust_client_own_pages",
    "vchan_c_client_exits_mid_stream",
    "vchan_c_server_exits_mid_stream",
    "vchan_our_server_dies_mid_stream",
    "vchan_rust_to_rust_tokio",
    "vchan_client_maps_its_read_ring_read_only",
    "vchan_drop_unbinds_a_borrowed_event_channel",
    "bench_vchan",
];

/// The throughput measures (MB/s, higher is better).
const WRITES: &[&str] = &["write_64", "write_4096", "write_65536"];
/// The latency measure (µs per round trip, lower is better).
const RTT: &str = "rtt_1";

pub(crate) fn run(options: &[String]) -> crate::Result {
    let mut mib = [8u64];
    let (rounds, _) =
        crate::bench::options(options, (3, 1), USAGE, &mut [("--mib", &mut mib[..])])?;
    let mib = mib[0];
    Bench {
        name: "vchan",
        driver: ("xen-dom0-tests", "xen-dom0-tests"),
        peer: Some(xen_testbed::c_program::LIBXENVCHAN_PEER),
        preamble: Preamble::Toolstack { fault: None },
        commands: vec!["vchan".into(), format!("vchan bench {rounds} {mib}")],
        cases: CASES,
        timeout: Duration::from_secs(600 + rounds * mib * 30),
        files: Vec::new(),
        domus: Vec::new(),
        dom0_memory_mib: None,
    }
    .run(
        &format!("vchan benchmark: {rounds} rounds of {mib} MiB (1/8 of it for 64-byte writes) per implementation and write size"),
        "; software-emulated, on a shared machine",
        |lines| report(&parse_samples(lines.iter().copied())?),
    )
}

/// Parses `bench-run impl=<impl> measure=write_<chunk> bytes=<n> ns=<total>` into MB/s and
/// `bench-run impl=<impl> measure=rtt_1 rounds=<n> ns=<total>` into µs per round trip.
fn parse_samples<'a>(lines: impl Iterator<Item = &'a str>) -> crate::Result<Samples<f64>> {
    Samples::parse(lines, "measure", |run| {
        let ns = run.number("ns")?;
        if ns <= 0.0 {
            return Err(format!("no time in a sample of {}", run.text("impl")?));
        }
        if run.text("measure")? == RTT {
            Ok(ns / 1e3 / run.number("rounds")?)
        } else {
            Ok(run.number("bytes")? * 1e3 / ns)
        }
    })
}

/// The table, the targets (ours >= 1.0x libxenvchan's throughput, <= 1.0x its round trip)
/// and the machine lines.
fn report(samples: &Samples<f64>) -> crate::Result<String> {
    use std::fmt::Write;
    let mut report = Report::default();
    let _ = writeln!(
        report.table,
        "{:<12} {:>10} {:>16} {:>10}",
        "measure", "ours", "libxenvchan", "ours/libx"
    );
    for measure in WRITES.iter().chain([&RTT]) {
        let ours = samples.median("ours", measure, |&v| v)?;
        let libx = samples.median("libxenvchan", measure, |&v| v)?;
        let ratio = ours / libx;
        let rtt = *measure == RTT;
        let (unit, key) = if rtt { ("us", "us") } else { ("MB/s", "mbps") };
        let _ = writeln!(
            report.table,
            "{measure:<12} {ours:>10.1} {libx:>16.1} {ratio:>10.3}   ({unit})"
        );
        let _ = writeln!(
            report.machine,
            "bench vchan {measure} ours_{key}={ours:.1} libxenvchan_{key}={libx:.1} ratio_libxenvchan={ratio:.3}"
        );
        if (rtt && ratio > 1.0) || (!rtt && ratio < 1.0) {
            report
                .missed
                .push(format!("{measure}: ours/libxenvchan {ratio:.3}"));
        }
    }
    Ok(report.finish(
        "targets",
        ": ours >= 1.0x libxenvchan's throughput at every size, <= 1.0x its round trip",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_in_mb_per_second_and_microseconds() {
        let mut lines = Vec::new();
        for (ours, libx) in [(1000, 2000), (4000, 2000), (1100, 1000)] {
            for measure in WRITES {
                lines.push(format!(
                    "bench-run impl=ours measure={measure} bytes=1000000 ns={ours}000"
                ));
                lines.push(format!(
                    "bench-run impl=libxenvchan measure={measure} bytes=1000000 ns={libx}000"
                ));
            }
            lines.push(format!(
                "bench-run impl=ours measure=rtt_1 rounds=100 ns={ours}000"
            ));
            lines.push(format!(
                "bench-run impl=libxenvchan measure=rtt_1 rounds=100 ns={libx}000"
            ));
        }
        let report = report(&parse_samples(lines.iter().map(String::as_str)).unwrap()).unwrap();
        // 1 MB in 1.1 ms is 909.1 MB/s; libxenvchan's median 2 ms is 500 MB/s.
        assert!(report.contains(
            "bench vchan write_64 ours_mbps=909.1 libxenvchan_mbps=500.0 ratio_libxenvchan=1.818\n"
        ));
        // The medians: 1.1 ms for 100 round trips is 11 us each, libxenvchan's 2 ms 20 us.
        assert!(report.contains(
            "bench vchan rtt_1 ours_us=11.0 libxenvchan_us=20.0 ratio_libxenvchan=0.550\n"
        ));
        assert!(report.contains("targets met"));
        assert!(
            parse_samples(["bench-run impl=ours measure=write_64 bytes=5 ns=0"].into_iter())
                .is_err()
        );
    }
}
