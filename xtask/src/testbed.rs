//! `cargo xtask testbed` and `cargo xtask demo`: thin wrappers over the `xen-testbed` runner.

use std::path::PathBuf;
use std::time::Duration;

use xen_testbed::qemu::Exit;
use xen_testbed::release::{self, RELEASES};
use xen_testbed::scenario::{Options, runs, select};
use xen_testbed::user::DOM0_PROGRAM_TIMEOUT;
use xen_testbed::{Testbed, linux_domu, run_scenarios};

const USAGE: &str = "\
usage: cargo xtask testbed [-v] [--list] [--self-test] [--release XEN] [SCENARIO[@XEN]...]
       cargo xtask testbed [-v] run [--release XEN] --dom0 <static binary> [--timeout SECONDS] [-- ARGS...]
       cargo xtask testbed run [--release XEN] --domu <kernel> [--type pv|pvh] [--memory MIB] [--timeout SECONDS]
       cargo xtask testbed run [--release XEN] --domu-linux <static binary> [--type pv|pvh] [--timeout SECONDS] [-- ARGS...]

Boots Debian's Xen under QEMU for each scenario (all by default) and runs its payload. Each
scenario runs on one or more releases (Xen 4.17 with Linux 6.1 from Debian 12; Xen 4.20 with
Linux 6.12 from Debian 13); a run is named `<scenario>@<xen>`, e.g. `pv64@4.20`. A bare
scenario name selects it on each of its releases.
  -v             show the build commands and cargo's output
  --list         list the runs
  --self-test    only the harness self-tests (broken payloads that must be reported as failing)
  --release XEN  only the runs on this release (4.17 or 4.20)

`run` boots a Linux dom0 with Debian's toolstack up (xenstored, xenconsoled, xl) for the
architecture of the binary or kernel, on Xen 4.17 unless `--release` says otherwise, and
streams its output:
  --dom0  runs the static Linux program in dom0; exits with its exit status, or 124 if it is
          still running at the timeout (default 180 s, plus 120 s for booting; QEMU is stopped)
  --domu  creates the kernel as a domU with xl (an x86_64 ELF: PV by default, or PVH; an arm64
          Image) and streams its console until it is gone; exits 0 after a poweroff, 1 after a
          crash, 2 after another shutdown reason, 3 if it never ran, 124 after the timeout
          (default 60 s; the domU is destroyed)
  --domu-linux  runs the static x86_64 Linux program in a Linux domU (the release's Debian
          kernel, PV by default or PVH, 96 MiB, a busybox initramfs with the Xen modules loaded,
          /dev/xen/{xenbus,evtchn,gntdev,gntalloc,privcmd} and xenfs at /proc/xen) and streams
          its output from the domU's console; exits with its exit status (the domU's init runs
          8-14 s after xl create; default timeout 120 s)
Each run has its own log (printed at the end) and initramfs, so runs from one checkout can
run at the same time.";

pub(crate) fn run(args: &[String]) -> crate::Result {
    let (verbose, args) = match args {
        [flag, rest @ ..] if flag == "-v" || flag == "--verbose" => (true, rest),
        _ => (false, args),
    };
    if args.first().map(String::as_str) == Some("run") {
        let (release, args) = match &args[1..] {
            [flag, xen, rest @ ..] if flag == "--release" => {
                (release::by_xen(xen).map_err(|e| e.to_string())?, rest)
            }
            rest => (RELEASES[0], rest),
        };
        return run_user_code(&testbed().verbose(verbose).with_release(release), args);
    }
    let mut options = Options::default();
    let mut list = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--list" => list = true,
            "--release" => {
                let xen = args
                    .next()
                    .ok_or_else(|| format!("--release needs a value\n{USAGE}"))?;
                options.release = Some(release::by_xen(xen).map_err(|e| e.to_string())?);
            }
            "--self-test" => options.self_test = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            flag if flag.starts_with('-') => {
                return Err(format!("unknown option `{flag}`\n{USAGE}"));
            }
            name => options.names.push(name.to_string()),
        }
    }
    if list {
        for run in runs() {
            if options.release.is_none_or(|r| r == run.release) {
                println!("{:28} {}", run.name(), run.scenario.about);
            }
        }
        return Ok(());
    }
    let selected = select(&options).map_err(|e| e.to_string())?;
    let summary =
        run_scenarios(&testbed().verbose(verbose), &selected).map_err(|e| e.to_string())?;
    if summary.failed == 0 {
        Ok(())
    } else {
        Err(format!("testbed: {} failed", summary.failed))
    }
}

