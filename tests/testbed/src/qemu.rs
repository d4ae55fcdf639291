//! QEMU command lines and running QEMU under a timeout.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::{Arch, Error, Result};

/// How QEMU ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// QEMU exited with this status.
    Status(i32),
    /// QEMU was killed by a signal it did not get from us.
    Signal,
    /// QEMU was still running at the deadline and was killed.
    TimedOut(Duration),
}

/// What one QEMU run produced.
#[derive(Debug, Clone)]
pub struct Run {
    /// How QEMU ended.
    pub exit: Exit,
    /// Wall time from start to exit.
    pub wall: Duration,
    /// Peak resident set size of QEMU, in KiB, sampled from `/proc` while it ran.
    pub peak_rss_kib: Option<u64>,
    /// The serial log (QEMU's stdout and stderr).
    pub log: PathBuf,
}

/// What QEMU boots.
#[derive(Debug, Clone)]
pub enum Guest<'a> {
    /// A Linux dom0 with an initramfs.
    LinuxDom0 {
        /// The dom0 kernel.
        kernel: &'a Path,
        /// The initramfs.
        initramfs: &'a Path,
        /// dom0's vCPUs (QEMU's CPUs and Xen's `dom0_max_vcpus`).
        vcpus: u32,
        /// dom0's memory in MiB (`None`: the default), x86_64 only.
        dom0_memory_mib: Option<u32>,
    },
    /// A freestanding x86_64 PV dom0 (ELF).
    Pv(&'a Path),
    /// A freestanding x86_64 PVH dom0 (ELF).
    Pvh(&'a Path),
    /// A freestanding aarch64 dom0 (arm64 Image).
    Aarch64Image(&'a Path),
}

/// Xen's own command line, shared by every x86_64 boot.
const XEN_X86_CMDLINE: &str =
    "console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all bootscrub=0 console_to_ring";
const XEN_ARM_CMDLINE: &str = "console=dtuart loglvl=all guest_loglvl=all console_to_ring";
const LINUX_CMDLINE: &str = "console=hvc0 earlyprintk=xen panic=-1 quiet";

/// The QEMU command that boots `xen` with `guest`, on `arch`.
pub fn command(arch: Arch, xen: &Path, guest: &Guest<'_>) -> Result<Command> {
    let vcpus = match guest {
        Guest::LinuxDom0 { vcpus, .. } => (*vcpus).max(1),
        _ => 1,
    };
    let mut qemu = Command::new(arch.qemu());
    qemu.args(["-smp", &vcpus.to_string()]);
    qemu.args([
        "-nographic",
        "-no-reboot",
        "-monitor",
        "none",
        "-serial",
        "stdio",
    ]);
    match arch {
        Arch::X86_64 => {
            // TCG only: KVM is unusable on these hosts; `-smap`: TCG's SMAP emulation crashes a PV dom0.
            // tb-size=64: a 64 MiB translation cache instead of QEMU's default (RSS).
            qemu.args(["-accel", "tcg,thread=multi,tb-size=64", "-cpu", "max,-smap"]);
            qemu.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        }
        Arch::Aarch64 => {
            qemu.args([
                "-machine",
                "virt,virtualization=on,gic-version=3",
                "-cpu",
                "cortex-a57",
            ]);
            qemu.args(["-accel", "tcg,tb-size=64"]);
            qemu.args([
                "-semihosting-config",
                "enable=on,target=native,userspace=on",
            ]);
        }
    }
    qemu.arg("-kernel").arg(xen);
    // Multiboot modules (x86) are separated by commas; a comma in a path would split it.
    let path = |path: &Path| -> Result<String> {
        let text = path
            .to_str()
            .filter(|t| !t.contains([',', ' ', '"']))
            .ok_or_else(|| {
                Error::new(format!(
                    "{}: QEMU cannot take a path with `,`, space or quote",
                    path.display()
                ))
            })?;
        Ok(text.to_string())
    };
    match (arch, guest) {
        (
            Arch::X86_64,
            Guest::LinuxDom0 {
                kernel,
                initramfs,
                dom0_memory_mib,
                ..
            },
        ) => {
            // The smallest that boots the kernel (128M: "Domain 0 allocation is too small"), with
            // 192M left for domUs.
            let dom0 = dom0_memory_mib.unwrap_or(192);
            qemu.args(["-m", &(dom0 + 192).to_string(), "-append"]);
            qemu.arg(format!(
                "{XEN_X86_CMDLINE} dom0_max_vcpus={vcpus} dom0_mem={dom0}M,max:{dom0}M"
            ));
            qemu.arg("-initrd").arg(format!(
                "{} {LINUX_CMDLINE},{}",
                path(kernel)?,
                path(initramfs)?
            ));
        }
        (Arch::X86_64, Guest::Pv(elf)) => {
            qemu.args(["-m", "512", "-append"]);
            qemu.arg(format!(
                "{XEN_X86_CMDLINE} dom0_max_vcpus=1 dom0_mem=64M,max:64M"
            ));
            qemu.arg("-initrd").arg(format!("{} xentest", path(elf)?));
        }
        (Arch::X86_64, Guest::Pvh(elf)) => {
            // A PVH hardware domain needs an IOMMU.
            qemu.args([
                "-machine",
                "q35",
                "-device",
                "amd-iommu",
                "-m",
                "512",
                "-append",
            ]);
            qemu.arg(format!(
                "{XEN_X86_CMDLINE} dom0_max_vcpus=1 dom0=pvh dom0_mem=64M,max:64M"
            ));
            qemu.arg("-initrd").arg(format!("{} xentest", path(elf)?));
        }
        (
            Arch::Aarch64,
            Guest::LinuxDom0 {
                kernel, initramfs, ..
            },
        ) => {
            // Modules above QEMU's DTB at 0x48000000, which would overwrite a module placed there.
            // 96M: enough for dom0 and the toolstack (64M: out of memory), leaving room for a domU.
            // 384M, not 256M: Linux maps foreign pages (`xl create`) into a 128M-aligned 128M
            // section of Xen's extended regions; with 256M, Xen 4.20 leaves only
            // 0x48000000-0x4fe00000 free and privcmd's mmap fails with ENOMEM.
            qemu.args(["-m", "384", "-append"]);
            qemu.arg(format!(
                "{XEN_ARM_CMDLINE} dom0_max_vcpus={vcpus} dom0_mem=96M"
            ));
            qemu.arg("-device").arg(format!(
                "guest-loader,addr=0x49000000,kernel={},bootargs={LINUX_CMDLINE} rdinit=/init",
                path(kernel)?
            ));
            qemu.arg("-device").arg(format!(
                "guest-loader,addr=0x4c000000,initrd={}",
                path(initramfs)?
            ));
        }
        (Arch::Aarch64, Guest::Aarch64Image(image)) => {
            qemu.args(["-m", "1024", "-append"]);
            qemu.arg(format!("{XEN_ARM_CMDLINE} dom0_mem=128M"));
            // Non-empty bootargs, else Xen hands its own command line to dom0.
            qemu.arg("-device").arg(format!(
                "guest-loader,addr=0x49000000,kernel={},bootargs=xentest",
                path(image)?
            ));
        }
        (arch, guest) => {
            return Err(Error::new(format!("{guest:?} does not boot on {arch}")));
        }
    }
    Ok(qemu)
}

/// Text typed into the serial line once the guest asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialInput {
    /// Typed after the first log line that contains this.
    pub after: String,
    /// What is typed.
    pub text: Vec<u8>,
}

/// Runs `qemu` with its serial output in `log`, killing its process group after `timeout`.
pub fn run(mut qemu: Command, log: &Path, timeout: Duration) -> Result<Run> {
    run_streaming(&mut qemu, log, timeout, None, &mut |_| {})
}

/// [`run`], typing `input` into the serial line (QEMU's stdin) when asked, and calling `on_line`
/// with each complete line of the log (raw bytes, without the newline) while QEMU runs. `qemu`
/// can be run again after.
pub fn run_streaming(
    qemu: &mut Command,
    log: &Path,
    timeout: Duration,
    input: Option<&SerialInput>,
    on_line: &mut dyn FnMut(&[u8]),
) -> Result<Run> {
    let file = File::create(log).map_err(|e| Error::io(log, e))?;
    let stderr = file.try_clone().map_err(|e| Error::io(log, e))?;
    {
        use std::io::Write;
        let mut header = &file;
        let _ = writeln!(header, "+ {qemu:?}");
    }
    let start = Instant::now();
    let mut child = {
        use std::os::unix::process::CommandExt;
        qemu.process_group(0)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(file)
            .stderr(stderr)
            .spawn()
            .map_err(|e| Error::new(format!("cannot start {:?}: {e}", qemu.get_program())))?
    };
    let status_path = PathBuf::from(format!("/proc/{}/status", child.id()));
    let mut peak_rss_kib = None;
    let mut tail = Tail::default();
    let mut stdin = child.stdin.take();
    let mut on_line = |line: &[u8]| {
        if let Some(input) = input
            && line
                .windows(input.after.len())
                .any(|w| w == input.after.as_bytes())
            && let Some(mut pipe) = stdin.take()
        {
            use std::io::Write;
            // A failure shows as the guest's case failing; the pipe closes after.
            let _ = pipe.write_all(&input.text);
        }
        on_line(line);
    };
    let on_line = &mut on_line;
    let exit = loop {
        tail.read(log, on_line);
        if let Some(status) = child
            .try_wait()
            .map_err(|e| Error::new(format!("waiting for QEMU: {e}")))?
        {
            tail.read(log, on_line);
            break status.code().map_or(Exit::Signal, Exit::Status);
        }
        if let Some(rss) = high_water_mark(&status_path) {
            peak_rss_kib = Some(rss);
        }
        if start.elapsed() > timeout {
            kill_group(child.id());
            let _ = child.wait();
            break Exit::TimedOut(timeout);
        }
        sleep(Duration::from_millis(50));
    };
    Ok(Run {
        exit,
        wall: start.elapsed(),
        peak_rss_kib,
        log: log.to_path_buf(),
    })
}

/// The lines of a growing file not yet handed out.
#[derive(Default)]
struct Tail {
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    /// Hands every new complete line of `path` to `on_line`.
    fn read(&mut self, path: &Path, on_line: &mut dyn FnMut(&[u8])) {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = File::open(path) else {
            return;
        };
        let mut chunk = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut chunk).is_err()
        {
            return;
        }
        self.offset += chunk.len() as u64;
        self.partial.extend_from_slice(&chunk);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            on_line(&line[..end]);
        }
    }
}

