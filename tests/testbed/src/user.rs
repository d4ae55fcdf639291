//! Users' own code on real Xen (`cargo xtask testbed run`): a static Linux program run in dom0, or a
//! kernel created as a domU, with Debian's toolstack up; the output is streamed while it runs.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use xen_testbed_protocol::exchange::{self, split_forwarded};
use xen_testbed_protocol::{Event, clean_line};

use crate::initramfs::{Preamble, shell_quote};
use crate::scenario::DOM0_TESTS;
use crate::{Arch, Dom0Run, Error, Outcome, Result, Testbed, elf, linux_domu};

/// What dom0 prints after the user's program: `XENTEST OUT exit-status <status>`.
const EXIT_STATUS: &str = "exit-status";
/// The domU's name in xl.
pub const USER_DOMU: &str = "user-domu";
/// QEMU's limit for a user run is the user's limit plus this, for booting Xen, dom0 and the
/// toolstack.
const BOOT_ALLOWANCE: Duration = Duration::from_secs(120);
/// The shortest QEMU limit of a user's domU run.
const QEMU_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a user's dom0 program may run unless told (`--timeout`).
pub const DOM0_PROGRAM_TIMEOUT: Duration = Duration::from_secs(180);

/// A name for one user run (its log and initramfs) that no other run uses at the same time,
/// from this process or another one started from the same checkout.
fn unique_run_name(kind: &str, arch: Arch) -> String {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    format!("{kind}-{arch}-{}-{run}", std::process::id())
}

/// How a user's domU ended, as `cargo xtask testbed run --domu` reports it in its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomuEnd {
    /// `SHUTDOWN_poweroff`: status 0.
    Poweroff,
    /// `SHUTDOWN_crash` (or a panic): status 1.
    Crash,
    /// Another `SHUTDOWN_*` reason (reboot, suspend, ...): status 2.
    OtherShutdown,
    /// `xl create` failed, or dom0 never said: status 3.
    NotRun,
    /// Still running at the timeout, destroyed: status 124 (as `timeout(1)`).
    Timeout,
}

impl DomuEnd {
    /// The exit status.
    pub fn status(self) -> u8 {
        match self {
            DomuEnd::Poweroff => 0,
            DomuEnd::Crash => 1,
            DomuEnd::OtherShutdown => 2,
            DomuEnd::NotRun => 3,
            DomuEnd::Timeout => 124,
        }
    }

    fn from_report(how: &str) -> Self {
        match how {
            "poweroff" => DomuEnd::Poweroff,
            "crash" => DomuEnd::Crash,
            "timeout" => DomuEnd::Timeout,
            "create-failed" => DomuEnd::NotRun,
            _ => DomuEnd::OtherShutdown,
        }
    }
}

/// Whether a serial line is the hypervisor's or the kernel's rather than the user's.
fn is_system_line(line: &str) -> bool {
    let trimmed = line.trim_start();
    trimmed.starts_with("(XEN)")
        || (trimmed.starts_with('[')
            && trimmed[1..]
                .split(']')
                .next()
                .is_some_and(|t| t.trim().parse::<f64>().is_ok()))
}

impl Testbed {
    /// Boots the Linux dom0 of `binary`'s architecture (read from its ELF header) with the
    /// toolstack up and runs `binary args...` in it, handing each line it prints to `print` while it
    /// runs. QEMU is stopped `timeout` plus two minutes (for the boot) after it started.
    /// Returns the outcome and the program's exit status (`None`: it never finished).
    pub fn run_dom0_program(
        &self,
        binary: &Path,
        args: &[String],
        timeout: Duration,
        print: &mut dyn FnMut(&str),
    ) -> Result<(Outcome, Option<i32>)> {
        let (arch, name) = static_program(binary)?;
        let command = command_line(&name, args);
        let command = format!(
            "{command}; status=$?; echo \"XENTEST OUT {EXIT_STATUS} $status\"; exit $status"
        );
        let run = Dom0Run {
            name: unique_run_name("run", arch),
            arch,
            binaries: vec![(name, binary.to_path_buf())],
            files: Vec::new(),
            preamble: Preamble::Toolstack { fault: None },
            commands: vec![command],
            expected_cases: Vec::new(),
            expected_dones: 0,
            timeout: timeout + BOOT_ALLOWANCE,
            vcpus: 1,
            dom0_memory_mib: None,
            domus: Vec::new(),
        };
        let mut started = false;
        let outcome = self.boot_streaming(&run, &mut |line| {
            if line.starts_with("init: toolstack up") {
                started = true;
            } else if line.starts_with("init: done") || line.starts_with("init: exit status") {
                started = false;
            } else if started
                && !line.starts_with("init: ")
                && !line.contains(&format!("XENTEST OUT {EXIT_STATUS} "))
                && !is_system_line(line)
            {
                print(line);
            }
        })?;
        let status = outcome
            .log
            .outputs()
            .find_map(|text| text.strip_prefix(EXIT_STATUS)?.trim().parse::<i32>().ok());
        Ok((outcome, status))
    }

