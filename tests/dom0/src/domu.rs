//! The dom0 half of the cross-domain exchange (`xen-dom0-tests domu ...`, steps and keys in
//! [`xen_testbed_protocol::exchange`]), and `xen-dom0-tests run-domu ...`, which only creates a domU
//! and forwards its console until it is gone.
//!
//! Debian's toolstack does the domain management: `xl` creates and destroys the domU. The
//! project's `xen-store` client reaches xenstore over the daemon's socket, and one watch on a
//! second connection says when the domU's home or a domain's state changed, so the waits read
//! only after a change; Debian's `xenstore-read`/`-write`/`-exists` stay as the oracle (see
//! `store_cases`). xenconsoled (`--log=guest`) writes the domU's console to a file, which a
//! thread forwards to stdout, each line as [`exchange::forwarded`], so the runner judges both
//! domains' cases from one serial log.

mod store_cases;

use std::cell::RefCell;
use std::io::Read;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{JoinHandle, sleep};
use std::time::{Duration, Instant};

use xen_store::unix::Local;
use xen_store::{Client, ErrorKind, Store};
use xen_testbed_protocol::{Reporter, Stdout};
use xen_testbed_protocol::{bulk, exchange};

use crate::devices::{GrantMapping, InterdomainPort};
use crate::run_tool;

mod grant;
pub(crate) use grant::notify_child as grant_notify_child;

/// How long dom0 waits for the domU to write `data/ready`.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dom0 waits for each event from the domU.
const EVENT_TIMEOUT: Duration = Duration::from_secs(exchange::DOMU_WAIT_SECONDS);
/// How long dom0 waits for the domU to go away after the exchange.
pub(crate) const GONE_TIMEOUT: Duration = Duration::from_secs(20);
/// Polling interval of the waits (for xl's log, which no watch covers; the forwarded console).
const POLL: Duration = Duration::from_millis(50);

/// The domU to create: `--name N --type pv|pvh --memory MiB --kernel PATH [--selftest S]
/// [--timeout SECONDS]`.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    name: String,
    xl_type: String,
    memory: u32,
    kernel: String,
    selftest: Option<String>,
    timeout: Duration,
    /// The kernel command line (xl's `extra`), if any.
    pub(crate) cmdline: Option<String>,
    /// xl's `on_reboot`: `destroy`, or `restart` for a run that reboots the domU.
    pub(crate) on_reboot: &'static str,
    /// An xl disk specification (`phy:/dev/loop0,xvda,w,script=...`), set by the block run.
    pub(crate) disk: Option<String>,
    /// xl's `ramdisk` (a Linux domU's initramfs), if any.
    ramdisk: Option<String>,
    /// xl's `cpuid` (a Linux PVH domU under TCG needs `host,rdtscp=0`), if any.
    cpuid: Option<String>,
}

