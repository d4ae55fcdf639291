//! Why boot information was refused.

/// Boot information that cannot be trusted or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BootInfoError {
    /// The structure does not start with the magic value its protocol defines: the pointer is
    /// not the one Xen passed, or the guest was started another way.
    #[error("bad magic: not Xen's {protocol}")]
    BadMagic {
        /// The structure looked for (`start_info`, `hvm_start_info`).
        protocol: &'static str,
    },
    /// A version of the structure this crate does not know.
    #[error("{protocol} version {version} is newer than this crate knows")]
    UnsupportedVersion {
        /// The structure.
        protocol: &'static str,
        /// Its version field.
        version: u32,
    },
    /// A physical address the structure names cannot be read (outside what the caller's
    /// memory covers, or wrapping around).
    #[error("cannot read {len} bytes at physical address {paddr:#x}")]
    Unreadable {
        /// The address.
        paddr: u64,
        /// The length.
        len: usize,
    },
    /// A string without its NUL terminator within its bound.
    #[error("string at {paddr:#x} has no NUL within {max} bytes")]
    Unterminated {
        /// Where it starts.
        paddr: u64,
        /// The bound.
        max: usize,
    },
    /// The device tree has no `xen,xen` node, or the node lacks what Xen always puts there.
    #[error("device tree: {0}")]
    DeviceTree(&'static str),
}
