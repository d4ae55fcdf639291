//! `xen_version`: which Xen this is and how it was built (`public/version.h`).

use core::fmt;
use core::mem::{offset_of, size_of};

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::XenHypercall;
use crate::call::{with_inout, without_arg};

/// Xen's version, from `XENVER_version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version {
    /// The major version (`4` in 4.17).
    pub major: u16,
    /// The minor version (`17` in 4.17).
    pub minor: u16,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A string Xen wrote into a fixed-size `char` array, owned, with no allocator.
///
/// It ends at the first NUL byte, or at the end of the array if there is none.
/// Xen writes bytes, not necessarily UTF-8: [`to_str`](Self::to_str) checks,
/// `Display` replaces invalid sequences with `U+FFFD`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct XenString<const N: usize> {
    bytes: [u8; N],
}

impl<const N: usize> XenString<N> {
    /// The size of the C array, terminating NUL included.
    pub const CAPACITY: usize = N;

    /// Copies the first `N` bytes of `raw` (the bytes of a `char[N]` array).
    pub(crate) fn from_raw(raw: &[u8]) -> Self {
        let mut bytes = [0; N];
        let len = raw.len().min(N);
        bytes[..len].copy_from_slice(&raw[..len]);
        Self { bytes }
    }

    /// The bytes up to the first NUL.
    pub fn as_bytes(&self) -> &[u8] {
        let len = self.bytes.iter().position(|&b| b == 0).unwrap_or(N);
        &self.bytes[..len]
    }

    /// The string, if it is UTF-8.
    ///
    /// # Errors
    ///
    /// [`Utf8Error`](core::str::Utf8Error) if the bytes are not UTF-8.
    pub fn to_str(&self) -> Result<&str, core::str::Utf8Error> {
        core::str::from_utf8(self.as_bytes())
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.first().is_none_or(|&b| b == 0)
    }
}

impl<const N: usize> Default for XenString<N> {
    fn default() -> Self {
        Self { bytes: [0; N] }
    }
}

impl<const N: usize> fmt::Display for XenString<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.as_bytes().utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_str("\u{FFFD}")?;
            }
        }
        Ok(())
    }
}

impl<const N: usize> fmt::Debug for XenString<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.as_bytes().escape_ascii())
    }
}

