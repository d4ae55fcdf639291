//! The PVH boot protocol: `hvm_start_info`, whose physical address the guest finds in `ebx` at
//! its 32-bit entry point (`public/arch-x86/hvm/start_info.h`), and the memory map, modules
//! and command line it points to.
//!
//! The structure names other structures by physical address, so [`HvmStartInfo`] reads
//! through [`PhysMemory`]: [`IdentityMapped`] over the range the guest's page tables map one to
//! one (all of memory at entry, with paging off), or the caller's own mapping. The header
//! is copied and checked once; each list is read entry by entry, bounds-checked by the memory.

use core::marker::PhantomData;
use core::ops::Range;

use xen_sys::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use crate::BootInfoError;

/// Emits the ELF note that makes an x86_64 kernel bootable as PVH: `XEN_ELFNOTE_PHYS32_ENTRY`
/// (`public/elfnote.h`), the 32-bit physical address where Xen or the domain builder enters it,
/// in protected mode with paging off and `ebx` the physical address of `hvm_start_info`.
///
/// `entry` names the entry point, an assembly symbol at a physical address below 4 GiB. The
/// note goes into section `.note.Xen`, which the kernel's linker script must keep and put in a
/// `PT_NOTE` segment (`.note.Xen : { KEEP(*(.note.Xen)) } :text :note`).
///
/// ```ignore
/// // A freestanding kernel (not a host program: the note holds a 32-bit absolute address).
/// xen_guest::pvh_elf_note!("pvh_start");
/// core::arch::global_asm!(".code32", "pvh_start:", /* ... */);
/// ```
#[macro_export]
macro_rules! pvh_elf_note {
    ($entry:literal) => {
        ::core::arch::global_asm!(
            ".pushsection .note.Xen, \"a\", @note",
            ".balign 4",
            // namesz, descsz, type (XEN_ELFNOTE_PHYS32_ENTRY)
            ".long 4",
            ".long 4",
            ".long 18",
            ".asciz \"Xen\"",
            ::core::concat!(".long ", $entry),
            ".popsection",
        );
    };
}

/// `hvm_start_info.magic` (`XEN_HVM_START_MAGIC_VALUE`, `"xEn3"` with the top bit of the last
/// byte set).
pub const MAGIC: u32 = xen_sys::XEN_HVM_START_MAGIC_VALUE;

/// The newest version this crate reads: 1 added the memory map.
pub const LATEST_VERSION: u32 = 1;

/// Reads the guest's physical memory.
pub trait PhysMemory {
    /// Fills `buf` from physical address `paddr`; [`BootInfoError::Unreadable`] if any byte of
    /// it is outside what this memory covers.
    fn read(&self, paddr: u64, buf: &mut [u8]) -> Result<(), BootInfoError>;
}

/// Physical memory mapped at the same virtual addresses, over a range: reads outside it are
/// [`BootInfoError::Unreadable`], never made.
#[derive(Debug)]
pub struct IdentityMapped {
    mapped: Range<u64>,
    // Not `Send`/`Sync` by accident: built only through `new`.
    _private: PhantomData<*const ()>,
}

impl IdentityMapped {
    /// Physical memory in `mapped`, read through an identity mapping.
    ///
    /// # Safety
    ///
    /// Every address in `mapped` must be mapped readable at the same virtual address for as
    /// long as this value is used, and not written meanwhile: at a PVH entry point, the range
    /// the entry code identity-maps, until the guest reuses the memory the domain builder
    /// filled.
    pub unsafe fn new(mapped: Range<u64>) -> Self {
        Self {
            mapped,
            _private: PhantomData,
        }
    }
}

impl PhysMemory for IdentityMapped {
    fn read(&self, paddr: u64, buf: &mut [u8]) -> Result<(), BootInfoError> {
        let unreadable = BootInfoError::Unreadable {
            paddr,
            len: buf.len(),
        };
        let end = paddr.checked_add(buf.len() as u64).ok_or(unreadable)?;
        let start = usize::try_from(paddr).map_err(|_| unreadable)?;
        if paddr == 0 || paddr < self.mapped.start || end > self.mapped.end {
            return Err(unreadable);
        }
        // SAFETY: the range lies in `mapped` (checked), which `new`'s caller guarantees is
        // mapped readable at these addresses and not written while read; it is not null. It
        // cannot overlap `buf`, a distinct live object the caller owns mutably.
        unsafe {
            core::ptr::copy_nonoverlapping(start as *const u8, buf.as_mut_ptr(), buf.len());
        }
        Ok(())
    }
}

