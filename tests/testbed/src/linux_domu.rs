//! A Linux domU: the release's own kernel (the dom0's package) booted by `xl create`, with a
//! small busybox initramfs whose `/init` loads the domU's modules
//! ([`crate::artifacts::LINUX_DOMU_MODULES`]), runs a shell script of the caller's and powers
//! off. Measured needs: 96 MiB of domU memory (80 MiB crashes, 64 MiB is refused), and a dom0
//! with room for `xl create` to load the kernel ([`DOM0_MEMORY_MIB`]).

use std::fs;
use std::path::PathBuf;

use crate::artifacts::Artifacts;
use crate::cpio::Cpio;
use crate::initramfs;
use crate::{Error, Result};

/// The memory a Linux PV domU boots in (MiB).
pub const MEMORY_MIB: u32 = 96;
/// The dom0 memory (MiB) that lets `xl create` load a Linux domU (192 and 256: `xl` is killed).
pub const DOM0_MEMORY_MIB: u32 = 384;
/// The xl `extra` (kernel command line) of a Linux domU: its console is `hvc0`, which
/// xenconsoled logs.
pub const CMDLINE: &str = "console=hvc0 quiet";

/// A Linux domU's boot files, on the host.
#[derive(Debug, Clone)]
pub struct LinuxDomu {
    /// The kernel image (xl's `kernel`).
    pub kernel: PathBuf,
    /// The initramfs (xl's `ramdisk`).
    pub ramdisk: PathBuf,
}

/// The domU's type in xl: PV, or PVH (x86_64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `type = "pv"`.
    Pv,
    /// `type = "pvh"`, with [`PVH_CPUID`].
    Pvh,
}

impl Mode {
    /// xl's `type`.
    pub fn xl_type(self) -> &'static str {
        match self {
            Mode::Pv => "pv",
            Mode::Pvh => "pvh",
        }
    }
}

/// xl's `cpuid` for a Linux PVH domU: under TCG, Linux's first RDTSCP crashes it (Xen cannot
/// emulate the instruction) unless the CPUID leaf hides it.
pub const PVH_CPUID: &str = "host,rdtscp=0";
/// Where dom0 holds the kernel of a Linux domU.
pub const KERNEL_IN_DOM0: &str = "/lib/xentest/linux-kernel";

/// Where dom0 holds the initramfs of Linux domU `name`.
pub fn ramdisk_in_dom0(name: &str) -> String {
    format!("/lib/xentest/{name}.cpio")
}

/// The `xen-dom0-tests` domU options (`run-domu`, `linux-domu-peer`) that create Linux domU
/// `name` from [`KERNEL_IN_DOM0`] and [`ramdisk_in_dom0`]`(name)`, with [`MEMORY_MIB`].
pub fn domu_options(name: &str, mode: Mode) -> String {
    let mut options = format!(
        "--name {name} --type {} --memory {MEMORY_MIB} --kernel {KERNEL_IN_DOM0} --ramdisk {} --cmdline '{CMDLINE}'",
        mode.xl_type(),
        ramdisk_in_dom0(name)
    );
    if mode == Mode::Pvh {
        options.push_str(&format!(" --cpuid {PVH_CPUID}"));
    }
    options
}

impl LinuxDomu {
    /// The files dom0 needs to create domU `name` with [`domu_options`]: the kernel and the
    /// initramfs (path in dom0, path on the host).
    pub fn files_in_dom0(&self, name: &str) -> Vec<(String, PathBuf)> {
        vec![
            (KERNEL_IN_DOM0.into(), self.kernel.clone()),
            (ramdisk_in_dom0(name), self.ramdisk.clone()),
        ]
    }
}

/// Writes `<dir>/<name>.cpio`: busybox, the Xen and domU modules of `artifacts` and an `/init`
/// that loads them, mounts xenfs, runs `script` (shell lines) and powers the domU off.
pub fn build(
    artifacts: &Artifacts,
    dir: &std::path::Path,
    name: &str,
    script: &str,
) -> Result<LinuxDomu> {
    build_with_programs(artifacts, dir, name, &[], script)
}