/// `VmHWM` (peak RSS, KiB) from a `/proc/<pid>/status` file.
fn high_water_mark(status: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(status).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Kills the process group `pgid` (QEMU and anything it started): QEMU leads the group it was
/// spawned in (`process_group(0)`), so its pid names the group.
fn kill_group(pgid: u32) {
    // Group 0 would be this process's own, never QEMU's.
    if let Ok(pgid @ 1..) = i32::try_from(pgid) {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::{CommandExt, ExitStatusExt};

    use super::*;

    #[test]
    fn kill_group_kills_the_leader_and_its_children() {
        let mut leader = Command::new("sh")
            .args(["-c", "sleep 100 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        kill_group(leader.id());
        let status = leader.wait().unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    }

    #[test]
    fn a_command_runs_again_with_its_arguments_and_environment() {
        let dir = std::env::temp_dir().join(format!("xen-testbed-qemu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut command = Command::new("sh");
        command
            .args(["-c", "echo \"run $WORD\""])
            .env("WORD", "again");
        for boot in ["first", "second"] {
            let log = dir.join(format!("{boot}.log"));
            let mut lines = Vec::new();
            let run = run_streaming(
                &mut command,
                &log,
                Duration::from_secs(10),
                None,
                &mut |l| lines.push(l.to_vec()),
            )
            .unwrap();
            assert_eq!(run.exit, Exit::Status(0));
            assert!(lines.iter().any(|l| l == b"run again"), "{boot}: {lines:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