    /// Boots the Linux dom0 of `kernel`'s architecture (x86_64 ELF, or arm64 Image) with the
    /// toolstack up, creates `kernel` as a domU (`xl_type` `pv` or `pvh`; ignored on Arm) with
    /// `memory` MiB, and hands each line of its console to `print` until it is gone or
    /// `domu_timeout` passed.
    pub fn run_domu_kernel(
        &self,
        kernel: &Path,
        xl_type: &str,
        memory: u32,
        domu_timeout: Duration,
        print: &mut dyn FnMut(&str),
    ) -> Result<(Outcome, DomuEnd)> {
        let arch = kernel_arch(kernel)?;
        let path = format!("/lib/xentest/{USER_DOMU}");
        let run = Dom0Run {
            name: unique_run_name("run-domu", arch),
            arch,
            binaries: Vec::new(),
            files: vec![(path.clone(), kernel.to_path_buf())],
            preamble: Preamble::Toolstack { fault: None },
            commands: vec![format!(
                "{DOM0_TESTS} run-domu --name {USER_DOMU} --type {} --memory {memory} --kernel {path} --timeout {}",
                shell_quote(xl_type),
                domu_timeout.as_secs()
            )],
            expected_cases: Vec::new(),
            expected_dones: 0,
            timeout: QEMU_TIMEOUT.max(domu_timeout + BOOT_ALLOWANCE),
            vcpus: 1,
            dom0_memory_mib: None,
            domus: Vec::new(),
        };
        let outcome = self.boot_streaming(&run, &mut |line| {
            if let Some((USER_DOMU, console)) = split_forwarded(line) {
                print(console);
            }
        })?;
        let end = domu_end(&outcome);
        Ok((outcome, end))
    }

    /// Boots the x86_64 Linux dom0 with the toolstack up, creates a Linux domU (Debian's kernel
    /// of the release, [`linux_domu`], PV or PVH) whose `/init` runs the static program `binary
    /// args...`, and hands each line the program prints on the domU's console to `print` until
    /// the domU is gone or `domu_timeout` passed. Returns the outcome, how the domU ended and
    /// the program's exit status (`None`: it never finished).
    pub fn run_domu_linux_program(
        &self,
        binary: &Path,
        args: &[String],
        mode: linux_domu::Mode,
        domu_timeout: Duration,
        print: &mut dyn FnMut(&str),
    ) -> Result<(Outcome, DomuEnd, Option<i32>)> {
        let (arch, name) = static_program(binary)?;
        if arch != Arch::X86_64 {
            return Err(Error::new(format!(
                "{}: a Linux domU runs x86_64 programs",
                binary.display()
            )));
        }
        let artifacts = self.fetch(arch)?;
        let run_name = unique_run_name("run-linux-domu", arch);
        let domu_ramdisk = format!("{run_name}-domu");
        let domu = linux_domu::build_with_programs(
            &artifacts,
            &self.work_dir(),
            &domu_ramdisk,
            &[(name.clone(), binary.to_path_buf())],
            &format!(
                "{}; echo \"XENTEST OUT {EXIT_STATUS} $?\"",
                command_line(&name, args)
            ),
        )?;
        let run = Dom0Run {
            name: run_name,
            arch,
            binaries: Vec::new(),
            files: domu.files_in_dom0(USER_DOMU),
            preamble: Preamble::Toolstack { fault: None },
            commands: vec![format!(
                "{DOM0_TESTS} run-domu {} --timeout {}",
                linux_domu::domu_options(USER_DOMU, mode),
                domu_timeout.as_secs()
            )],
            expected_cases: Vec::new(),
            expected_dones: 0,
            timeout: QEMU_TIMEOUT.max(domu_timeout + BOOT_ALLOWANCE),
            vcpus: 1,
            dom0_memory_mib: Some(linux_domu::DOM0_MEMORY_MIB),
            domus: Vec::new(),
        };
        let outcome = self.boot_streaming(&run, &mut |line| {
            if let Some((USER_DOMU, console)) = split_forwarded(line)
                && !console.contains(&format!("XENTEST OUT {EXIT_STATUS} "))
                && !is_system_line(console)
            {
                print(console);
            }
        });
        let _ = std::fs::remove_file(self.initramfs_path(&domu_ramdisk));
        let outcome = outcome?;
        let end = domu_end(&outcome);
        let status = outcome
            .domus
            .iter()
            .find(|(n, _)| n == USER_DOMU)
            .and_then(|(_, log)| {
                log.outputs()
                    .find_map(|text| text.strip_prefix(EXIT_STATUS)?.trim().parse::<i32>().ok())
            });
        Ok((outcome, end, status))
    }

