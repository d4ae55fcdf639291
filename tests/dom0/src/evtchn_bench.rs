//! The dom0 side of `cargo xtask bench evtchn`, and the event-channel soak.
//!
//! `xen-dom0-tests evtchn-bench <libxenevtchn-bench> [rounds] [iterations]`
//! runs interleaved rounds of every measure through the floor and libxenevtchn
//! (the C program), this crate's sync device and its tokio channel (this
//! program's `evtchn-bench-one`), each measurement in a fresh child process, each printing
//! `XENTEST OUT bench-run impl=<impl> measure=<measure> iterations=<n> ns=<total> reads=<n>`.
//!
//! `xen-dom0-tests evtchn-soak [round_trips] [cycles]` ping-pongs a loopback
//! pair and binds/unbinds, checking every wake-up and every close.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use xen_evtchn::linux::EvtchnDevice;
use xen_evtchn::tokio::TokioEventChannel;
use xen_evtchn::{DomId, EventChannel, Port};
use xen_hypercall_privcmd::Privcmd;
use xen_testbed_protocol::{Reporter, Stdout};

use crate::evtchn::{bind_unbind_cycle, call, pair, timeout};

const DOM0: DomId = DomId::new(0);
/// The sizes of the pending-ports measure.
const PENDING_SIZES: [usize; 3] = [1, 64, 1000];
/// Collections timed per pending sample, back to back: after a sleep, the first touch of
/// each page costs tens of microseconds under QEMU's software MMU (measured: two clock
/// reads take ~40 us just after a 20 ms sleep, 0.3 us the next time), which timed the
/// emulator refilling its TLB, more for a larger program, rather than the collection.
const PENDING_REPEATS: u64 = 20;

/// A timed region: the clock and the page faults since its start.
struct Timed {
    start: Instant,
    faults: i64,
}

impl Timed {
    fn start() -> Self {
        let faults = faults();
        Self {
            start: Instant::now(),
            faults,
        }
    }

    /// Prints the sample.
    fn sample(self, implementation: &str, measure: &str, iterations: u64, reads: u64) {
        let ns = self.start.elapsed().as_nanos();
        let faults = faults() - self.faults;
        print_sample(implementation, measure, iterations, ns, reads, faults);
    }
}

/// Prints one sample line.
fn print_sample(
    implementation: &str,
    measure: &str,
    iterations: u64,
    ns: u128,
    reads: u64,
    faults: i64,
) {
    println!(
        "XENTEST OUT bench-run impl={implementation} measure={measure} iterations={iterations} ns={ns} reads={reads} faults={faults}"
    );
}

/// Page faults (minor and major) of this process so far (0 if `getrusage` fails).
fn faults() -> i64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0, |usage| {
        usage.minor_page_faults() + usage.major_page_faults()
    })
}

/// `evtchn-bench <c program> [rounds] [iterations]`.
pub(crate) fn bench(args: &[&str]) -> ExitCode {
    let Some(c_bench) = args.first() else {
        eprintln!("usage: xen-dom0-tests evtchn-bench <libxenevtchn-bench> [rounds] [iterations]");
        return ExitCode::from(2);
    };
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let iterations: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let mut reporter = Reporter::new(Stdout);
    reporter.case("bench_evtchn", run_bench(c_bench, rounds, iterations));
    ExitCode::from(reporter.done().exit_code())
}

fn run_bench(c_bench: &str, rounds: usize, iterations: u64) -> Result<(), String> {
    let mut measures = vec![("roundtrip".to_string(), iterations)];
    measures.extend(PENDING_SIZES.map(|n| (format!("pending{n}"), n as u64)));
    for round in 0..rounds {
        for (measure, n) in &measures {
            let implementations: &[&str] = if measure == "roundtrip" {
                &["floor", "libxenevtchn", "ours", "tokio"]
            } else {
                &["floor", "libxenevtchn", "ours", "rustfloor"]
            };
            // Rotate who goes first, so that no implementation always follows another.
            for i in 0..implementations.len() {
                // Each measurement in a fresh process, as the C program's are.
                let implementation = implementations[(round + i) % implementations.len()];
                let program = match implementation {
                    "ours" | "tokio" | "rustfloor" => std::env::current_exe()
                        .map_err(|e| format!("current_exe: {e}"))?
                        .into_os_string()
                        .into_string()
                        .map_err(|_| "current_exe is not UTF-8".to_string())?,
                    _ => c_bench.to_string(),
                };
                run_child(&program, implementation, measure, *n)?;
            }
        }
    }
    Ok(())
}

