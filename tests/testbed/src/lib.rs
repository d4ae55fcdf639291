//! The real-Xen testbed: boots Debian's Xen under QEMU (TCG) with a Linux dom0 or a freestanding
//! Rust guest as dom0, and judges what the payloads report over the serial line
//! ([`xen_testbed_protocol`]). It knows several Debian releases ([`release::RELEASES`]: Xen 4.17
//! with Linux 6.1, Xen 4.20 with Linux 6.12); a [`Testbed`] boots one ([`Testbed::with_release`]).
//! `cargo xtask testbed` and `cargo xtask demo` are thin wrappers.
//!
//! # Using it from another command
//!
//! ```no_run
//! use std::time::Duration;
//! use xen_testbed::{Arch, Dom0Run, Testbed};
//!
//! # fn main() -> Result<(), xen_testbed::Error> {
//! let testbed = Testbed::new("/path/to/workspace".into(), "/path/to/target".into());
//! // Build a static payload (here: a package with a `bench` binary) for the architecture.
//! testbed.build_static("my-bench-package", &[Arch::X86_64])?;
//! let bench = testbed.static_binary(Arch::X86_64, "bench");
//! let outcome = testbed.boot_linux_dom0(&Dom0Run {
//!     name: "bench-x86_64".into(),
//!     arch: Arch::X86_64,
//!     binaries: vec![("bench".into(), bench)],
//!     files: vec![],
//!     preamble: Default::default(),
//!     commands: vec!["bench --iterations 1000".into()],
//!     expected_cases: vec![],
//!     expected_dones: 1,
//!     timeout: Duration::from_secs(120),
//!     vcpus: 1,
//!     dom0_memory_mib: None,
//!     domus: vec![],
//! })?;
//! for row in outcome.log.outputs() {
//!     println!("{row}"); // the payload's `XENTEST OUT` lines
//! }
//! assert!(outcome.verdict.passed(), "{:?}", outcome.verdict.failures());
//! # Ok(())
//! # }
//! ```
//!
//! - [`Testbed::boot_linux_dom0`] fetches the artifacts (hypervisor, kernel, modules, busybox; cached
//!   under `<target>/testbed/cache`; packages of a release the machine's apt does not serve come
//!   through a private apt configuration under `<target>/testbed/apt`, see [`apt`]), always adds the `xen-dom0-tests` program (which exits QEMU), writes
//!   the initramfs, boots it and returns an [`Outcome`]: the parsed log (cases, `XENTEST OUT` lines),
//!   the [`Verdict`], QEMU's wall time and peak RSS. The full log is at [`Outcome::log_path`].
//! - The `/init` it generates mounts proc, sysfs and devtmpfs, loads the Xen modules (dependencies
//!   first), exports `XENTEST_XEN_VERSION` (the release's Xen, e.g. `4.20`, which the dom0 tests
//!   expect), runs each of `commands` as a shell line in order (with `/bin` on `PATH`), and exits QEMU
//!   with failure if any of them exited non-zero.
//! - With [`initramfs::Preamble::Toolstack`], `/init` first starts Debian's toolstack
//!   ([`toolstack`]: `xenstored`, `xen-init-dom0`, `xenconsoled`; `xl` and the `xenstore-*` tools on
//!   `PATH`), each step with a bounded wait and a failure line naming it.
//! - [`run_scenarios`] runs the named [`scenarios`] (at most two QEMUs at once) and prints cargo-test
//!   style lines; it is what `cargo xtask testbed` calls. A cross-domain scenario
//!   ([`scenario::CrossDomain`]) judges dom0's cases and the cases of the domU it creates, whose
//!   console dom0 forwards ([`verdict::split_domains`]).
//! - A Linux-domU scenario ([`scenario::Kind::LinuxDomu`]) creates a Linux domU
//!   ([`linux_domu`]) whose `/init` runs the test program there, against dom0's.
//! - [`Testbed::run_dom0_program`], [`Testbed::run_domu_kernel`] and
//!   [`Testbed::run_domu_linux_program`] run users' own code (`cargo xtask testbed run`),
//!   streaming its output.
//! - [`demo::demo`] is `cargo xtask demo`.