    /// Builds the exit helper, boots `run` and streams its cleaned serial lines to `on_line`;
    /// removes the run's initramfs afterwards (its name is used once).
    fn boot_streaming(&self, run: &Dom0Run, on_line: &mut dyn FnMut(&str)) -> Result<Outcome> {
        self.build_static(DOM0_TESTS, &[run.arch])?;
        let artifacts = self.fetch(run.arch)?;
        let job = self.dom0_job(&artifacts, run)?;
        let outcome = job.run_streaming(self, &mut |raw| on_line(&clean_line(raw)));
        let _ = std::fs::remove_file(self.initramfs_path(&run.name));
        outcome
    }
}

/// The architecture and file name of a user's static program, or why it cannot run.
fn static_program(binary: &Path) -> Result<(Arch, String)> {
    let bytes = std::fs::read(binary).map_err(|e| Error::io(binary, e))?;
    let arch = elf::arch(&bytes).ok_or_else(|| {
        Error::new(format!(
            "{}: not an x86_64 or aarch64 ELF64 executable",
            binary.display()
        ))
    })?;
    if let Some(interpreter) = elf::dynamic(&bytes).and_then(|d| d.interpreter) {
        return Err(Error::new(format!(
            "{} is dynamically linked (it asks for {interpreter}); Xen's test domains have no C library for it: build it static (RUSTFLAGS='-C target-feature=+crt-static' cargo build --target {})",
            binary.display(),
            arch.linux_target()
        )));
    }
    let name = binary
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'\'' && b != b'/')
        })
        .ok_or_else(|| Error::new(format!("{}: unusable file name", binary.display())))?
        .to_string();
    Ok((arch, name))
}

/// The shell line that runs program `name` (on `PATH`) with `args`.
fn command_line(name: &str, args: &[String]) -> String {
    let mut command = shell_quote(name);
    for arg in args {
        command.push(' ');
        command.push_str(&shell_quote(arg));
    }
    command
}

/// How the user's domU ended, from dom0's `XENTEST OUT domu-exit <name> <how>` line.
fn domu_end(outcome: &Outcome) -> DomuEnd {
    outcome
        .log
        .events
        .iter()
        .find_map(|event| match event {
            Event::Out(text) => {
                let rest = text.strip_prefix(exchange::DOMU_EXIT)?.trim();
                let (name, how) = rest.split_once(' ')?;
                (name == USER_DOMU).then(|| DomuEnd::from_report(how.trim()))
            }
            _ => None,
        })
        .unwrap_or(DomuEnd::NotRun)
}

/// The architecture of a domU kernel: an x86_64 ELF, or an arm64 Image (magic at 0x38).
pub fn kernel_arch(kernel: &Path) -> Result<Arch> {
    let bytes = std::fs::read(kernel).map_err(|e| Error::io(kernel, e))?;
    if bytes.get(0x38..0x3c) == Some(b"ARM\x64") {
        return Ok(Arch::Aarch64);
    }
    match elf::arch(&bytes) {
        Some(Arch::X86_64) => Ok(Arch::X86_64),
        _ => Err(Error::new(format!(
            "{}: neither an x86_64 ELF kernel nor an arm64 Image",
            kernel.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_lines_are_recognised() {
        assert!(is_system_line("(XEN) d1v0 hello"));
        assert!(is_system_line("[   12.345678] xen: something"));
        assert!(!is_system_line("hello [1] world"));
        assert!(!is_system_line("[not a time] user text"));
    }

    #[test]
    fn concurrent_runs_get_their_own_names() {
        let first = unique_run_name("run", Arch::X86_64);
        let second = unique_run_name("run", Arch::X86_64);
        assert_ne!(first, second);
        assert!(first.contains(&std::process::id().to_string()), "{first}");
    }

    #[test]
    fn domu_ends_map_to_statuses() {
        assert_eq!(DomuEnd::from_report("poweroff").status(), 0);
        assert_eq!(DomuEnd::from_report("crash").status(), 1);
        assert_eq!(DomuEnd::from_report("reboot").status(), 2);
        assert_eq!(DomuEnd::from_report("create-failed").status(), 3);
        assert_eq!(DomuEnd::from_report("timeout").status(), 124);
    }
}
