//! `xen-dom0-tests blk-bench <rounds> <MiB> <domU options>`: the dom0 half of `cargo xtask bench
//! blk`. A loop device over a `<MiB>` file in dom0's tmpfs is read sequentially by dom0 itself
//! with O_DIRECT (busybox `dd`, the upper bound), then served by Linux's blkback to a Linux domU
//! (the options name its kernel and initramfs) whose `/init` times its own `dd` runs through
//! xen-blkfront and prints a line per run on its console:
//! `blkbench <measure> <bytes> <start> <end>` (`/proc/uptime` seconds). Each sample becomes
//! `XENTEST OUT bench-run impl=<dom0|linux> measure=<measure> iterations=1 ns=<ns> bytes=<n>`;
//! the cases are `blk_bench_dom0` and `blk_bench_linux`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use xen_testbed_protocol::{Reporter, Stdout};

use crate::blk::{BACKING_FILE, HOTPLUG_SCRIPT, LOOP_DEVICE, hotplug_script};
use crate::domu::{ConsoleLog, Domain, Spec, Steps};
use crate::run_tool;

/// The request sizes dom0 reads with.
const BLOCK_SIZES: [(&str, u64); 2] = [("4k", 4096), ("64k", 65536)];
/// The prefix of the Linux domU's result lines.
const RESULT: &str = "blkbench ";

/// `blk-bench`: exits with failure if a case failed.
pub(crate) fn run(args: &[String]) -> ExitCode {
    let usage = "usage: blk-bench <rounds> <MiB> <domU options>";
    let parsed = match args {
        [rounds, mib, domu @ ..] => rounds
            .parse::<u32>()
            .ok()
            .zip(mib.parse::<u64>().ok())
            .filter(|&(r, m)| r > 0 && m > 0)
            .ok_or_else(|| usage.to_string())
            .and_then(|numbers| Ok((numbers, Spec::parse(domu)?))),
        _ => Err(usage.into()),
    };
    let ((rounds, mib), mut spec) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => {
            eprintln!("xen-dom0-tests blk-bench: {error}");
            return ExitCode::from(2);
        }
    };
    let mut steps = Steps {
        reporter: Reporter::new(Stdout),
        failed: None,
    };
    let bytes = mib << 20;
    steps.step("blk_bench_dom0", |out| {
        make_backing(bytes)?;
        for _ in 0..rounds {
            for (name, size) in BLOCK_SIZES {
                let count = (bytes / size).to_string();
                let started = Instant::now();
                run_tool(
                    "dd",
                    &[
                        &format!("if={LOOP_DEVICE}"),
                        "of=/dev/null",
                        &format!("bs={size}"),
                        &format!("count={count}"),
                        "iflag=direct",
                    ],
                )?;
                let ns = started.elapsed().as_nanos();
                out.out(format_args!(
                    "bench-run impl=dom0 measure=read_{name}_qd1 iterations=1 ns={ns} bytes={bytes}"
                ));
            }
        }
        Ok(())
    });
    spec.disk = Some(format!("phy:{LOOP_DEVICE},xvda,w,script={HOTPLUG_SCRIPT}"));
    steps.step("blk_bench_linux", |out| {
        let domain = Domain::create(&spec)?;
        domain.unpause()?;
        let reason = domain.wait_gone(spec_timeout(rounds, mib));
        let mut log = ConsoleLog::new(&domain.name);
        log.read_new()?;
        let text = String::from_utf8_lossy(&log.bytes);
        let reason = reason.map_err(|e| format!("{e}; its console:\n{text}"))?;
        if reason != 0 {
            return Err(format!(
                "the Linux domU stopped with reason {reason}; its console:\n{text}"
            ));
        }
        let mut samples = 0;
        for line in text.lines() {
            let Some(result) = line.trim().strip_prefix(RESULT) else {
                continue;
            };
            let (measure, bytes, ns) =
                parse_result(result).ok_or_else(|| format!("the Linux domU printed {line:?}"))?;
            out.out(format_args!(
                "bench-run impl=linux measure={measure} iterations=1 ns={ns} bytes={bytes}"
            ));
            samples += 1;
        }
        if samples == 0 {
            return Err(format!(
                "the Linux domU timed nothing; its console:\n{text}"
            ));
        }
        Ok(())
    });
    ExitCode::from(steps.reporter.done().exit_code())
}

/// How long the Linux domU may run: its boot, then `rounds` of 8 passes over `mib` MiB at no
/// less than 0.5 MiB/s.
fn spec_timeout(rounds: u32, mib: u64) -> Duration {
    Duration::from_secs(60 + u64::from(rounds) * 8 * mib * 2)
}

/// `<measure> <bytes> <start> <end>` (seconds, as `/proc/uptime` prints them): the measure,
/// the bytes and the nanoseconds between start and end.
fn parse_result(result: &str) -> Option<(&str, u64, u64)> {
    let mut fields = result.split_whitespace();
    let measure = fields.next()?;
    let bytes = fields.next()?.parse().ok()?;
    let start: f64 = fields.next()?.parse().ok()?;
    let end: f64 = fields.next()?.parse().ok()?;
    if fields.next().is_some() || end < start {
        return None;
    }
    Some((measure, bytes, ((end - start) * 1e9) as u64))
}

/// A `bytes`-long zeroed file, the loop device over it and the hotplug script.
fn make_backing(bytes: u64) -> Result<(), String> {
    let file = fs::File::create(BACKING_FILE).map_err(|e| format!("{BACKING_FILE}: {e}"))?;
    file.set_len(bytes)
        .map_err(|e| format!("{BACKING_FILE}: {e}"))?;
    // Written out, so that reads measure memory, not holes.
    let status = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={BACKING_FILE}"),
            "bs=1M",
            &format!("count={}", bytes >> 20),
            "conv=notrunc",
        ])
        .status()
        .map_err(|e| format!("dd: {e}"))?;
    if !status.success() {
        return Err(format!("dd into {BACKING_FILE}: {status}"));
    }
    run_tool("losetup", &[LOOP_DEVICE, BACKING_FILE])?;
    fs::write(HOTPLUG_SCRIPT, hotplug_script()).map_err(|e| format!("{HOTPLUG_SCRIPT}: {e}"))?;
    fs::set_permissions(HOTPLUG_SCRIPT, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{HOTPLUG_SCRIPT}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_parse_or_are_refused() {
        assert_eq!(
            parse_result("read_4k_qd1 1048576 10.50 12.75"),
            Some(("read_4k_qd1", 1048576, 2_250_000_000))
        );
        assert_eq!(parse_result("read_4k_qd1 1048576 12.75 10.50"), None);
        assert_eq!(parse_result("read_4k_qd1 x 1 2"), None);
        assert_eq!(parse_result("read_4k_qd1 1 1 2 3"), None);
    }
}