impl<const N: usize> PartialEq<str> for XenString<N> {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<const N: usize> PartialEq<&str> for XenString<N> {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

/// `XENVER_extraversion`: the version's suffix, e.g. `".2"` or `"-unstable"`.
pub type Extraversion = XenString<{ size_of::<xen_sys::xen_extraversion_t>() }>;
/// `XENVER_capabilities`: the guest ABIs Xen runs, e.g. `"xen-3.0-x86_64 hvm-3.0-x86_64"`.
pub type Capabilities = XenString<{ size_of::<xen_sys::xen_capabilities_info_t>() }>;
/// `XENVER_changeset`: the source revision Xen was built from.
pub type Changeset = XenString<{ size_of::<xen_sys::xen_changeset_info_t>() }>;
/// `XENVER_commandline`: Xen's own command line.
pub type Commandline = XenString<{ size_of::<xen_sys::xen_commandline_t>() }>;

/// `XENVER_compile_info`: who built Xen, where, when and with what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct CompileInfo {
    /// The compiler, e.g. `"gcc (Debian 12.2.0-14) 12.2.0"`.
    pub compiler: XenString<64>,
    /// The user who built it.
    pub compile_by: XenString<16>,
    /// The build host's domain.
    pub compile_domain: XenString<32>,
    /// The build date.
    pub compile_date: XenString<32>,
}

bitflags::bitflags! {
    /// The features Xen offers a domain (`XENFEAT_*` of `public/features.h`, submap 0), from
    /// [`VersionOps::feature_flags`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Features: u32 {
        /// `XENFEAT_writable_page_tables`.
        const WRITABLE_PAGE_TABLES = 1 << xen_sys::XENFEAT_writable_page_tables;
        /// `XENFEAT_writable_descriptor_tables`.
        const WRITABLE_DESCRIPTOR_TABLES = 1 << xen_sys::XENFEAT_writable_descriptor_tables;
        /// `XENFEAT_auto_translated_physmap`: Xen translates this guest's frames (HVM, PVH, Arm).
        const AUTO_TRANSLATED_PHYSMAP = 1 << xen_sys::XENFEAT_auto_translated_physmap;
        /// `XENFEAT_supervisor_mode_kernel`.
        const SUPERVISOR_MODE_KERNEL = 1 << xen_sys::XENFEAT_supervisor_mode_kernel;
        /// `XENFEAT_pae_pgdir_above_4gb`.
        const PAE_PGDIR_ABOVE_4GB = 1 << xen_sys::XENFEAT_pae_pgdir_above_4gb;
        /// `XENFEAT_mmu_pt_update_preserve_ad`.
        const MMU_PT_UPDATE_PRESERVE_AD = 1 << xen_sys::XENFEAT_mmu_pt_update_preserve_ad;
        /// `XENFEAT_highmem_assist`.
        const HIGHMEM_ASSIST = 1 << xen_sys::XENFEAT_highmem_assist;
        /// `XENFEAT_gnttab_map_avail_bits`.
        const GNTTAB_MAP_AVAIL_BITS = 1 << xen_sys::XENFEAT_gnttab_map_avail_bits;
        /// `XENFEAT_hvm_callback_vector`: events may arrive on an interrupt vector.
        const HVM_CALLBACK_VECTOR = 1 << xen_sys::XENFEAT_hvm_callback_vector;
        /// `XENFEAT_hvm_safe_pvclock`.
        const HVM_SAFE_PVCLOCK = 1 << xen_sys::XENFEAT_hvm_safe_pvclock;
        /// `XENFEAT_hvm_pirqs`.
        const HVM_PIRQS = 1 << xen_sys::XENFEAT_hvm_pirqs;
        /// `XENFEAT_dom0`: this is the hardware domain.
        const DOM0 = 1 << xen_sys::XENFEAT_dom0;
        /// `XENFEAT_memory_op_vnode_supported`.
        const MEMORY_OP_VNODE_SUPPORTED = 1 << xen_sys::XENFEAT_memory_op_vnode_supported;
        /// `XENFEAT_ARM_SMCCC_supported`.
        const ARM_SMCCC_SUPPORTED = 1 << xen_sys::XENFEAT_ARM_SMCCC_supported;
        /// `XENFEAT_linux_rsdp_unrestricted`.
        const LINUX_RSDP_UNRESTRICTED = 1 << xen_sys::XENFEAT_linux_rsdp_unrestricted;
        /// `XENFEAT_not_direct_mapped`.
        const NOT_DIRECT_MAPPED = 1 << xen_sys::XENFEAT_not_direct_mapped;
        /// `XENFEAT_direct_mapped`.
        const DIRECT_MAPPED = 1 << xen_sys::XENFEAT_direct_mapped;
    }
}

/// `XENVER_platform_parameters`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PlatformParameters {
    /// The lowest virtual address Xen reserves for itself in a PV guest's
    /// address space (`virt_start`).
    pub virt_start: u64,
}

/// `XENVER_guest_handle`: the 16-byte handle (usually a UUID) the toolstack
/// gave this domain (`xen_domain_handle_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DomainHandle(pub [u8; size_of::<xen_sys::xen_domain_handle_t>()]);

/// The most bytes of build id [`VersionOps::build_id`] accepts. GNU build ids
/// are 20 bytes (SHA-1) and Xen is linked with `--build-id=sha1`.
pub const BUILD_ID_CAPACITY: usize = 64;

/// `XENVER_build_id`: the GNU build id of the running Xen binary.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BuildId {
    len: usize,
    bytes: [u8; BUILD_ID_CAPACITY],
}

impl BuildId {
    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Display for BuildId {
    /// Lowercase hex, as `readelf -n` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_bytes()
            .iter()
            .try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BuildId({self})")
    }
}

/// `xen_build_id_t` with room for [`BUILD_ID_CAPACITY`] bytes in its flexible
/// `buf[]` member.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
struct BuildIdArg {
    len: u32,
    buf: [u8; BUILD_ID_CAPACITY],
}

