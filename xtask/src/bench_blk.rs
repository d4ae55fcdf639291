//! `cargo xtask bench blk`: sequential reads and writes of a disk served by Linux's blkback, by
//! xen-blk's frontend in the freestanding Rust PV domU, by Linux's own xen-blkfront in a Linux
//! PV domU (Debian's kernel, busybox `dd` with O_DIRECT) and by dom0 reading the backing loop
//! device directly (the upper bound), in one boot of an x86_64 dom0. Prints
//! `bench blk <measure> ours_mbps=… linux_mbps=… ratio_linux=… [dom0_mbps=…]` lines.

use std::fmt::Write as _;
use std::time::Duration;

use xen_testbed::initramfs::Preamble;
use xen_testbed::scenario::{self, Flavour, GuestKind};
use xen_testbed::verdict::DomuExpectation;
use xen_testbed::{Arch, linux_domu};
use xen_testbed_protocol::exchange::blk::{self, BENCH_MEASURES};

use crate::bench::{Bench, Report, Samples};

const USAGE: &str = "\
usage: cargo xtask bench blk [--pvh] [--rounds N] [--mib N]

Boots Xen with a Linux dom0 (x86_64) serving a loop device over an N MiB file (default 32) through
Linux's blkback. dom0 reads the device with O_DIRECT at 4 KiB and 64 KiB (the upper bound). The
Rust PV domU (xen-blk's frontend) reads and writes the whole disk sequentially in 4 KiB and 64 KiB
requests, 1 and at most 32 in flight. A Linux PV domU (Debian's kernel, xen-blkfront) does the same
with busybox `dd` O_DIRECT: one `dd` (queue depth 1), or 32 `dd`s over disjoint 32nds of the disk
at once (queue depth 32: busybox has no asynchronous I/O). N rounds (default 3), medians; the
target is ours >= 1.0x Linux's blkfront at depth 32. --pvh: the Rust domU is PVH (the Linux one
stays PV).";

/// The Linux domU's device (xl's vdev in `xen-dom0-tests blk-bench`).
const DEVICE: &str = "/dev/xvda";
/// The Linux domU's name.
const LINUX_DOMU: &str = "linux-blk-bench";

pub(crate) fn run(options: &[String]) -> crate::Result {
    let ours_kind = if options.iter().any(|o| o == "--pvh") {
        GuestKind::Pvh
    } else {
        GuestKind::Pv
    };
    let options: Vec<String> = options.iter().filter(|o| *o != "--pvh").cloned().collect();
    let mut mib = [32];
    let (rounds, _) = crate::bench::options(&options, (3, 1), USAGE, &mut [("--mib", &mut mib)])?;
    let [mib] = mib;
    if mib % 32 != 0 || mib > 64 {
        return Err(format!(
            "--mib {mib}: a multiple of 32, at most 64\n{USAGE}"
        ));
    }
    let testbed = crate::testbed::testbed();
    let artifacts = testbed.fetch(Arch::X86_64).map_err(|e| e.to_string())?;
    let domu = linux_domu::build(
        &artifacts,
        &testbed.cache_dir().with_file_name("bench"),
        LINUX_DOMU,
        &domu_script(rounds, mib),
    )
    .map_err(|e| e.to_string())?;
    let (kernel, ramdisk) = ("/lib/xentest/linux-kernel", "/lib/xentest/linux-initramfs");
    let ours =
        scenario::build_guest(&testbed, ours_kind, Flavour::Domu).map_err(|e| e.to_string())?;
    let ours_domu = scenario::domu_name(ours_kind);
    let (ours_type, ours_memory) = scenario::xl_type_and_memory(ours_kind);
    let ours_kernel = format!("/lib/xentest/{ours_domu}");
    Bench {
        name: "blk",
        driver: ("xen-dom0-tests", "xen-dom0-tests"),
        peer: None,
        preamble: Preamble::BlockBackend,
        commands: vec![format!(
            "blk-bench {rounds} {mib} --name {ours_domu} --type {ours_type} \
             --memory {ours_memory} --kernel {ours_kernel} -- --name {LINUX_DOMU} --type pv \
             --memory {} --kernel {kernel} --ramdisk {ramdisk} --cmdline '{}'",
            linux_domu::MEMORY_MIB,
            linux_domu::CMDLINE
        )],
        cases: &["blk_bench_dom0", "blk_bench_ours", "blk_bench_linux"],
        // dom0's boot and reads, then each domU's run as long as dom0 gives it (its
        // `run_timeout`), so that dom0 reports a domU that overran.
        timeout: Duration::from_secs(120 + 2 * (30 + rounds * mib * 2)),
        files: vec![
            (ours_kernel, ours),
            (kernel.into(), domu.kernel),
            (ramdisk.into(), domu.ramdisk),
        ],
        domus: vec![DomuExpectation {
            name: ours_domu,
            label: "domu".into(),
            cases: blk::BENCH_DOMU_CASES
                .iter()
                .map(|c| c.to_string())
                .collect(),
        }],
        dom0_memory_mib: Some(linux_domu::DOM0_MEMORY_MIB),
    }
    .run(
        &format!("block benchmark: {rounds} rounds over a {mib} MiB disk"),
        "; software-emulated, on a shared machine",
        |lines| report(&parse_samples(lines.iter().copied())?),
    )
}

/// The Linux domU's script: waits for its disk, then `rounds` times each of [`BENCH_MEASURES`],
/// printing a [`blk::BENCH_RESULT`] line (times from `/proc/uptime`) per run.
fn domu_script(rounds: u64, mib: u64) -> String {
    let bytes = mib << 20;
    let mut script = format!(
        "i=0; while [ ! -b {DEVICE} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n\
         uptime_now() {{ read now _ < /proc/uptime; echo $now; }}\n\
         timed() {{ measure=$1; shift; start=$(uptime_now); \"$@\" || echo \"blkbench-failed $measure\"; \
         echo \"{}$measure {bytes} $start $(uptime_now)\"; }}\n",
        blk::BENCH_RESULT
    );
    for (name, size, parallel, write) in BENCH_MEASURES {
        let count = bytes / size as u64 / parallel as u64;
        let (input, output, flag, offset) = if write {
            ("/dev/zero", DEVICE, "oflag=direct", "seek")
        } else {
            (DEVICE, "/dev/null", "iflag=direct", "skip")
        };
        let _ = writeln!(
            script,
            "run_{name}() {{ for j in $(seq 0 {}); do dd if={input} of={output} bs={size} \
             count={count} {offset}=$((j*{count})) {flag} 2>/dev/null & done; wait; }}",
            parallel - 1
        );
    }
    let _ = writeln!(script, "for round in $(seq {rounds}); do");
    for (name, ..) in BENCH_MEASURES {
        let _ = writeln!(script, "  timed {name} run_{name}");
    }
    script.push_str("done\n");
    script
}

/// One sample: ns and bytes.
pub(crate) type Sample = (f64, f64);

/// Parses `bench-run impl=<impl> measure=<measure> iterations=1 ns=<ns> bytes=<n>` (the block
/// benchmarks' lines, frontend and backend).
pub(crate) fn parse_samples<'a>(
    lines: impl Iterator<Item = &'a str>,
) -> crate::Result<Samples<Sample>> {
    Samples::parse(lines, "measure", |run| {
        Ok((run.per_iteration("ns")?, run.number("bytes")?))
    })
}

