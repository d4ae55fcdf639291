//! `cargo xtask bench console`: Xen's log read by xen-console against Debian's `xl dmesg`, and a
//! domU's console ring into Debian's xenconsoled, timed in a Linux dom0 on real Xen (x86_64,
//! under QEMU), in one boot.
//!
//! Builds `xen-dom0-tests` (whose `console-bench` command is the driver) and the freestanding PV
//! domU, boots dom0 with the toolstack once and prints, per measure, one
//! `bench console <measure> ours_ns=… <peer>_ns=… ratio_<peer>=…` line (the ring's lines carry
//! `ours_ns` and `mb_s`: it has no peer).

use std::time::Duration;

use xen_testbed::initramfs::Preamble;
use xen_testbed::scenario::{self, Flavour, GuestKind};
use xen_testbed::verdict::DomuExpectation;
use xen_testbed_protocol::bulk;

use crate::bench::{Bench, Report, Samples};

const USAGE: &str = "\
usage: cargo xtask bench console [--rounds N] [--bytes N]

Boots Xen with a Linux dom0 (x86_64) running Debian's toolstack. Times reading Xen's whole log
ring as a fresh process each time: `xen-dom0-tests dmesg` (xen-console's log reader over privcmd)
against Debian's `xl dmesg` (both print the same text, checked first), N interleaved rounds
(default 11). Then a PV domU writes N bytes (default 262144, a multiple of 64) through its console
ring in writes of 1, 64 and 4096 bytes, each run drained by xenconsoled before the next, 5 rounds
at most; dom0 times each run from the growth of xenconsoled's log. Medians.";

pub(crate) fn run(options: &[String]) -> crate::Result {
    let mut bytes = [256 * 1024];
    let (rounds, _) =
        crate::bench::options(options, (11, 1), USAGE, &mut [("--bytes", &mut bytes)])?;
    let [bytes] = bytes;
    if bytes % bulk::LINE_LEN as u64 != 0 {
        return Err(format!("--bytes {bytes}: not a multiple of 64\n{USAGE}"));
    }
    let ring_rounds = rounds.min(5);
    let testbed = crate::testbed::testbed();
    let kernel =
        scenario::build_guest(&testbed, GuestKind::Pv, Flavour::Domu).map_err(|e| e.to_string())?;
    let domu = scenario::domu_name(GuestKind::Pv);
    let (xl_type, memory) = scenario::xl_type_and_memory(GuestKind::Pv);
    let path = format!("/lib/xentest/{domu}");
    Bench {
        name: "console",
        driver: ("xen-dom0-tests", "xen-dom0-tests"),
        peer: None,
        preamble: Preamble::Toolstack { fault: None },
        commands: vec![format!(
            "console-bench {rounds} {ring_rounds} {bytes} --name {domu} --type {xl_type} \
             --memory {memory} --kernel {path}"
        )],
        cases: &["bench_console"],
        // Under software emulation: about 0.1 s a log read, 1 s or more per 256 KiB.
        timeout: Duration::from_secs(240 + rounds / 2 + ring_rounds * 3 * bytes / 50_000),
        files: vec![(path, kernel)],
        domus: vec![DomuExpectation {
            name: domu,
            label: "domu".into(),
            cases: vec!["console_ring_bench".into()],
        }],
        dom0_memory_mib: None,
    }
    .run(
        &format!(
            "console benchmark: {rounds} rounds of log reads, {ring_rounds} rounds of {bytes} \
             bytes per write size"
        ),
        "; software-emulated, on a shared machine",
        |lines| report(&parse_samples(lines.iter().copied())?),
    )
}

/// One sample: ns and bytes.
type Sample = (f64, f64);

/// Parses `bench-run impl=<impl> measure=<measure> iterations=1 ns=<ns> bytes=<n>`.
fn parse_samples<'a>(lines: impl Iterator<Item = &'a str>) -> crate::Result<Samples<Sample>> {
    Samples::parse(lines, "measure", |run| {
        Ok((run.per_iteration("ns")?, run.number("bytes")?))
    })
}

/// The table, the target and the machine-readable lines.
fn report(samples: &Samples<Sample>) -> crate::Result<String> {
    use std::fmt::Write;
    let mut report = Report::default();
    let ours = samples.median("ours", "dmesg", |s| s.0)?;
    let xl = samples.median("xl_dmesg", "dmesg", |s| s.0)?;
    let log_bytes = samples.median("ours", "dmesg", |s| s.1)?;
    let ratio = ours / xl;
    let _ = writeln!(
        report.table,
        "Xen's whole log ({log_bytes:.0} bytes), a fresh process each: ours {:.2} ms, \
         xl dmesg {:.2} ms, ours/xl {ratio:.3}",
        ours / 1e6,
        xl / 1e6
    );
    let _ = writeln!(
        report.machine,
        "bench console dmesg_process ours_ns={ours:.0} xl_dmesg_ns={xl:.0} ratio_xl_dmesg={ratio:.3}"
    );
    if ratio > 1.0 {
        report
            .missed
            .push(format!("log read: ours/xl dmesg {ratio:.3} > 1.0"));
    }
    for size in bulk::BENCH_WRITE_SIZES {
        let measure = format!("ring_{size}");
        let ns = samples.median("ours", &measure, |s| s.0)?;
        let bytes = samples.median("ours", &measure, |s| s.1)?;
        let mb_s = bytes / (ns / 1e9) / 1e6;
        let _ = writeln!(
            report.table,
            "domU console ring -> xenconsoled's log, {bytes:.0} bytes in {size}-byte writes: \
             {:.1} ms, {mb_s:.3} MB/s",
            ns / 1e6
        );
        let _ = writeln!(
            report.machine,
            "bench console {measure} ours_ns={ns:.0} bytes={bytes:.0} mb_s={mb_s:.3}"
        );
    }
    Ok(report.finish("target", ": ours <= 1.0x xl dmesg"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_ratios_and_machine_lines() {
        let mut lines = Vec::new();
        for (ours, xl) in [(10, 30), (20, 40), (30, 20)] {
            lines.push(format!(
                "bench-run impl=ours measure=dmesg iterations=1 ns={ours} bytes=100"
            ));
            lines.push(format!(
                "bench-run impl=xl_dmesg measure=dmesg iterations=1 ns={xl} bytes=100"
            ));
        }
        for size in bulk::BENCH_WRITE_SIZES {
            lines.push(format!(
                "bench-run impl=ours measure=ring_{size} iterations=1 ns=500000000 bytes=1000000"
            ));
        }
        let report = report(&parse_samples(lines.iter().map(String::as_str)).unwrap()).unwrap();
        assert!(report.contains(
            "bench console dmesg_process ours_ns=20 xl_dmesg_ns=30 ratio_xl_dmesg=0.667\n"
        ));
        assert!(
            report.contains("bench console ring_64 ours_ns=500000000 bytes=1000000 mb_s=2.000\n")
        );
        assert!(report.contains("target met"));
        assert!(parse_samples(["bench-run impl=ours measure=dmesg ns=5"].into_iter()).is_err());
    }
}