const _: () = {
    assert!(offset_of!(BuildIdArg, len) == offset_of!(xen_sys::xen_build_id, len));
    assert!(offset_of!(BuildIdArg, buf) == offset_of!(xen_sys::xen_build_id, buf));
    assert!(size_of::<xen_sys::xen_build_id>() == offset_of!(BuildIdArg, buf));
};

/// Issues `xen_version(cmd, &mut arg)`.
///
/// # Safety
///
/// `T` is the structure `public/version.h` names for `cmd`, which Xen reads
/// and/or writes and which holds no pointer.
unsafe fn version_op<H, T>(h: &H, cmd: u32, arg: &mut T) -> Result<usize, H::Error>
where
    H: XenHypercall + ?Sized,
    T: FromBytes + IntoBytes,
{
    // SAFETY: `xen_version(int cmd, void *arg)` (public/version.h); the caller
    // guarantees that `T` is `cmd`'s argument and holds no pointer, so Xen
    // accesses only `size_of::<T>()` bytes at `arg`.
    unsafe { with_inout(h, xen_sys::__HYPERVISOR_xen_version, cmd, arg) }
}

/// Reads a `char[N]` sub-op into an owned string.
fn version_string<H, A, const N: usize>(h: &H, cmd: u32) -> Result<XenString<N>, H::Error>
where
    H: XenHypercall + ?Sized,
    A: FromBytes + IntoBytes + Immutable,
{
    let mut raw = A::new_zeroed();
    // SAFETY: every caller passes a `XENVER_*` string sub-op and its array type
    // `A` from version.h (`xen_extraversion_t`, ...): Xen writes at most
    // `sizeof(A)` bytes (`copy_to_guest(arg, str, ARRAY_SIZE(A))`; fewer for a
    // command line XSM denies) and reads nothing.
    unsafe { version_op(h, cmd, &mut raw)? };
    Ok(XenString::from_raw(raw.as_bytes()))
}

/// `xen_version` sub-ops, on every [`XenHypercall`] backend.
///
/// Xen may refuse the informational sub-ops with `EPERM` when XSM (e.g.
/// FLASK's `version` class) denies them to the caller.
pub trait VersionOps: XenHypercall {
    /// `XENVER_version`: Xen's major and minor version.
    fn xen_version(&self) -> Result<Version, Self::Error> {
        // SAFETY: XENVER_version takes no argument (version.h: "arg == NULL;
        // returns major:minor (16:16)").
        let raw = unsafe {
            without_arg(
                self,
                xen_sys::__HYPERVISOR_xen_version,
                xen_sys::XENVER_version,
            )?
        };
        Ok(Version {
            major: (raw >> 16) as u16,
            minor: raw as u16,
        })
    }

    /// `XENVER_extraversion`: the version's suffix.
    fn extraversion(&self) -> Result<Extraversion, Self::Error> {
        version_string::<_, xen_sys::xen_extraversion_t, _>(self, xen_sys::XENVER_extraversion)
    }

    /// `XENVER_compile_info`: how Xen was built.
    fn compile_info(&self) -> Result<CompileInfo, Self::Error> {
        let mut raw = xen_sys::xen_compile_info::new_zeroed();
        // SAFETY: XENVER_compile_info's argument is an OUT `xen_compile_info_t`
        // (version.h), four char arrays: no pointer.
        unsafe { version_op(self, xen_sys::XENVER_compile_info, &mut raw)? };
        Ok(CompileInfo {
            compiler: XenString::from_raw(raw.compiler.as_bytes()),
            compile_by: XenString::from_raw(raw.compile_by.as_bytes()),
            compile_domain: XenString::from_raw(raw.compile_domain.as_bytes()),
            compile_date: XenString::from_raw(raw.compile_date.as_bytes()),
        })
    }

    /// `XENVER_capabilities`: the guest ABIs this Xen runs.
    fn capabilities(&self) -> Result<Capabilities, Self::Error> {
        version_string::<_, xen_sys::xen_capabilities_info_t, _>(self, xen_sys::XENVER_capabilities)
    }

    /// `XENVER_changeset`: the source revision Xen was built from.
    fn changeset(&self) -> Result<Changeset, Self::Error> {
        version_string::<_, xen_sys::xen_changeset_info_t, _>(self, xen_sys::XENVER_changeset)
    }

