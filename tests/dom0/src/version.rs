//! `xen_version` through the privcmd backend and the typed wrappers of `xen-hypercall`.

use std::process::ExitCode;

use xen_hypercall::Error;
use xen_hypercall::event_channel::ChannelState;
use xen_hypercall::prelude::*;
use xen_hypercall_privcmd::Privcmd;
use xen_testbed_protocol::{Reporter, Stdout};

use crate::Case;

/// The capability string of this architecture's 64-bit guests (`XENVER_capabilities`).
const NATIVE_CAPABILITY: &str = if cfg!(target_arch = "x86_64") {
    "xen-3.0-x86_64"
} else {
    "xen-3.0-aarch64"
};

pub(crate) const CASES: &[Case] = &[("xen_version", xen_version), ("capabilities", capabilities)];

/// Where the testbed's `/init` puts the Xen release it boots (`major.minor`, e.g. `4.20`).
const EXPECTED_VERSION_VARIABLE: &str = "XENTEST_XEN_VERSION";

/// Xen is the release the testbed boots.
fn xen_version(privcmd: &Privcmd) -> Result<(), String> {
    let expected = std::env::var(EXPECTED_VERSION_VARIABLE)
        .map_err(|e| format!("{EXPECTED_VERSION_VARIABLE}: {e} (which Xen is expected?)"))?;
    let version = privcmd
        .xen_version()
        .map_err(|e| format!("xen_version: {e}"))?;
    if format!("{}.{}", version.major, version.minor) == expected {
        Ok(())
    } else {
        Err(format!("Xen {version}, expected {expected}"))
    }
}

/// Xen runs 64-bit guests of this architecture.
fn capabilities(privcmd: &Privcmd) -> Result<(), String> {
    let capabilities = privcmd
        .capabilities()
        .map_err(|e| format!("capabilities: {e}"))?;
    let text = capabilities.to_string();
    if text.split_whitespace().any(|abi| abi == NATIVE_CAPABILITY) {
        Ok(())
    } else {
        Err(format!("{text:?} lacks {NATIVE_CAPABILITY}"))
    }
}

/// `xen-dom0-tests demo`: what the project's crates see of this Xen.
pub(crate) fn demo(mut reporter: Reporter<Stdout>) -> ExitCode {
    let privcmd = match Privcmd::open() {
        Ok(privcmd) => privcmd,
        Err(error) => {
            reporter.case("open_privcmd", Err(error));
            return ExitCode::from(reporter.done().exit_code());
        }
    };
    let version = privcmd.xen_version();
    let extra = privcmd.extraversion();
    match (&version, &extra) {
        (Ok(version), Ok(extra)) => reporter.out(format_args!("Xen version {version}{extra}")),
        _ => reporter.out(format_args!("Xen version: {version:?} {extra:?}")),
    }
    reporter.case("xen_version", version.map(drop));
    let capabilities = privcmd.capabilities();
    if let Ok(capabilities) = &capabilities {
        reporter.out(format_args!("capabilities: {capabilities}"));
    }
    reporter.case("capabilities", capabilities.map(drop));
    let message =
        "Hello from Rust in dom0: xen-hypercall-privcmd wrote this line with CONSOLEIO_write\n";
    reporter.case("console_write", privcmd.console_write(message.as_bytes()));
    let round_trip = event_channel_round_trip(&privcmd);
    if let Ok(line) = &round_trip {
        reporter.out(format_args!("{line}"));
    }
    reporter.case("event_channel", round_trip.map(drop));
    ExitCode::from(reporter.done().exit_code())
}

/// Connects two ports of dom0 to each other, notifies one, and reads back how Xen
/// sees the pair; closes both whatever happens.
fn event_channel_round_trip(privcmd: &Privcmd) -> Result<String, Error> {
    let offered = privcmd.evtchn_alloc_unbound(DomId::SELF, DomId::SELF)?;
    let connected = privcmd.evtchn_bind_interdomain(DomId::SELF, offered);
    let result = connected.and_then(|port| {
        privcmd.evtchn_send(port)?;
        let status = privcmd.evtchn_status(DomId::SELF, port)?;
        let peer = match status.state {
            ChannelState::Interdomain { dom, port } => {
                format!("domain {} port {}", dom.raw(), port.raw())
            }
            other => format!("{other:?}"),
        };
        Ok(format!(
            "event channel: port {} bound to port {}, notified; Xen reports it connected to {peer}",
            port.raw(),
            offered.raw()
        ))
    });
    // Close both ports even if one close fails; report the first failure.
    let closed_port = connected.map_or(Ok(()), |port| privcmd.evtchn_close(port));
    let closed_offered = privcmd.evtchn_close(offered);
    let line = result?;
    closed_port.and(closed_offered)?;
    Ok(line)
}
