//! `xen-dom0-tests domu-control <domu options>`: the lifecycle run with a freestanding domU
//! ([`exchange::CONTROL_CMDLINE`] on its command line): `xl reboot` and `xl shutdown` of a Rust
//! guest, judged from xl's side.
//!
//! The domU advertises `control/feature-poweroff` and `feature-reboot` and writes `data/ready`.
//! `xl reboot` must then end it with reason `reboot` (xl's log), and xl (`on_reboot =
//! "restart"`) must bring it back under a new domid, with the same command line, ready again;
//! `xl shutdown -w` must end that one with reason `poweroff`. A guest that does not acknowledge
//! (clear `control/shutdown`) or does not act is caught by the waits, named, and destroyed.

use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant};

use xen_testbed_protocol::{Reporter, Stdout, exchange};

use crate::domu::{ConsoleForwarder, Domain, Spec, Steps, describe_reason};
use crate::run_tool;

/// How long a (re)booting domU may take to write `data/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long xl may take to carry out a request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
use xen_sys::{SHUTDOWN_poweroff, SHUTDOWN_reboot};

/// `domu-control`: exits with failure if a case failed.
pub(crate) fn run(args: &[String]) -> ExitCode {
    let mut spec = match Spec::parse_for("domu-control", args) {
        Ok(spec) => spec,
        Err(usage) => return usage,
    };
    spec.cmdline = Some(exchange::CONTROL_CMDLINE.into());
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
    steps.step("control_features_advertised", |out| {
        for feature in ["feature-poweroff", "feature-reboot"] {
            let value = first.read(&format!("control/{feature}"))?;
            if value != "1" {
                return Err(format!("control/{feature} is {value:?}"));
            }
        }
        // libxl makes the feature nodes empty, for the guest to fill: not advertised, this
        // one stays so.
        // libxl makes the node, so failing to read it is a failure, not "not advertised".
        let suspend = first.read("control/feature-suspend")?;
        if !suspend.is_empty() {
            return Err(format!(
                "control/feature-suspend is {suspend:?}, though the domU cannot suspend"
            ));
        }
        out.out(format_args!(
            "control/feature-poweroff and feature-reboot are 1, feature-suspend empty"
        ));
        Ok(())
    });
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