/// One measurement by a child: the C program (`<impl> <roundtrip|pending> <n>`)
/// or this program (`evtchn-bench-one <impl> <roundtrip|pending> <n>`).
fn run_child(c_bench: &str, implementation: &str, measure: &str, n: u64) -> Result<(), String> {
    let kind = if measure == "roundtrip" {
        "roundtrip"
    } else {
        "pending"
    };
    let mut command = Command::new(c_bench);
    if matches!(implementation, "ours" | "tokio" | "rustfloor") {
        command.arg("evtchn-bench-one");
    }
    let output = command
        .args([implementation, kind, &n.to_string()])
        .output()
        .map_err(|e| format!("{c_bench}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{c_bench} {implementation} {measure}: {} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    print!("{}", String::from_utf8_lossy(&output.stdout));
    Ok(())
}

/// `evtchn-bench-one <ours|tokio> <roundtrip|pending> <n>`: one measurement.
pub(crate) fn bench_one(args: &[&str]) -> ExitCode {
    let result = match args {
        [implementation, kind, n] => match (n.parse::<u64>(), *implementation, *kind) {
            (Ok(n), "ours", "roundtrip") => roundtrip_ours(n),
            (Ok(n), "ours", "pending") => pending_ours(n as usize, Collect::Library),
            (Ok(n), "rustfloor", "pending") => pending_ours(n as usize, Collect::RawRead),
            (Ok(n), "tokio", "roundtrip") => roundtrip_tokio(n),
            _ => Err(format!("bad arguments {args:?}")),
        },
        _ => Err("usage: evtchn-bench-one <ours|tokio|rustfloor> <roundtrip|pending> <n>".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for exactly `port` (read first, `poll` only when nothing is queued), then unmasks it.
/// Nothing to read after a poll is a lost wakeup: the poll waited 5 s in vain.
pub(crate) fn await_port(dev: &EvtchnDevice, port: Port, reads: &mut u64) -> Result<(), String> {
    let mut got = [Port::new(0); 4];
    let mut polled = false;
    loop {
        *reads += 1;
        match call("take_pending", dev.take_pending(&mut got))? {
            0 if polled => return Err(format!("lost wakeup: {port} not delivered within 5 s")),
            0 => {
                call("poll", dev.wait_readable(5000))?;
                polled = true;
            }
            1 if got[0] == port => return call("unmask", dev.unmask(port)),
            n => return Err(format!("got {:?}, expected {port}", &got[..n])),
        }
    }
}

fn roundtrip_ours(iterations: u64) -> Result<(), String> {
    let dev = call("open", EvtchnDevice::open())?;
    let (a, b) = pair(&dev)?;
    let mut reads = 0;
    let timed = Timed::start();
    for _ in 0..iterations {
        call("notify", b.notify())?;
        await_port(&dev, a.port(), &mut reads)?;
        call("notify", a.notify())?;
        await_port(&dev, b.port(), &mut reads)?;
    }
    timed.sample("ours", "roundtrip", iterations, reads);
    Ok(())
}

fn roundtrip_tokio(iterations: u64) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    runtime.block_on(async {
        let ch = call("open", TokioEventChannel::open())?;
        let a = call("alloc_unbound", ch.alloc_unbound(DOM0))?;
        let b = call("bind_interdomain", ch.bind_interdomain(DOM0, a.port()))?;
        timeout(b.wait()).await?;
        let timed = Timed::start();
        for _ in 0..iterations {
            call("notify", b.notify())?;
            timeout(a.wait()).await?;
            call("notify", a.notify())?;
            timeout(b.wait()).await?;
        }
        timed.sample("tokio", "roundtrip", iterations, 0);
        Ok(())
    })
}

/// How the pending measure collects the signalled ports.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Collect {
    /// `EvtchnDevice::take_pending`.
    Library,
    /// `read(2)` on the device's fd, as the C floor does: the same program, clock and loop
    /// without the library, which tells the library's cost from the program's.
    RawRead,
}

fn pending_ours(n: usize, collect: Collect) -> Result<(), String> {
    let dev = call("open", EvtchnDevice::open())?;
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        let receiver = call("alloc_unbound", dev.alloc_unbound(DOM0))?;
        let sender = call(
            "bind_interdomain",
            dev.bind_interdomain(DOM0, receiver.port()),
        )?;
        pairs.push((receiver, sender));
    }
    let mut got = vec![Port::new(0); 1024];
    let mut raw = vec![0u8; 1024 * size_of::<u32>()];
    // The binds' pending events.
    let mut seen = 0;
    while seen < n {
        let count = call("take_pending", dev.take_pending(&mut got))?;
        if count == 0 {
            call("poll", dev.wait_readable(5000))?;
            continue;
        }
        call("unmask_all", dev.unmask_all(&got[..count]))?;
        seen += count;
    }
    let receivers: Vec<Port> = pairs.iter().map(|(receiver, _)| receiver.port()).collect();
    // Named before the clock starts: formatting is no part of the measure.
    let measure = format!("pending{n}");
    // As the C program: each repeat signals all (untimed), collects all (timed) and re-arms
    // all (untimed), with no sleep between (see PENDING_REPEATS).
    let (mut elapsed, mut reads) = (Duration::ZERO, 0);
    let faults_before = faults();
    for _ in 0..PENDING_REPEATS {
        for (_, sender) in &pairs {
            call("notify", sender.notify())?;
        }
        let mut seen = 0;
        let start = Instant::now();
        while seen < n {
            reads += 1;
            let count = match collect {
                Collect::Library => call("take_pending", dev.take_pending(&mut got))?,
                Collect::RawRead => match nix::unistd::read(&dev, &mut raw) {
                    Ok(bytes) => bytes / size_of::<u32>(),
                    Err(nix::errno::Errno::EAGAIN) => 0,
                    Err(e) => return Err(format!("read: {e}")),
                },
            };
            if count == 0 {
                call("poll", dev.wait_readable(5000))?;
            }
            seen += count;
        }
        elapsed += start.elapsed();
        call("unmask_all", dev.unmask_all(&receivers))?;
    }
    print_sample(
        match collect {
            Collect::Library => "ours",
            Collect::RawRead => "rustfloor",
        },
        &measure,
        PENDING_REPEATS,
        elapsed.as_nanos(),
        reads / PENDING_REPEATS,
        faults() - faults_before,
    );
    Ok(())
}

/// `evtchn-soak [round_trips] [cycles]`.
pub(crate) fn soak(args: &[&str]) -> ExitCode {
    let trips: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let cycles: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let mut reporter = Reporter::new(Stdout);
    let result = Privcmd::open()
        .map_err(|e| format!("privcmd: {e}"))
        .and_then(|privcmd| run_soak(&privcmd, trips, cycles));
    reporter.case("evtchn_soak", result);
    ExitCode::from(reporter.done().exit_code())
}

fn run_soak(privcmd: &Privcmd, trips: u64, cycles: u64) -> Result<(), String> {
    let dev = call("open", EvtchnDevice::open())?;
    let (a, b) = pair(&dev)?;
    let mut reads = 0;
    let start = Instant::now();
    for trip in 0..trips {
        call("notify", b.notify())?;
        await_port(&dev, a.port(), &mut reads).map_err(|e| format!("round trip {trip}: {e}"))?;
        call("notify", a.notify())?;
        await_port(&dev, b.port(), &mut reads).map_err(|e| format!("round trip {trip}: {e}"))?;
    }
    println!(
        "XENTEST OUT evtchn-soak round_trips={trips} lost_wakeups=0 seconds={:.1} reads={reads}",
        start.elapsed().as_secs_f64()
    );
    drop((a, b));
    let start = Instant::now();
    let mut highest = 0;
    for cycle in 0..cycles {
        let port = bind_unbind_cycle(&dev, privcmd).map_err(|e| format!("cycle {cycle}: {e}"))?;
        highest = highest.max(port.raw());
    }
    let mut drained = vec![Port::new(0); 1024];
    while call("take_pending", dev.take_pending(&mut drained))? > 0 {}
    let leaked = dev.bound_ports().len();
    println!(
        "XENTEST OUT evtchn-soak bind_unbind_cycles={cycles} leaked_ports={leaked} highest_port={highest} seconds={:.1}",
        start.elapsed().as_secs_f64()
    );
    if leaked > 0 || highest > 256 {
        return Err(format!("{leaked} ports leaked, highest port {highest}"));
    }
    Ok(())
}