/// What a memory map entry describes (`XEN_HVM_MEMMAP_TYPE_*`, the E820 types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryType {
    /// Usable RAM.
    Ram,
    /// Reserved.
    Reserved,
    /// ACPI tables, reclaimable once read.
    Acpi,
    /// ACPI non-volatile storage.
    Nvs,
    /// Unusable (bad memory).
    Unusable,
    /// Disabled.
    Disabled,
    /// Persistent memory.
    Pmem,
    /// A type this crate does not know.
    Other(u32),
}

impl From<u32> for MemoryType {
    fn from(raw: u32) -> Self {
        match raw {
            xen_sys::XEN_HVM_MEMMAP_TYPE_RAM => Self::Ram,
            xen_sys::XEN_HVM_MEMMAP_TYPE_RESERVED => Self::Reserved,
            xen_sys::XEN_HVM_MEMMAP_TYPE_ACPI => Self::Acpi,
            xen_sys::XEN_HVM_MEMMAP_TYPE_NVS => Self::Nvs,
            xen_sys::XEN_HVM_MEMMAP_TYPE_UNUSABLE => Self::Unusable,
            xen_sys::XEN_HVM_MEMMAP_TYPE_DISABLED => Self::Disabled,
            xen_sys::XEN_HVM_MEMMAP_TYPE_PMEM => Self::Pmem,
            other => Self::Other(other),
        }
    }
}

/// One range of the memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// Its first physical address.
    pub addr: u64,
    /// Its size in bytes.
    pub size: u64,
    /// What it is.
    pub kind: MemoryType,
}

/// One module (an initial ramdisk, say).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module {
    /// Its physical address.
    pub paddr: u64,
    /// Its size in bytes.
    pub size: u64,
    /// The physical address of its NUL-terminated command line, if it has one.
    pub cmdline_paddr: Option<u64>,
}

/// A checked `hvm_start_info`, reading what it points to through `M`.
#[derive(Debug)]
pub struct HvmStartInfo<M> {
    raw: hvm_start_info,
    memory: M,
}

impl<M: PhysMemory> HvmStartInfo<M> {
    /// Copies and checks the `hvm_start_info` at physical address `paddr`.
    ///
    /// # Errors
    ///
    /// [`BootInfoError::Unreadable`] if `memory` does not cover the structure,
    /// [`BootInfoError::BadMagic`] if it does not start with `XEN_HVM_START_MAGIC_VALUE`,
    /// [`BootInfoError::UnsupportedVersion`] for a version other than 0 or 1.
    pub fn read(memory: M, paddr: u64) -> Result<Self, BootInfoError> {
        let mut raw = hvm_start_info::new_zeroed();
        memory.read(paddr, raw.as_mut_bytes())?;
        if raw.magic != MAGIC {
            return Err(BootInfoError::BadMagic {
                protocol: "hvm_start_info",
            });
        }
        if raw.version > LATEST_VERSION {
            // A newer version only adds fields after those known (the header's rule), but it
            // may also change what a known one means: refuse rather than guess.
            return Err(BootInfoError::UnsupportedVersion {
                protocol: "hvm_start_info",
                version: raw.version,
            });
        }
        Ok(Self { raw, memory })
    }

    /// The structure as Xen laid it out.
    pub fn raw(&self) -> &hvm_start_info {
        &self.raw
    }

    /// Its version: 0, or 1 with a memory map.
    pub fn version(&self) -> u32 {
        self.raw.version
    }

    /// The physical address of the ACPI RSDP, if there is one (PVH domUs built without ACPI
    /// have none).
    pub fn rsdp(&self) -> Option<u64> {
        (self.raw.rsdp_paddr != 0).then_some(self.raw.rsdp_paddr)
    }