/// The median MB/s of `implementation` on `measure`.
pub(crate) fn mbps(
    samples: &Samples<Sample>,
    implementation: &str,
    measure: &str,
) -> crate::Result<f64> {
    samples.median(implementation, measure, |(ns, bytes)| {
        bytes / (ns / 1e9) / 1e6
    })
}

/// The table, the target (ours >= 1.0x Linux's blkfront at depth 32) and the machine-readable
/// lines (with dom0's direct reads where dom0 measured the same).
fn report(samples: &Samples<Sample>) -> crate::Result<String> {
    let mut report = Report::default();
    for (name, _, depth, _) in BENCH_MEASURES {
        let ours = mbps(samples, "ours", name)?;
        let linux = mbps(samples, "linux", name)?;
        let ratio = ours / linux;
        let dom0 = match samples.of("dom0", name) {
            Ok(_) => Some(mbps(samples, "dom0", name)?),
            Err(_) => None,
        };
        let _ = write!(
            report.table,
            "{name}: ours {ours:.1} MB/s, Linux blkfront {linux:.1} MB/s, ours/Linux {ratio:.3}"
        );
        let _ = write!(
            report.machine,
            "bench blk {name} ours_mbps={ours:.1} linux_mbps={linux:.1} ratio_linux={ratio:.3}"
        );
        if let Some(dom0) = dom0 {
            let _ = write!(report.table, ", dom0 direct {dom0:.1} MB/s");
            let _ = write!(report.machine, " dom0_mbps={dom0:.1}");
        }
        report.table.push('\n');
        report.machine.push('\n');
        if depth > 1 && ratio < 1.0 {
            report
                .missed
                .push(format!("{name}: ours/Linux {ratio:.3} < 1.0"));
        }
    }
    Ok(report.finish("target", ": ours >= 1.0x Linux's blkfront at depth 32"))
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
                    "bench-run impl=linux measure={name} iterations=1 ns={ns} bytes=8000000"
                ));
                lines.push(format!(
                    "bench-run impl=ours measure={name} iterations=1 ns={} bytes=8000000",
                    ns / 2
                ));
            }
        }
        lines.push(
            "bench-run impl=dom0 measure=read_4k_qd1 iterations=1 ns=1000000000 bytes=8000000"
                .into(),
        );
        let report = report(&parse_samples(lines.iter().map(String::as_str)).unwrap()).unwrap();
        assert!(report.contains(
            "bench blk read_4k_qd1 ours_mbps=8.0 linux_mbps=4.0 ratio_linux=2.000 dom0_mbps=8.0\n"
        ));
        assert!(
            report.contains(
                "bench blk write_64k_qd32 ours_mbps=8.0 linux_mbps=4.0 ratio_linux=2.000\n"
            )
        );
        assert!(report.contains("target met"));
    }

    #[test]
    fn slower_at_depth_32_misses_the_target() {
        let mut lines = Vec::new();
        for (name, _, depth, _) in BENCH_MEASURES {
            let ours = if depth > 1 {
                3_000_000_000u64
            } else {
                1_000_000_000
            };
            lines.push(format!(
                "bench-run impl=ours measure={name} iterations=1 ns={ours} bytes=8000000"
            ));
            lines.push(format!(
                "bench-run impl=linux measure={name} iterations=1 ns=2000000000 bytes=8000000"
            ));
        }
        let report = report(&parse_samples(lines.iter().map(String::as_str)).unwrap()).unwrap();
        assert!(report.contains("target missed: read_4k_qd32: ours/Linux 0.667 < 1.0;"));
        assert!(!report.contains("read_4k_qd1: ours/Linux 2.000 <"));
        lines.retain(|line| !line.contains("impl=linux measure=write_64k_qd32"));
        assert!(report_of(&lines).is_err());
    }

    fn report_of(lines: &[String]) -> crate::Result<String> {
        report(&parse_samples(lines.iter().map(String::as_str))?)
    }

    #[test]
    fn the_domu_script_splits_the_disk_among_the_parallel_dds() {
        let script = domu_script(2, 32);
        assert!(script.contains(
            "run_read_4k_qd32() { for j in $(seq 0 31); do dd if=/dev/xvda of=/dev/null bs=4096 \
             count=256 skip=$((j*256)) iflag=direct"
        ));
        assert!(
            script.contains("for round in $(seq 2); do\n  timed read_4k_qd1 run_read_4k_qd1\n")
        );
    }
}