/// `cargo xtask testbed run ...`: exits the process with the code's status.
fn run_user_code(testbed: &Testbed, args: &[String]) -> crate::Result {
    let mut print = |line: &str| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    let code = match args {
        [flag, binary, rest @ ..] if flag == "--dom0" => {
            let (timeout, rest) = match rest {
                [option, value, rest @ ..] if option == "--timeout" => (
                    Duration::from_secs(value.parse().map_err(|e| format!("--timeout: {e}"))?),
                    rest,
                ),
                rest => (DOM0_PROGRAM_TIMEOUT, rest),
            };
            let program_args = match rest {
                [] => &[][..],
                [dashes, program_args @ ..] if dashes == "--" => program_args,
                _ => return Err(format!("arguments for the program go after `--`\n{USAGE}")),
            };
            let (outcome, status) = testbed
                .run_dom0_program(&PathBuf::from(binary), program_args, timeout, &mut print)
                .map_err(|e| e.to_string())?;
            let wall = outcome.run.wall.as_secs_f64();
            let log = outcome.log_path.display();
            match (status, outcome.run.exit) {
                (Some(status), _) => {
                    eprintln!("testbed: exit status {status} (QEMU {wall:.1} s; log {log})");
                    status
                }
                (None, Exit::TimedOut(after)) => {
                    eprintln!(
                        "testbed: still running after {} s, QEMU stopped (log {log})",
                        after.as_secs()
                    );
                    124
                }
                (None, _) => {
                    return Err(format!(
                        "the program never finished: {:?} (log: {log})",
                        outcome.verdict.problems
                    ));
                }
            }
        }
        [flag, kernel, options @ ..] if flag == "--domu" => {
            let mut xl_type = "pv".to_string();
            let mut memory = 32;
            let mut timeout = 60;
            let mut options = options.iter();
            while let Some(option) = options.next() {
                let value = options
                    .next()
                    .ok_or_else(|| format!("{option} needs a value\n{USAGE}"))?;
                match option.as_str() {
                    "--type" if value == "pv" || value == "pvh" => xl_type = value.clone(),
                    "--memory" => memory = value.parse().map_err(|e| format!("--memory: {e}"))?,
                    "--timeout" => {
                        timeout = value.parse().map_err(|e| format!("--timeout: {e}"))?
                    }
                    _ => return Err(format!("bad option `{option} {value}`\n{USAGE}")),
                }
            }
            let (outcome, end) = testbed
                .run_domu_kernel(
                    &PathBuf::from(kernel),
                    &xl_type,
                    memory,
                    Duration::from_secs(timeout),
                    &mut print,
                )
                .map_err(|e| e.to_string())?;
            eprintln!(
                "testbed: domU {end:?} (QEMU {:.1} s; log {})",
                outcome.run.wall.as_secs_f64(),
                outcome.log_path.display()
            );
            i32::from(end.status())
        }
        [flag, binary, rest @ ..] if flag == "--domu-linux" => {
            let (options, program_args) = match rest.iter().position(|a| a == "--") {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &[][..]),
            };
            let mut mode = linux_domu::Mode::Pv;
            let mut timeout = 120;
            let mut options = options.iter();
            while let Some(option) = options.next() {
                let value = options
                    .next()
                    .ok_or_else(|| format!("{option} needs a value\n{USAGE}"))?;
                match (option.as_str(), value.as_str()) {
                    ("--type", "pv") => mode = linux_domu::Mode::Pv,
                    ("--type", "pvh") => mode = linux_domu::Mode::Pvh,
                    ("--timeout", _) => {
                        timeout = value.parse().map_err(|e| format!("--timeout: {e}"))?
                    }
                    _ => return Err(format!("bad option `{option} {value}`\n{USAGE}")),
                }
            }
            let (outcome, end, status) = testbed
                .run_domu_linux_program(
                    &PathBuf::from(binary),
                    program_args,
                    mode,
                    std::time::Duration::from_secs(timeout),
                    &mut print,
                )
                .map_err(|e| e.to_string())?;
            eprintln!(
                "testbed: Linux domU {end:?} (QEMU {:.1} s; log {})",
                outcome.run.wall.as_secs_f64(),
                outcome.log_path.display()
            );
            match status {
                Some(status) => status,
                None => return Err(format!("the program never finished (the domU: {end:?})")),
            }
        }
        _ => return Err(USAGE.into()),
    };
    std::process::exit(code)
}

pub(crate) fn demo(args: &[String]) -> crate::Result {
    let verbose = match args {
        [] => false,
        [flag] if flag == "-v" || flag == "--verbose" => true,
        _ => return Err("usage: cargo xtask demo [-v]".into()),
    };
    if xen_testbed::demo::demo(&testbed().verbose(verbose)).map_err(|e| e.to_string())? {
        Ok(())
    } else {
        Err("demo: a run failed (see above)".into())
    }
}

/// The testbed over this workspace and cargo's target directory.
pub(crate) fn testbed() -> Testbed {
    let root = crate::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        })
        .unwrap_or_else(|| root.join("target"));
    Testbed::new(root, target)
}