#![forbid(unsafe_code)]

pub mod apt;
pub mod artifacts;
pub mod blkback;
pub mod c_program;
pub mod cpio;
pub mod demo;
mod elf;
pub mod initramfs;
pub mod linux_domu;
pub mod own_code;
pub mod qemu;
pub mod release;
pub mod scenario;
pub mod toolstack;
pub mod user;
pub mod verdict;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use scenario::{Options, Summary, run_scenarios, scenarios};
pub use verdict::{CaseResult, Verdict};
pub use xen_testbed_protocol::Log;

/// A guest architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    /// x86_64 (Xen amd64).
    X86_64,
    /// aarch64 (Xen arm64).
    Aarch64,
}

impl Arch {
    /// The Linux userland target triple for dom0 programs.
    pub fn linux_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Aarch64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// The QEMU system emulator.
    pub fn qemu(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        })
    }
}

/// A testbed error: a message for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    fn io(path: &Path, error: std::io::Error) -> Self {
        Self(format!("{}: {error}", path.display()))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// A testbed result.
pub type Result<T> = std::result::Result<T, Error>;

/// Where the testbed works: the workspace it builds payloads from and the cargo target directory
/// it builds them into and keeps its cache (`<target>/testbed/cache`) and logs (`<target>/testbed/logs`) in.
#[derive(Debug, Clone)]
pub struct Testbed {
    workspace: PathBuf,
    target_dir: PathBuf,
    verbose: bool,
    release: release::Release,
    /// The release's apt configuration, set up on first use.
    apt: Arc<OnceLock<apt::Apt>>,
    /// The release's toolstack of each architecture (x86_64, aarch64), resolved on first use.
    toolstacks: Arc<[OnceLock<toolstack::Toolstack>; 2]>,
}

/// One Linux dom0 boot: see the crate documentation.
#[derive(Debug, Clone)]
pub struct Dom0Run {
    /// Names the log (`<target>/testbed/logs/<name>.log`) and the initramfs.
    pub name: String,
    /// The architecture.
    pub arch: Arch,
    /// Extra static binaries: name in `/bin`, host path.
    pub binaries: Vec<(String, PathBuf)>,
    /// Other files (e.g. domU kernels): absolute path in dom0, host path.
    pub files: Vec<(String, PathBuf)>,
    /// What `/init` sets up before the commands (e.g. Debian's toolstack).
    pub preamble: initramfs::Preamble,
    /// Shell lines `/init` runs in order.
    pub commands: Vec<String>,
    /// Cases that must each be reported `ok`.
    pub expected_cases: Vec<String>,
    /// How many `XENTEST DONE` lines the commands print in all.
    pub expected_dones: usize,
    /// Time after which QEMU is killed and the run counts as hung.
    pub timeout: Duration,
    /// dom0's vCPUs (1 unless a scenario needs more: each costs boot time under TCG).
    pub vcpus: u32,
    /// dom0's memory in MiB (`None`: the smallest that boots it; a Linux domU needs
    /// [`linux_domu::DOM0_MEMORY_MIB`]). x86_64 only.
    pub dom0_memory_mib: Option<u32>,
    /// The domUs whose forwarded consoles are judged with the run: name and expected cases.
    pub domus: Vec<verdict::DomuExpectation>,
}

/// What one boot produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The parsed serial log, without the domUs' forwarded console lines.
    pub log: Log,
    /// Each domU's forwarded console (by name), parsed.
    pub domus: Vec<(String, Log)>,
    /// The judgement.
    pub verdict: Verdict,
    /// The full serial log on disk.
    pub log_path: PathBuf,
    /// QEMU's run.
    pub run: qemu::Run,
}

impl Testbed {
    /// A testbed over `workspace`, building into and caching under `target_dir`.
    pub fn new(workspace: PathBuf, target_dir: PathBuf) -> Self {
        Self {
            workspace,
            target_dir,
            verbose: false,
            release: release::RELEASES[0],
            apt: Arc::default(),
            toolstacks: Arc::default(),
        }
    }