    /// `XENVER_commandline`: Xen's command line.
    fn commandline(&self) -> Result<Commandline, Self::Error> {
        version_string::<_, xen_sys::xen_commandline_t, _>(self, xen_sys::XENVER_commandline)
    }

    /// `XENVER_platform_parameters`: where Xen's reserved virtual range starts.
    fn platform_parameters(&self) -> Result<PlatformParameters, Self::Error> {
        let mut raw = xen_sys::xen_platform_parameters::new_zeroed();
        // SAFETY: XENVER_platform_parameters' argument is an OUT
        // `xen_platform_parameters_t` (version.h): one `xen_ulong_t`, no pointer.
        unsafe { version_op(self, xen_sys::XENVER_platform_parameters, &mut raw)? };
        Ok(PlatformParameters {
            virt_start: raw.virt_start,
        })
    }

    /// `XENVER_get_features`: the features Xen offers this domain (submap 0, the only one
    /// Xen 4.17 has). Bits this crate does not name are kept.
    fn feature_flags(&self) -> Result<Features, Self::Error> {
        self.features(0).map(Features::from_bits_retain)
    }

    /// `XENVER_get_features`: the 32 raw feature bits (`XENFEAT_*`, public/features.h) of
    /// submap `submap`, bit `n` being feature `32 * submap + n` ([`feature_flags`] names
    /// submap 0's).
    ///
    /// [`feature_flags`]: Self::feature_flags
    fn features(&self, submap: u32) -> Result<u32, Self::Error> {
        let mut raw = xen_sys::xen_feature_info::new_zeroed();
        raw.submap_idx = submap;
        // SAFETY: XENVER_get_features' argument is a `xen_feature_info_t`
        // (version.h): IN `submap_idx`, OUT `submap`; no pointer.
        unsafe { version_op(self, xen_sys::XENVER_get_features, &mut raw)? };
        Ok(raw.submap)
    }

    /// `XENVER_pagesize`: the page size Xen uses, in bytes.
    fn pagesize(&self) -> Result<usize, Self::Error> {
        // SAFETY: XENVER_pagesize takes no argument (version.h: "arg == NULL;
        // returns page size").
        unsafe {
            without_arg(
                self,
                xen_sys::__HYPERVISOR_xen_version,
                xen_sys::XENVER_pagesize,
            )
        }
    }

    /// `XENVER_guest_handle`: the handle the toolstack gave this domain.
    fn guest_handle(&self) -> Result<DomainHandle, Self::Error> {
        let mut raw = xen_sys::xen_domain_handle_t::new_zeroed();
        // SAFETY: XENVER_guest_handle's argument is an OUT `xen_domain_handle_t`
        // (version.h), a byte array: Xen writes exactly its 16 bytes.
        unsafe { version_op(self, xen_sys::XENVER_guest_handle, &mut raw)? };
        Ok(DomainHandle(raw))
    }

    /// `XENVER_build_id`: the GNU build id of the running Xen.
    ///
    /// Fails with `XEN_ENOBUFS` if the id is longer than [`BUILD_ID_CAPACITY`]
    /// bytes, and with `XEN_ENODATA` if Xen was built without one.
    fn build_id(&self) -> Result<BuildId, Self::Error> {
        let mut raw = BuildIdArg::new_zeroed();
        raw.len = BUILD_ID_CAPACITY as u32;
        // SAFETY: XENVER_build_id's argument is a `xen_build_id_t` (version.h):
        // IN `len`, the size of the flexible `buf[]` that follows; OUT `buf[]`.
        // `BuildIdArg` is that header (offsets asserted above) followed by
        // `len` bytes, so Xen writes at most `size_of::<BuildIdArg>()` bytes.
        let len = unsafe { version_op(self, xen_sys::XENVER_build_id, &mut raw)? };
        let len = len.min(BUILD_ID_CAPACITY);
        let mut bytes = [0; BUILD_ID_CAPACITY];
        bytes[..len].copy_from_slice(&raw.buf[..len]);
        Ok(BuildId { len, bytes })
    }
}

impl<H: XenHypercall + ?Sized> VersionOps for H {}
