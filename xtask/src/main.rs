//! Project commands, run as `cargo xtask <command>`.

mod bench;
mod bench_blk;
mod bench_blkback;
mod bench_console;
mod bench_ctrl;
mod bench_evtchn;
mod bench_grant;
mod bench_privcmd;
mod bench_store;
mod bench_vchan;
mod gen_sys;
mod setup;
mod test;
mod testbed;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test                    the full test suite (what CI runs)
  setup [--demo]          install what the commands need (apt as root, rustup); test and demo run it first
  gen-sys [--check]       regenerate xen-sys from Xen's public headers (--check: fail on any difference)
  testbed [-v] [--list] [--release XEN] [SCENARIO[@XEN]...]
                          boot real Xen under QEMU and run the test payloads
  testbed [-v] run [--release XEN] --dom0 <static binary> [-- ARGS] | --domu <kernel> [--type pv|pvh]
                          run your own program in dom0, or your own kernel as a domU, on real Xen
  demo [-v]               boot Xen: a Linux dom0 with the toolstack creates a Rust domU; they talk
  bench privcmd           benchmark the privcmd backend against libxencall, inside the testbed
  bench grant             benchmark xen-grant against libxengnttab, inside the testbed
  bench evtchn            benchmark xen-evtchn against libxenevtchn, and soak it, inside the testbed
  bench store             benchmark the xenstore client against libxenstore, inside the testbed
  bench blk               benchmark Linux's blkfront against dom0's direct reads of a blkback disk, inside the testbed
  bench console           benchmark Xen's log reader against xl dmesg and a domU's console ring, inside the testbed
";

/// What an xtask command returns: `Err` carries a message for the user.
pub(crate) type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "test" => setup::ensure(setup::Need::Test).and_then(|()| test::run(rest)),
        "setup" => setup::run(rest),
        "gen-sys" => gen_sys::run(rest),
        "testbed" => testbed::run(rest),
        "demo" => setup::ensure(setup::Need::Demo).and_then(|()| testbed::demo(rest)),
        "bench" => bench::run(rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Runs `command` from the workspace root, echoing it, and fails if it fails.
pub(crate) fn run_command(command: &mut Command) -> Result {
    eprintln!("+ {command:?}");
    let status = command
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed ({status})"))
    }
}

/// `cargo`, as the one that runs this xtask.
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}