/// As [`build`], with `programs` (name in `/bin`, host path: static executables) in the
/// initramfs for `script` to run.
pub fn build_with_programs(
    artifacts: &Artifacts,
    dir: &std::path::Path,
    name: &str,
    programs: &[(String, PathBuf)],
    script: &str,
) -> Result<LinuxDomu> {
    let mut cpio = Cpio::new();
    let modules = initramfs::busybox_and_modules(
        &mut cpio,
        initramfs::DIRS,
        artifacts,
        artifacts
            .modules
            .iter()
            .chain(&artifacts.linux_domu_modules),
    )?;
    for (program, path) in programs {
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        cpio.file(&format!("bin/{program}"), 0o755, &bytes);
    }
    cpio.file("init", 0o755, init_script(&modules, script).as_bytes());
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let ramdisk = dir.join(format!("{name}.cpio"));
    fs::write(&ramdisk, cpio.finish()).map_err(|e| Error::io(&ramdisk, e))?;
    Ok(LinuxDomu {
        kernel: artifacts.kernel_image.clone(),
        ramdisk,
    })
}

/// Options `/init` loads modules with (module file name, options). Linux refuses every
/// hypercall made through a domU's privcmd (it restricts the device to the domain named at the
/// domU's xenstore `target`, which only a device model's stub domain has) unless the module is
/// loaded `unrestricted` (ignored on a locked-down kernel, which this one is not): then Xen
/// judges each hypercall, as it does a freestanding domU's.
const MODULE_OPTIONS: &[(&str, &str)] = &[("xen-privcmd.ko", "unrestricted=1")];

/// The domU's `/init`. Linux runs `/sbin/poweroff` when Xen asks it to stop, and busybox's
/// own only signals PID 1 (which a shell ignores): both are made `busybox poweroff -f`
/// (replacing the links `--install` made).
fn init_script(modules: &[String], script: &str) -> String {
    let mut init = String::from(
        "#!/bin/sh\n\
         export PATH=/bin:/sbin:/usr/bin:/usr/sbin\n\
         /bin/busybox --install -s\n\
         rm -f /sbin/poweroff /sbin/reboot\n\
         printf '#!/bin/sh\\nexec busybox poweroff -f\\n' > /sbin/poweroff\n\
         printf '#!/bin/sh\\nexec busybox reboot -f\\n' > /sbin/reboot\n\
         chmod 755 /sbin/poweroff /sbin/reboot\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n",
    );
    for line in initramfs::insmod_lines(modules, "linux-domu: ").lines() {
        let options = MODULE_OPTIONS.iter().find_map(|(module, options)| {
            line.starts_with(&format!("insmod /lib/modules/{module}"))
                .then_some(options)
        });
        match options {
            // `insmod <path> <options> || echo ...`
            Some(options) => init.push_str(&line.replacen(" ||", &format!(" {options} ||"), 1)),
            None => init.push_str(line),
        }
        init.push('\n');
    }
    init.push_str("mkdir -p /proc/xen\nmount -t xenfs xenfs /proc/xen\n");
    init.push_str(script);
    init.push_str("\nexec busybox poweroff -f\n");
    init
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pvh_domu_hides_rdtscp_and_a_pv_one_sets_no_cpuid() {
        let pvh = domu_options("d", Mode::Pvh);
        assert!(pvh.contains("--type pvh ") && pvh.ends_with(" --cpuid host,rdtscp=0"));
        assert!(!domu_options("d", Mode::Pv).contains("--cpuid"));
        assert!(domu_options("d", Mode::Pv).contains("--ramdisk /lib/xentest/d.cpio"));
    }

    #[test]
    fn init_loads_the_modules_in_order_runs_the_script_and_powers_off() {
        let init = init_script(&["a.ko".into(), "b.ko".into()], "echo hi");
        let a = init.find("insmod /lib/modules/a.ko").unwrap();
        let b = init.find("insmod /lib/modules/b.ko").unwrap();
        let hi = init.find("echo hi").unwrap();
        assert!(a < b && b < hi);
        assert!(init.ends_with("echo hi\nexec busybox poweroff -f\n"));
    }

    #[test]
    fn privcmd_is_loaded_unrestricted_and_the_other_modules_without_options() {
        let init = init_script(&["xen-privcmd.ko".into(), "xenfs.ko".into()], "");
        assert!(init.contains("insmod /lib/modules/xen-privcmd.ko unrestricted=1 || echo"));
        assert!(init.contains("insmod /lib/modules/xenfs.ko || echo"));
    }
}
