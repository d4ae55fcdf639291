//! C programs for dom0, linked statically against the host's Debian `libxen-dev` (x86_64
//! only: the host has no arm64 libraries): the peers scenarios and benchmarks compare against.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result, Testbed};

/// The static libraries of Debian's `libxen-dev`.
pub const LIBXEN_DIR: &str = "/usr/lib/x86_64-linux-gnu";

/// A C program to build.
#[derive(Debug, Clone, Copy)]
pub struct CProgram {
    /// The source, relative to the workspace.
    pub source: &'static str,
    /// The `libxen-dev` header it needs (checked first, for a clear error).
    pub header: &'static str,
    /// The binary's name, also its name in the dom0's `/bin`.
    pub name: &'static str,
    /// Linker arguments: libraries and wrappers.
    pub link: &'static [&'static str],
}

/// The libxenvchan peer of `xen-dom0-tests vchan` (`tests/dom0/libxenvchan_peer.c`).
pub const LIBXENVCHAN_PEER: CProgram = CProgram {
    source: "tests/dom0/libxenvchan_peer.c",
    header: "libxenvchan.h",
    name: "libxenvchan-peer",
    link: &[
        "-lxenvchan",
        "-lxengnttab",
        "-lxenevtchn",
        "-lxenstore",
        "-lxentoolcore",
        "-lxentoollog",
        "-lpthread",
    ],
};

/// Compiles `program` into `<target>/testbed/bench/` and returns the binary's path.
pub fn build(testbed: &Testbed, program: &CProgram) -> Result<PathBuf> {
    let header = Path::new("/usr/include").join(program.header);
    if !header.exists() || !Path::new(LIBXEN_DIR).join("libxentoolcore.a").exists() {
        return Err(Error::new(format!(
            "{} or the static libraries are missing: install Debian's libxen-dev (`apt-get install libxen-dev`)",
            header.display()
        )));
    }
    let out_dir = testbed.logs_dir().with_file_name("bench");
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| Error::new(format!("{}: {e}", out_dir.display())))?;
    let out = out_dir.join(program.name);
    let mut cc = Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()));
    cc.args(["-O2", "-Wall", "-Wextra", "-Werror", "-static", "-o"])
        .arg(&out)
        .arg(testbed.workspace.join(program.source))
        .arg(format!("-L{LIBXEN_DIR}"))
        .args(program.link);
    crate::command_output(&mut cc)?;
    Ok(out)
}
