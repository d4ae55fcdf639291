//! Detecting Xen from the x86 CPUID leaves (`public/arch-x86/cpuid.h`).
//!
//! The decoding is plain data and builds on every target (and is tested on the
//! host); reading the real CPUID is x86_64 only.

/// The first leaf Xen may use; Xen's leaves start at this or a higher multiple of
/// `0x100` (higher when it also presents Viridian leaves), up to `+0x10000`.
const FIRST_LEAF: u32 = 0x4000_0000;
const LAST_BASE: u32 = 0x4001_0000;
/// "XenVMMXenVMM" in EBX, ECX, EDX of the base leaf (`XEN_CPUID_SIGNATURE_*`).
const SIGNATURE: [u32; 3] = [0x566e_6558, 0x6558_4d4d, 0x4d4d_566e];
/// `XEN_HVM_CPUID_VCPU_ID_PRESENT` in EAX of leaf 5 (base + 4): Xen sets it for
/// every HVM/PVH vCPU and reports leaf 5 as all zeros to PV guests.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const HVM_VCPU_ID_PRESENT: u32 = 1 << 3;

/// The CPU vendor from CPUID leaf 0, which decides the HVM hypercall instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CpuVendor {
    /// "GenuineIntel": VMX, `vmcall`.
    Intel,
    /// "AuthenticAMD": SVM, `vmmcall`.
    Amd,
    /// "HygonGenuine": SVM, `vmmcall`.
    Hygon,
    /// Any other vendor (VMX-based, `vmcall`, as Linux assumes).
    Other,
}

impl CpuVendor {
    /// Decodes the vendor string of CPUID leaf 0 (EBX, EDX, ECX in that order of bytes).
    pub const fn from_leaf0(ebx: u32, edx: u32, ecx: u32) -> Self {
        match (ebx, edx, ecx) {
            (0x756e_6547, 0x4965_6e69, 0x6c65_746e) => Self::Intel,
            (0x6874_7541, 0x6974_6e65, 0x444d_4163) => Self::Amd,
            (0x6f67_7948, 0x6e65_476e, 0x656e_6975) => Self::Hygon,
            _ => Self::Other,
        }
    }

    /// Whether this vendor's hardware virtualization is SVM (`vmmcall`) rather than VMX (`vmcall`).
    pub const fn uses_vmmcall(self) -> bool {
        matches!(self, Self::Amd | Self::Hygon)
    }
}

/// Xen's version as CPUID leaf 2 (base + 1) reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct XenVersion {
    /// Major version, e.g. 4.
    pub major: u16,
    /// Minor version, e.g. 17.
    pub minor: u16,
}

impl XenVersion {
    /// Decodes `(major << 16) | minor`, the encoding of CPUID and of `XENVER_version`.
    pub const fn from_raw(raw: u32) -> Self {
        Self {
            major: (raw >> 16) as u16,
            minor: raw as u16,
        }
    }
}

impl core::fmt::Display for XenVersion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Xen's CPUID leaves, found by [`XenCpuid::scan`] (or `XenCpuid::detect` on x86_64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct XenCpuid {
    base: u32,
    max_leaf: u32,
}

impl XenCpuid {
    /// Finds Xen's leaves with `cpuid(leaf, subleaf) -> [eax, ebx, ecx, edx]`.
    ///
    /// Returns `None` when no base in `0x4000_0000..=0x4001_0000` (step `0x100`)
    /// carries the "XenVMMXenVMM" signature with at least leaves base..=base+2.
    pub fn scan(mut cpuid: impl FnMut(u32, u32) -> [u32; 4]) -> Option<Self> {
        (FIRST_LEAF..=LAST_BASE).step_by(0x100).find_map(|base| {
            let [eax, ebx, ecx, edx] = cpuid(base, 0);
            ([ebx, ecx, edx] == SIGNATURE && eax >= base + 2).then_some(Self {
                base,
                max_leaf: eax,
            })
        })
    }

    /// The base leaf (`0x4000_0000`, or higher next to Viridian leaves).
    pub const fn base(&self) -> u32 {
        self.base
    }

    /// The largest Xen leaf the hypervisor supports.
    pub const fn max_leaf(&self) -> u32 {
        self.max_leaf
    }

