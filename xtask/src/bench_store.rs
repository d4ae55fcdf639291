//! `cargo xtask bench store`: the xenstore client against Debian's libxenstore, both talking to
//! Debian's C `xenstored` over its socket in a Linux dom0 on real Xen (x86_64, under QEMU).
//!
//! Builds `tests/store-bench` (the Rust driver, which also times this client) and its C program
//! (libxenstore, linked statically against Debian's `libxen-dev`), boots the testbed's dom0 with
//! the toolstack once, runs interleaved rounds there, and prints the medians and ratios, ending
//! with one machine-readable line per measure:
//! `bench store <measure> ours_ns=… libxenstore_ns=… ratio_libxenstore=…`, where the ratio is
//! ours' throughput over libxenstore's (libxenstore's ns per operation over ours). The
//! `<op>_64_in_flight_4conn` and `_8conn` measures spread the same 64 in flight over 4 or 8
//! connections served in turn from one thread (ns = total time over operations).
//!
//! The floor of one connection follows: the same window as our 64 in flight (refilled a quarter
//! at a time, one write per refill) on a raw socket from pre-encoded requests, so nearly all the
//! time is xenstored's: `bench store <op>_64_floor raw_ns=… libxenstore_ns=… ratio_libxenstore=…
//! ours64_of_floor=…`, the last being our 64-in-flight throughput over the floor's. C xenstored
//! serves one request per connection and poll loop, and writes a reply's header and payload in
//! two loops, so the floor bounds what any client reaches on one connection.

use std::time::Duration;

use xen_testbed::initramfs::Preamble;

use crate::bench::{Bench, CProgram, Report, Samples};

const USAGE: &str = "\
usage: cargo xtask bench store [--rounds N] [--iterations N]

Boots Xen with a Linux dom0 (x86_64) running Debian's xenstored and times xenstore reads and
writes over its socket: libxenstore (xs_read/xs_write, one in flight), this client with one in
flight, with 64 in flight on one connection and spread over 4 and 8, and the floor of one connection (the same 64 in flight from a raw
socket sending pre-encoded requests). N rounds (default 5) of N operations each (default 2000), median per
operation.";

/// (measure, operation, implementation in the driver's lines, target throughput ratio over
/// libxenstore; none for the floor).
const MEASURES: [(&str, &str, &str, Option<f64>); 10] = [
    ("read", "read", "ours", Some(1.0)),
    ("write", "write", "ours", Some(1.0)),
    ("read_64_in_flight", "read", "ours64", Some(3.0)),
    ("write_64_in_flight", "write", "ours64", Some(3.0)),
    ("read_64_in_flight_4conn", "read", "ours64x4", Some(3.0)),
    ("write_64_in_flight_4conn", "write", "ours64x4", Some(3.0)),
    ("read_64_in_flight_8conn", "read", "ours64x8", Some(3.0)),
    ("write_64_in_flight_8conn", "write", "ours64x8", Some(3.0)),
    ("read_64_floor", "read", "raw64", None),
    ("write_64_floor", "write", "raw64", None),
];

pub(crate) fn run(options: &[String]) -> crate::Result {
    let (rounds, iterations) = crate::bench::options(options, (5, 2000), USAGE, &mut [])?;
    let operations = rounds * iterations * 12;
    Bench {
        name: "store",
        driver: ("xen-store-bench", "store-bench"),
        peer: Some(CProgram {
            source: "tests/store-bench/libxenstore_bench.c",
            header: "xenstore.h",
            name: "libxenstore-bench",
            link: &["-lxenstore", "-lxentoolcore", "-lpthread"],
        }),
        preamble: Preamble::Toolstack { fault: None },
        commands: vec![format!("/bin/libxenstore-bench {rounds} {iterations}")],
        cases: &["bench_store"],
        // Under software emulation an operation takes about a millisecond.
        timeout: Duration::from_secs(180 + operations * 5 / 1000),
        files: Vec::new(),
        domus: Vec::new(),
        dom0_memory_mib: None,
    }
    .run(
        &format!(
            "store benchmark: {rounds} rounds x {iterations} operations per implementation and measure"
        ),
        "",
        |lines| report(&parse_samples(lines.iter().copied())?),
    )
}

