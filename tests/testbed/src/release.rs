//! The Debian release a testbed boots: which Xen and Linux, and the names its packages and files
//! carry. A release is data: adding one is adding a constant.

use crate::Arch;

/// A Debian release's Xen and Linux.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// The Debian release (e.g. 12).
    pub debian: u32,
    /// Xen's `major.minor`, as in package names (`xen-hypervisor-4.17-amd64`).
    pub xen: &'static str,
    /// Linux's `major.minor`, the prefix of the kernel package `linux-image-amd64` depends on.
    pub linux: &'static str,
}

/// Debian 12 (bookworm): Xen 4.17, Linux 6.1.
pub const DEBIAN_12: Release = Release {
    debian: 12,
    xen: "4.17",
    linux: "6.1",
};

impl Release {
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
    }
}
