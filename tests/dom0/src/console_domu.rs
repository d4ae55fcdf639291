//! A domU's console ring seen from dom0, through what xenconsoled logs of it
//! ([`xen_testbed_protocol::bulk`]): the exchange's 1 MiB arrives intact, and `console-bench`
//! times the ring and Xen's log readers.
//!
//! - `xen-dom0-tests dmesg` prints Xen's whole log ring, read through `xen-console`'s log reader,
//!   as `xl dmesg` does.
//! - `xen-dom0-tests console-bench <log rounds> <ring rounds> <bytes> <domU options>` runs `dmesg`
//!   and Debian's `xl dmesg` in interleaved rounds, each as a fresh process, checking first that both print the
//!   same log; then creates a domU (the options of `domu`) that writes `<bytes>` through its
//!   console ring for each write size of [`bulk::BENCH_WRITE_SIZES`], `<ring rounds>` times, and times
//!   each run from the growth of xenconsoled's log of it. It prints one
//!   `XENTEST OUT bench-run impl=<ours|xl_dmesg> measure=<measure> iterations=1 ns=<ns> bytes=<n>`
//!   line per sample and reports the case `bench_console`.

use std::io::Write as _;
use std::process::{Command, ExitCode};
use std::thread::sleep;
use std::time::{Duration, Instant};

use xen_console::XenLog;
use xen_hypercall_privcmd::Privcmd;
use xen_testbed_protocol::bulk::{self, Digest};
use xen_testbed_protocol::{Reporter, Stdout};

use crate::domu::{ConsoleForwarder, ConsoleLog, Domain, Spec};

/// How long the domU may take to write its bulk data and report its digest.
const BULK_TIMEOUT: Duration = Duration::from_secs(90);
/// Polling interval of xenconsoled's log while waiting.
const POLL: Duration = Duration::from_millis(50);
/// Polling interval of xenconsoled's log while timing the ring.
const TIMING_POLL: Duration = Duration::from_millis(2);

/// `xen-dom0-tests dmesg`: Xen's log, whole, on stdout.
pub(crate) fn dmesg() -> ExitCode {
    let read = Privcmd::open()
        .map_err(|e| e.to_string())
        .and_then(|xen| XenLog::new(&xen).read_all().map_err(|e| e.to_string()));
    let written = read.and_then(|all| {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&all.text)
            .and_then(|()| stdout.flush())
            .map_err(|e| e.to_string())
    });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xen-dom0-tests dmesg: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The exchange's step `console_bulk_intact`: the domU's digest of the bulk data it wrote
/// (its `XENTEST OUT console-bulk` line) equals the digest of the bulk lines in xenconsoled's log,
/// and both equal the pattern's.
pub(crate) fn bulk_intact(domain: &Domain, out: &mut Reporter<Stdout>) -> Result<(), String> {
    let started = Instant::now();
    let (log, (bytes, digest)) = wait_for_written(domain)?;
    let bytes = usize::try_from(bytes).map_err(|e| format!("{bytes} bytes: {e}"))?;
    let written = started.elapsed();
    let logged = bulk_of(&log);
    let mut log_digest = Digest::new();
    log_digest.update(&logged);
    let mut pattern = vec![0; bytes];
    bulk::fill(&mut pattern, 0);
    let mut pattern_digest = Digest::new();
    pattern_digest.update(&pattern);
    if bytes != bulk::EXCHANGE_BYTES
        || logged.len() != bytes
        || log_digest.value() != digest
        || digest != pattern_digest.value()
    {
        let differs = logged.iter().zip(&pattern).position(|(a, b)| a != b);
        return Err(format!(
            "the domU wrote {bytes} bytes, digest {digest:016x}; xenconsoled logged {} bulk bytes, \
             digest {:016x}; the pattern's digest is {:016x}; first difference at {differs:?}",
            logged.len(),
            log_digest.value(),
            pattern_digest.value()
        ));
    }
    out.out(format_args!(
        "{bytes} bytes through the console ring arrived intact in xenconsoled's log \
         (digest {digest:016x}; written and drained {:.1} s after the grant unmap)",
        written.as_secs_f64()
    ));
    Ok(())
}