/// Parses `bench-run impl=<impl> measure=<read|write> iterations=<n> ns=<total>`.
fn parse_samples<'a>(lines: impl Iterator<Item = &'a str>) -> crate::Result<Samples<f64>> {
    Samples::parse(lines, "measure", |run| run.per_iteration("ns"))
}

/// The table, the targets and the machine-readable lines.
fn report(samples: &Samples<f64>) -> crate::Result<String> {
    use std::fmt::Write;
    let mut report = Report::default();
    let _ = writeln!(
        report.table,
        "{:<24} {:>10} {:>15} {:>22} {:>7} {:>15}",
        "measure", "ns", "libxenstore ns", "throughput vs libx", "target", "ours64/floor"
    );
    for (measure, op, implementation, target) in MEASURES {
        let ns = samples.median(implementation, op, |&ns| ns)?;
        let libxenstore = samples.median("libxenstore", op, |&ns| ns)?;
        let ratio = libxenstore / ns;
        let (key, target_text, of_floor) = match target {
            Some(target) => ("ours", format!("{target:.1}x"), String::new()),
            // The floor: how much of it our 64 in flight reach.
            None => {
                let ours64 = samples.median("ours64", op, |&ns| ns)?;
                ("raw", "-".into(), format!("{:.3}", ns / ours64))
            }
        };
        let _ = writeln!(
            report.table,
            "{measure:<24} {ns:>10.0} {libxenstore:>15.0} {ratio:>22.3} {target_text:>7} {of_floor:>15}"
        );
        let floor_key = if of_floor.is_empty() {
            String::new()
        } else {
            format!(" ours64_of_floor={of_floor}")
        };
        let _ = writeln!(
            report.machine,
            "bench store {measure} {key}_ns={ns:.0} libxenstore_ns={libxenstore:.0} \
             ratio_libxenstore={ratio:.3}{floor_key}"
        );
        if let Some(target) = target.filter(|&target| ratio < target) {
            report
                .missed
                .push(format!("{measure}: {ratio:.3}x < {target:.1}x"));
        }
    }
    Ok(report.finish("targets", ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_ratios_and_machine_lines() {
        let mut lines = Vec::new();
        for (ours, ours64, libx) in [(100, 20, 200), (120, 30, 240), (110, 25, 220)] {
            for measure in ["read", "write"] {
                for (implementation, ns) in [
                    ("ours", ours),
                    ("ours64", ours64),
                    ("ours64x4", ours64 - 10),
                    ("ours64x8", ours64 - 12),
                    ("libxenstore", libx),
                    ("raw64", ours64 - 5),
                ] {
                    lines.push(format!(
                        "bench-run impl={implementation} measure={measure} iterations=10 ns={}",
                        ns * 10
                    ));
                }
            }
        }
        lines.push("something else".into());
        let samples = parse_samples(lines.iter().map(String::as_str)).unwrap();
        let report = report(&samples).unwrap();
        assert!(
            report.contains(
                "bench store read ours_ns=110 libxenstore_ns=220 ratio_libxenstore=2.000"
            )
        );
        assert!(report.contains(
            "bench store write_64_in_flight ours_ns=25 libxenstore_ns=220 ratio_libxenstore=8.800"
        ));
        assert!(report.contains(
            "bench store read_64_in_flight_4conn ours_ns=15 libxenstore_ns=220 \
             ratio_libxenstore=14.667"
        ));
        assert!(report.contains(
            "bench store write_64_in_flight_8conn ours_ns=13 libxenstore_ns=220 \
             ratio_libxenstore=16.923"
        ));
        assert!(report.contains("targets met"));
        assert!(report.contains(
            "bench store read_64_floor raw_ns=20 libxenstore_ns=220 ratio_libxenstore=11.000 \
             ours64_of_floor=0.800"
        ));
        assert!(parse_samples(["bench-run impl=ours measure=read ns=1"].into_iter()).is_err());
    }
}
