//! `cargo xtask bench evtchn`: xen-evtchn against libxenevtchn and the raw
//! device floor, timed in a Linux dom0 on real Xen (x86_64, under QEMU), and
//! the event-channel soak in the same boot.
//!
//! Builds `tests/bench/libxenevtchn_bench.c` (statically against Debian's
//! `libxen-dev`) and `xen-dom0-tests` (whose `evtchn-bench` and `evtchn-soak`
//! commands are the Rust side), boots dom0 once, and prints medians, ratios and
//! one `bench evtchn <measure> ours_ns=… <peer>_ns=… ratio_<peer>=…` line each.

use std::time::Duration;

use crate::bench::{Bench, CProgram, Report, Samples};

const USAGE: &str = "\
usage: cargo xtask bench evtchn [--rounds N] [--iterations N] [--soak ROUND_TRIPS CYCLES]
       cargo xtask bench evtchn --domu-soak ROUND_TRIPS CYCLES
       cargo xtask bench evtchn --stress [ROUNDS CYCLES]

Boots Xen with a Linux dom0 (x86_64) and times, on loopback channels: the notify -> wake round
trip (floor, libxenevtchn, xen-evtchn sync, xen-evtchn tokio), and collecting N = 1, 64, 1000
pending ports (time and read calls; the Rust floor reads the device from the same Rust program,
without the library). N rounds (default 5), round trips per sample (default 2000),
medians. Then the soak: ping-pong round trips (default 200000) and bind/unbind cycles (default
10000), each checked.

--domu-soak boots instead a dom0 that creates a freestanding PV domU and soaks the channel between
them: ROUND_TRIPS ping-pong round trips (xen-evtchn's device in dom0, its RawEventChannel in the
domU), then CYCLES binds and closes of the domU's port by dom0, each checked with EVTCHNOP_status.

--stress boots a dom0 with 2 vCPUs and runs the long version of the testbed's dom0-smp-stress
scenario: 64 waiting tasks ROUNDS times each (default 5300) in each of three event-channel
measures (over 1,000,000 events in all), CYCLES concurrent bind/unbind cycles (default 10000) in
each of two, xen-store with one request in flight (at most 500 rounds: each is two round trips to xenstored,
one at a time), and the scale measures with 2000 samples. It
prints the `stress ...` and `scale ...` lines and fails unless every measure lost and leaked 0.";

pub(crate) fn run(options: &[String]) -> crate::Result {
    if let [flag, rest @ ..] = options
        && flag == "--stress"
    {
        let numbers: Vec<u64> = rest.iter().filter_map(|v| v.parse().ok()).collect();
        return match numbers[..] {
            [] if rest.is_empty() => stress(5300, 10_000),
            [rounds, cycles] if rest.len() == 2 && rounds > 0 && cycles > 0 => {
                stress(rounds, cycles)
            }
            _ => Err(format!(
                "--stress takes two positive numbers or none\n{USAGE}"
            )),
        };
    }
    if let [flag, trips, cycles] = options
        && flag == "--domu-soak"
    {
        let number = |text: &String| {
            text.parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("--domu-soak needs two positive numbers\n{USAGE}"))
        };
        return domu_soak(number(trips)?, number(cycles)?);
    }
    let mut soak = [200_000, 10_000];
    let (rounds, iterations) =
        crate::bench::options(options, (5, 2000), USAGE, &mut [("--soak", &mut soak)])?;
    let [trips, cycles] = soak;
    Bench {
        name: "evtchn",
        driver: ("xen-dom0-tests", "xen-dom0-tests"),
        peer: Some(CProgram {
            source: "tests/bench/libxenevtchn_bench.c",
            header: "xenevtchn.h",
            name: "libxenevtchn-bench",
            link: &["-lxenevtchn", "-lxentoolcore", "-lxentoollog"],
        }),
        preamble: Default::default(),
        commands: vec![
            format!("evtchn-bench /bin/libxenevtchn-bench {rounds} {iterations}"),
            format!("evtchn-soak {trips} {cycles}"),
        ],
        cases: &["bench_evtchn", "evtchn_soak"],
        timeout: Duration::from_secs(300 + rounds * iterations / 50 + trips / 100 + cycles / 50),
        files: Vec::new(),
        domus: Vec::new(),
        dom0_memory_mib: None,
    }
    .run(
        &format!("evtchn benchmark: {rounds} rounds, {iterations} round trips per sample"),
        "",
        |lines| report(&parse_samples(lines.iter().copied())?),
    )
}

