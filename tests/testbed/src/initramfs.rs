//! The Linux dom0 initramfs: busybox, the Xen modules, the test programs, optionally Debian's
//! toolstack, and a generated `/init`.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use crate::artifacts::Artifacts;
use crate::cpio::Cpio;
use crate::toolstack::Toolstack;
use crate::{Error, Result};

/// The dom0 program that also exits QEMU (`xen-dom0-tests exit <code>`); every initramfs holds it.
pub const EXIT_HELPER: &str = "xen-dom0-tests";

/// The directories every initramfs has.
pub(crate) const DIRS: &[&str] = &[
    "bin",
    "sbin",
    "usr",
    "usr/bin",
    "usr/sbin",
    "dev",
    "proc",
    "sys",
    "tmp",
    "lib",
    "lib/modules",
];

/// What `/init` sets up before the commands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Preamble {
    /// Only the Xen modules and xenfs.
    #[default]
    Modules,
    /// Also Debian's toolstack: devpts, the runtime directories, `xenstored`, `xen-init-dom0` and
    /// `xenconsoled`, each checked with a bounded wait. `fault` is a shell line run just before, for
    /// the harness's self-test of a failing step.
    Toolstack {
        /// Breaks a step on purpose (self-tests only).
        fault: Option<String>,
    },
    /// The toolstack, and Linux's block backend loaded after the Xen modules
    /// ([`crate::artifacts::BLOCK_BACKEND_MODULES`]: blkback and the loop device), for a dom0
    /// that serves a disk to a domU.
    BlockBackend,
}

impl Preamble {
    /// Whether `/init` starts Debian's toolstack.
    pub fn starts_toolstack(&self) -> bool {
        !matches!(self, Preamble::Modules)
    }

    /// The shell line that breaks a toolstack step on purpose.
    fn fault(&self) -> Option<&str> {
        match self {
            Preamble::Toolstack { fault } => fault.as_deref(),
            Preamble::Modules | Preamble::BlockBackend => None,
        }
    }
}

/// Everything the initramfs holds besides busybox and the modules.
#[derive(Debug, Clone, Default)]
pub struct Contents<'a> {
    /// Programs: name in `/bin`, host path.
    pub binaries: &'a [(String, PathBuf)],
    /// Other files: absolute path in dom0, host path.
    pub files: &'a [(String, PathBuf)],
    /// The toolstack, when [`Preamble::Toolstack`] starts it.
    pub toolstack: Option<&'a Toolstack>,
    /// What `/init` sets up.
    pub preamble: Preamble,
    /// Shell lines `/init` runs in order.
    pub commands: &'a [String],
}

/// Builds the initramfs: the binaries, files and toolstack of `contents`, and the `/init` that loads
/// the modules, runs the preamble, runs each shell line of `commands` in order, then exits QEMU with 0
/// if all succeeded, else 1.
pub fn build(artifacts: &Artifacts, contents: &Contents<'_>) -> Result<Vec<u8>> {
    let binaries = contents.binaries;
    if !binaries.iter().any(|(name, _)| name == EXIT_HELPER) {
        return Err(Error::new(format!(
            "the initramfs needs /bin/{EXIT_HELPER} to exit QEMU"
        )));
    }
    let block_backend = match contents.preamble {
        Preamble::BlockBackend => artifacts.block_backend_modules.as_slice(),
        Preamble::Modules | Preamble::Toolstack { .. } => &[],
    };
    let mut cpio = Cpio::new();
    let modules = busybox_and_modules(
        &mut cpio,
        DIRS,
        artifacts,
        artifacts.modules.iter().chain(block_backend),
    )?;
    let read = |path: &PathBuf| fs::read(path).map_err(|e| Error::io(path, e));
    for (name, path) in binaries {
        cpio.file(&format!("bin/{name}"), 0o755, &read(path)?);
    }
    let mut made: BTreeSet<String> = DIRS.iter().map(|d| d.to_string()).collect();
    for (path, host) in contents.files {
        add_parents(&mut cpio, &mut made, path);
        cpio.file(path, 0o755, &read(host)?);
    }
    let toolstack = match (contents.preamble.starts_toolstack(), contents.toolstack) {
        (true, Some(toolstack)) => Some(toolstack),
        (true, None) => {
            return Err(Error::new("the toolstack preamble needs the toolstack"));
        }
        (false, _) => None,
    };
    if let Some(toolstack) = toolstack {
        for (path, host) in &toolstack.files {
            add_parents(&mut cpio, &mut made, path);
            cpio.file(path, 0o755, &read(host)?);
        }
        for (path, target) in &toolstack.links {
            add_parents(&mut cpio, &mut made, path);
            cpio.symlink(path, target);
        }
    }
    let bin_dir = toolstack.map_or("", |t| t.bin_dir.as_str());
    cpio.file(
        "init",
        0o755,
        init_script(
            &modules,
            &contents.preamble,
            bin_dir,
            contents.commands,
            artifacts.release.xen,
        )
        .as_bytes(),
    );
    Ok(cpio.finish())
}