impl Spec {
    /// Parses the options of `command`, or says what is wrong and gives the usage exit status.
    pub(crate) fn parse_for(command: &str, args: &[String]) -> Result<Self, ExitCode> {
        Self::parse(args).map_err(|error| {
            eprintln!("xen-dom0-tests {command}: {error}");
            ExitCode::from(2)
        })
    }

    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut spec = Spec {
            name: String::new(),
            xl_type: "pv".into(),
            memory: 32,
            kernel: String::new(),
            selftest: None,
            timeout: Duration::from_secs(60),
            cmdline: None,
            on_reboot: "destroy",
            disk: None,
            ramdisk: None,
            cpuid: None,
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a value"))?
                .clone();
            match flag.as_str() {
                "--name" => spec.name = value,
                "--type" => spec.xl_type = value,
                "--memory" => spec.memory = value.parse().map_err(|e| format!("--memory: {e}"))?,
                "--kernel" => spec.kernel = value,
                "--ramdisk" => spec.ramdisk = Some(value),
                "--cmdline" => spec.cmdline = Some(value),
                "--cpuid" => spec.cpuid = Some(value),
                "--selftest" => spec.selftest = Some(value),
                "--timeout" => {
                    spec.timeout =
                        Duration::from_secs(value.parse().map_err(|e| format!("--timeout: {e}"))?)
                }
                other => return Err(format!("unknown option {other}")),
            }
        }
        if spec.name.is_empty() || spec.kernel.is_empty() {
            return Err("--name and --kernel are required".into());
        }
        if !["pv", "pvh"].contains(&spec.xl_type.as_str()) {
            return Err(format!("--type {}: pv or pvh", spec.xl_type));
        }
        Ok(spec)
    }

    /// The xl configuration: a crash is preserved, so that dom0 sees it.
    fn xl_config(&self) -> String {
        // Arm guests have one type (PVH-like); xl warns about any other.
        let xl_type = if cfg!(target_arch = "aarch64") {
            String::new()
        } else {
            format!("type = \"{}\"\n", self.xl_type)
        };
        let extra = self
            .cmdline
            .as_ref()
            .map_or(String::new(), |line| format!("extra = \"{line}\"\n"));
        let ramdisk = self
            .ramdisk
            .as_ref()
            .map_or(String::new(), |path| format!("ramdisk = \"{path}\"\n"));
        let cpuid = self
            .cpuid
            .as_ref()
            .map_or(String::new(), |line| format!("cpuid = \"{line}\"\n"));
        let disk = match &self.disk {
            Some(disk) => format!("disk = [ '{disk}' ]\n"),
            None => String::new(),
        };
        format!(
            "name = \"{}\"\n{xl_type}kernel = \"{}\"\n{ramdisk}{extra}{cpuid}memory = {}\nvcpus = 1\n{disk}\
             on_poweroff = \"destroy\"\non_reboot = \"{}\"\non_crash = \"preserve\"\n",
            self.name, self.kernel, self.memory, self.on_reboot
        )
    }
}

/// A domU created by `xl create`.
#[derive(Debug)]
pub(crate) struct Domain {
    pub(crate) name: String,
    pub(crate) domid: u32,
    /// The connection to xenstored for reads and writes.
    store: RefCell<Client<Local>>,
    /// Fires when the domU's xenstore home or any domain's state changes.
    changes: Watch,
}

impl Domain {
    /// Creates the domU paused; writes `data/selftest` if asked; does not unpause it.
    pub(crate) fn create(spec: &Spec) -> Result<Self, String> {
        let config = format!("/tmp/{}.cfg", spec.name);
        std::fs::write(&config, spec.xl_config()).map_err(|e| format!("{config}: {e}"))?;
        run_tool("xl", &["create", "-p", &config])?;
        let domain = Self::attach(&spec.name)?;
        if let Some(selftest) = &spec.selftest {
            domain.write(exchange::SELFTEST, selftest)?;
        }
        Ok(domain)
    }

    /// The running domain named `name` (its current domid: a new one after `xl reboot`).
    pub(crate) fn attach(name: &str) -> Result<Self, String> {
        let domid = run_tool("xl", &["domid", name])?;
        let domid = domid
            .trim()
            .parse()
            .map_err(|e| format!("xl domid printed {domid:?}: {e}"))?;
        // The home (its keys, and its removal when the domain is destroyed) and `@releaseDomain`
        // (a domain shut down or died).
        let changes = Watch::start(&[&format!("/local/domain/{domid}"), "@releaseDomain"])?;
        Ok(Self {
            name: name.into(),
            domid,
            store: RefCell::new(Client::new(connect()?)),
            changes,
        })
    }

    pub(crate) fn unpause(&self) -> Result<(), String> {
        run_tool("xl", &["unpause", &self.name]).map(drop)
    }

    /// The absolute xenstore path of `key` under the domU's home.
    fn path(&self, key: &str) -> String {
        format!("/local/domain/{}/{key}", self.domid)
    }

