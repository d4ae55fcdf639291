//! `xen-dom0-tests domu-control <domu options>`: the lifecycle run with a freestanding domU
//! ([`exchange::CONTROL_CMDLINE`] on its command line): `xl save`, `xl save -c` and `xl restore`
//! (or, for a domU that cannot suspend, a refused `xl save`), `xl reboot` and `xl shutdown` of a
//! Rust guest, judged from xl's side and from the exchange the domU keeps up across them.
//!
//! The domU advertises `control/feature-poweroff` and `feature-reboot` (and `feature-suspend`
//! where it can suspend) and writes `data/ready`. The suspend cases ([`exchange::suspend::DOM0_CASES`])
//! follow; `xl reboot` must then end it with reason `reboot` (xl's log), and xl (`on_reboot =
//! "restart"`) must bring it back under a new domid, with the same command line, ready again;
//! `xl shutdown -w` must end that one with reason `poweroff`. A guest that does not acknowledge
//! (clear `control/shutdown`) or does not act is caught by the waits, named, and destroyed.

use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant};

use xen_testbed_protocol::exchange::suspend::{CONSOLE_MARK, PATTERN, PING, PONG, SUSPENDED};
use xen_testbed_protocol::{Reporter, Stdout, exchange};

use crate::devices::{GrantMapping, InterdomainPort};
use crate::domu::{ConsoleForwarder, ConsoleLog, Domain, Spec, Steps, describe_reason};
use crate::run_tool;

/// How long a (re)booting domU may take to write `data/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long xl may take to carry out a request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
use xen_sys::{SHUTDOWN_poweroff, SHUTDOWN_reboot};

/// `domu-control`, or with `advertise_suspend` false `domu-control-no-suspend` (the domU is told
/// not to advertise `feature-suspend`): exits with failure if a case failed.
pub(crate) fn run(args: &[String], advertise_suspend: bool) -> ExitCode {
    let verb = if advertise_suspend {
        "domu-control"
    } else {
        "domu-control-no-suspend"
    };
    let mut spec = match Spec::parse_for(verb, args) {
        Ok(spec) => spec,
        Err(usage) => return usage,
    };
    spec.cmdline = Some(if advertise_suspend {
        exchange::CONTROL_CMDLINE.into()
    } else {
        format!(
            "{} {}",
            exchange::CONTROL_CMDLINE,
            exchange::suspend::NO_SUSPEND_CMDLINE
        )
    });
    spec.on_reboot = "restart";
    let mut steps = Steps {
        reporter: Reporter::new(Stdout),
        failed: None,
    };
    let domain = steps.step("xl_create", |_| Domain::create(&spec));
    let forwarder = domain.as_ref().map(|d| ConsoleForwarder::start(&d.name));
    match domain {
        Some(domain) => lifecycle(&mut steps, &domain),
        // Each reported as not run.
        None => {
            for case in &exchange::CONTROL_DOM0_CASES[1..] {
                steps.step(case, |_| Ok(()));
            }
        }
    }
    if let Some(forwarder) = forwarder {
        forwarder.finish();
    }
    ExitCode::from(steps.reporter.done().exit_code())
}