/// Adds `dirs`, `/dev/console`, busybox as `/bin/sh` and each of `modules` in `/lib/modules`
/// (`dirs` must hold `bin` and `lib/modules`); returns the modules' file names, in order, for
/// [`insmod_lines`].
pub(crate) fn busybox_and_modules<'m>(
    cpio: &mut Cpio,
    dirs: &[&str],
    artifacts: &Artifacts,
    modules: impl IntoIterator<Item = &'m PathBuf>,
) -> Result<Vec<String>> {
    for dir in dirs {
        cpio.dir(dir);
    }
    // The kernel opens /dev/console for init's stdio before anything is mounted.
    cpio.char_device("dev/console", 0o600, 5, 1);
    let read = |path: &PathBuf| fs::read(path).map_err(|e| Error::io(path, e));
    cpio.file("bin/busybox", 0o755, &read(&artifacts.busybox)?);
    cpio.symlink("bin/sh", "busybox");
    let mut names = Vec::new();
    for module in modules {
        let name = module
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::new(format!("bad module path {}", module.display())))?;
        cpio.file(&format!("lib/modules/{name}"), 0o644, &read(module)?);
        names.push(name.to_string());
    }
    Ok(names)
}

/// The shell lines that load `modules` from `/lib/modules` in order, each printing
/// `<failure>insmod <module> failed` if it cannot be loaded.
pub(crate) fn insmod_lines(modules: &[String], failure: &str) -> String {
    modules
        .iter()
        .map(|module| {
            format!("insmod /lib/modules/{module} || echo '{failure}insmod {module} failed'\n")
        })
        .collect()
}

/// Adds the directories above `path` that are not in `made` yet.
fn add_parents(cpio: &mut Cpio, made: &mut BTreeSet<String>, path: &str) {
    let path = path.trim_start_matches('/');
    for (end, _) in path.match_indices('/') {
        let dir = &path[..end];
        if made.insert(dir.to_string()) {
            cpio.dir(dir);
        }
    }
}

/// How long each toolstack step may take before `/init` gives up.
pub const TOOLSTACK_STEP_SECONDS: u32 = 10;

/// The shell lines that start the toolstack; a step that fails prints
/// `XENTEST PANIC toolstack: <step>: <why>` and exits QEMU with failure.
fn toolstack_preamble(bin_dir: &str, fault: Option<&str>) -> String {
    let seconds = TOOLSTACK_STEP_SECONDS;
    let mut script = format!(
        "toolstack_fail() {{ echo \"XENTEST PANIC toolstack: $1\"; {EXIT_HELPER} exit 1; }}\n\
         # wait_for <seconds> <test arguments...>: polls every 50 ms.\n\
         wait_for() {{ limit=$(( $1 * 20 )); shift; n=0; while ! test \"$@\"; do n=$((n + 1)); [ $n -gt $limit ] && return 1; usleep 50000; done; return 0; }}\n\
         export PATH=$PATH:/{bin}\n\
         mkdir -p /dev/pts && mount -t devpts devpts /dev/pts || toolstack_fail 'devpts: mount failed'\n\
         [ -e /proc/xen/privcmd ] || toolstack_fail 'xenfs: /proc/xen/privcmd missing'\n\
         mkdir -p /var/run/xen /var/run/xenstored /var/lib/xen /var/log/xen/console /run/xen /var/lock\n",
        bin = bin_dir,
    );
    if let Some(fault) = fault {
        script.push_str(&format!("{fault}\n"));
    }
    script.push_str(&format!(
        "xenstored --pid-file /var/run/xenstored.pid || toolstack_fail \"xenstored: exit status $?\"\n\
         wait_for {seconds} -S /var/run/xenstored/socket || toolstack_fail 'xenstored: no socket after {seconds} s'\n\
         timeout {seconds} xen-init-dom0 || toolstack_fail \"xen-init-dom0: exit status $? (143: killed after {seconds} s)\"\n\
         xenconsoled --log=guest --log-dir=/var/log/xen/console --pid-file=/var/run/xenconsoled.pid || toolstack_fail \"xenconsoled: exit status $?\"\n\
         wait_for {seconds} -s /var/run/xenconsoled.pid || toolstack_fail 'xenconsoled: no pid file after {seconds} s'\n\
         echo 'init: toolstack up'\n"
    ));
    script
}

/// The environment variable holding the Xen version (`major.minor`) the booted release ships, which
/// the dom0 tests expect.
pub const XEN_VERSION_VARIABLE: &str = "XENTEST_XEN_VERSION";