    /// The same testbed booting `release` (default: the first of [`release::RELEASES`]).
    pub fn with_release(mut self, release: release::Release) -> Self {
        if release != self.release {
            self.release = release;
            self.apt = Arc::default();
            self.toolstacks = Arc::default();
        }
        self
    }

    /// The apt configuration of the release (a private one is written, and its lists fetched,
    /// on first use).
    pub fn apt(&self) -> Result<&apt::Apt> {
        if let Some(apt) = self.apt.get() {
            return Ok(apt);
        }
        let apt = self.release.apt(&self.target_dir.join("testbed/apt"))?;
        Ok(self.apt.get_or_init(|| apt))
    }

    /// The release it boots.
    pub fn release(&self) -> &release::Release {
        &self.release
    }

    /// Whether cargo's commands and output are shown (default: only errors and warnings).
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// `<target>/testbed/cache`.
    pub fn cache_dir(&self) -> PathBuf {
        self.target_dir.join("testbed/cache")
    }

    /// `<target>/testbed/logs`.
    pub fn logs_dir(&self) -> PathBuf {
        self.target_dir.join("testbed/logs")
    }

    pub(crate) fn work_dir(&self) -> PathBuf {
        self.target_dir.join("testbed/work")
    }

    /// Where the initramfs of the dom0 run named `run_name` is written.
    pub(crate) fn initramfs_path(&self, run_name: &str) -> PathBuf {
        self.work_dir().join(format!("{run_name}.cpio"))
    }

    /// A `cargo` command for the workspace and target directory.
    pub fn cargo(&self) -> Command {
        let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cargo
            .current_dir(&self.workspace)
            .env("CARGO_TARGET_DIR", &self.target_dir)
            // A global RUSTFLAGS would override the per-target flags below.
            .env_remove("RUSTFLAGS");
        cargo
    }

    /// Builds `package` (release) as static Linux binaries for `arches`.
    pub fn build_static(&self, package: &str, arches: &[Arch]) -> Result<()> {
        let mut cargo = self.cargo();
        cargo.args(["build", "--release", "-p", package]);
        // Without debug info: the programs go into dom0's initramfs, which an arm64 dom0's
        // 96 MiB must hold (13 MiB with it, and Linux 6.12 then fails to unpack the initramfs).
        cargo.env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
        for arch in arches {
            let target = arch.linux_target();
            check_rust_target(target)?;
            let env = target.to_uppercase().replace('-', "_");
            cargo.args(["--target", target]).env(
                format!("CARGO_TARGET_{env}_RUSTFLAGS"),
                "-C target-feature=+crt-static",
            );
            if *arch == Arch::Aarch64 {
                if which("aarch64-linux-gnu-gcc").is_none() {
                    return Err(Error::new(
                        "aarch64-linux-gnu-gcc (the linker for aarch64 dom0 programs) is missing: run `apt-get install gcc-aarch64-linux-gnu`",
                    ));
                }
                cargo.env(
                    format!("CARGO_TARGET_{env}_LINKER"),
                    "aarch64-linux-gnu-gcc",
                );
            }
        }
        self.run_cargo(cargo)
    }

    /// The path of static binary `name` built by [`Testbed::build_static`].
    pub fn static_binary(&self, arch: Arch, name: &str) -> PathBuf {
        self.target_dir
            .join(arch.linux_target())
            .join("release")
            .join(name)
    }

    /// Boots a Linux dom0 and runs `run`'s commands in it (see the crate documentation). Builds the
    /// `xen-dom0-tests` program (the QEMU exit helper) for `run.arch` first.
    pub fn boot_linux_dom0(&self, run: &Dom0Run) -> Result<Outcome> {
        self.build_static(scenario::DOM0_TESTS, &[run.arch])?;
        let artifacts = self.fetch(run.arch)?;
        let job = self.dom0_job(&artifacts, run)?;
        job.run(self)
    }