/// Runs the cases after `xl_create` (after a failure, each later one reports itself not run);
/// whatever failed, no domU outlives the run.
fn lifecycle(steps: &mut Steps, first: &Domain) {
    steps.step("domu_ready", |_| {
        first.unpause()?;
        first.wait_for_key(exchange::READY, "1", READY_TIMEOUT)
    });
    let suspends = steps.step("control_features_advertised", |out| {
        for feature in ["feature-poweroff", "feature-reboot"] {
            let value = first.read(&format!("control/{feature}"))?;
            if value != "1" {
                return Err(format!("control/{feature} is {value:?}"));
            }
        }
        // libxl makes the feature nodes empty, for the guest to fill (so failing to read one is
        // a failure, not "not advertised").
        let suspend = first.read("control/feature-suspend")?;
        if !suspend.is_empty() && suspend != "1" {
            return Err(format!("control/feature-suspend is {suspend:?}"));
        }
        out.out(format_args!(
            "control/feature-poweroff and feature-reboot are 1, feature-suspend {suspend:?}"
        ));
        Ok(suspend == "1")
    });
    let restored = match suspends {
        Some(true) => save_and_restore(steps, first),
        Some(false) => {
            refused(steps, first);
            None
        }
        None => None,
    };
    let first = restored.as_ref().unwrap_or(first);
    let rebooted = steps.step("control_xl_reboot", |out| {
        let start = Instant::now();
        run_tool("xl", &["reboot", &first.name])?;
        let reason = first.wait_gone(REQUEST_TIMEOUT)?;
        if reason != SHUTDOWN_reboot {
            return Err(format!("xl reboot: the domU {}", describe_reason(reason)));
        }
        // xl restarts it under a new domid.
        let second = loop {
            match Domain::attach(&first.name) {
                Ok(second) if second.domid != first.domid => break second,
                _ if start.elapsed() > REQUEST_TIMEOUT => {
                    return Err(format!(
                        "xl did not restart {} within {} s",
                        first.name,
                        REQUEST_TIMEOUT.as_secs()
                    ));
                }
                _ => sleep(Duration::from_millis(100)),
            }
        };
        out.out(format_args!(
            "xl reboot: domid {} shut down with reason reboot, domid {} started, after {:.1} s",
            first.domid,
            second.domid,
            start.elapsed().as_secs_f64()
        ));
        Ok(second)
    });
    let Some(second) = rebooted else {
        let _ = first.destroy();
        for case in ["domu_ready_after_reboot", "control_xl_shutdown"] {
            steps.step(case, |_| Ok(()));
        }
        return;
    };
    steps.step("domu_ready_after_reboot", |_| {
        second.wait_for_key(exchange::READY, "1", READY_TIMEOUT)
    });
    steps.step("control_xl_shutdown", |out| {
        let start = Instant::now();
        run_tool("xl", &["shutdown", "-w", &second.name])?;
        match second.wait_gone(REQUEST_TIMEOUT)? {
            reason if reason == SHUTDOWN_poweroff => {
                out.out(format_args!(
                    "xl shutdown -w: domid {} powered off after {:.1} s",
                    second.domid,
                    start.elapsed().as_secs_f64()
                ));
                Ok(())
            }
            other => Err(format!("xl shutdown: the domU {}", describe_reason(other))),
        }
    });
    let _ = second.destroy();
}

/// How long the domU may take to report the outcome of a suspend.
const SUSPEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long dom0 waits for the domU's answer to an event or a ping.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// dom0's end of the exchange: the domU's port bound, its page mapped.
struct Peer {
    port: InterdomainPort,
    mapping: GrantMapping,
}

impl Peer {
    /// Binds the port and maps the page the domU published; checks the page's text.
    fn connect(domain: &Domain) -> Result<Self, String> {
        let mut port =
            InterdomainPort::bind(domain.domid, domain.read_number(exchange::EVTCHN_PORT)?)?;
        // Xen marks a newly bound port pending: drain that event.
        port.wait(Duration::from_secs(2))
            .map_err(|e| format!("the pending event after binding: {e}"))?;
        let mapping = GrantMapping::map(domain.domid, domain.read_number(exchange::GRANT_REF)?)?;
        Ok(Self { port, mapping })
    }

    /// One round of the exchange: an event answered, the page's text, a ping copied to the
    /// pong through the domU's watch; `round` names the ping.
    fn exchange(&mut self, domain: &Domain, round: &str) -> Result<(), String> {
        self.port.notify()?;
        self.port
            .wait(ANSWER_TIMEOUT)
            .map_err(|e| format!("the domU's answer to an event: {e}"))?;
        let text = self.mapping.read(0, exchange::DOMU_TEXT.len())?;
        if text != exchange::DOMU_TEXT.as_bytes() {
            return Err(format!(
                "the granted page reads {:?}",
                String::from_utf8_lossy(&text)
            ));
        }
        domain.write(PING, round)?;
        domain.wait_for_key(PONG, round, ANSWER_TIMEOUT)
    }

    /// Unmaps the page and closes the port.
    fn close(self) -> Result<(), String> {
        self.mapping.unmap()
    }
}

/// Runs `xl <args>`; returns how long it took.
fn timed_xl(args: &[&str]) -> Result<Duration, String> {
    let start = Instant::now();
    run_tool("xl", args)?;
    Ok(start.elapsed())
}

/// The size of `path` in MB, for the report.
fn megabytes(path: &str) -> f64 {
    std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / 1e6)
}

