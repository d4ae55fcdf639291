//! `xen-dom0-tests blkback [--bench ROUNDS] <Linux domU options>`: dom0 serves a Linux PV domU
//! a disk with xen-blk's userspace backend, hot-plugged as a toolstack does, and checks what
//! the domU's own xen-blkfront did with it ([`blkback`]: the steps, the domU's script). With
//! `--bench`, it also times the domU's `dd` against Linux's blkback on the same file and prints
//! `bench-run impl=<ours|blkback> measure=<measure> iterations=1 ns=<ns> bytes=<n>` lines.

use std::fs::{self, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{JoinHandle, sleep};
use std::time::{Duration, Instant};

use xen_blk::linux::{
    BlockBackend, Released, USERSPACE_CLASS, VbdPaths, add_vbd, remove_vbd, ring_pages_mapped,
};
use xen_bus::XenbusState;
use xen_evtchn::linux::EvtchnDevice;
use xen_grant::linux::Gntdev;
use xen_hypercall::DomId;
use xen_store::unix::Local;
use xen_store::{Client, Store};
use xen_testbed_protocol::exchange::blkback::{
    self, BENCH_ROUNDS, DEVID, DISK_MIB, KERNEL_VDEV, Mark, PATTERN, PATTERN_BYTES, PREFIX, VDEV,
};
use xen_testbed_protocol::{Reporter, Stdout};

use crate::blk::{HOTPLUG_SCRIPT, LOOP_DEVICE, hotplug_script};
use crate::domu::{ConsoleForwarder, ConsoleLog, Domain, Spec, Steps};
use crate::run_tool;

/// The file backing the disk, in dom0's tmpfs.
const BACKING_FILE: &str = "/tmp/xentest-blkback.img";
/// How long a step of the domU may take (its boot, a wait for the disk to come or go).
const STEP_TIMEOUT: Duration = Duration::from_secs(40);
/// How long dom0's xenstore reads may block (a watch that never fires fails, never hangs).
const STORE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a detach waits for the frontend to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The devices every backend of this run uses (opened once; the serving threads borrow them).
static DEVICES: OnceLock<(Gntdev, EvtchnDevice)> = OnceLock::new();

/// `blkback`: exits with failure if a case failed.
pub(crate) fn run(args: &[String]) -> ExitCode {
    let (rounds, args) = match args {
        [flag, rounds, rest @ ..] if flag == BENCH_ROUNDS => match rounds.parse::<u32>() {
            Ok(rounds) if rounds > 0 => (rounds, rest),
            _ => return usage("--bench needs a positive number"),
        },
        rest => (0, rest),
    };
    let spec = match Spec::parse(args) {
        Ok(spec) => spec,
        Err(error) => return usage(&error),
    };
    let mut steps = Steps {
        reporter: Reporter::new(Stdout),
        failed: None,
    };
    let started = steps.step("blkback_domu_started", |out| {
        make_backing()?;
        let gntdev = Gntdev::open().map_err(|e| format!("gntdev: {e}"))?;
        let evtchn = EvtchnDevice::open().map_err(|e| format!("evtchn: {e}"))?;
        let _ = DEVICES.set((gntdev, evtchn));
        let domain = Domain::create(&spec)?;
        let forwarder = ConsoleForwarder::start(&domain.name);
        let mut console = Console::new(&domain.name);
        domain.unpause()?;
        console.wait(Mark::Started, STEP_TIMEOUT)?;
        out.out(format_args!(
            "domU {} (domid {}) runs its script; {DISK_MIB} MiB in {BACKING_FILE}",
            domain.name, domain.domid
        ));
        Ok((domain, forwarder, console))
    });
    let Some((domain, forwarder, mut console)) = started else {
        return ExitCode::from(steps.reporter.done().exit_code());
    };
    let domid = DomId(domain.domid as u16);
    let attached = steps.step("blkback_attach_connects", |out| {
        let attached = Attached::new(domid)?;
        let sectors = console.wait(Mark::Seen, STEP_TIMEOUT)?;
        let expected = (DISK_MIB << 20) / 512;
        if sectors != expected.to_string() {
            return Err(format!("the domU sees {sectors} sectors, not {expected}"));
        }
        let state = attached.frontend_state()?;
        out.out(format_args!(
            "hot-plugged {} and {}: blkfront {state}, {expected} sectors",
            attached.paths.frontend, attached.paths.backend
        ));
        Ok(attached)
    });
    steps.step("blkback_pattern_round_trip", |out| {
        expect(console.wait(Mark::Pattern, STEP_TIMEOUT)?, "ok")?;
        let mut head = vec![0; PATTERN_BYTES as usize];
        fs::File::open(BACKING_FILE)
            .and_then(|mut f| f.read_exact(&mut head))
            .map_err(|e| format!("{BACKING_FILE}: {e}"))?;
        let line = format!("{PATTERN}\n");
        let pattern = line.as_bytes().iter().cycle();
        if let Some(at) = head.iter().zip(pattern).position(|(a, b)| a != b) {
            return Err(format!(
                "the backing file differs from the pattern at byte {at}"
            ));
        }
        out.out(format_args!(
            "the domU wrote, read back and compared {PATTERN_BYTES} bytes; the file holds them"
        ));
        Ok(())
    });
    // While the domU makes its filesystem.
    steps.step("blkback_hostile_frontend", hostile);
    steps.step("blkback_filesystem", |out| {
        let magic = console.wait(Mark::Filesystem, STEP_TIMEOUT)?;
        expect(magic.clone(), "53 ef")?;
        let mut bytes = [0; 2];
        fs::File::open(BACKING_FILE)
            .and_then(|f| {
                std::os::unix::fs::FileExt::read_exact_at(
                    &f,
                    &mut bytes,
                    blkback::EXT2_MAGIC_OFFSET,
                )
            })
            .map_err(|e| format!("{BACKING_FILE}: {e}"))?;
        if bytes != [0x53, 0xef] {
            return Err(format!("the file's superblock magic is {bytes:02x?}"));
        }
        out.out(format_args!(
            "mke2fs through blkfront: the domU reads the superblock magic {magic}, so does the file"
        ));
        Ok(())
    });
    steps.step("blkback_detach_idle", |out| {
        let attached = attached.ok_or("not attached")?;
        let (state, released) = attached.detach()?;
        expect(console.wait(Mark::Gone, STEP_TIMEOUT)?, "")?;
        out.out(format_args!(
            "blkfront {state}; released {} ring page(s), port {}; {:?}",
            released.ring_pages, released.port.0, released.counts
        ));
        Ok(())
    });
    steps.step("blkback_detach_in_flight", |out| {
        let attached = Attached::new(domid)?;
        console.wait(Mark::Seen, STEP_TIMEOUT)?;
        console.wait(Mark::Reading, STEP_TIMEOUT)?;
        sleep(Duration::from_millis(500));
        let (state, released) = attached.detach()?;
        console.wait(Mark::ReadEnded, STEP_TIMEOUT)?;
        expect(console.wait(Mark::Gone, STEP_TIMEOUT)?, "")?;
        if released.counts.done == 0 {
            return Err("no read was served before the detach".into());
        }
        out.out(format_args!(
            "detached during reads: blkfront {state}; the domU's read loop ended; released {} ring page(s), port {}; {:?}",
            released.ring_pages, released.port.0, released.counts
        ));
        Ok(())
    });
    if rounds > 0 {
        steps.step("blkback_bench", |out| {
            bench(domid, &mut console, rounds, out)
        });
    }
    steps.step("blkback_domu_done", |_| {
        console.wait(Mark::Done, STEP_TIMEOUT)?;
        match domain.wait_gone(STEP_TIMEOUT)? {
            0 => Ok(()),
            reason => Err(format!("the domU stopped with reason {reason}")),
        }
    });
    forwarder.finish();
    ExitCode::from(steps.reporter.done().exit_code())
}

fn usage(error: &str) -> ExitCode {
    eprintln!(
        "xen-dom0-tests blkback: {error}\nusage: blkback [{BACKING_FILE} --bench ROUNDS] <Linux domU options>"
    );
    ExitCode::from(2)
}

/// `Ok` if the domU's `values` are `want`.
fn expect(values: String, want: &str) -> Result<(), String> {
    if values == want {
        Ok(())
    } else {
        Err(format!("the domU says `{values}`, not `{want}`"))
    }
}

/// A client of xenstored whose reads give up after [`STORE_TIMEOUT`].
fn store() -> Result<Client<Local>, String> {
    let local = Local::socket().map_err(|e| format!("xenstored: {e}"))?;
    if let Local::Socket(socket) = &local {
        socket
            .set_read_timeout(Some(STORE_TIMEOUT))
            .map_err(|e| format!("xenstored: {e}"))?;
    }
    Ok(Client::from_local(local))
}

fn devices() -> &'static (Gntdev, EvtchnDevice) {
    DEVICES.get().expect("opened by the first step")
}

