//! The PV boot protocol: the `start_info` page Xen (dom0) or the domain builder (domU) fills
//! before the guest's first instruction, whose virtual address the guest finds in `rsi` at its
//! entry point (`public/xen.h`, "Start-of-day memory layout").
//!
//! [`StartInfo`] is a copy of that page, checked once: every accessor reads the copy, so nothing
//! the guest later does to the page (or reuses it for) changes what was checked.

use core::mem::offset_of;

use xen_hypercall::Port;
use xen_sys::start_info;
use zerocopy::IntoBytes;

use crate::BootInfoError;

/// The `magic` every 64-bit PV `start_info` begins with (`"xen-3.0-x86_64"`, written by Xen's
/// and libxenguest's domain builders).
pub const MAGIC: &[u8] = b"xen-3.0-x86_64";

bitflags::bitflags! {
    /// `start_info.flags` (`SIF_*`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct StartFlags: u32 {
        /// The domain is privileged (`SIF_PRIVILEGED`).
        const PRIVILEGED = xen_sys::SIF_PRIVILEGED;
        /// The domain is the initial domain, dom0 (`SIF_INITDOMAIN`).
        const INITIAL_DOMAIN = xen_sys::SIF_INITDOMAIN;
        /// The module is a multiboot module list (`SIF_MULTIBOOT_MOD`).
        const MULTIBOOT_MODULE = xen_sys::SIF_MULTIBOOT_MOD;
        /// `mod_start` is a page frame number, not a virtual address (`SIF_MOD_START_PFN`).
        const MODULE_START_PFN = xen_sys::SIF_MOD_START_PFN;
        /// The toolstack asks for a virtually mapped physical-to-machine list
        /// (`SIF_VIRT_P2M_4TOOLS`).
        const VIRTUAL_P2M_FOR_TOOLS = xen_sys::SIF_VIRT_P2M_4TOOLS;
        // `SIF_PM_MASK` bits: power-management flags of dom0, kept as they came.
        const _ = !0;
    }
}

/// A shared ring the domain builder set up: its machine frame and the event channel that
/// signals it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingPage {
    /// The machine frame number of the page.
    pub mfn: u64,
    /// The event channel, already bound to the backend (xenstored, xenconsoled).
    pub port: Port,
}

/// Where the guest's console is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Console {
    /// A domU's console ring (`console.domU`).
    Ring(RingPage),
    /// dom0's: the VGA/framebuffer information at `info_off` bytes into this page, `info_size`
    /// bytes long (`console.dom0`); dom0 writes its text with `console_io` hypercalls.
    InitialDomain {
        /// Offset of `dom0_vga_console_info` in the start_info page.
        info_offset: u32,
        /// Its size; 0 if there is none.
        info_size: u32,
    },
}

/// The initial ramdisk or module the domain was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module {
    /// Where it starts: a virtual address, or a page frame number with
    /// [`StartFlags::MODULE_START_PFN`].
    pub start: u64,
    /// Its length in bytes.
    pub len: u64,
}

/// A checked copy of the PV `start_info` page.
#[derive(Clone, Copy, Debug)]
pub struct StartInfo {
    raw: start_info,
}

impl StartInfo {
    /// Copies and checks the `start_info` at `info`.
    ///
    /// # Safety
    ///
    /// `info` must be valid for reading a `start_info` (1168 bytes): at a PV entry point, the
    /// virtual address Xen put in `rsi`, which the initial page tables map (`public/xen.h`).
    ///
    /// # Errors
    ///
    /// [`BootInfoError::BadMagic`] if the magic field is not [`MAGIC`] followed by a NUL.
    pub unsafe fn from_ptr(info: *const start_info) -> Result<Self, BootInfoError> {
        // SAFETY: the caller guarantees `info` is readable for a `start_info`; every bit
        // pattern is one (the type is `FromBytes`). Volatile: the page is the domain
        // builder's, and the compiler must not assume it knows its contents.
        let raw = unsafe { info.read_volatile() };
        Self::new(raw)
    }

