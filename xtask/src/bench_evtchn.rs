//! `cargo xtask bench evtchn`: xen-evtchn against libxenevtchn and the raw
//! device floor, timed in a Linux dom0 on real Xen (x86_64, under QEMU), and
//! the event-channel soak in the same boot.
//!
//! Builds `tests/bench/libxenevtchn_bench.c` (statically against Debian's
//! `libxen-dev`) and `xen-dom0-tests` (whose `evtchn-bench` and `evtchn-soak`
//! commands are the Rust side), boots dom0 once, and prints medians, ratios and
//! one `bench evtchn <measure> ours_ns=… <peer>_ns=… ratio_<peer>=…` line each.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use xen_testbed::{Arch, Dom0Run, Testbed};

use crate::bench::{BenchRun, median};

const USAGE: &str = "\
usage: cargo xtask bench evtchn [--rounds N] [--iterations N] [--soak ROUND_TRIPS CYCLES]

Boots Xen with a Linux dom0 (x86_64) and times, on loopback channels: the notify -> wake round
trip (floor, libxenevtchn, xen-evtchn sync, xen-evtchn tokio), and collecting N = 1, 64, 1000
pending ports (time and read calls). N rounds (default 5), round trips per sample (default 2000),
medians. Then the soak: ping-pong round trips (default 200000) and bind/unbind cycles (default
10000), each checked.";

const LIBXEN_DIR: &str = "/usr/lib/x86_64-linux-gnu";
const DOM0_TESTS: &str = "xen-dom0-tests";

pub(crate) fn run(options: &[String]) -> crate::Result {
    let (mut rounds, mut iterations, mut trips, mut cycles) =
        (5u64, 2000u64, 200_000u64, 10_000u64);
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let mut value = || -> crate::Result<u64> {
            options
                .next()
                .and_then(|v| v.parse().ok())
                .filter(|&v| v > 0)
                .ok_or_else(|| format!("{option} needs a positive number\n{USAGE}"))
        };
        match option.as_str() {
            "--rounds" => rounds = value()?,
            "--iterations" => iterations = value()?,
            "--soak" => (trips, cycles) = (value()?, value()?),
            _ => return Err(format!("unknown option `{option}`\n{USAGE}")),
        }
    }
    let testbed = crate::testbed::testbed();
    let c_bench = build_c_program(&testbed)?;
    testbed
        .build_static(DOM0_TESTS, &[Arch::X86_64])
        .map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let outcome = testbed
        .boot_linux_dom0(&Dom0Run {
            name: "bench-evtchn-x86_64".into(),
            arch: Arch::X86_64,
            binaries: vec![
                (
                    DOM0_TESTS.into(),
                    testbed.static_binary(Arch::X86_64, DOM0_TESTS),
                ),
                ("libxenevtchn-bench".into(), c_bench),
            ],
            files: Vec::new(),
            preamble: Default::default(),
            domus: Vec::new(),
            commands: vec![
                format!("{DOM0_TESTS} evtchn-bench /bin/libxenevtchn-bench {rounds} {iterations}"),
                format!("{DOM0_TESTS} evtchn-soak {trips} {cycles}"),
            ],
            expected_cases: vec!["bench_evtchn".into(), "evtchn_soak".into()],
            expected_dones: 2,
            timeout: Duration::from_secs(
                300 + rounds * iterations / 50 + trips / 100 + cycles / 50,
            ),
        })
        .map_err(|e| e.to_string())?;
    for line in outcome
        .log
        .outputs()
        .filter(|l| !l.starts_with("bench-run "))
    {
        println!("{line}");
    }
    if !outcome.verdict.passed() {
        return Err(format!(
            "the benchmark run failed: {:?} (log: {})",
            outcome.verdict.failures(),
            outcome.log_path.display()
        ));
    }
    println!(
        "evtchn benchmark: {rounds} rounds, {iterations} round trips per sample, one boot \
         (QEMU {:.1} s, whole command {:.1} s)\n",
        outcome.run.wall.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    print!("{}", report(&parse_samples(outcome.log.outputs())?)?);
    Ok(())
}

fn build_c_program(testbed: &Testbed) -> crate::Result<PathBuf> {
    let library = Path::new(LIBXEN_DIR).join("libxenevtchn.a");
    if !library.exists() || !Path::new("/usr/include/xenevtchn.h").exists() {
        return Err(format!(
            "{} or xenevtchn.h is missing: install Debian's libxen-dev",
            library.display()
        ));
    }
    let out_dir = testbed.logs_dir().with_file_name("bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let out = out_dir.join("libxenevtchn-bench");
    let source = crate::workspace_root().join("tests/bench/libxenevtchn_bench.c");
    crate::run_command(
        Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
            .args(["-O2", "-Wall", "-Wextra", "-Werror", "-static", "-o"])
            .arg(&out)
            .arg(&source)
            .arg(format!("-L{LIBXEN_DIR}"))
            .args(["-lxenevtchn", "-lxentoolcore", "-lxentoollog"]),
    )?;
    Ok(out)
}

/// Per (implementation, measure): the samples' ns per iteration and reads per sample.
type Samples = BTreeMap<(String, String), Vec<(f64, f64)>>;

/// Parses `bench-run impl=<impl> measure=<m> iterations=<n> ns=<total> reads=<n>`.
fn parse_samples<'a>(lines: impl Iterator<Item = &'a str>) -> crate::Result<Samples> {
    let mut samples = Samples::new();
    for run in BenchRun::all(lines) {
        samples
            .entry((
                run.text("impl")?.to_string(),
                run.text("measure")?.to_string(),
            ))
            .or_default()
            .push((run.per_iteration("ns")?, run.number("reads")?));
    }
    if samples.is_empty() {
        return Err("the benchmark printed no results".into());
    }
    Ok(samples)
}

