//! `cargo xtask setup`: installs what the other commands need on Debian bookworm, and the one
//! step `cargo xtask demo` and `cargo xtask test` run first.
//!
//! What is already there is detected and left alone, so the step costs a few `dpkg-query`/`rustup`
//! calls when nothing is missing. Installing needs root: otherwise the step prints the commands
//! to run and fails.

use std::process::Command;

use crate::run_command;

/// How much a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Need {
    /// `cargo xtask demo` and the testbed: QEMU, the aarch64 linker, the freestanding targets.
    Demo,
    /// `cargo xtask test`: also the C headers and libclang (generator, layout and benchmark
    /// checks), clippy, rustfmt and Miri.
    Test,
}

/// Debian packages, with the command that needs them.
const PACKAGES: &[(&str, Need)] = &[
    ("qemu-system-x86", Need::Demo),
    ("qemu-system-arm", Need::Demo),
    // Debian 13's x86 kernels are zstd-compressed (Xen 4.20 scenarios).
    ("zstd", Need::Test),
    ("gcc-aarch64-linux-gnu", Need::Demo),
    ("libxen-dev", Need::Test),
    ("libclang-dev", Need::Test),
    ("clang", Need::Test),
];

/// Rust targets: the freestanding guests and the aarch64 dom0 programs.
const TARGETS: &[&str] = &[
    "x86_64-unknown-none",
    "aarch64-unknown-none",
    "aarch64-unknown-linux-gnu",
];

/// Stable components (`llvm-tools` gives `llvm-objcopy` for the aarch64 images).
const COMPONENTS: &[(&str, Need)] = &[
    ("llvm-tools", Need::Demo),
    ("rustfmt", Need::Test),
    ("clippy", Need::Test),
];

/// Nightly components, for Miri.
const NIGHTLY_COMPONENTS: &[&str] = &["miri", "rust-src"];

/// Cargo subcommands the suite runs, from crates.io at a pinned version: `cargo-hack` checks
/// the feature combinations.
const CARGO_TOOLS: &[(&str, &str)] = &[("cargo-hack", "0.6.39")];

pub(crate) fn run(args: &[String]) -> crate::Result {
    match args {
        [] => ensure(Need::Test),
        [flag] if flag == "--demo" => ensure(Need::Demo),
        _ => Err("usage: cargo xtask setup [--demo]".into()),
    }
}

/// Installs what `need` requires (as root), or fails with the commands to run.
pub(crate) fn ensure(need: Need) -> crate::Result {
    let mut todo = Vec::new();
    apt_steps(need, &mut todo)?;
    rust_steps(need, &mut todo)?;
    if todo.is_empty() {
        return Ok(());
    }
    if !is_root() && todo.iter().any(|step| step.root) {
        let lines: Vec<String> = todo.iter().map(Step::shell_line).collect();
        return Err(format!(
            "setup: missing prerequisites; run as root, or run:\n  {}",
            lines.join("\n  ")
        ));
    }
    for step in todo {
        eprintln!("setup: {}", step.shell_line());
        run_command(&mut step.command())?;
    }
    Ok(())
}

/// One command of the setup.
struct Step {
    program: &'static str,
    args: Vec<String>,
    /// Whether it needs root (apt, dpkg).
    root: bool,
}

impl Step {
    fn new(program: &'static str, args: &[&str], root: bool) -> Self {
        Self {
            program,
            args: args.iter().map(|a| a.to_string()).collect(),
            root,
        }
    }

    fn shell_line(&self) -> String {
        let sudo = if self.root && !is_root() { "sudo " } else { "" };
        format!("{sudo}{} {}", self.program, self.args.join(" "))
    }

    fn command(&self) -> Command {
        let mut command = Command::new(self.program);
        command.args(&self.args);
        if self.program == "apt-get" {
            command.env("DEBIAN_FRONTEND", "noninteractive");
        }
        command
    }
}

fn apt_steps(need: Need, todo: &mut Vec<Step>) -> crate::Result {
    // The testbed downloads arm64 packages (Xen, kernel, toolstack) for the aarch64 scenarios.
    let foreign = output(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    let add_arm64 = !foreign.lines().any(|arch| arch.trim() == "arm64");
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, needed_by)| *needed_by <= need)
        .map(|(package, _)| *package)
        .filter(|package| !installed(package))
        .collect();
    if add_arm64 {
        todo.push(Step::new("dpkg", &["--add-architecture", "arm64"], true));
    }
    if add_arm64 || !missing.is_empty() {
        todo.push(Step::new("apt-get", &["update", "-q"], true));
    }
    if !missing.is_empty() {
        let mut args = vec!["install", "-y", "-q", "--allow-downgrades"];
        args.extend(&missing);
        // A newer qemu-utils (from backports) conflicts with bookworm's QEMU 7.2: install the
        // qemu-utils of the same version with it.
        let qemu_utils;
        if missing.iter().any(|p| p.starts_with("qemu-system")) {
            qemu_utils = format!("qemu-utils={}", candidate("qemu-system-x86")?);
            args.push(&qemu_utils);
        }
        todo.push(Step::new("apt-get", &args, true));
    }
    Ok(())
}

