//! `xen-dom0-tests blk-bench <rounds> <MiB> <Rust domU options> -- <Linux domU options>`: the
//! dom0 half of `cargo xtask bench blk`. A loop device over a `<MiB>` file in dom0's tmpfs is
//! read sequentially by dom0 itself with O_DIRECT (the upper bound), then served
//! by Linux's blkback to the freestanding Rust domU (xen-blk's frontend, [`blk::BENCH`]) and
//! then to a Linux domU (the options name its kernel and initramfs) whose `/init` times its own
//! `dd` runs through xen-blkfront. Both print a [`blk::BENCH_RESULT`] line per run on their
//! console. Each sample becomes `XENTEST OUT bench-run impl=<dom0|ours|linux>
//! measure=<measure> iterations=1 ns=<ns> bytes=<n>`; the cases are `blk_bench_dom0`,
//! `blk_bench_ours` and `blk_bench_linux`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use xen_testbed_protocol::exchange::blk;
use xen_testbed_protocol::{Reporter, Stdout};

use crate::blk::{BACKING_FILE, HOTPLUG_SCRIPT, LOOP_DEVICE, hotplug_script};
use crate::domu::{ConsoleForwarder, ConsoleLog, Domain, Spec, Steps};
use crate::run_tool;

/// The request sizes dom0 reads with.
const BLOCK_SIZES: [(&str, usize); 2] = [("4k", 4096), ("64k", 65536)];
/// What the Linux domU prints when one of its `dd`s failed.
const LINUX_FAILED: &str = "blkbench-failed";

/// `blk-bench`: exits with failure if a case failed.
pub(crate) fn run(args: &[String]) -> ExitCode {
    let usage = "usage: blk-bench <rounds> <MiB> <Rust domU options> -- <Linux domU options>";
    let parsed = match args {
        [rounds, mib, domus @ ..] => rounds
            .parse::<u32>()
            .ok()
            .zip(mib.parse::<u64>().ok())
            .filter(|&(r, m)| r > 0 && m > 0)
            .zip(domus.iter().position(|a| a == "--"))
            .ok_or_else(|| usage.to_string())
            .and_then(|(numbers, split)| {
                let ours = Spec::parse(&domus[..split])?;
                let linux = Spec::parse(&domus[split + 1..])?;
                Ok((numbers, ours, linux))
            }),
        _ => Err(usage.into()),
    };
    let ((rounds, mib), mut ours, mut linux) = match parsed {
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
    let disk = format!("phy:{LOOP_DEVICE},{},w,script={HOTPLUG_SCRIPT}", blk::VDEV);
    ours.disk = Some(disk.clone());
    linux.disk = Some(disk);
    let timeout = run_timeout(rounds, mib);
    steps.step("blk_bench_dom0", |out| {
        make_backing(bytes)?;
        for _ in 0..rounds {
            for (name, size) in BLOCK_SIZES {
                let ns = read_direct(bytes, size)?;
                out.out(format_args!(
                    "bench-run impl=dom0 measure=read_{name}_qd1 iterations=1 ns={ns} bytes={bytes}"
                ));
            }
        }
        Ok(())
    });
    steps.step("blk_bench_ours", |out| {
        let domain = Domain::create(&ours)?;
        domain.write(blk::BLK, &(bytes / blk::SECTOR_SIZE as u64).to_string())?;
        domain.write(blk::BENCH, &rounds.to_string())?;
        // Nothing to check before it connects.
        domain.write(blk::CHECKED, "1")?;
        let forwarder = ConsoleForwarder::start(&domain.name);
        let benched = domain
            .unpause()
            .and_then(|()| domain.wait_for_value(blk::BENCHED, timeout, |_| true))
            .and_then(|_| {
                run_tool(
                    "xl",
                    &["block-detach", &domain.domid.to_string(), blk::VDEV],
                )
            })
            .and_then(|_| domain.wait_gone(timeout));
        forwarder.finish();
        let text = console(&domain)?;
        match benched {
            Ok(0) => report(out, "ours", &text),
            Ok(reason) => Err(format!("the Rust domU stopped with reason {reason}")),
            Err(error) => Err(format!("{error}: {}", domain.destroy())),
        }
    });
    steps.step("blk_bench_linux", |out| {
        let domain = Domain::create(&linux)?;
        domain.unpause()?;
        let reason = domain.wait_gone(timeout);
        let text = console(&domain)?;
        let reason = reason.map_err(|e| format!("{e}; its console:\n{text}"))?;
        if reason != 0 {
            return Err(format!(
                "the Linux domU stopped with reason {reason}; its console:\n{text}"
            ));
        }
        if text.contains(LINUX_FAILED) {
            return Err(format!(
                "a dd of the Linux domU failed; its console:\n{text}"
            ));
        }
        report(out, "linux", &text)
    });
    ExitCode::from(steps.reporter.done().exit_code())
}

/// Reads the loop device's first `bytes` with O_DIRECT in `size`-byte reads; the time taken.
fn read_direct(bytes: u64, size: usize) -> Result<u128, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    const ALIGN: usize = 4096;
    let mut device = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(LOOP_DEVICE)
        .map_err(|e| format!("{LOOP_DEVICE}: {e}"))?;
    // O_DIRECT wants an aligned buffer.
    let mut storage = vec![0u8; size + ALIGN];
    let start = storage.as_ptr().align_offset(ALIGN);
    let buf = &mut storage[start..start + size];
    let started = Instant::now();
    let mut done = 0;
    while done < bytes {
        match device.read(buf) {
            Ok(0) => return Err(format!("{LOOP_DEVICE} ended after {done} bytes")),
            Ok(n) => done += n as u64,
            Err(e) => return Err(format!("{LOOP_DEVICE} at byte {done}: {e}")),
        }
    }
    Ok(started.elapsed().as_nanos())
}