    pub(crate) fn read(&self, key: &str) -> Result<String, String> {
        self.read_path(&self.path(key))
    }

    /// Reads the absolute xenstore `path` (e.g. a key of the domU's device backends).
    pub(crate) fn read_path(&self, path: &str) -> Result<String, String> {
        self.store
            .borrow_mut()
            .read_string(path)
            .map_err(|e| format!("read {path}: {e}"))
    }

    pub(crate) fn write(&self, key: &str, value: &str) -> Result<(), String> {
        let path = self.path(key);
        self.store
            .borrow_mut()
            .write(&path, value.as_bytes())
            .map_err(|e| format!("write {path}: {e}"))
    }

    /// Reads a decimal `key`.
    pub(crate) fn read_number(&self, key: &str) -> Result<u32, String> {
        let text = self.read(key)?;
        text.parse()
            .map_err(|e| format!("{key} = {text:?} is not a number: {e}"))
    }

    /// Whether the domain still exists (its xenstore home does).
    fn exists(&self) -> bool {
        let home = format!("/local/domain/{}", self.domid);
        !matches!(self.store.borrow_mut().read(&home), Err(e) if e.kind() == ErrorKind::NotFound)
    }

    /// The `SHUTDOWN_*` code the domain shut down with, from xl's log of it (`None`: still running).
    /// The log is the name's: after `xl reboot` it also holds the earlier domids' lines.
    pub(crate) fn shutdown_reason(&self) -> Option<u32> {
        let log = std::fs::read_to_string(format!("/var/log/xen/xl-{}.log", self.name)).ok()?;
        shutdown_reason_in(&log, self.domid)
    }

    /// Waits until the domain shut down and is gone (or, after a crash, preserved) for up to
    /// `timeout`; returns the shutdown reason, or destroys it and fails naming it.
    pub(crate) fn wait_gone(&self, timeout: Duration) -> Result<u32, String> {
        let start = Instant::now();
        let mut changed = true;
        let mut gone = false;
        loop {
            // In this order: xl logs the reason before it destroys the domain.
            if changed {
                gone = !self.exists();
            }
            let reason = self.shutdown_reason();
            match reason {
                Some(reason) if gone || reason == SHUTDOWN_CRASH => return Ok(reason),
                None if gone => {
                    return Err(format!(
                        "domU {} (domid {}) is gone without a shutdown in xl's log",
                        self.name, self.domid
                    ));
                }
                _ => {}
            }
            if start.elapsed() > timeout {
                let destroyed = self.destroy();
                return Err(format!(
                    "domU {} (domid {}) still running after {} s: {destroyed}",
                    self.name,
                    self.domid,
                    timeout.as_secs()
                ));
            }
            changed = self.changes.wait(POLL);
        }
    }

    /// Destroys the domain if it still exists; says what happened.
    pub(crate) fn destroy(&self) -> String {
        if !self.exists() {
            return "already gone".into();
        }
        match run_tool("xl", &["destroy", &self.name]) {
            Ok(_) => "destroyed it".into(),
            Err(error) => format!("could not destroy it: {error}"),
        }
    }

    /// Reads `key` after each change of the domU's home until it reads `value`, for up to
    /// `timeout`; fails early, naming the domU, if it shuts down meanwhile, and destroys it on a
    /// timeout.
    pub(crate) fn wait_for_key(
        &self,
        key: &str,
        value: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        self.wait_for_value(key, timeout, |v| v == value).map(drop)
    }

