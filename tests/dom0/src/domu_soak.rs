//! `xen-dom0-tests domu-soak --trips N --cycles M <domu options>`: the dom0 half of the
//! event-channel soak with a freestanding domU ([`exchange::SOAK`]), through xen-evtchn's
//! `EvtchnDevice` (the domU answers through its `RawEventChannel`).
//!
//! N ping-pong round trips, each event awaited (a poll that delivers nothing within 5 s is a
//! lost wakeup); then M cycles that bind the domU's port, drain the event Xen leaves pending at
//! bind and close it, each checked with `EVTCHNOP_status` (our port closed, the domU's unbound
//! to dom0 again), the fd left with nothing bound and nothing queued; then one more round trip
//! on a fresh binding.

use std::process::ExitCode;
use std::time::Instant;

use xen_evtchn::linux::EvtchnDevice;
use xen_evtchn::{DomId, EventChannel, Port};
use xen_hypercall::event_channel::ChannelState;
use xen_hypercall::prelude::*;
use xen_hypercall_privcmd::Privcmd;
use xen_testbed_protocol::exchange;
use xen_testbed_protocol::{Reporter, Stdout};

use crate::domu::{ConsoleForwarder, Domain, READY_TIMEOUT, Spec, Steps, powered_off};
use crate::evtchn::call;
use crate::evtchn_bench::await_port;

/// `domu-soak`: exits with failure if a case failed.
pub(crate) fn soak(args: &[String]) -> ExitCode {
    let mut counts = [200_000u64, 10_000];
    let mut rest = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let slot = match arg.as_str() {
            "--trips" => &mut counts[0],
            "--cycles" => &mut counts[1],
            _ => {
                rest.push(arg.clone());
                continue;
            }
        };
        match args.next().and_then(|v| v.parse().ok()) {
            Some(value) => *slot = value,
            None => {
                eprintln!("xen-dom0-tests domu-soak: {arg} needs a number");
                return ExitCode::from(2);
            }
        }
    }
    let spec = match Spec::parse_for("domu-soak", &rest) {
        Ok(spec) => spec,
        Err(usage) => return usage,
    };
    let mut steps = Steps {
        reporter: Reporter::new(Stdout),
        failed: None,
    };
    let domain = steps.step("xl_create", |_| Domain::create(&spec));
    let forwarder = domain.as_ref().map(|d| ConsoleForwarder::start(&d.name));
    match &domain {
        Some(domain) => run(&mut steps, domain, counts),
        None => {
            for case in &exchange::SOAK_DOM0_CASES[1..] {
                steps.step(case, |_| Ok(()));
            }
        }
    }
    if let Some(forwarder) = forwarder {
        forwarder.finish();
    }
    ExitCode::from(steps.reporter.done().exit_code())
}

/// Xen's state of `port` of `domain`.
fn state(privcmd: &Privcmd, domain: DomId, port: Port) -> Result<ChannelState, String> {
    privcmd
        .evtchn_status(domain, port)
        .map(|status| status.state)
        .map_err(|e| format!("EVTCHNOP_status of {port} of {domain:?}: {e}"))
}

/// Binds the domU's `remote` port and drains the event Xen leaves pending at bind.
fn bind(dev: &EvtchnDevice, domu: DomId, remote: Port, reads: &mut u64) -> Result<Port, String> {
    let local = call("bind_interdomain", dev.bind_interdomain_raw(domu, remote))?;
    await_port(dev, local, reads).map_err(|e| format!("the event pending at bind: {e}"))?;
    Ok(local)
}

/// Closes `local`; Xen must show it closed and the domU's `remote` unbound to dom0.
fn close(
    dev: &EvtchnDevice,
    privcmd: &Privcmd,
    local: Port,
    domu: DomId,
    remote: Port,
) -> Result<(), String> {
    call("unbind", dev.unbind_raw(local))?;
    match state(privcmd, DomId::SELF, local)? {
        ChannelState::Closed => {}
        other => return Err(format!("our {local} is {other:?} after close")),
    }
    match state(privcmd, domu, remote)? {
        ChannelState::Unbound { remote_dom } if remote_dom == DomId::new(0) => Ok(()),
        other => Err(format!("the domU's {remote} is {other:?} after our close")),
    }
}

/// One round trip on `local`: notify, await the answer.
fn round_trip(dev: &EvtchnDevice, local: Port, reads: &mut u64) -> Result<(), String> {
    call("notify", dev.notify(local))?;
    await_port(dev, local, reads)
}

fn run(steps: &mut Steps, domain: &Domain, [trips, cycles]: [u64; 2]) {
    let domu = DomId::new(domain.domid as u16);
    let setup = steps.step("domu_ready", |_| {
        domain.write(exchange::SOAK, &format!("{trips} {cycles}"))?;
        domain.unpause()?;
        domain.wait_for_key(exchange::READY, "1", READY_TIMEOUT)?;
        let remote = Port::new(domain.read_number(exchange::EVTCHN_PORT)?);
        let dev = call("open", EvtchnDevice::open())?;
        let privcmd = Privcmd::open().map_err(|e| format!("privcmd: {e}"))?;
        Ok((dev, privcmd, remote))
    });
    let Some((dev, privcmd, remote)) = setup else {
        for case in &exchange::SOAK_DOM0_CASES[2..] {
            steps.step(case, |_| Ok(()));
        }
        return;
    };
    steps.step("evtchn_soak_round_trips", |out| {
        let mut reads = 0;
        let local = bind(&dev, domu, remote, &mut reads)?;
        let start = Instant::now();
        for trip in 0..trips {
            round_trip(&dev, local, &mut reads).map_err(|e| format!("round trip {trip}: {e}"))?;
        }
        let seconds = start.elapsed().as_secs_f64();
        close(&dev, &privcmd, local, domu, remote)?;
        out.out(format_args!(
            "evtchn-soak-domu round_trips={trips} lost_wakeups=0 seconds={seconds:.1} reads={reads}"
        ));
        Ok(())
    });
    steps.step("evtchn_soak_rebinds", |out| {
        let mut reads = 0;
        let mut highest = 0;
        let start = Instant::now();
        for cycle in 0..cycles {
            let local = bind(&dev, domu, remote, &mut reads)
                .and_then(|local| close(&dev, &privcmd, local, domu, remote).map(|()| local))
                .map_err(|e| format!("cycle {cycle}: {e}"))?;
            highest = highest.max(local.raw());
        }
        let mut queued = [Port::new(0); 16];
        let queued = call("take_pending", dev.take_pending(&mut queued))?;
        let (bound, overflows) = (dev.bound_ports().len(), dev.overflows());
        out.out(format_args!(
            "evtchn-soak-domu bind_unbind_cycles={cycles} leaked_ports={bound} queued={queued} \
             overflows={overflows} highest_port={highest} seconds={:.1}",
            start.elapsed().as_secs_f64()
        ));
        if bound > 0 || queued > 0 || overflows > 0 || highest > 256 {
            return Err(format!(
                "{bound} ports still bound, {queued} queued, {overflows} overflows, highest port {highest}"
            ));
        }
        Ok(())
    });
    steps.step("evtchn_soak_after_rebinds", |_| {
        let mut reads = 0;
        let local = bind(&dev, domu, remote, &mut reads)?;
        round_trip(&dev, local, &mut reads)?;
        // The domU closes its port after answering: ours is then unbound.
        call("unbind", dev.unbind_raw(local))
    });
    powered_off(steps, domain);
}
