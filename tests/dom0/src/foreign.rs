//! Foreign memory through privcmd in a dom0: `IOCTL_PRIVCMD_MMAPBATCH_V2` with a bad frame
//! among good ones, and `RESTRICT` on the handle's own fd.

use xen_ctrl::XenCtrl;
use xen_hypercall::{DomId, Errno, Error};
use xen_hypercall_privcmd::{Privcmd, ResourceType};

type Case = crate::Case;

pub(crate) const CASES: &[Case] = &[
    ("foreign_batch_types_each_page", batch_types_each_page),
    (
        "foreign_restricted_handle_refuses_others",
        restricted_handle_refuses_others,
    ),
];

/// A frame no domain owns: the highest 40-bit frame, above the physical address width of the
/// testbed's CPUs, so neither RAM nor I/O memory dom0 may map (Xen's PV `get_page_from_l1e`
/// refuses it; Linux passes it unchanged in the PTE).
const BAD_FRAME: u64 = (1 << 40) - 1;

/// Dom0 maps its own shared info frame (as `getdomaininfo` reports it) twice, with a frame that
/// does not exist between the two, naming itself `DOMID_SELF` (x86's `get_pg_owner` refuses a
/// domain naming itself by id as the foreign owner: `ESRCH`): the error array holds one entry per page, the bad page is
/// typed and left unmapped, the good ones are mapped.
///
/// x86_64 (a PV dom0, frames are machine frames): pages 0 and 2 show the same shared info
/// (`arch.max_pfn`, which Linux sets at boot, is equal and non-zero). aarch64: Xen refuses a
/// domain mapping its own pages, so every page carries its own error: `EINVAL` on Xen 4.17 with
/// Linux 6.1 (`od == d`, xen/arch/arm/mm.c `xenmem_add_to_physmap_one`), `ESRCH` on Xen 4.20
/// with Linux 6.12 (as the testbed sees it).
fn batch_types_each_page(privcmd: &Privcmd) -> Result<(), String> {
    let ctrl = XenCtrl::new(Privcmd::open().map_err(|e| e.to_string())?);
    let frame = ctrl
        .domain_info(DomId(0))
        .map_err(|e| format!("getdomaininfo 0: {e}"))?
        .shared_info_frame;
    let mapping = privcmd
        .map_foreign(DomId::SELF, &[frame, BAD_FRAME, frame])
        .map_err(|e| format!("MMAPBATCH_V2 of [{frame:#x}, {BAD_FRAME:#x}, {frame:#x}]: {e}"))?;
    let errors = mapping.errors().to_vec();
    if mapping.pages() != 3 || errors.len() != 3 {
        return Err(format!("{} pages, errors {errors:?}", mapping.pages()));
    }
    if mapping.all().is_some() {
        return Err(format!("a view of the whole mapping despite {errors:?}"));
    }
    if cfg!(target_arch = "aarch64") {
        return match errors.as_slice() {
            [
                Some(first @ (Errno::EINVAL | Errno::ESRCH)),
                Some(_),
                Some(last),
            ] if first == last => Ok(()),
            other => Err(format!(
                "aarch64 self-mapping: expected EINVAL or ESRCH per page, got {other:?}"
            )),
        };
    }
    match errors.as_slice() {
        [None, Some(_), None] => {}
        other => return Err(format!("expected [mapped, error, mapped], got {other:?}")),
    }
    let max_pfn = |index: usize| -> Result<u64, String> {
        let page = mapping
            .page(index)
            .map_err(|e| format!("page {index}: {e}"))?;
        let mut bytes = [0u8; 8];
        // `arch_shared_info.max_pfn`: the first field of `arch` (xen-sys layouts).
        let offset = core::mem::offset_of!(xen_sys::x86_64::shared_info, arch)
            + core::mem::offset_of!(xen_sys::x86_64::arch_shared_info, max_pfn);
        page.read(offset, &mut bytes).map_err(|e| e.to_string())?;
        Ok(u64::from_ne_bytes(bytes))
    };
    let (first, last) = (max_pfn(0)?, max_pfn(2)?);
    if first == 0 || first != last {
        return Err(format!(
            "max_pfn through page 0: {first:#x}, page 2: {last:#x}"
        ));
    }
    if mapping.page(1).err().is_none() || mapping.page(3).err() != Some(Errno::EINVAL) {
        return Err("a view of the bad page, or of one past the end".into());
    }
    Ok(())
}

/// A handle restricted to one domain is refused (EPERM in privcmd, before anything is mapped)
/// for another, for both mapping ioctls.
fn restricted_handle_refuses_others(_: &Privcmd) -> Result<(), String> {
    let restricted = Privcmd::open().map_err(|e| e.to_string())?;
    let only = DomId(0x7000);
    restricted
        .restrict(only)
        .map_err(|e| format!("restrict: {e}"))?;
    let refused = Error::Restricted { domid: only.0 };
    match restricted.map_foreign(DomId(0), &[0]) {
        Err(e) if e == refused => {}
        other => {
            return Err(format!(
                "MMAPBATCH_V2 for dom0: {:?}",
                other.map(|m| m.errors().to_vec())
            ));
        }
    }
    match restricted.resource_size(DomId(0), ResourceType::GRANT_TABLE, 0) {
        Err(e) if e == refused => Ok(()),
        other => Err(format!("MMAP_RESOURCE size for dom0: {other:?}")),
    }
}