    /// Waits as [`wait_for_key`](Self::wait_for_key) does until `key` holds a value `accept`
    /// accepts; returns it.
    pub(crate) fn wait_for_value(
        &self,
        key: &str,
        timeout: Duration,
        accept: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let start = Instant::now();
        let mut changed = true;
        loop {
            if changed {
                match self.read(key) {
                    Ok(value) if accept(&value) => return Ok(value),
                    _ => {}
                }
            }
            if let Some(reason) = self.shutdown_reason() {
                let preserved = if reason == SHUTDOWN_CRASH {
                    format!(" (xl's on_crash kept it: {})", self.destroy())
                } else {
                    String::new()
                };
                return Err(format!(
                    "domU {} {} before writing {key}{preserved}",
                    self.name,
                    describe_reason(reason)
                ));
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "domU {} never wrote {key} within {} s: {}",
                    self.name,
                    timeout.as_secs(),
                    self.destroy()
                ));
            }
            changed = self.changes.wait(POLL);
        }
    }
}

/// The reason code of xl's `Domain <domid> has shut down, reason code <n> 0x<n>` line for `domid`.
/// A suspend is not an end, and is skipped: after `xl save -c` the domain runs on (and may shut
/// down later, a line of its own), after `xl save` xl destroys it.
fn shutdown_reason_in(log: &str, domid: u32) -> Option<u32> {
    let prefix = format!("Domain {domid} has shut down, reason code ");
    log.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .find(|&reason| reason != SHUTDOWN_SUSPEND)
}

/// Connects to xenstored's socket.
fn connect() -> Result<Local, String> {
    Local::socket().map_err(|e| format!("connecting to xenstored's socket: {e}"))
}

/// Watches on their own connection, whose events a thread turns into firings (xenstored also
/// fires each watch once when it is set).
#[derive(Debug)]
struct Watch {
    /// The watching connection's socket: shut down to end the thread.
    socket: UnixStream,
    thread: Option<JoinHandle<()>>,
    fired: mpsc::Receiver<()>,
}