/// The suspend cases ([`exchange::suspend::DOM0_CASES`]); returns the restored domain, if any.
fn save_and_restore(steps: &mut Steps, first: &Domain) -> Option<Domain> {
    let saved = format!("/tmp/{}.save", first.name);
    let mut peer = steps.step("suspend_exchange_before", |out| {
        let mut peer = Peer::connect(first)?;
        peer.exchange(first, "before")?;
        out.out(format_args!(
            "bound the domU's port, mapped its page, ping-pong and watch answered"
        ));
        Ok(peer)
    });
    steps.step("suspend_xl_save_checkpoint", |out| {
        // The image is not kept: written to /dev/null, it costs dom0 no memory.
        let took = timed_xl(&["save", "-c", &first.name, "/dev/null"])?;
        first.wait_for_key(SUSPENDED, "cancelled 1", SUSPEND_TIMEOUT)?;
        out.out(format_args!(
            "xl save -c took {:.2} s; the domU carried on: cancelled",
            took.as_secs_f64()
        ));
        Ok(())
    });
    steps.step("suspend_exchange_after_checkpoint", |out| {
        let peer = peer.as_mut().ok_or("no peer")?;
        peer.exchange(first, "checkpointed")?;
        out.out(format_args!(
            "the same port, page and watch work after the checkpoint"
        ));
        Ok(())
    });
    steps.step("suspend_xl_save", |out| {
        let took = timed_xl(&["save", &first.name, &saved])?;
        if Domain::attach(&first.name).is_ok() {
            return Err(format!("{} still runs after xl save", first.name));
        }
        // The old domain's page: unmapped, so the dead domain can go.
        if let Some(peer) = peer.take() {
            peer.close()?;
        }
        out.out(format_args!(
            "xl save took {:.2} s ({:.1} MB); domid {} is gone",
            took.as_secs_f64(),
            megabytes(&saved),
            first.domid
        ));
        Ok(())
    });
    let restored = steps.step("suspend_xl_restore", |out| {
        let took = timed_xl(&["restore", &saved]);
        let _ = std::fs::remove_file(&saved);
        let took = took?;
        let restored = Domain::attach(&first.name)?;
        restored.wait_for_key(SUSPENDED, "resumed 2", SUSPEND_TIMEOUT)?;
        out.out(format_args!(
            "xl restore took {:.2} s; domid {} resumed in a new domain",
            took.as_secs_f64(),
            restored.domid
        ));
        Ok(restored)
    });
    steps.step("suspend_exchange_after_restore", |out| {
        let restored = restored.as_ref().ok_or("no restored domain")?;
        let pattern = restored.read(PATTERN)?;
        if pattern != "intact" {
            return Err(format!("the domU's memory pattern: {pattern}"));
        }
        let mut peer = Peer::connect(restored)?;
        peer.exchange(restored, "restored")?;
        peer.close()?;
        console_shows(&restored.name, CONSOLE_MARK)?;
        out.out(format_args!(
            "memory intact; the new port, page, watch and console work"
        ));
        Ok(())
    });
    restored
}

/// Waits up to [`ANSWER_TIMEOUT`] for `mark` in the domU's console log.
fn console_shows(name: &str, mark: &str) -> Result<(), String> {
    let start = Instant::now();
    let mut log = ConsoleLog::new(name);
    loop {
        log.read_new()?;
        if String::from_utf8_lossy(&log.bytes).contains(mark) {
            return Ok(());
        }
        if start.elapsed() > ANSWER_TIMEOUT {
            return Err(format!("{mark:?} never reached {}", log.path));
        }
        sleep(Duration::from_millis(100));
    }
}

/// [`exchange::suspend::REFUSED_DOM0_CASES`]: `xl save` of a domU that does not advertise
/// `feature-suspend` fails and the domU runs on. xl reads no feature node: it writes `suspend`
/// to `control/shutdown` and, the domU leaving it unacknowledged, cancels after 60 s (x86);
/// on Arm libxenguest cannot save at all and the save fails at once.
fn refused(steps: &mut Steps, domain: &Domain) {
    steps.step("suspend_refused", |out| {
        let target = format!("/tmp/{}.save", domain.name);
        let start = Instant::now();
        let result = run_tool("xl", &["save", &domain.name, &target]);
        let _ = std::fs::remove_file(&target);
        let Err(error) = result else {
            return Err("xl save of a domU without feature-suspend succeeded".into());
        };
        let now = Domain::attach(&domain.name)?;
        if now.domid != domain.domid {
            return Err(format!("{} has domid {} now", domain.name, now.domid));
        }
        domain.write(PING, "refused")?;
        domain.wait_for_key(PONG, "refused", ANSWER_TIMEOUT)?;
        // x86: the request went unacknowledged; Arm: no save at all.
        let Some(reason) = ["didn't acknowledge suspend", "command not implemented"]
            .into_iter()
            .find(|reason| error.contains(reason))
        else {
            return Err(format!("xl save failed for another reason: {error}"));
        };
        out.out(format_args!(
            "xl save failed after {:.1} s ({reason}); the domU runs on",
            start.elapsed().as_secs_f64()
        ));
        Ok(())
    });
}
