//! The scenario proving `cargo xtask testbed run --dom0`: a tiny program, written as its own cargo
//! project outside the workspace (under `<target>/testbed/work`), built static and run in dom0
//! the way a user runs theirs; its streamed output and exit status are checked.

use std::path::PathBuf;
use std::process::Command;

use crate::verdict::{CaseResult, Verdict};
use crate::{Arch, Error, Outcome, Result, Testbed, check_rust_target};

/// The program's package and binary.
const NAME: &str = "hello-xen";
/// The exit status it is asked for (and must hand back).
const STATUS: i32 = 7;
/// What it prints first.
const GREETING: &str = "hello from a program built outside the workspace";

const MANIFEST: &str = "[package]\n\
name = \"hello-xen\"\n\
version = \"0.1.0\"\n\
edition = \"2021\"\n\
\n\
# Its own workspace: not a member of the one it sits in.\n\
[workspace]\n";

const MAIN: &str = r#"//! Says hello with the Xen version from sysfs and exits with the status given.
fn main() {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/sys/hypervisor/version/{file}"))
            .map(|text| text.trim().to_string())
            .unwrap_or_else(|e| format!("?({e})"))
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!(
        "hello from a program built outside the workspace: Xen {}.{}{}, args {:?}",
        read("major"),
        read("minor"),
        read("extra"),
        args
    );
    let status = args.first().and_then(|a| a.parse().ok()).unwrap_or(0);
    std::process::exit(status);
}
"#;

/// Writes and builds the program (static, x86_64); returns the binary.
pub(crate) fn build(testbed: &Testbed) -> Result<PathBuf> {
    let arch = Arch::X86_64;
    let target = arch.linux_target();
    check_rust_target(target)?;
    let dir = testbed.work_dir().join(NAME);
    let src = dir.join("src");
    std::fs::create_dir_all(&src).map_err(|e| Error::io(&src, e))?;
    for (path, text) in [
        (dir.join("Cargo.toml"), MANIFEST),
        (src.join("main.rs"), MAIN),
    ] {
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .current_dir(&dir)
        .env_remove("CARGO_TARGET_DIR")
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args(["build", "--release", "--target", target]);
    testbed.run_cargo(cargo)?;
    Ok(dir.join("target").join(target).join("release").join(NAME))
}

/// Runs the built program as `cargo xtask testbed run --dom0 <binary> -- 7` does, and judges it.
pub(crate) fn run(testbed: &Testbed, binary: &std::path::Path) -> Result<Outcome> {
    let mut printed = Vec::new();
    let (mut outcome, status) =
        testbed.run_dom0_program(binary, &[STATUS.to_string()], &mut |line| {
            printed.push(line.to_string());
        })?;
    let greeting = printed.iter().find(|line| line.starts_with(GREETING));
    let checks = [
        (
            "output_streamed",
            match greeting {
                Some(line) if line.contains("Xen 4.") && line.ends_with("args [\"7\"]") => Ok(()),
                Some(line) => Err(format!("unexpected line {line:?}")),
                None => Err(format!("no line starting {GREETING:?} in {printed:?}")),
            },
        ),
        (
            "exit_status_returned",
            match status {
                Some(STATUS) => Ok(()),
                other => Err(format!("exit status {other:?}, expected {STATUS}")),
            },
        ),
    ];
    // QEMU exits with failure after a program's non-zero status: expected here, so the verdict
    // is these checks plus the run's other problems.
    let problems = outcome
        .verdict
        .problems
        .iter()
        .filter(|p| !p.starts_with("payload exited with failure"))
        .cloned()
        .collect();
    outcome.verdict = Verdict {
        cases: checks
            .into_iter()
            .map(|(name, result)| {
                let result = match result {
                    Ok(()) => CaseResult::Passed,
                    Err(message) => CaseResult::Failed(message),
                };
                (name.to_string(), result)
            })
            .collect(),
        problems,
        banner: outcome.verdict.banner.clone(),
    };
    Ok(outcome)
}