    /// Fetches (or finds in the cache) the artifacts of `arch` and checks that QEMU is there.
    pub fn fetch(&self, arch: Arch) -> Result<artifacts::Artifacts> {
        artifacts::check_qemu(arch)?;
        artifacts::fetch(&self.cache_dir(), &self.release, self.apt()?, arch)
    }

    /// Fetches (or finds in the cache) Debian's toolstack of `arch`, once per testbed: apt is asked
    /// for its versions and its libraries are found on the first call only.
    pub fn toolstack(&self, arch: Arch) -> Result<&toolstack::Toolstack> {
        let slot = &self.toolstacks[match arch {
            Arch::X86_64 => 0,
            Arch::Aarch64 => 1,
        }];
        if let Some(toolstack) = slot.get() {
            return Ok(toolstack);
        }
        let toolstack = toolstack::fetch(&self.cache_dir(), &self.release, self.apt()?, arch)?;
        Ok(slot.get_or_init(|| toolstack))
    }

    fn dom0_job(&self, artifacts: &artifacts::Artifacts, run: &Dom0Run) -> Result<scenario::Job> {
        let mut binaries = run.binaries.clone();
        if !binaries
            .iter()
            .any(|(name, _)| name == initramfs::EXIT_HELPER)
        {
            binaries.push((
                initramfs::EXIT_HELPER.into(),
                self.static_binary(run.arch, scenario::DOM0_TESTS),
            ));
        }
        let toolstack = if run.preamble.starts_toolstack() {
            Some(self.toolstack(run.arch)?)
        } else {
            None
        };
        let image = initramfs::build(
            artifacts,
            &initramfs::Contents {
                binaries: &binaries,
                files: &run.files,
                toolstack,
                preamble: run.preamble.clone(),
                commands: &run.commands,
            },
        )?;
        let work = self.work_dir();
        std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
        let path = self.initramfs_path(&run.name);
        std::fs::write(&path, image).map_err(|e| Error::io(&path, e))?;
        let command = qemu::command(
            run.arch,
            &artifacts.xen,
            &qemu::Guest::LinuxDom0 {
                kernel: &artifacts.kernel,
                initramfs: &path,
                vcpus: run.vcpus,
                dom0_memory_mib: run.dom0_memory_mib,
            },
        )?;
        Ok(scenario::Job {
            name: run.name.clone(),
            command,
            timeout: run.timeout,
            expectation: verdict::Expectation {
                arch: run.arch,
                cases: run.expected_cases.clone(),
                dones: run.expected_dones,
                domus: run.domus.clone(),
            },
            input: None,
            boots_again: run.vcpus > 1,
        })
    }
}

impl Testbed {
    /// Runs a cargo command (echoed, with cargo's progress, only when verbose), failing with its
    /// status.
    pub(crate) fn run_cargo(&self, mut cargo: Command) -> Result<()> {
        if self.verbose {
            eprintln!("+ {cargo:?}");
        } else {
            cargo.arg("--quiet");
        }
        run_cargo(cargo)
    }
}

/// Runs a cargo command, failing with its status.
fn run_cargo(mut cargo: Command) -> Result<()> {
    let status = cargo
        .status()
        .map_err(|e| Error::new(format!("cannot run cargo: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::new(format!("{cargo:?} failed ({status})")))
    }
}

/// Fails with the `rustup` command to run if the standard library of `target` is not installed.
fn check_rust_target(target: &str) -> Result<()> {
    let sysroot = command_output(Command::new("rustc").args(["--print", "sysroot"]))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot).trim());
    if sysroot.join("lib/rustlib").join(target).exists() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "the Rust target {target} is not installed: run `rustup target add {target}`"
        )))
    }
}

/// Runs `command` and returns its stdout, or an error with its stderr.
fn command_output(command: &mut Command) -> Result<Vec<u8>> {
    let output = command
        .output()
        .map_err(|e| Error::new(format!("cannot run {:?}: {e}", command.get_program())))?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(Error::new(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// The path of `program` in `PATH`.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