/// The cross-domain soak: one boot, a PV domU, `trips` round trips and `cycles` rebinds.
fn domu_soak(trips: u64, cycles: u64) -> crate::Result {
    use xen_testbed::scenario::{
        CrossDomain, DomuRun, Flavour, GuestKind, build_guest, cross_domain_run,
    };

    let testbed = crate::testbed::testbed();
    let started = std::time::Instant::now();
    let cross = CrossDomain {
        domu: GuestKind::Pv,
        selftest: None,
        run: DomuRun::Soak { trips, cycles },
    };
    let kernel = build_guest(&testbed, cross.domu, Flavour::Domu).map_err(|e| e.to_string())?;
    testbed
        .build_static("xen-dom0-tests", &[xen_testbed::Arch::X86_64])
        .map_err(|e| e.to_string())?;
    // A round trip takes about a millisecond under QEMU, a cycle a few.
    let timeout = Duration::from_secs(300 + trips / 200 + cycles / 50);
    let run = cross_domain_run("evtchn-soak-domu-pv", &cross, &kernel, timeout);
    let outcome = testbed.boot_linux_dom0(&run).map_err(|e| e.to_string())?;
    let domu_lines = outcome.domus.iter().flat_map(|(_, log)| log.outputs());
    for line in outcome.log.outputs().chain(domu_lines) {
        if line.starts_with("evtchn-soak-domu ") {
            println!("{line}");
        }
    }
    if !outcome.verdict.passed() {
        return Err(format!(
            "the soak failed: {:?} (log: {})",
            outcome.verdict.failures(),
            outcome.log_path.display()
        ));
    }
    println!(
        "evtchn cross-domain soak: {trips} round trips, {cycles} rebinds, passed (QEMU {:.1} s, whole command {:.1} s)",
        outcome.run.wall.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The long stress: one boot of a 2-vCPU dom0 running `xen-dom0-tests stress` with `rounds`
/// rounds per waiter and `cycles` bind/unbind cycles per measure.
fn stress(rounds: u64, cycles: u64) -> crate::Result {
    use xen_testbed::initramfs::Preamble;
    use xen_testbed_protocol::stress::CASES;

    // Measured: 64 waiters move about 1500 events a second under TCG; a cycle takes a few ms.
    let timeout = Duration::from_secs(300 + rounds * 64 * 3 / 500 + cycles / 20);
    Bench {
        name: "evtchn-stress",
        driver: ("xen-dom0-tests", "xen-dom0-tests"),
        peer: None,
        preamble: Preamble::Toolstack { fault: None },
        commands: vec![format!(
            "stress --rounds {rounds} --cycles {cycles} --samples 2000 --store-rounds {}",
            rounds.min(500)
        )],
        cases: CASES,
        timeout,
        files: Vec::new(),
        domus: Vec::new(),
        dom0_memory_mib: None,
    }
    .run_on(
        2,
        &format!("evtchn stress: {rounds} rounds per waiter, {cycles} bind/unbind cycles, passed"),
        "",
        |_| Ok(String::new()),
    )
}

/// One sample: ns per iteration and read calls.
type Sample = (f64, f64);

/// Parses `bench-run impl=<impl> measure=<m> iterations=<n> ns=<total> reads=<n>`.
fn parse_samples<'a>(lines: impl Iterator<Item = &'a str>) -> crate::Result<Samples<Sample>> {
    Samples::parse(lines, "measure", |run| {
        Ok((run.per_iteration("ns")?, run.number("reads")?))
    })
}

/// Median ns and median reads of `implementation` on `measure`.
fn medians(
    samples: &Samples<Sample>,
    implementation: &str,
    measure: &str,
) -> crate::Result<(f64, f64)> {
    Ok((
        samples.median(implementation, measure, |r| r.0)?,
        samples.median(implementation, measure, |r| r.1)?,
    ))
}

fn report(samples: &Samples<Sample>) -> crate::Result<String> {
    use std::fmt::Write;
    let mut report = Report::default();
    let (floor, _) = medians(samples, "floor", "roundtrip")?;
    let (libx, _) = medians(samples, "libxenevtchn", "roundtrip")?;
    let (ours, _) = medians(samples, "ours", "roundtrip")?;
    let (tokio, _) = medians(samples, "tokio", "roundtrip")?;
    let _ = writeln!(
        report.table,
        "round trip (notify -> wake, both ways), ns: floor {floor:.0}, libxenevtchn {libx:.0}, \
         ours {ours:.0} ({:.3}x libxenevtchn, {:.3}x floor), tokio {tokio:.0} ({:.3}x ours)",
        ours / libx,
        ours / floor,
        tokio / ours
    );
    let _ = writeln!(
        report.machine,
        "bench evtchn roundtrip ours_ns={ours:.0} libxenevtchn_ns={libx:.0} ratio_libxenevtchn={:.3} \
         floor_ns={floor:.0} ratio_floor={:.3}",
        ours / libx,
        ours / floor
    );
    let _ = writeln!(
        report.machine,
        "bench evtchn roundtrip_tokio ours_ns={tokio:.0} sync_ns={ours:.0} ratio_sync={:.3}",
        tokio / ours
    );
    if ours / libx > 1.0 {
        report.missed.push(format!(
            "sync round trip {:.3}x libxenevtchn > 1.0",
            ours / libx
        ));
    }
    if tokio / ours > 1.3 {
        report
            .missed
            .push(format!("tokio round trip {:.3}x sync > 1.3", tokio / ours));
    }
    for n in [1u32, 64, 1000] {
        let measure = format!("pending{n}");
        let (ours, ours_reads) = medians(samples, "ours", &measure)?;
        let (libx, libx_reads) = medians(samples, "libxenevtchn", &measure)?;
        let (floor, floor_reads) = medians(samples, "floor", &measure)?;
        let (rust_floor, _) = medians(samples, "rustfloor", &measure)?;
        let _ = writeln!(
            report.table,
            "{n} pending ports: ours {ours:.0} ns in {ours_reads} reads, libxenevtchn {libx:.0} ns \
             in {libx_reads} reads, floor {floor:.0} ns in {floor_reads} reads, Rust floor \
             {rust_floor:.0} ns (ours {:.3}x)",
            ours / rust_floor
        );
        let _ = writeln!(
            report.machine,
            "bench evtchn {measure} ours_ns={ours:.0} libxenevtchn_ns={libx:.0} ratio_libxenevtchn={:.3} \
             ours_reads={ours_reads} libxenevtchn_reads={libx_reads} floor_ns={floor:.0} ratio_floor={:.3} \
             rust_floor_ns={rust_floor:.0} ratio_rust_floor={:.3}",
            ours / libx,
            ours / floor,
            ours / rust_floor
        );
        if ours_reads > f64::from(n.div_ceil(1024)) {
            report.missed.push(format!(
                "{n} pending ports in {ours_reads} reads > {}",
                n.div_ceil(1024)
            ));
        }
    }
    Ok(report.finish(
        "targets",
        ": sync <= 1.0x libxenevtchn, tokio <= 1.3x sync, N pending ports in ceil(N/1024) reads",
    ))
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
                lines.push(format!(
                    "bench-run impl=rustfloor measure=pending{n} iterations=1 ns=400 reads=1"
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
        assert!(report.contains("rust_floor_ns=400 ratio_rust_floor=1.250\n"));
        assert!(report.contains("targets met"));
    }

    #[test]
    fn a_missing_measure_is_an_error() {
        let lines = ["bench-run impl=ours measure=roundtrip iterations=1 ns=5 reads=1"];
        assert!(report(&parse_samples(lines.into_iter()).unwrap()).is_err());
        assert!(parse_samples(["nothing"].into_iter()).is_err());
    }
}
