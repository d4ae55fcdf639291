//! `cargo xtask bench privcmd`: the privcmd backend against libxencall and the raw ioctl floor,
//! timed in a Linux dom0 on real Xen (x86_64, under QEMU).
//!
//! Builds `tests/bench` (the Rust driver, which also times this backend) and its C program (the
//! floor and libxencall, linked statically against Debian's `libxen-dev`), boots the testbed's
//! Linux dom0 once, runs several interleaved rounds there, and prints the medians, the ratios and
//! `mmap`/`munmap` calls per hypercall, ending with one machine-readable line per call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use xen_testbed::{Arch, Dom0Run, Testbed};

const USAGE: &str = "\
usage: cargo xtask bench privcmd [--rounds N] [--iterations N]

Boots Xen with a Linux dom0 (x86_64) and times xen_version(VERSION), xen_version(EXTRAVERSION)
and memory_op(XENMEM_machine_memory_map) through the raw ioctl floor, libxencall and this
backend: N rounds (default 7) of N calls each (default 20000), median per call.";

/// The calls, in the order of the table.
const CALLS: [&str; 3] = ["version", "extraversion", "memory_map"];
/// What each call is, for the table.
const CALL_ABOUT: [&str; 3] = [
    "xen_version(VERSION), no buffer",
    "xen_version(EXTRAVERSION), one out buffer",
    "memory_op(machine_memory_map), two buffers",
];
/// The static libraries of Debian's `libxen-dev` the C program links.
const LIBXEN_DIR: &str = "/usr/lib/x86_64-linux-gnu";