/// A zeroed file of [`DISK_MIB`] MiB, written out.
fn make_backing() -> Result<(), String> {
    fs::write(BACKING_FILE, vec![0u8; (DISK_MIB << 20) as usize])
        .map_err(|e| format!("{BACKING_FILE}: {e}"))
}

/// One hot-plugged disk and the thread serving it.
struct Attached {
    paths: VbdPaths,
    backend: &'static BlockBackend,
    stop: &'static AtomicBool,
    server: JoinHandle<Result<Released, String>>,
}

impl Attached {
    /// Hot-plugs [`BACKING_FILE`] as [`VDEV`] of `domid` and serves it from a thread. The
    /// backend and its stop flag live as long as the program (a few per run): the thread
    /// borrows them.
    fn new(domid: DomId) -> Result<Self, String> {
        let mut xs = store()?;
        let paths = add_vbd(
            &mut xs,
            USERSPACE_CLASS,
            domid,
            DomId(0),
            DEVID,
            VDEV,
            false,
        )
        .map_err(|e| format!("hot-plug: {e}"))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(BACKING_FILE)
            .map_err(|e| format!("{BACKING_FILE}: {e}"))?;
        let backend = BlockBackend::new(&mut xs, &paths.backend, file, false)
            .map_err(|e| format!("backend: {e}"))?;
        let backend: &'static BlockBackend = Box::leak(Box::new(backend));
        let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        let server = std::thread::spawn(move || {
            let (gntdev, evtchn) = devices();
            let mut xs = store()?;
            let start = Instant::now();
            let mut connection = backend
                .connect(&mut xs, gntdev, evtchn, &mut || {
                    start.elapsed() > STEP_TIMEOUT
                })
                .map_err(|e| format!("connect: {e}"))?;
            let served = connection.serve_until(stop);
            let closed = connection.close();
            served.map_err(|e| format!("serve: {e}"))?;
            closed.map_err(|e| format!("close: {e}"))
        });
        Ok(Self {
            paths,
            backend,
            stop,
            server,
        })
    }