/// What xenconsoled logged of `domain`'s console.
fn console(domain: &Domain) -> Result<String, String> {
    let mut log = ConsoleLog::new(&domain.name);
    log.read_new()?;
    Ok(String::from_utf8_lossy(&log.bytes).into_owned())
}

/// A `bench-run` line of `implementation` per [`blk::BENCH_RESULT`] line of `console`.
fn report(out: &mut Reporter<Stdout>, implementation: &str, console: &str) -> Result<(), String> {
    let mut samples = 0;
    for line in console.lines() {
        let Some(at) = line.find(blk::BENCH_RESULT) else {
            continue;
        };
        let (measure, bytes, ns) = parse_result(&line[at + blk::BENCH_RESULT.len()..])
            .ok_or_else(|| format!("the {implementation} domU printed {line:?}"))?;
        out.out(format_args!(
            "bench-run impl={implementation} measure={measure} iterations=1 ns={ns} bytes={bytes}"
        ));
        samples += 1;
    }
    if samples == 0 {
        return Err(format!(
            "the {implementation} domU timed nothing; its console:\n{console}"
        ));
    }
    Ok(())
}

/// How long a benchmarked domU may run: its boot, then `rounds` of 8 passes over `mib` MiB at
/// 4 MiB/s on average (`cargo xtask bench blk` gives QEMU time for two such runs).
fn run_timeout(rounds: u32, mib: u64) -> Duration {
    Duration::from_secs(30 + u64::from(rounds) * mib * 2)
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
    Some((measure, bytes, ((end - start) * 1e9).round() as u64))
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
        // Decimal seconds are not exact in binary: rounded, not truncated.
        assert_eq!(parse_result("w 1 1.00 4.02"), Some(("w", 1, 3_020_000_000)));
        assert_eq!(parse_result("read_4k_qd1 1048576 12.75 10.50"), None);
        assert_eq!(parse_result("read_4k_qd1 x 1 2"), None);
        assert_eq!(parse_result("read_4k_qd1 1 1 2 3"), None);
    }
}