/// Waits until xenconsoled's log of `domain` holds the domU's `XENTEST OUT console-bulk <bytes>
/// <digest>` line, which follows its bulk data; returns the log and `(bytes, digest)`. The log
/// outlives the domain: once it is gone, xenconsoled gets 2 s more to log what it drained.
fn wait_for_written(domain: &Domain) -> Result<(Vec<u8>, (u64, u64)), String> {
    let mut log = ConsoleLog::new(&domain.name);
    let marker = format!("XENTEST OUT {} ", bulk::WRITTEN);
    let deadline = Instant::now() + BULK_TIMEOUT;
    let mut gone = None;
    // Where the first complete line not yet looked at starts.
    let mut next = 0;
    loop {
        log.read_new()?;
        while let Some(end) = log.bytes[next..].iter().position(|&b| b == b'\n') {
            let line = &log.bytes[next..next + end];
            next += end + 1;
            let Some(at) = line
                .windows(marker.len())
                .position(|w| w == marker.as_bytes())
            else {
                continue;
            };
            let line = String::from_utf8_lossy(&line[at + marker.len()..]).into_owned();
            let written =
                bulk::parse_written(&line).ok_or_else(|| format!("`{marker}{line}`: malformed"))?;
            return Ok((log.bytes, written));
        }
        let now = Instant::now();
        if gone.is_none() && domain.shutdown_reason().is_some() {
            gone = Some(now);
        }
        if gone.is_some_and(|at| now > at + Duration::from_secs(2)) || now > deadline {
            return Err(format!(
                "no `{marker}` line in {} ({} bytes) within {} s{}",
                log.path,
                log.bytes.len(),
                BULK_TIMEOUT.as_secs(),
                if gone.is_some() {
                    " (the domU shut down)"
                } else {
                    ""
                }
            ));
        }
        sleep(POLL);
    }
}

/// The complete bulk lines of `log`, in order.
fn bulk_of(log: &[u8]) -> Vec<u8> {
    log.split_inclusive(|&b| b == b'\n')
        .filter(|line| line.first() == Some(&bulk::PREFIX) && line.ends_with(b"\n"))
        .flatten()
        .copied()
        .collect()
}

/// `xen-dom0-tests console-bench <log rounds> <ring rounds> <bytes> <domU options>`.
pub(crate) fn bench(args: &[String]) -> ExitCode {
    let mut reporter = Reporter::new(Stdout);
    let result = run_bench(args, &mut reporter);
    reporter.case("bench_console", result);
    ExitCode::from(reporter.done().exit_code())
}

fn run_bench(args: &[String], out: &mut Reporter<Stdout>) -> Result<(), String> {
    let usage = "usage: console-bench <log rounds> <ring rounds> <bytes, a multiple of 64> \
                 <domU options>";
    let [log_rounds, rounds, bytes, domu @ ..] = args else {
        return Err(usage.into());
    };
    let number = |text: &str| text.parse().map_err(|e| format!("{usage}: {e}"));
    let (log_rounds, rounds, bytes) = (number(log_rounds)?, number(rounds)?, number(bytes)?);
    if log_rounds == 0 || rounds == 0 || bytes == 0 || bytes % bulk::LINE_LEN != 0 {
        return Err(usage.into());
    }
    let spec = Spec::parse(domu)?;
    dmesg_rounds(log_rounds as u32, out)?;
    ring_rounds(&spec, rounds as u32, bytes, out)
}