    /// The frontend's state.
    fn frontend_state(&self) -> Result<XenbusState, String> {
        let mut xs = store()?;
        self.backend
            .device()
            .peer_state(&mut xs)
            .map_err(|e| format!("{e}"))
    }

    /// Detaches as a toolstack does (backend Closing, the frontend closes, the ring and port
    /// released, backend Closed, both directories removed) and checks that nothing is left
    /// mapped or bound.
    fn detach(self) -> Result<(XenbusState, Released), String> {
        let Self {
            paths,
            backend,
            stop,
            server,
        } = self;
        let mut xs = store()?;
        let start = Instant::now();
        let (state, released) = backend
            .detach(
                &mut xs,
                || {
                    stop.store(true, Ordering::Release);
                    server
                        .join()
                        .map_err(|_| "the serving thread panicked".to_string())?
                },
                &mut || start.elapsed() > CLOSE_TIMEOUT,
            )
            .map_err(|e| format!("detach: {e}"))?;
        let released = released?;
        remove_vbd(&mut xs, &paths).map_err(|e| format!("remove: {e}"))?;
        if xs.read(&format!("{}/state", paths.backend)).is_ok() {
            return Err(format!("{} is still there", paths.backend));
        }
        let (gntdev, evtchn) = devices();
        let mapped = ring_pages_mapped();
        let bound = evtchn.bound_ports();
        if mapped != 0 || !bound.is_empty() || gntdev.leaked() != 0 || released.ring_pages == 0 {
            return Err(format!(
                "after the detach: {mapped} ring page(s) mapped, ports {bound:?} bound, {} leaked mapping(s), {} released",
                gntdev.leaked(),
                released.ring_pages
            ));
        }
        Ok((state, released))
    }
}