    /// Checks a copy of `start_info`.
    ///
    /// # Errors
    ///
    /// [`BootInfoError::BadMagic`] if the magic field is not [`MAGIC`] followed by a NUL.
    pub fn new(raw: start_info) -> Result<Self, BootInfoError> {
        let magic = raw.magic.as_bytes();
        // The magic is NUL-terminated in its 32 bytes.
        if !magic.starts_with(MAGIC) || magic[MAGIC.len()] != 0 {
            return Err(BootInfoError::BadMagic {
                protocol: "start_info",
            });
        }
        Ok(Self { raw })
    }

    /// The structure as Xen laid it out.
    pub fn raw(&self) -> &start_info {
        &self.raw
    }

    /// The domain's flags.
    pub fn flags(&self) -> StartFlags {
        StartFlags::from_bits_retain(self.raw.flags)
    }

    /// Whether this is dom0.
    pub fn is_initial_domain(&self) -> bool {
        self.flags().contains(StartFlags::INITIAL_DOMAIN)
    }

    /// The number of pages the domain was built with.
    pub fn nr_pages(&self) -> u64 {
        self.raw.nr_pages
    }

    /// The machine address of the shared info page, to map (PV guests map it themselves).
    pub fn shared_info_address(&self) -> u64 {
        self.raw.shared_info
    }

    /// The xenstore ring, if the domain has one: dom0 has none until it starts xenstored
    /// (the page frame is 0 then).
    pub fn xenstore(&self) -> Option<RingPage> {
        (self.raw.store_mfn != 0).then(|| RingPage {
            mfn: self.raw.store_mfn,
            port: Port::new(self.raw.store_evtchn),
        })
    }

    /// The console.
    pub fn console(&self) -> Console {
        if self.is_initial_domain() {
            // SAFETY: both members of the union are plain integers (`FromBytes`): any bit
            // pattern is a value of either.
            let dom0 = unsafe { self.raw.console.dom0 };
            Console::InitialDomain {
                info_offset: dom0.info_off,
                info_size: dom0.info_size,
            }
        } else {
            // SAFETY: as above.
            let domu = unsafe { self.raw.console.domU };
            Console::Ring(RingPage {
                mfn: domu.mfn,
                port: Port::new(domu.evtchn),
            })
        }
    }

    /// The virtual address of the initial page tables, and how many frames they take.
    pub fn page_tables(&self) -> (u64, u64) {
        (self.raw.pt_base, self.raw.nr_pt_frames)
    }

    /// The virtual address of the physical-to-machine list: `nr_pages` machine frame numbers,
    /// the one of each of the domain's pages.
    pub fn mfn_list(&self) -> u64 {
        self.raw.mfn_list
    }

    /// The module (initial ramdisk), if the domain was given one.
    pub fn module(&self) -> Option<Module> {
        (self.raw.mod_len != 0).then_some(Module {
            start: self.raw.mod_start,
            len: self.raw.mod_len,
        })
    }

    /// The command line, without its NUL (the whole field if a builder left none).
    pub fn cmdline(&self) -> &[u8] {
        let field = self.raw.cmd_line.as_bytes();
        let len = field.iter().position(|&c| c == 0).unwrap_or(field.len());
        &field[..len]
    }

    /// The page frame where the virtually mapped physical-to-machine list starts, and how many
    /// frames it takes, when the toolstack asked for it ([`StartFlags::VIRTUAL_P2M_FOR_TOOLS`]).
    pub fn p2m_frames(&self) -> Option<(u64, u64)> {
        self.flags()
            .contains(StartFlags::VIRTUAL_P2M_FOR_TOOLS)
            .then_some((self.raw.first_p2m_pfn, self.raw.nr_p2m_frames))
    }
}