/// Runs `command` to its end; its wall time in ns and its stdout.
fn timed(command: &mut Command) -> Result<(u128, Vec<u8>), String> {
    let started = Instant::now();
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    let ns = started.elapsed().as_nanos();
    if !output.status.success() || output.stdout.is_empty() {
        return Err(format!(
            "{command:?}: {}, {} bytes out: {}",
            output.status,
            output.stdout.len(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok((ns, output.stdout))
}

/// Xen's whole log through `xen-dom0-tests dmesg` and through `xl dmesg`, each a fresh process
/// writing into a pipe, in interleaved rounds.
fn dmesg_rounds(rounds: u32, out: &mut Reporter<Stdout>) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let mut ours = Command::new(exe);
    ours.arg("dmesg");
    let mut xl = Command::new("xl");
    xl.arg("dmesg");
    // Both print the same log (unless something was logged between the two reads: retry).
    let mut same = false;
    for _ in 0..5 {
        let (_, ours_text) = timed(&mut ours)?;
        let (_, xl_text) = timed(&mut xl)?;
        if ours_text == xl_text {
            same = true;
            break;
        }
        let differs = ours_text.iter().zip(&xl_text).position(|(a, b)| a != b);
        out.out(format_args!(
            "dmesg: ours {} bytes, xl dmesg {} bytes, first difference at {differs:?}; again",
            ours_text.len(),
            xl_text.len()
        ));
    }
    if !same {
        return Err("xen-console's log reader and `xl dmesg` printed different logs".into());
    }
    for round in 0..rounds {
        let mut runs = [("ours", &mut ours), ("xl_dmesg", &mut xl)];
        if round % 2 == 1 {
            runs.reverse();
        }
        for (implementation, command) in runs {
            let (ns, text) = timed(command)?;
            out.out(format_args!(
                "bench-run impl={implementation} measure=dmesg iterations=1 ns={ns} bytes={}",
                text.len()
            ));
        }
    }
    Ok(())
}

/// Creates the benchmark domU and times its console ring runs from xenconsoled's log.
fn ring_rounds(
    spec: &Spec,
    rounds: u32,
    bytes: usize,
    out: &mut Reporter<Stdout>,
) -> Result<(), String> {
    let domain = Domain::create(spec)?;
    let forwarder = ConsoleForwarder::start(&domain.name);
    let result = (|| {
        domain.write(bulk::BENCH, &format!("{rounds} {bytes}"))?;
        domain.unpause()?;
        let runs = rounds as usize * bulk::BENCH_WRITE_SIZES.len();
        let times = time_runs(&domain, runs, bytes)?;
        for (run, ns) in times.iter().enumerate() {
            let size = bulk::BENCH_WRITE_SIZES[run % bulk::BENCH_WRITE_SIZES.len()];
            out.out(format_args!(
                "bench-run impl=ours measure=ring_{size} iterations=1 ns={ns} bytes={bytes}"
            ));
        }
        let (_, (written, _)) = wait_for_written(&domain)?;
        if written != (runs * bytes) as u64 {
            return Err(format!(
                "the domU says it wrote {written} bytes, not {}",
                runs * bytes
            ));
        }
        match domain.wait_gone(Duration::from_secs(30))? {
            0 => Ok(()),
            reason => Err(format!("the domU shut down with reason {reason}")),
        }
    })();
    forwarder.finish();
    if result.is_err() {
        domain.destroy();
    }
    result
}

/// The ns each of `runs` runs of `bytes` bulk bytes took to appear in xenconsoled's log, from the
/// domU's [`bulk::BENCH_START`] line on (each run starts when the previous one is logged whole).
fn time_runs(domain: &Domain, runs: usize, bytes: usize) -> Result<Vec<u128>, String> {
    let mut console = ConsoleLog::new(&domain.name);
    let deadline = Instant::now() + BULK_TIMEOUT;
    let mut start: Option<usize> = None;
    let mut ends = Vec::new();
    let mut polls = 0u32;
    while ends.len() <= runs {
        console.read_new()?;
        let log = &console.bytes;
        let now = Instant::now();
        if start.is_none() {
            let marker = bulk::BENCH_START.as_bytes();
            start = log
                .windows(marker.len())
                .position(|w| w == marker)
                .and_then(|at| Some(at + log[at..].iter().position(|&b| b == b'\n')? + 1));
        }
        if let Some(start) = start {
            // The first entry is the start of run 0.
            while ends.len() <= runs && log.len() >= start + ends.len() * bytes {
                ends.push(now);
            }
        }
        if now > deadline {
            return Err(format!(
                "{} of {runs} runs logged within {} s ({} bytes of log)",
                ends.len().saturating_sub(1),
                BULK_TIMEOUT.as_secs(),
                log.len()
            ));
        }
        polls += 1;
        if polls % 128 == 0 && domain.shutdown_reason().is_some() {
            return Err("the domU shut down during the benchmark".into());
        }
        sleep(TIMING_POLL);
    }
    let start = start.unwrap_or_default();
    let timed = &console.bytes[start..start + runs * bytes];
    if bulk_of(timed).len() != timed.len() {
        return Err("xenconsoled logged something else among the bulk data".into());
    }
    Ok(ends
        .windows(2)
        .map(|pair| (pair[1] - pair[0]).as_nanos())
        .collect())
}
