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
    "vchan_rust_to_rust_tokio",
    "bench_vchan",
];

/// The write sizes timed.
const CHUNKS: &[&str] = &["64", "4096", "65536"];

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
    }
    .run(
        &format!("vchan benchmark: {rounds} rounds of {mib} MiB (1/8 of it for 64-byte writes) per implementation and write size"),
        "; software-emulated, on a shared machine",
        |lines| report(&parse_samples(lines.iter().copied())?),
    )
}

/// Parses `bench-run impl=<impl> chunk=<bytes> bytes=<n> ns=<total>` into MB/s.
fn parse_samples<'a>(lines: impl Iterator<Item = &'a str>) -> crate::Result<Samples<f64>> {
    Samples::parse(lines, "chunk", |run| {
        let ns = run.number("ns")?;
        if ns <= 0.0 {
            return Err(format!("no time in a sample of {}", run.text("impl")?));
        }
        Ok(run.number("bytes")? * 1e3 / ns)
    })
}

/// The table, the target (ours >= 1.0x libxenvchan's throughput) and the machine lines.
fn report(samples: &Samples<f64>) -> crate::Result<String> {
    use std::fmt::Write;
    let mut report = Report::default();
    let _ = writeln!(
        report.table,
        "{:<8} {:>10} {:>16} {:>10}",
        "write", "ours MB/s", "libxenvchan MB/s", "ours/libx"
    );
    for chunk in CHUNKS {
        let ours = samples.median("ours", chunk, |&v| v)?;
        let libx = samples.median("libxenvchan", chunk, |&v| v)?;
        let ratio = ours / libx;
        let _ = writeln!(
            report.table,
            "{chunk:<8} {ours:>10.1} {libx:>16.1} {ratio:>10.3}"
        );
        let _ = writeln!(
            report.machine,
            "bench vchan write_{chunk} ours_mbps={ours:.1} libxenvchan_mbps={libx:.1} ratio_libxenvchan={ratio:.3}"
        );
        if ratio < 1.0 {
            report
                .missed
                .push(format!("write_{chunk}: ours/libxenvchan {ratio:.3} < 1.0"));
        }
    }
    Ok(report.finish(
        "target",
        ": ours >= 1.0x libxenvchan's throughput at every size",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_in_mb_per_second() {
        let mut lines = Vec::new();
        for (ours, libx) in [(1000, 2000), (4000, 2000), (1100, 1000)] {
            for chunk in CHUNKS {
                lines.push(format!(
                    "bench-run impl=ours chunk={chunk} bytes=1000000 ns={ours}000"
                ));
                lines.push(format!(
                    "bench-run impl=libxenvchan chunk={chunk} bytes=1000000 ns={libx}000"
                ));
            }
        }
        let report = report(&parse_samples(lines.iter().map(String::as_str)).unwrap()).unwrap();
        // 1 MB in 1.1 ms is 909.1 MB/s; libxenvchan's median 2 ms is 500 MB/s.
        assert!(report.contains(
            "bench vchan write_64 ours_mbps=909.1 libxenvchan_mbps=500.0 ratio_libxenvchan=1.818\n"
        ));
        assert!(report.contains("target met"));
        assert!(parse_samples(["bench-run impl=ours chunk=64 bytes=5 ns=0"].into_iter()).is_err());
    }
}