/// Where the toolstack's save finds a PV guest's physical-to-machine list: the three fields of
/// `shared_info.arch` a guest writes for it (as Linux's `xen_setup_mfn_list_list` does for a
/// linear list). libxenguest's save reads them before it asks the guest to suspend (`map_p2m`:
/// "Bad mfn 0 for p2m frame list list" when they are not there), and a restore copies the old
/// ones into the new domain: publish them at boot and again after each resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct P2mPublication {
    /// `arch.max_pfn`: how many pages the list covers.
    pub max_pfn: u64,
    /// `arch.p2m_cr3`: the page table root that maps the list, as a `cr3` value.
    pub p2m_cr3: u64,
    /// `arch.p2m_vaddr`: the list's virtual address.
    pub p2m_vaddr: u64,
}

impl StartInfo {
    /// The list the domain builder left ([`mfn_list`](Self::mfn_list), [`nr_pages`](Self::nr_pages)
    /// entries), mapped by the page tables whose root is machine frame `root_mfn` (the frame of
    /// [`page_tables`](Self::page_tables)'s first page while the guest keeps the builder's
    /// tables). `None` if the list does not start on a page: the save reads whole pages.
    pub fn p2m_publication(&self, root_mfn: u64) -> Option<P2mPublication> {
        (self.raw.mfn_list % 4096 == 0).then_some(P2mPublication {
            max_pfn: self.raw.nr_pages,
            p2m_cr3: root_mfn << 12,
            p2m_vaddr: self.raw.mfn_list,
        })
    }
}

impl P2mPublication {
    /// Writes the fields into `shared_info.arch`, with `p2m_generation` 0.
    ///
    /// # Safety
    ///
    /// `shared_info` points to this domain's mapped shared info page, which no Rust reference
    /// covers (Xen writes it too): the fields are written with volatile stores.
    pub unsafe fn write(&self, shared_info: core::ptr::NonNull<xen_sys::shared_info>) {
        use xen_sys::arch_shared_info as Arch;
        let arch = shared_info
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(offset_of!(xen_sys::shared_info, arch));
        for (offset, value) in [
            (offset_of!(Arch, max_pfn), self.max_pfn),
            (offset_of!(Arch, p2m_cr3), self.p2m_cr3),
            (offset_of!(Arch, p2m_vaddr), self.p2m_vaddr),
            (offset_of!(Arch, p2m_generation), 0),
        ] {
            let field = arch.wrapping_add(offset).cast::<u64>();
            // SAFETY: the caller's contract: an aligned `unsigned long` (64 bits here) of the
            // mapped, writable shared info page, which the guest owns (Xen only hands it to the
            // toolstack) and no Rust reference covers.
            unsafe { field.write_volatile(value) };
        }
    }
}

/// Rewrites the xenstore and console ring frames of the `start_info` page at `page` with
/// `convert`: before `SCHEDOP_shutdown(suspend)` from machine to pseudo-physical frames (the
/// restore's `process_start_info` reads pseudo-physical ones and writes the new machine frames,
/// ports and shared info frame), and back after a cancelled suspend. Stops at the first frame
/// `convert` refuses, leaving the later one unchanged.
///
/// # Safety
///
/// `page` points to this domain's `start_info` page, mapped readable and writable, which no
/// Rust reference covers ([`StartInfo`] is a copy).
///
/// # Errors
///
/// The first error `convert` returns.
pub unsafe fn convert_ring_frames<E>(
    page: core::ptr::NonNull<start_info>,
    mut convert: impl FnMut(u64) -> Result<u64, E>,
) -> Result<(), E> {
    // The domU console's frame is the first member of the `console` union.
    const _: () = assert!(offset_of!(xen_sys::start_info__bindgen_ty_1__bindgen_ty_1, mfn) == 0);
    for offset in [
        offset_of!(start_info, store_mfn),
        offset_of!(start_info, console),
    ] {
        let field = page
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(offset)
            .cast::<u64>();
        // SAFETY: an aligned `xen_pfn_t` of the mapped start_info page, which no Rust
        // reference covers (caller); volatile, as the toolstack writes the page while the
        // domain is suspended.
        let frame = unsafe { field.read_volatile() };
        let frame = convert(frame)?;
        // SAFETY: as for the read.
        unsafe { field.write_volatile(frame) };
    }
    Ok(())
}