/// The `/init` shell script; `bin_dir` is where the toolstack's programs are, `xen_version` the
/// release's Xen (`4.20`), exported as [`XEN_VERSION_VARIABLE`].
pub fn init_script(
    modules: &[String],
    preamble: &Preamble,
    bin_dir: &str,
    commands: &[String],
    xen_version: &str,
) -> String {
    let mut script = format!(
        "#!/bin/sh\n\
         # Generated by the xen-testbed runner.\n\
         export PATH=/bin:/sbin:/usr/bin:/usr/sbin\n\
         export {XEN_VERSION_VARIABLE}='{xen_version}'\n\
         /bin/busybox --install -s\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n",
    );
    script.push_str(&insmod_lines(modules, "XENTEST PANIC init: "));
    script.push_str("mount -t xenfs xenfs /proc/xen 2>/dev/null\n");
    if preamble.starts_toolstack() {
        script.push_str(&toolstack_preamble(bin_dir, preamble.fault()));
    }
    script.push_str("status=0\n");
    for command in commands {
        script.push_str(&format!(
            "echo {}\n( {command} ) || {{ echo \"init: exit status $? from: \"{}; status=1; }}\n",
            shell_quote(&format!("init: {command}")),
            shell_quote(command)
        ));
    }
    script.push_str(&format!(
        "echo \"init: done, exiting QEMU with $status\"\n\
         {EXIT_HELPER} exit $status\n\
         echo 'XENTEST PANIC init: could not exit QEMU'\n\
         poweroff -f\n"
    ));
    script
}

/// `word` quoted for the shell: one word, taken literally.
pub(crate) fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn init_loads_modules_runs_commands_and_exits() {
        let script = init_script(
            &["xen-privcmd.ko".into(), "xenfs.ko".into()],
            &Preamble::Modules,
            "",
            &["xen-dom0-tests".into(), "A='x y' bench".into()],
            "4.20",
        );
        assert!(script.contains("\nexport XENTEST_XEN_VERSION='4.20'\n"));
        assert!(!script.contains("xenstored"));
        let privcmd = script
            .find("insmod /lib/modules/xen-privcmd.ko")
            .expect("privcmd loaded");
        let xenfs = script
            .find("insmod /lib/modules/xenfs.ko")
            .expect("xenfs loaded");
        assert!(privcmd < xenfs);
        assert!(script.contains("( xen-dom0-tests ) || {"));
        assert!(script.contains("( A='x y' bench ) || {"));
        assert!(script.contains("echo 'init: A='\\''x y'\\'' bench'"));
        // The failure line names the command as it was written.
        assert!(script.contains("echo \"init: exit status $? from: \"'A='\\''x y'\\'' bench'"));
        assert!(script.ends_with("xen-dom0-tests exit $status\necho 'XENTEST PANIC init: could not exit QEMU'\npoweroff -f\n"));
    }

    /// The script is valid shell: `sh -n` parses it (dash, like busybox ash, is POSIX).
    #[test]
    fn init_is_valid_shell() {
        for preamble in [
            Preamble::Modules,
            Preamble::Toolstack { fault: None },
            Preamble::Toolstack {
                fault: Some("rm -r /var/run/xenstored".into()),
            },
            Preamble::BlockBackend,
        ] {
            let script = init_script(
                &["m.ko".into()],
                &preamble,
                "usr/lib/xen/bin",
                &["a \"b\" 'c'".into(), "x=1 y".into()],
                "4.17",
            );
            let status = std::process::Command::new("sh")
                .args(["-n", "-c", &script])
                .status()
                .expect("sh runs");
            assert!(status.success(), "{script}");
        }
    }

    /// The toolstack's steps run in order, after the modules, each with its bounded wait and a
    /// failure line naming it; the fault line comes just before the first step.
    #[test]
    fn the_toolstack_preamble_starts_each_step_with_a_named_failure() {
        let script = init_script(
            &["xenfs.ko".into()],
            &Preamble::Toolstack {
                fault: Some("FAULT".into()),
            },
            "usr/lib/xen/bin",
            &["xen-dom0-tests".into()],
            "4.17",
        );
        let at = |needle: &str| {
            script
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} in {script}"))
        };
        let order = [
            at("insmod /lib/modules/xenfs.ko"),
            at("mount -t devpts"),
            at("FAULT"),
            at("xenstored --pid-file"),
            at("toolstack_fail 'xenstored: no socket after 10 s'"),
            at("timeout 10 xen-init-dom0"),
            at("xenconsoled --log=guest"),
            at("toolstack_fail 'xenconsoled: no pid file after 10 s'"),
            at("( xen-dom0-tests )"),
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{script}");
    }

    /// The bounded wait gives up, and succeeds, as the preamble relies on (run by the host's `sh`,
    /// with `sleep` standing in for busybox's `usleep`).
    #[test]
    fn wait_for_is_bounded() {
        let preamble = toolstack_preamble("usr/lib/xen/bin", None);
        let wait_for = preamble
            .lines()
            .find(|l| l.starts_with("wait_for()"))
            .expect("wait_for defined");
        let script = format!(
            "usleep() {{ sleep 0.001; }}\n{wait_for}\nwait_for 1 -e /nonexistent && exit 3\nwait_for 1 -d / || exit 4\nexit 0"
        );
        let started = std::time::Instant::now();
        let status = std::process::Command::new("sh")
            .args(["-c", &script])
            .status()
            .expect("sh runs");
        assert_eq!(status.code(), Some(0));
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}
