//! The Debian releases a testbed boots: which Xen and Linux, where their packages come from, and the
//! names their packages and files carry. A release is data: adding one is adding a constant to
//! [`RELEASES`].

use std::path::Path;

use crate::apt::Apt;
use crate::{Arch, Error, Result};

/// A Debian release's Xen and Linux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Release {
    /// Xen's `major.minor`, as in package names (`xen-hypervisor-4.17-amd64`); also the release's
    /// name in scenario names (`pv64@4.17`) and `--release`.
    pub xen: &'static str,
    /// The Debian release (e.g. 12).
    pub debian: u32,
    /// The Debian suite (e.g. `bookworm`).
    pub suite: &'static str,
    /// Linux's `major.minor`, the prefix of the kernel package `linux-image-amd64` depends on.
    pub linux: &'static str,
    /// Whether the machine's own apt serves it (the machine runs this release); otherwise a
    /// private apt configuration under the target directory does ([`Apt::private`]).
    pub host_apt: bool,
    /// Whether its packages ship `/bin` and `/lib` under `/usr` (merged `/usr`).
    pub merged_usr: bool,
}

/// Debian 12 (bookworm): Xen 4.17, Linux 6.1. The machine's own release.
pub const DEBIAN_12: Release = Release {
    xen: "4.17",
    debian: 12,
    suite: "bookworm",
    linux: "6.1",
    host_apt: true,
    merged_usr: false,
};

/// Debian 13 (trixie): Xen 4.20, Linux 6.12.
pub const DEBIAN_13: Release = Release {
    xen: "4.20",
    debian: 13,
    suite: "trixie",
    linux: "6.12",
    host_apt: false,
    merged_usr: true,
};

/// Every release the testbed knows, oldest first. The first is the default of
/// `cargo xtask testbed run` and the one every scenario runs on.
pub const RELEASES: &[Release] = &[DEBIAN_12, DEBIAN_13];

/// The release whose Xen is `xen` (`4.17`), or an error naming the known ones.
pub fn by_xen(xen: &str) -> Result<Release> {
    RELEASES
        .iter()
        .find(|r| r.xen == xen)
        .copied()
        .ok_or_else(|| {
            let known: Vec<&str> = RELEASES.iter().map(|r| r.xen).collect();
            Error::new(format!(
                "unknown release `{xen}` (known: {})",
                known.join(", ")
            ))
        })
}

impl Release {
    /// The apt configuration its packages come from; a private one lives under `apt_dir`.
    pub fn apt(&self, apt_dir: &Path) -> Result<Apt> {
        if self.host_apt {
            Ok(Apt::host())
        } else {
            Apt::private(apt_dir, self.suite)
        }
    }

    /// `Xen 4.20 / Linux 6.12 (Debian 13)`.
    pub fn describe(&self) -> String {
        format!(
            "Xen {} / Linux {} (Debian {})",
            self.xen, self.linux, self.debian
        )
    }

    /// The hypervisor package of `arch`.
    pub fn hypervisor_package(&self, arch: Arch) -> String {
        format!("xen-hypervisor-{}-{}", self.xen, arch.debian())
    }

    /// The hypervisor inside its package (amd64: gzip'd).
    pub fn hypervisor_file(&self, arch: Arch) -> String {
        match arch {
            Arch::X86_64 => format!("boot/xen-{}-amd64.gz", self.xen),
            Arch::Aarch64 => format!("boot/xen-{}-arm64", self.xen),
        }
    }

    /// The start of the versioned kernel package's name (`linux-image-6.1.`).
    pub fn kernel_package_prefix(&self) -> String {
        format!("linux-image-{}.", self.linux)
    }

    /// Where the kernel package keeps its modules (`lib/modules` or `usr/lib/modules`).
    pub fn modules_dir(&self) -> &'static str {
        if self.merged_usr {
            "usr/lib/modules"
        } else {
            "lib/modules"
        }
    }

    /// Where `busybox-static` ships busybox (`bin/busybox` or `usr/bin/busybox`).
    pub fn busybox_file(&self) -> &'static str {
        if self.merged_usr {
            "usr/bin/busybox"
        } else {
            "bin/busybox"
        }
    }

    /// Where the toolstack's programs are (`usr/lib/xen-4.17/bin`).
    pub fn toolstack_bin_dir(&self) -> String {
        format!("usr/lib/xen-{}/bin", self.xen)
    }

    /// Fills `{xen}` in a package or path template.
    pub fn fill(&self, template: &str) -> String {
        template.replace("{xen}", self.xen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_debian_12() {
        assert_eq!(
            DEBIAN_12.hypervisor_package(Arch::X86_64),
            "xen-hypervisor-4.17-amd64"
        );
        assert_eq!(
            DEBIAN_12.hypervisor_file(Arch::Aarch64),
            "boot/xen-4.17-arm64"
        );
        assert_eq!(DEBIAN_12.kernel_package_prefix(), "linux-image-6.1.");
        assert_eq!(DEBIAN_12.toolstack_bin_dir(), "usr/lib/xen-4.17/bin");
        assert_eq!(DEBIAN_12.fill("libxenmisc{xen}"), "libxenmisc4.17");
        assert_eq!(DEBIAN_12.busybox_file(), "bin/busybox");
    }

    #[test]
    fn names_of_debian_13() {
        assert_eq!(
            DEBIAN_13.hypervisor_file(Arch::X86_64),
            "boot/xen-4.20-amd64.gz"
        );
        assert_eq!(DEBIAN_13.kernel_package_prefix(), "linux-image-6.12.");
        assert_eq!(DEBIAN_13.modules_dir(), "usr/lib/modules");
        assert_eq!(DEBIAN_13.busybox_file(), "usr/bin/busybox");
    }

    #[test]
    fn releases_are_found_by_their_xen() {
        assert_eq!(by_xen("4.20"), Ok(DEBIAN_13));
        assert_eq!(RELEASES[0], DEBIAN_12);
        let unknown = by_xen("4.99").unwrap_err().to_string();
        assert!(unknown.contains("4.17, 4.20"), "{unknown}");
    }
}