impl Watch {
    fn start(paths: &[&str]) -> Result<Self, String> {
        let local = connect()?;
        let Local::Socket(socket) = &local else {
            return Err("xenstored's connection is not a socket".into());
        };
        let socket = socket
            .try_clone()
            .map_err(|e| format!("xenstored's socket: {e}"))?;
        let mut client = Client::new(local);
        for path in paths {
            client
                .watch(path)
                .map_err(|e| format!("watch {path}: {e}"))?;
        }
        let (fire, fired) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            while client.next_event().is_ok() {
                if fire.send(()).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            socket,
            thread: Some(thread),
            fired,
        })
    }

    /// Waits up to `timeout` for a firing and takes all that came; whether there was one. If
    /// the watching connection failed, every wait reports a change after `timeout`, so the
    /// waits fall back to polling.
    fn wait(&self, timeout: Duration) -> bool {
        match self.fired.recv_timeout(timeout) {
            Ok(()) => {
                while self.fired.try_recv().is_ok() {}
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                sleep(timeout);
                true
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // The thread's blocked read returns once the socket is shut down.
        let _ = self.socket.shutdown(Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `SHUTDOWN_crash` (Xen's `public/sched.h`).
const SHUTDOWN_CRASH: u32 = 3;
/// `SHUTDOWN_suspend`.
const SHUTDOWN_SUSPEND: u32 = 2;

/// A `SHUTDOWN_*` code as the domU's fate, e.g. "crashed".
pub(crate) fn describe_reason(reason: u32) -> String {
    match reason_name(reason) {
        Some("crash") => "crashed".into(),
        Some(name) => format!("shut down ({name})"),
        None => format!("shut down (reason {reason})"),
    }
}

/// The `SHUTDOWN_*` name of `reason`.
fn reason_name(reason: u32) -> Option<&'static str> {
    [
        "poweroff",
        "reboot",
        "suspend",
        "crash",
        "watchdog",
        "soft_reset",
    ]
    .get(usize::try_from(reason).ok()?)
    .copied()
}

/// xenconsoled's log (`--log=guest`) of one domU's console, read as it grows: each
/// [`read_new`](Self::read_new) appends only what was logged since the last.
pub(crate) struct ConsoleLog {
    pub(crate) path: String,
    file: Option<std::fs::File>,
    /// Everything read so far.
    pub(crate) bytes: Vec<u8>,
}

impl ConsoleLog {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            path: format!("/var/log/xen/console/guest-{name}.log"),
            file: None,
            bytes: Vec::new(),
        }
    }

    /// Appends what xenconsoled logged since the last call (nothing before it created the log).
    pub(crate) fn read_new(&mut self) -> Result<(), String> {
        if self.file.is_none() {
            self.file = std::fs::File::open(&self.path).ok();
        }
        match &mut self.file {
            Some(file) => file
                .read_to_end(&mut self.bytes)
                .map(drop)
                .map_err(|e| format!("{}: {e}", self.path)),
            None => Ok(()),
        }
    }
}

/// Forwards the domU's console log (written by xenconsoled) to stdout, line by line, but the
/// bulk data ([`bulk`]).
pub(crate) struct ConsoleForwarder {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl ConsoleForwarder {
    pub(crate) fn start(name: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut log = ConsoleLog::new(name);
        let name = name.to_string();
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            // Where the first line not yet forwarded starts.
            let mut next = 0;
            loop {
                // Read once more after the stop request: the last lines may have just arrived.
                let last = stopping.load(Ordering::Acquire);
                if let Err(error) = log.read_new() {
                    forward(&name, format!("(dom0: {error})").as_bytes());
                }
                while let Some(end) = log.bytes[next..].iter().position(|&b| b == b'\n') {
                    let line = &log.bytes[next..next + end];
                    next += end + 1;
                    // Bulk data is checked from the log itself, not forwarded.
                    if line.first() != Some(&bulk::PREFIX) {
                        forward(&name, line);
                    }
                }
                if last {
                    if next < log.bytes.len() {
                        forward(&name, &log.bytes[next..]);
                    }
                    return;
                }
                sleep(POLL);
            }
        });
        Self { stop, thread }
    }

    /// Forwards what is left and stops.
    pub(crate) fn finish(self) {
        // xenconsoled writes the log as it drains the ring: give it a moment.
        sleep(Duration::from_millis(200));
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.join();
    }
}

/// Prints one forwarded line ([`Stdout`] keeps it whole against the reporting thread's lines).
fn forward(name: &str, line: &[u8]) {
    use std::fmt::Write;
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    let _ = writeln!(Stdout, "{}", exchange::forwarded(name, text));
}

/// Runs the steps of one side in order; after a failed step, the rest are reported as not run.
pub(crate) struct Steps {
    pub(crate) reporter: Reporter<Stdout>,
    pub(crate) failed: Option<&'static str>,
}

impl Steps {
    /// Runs `body` (which may print `XENTEST OUT` lines) and reports it as case `name`.
    pub(crate) fn step<T>(
        &mut self,
        name: &'static str,
        body: impl FnOnce(&mut Reporter<Stdout>) -> Result<T, String>,
    ) -> Option<T> {
        if let Some(earlier) = self.failed {
            self.reporter
                .case(name, Err::<(), _>(format!("not run: {earlier} failed")));
            return None;
        }
        match body(&mut self.reporter) {
            Ok(value) => {
                self.reporter.case(name, Ok::<(), String>(()));
                Some(value)
            }
            Err(error) => {
                self.reporter.case(name, Err::<(), _>(error));
                self.failed = Some(name);
                None
            }
        }
    }
}

/// `xen-dom0-tests domu ...`: the dom0 half of the exchange; exits with failure if a case failed.
pub(crate) fn exchange(args: &[String]) -> ExitCode {
    let spec = match Spec::parse_for("domu", args) {
        Ok(spec) => spec,
        Err(usage) => return usage,
    };
    let mut steps = Steps {
        reporter: Reporter::new(Stdout),
        failed: None,
    };
    let domain = steps.step("xl_create", |out| {
        let domain = Domain::create(&spec)?;
        out.out(format_args!(
            "xl created domU {} (domid {}, {}, {} MiB), paused",
            domain.name, domain.domid, spec.xl_type, spec.memory
        ));
        Ok(domain)
    });
    let forwarder = domain.as_ref().map(|d| ConsoleForwarder::start(&d.name));
    if let Some(domain) = &domain {
        run_exchange(&mut steps, domain);
    } else {
        for case in exchange::DOM0_CASES[1..]
            .iter()
            .chain(exchange::store::DOM0_CASES)
        {
            steps.step(case, |_| Ok(()));
        }
    }
    if let Some(forwarder) = forwarder {
        forwarder.finish();
    }
    let summary = steps.reporter.done();
    ExitCode::from(summary.exit_code())
}

/// The steps after `xl_create`, in the order of [`xen_testbed_protocol::exchange`].
fn run_exchange(steps: &mut Steps, domain: &Domain) {
    steps.step("domu_ready", |out| {
        domain.unpause()?;
        domain.wait_for_key(exchange::READY, "1", READY_TIMEOUT)?;
        out.out(format_args!("the domU wrote {} = 1", exchange::READY));
        Ok(())
    });
    steps.step("domu_read_its_name", |_| {
        let seen = domain.read(exchange::SEEN_NAME)?;
        expect_equal(exchange::SEEN_NAME, &seen, &domain.name)
    });
    steps.step("domu_read_its_domid", |_| {
        let seen = domain.read(exchange::SEEN_DOMID)?;
        expect_equal(exchange::SEEN_DOMID, &seen, &domain.domid.to_string())
    });
    let mut port = steps.step("evtchn_bind_domu_port", |out| {
        let remote = domain.read_number(exchange::EVTCHN_PORT)?;
        let mut port = InterdomainPort::bind(domain.domid, remote)?;
        // Xen marks a newly bound port pending: drain that event.
        port.wait(Duration::from_secs(2))
            .map_err(|e| format!("the pending event after binding: {e}"))?;
        out.out(format_args!(
            "bound the domU's port {remote} through /dev/xen/evtchn"
        ));
        Ok(port)
    });
    let mapping = steps.step("grant_map_domu_page", |out| {
        let reference = domain.read_number(exchange::GRANT_REF)?;
        if reference < 2 {
            return Err(format!("grant ref {reference} is the toolstack's"));
        }
        let mapping = GrantMapping::map(domain.domid, reference)?;
        let text =
            String::from_utf8_lossy(&mapping.read(0, exchange::DOMU_TEXT.len())?).into_owned();
        expect_equal("the page's first bytes", &text, exchange::DOMU_TEXT)?;
        out.out(format_args!(
            "mapped grant ref {reference} through /dev/xen/gntdev; it reads {text:?}"
        ));
        Ok(mapping)
    });
    steps.step("evtchn_notify_domu", |out| {
        let (Some(mapping), Some(port)) = (&mapping, &port) else {
            return Err("no mapping or port".into());
        };
        mapping.write(exchange::DOM0_TEXT_OFFSET, exchange::DOM0_TEXT.as_bytes())?;
        port.notify()?;
        out.out(format_args!(
            "wrote {:?} at byte {} of the page and notified the domU",
            exchange::DOM0_TEXT,
            exchange::DOM0_TEXT_OFFSET
        ));
        Ok(())
    });
    steps.step("evtchn_from_domu", |out| {
        let Some(port) = &mut port else {
            return Err("no port".into());
        };
        port.wait(EVENT_TIMEOUT)
            .map_err(|e| format!("domU {}: {e}", domain.name))?;
        out.out(format_args!("got the domU's event"));
        Ok(())
    });
    steps.step("grant_unmap", |out| {
        let (Some(mapping), Some(port)) = (mapping, &port) else {
            return Err("no mapping or port".into());
        };
        mapping.unmap()?;
        port.notify()?;
        out.out(format_args!("unmapped the page and notified the domU"));
        Ok(())
    });
    grant::run(steps, domain);
    store_cases::change_watched_key(steps, domain);
    steps.step("console_bulk_intact", |out| {
        crate::console_domu::bulk_intact(domain, out)
    });
    powered_off(steps, domain);
    store_cases::nothing_outside(steps);
}

/// The last step of a run with a domU, `domu_powered_off`: the domU is gone, having powered off
/// (it is destroyed otherwise). It runs whatever failed before (the domU must not outlive the
/// run), then without waiting long if something did.
pub(crate) fn powered_off(steps: &mut Steps, domain: &Domain) {
    let failed_before = steps.failed.take();
    steps.step("domu_powered_off", |_| {
        let timeout = if failed_before.is_some() {
            Duration::from_secs(2)
        } else {
            GONE_TIMEOUT
        };
        match domain.wait_gone(timeout)? {
            0 => Ok(()),
            other => Err(format!(
                "domU {} {} (xl's log): {}",
                domain.name,
                describe_reason(other),
                domain.destroy()
            )),
        }
    });
    if steps.failed.is_none() {
        steps.failed = failed_before;
    }
}

fn expect_equal(what: &str, got: &str, want: &str) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what} is {got:?}, expected {want:?}"))
    }
}

