//! The PV boot protocol: the `start_info` page Xen (dom0) or the domain builder (domU) fills
//! before the guest's first instruction, whose virtual address the guest finds in `rsi` at its
//! entry point (`public/xen.h`, "Start-of-day memory layout").
//!
//! [`StartInfo`] is a copy of that page, checked once: every accessor reads the copy, so nothing
//! the guest later does to the page (or reuses it for) changes what was checked.

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
    pub unsafe fn from_ptr(info: *const start_info) -> Result<Self, BootInfoError> {
        // SAFETY: the caller guarantees `info` is readable for a `start_info`; every bit
        // pattern is one (the type is `FromBytes`). Volatile: the page is the domain
        // builder's, and the compiler must not assume it knows its contents.
        let raw = unsafe { info.read_volatile() };
        Self::new(raw)
    }

    /// Checks a copy of `start_info`.
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