/// The domU's console as xenconsoled logs it, read for its [`PREFIX`] lines in order.
struct Console {
    log: ConsoleLog,
    /// Where the first line not yet looked at starts.
    next: usize,
}

impl Console {
    fn new(name: &str) -> Self {
        Self {
            log: ConsoleLog::new(name),
            next: 0,
        }
    }

    /// The values of the domU's next `mark` line (lines before it are skipped), waiting up to
    /// `timeout`.
    fn wait(&mut self, mark: Mark, timeout: Duration) -> Result<String, String> {
        let start = Instant::now();
        loop {
            self.log.read_new()?;
            while let Some(end) = self.log.bytes[self.next..].iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&self.log.bytes[self.next..self.next + end])
                    .trim_end_matches('\r')
                    .to_string();
                self.next += end + 1;
                let Some(at) = line.find(PREFIX) else {
                    continue;
                };
                let rest = &line[at + PREFIX.len()..];
                let (word, values) = rest.split_once(' ').unwrap_or((rest, ""));
                if word == mark.word() {
                    return Ok(values.trim().to_string());
                }
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "the domU did not say `{}` within {} s",
                    mark.word(),
                    timeout.as_secs()
                ));
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Every [`Mark::Bench`] line up to [`Mark::Benched`].
    fn bench_lines(&mut self, timeout: Duration) -> Result<Vec<String>, String> {
        let start = Instant::now();
        let mut lines = Vec::new();
        loop {
            self.log.read_new()?;
            while let Some(end) = self.log.bytes[self.next..].iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&self.log.bytes[self.next..self.next + end])
                    .trim_end_matches('\r')
                    .to_string();
                self.next += end + 1;
                let Some(at) = line.find(PREFIX) else {
                    continue;
                };
                let rest = &line[at + PREFIX.len()..];
                let (word, values) = rest.split_once(' ').unwrap_or((rest, ""));
                match word {
                    w if w == Mark::Benched.word() => return Ok(lines),
                    w if w == Mark::Bench.word() => lines.push(values.to_string()),
                    "bench-failed" => return Err(format!("a dd failed: {values}")),
                    _ => {}
                }
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "the domU did not finish its runs within {} s",
                    timeout.as_secs()
                ));
            }
            sleep(Duration::from_millis(50));
        }
    }
}