    /// The leaf `base + index`, if the hypervisor has it.
    pub const fn leaf(&self, index: u32) -> Option<u32> {
        let leaf = self.base + index;
        if leaf <= self.max_leaf {
            Some(leaf)
        } else {
            None
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod native {
    use super::{CpuVendor, HVM_VCPU_ID_PRESENT, XenCpuid, XenVersion};

    fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
        let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    }

    impl CpuVendor {
        /// This CPU's vendor.
        pub fn current() -> Self {
            let [_, ebx, ecx, edx] = cpuid(0, 0);
            Self::from_leaf0(ebx, edx, ecx)
        }
    }

    impl XenCpuid {
        /// Finds Xen's CPUID leaves on this CPU: `None` when not running on Xen.
        ///
        /// A PV guest sees them only when Xen intercepts CPUID (CPUID faulting);
        /// an HVM or PVH guest always does.
        pub fn detect() -> Option<Self> {
            Self::scan(cpuid)
        }

        /// Xen's version (leaf base + 1).
        pub fn version(&self) -> XenVersion {
            XenVersion::from_raw(cpuid(self.base + 1, 0)[0])
        }

        /// The hypercall page MSR and page count (leaf base + 2: EBX, EAX).
        pub fn hypercall_page_msr(&self) -> (u32, u32) {
            let [eax, ebx, _, _] = cpuid(self.base + 2, 0);
            (ebx, eax)
        }

        /// Whether this vCPU belongs to an HVM or PVH guest (leaf base + 4 has
        /// `XEN_HVM_CPUID_VCPU_ID_PRESENT`); `false` in a PV guest.
        pub fn is_hvm(&self) -> bool {
            self.leaf(4)
                .is_some_and(|leaf| cpuid(leaf, 0)[0] & HVM_VCPU_ID_PRESENT != 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_xen(base: u32) -> impl FnMut(u32, u32) -> [u32; 4] {
        move |leaf, _| {
            if leaf == base {
                [base + 5, SIGNATURE[0], SIGNATURE[1], SIGNATURE[2]]
            } else if leaf == 0x4000_0000 {
                // Viridian ("Microsoft Hv") in front of Xen.
                [0x4000_0006, 0x7263_694d, 0x666f_736f, 0x7648_2074]
            } else {
                [0; 4]
            }
        }
    }

    #[test]
    fn finds_xen_at_base_and_behind_viridian() {
        let xen = XenCpuid::scan(fake_xen(0x4000_0000)).unwrap();
        assert_eq!((xen.base(), xen.max_leaf()), (0x4000_0000, 0x4000_0005));
        let xen = XenCpuid::scan(fake_xen(0x4000_0100)).unwrap();
        assert_eq!(xen.base(), 0x4000_0100);
        assert_eq!(xen.leaf(4), Some(0x4000_0104));
        assert_eq!(xen.leaf(6), None);
    }

    #[test]
    fn no_signature_no_xen() {
        assert_eq!(XenCpuid::scan(|_, _| [0x4000_0001, 1, 2, 3]), None);
        // A signature without the mandatory leaves base+1 and base+2 is rejected.
        let short = |leaf, _| {
            if leaf == FIRST_LEAF {
                [FIRST_LEAF + 1, SIGNATURE[0], SIGNATURE[1], SIGNATURE[2]]
            } else {
                [0; 4]
            }
        };
        assert_eq!(XenCpuid::scan(short), None);
    }

    #[test]
    fn decodes_vendor_and_version() {
        // "GenuineIntel", "AuthenticAMD", "HygonGenuine" as EBX, EDX, ECX.
        assert_eq!(
            CpuVendor::from_leaf0(0x756e_6547, 0x4965_6e69, 0x6c65_746e),
            CpuVendor::Intel
        );
        assert!(CpuVendor::from_leaf0(0x6874_7541, 0x6974_6e65, 0x444d_4163).uses_vmmcall());
        assert!(CpuVendor::from_leaf0(0x6f67_7948, 0x6e65_476e, 0x656e_6975).uses_vmmcall());
        assert!(!CpuVendor::from_leaf0(1, 2, 3).uses_vmmcall());
        let v = XenVersion::from_raw(0x0004_0011);
        assert_eq!((v.major, v.minor), (4, 17));
    }
}