pub(crate) fn run(args: &[String]) -> crate::Result {
    let (what, options) = args.split_first().ok_or_else(|| USAGE.to_string())?;
    if what != "privcmd" {
        return Err(format!("unknown benchmark `{what}`\n{USAGE}"));
    }
    let mut rounds = 7u32;
    let mut iterations = 20_000u32;
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let value = |v: Option<&String>| -> crate::Result<u32> {
            v.and_then(|v| v.parse().ok())
                .filter(|&v| v > 0)
                .ok_or_else(|| format!("{option} needs a positive number\n{USAGE}"))
        };
        match option.as_str() {
            "--rounds" => rounds = value(options.next())?,
            "--iterations" => iterations = value(options.next())?,
            _ => return Err(format!("unknown option `{option}`\n{USAGE}")),
        }
    }

    let testbed = crate::testbed::testbed();
    let c_bench = build_c_program(&testbed)?;
    testbed
        .build_static("xen-privcmd-bench", &[Arch::X86_64])
        .map_err(|e| e.to_string())?;
    let driver = testbed.static_binary(Arch::X86_64, "privcmd-bench");
    let started = std::time::Instant::now();
    let outcome = testbed
        .boot_linux_dom0(&Dom0Run {
            name: "bench-privcmd-x86_64".into(),
            arch: Arch::X86_64,
            binaries: vec![
                ("privcmd-bench".into(), driver),
                ("libxencall-bench".into(), c_bench),
            ],
            files: Vec::new(),
            preamble: Default::default(),
            commands: vec![format!(
                "privcmd-bench /bin/libxencall-bench {rounds} {iterations}"
            )],
            expected_cases: vec!["bench_privcmd".into()],
            expected_dones: 1,
            timeout: Duration::from_secs(120 + u64::from(rounds) * u64::from(iterations) / 100),
            domus: Vec::new(),
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
    let samples = parse_samples(outcome.log.outputs())?;
    println!(
        "privcmd benchmark: {rounds} rounds x {iterations} calls per implementation and call, \
         one boot (QEMU {:.1} s, whole command {:.1} s)\n",
        outcome.run.wall.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    print!("{}", report(&samples)?);
    Ok(())
}

/// Compiles `tests/bench/libxencall_bench.c` statically against libxencall, with `mmap` and
/// `munmap` wrapped so that it counts them.
fn build_c_program(testbed: &Testbed) -> crate::Result<PathBuf> {
    let libxencall = Path::new(LIBXEN_DIR).join("libxencall.a");
    if !libxencall.exists() || !Path::new("/usr/include/xencall.h").exists() {
        return Err(format!(
            "{} or xencall.h is missing: install Debian's libxen-dev (`apt-get install libxen-dev`)",
            libxencall.display()
        ));
    }
    // Next to the testbed's cache and logs: `<target>/testbed/bench`.
    let out_dir = testbed.logs_dir().with_file_name("bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let out = out_dir.join("libxencall-bench");
    let source = crate::workspace_root().join("tests/bench/libxencall_bench.c");
    crate::run_command(
        Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
            .args(["-O2", "-Wall", "-Wextra", "-Werror", "-static", "-o"])
            .arg(&out)
            .arg(&source)
            .arg("-Wl,--wrap=mmap,--wrap=munmap")
            .arg(format!("-L{LIBXEN_DIR}"))
            .args(["-lxencall", "-lxentoolcore", "-lxentoollog"]),
    )?;
    Ok(out)
}

/// One timed loop: nanoseconds per call and OS calls per hypercall.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    ns_per_call: f64,
    maps_per_call: f64,
}

/// The samples of each (implementation, call), from the `bench-run` lines.
type Samples = BTreeMap<(String, String), Vec<Sample>>;

/// Parses `bench-run impl=<impl> call=<call> iterations=<n> ns=<total> mmaps=<n> munmaps=<n>`.
fn parse_samples<'a>(lines: impl Iterator<Item = &'a str>) -> crate::Result<Samples> {
    let mut samples = Samples::new();
    for line in lines {
        let Some(fields) = line.strip_prefix("bench-run ") else {
            continue;
        };
        let fields: BTreeMap<&str, &str> = fields
            .split_whitespace()
            .filter_map(|f| f.split_once('='))
            .collect();
        let text = |key: &str| {
            fields
                .get(key)
                .copied()
                .ok_or_else(|| format!("`{line}` lacks {key}="))
        };
        let number = |key: &str| {
            text(key)?
                .parse::<f64>()
                .map_err(|e| format!("`{line}`: {key}: {e}"))
        };
        let iterations = number("iterations")?;
        if iterations <= 0.0 {
            return Err(format!("`{line}`: no iterations"));
        }
        samples
            .entry((text("impl")?.to_string(), text("call")?.to_string()))
            .or_default()
            .push(Sample {
                ns_per_call: number("ns")? / iterations,
                maps_per_call: (number("mmaps")? + number("munmaps")?) / iterations,
            });
    }
    if samples.is_empty() {
        return Err("the benchmark printed no results".into());
    }
    Ok(samples)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The median ns per call and the largest mmap+munmap count per call of `implementation` on `call`.
fn summary(samples: &Samples, implementation: &str, call: &str) -> crate::Result<(f64, f64)> {
    let runs = samples
        .get(&(implementation.to_string(), call.to_string()))
        .filter(|runs| !runs.is_empty())
        .ok_or_else(|| format!("no result for {implementation} {call}"))?;
    let ns = median(runs.iter().map(|s| s.ns_per_call).collect());
    let maps = runs.iter().map(|s| s.maps_per_call).fold(0.0, f64::max);
    Ok((ns, maps))
}

/// The table, the targets and the machine-readable lines.
fn report(samples: &Samples) -> crate::Result<String> {
    use std::fmt::Write;
    let mut table = String::new();
    let mut machine = String::new();
    let mut missed = Vec::new();
    let _ = writeln!(
        table,
        "{:<13} {:>9} {:>11} {:>9} {:>10} {:>10}   mmap+munmap per call (floor/libxencall/ours)",
        "call", "floor ns", "libxencall", "ours ns", "ours/libx", "ours/floor"
    );
    for (call, about) in CALLS.iter().zip(CALL_ABOUT) {
        let (floor, floor_maps) = summary(samples, "floor", call)?;
        let (libxencall, libxencall_maps) = summary(samples, "libxencall", call)?;
        let (ours, ours_maps) = summary(samples, "ours", call)?;
        let ratio_libxencall = ours / libxencall;
        let ratio_floor = ours / floor;
        let _ = writeln!(
            table,
            "{call:<13} {floor:>9.0} {libxencall:>11.0} {ours:>9.0} {ratio_libxencall:>10.3} {ratio_floor:>10.3}   \
             {floor_maps}/{libxencall_maps}/{ours_maps}   ({about})"
        );
        let _ = writeln!(
            machine,
            "bench privcmd {call} ours_ns={ours:.0} libxencall_ns={libxencall:.0} floor_ns={floor:.0} \
             ratio_libxencall={ratio_libxencall:.3} ratio_floor={ratio_floor:.3}"
        );
        if ratio_libxencall > 1.0 {
            missed.push(format!(
                "{call}: ours/libxencall {ratio_libxencall:.3} > 1.0"
            ));
        }
        if *call == "version" && ratio_floor > 1.05 {
            missed.push(format!("{call}: ours/floor {ratio_floor:.3} > 1.05"));
        }
        if ours_maps > 0.0 {
            missed.push(format!("{call}: {ours_maps} mmap+munmap per call"));
        }
    }
    let _ = writeln!(table);
    if missed.is_empty() {
        let _ = writeln!(
            table,
            "targets met: ours <= 1.0x libxencall on every call, <= 1.05x the floor without buffers, \
             no mmap/munmap in steady state\n"
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
        for (ns_ours, ns_libx, ns_floor) in [(100, 200, 100), (120, 240, 100), (110, 220, 100)] {
            for call in CALLS {
                lines.push(format!(
                    "bench-run impl=ours call={call} iterations=10 ns={} mmaps=0 munmaps=0",
                    ns_ours * 10
                ));
                lines.push(format!(
                    "bench-run impl=libxencall call={call} iterations=10 ns={} mmaps=0 munmaps=0",
                    ns_libx * 10
                ));
                lines.push(format!(
                    "bench-run impl=floor call={call} iterations=10 ns={} mmaps=0 munmaps=0",
                    ns_floor * 10
                ));
            }
        }
        lines.push("something else".into());
        let samples = parse_samples(lines.iter().map(String::as_str)).unwrap();
        let report = report(&samples).unwrap();
        assert!(report.contains(
            "bench privcmd extraversion ours_ns=110 libxencall_ns=220 floor_ns=100 \
             ratio_libxencall=0.500 ratio_floor=1.100\n"
        ));
        assert!(report.contains("targets missed: version: ours/floor 1.100 > 1.05"));
        assert_eq!(
            report
                .lines()
                .filter(|l| l.starts_with("bench privcmd "))
                .count(),
            3
        );
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(parse_samples(["bench-run impl=ours call=version ns=5"].into_iter()).is_err());
        assert!(parse_samples(["nothing"].into_iter()).is_err());
        assert_eq!(median(vec![3.0, 1.0, 2.0, 10.0]), 2.5);
    }
}