/// The benchmark: our backend as [`VDEV`] and Linux's blkback (a loop device over the same
/// file) as [`KERNEL_VDEV`], timed by the domU.
fn bench(
    domid: DomId,
    console: &mut Console,
    rounds: u32,
    out: &mut Reporter<Stdout>,
) -> Result<(), String> {
    let ours = Attached::new(domid)?;
    console.wait(Mark::Seen, STEP_TIMEOUT)?;
    run_tool("losetup", &[LOOP_DEVICE, BACKING_FILE])?;
    fs::write(HOTPLUG_SCRIPT, hotplug_script()).map_err(|e| format!("{HOTPLUG_SCRIPT}: {e}"))?;
    fs::set_permissions(HOTPLUG_SCRIPT, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{HOTPLUG_SCRIPT}: {e}"))?;
    let domid_text = domid.0.to_string();
    let disk = format!("phy:{LOOP_DEVICE},{KERNEL_VDEV},w,script={HOTPLUG_SCRIPT}");
    run_tool("xl", &["block-attach", &domid_text, &disk])?;
    // Each round moves 2 x 40 MiB per backend; at 1 MiB/s that is 160 s.
    let lines = console.bench_lines(Duration::from_secs(60 + 160 * u64::from(rounds)))?;
    run_tool("xl", &["block-detach", &domid_text, KERNEL_VDEV])?;
    let (_, released) = ours.detach()?;
    for values in &lines {
        let (backend, measure, bytes, ns) =
            blkback::parse_bench(values).ok_or_else(|| format!("the domU printed `{values}`"))?;
        out.out(format_args!(
            "bench-run impl={backend} measure={measure} iterations=1 ns={ns} bytes={bytes}"
        ));
    }
    out.out(format_args!(
        "{} timed runs; ours answered {:?}",
        lines.len(),
        released.counts
    ));
    Ok(())
}

/// The hostile frontend's device number (`xvdh`), in dom0's own `device/vbd`.
const HOSTILE_DEVID: u32 = 202 << 8 | 112;
/// The file its backend serves (1 MiB).
const HOSTILE_FILE: &str = "/tmp/xentest-blkback-hostile.img";

/// A hostile frontend in dom0 itself (its ring and data page granted to dom0 with gntalloc, its
/// port unbound for dom0), served by a second backend while the domU's disk is in use: each
/// malformed request is answered with an error (a grant never made by Xen's refusal), a valid
/// one still works, and a `req_prod` beyond the ring makes its backend disconnect it. Its
/// ring page and port are released; the domU's stay.
fn hostile(out: &mut Reporter<Stdout>) -> Result<(), String> {
    use xen_blk::abi::{
        OP_READ, OP_WRITE, RSP_EOPNOTSUPP, RSP_ERROR, RSP_OKAY, Request, Response, RingRequest,
        Segment,
    };
    use xen_blk::linux::BackendError;
    use xen_evtchn::EventChannel;
    use xen_grant::linux::Gntalloc;
    use xen_shared::{FrontRing, RingMemory};

    fs::write(HOSTILE_FILE, vec![0u8; 1 << 20]).map_err(|e| format!("{HOSTILE_FILE}: {e}"))?;
    let mapped_before = ring_pages_mapped();
    let gntalloc = Gntalloc::open().map_err(|e| format!("gntalloc: {e}"))?;
    let share = gntalloc
        .share(DomId(0), 2, false)
        .map_err(|e| format!("gntalloc: {e}"))?;
    let (ring_ref, data_ref) = (share.grefs()[0], share.grefs()[1]);
    let ring_mem = share.mem().subslice(0, 4096).map_err(|e| e.to_string())?;
    let mut front =
        FrontRing::<RingRequest, Response, _>::init(ring_mem, 0).map_err(|e| e.to_string())?;
    let front_evtchn = EvtchnDevice::open().map_err(|e| format!("evtchn: {e}"))?;
    let front_port = front_evtchn
        .alloc_unbound(DomId(0))
        .map_err(|e| format!("alloc_unbound: {e}"))?;

    let mut xs = store()?;
    let paths = add_vbd(
        &mut xs,
        USERSPACE_CLASS,
        DomId(0),
        DomId(0),
        HOSTILE_DEVID,
        "xvdh",
        false,
    )
    .map_err(|e| format!("hot-plug: {e}"))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(HOSTILE_FILE)
        .map_err(|e| format!("{HOSTILE_FILE}: {e}"))?;
    let backend = BlockBackend::new(&mut xs, &paths.backend, file, false)
        .map_err(|e| format!("backend: {e}"))?;
    // The frontend publishes its ring as blkfront does.
    for (key, value) in [
        ("ring-ref", ring_ref.0.to_string()),
        ("event-channel", front_port.port().0.to_string()),
        ("state", XenbusState::Initialised.as_u32().to_string()),
    ] {
        xs.write(&format!("{}/{key}", paths.frontend), value.as_bytes())
            .map_err(|e| format!("{key}: {e}"))?;
    }
    let (gntdev, evtchn) = (
        Gntdev::open().map_err(|e| format!("gntdev: {e}"))?,
        EvtchnDevice::open().map_err(|e| format!("evtchn: {e}"))?,
    );
    let stop = AtomicBool::new(false);
    let segment = |gref: u32, first_sect: u8, last_sect: u8| Segment {
        gref,
        first_sect,
        last_sect,
        _pad: [0; 2],
    };
    let request = |operation: u8, id: u64, sector: u64, nr_segments: u8, seg: Segment| {
        RingRequest::new(&Request {
            operation,
            nr_segments,
            id,
            sector_number: sector,
            seg: [seg; 11],
            ..Default::default()
        })
    };
    let data = segment(data_ref.0, 0, 7);
    let cases = [
        ("12 segments", request(OP_READ, 1, 0, 12, data), RSP_ERROR),
        (
            "a read past the disk",
            request(OP_READ, 2, 2048, 1, data),
            RSP_ERROR,
        ),
        (
            "an empty segment",
            request(OP_WRITE, 3, 0, 1, segment(data_ref.0, 5, 4)),
            RSP_ERROR,
        ),
        (
            "a grant never made",
            request(OP_WRITE, 4, 0, 1, segment(0x7fff_fff0, 0, 7)),
            RSP_ERROR,
        ),
        (
            "an unknown operation",
            request(200, 5, 0, 1, data),
            RSP_EOPNOTSUPP,
        ),
        ("a valid read", request(OP_READ, 6, 0, 1, data), RSP_OKAY),
    ];
    let (served, released) = std::thread::scope(|scope| -> Result<_, String> {
        let server = scope.spawn(|| -> Result<(Result<(), BackendError>, Released), String> {
            let mut xs = store()?;
            let start = Instant::now();
            let mut connection = backend
                .connect(&mut xs, &gntdev, &evtchn, &mut || {
                    start.elapsed() > STEP_TIMEOUT
                })
                .map_err(|e| format!("connect: {e}"))?;
            let served = connection.serve_until(&stop);
            let released = connection.close().map_err(|e| format!("close: {e}"))?;
            Ok((served, released))
        });
        let result = (|| -> Result<(), String> {
            let start = Instant::now();
            while backend.device().state(&mut xs).map_err(|e| e.to_string())?
                != XenbusState::Connected
            {
                if start.elapsed() > STEP_TIMEOUT {
                    return Err("its backend never connected".into());
                }
                sleep(Duration::from_millis(20));
            }
            for (what, slot, status) in &cases {
                front.start_request(slot).map_err(|e| e.to_string())?;
                front.push_requests().map_err(|e| e.to_string())?;
                front_port.notify().map_err(|e| e.to_string())?;
                let start = Instant::now();
                let response = loop {
                    if let Some(response) = front.next_response().map_err(|e| e.to_string())? {
                        break response;
                    }
                    if start.elapsed() > Duration::from_secs(5) {
                        return Err(format!("{what}: no response"));
                    }
                    sleep(Duration::from_millis(5));
                };
                if (response.id, response.status) != (slot.id(), *status) {
                    return Err(format!(
                        "{what}: answered {response:?}, not status {status}"
                    ));
                }
            }
            // `req_prod` one past what the ring could hold.
            let rsp_prod = ring_mem
                .load_index(8, Ordering::SeqCst)
                .map_err(|e| e.to_string())?;
            ring_mem
                .store_index(0, rsp_prod.wrapping_add(33), Ordering::SeqCst)
                .map_err(|e| e.to_string())?;
            front_port.notify().map_err(|e| e.to_string())
        })();
        if result.is_err() {
            stop.store(true, Ordering::Release);
        }
        let joined = server
            .join()
            .map_err(|_| "the serving thread panicked".to_string())?;
        result?;
        joined
    })?;
    if !matches!(served, Err(BackendError::Ring(_))) {
        return Err(format!(
            "the backend did not disconnect a ring beyond its size: {served:?}"
        ));
    }
    xs.write(&format!("{}/state", paths.frontend), b"6")
        .map_err(|e| e.to_string())?;
    let (_, ()) = backend
        .detach(&mut xs, || (), &mut || true)
        .map_err(|e| format!("detach: {e}"))?;
    remove_vbd(&mut xs, &paths).map_err(|e| format!("remove: {e}"))?;
    let mapped = ring_pages_mapped();
    if mapped != mapped_before || !evtchn.bound_ports().is_empty() || gntdev.leaked() != 0 {
        return Err(format!(
            "after the disconnect: {mapped} ring page(s) mapped (the domU's {mapped_before}), ports {:?}, {} leaked",
            evtchn.bound_ports(),
            gntdev.leaked()
        ));
    }
    out.out(format_args!(
        "{} malformed requests answered with errors, a valid one served, then {}; released {} ring page, port {}; {:?}",
        cases.len() - 1,
        served.unwrap_err(),
        released.ring_pages,
        released.port.0,
        released.counts
    ));
    Ok(())
}