    /// The command line, copied into `buf` without its NUL; `None` if there is none.
    ///
    /// # Errors
    ///
    /// [`BootInfoError::Unterminated`] if no NUL comes within `buf.len() + 1` bytes,
    /// [`BootInfoError::Unreadable`] if the string lies outside `memory`.
    pub fn cmdline<'b>(&self, buf: &'b mut [u8]) -> Result<Option<&'b [u8]>, BootInfoError> {
        match self.raw.cmdline_paddr {
            0 => Ok(None),
            paddr => read_c_string(&self.memory, paddr, buf).map(Some),
        }
    }

    /// A module's command line, copied into `buf` as [`cmdline`](Self::cmdline) does.
    ///
    /// # Errors
    ///
    /// As for [`cmdline`](Self::cmdline), and [`BootInfoError::Unreadable`] if the module list
    /// cannot be read.
    pub fn module_cmdline<'b>(
        &self,
        module: &Module,
        buf: &'b mut [u8],
    ) -> Result<Option<&'b [u8]>, BootInfoError> {
        match module.cmdline_paddr {
            None => Ok(None),
            Some(paddr) => read_c_string(&self.memory, paddr, buf).map(Some),
        }
    }

    /// The modules, in order.
    ///
    /// # Errors
    ///
    /// An item is [`BootInfoError::Unreadable`] if its entry lies outside `memory`.
    pub fn modules(&self) -> impl Iterator<Item = Result<Module, BootInfoError>> + '_ {
        (0..self.raw.nr_modules).map(move |i| {
            let entry: hvm_modlist_entry = self.entry(self.raw.modlist_paddr, i)?;
            Ok(Module {
                paddr: entry.paddr,
                size: entry.size,
                cmdline_paddr: (entry.cmdline_paddr != 0).then_some(entry.cmdline_paddr),
            })
        })
    }

    /// The memory map (version 1); empty in version 0, where the guest asks Xen
    /// (`XENMEM_memory_map`) instead.
    ///
    /// # Errors
    ///
    /// An item is [`BootInfoError::Unreadable`] if its entry lies outside `memory`.
    pub fn memory_map(&self) -> impl Iterator<Item = Result<MemoryRegion, BootInfoError>> + '_ {
        let entries = if self.raw.version >= 1 {
            self.raw.memmap_entries
        } else {
            0
        };
        (0..entries).map(move |i| {
            let entry: hvm_memmap_table_entry = self.entry(self.raw.memmap_paddr, i)?;
            Ok(MemoryRegion {
                addr: entry.addr,
                size: entry.size,
                kind: entry.type_.into(),
            })
        })
    }

    /// Entry `index` of the array of `T` at physical address `base`.
    fn entry<T: FromBytes + IntoBytes>(&self, base: u64, index: u32) -> Result<T, BootInfoError> {
        let size = size_of::<T>();
        let paddr = u64::from(index)
            .checked_mul(size as u64)
            .and_then(|offset| base.checked_add(offset))
            .ok_or(BootInfoError::Unreadable {
                paddr: base,
                len: size,
            })?;
        let mut entry = T::new_zeroed();
        self.memory.read(paddr, entry.as_mut_bytes())?;
        Ok(entry)
    }
}

/// Copies the NUL-terminated string at `paddr` into `buf`, a byte at a time (a string may end
/// just before memory the caller cannot read).
fn read_c_string<'b, M: PhysMemory>(
    memory: &M,
    paddr: u64,
    buf: &'b mut [u8],
) -> Result<&'b [u8], BootInfoError> {
    let max = buf.len();
    for len in 0..=max {
        let at = paddr
            .checked_add(len as u64)
            .ok_or(BootInfoError::Unreadable {
                paddr,
                len: len + 1,
            })?;
        let mut byte = [0u8];
        memory.read(at, &mut byte)?;
        if byte[0] == 0 {
            return Ok(&buf[..len]);
        }
        match buf.get_mut(len) {
            Some(slot) => *slot = byte[0],
            None => break,
        }
    }
    Err(BootInfoError::Unterminated { paddr, max })
}