/// `xen-dom0-tests run-domu ...`: creates the domU, forwards its console until it is gone (or the
/// timeout), prints `XENTEST OUT domu-exit <name> <how>` and exits 0 only after a poweroff.
pub(crate) fn run_user_domu(args: &[String]) -> ExitCode {
    let spec = match Spec::parse_for("run-domu", args) {
        Ok(spec) => spec,
        Err(usage) => return usage,
    };
    let domain = match Domain::create(&spec).and_then(|d| d.unpause().map(|()| d)) {
        Ok(domain) => domain,
        Err(error) => {
            eprintln!("xen-dom0-tests run-domu: {error}");
            println!(
                "XENTEST OUT {} {} create-failed",
                exchange::DOMU_EXIT,
                spec.name
            );
            return ExitCode::FAILURE;
        }
    };
    let forwarder = ConsoleForwarder::start(&domain.name);
    let how = match domain.wait_gone(spec.timeout) {
        Ok(reason) => {
            if reason == SHUTDOWN_CRASH {
                domain.destroy();
            }
            reason_name(reason).unwrap_or("unknown").to_string()
        }
        Err(error) => {
            eprintln!("xen-dom0-tests run-domu: {error}");
            "timeout".into()
        }
    };
    forwarder.finish();
    println!("XENTEST OUT {} {} {how}", exchange::DOMU_EXIT, domain.name);
    if how == "poweroff" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shutdown_reason_is_the_one_of_its_domid() {
        let log = "Waiting for domain xentest-pv (domid 3) to die [pid 312]\n\
                   Domain 3 has shut down, reason code 1 0x1\n\
                   Action for shutdown reason code 1 is restart\n\
                   Domain 3 needs to be cleaned up: destroying the domain\n\
                   Done. Rebooting now\n\
                   Domain 4 has shut down, reason code 0 0x0\n";
        assert_eq!(shutdown_reason_in(log, 3), Some(1));
        assert_eq!(shutdown_reason_in(log, 4), Some(0));
        assert_eq!(shutdown_reason_in(log, 13), None);
        assert_eq!(shutdown_reason_in(log, 5), None);
    }

    #[test]
    fn a_suspend_for_a_checkpoint_is_not_an_end() {
        let log = "Domain 6 has shut down, reason code 2 0x2\n\
                   Domain 6 has shut down, reason code 0 0x0\n";
        assert_eq!(shutdown_reason_in(log, 6), Some(0));
        assert_eq!(shutdown_reason_in(&log[..42], 6), None);
    }
}