/// Median ns and median reads of `implementation` on `measure`.
fn medians(samples: &Samples, implementation: &str, measure: &str) -> crate::Result<(f64, f64)> {
    let runs = samples
        .get(&(implementation.to_string(), measure.to_string()))
        .filter(|r| !r.is_empty())
        .ok_or_else(|| format!("no result for {implementation} {measure}"))?;
    Ok((
        median(runs.iter().map(|r| r.0).collect()),
        median(runs.iter().map(|r| r.1).collect()),
    ))
}

fn report(samples: &Samples) -> crate::Result<String> {
    use std::fmt::Write;
    let (mut table, mut machine, mut missed) = (String::new(), String::new(), Vec::new());
    let (floor, _) = medians(samples, "floor", "roundtrip")?;
    let (libx, _) = medians(samples, "libxenevtchn", "roundtrip")?;
    let (ours, _) = medians(samples, "ours", "roundtrip")?;
    let (tokio, _) = medians(samples, "tokio", "roundtrip")?;
    let _ = writeln!(
        table,
        "round trip (notify -> wake, both ways), ns: floor {floor:.0}, libxenevtchn {libx:.0}, \
         ours {ours:.0} ({:.3}x libxenevtchn, {:.3}x floor), tokio {tokio:.0} ({:.3}x ours)",
        ours / libx,
        ours / floor,
        tokio / ours
    );
    let _ = writeln!(
        machine,
        "bench evtchn roundtrip ours_ns={ours:.0} libxenevtchn_ns={libx:.0} ratio_libxenevtchn={:.3} \
         floor_ns={floor:.0} ratio_floor={:.3}",
        ours / libx,
        ours / floor
    );
    let _ = writeln!(
        machine,
        "bench evtchn roundtrip_tokio ours_ns={tokio:.0} sync_ns={ours:.0} ratio_sync={:.3}",
        tokio / ours
    );
    if ours / libx > 1.0 {
        missed.push(format!(
            "sync round trip {:.3}x libxenevtchn > 1.0",
            ours / libx
        ));
    }
    if tokio / ours > 1.3 {
        missed.push(format!("tokio round trip {:.3}x sync > 1.3", tokio / ours));
    }
    for n in [1u32, 64, 1000] {
        let measure = format!("pending{n}");
        let (ours, ours_reads) = medians(samples, "ours", &measure)?;
        let (libx, libx_reads) = medians(samples, "libxenevtchn", &measure)?;
        let (floor, floor_reads) = medians(samples, "floor", &measure)?;
        let _ = writeln!(
            table,
            "{n} pending ports: ours {ours:.0} ns in {ours_reads} reads, libxenevtchn {libx:.0} ns \
             in {libx_reads} reads, floor {floor:.0} ns in {floor_reads} reads"
        );
        let _ = writeln!(
            machine,
            "bench evtchn {measure} ours_ns={ours:.0} libxenevtchn_ns={libx:.0} ratio_libxenevtchn={:.3} \
             ours_reads={ours_reads} libxenevtchn_reads={libx_reads} floor_ns={floor:.0} ratio_floor={:.3}",
            ours / libx,
            ours / floor
        );
        if ours_reads > f64::from(n.div_ceil(1024)) {
            missed.push(format!(
                "{n} pending ports in {ours_reads} reads > {}",
                n.div_ceil(1024)
            ));
        }
    }
    let _ = writeln!(table);
    if missed.is_empty() {
        let _ = writeln!(
            table,
            "targets met: sync <= 1.0x libxenevtchn, tokio <= 1.3x sync, N pending ports in ceil(N/1024) reads\n"
        );
    } else {
        let _ = writeln!(table, "targets missed: {}\n", missed.join("; "));
    }
    Ok(table + &machine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_ratios_and_machine_lines() {
        let mut lines = Vec::new();
        for (ours, libx, floor, tokio) in
            [(100, 200, 90, 120), (110, 210, 90, 130), (90, 190, 80, 110)]
        {
            for (imp, ns) in [
                ("ours", ours),
                ("libxenevtchn", libx),
                ("floor", floor),
                ("tokio", tokio),
            ] {
                lines.push(format!(
                    "bench-run impl={imp} measure=roundtrip iterations=10 ns={} reads=20",
                    ns * 10
                ));
            }
            for n in [1, 64, 1000] {
                lines.push(format!(
                    "bench-run impl=ours measure=pending{n} iterations=1 ns=500 reads=1"
                ));
                lines.push(format!(
                    "bench-run impl=libxenevtchn measure=pending{n} iterations=1 ns=900 reads={n}"
                ));
                lines.push(format!(
                    "bench-run impl=floor measure=pending{n} iterations=1 ns=450 reads=1"
                ));
            }
        }
        let report = report(&parse_samples(lines.iter().map(String::as_str)).unwrap()).unwrap();
        assert!(report.contains(
            "bench evtchn roundtrip ours_ns=100 libxenevtchn_ns=200 ratio_libxenevtchn=0.500 floor_ns=90 ratio_floor=1.111\n"
        ));
        assert!(
            report.contains(
                "bench evtchn roundtrip_tokio ours_ns=120 sync_ns=100 ratio_sync=1.200\n"
            )
        );
        assert!(report.contains("bench evtchn pending1000 ours_ns=500 libxenevtchn_ns=900"));
        assert!(report.contains("targets met"));
    }

    #[test]
    fn a_missing_measure_is_an_error() {
        let lines = ["bench-run impl=ours measure=roundtrip iterations=1 ns=5 reads=1"];
        assert!(report(&parse_samples(lines.into_iter()).unwrap()).is_err());
        assert!(parse_samples(["nothing"].into_iter()).is_err());
    }
}
