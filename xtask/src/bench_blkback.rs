//! `cargo xtask bench blkback`: a Linux PV domU's `dd` (O_DIRECT, 4 KiB and 1 MiB blocks, read
//! and write) against xen-blk's userspace backend and against Linux's in-kernel blkback, on the
//! same file in dom0's tmpfs (blkback through a loop device over it), in one boot of an x86_64
//! dom0 that also runs every case of the `blkback-linux-pv` scenario first. Prints
//! `bench blkback <measure> ours_mbps=… blkback_mbps=… ratio_blkback=…` lines.

use std::fmt::Write as _;
use std::time::Duration;

use xen_testbed::initramfs::Preamble;
use xen_testbed::{Arch, blkback, linux_domu};
use xen_testbed_protocol::exchange::blkback::BENCH_MEASURES;

use crate::bench::{Bench, Report, Samples};
use crate::bench_blk::{Sample, mbps, parse_samples};

const USAGE: &str = "\
usage: cargo xtask bench blkback [--rounds N]

Boots Xen with a Linux dom0 (x86_64) that hot-plugs a 32 MiB file in its tmpfs into a Linux PV
domU (Debian's kernel, xen-blkfront) with xen-blk's userspace backend, runs the blkback-linux-pv
cases, then attaches the file again with our backend (xvdb) and through Linux's blkback (a loop
device over the same file, xvdc). The domU times busybox `dd` with O_DIRECT on each: 4 MiB in
4 KiB blocks and 16 MiB in 1 MiB blocks, read and write. N rounds (default 3), medians; the
target is ours >= 0.8x blkback.";

/// The target ratio.
const TARGET: f64 = 0.8;

pub(crate) fn run(options: &[String]) -> crate::Result {
    let (rounds, _) = crate::bench::options(options, (3, 1), USAGE, &mut [])?;
    let rounds = u32::try_from(rounds).map_err(|_| format!("--rounds {rounds}\n{USAGE}"))?;
    let testbed = crate::testbed::testbed();
    let artifacts = testbed.fetch(Arch::X86_64).map_err(|e| e.to_string())?;
    let files = blkback::domu_files(&testbed, &artifacts, "bench-blkback", rounds)
        .map_err(|e| e.to_string())?;
    Bench {
        name: "blkback",
        driver: ("xen-dom0-tests", "xen-dom0-tests"),
        peer: None,
        preamble: Preamble::BlockBackend,
        commands: vec![blkback::arguments(rounds)],
        cases: blkback::BENCH_DOM0_CASES,
        // The cases, then each round's 2 x 40 MiB per backend at 1 MiB/s or better.
        timeout: Duration::from_secs(240 + 160 * u64::from(rounds)),
        files,
        domus: Vec::new(),
        dom0_memory_mib: Some(linux_domu::DOM0_MEMORY_MIB),
    }
    .run(
        &format!("userspace block backend benchmark: {rounds} rounds"),
        "; software-emulated, on a shared machine",
        |lines| report(&parse_samples(lines.iter().copied())?),
    )
}

/// The table, the target and the machine-readable lines.
fn report(samples: &Samples<Sample>) -> crate::Result<String> {
    let mut report = Report::default();
    for (name, ..) in BENCH_MEASURES {
        let ours = mbps(samples, "ours", name)?;
        let kernel = mbps(samples, "blkback", name)?;
        let ratio = ours / kernel;
        let _ = writeln!(
            report.table,
            "{name}: ours {ours:.2} MB/s, Linux blkback {kernel:.2} MB/s, ours/blkback {ratio:.3}"
        );
        let _ = writeln!(
            report.machine,
            "bench blkback {name} ours_mbps={ours:.2} blkback_mbps={kernel:.2} ratio_blkback={ratio:.3}"
        );
        if ratio < TARGET {
            report
                .missed
                .push(format!("{name}: ours/blkback {ratio:.3} < {TARGET}"));
        }
    }
    Ok(report.finish("target", ": ours >= 0.8x Linux's blkback"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_ratios() {
        let mut lines = Vec::new();
        for (name, ..) in BENCH_MEASURES {
            for ns in [1_000_000_000, 2_000_000_000, 4_000_000_000u64] {
                lines.push(format!(
                    "bench-run impl=blkback measure={name} iterations=1 ns={ns} bytes=8000000"
                ));
                lines.push(format!(
                    "bench-run impl=ours measure={name} iterations=1 ns={} bytes=8000000",
                    ns * 2
                ));
            }
        }
        let report = report(&parse_samples(lines.iter().map(String::as_str)).unwrap()).unwrap();
        assert!(
            report.contains(
                "bench blkback read_4k ours_mbps=2.00 blkback_mbps=4.00 ratio_blkback=0.500"
            ),
            "{report}"
        );
        assert!(
            report.contains("read_4k: ours/blkback 0.500 < 0.8"),
            "{report}"
        );
    }
}