fn rust_steps(need: Need, todo: &mut Vec<Step>) -> crate::Result {
    let host = host()?;
    let targets = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    let missing_targets: Vec<&str> = TARGETS
        .iter()
        .copied()
        .filter(|t| !targets.lines().any(|line| line.trim() == *t))
        .collect();
    if !missing_targets.is_empty() {
        let mut args = vec!["target", "add"];
        args.extend(&missing_targets);
        todo.push(Step::new("rustup", &args, false));
    }
    let components = output(Command::new("rustup").args(["component", "list", "--installed"]))?;
    let missing_components: Vec<&str> = COMPONENTS
        .iter()
        .filter(|(_, needed_by)| *needed_by <= need)
        .map(|(c, _)| *c)
        .filter(|c| !has_component(&components, c, &host))
        .collect();
    if !missing_components.is_empty() {
        let mut args = vec!["component", "add"];
        args.extend(&missing_components);
        todo.push(Step::new("rustup", &args, false));
    }
    if need == Need::Test {
        for (tool, version) in CARGO_TOOLS {
            if !has_cargo_tool(tool, version) {
                todo.push(Step::new(
                    "cargo",
                    &["install", tool, "--version", version, "--locked"],
                    false,
                ));
            }
        }
        let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
        if !toolchains.lines().any(|line| line.starts_with("nightly")) {
            todo.push(Step::new(
                "rustup",
                &["toolchain", "install", "nightly", "--profile", "minimal"],
                false,
            ));
            todo.push(nightly_components(NIGHTLY_COMPONENTS));
        } else {
            let nightly = output(Command::new("rustup").args([
                "+nightly",
                "component",
                "list",
                "--installed",
            ]))?;
            let missing: Vec<&str> = NIGHTLY_COMPONENTS
                .iter()
                .copied()
                .filter(|c| !has_component(&nightly, c, &host))
                .collect();
            if !missing.is_empty() {
                todo.push(nightly_components(&missing));
            }
        }
    }
    Ok(())
}

/// Whether `cargo-<name>` is installed at `version` (`cargo <name> --version` prints
/// `cargo-<name> <version>`).
fn has_cargo_tool(tool: &str, version: &str) -> bool {
    let subcommand = tool.strip_prefix("cargo-").unwrap_or(tool);
    Command::new("cargo")
        .args([subcommand, "--version"])
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .any(|word| word == version)
        })
}

fn nightly_components(components: &[&str]) -> Step {
    let mut args = vec!["+nightly", "component", "add"];
    args.extend(components);
    Step::new("rustup", &args, false)
}

/// Whether `rustup component list --installed` output names `component`, as `miri-<host>` or,
/// for host-independent components, `rust-src`.
fn has_component(list: &str, component: &str, host: &str) -> bool {
    let with_host = format!("{component}-{host}");
    list.lines()
        .map(str::trim)
        .any(|line| line == component || line == with_host)
}

/// The host triple rustc builds for.
fn host() -> crate::Result<String> {
    let version = output(Command::new("rustc").arg("-vV"))?;
    version
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_string)
        .ok_or_else(|| "`rustc -vV` printed no host".to_string())
}

/// Whether Debian package `package` is installed.
fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", package])
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout == b"installed")
}

/// The version apt would install of `package`.
fn candidate(package: &str) -> crate::Result<String> {
    let policy = output(Command::new("apt-cache").args(["policy", package]))?;
    policy
        .lines()
        .find_map(|line| line.trim().strip_prefix("Candidate:"))
        .map(|v| v.trim().to_string())
        .filter(|v| v != "(none)")
        .ok_or_else(|| format!("apt has no candidate for {package}: run `apt-get update`"))
}

fn output(command: &mut Command) -> crate::Result<String> {
    let out = command
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", command.get_program()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether this process runs as root (`/proc/self` belongs to the process's user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[cfg(test)]
mod tests {
    use super::has_component;

    #[test]
    fn component_names_match_with_and_without_host_suffix() {
        let host = "x86_64-unknown-linux-gnu";
        let list = "cargo-x86_64-unknown-linux-gnu\nmiri-x86_64-unknown-linux-gnu\nrust-src\n\
                    llvm-tools-x86_64-unknown-linux-gnu\n";
        assert!(has_component(list, "miri", host));
        assert!(has_component(list, "rust-src", host));
        assert!(has_component(list, "llvm-tools", host));
        assert!(!has_component(list, "clippy", host));
        // `rust` must not match `rust-src`.
        assert!(!has_component(list, "rust", host));
    }
}
