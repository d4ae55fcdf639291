//! The PV64 guest: Xen's PV ELF notes, entry with `rsi` = start_info, `syscall`
//! hypercalls.
//!
//! Xen builds the initial page tables mapping the image at its link address
//! (VIRT_BASE 0) and enters `_start` in 64-bit guest kernel mode.

use super::RawMemory;
use core::arch::global_asm;

use xen_guest::pv::StartInfo;
use xen_hypercall::{Error, XenHypercall};
#[cfg(not(feature = "domu"))]
use xen_hypercall_native::HvmHypercall;
use xen_hypercall_native::PvHypercall;
#[cfg(not(feature = "domu"))]
use xen_sys::start_info;

#[cfg(not(feature = "domu"))]
use crate::cases::{self, Console, Expect, Fail, GuestReporter};
use crate::shared_info::SharedInfo;

// Xen PV ELF notes (public/elfnote.h), in the PT_NOTE segment of the linker script.
global_asm!(
    ".pushsection .note.Xen, \"a\", @note",
    ".macro xen_note type, desc_start, desc_end",
    ".balign 4",
    ".long 4",
    ".long \\desc_end - \\desc_start",
    ".long \\type",
    ".asciz \"Xen\"",
    ".endm",
    // XEN_ELFNOTE_GUEST_OS (6)
    "xen_note 6, 60f, 61f",
    "60: .asciz \"xen-test-guest\"",
    "61:",
    // XEN_ELFNOTE_XEN_VERSION (5)
    "xen_note 5, 62f, 63f",
    "62: .asciz \"xen-3.0\"",
    "63:",
    // XEN_ELFNOTE_LOADER (8)
    "xen_note 8, 64f, 65f",
    "64: .asciz \"generic\"",
    "65:",
    // XEN_ELFNOTE_VIRT_BASE (3)
    "xen_note 3, 66f, 67f",
    "66: .quad 0",
    "67:",
    // XEN_ELFNOTE_PADDR_OFFSET (4)
    "xen_note 4, 68f, 69f",
    "68: .quad 0",
    "69:",
    // XEN_ELFNOTE_ENTRY (1)
    "xen_note 1, 70f, 71f",
    "70: .quad _start",
    "71:",
    ".popsection",
    // Entry: our own stack, start_info (rsi) as the first argument.
    ".pushsection .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "lea rsp, [rip + {stack} + {stack_size}]",
    "mov rdi, rsi",
    "call {main}",
    "2: hlt",
    "jmp 2b",
    ".popsection",
    stack = sym STACK,
    stack_size = const STACK_SIZE,
    main = sym pv_main,
);

const STACK_SIZE: usize = 64 * 1024;

static STACK: RawMemory<[u8; STACK_SIZE]> = RawMemory::new([0; STACK_SIZE]);

/// The page the shared info frame is mapped over.
static SHARED_INFO_SLOT: RawMemory<[u8; 4096]> = RawMemory::new([0; 4096]);

fn backend() -> PvHypercall {
    // SAFETY: this program is a 64-bit PV kernel (the ELF notes above), running in
    // guest kernel mode from `_start` on; it never enters guest user mode.
    unsafe { PvHypercall::new() }
}

#[cfg(not(feature = "domu"))]
crate::arch::zero_cost_probe!(PvHypercall);

/// `HYPERVISOR_update_va_mapping` (public/xen.h, 14) and `UVMF_INVLPG`.
const UPDATE_VA_MAPPING: usize = xen_sys::__HYPERVISOR_update_va_mapping as usize;
const UVMF_INVLPG: usize = xen_sys::UVMF_INVLPG as usize;
/// PTE bits: present, writable, user (Xen requires it of 64-bit PV kernels), accessed, dirty.
const PTE_FLAGS: u64 = 0x1 | 0x2 | 0x4 | 0x20 | 0x40;

/// Maps machine frame `mfn` over `slot`, a page of ours, with
/// `update_va_mapping`, as Mini-OS does.
///
/// # Safety
///
/// `slot` is a page-aligned page of this program that Rust only touches through
/// raw pointers (never as a value) from here on, and `mfn` is a frame Xen lets
/// this domain map writable. The slot's own frame is simply left unused.
unsafe fn map_machine_frame(h: &PvHypercall, slot: *mut u8, mfn: u64) -> Result<(), Error> {
    let pte = (mfn << 12) | PTE_FLAGS;
    // SAFETY: update_va_mapping(va, pte, flags) (xen.h) replaces the PTE of `slot`
    // (caller: nothing in Rust depends on its old contents) with a mapping of
    // `mfn`; Xen checks that the domain may map it; UVMF_INVLPG flushes the old entry.
    unsafe {
        h.hypercall3(
            UPDATE_VA_MAPPING,
            [slot as usize, pte as usize, UVMF_INVLPG],
        )
    }?;
    Ok(())
}

/// Maps the shared info page (a machine address in start_info, public/xen.h:
/// "MACHINE address of shared info struct") over `SHARED_INFO_SLOT`: Xen gives a
/// PV guest no mapping of it.
fn map_shared_info(h: &PvHypercall, info: &StartInfo) -> Result<SharedInfo, Error> {
    let slot = SHARED_INFO_SLOT.as_mut_ptr().cast::<u8>();
    // SAFETY: the slot is a page-aligned static only used through raw pointers
    // (it is never read as a value); the shared info frame is this domain's own.
    unsafe { map_machine_frame(h, slot, info.shared_info_address() >> 12) }?;
    // SAFETY: the slot now maps the shared info page for the program's life, and is
    // used only through `SharedInfo`.
    Ok(unsafe { SharedInfo::new(slot) })
}

#[cfg(not(feature = "domu"))]
extern "C" fn pv_main(info: *const start_info) -> ! {
    let h = backend();
    let mut reporter = GuestReporter::new(Console(&h));
    // SAFETY: Xen passes the virtual address of the start_info page in rsi
    // (public/xen.h, "start_info"), mapped by the initial page tables.
    let info = unsafe { StartInfo::from_ptr(info) };
    reporter.case(
        "pv_start_info",
        match &info {
            Ok(info) if info.is_initial_domain() && info.xenstore().is_none() => Ok(()),
            Ok(info) => Err(Fail::new(format_args!(
                "dom0's start_info: flags {:?}, xenstore {:?}",
                info.flags(),
                info.xenstore()
            ))),
            Err(e) => Err(Fail::new(format_args!("start_info: {e}"))),
        },
    );
    // Without start_info nothing below can run: crash, which the runner reports.
    let Ok(info) = info else { shutdown_reboot(&h) };
    cases::run_common(
        &h,
        &mut reporter,
        map_shared_info(&h, &info),
        &Expect {
            capability: "xen-3.0-x86_64",
            virt_start: cases::X86_64_VIRT_START,
            translated: false,
        },
    );
    reporter.case(
        "pv_hvm_detect_refused",
        match HvmHypercall::detect() {
            Err(Error::NotOnXen(_)) => Ok(()),
            other => Err(Fail::new(format_args!(
                "HvmHypercall::detect in a PV guest gave {other:?}"
            ))),
        },
    );
    // SAFETY: start_info's `mfn_list` (public/xen.h) maps pfns to machine frames for the domain's life.
    crate::grant::run(&h, &mut reporter, &unsafe {
        crate::grant::Pv::new(info.mfn_list())
    });
    reporter.case(
        "zero_cost_probe",
        probe_xen_version(&h).map(drop).map_err(Fail::from),
    );
    // Port 0xf4 needs I/O privilege: PHYSDEVOP_set_iopl (the notes of the testbed).
    let iopl = h.set_iopl(1);
    let iopl_ok = iopl.is_ok();
    reporter.case("pv_set_iopl", iopl.map_err(Fail::from));
    let code = cases::finish(&h, reporter);
    // Without I/O privilege the exit port would fault: reboot instead (a failure for the runner).
    if !iopl_ok {
        shutdown_reboot(&h);
    }
    exit(code)
}

#[cfg(not(feature = "domu"))]
use xen_hypercall::prelude::*;

/// Without port access: reboot (QEMU `-no-reboot` exits with status 0, a failure).
#[cfg(not(feature = "domu"))]
fn shutdown_reboot(h: &PvHypercall) -> ! {
    let _ = h.shutdown(ShutdownReason::REBOOT);
    loop {
        core::hint::spin_loop();
    }
}

/// Ends the run: `code` to the isa-debug-exit port, else a reboot.
#[cfg(not(feature = "domu"))]
pub(crate) fn exit(code: u8) -> ! {
    let h = backend();
    let _ = h.set_iopl(1);
    // SAFETY: I/O privilege level 1 was just set for this PV kernel (physdev.h
    // PHYSDEVOP_set_iopl: Xen then emulates `out` from guest kernel mode); port
    // 0xf4 is QEMU's exit device under the testbed.
    unsafe { super::debug_exit::write(code) };
    shutdown_reboot(&h)
}

/// The console for the panic handler.
#[cfg(not(feature = "domu"))]
pub(crate) fn panic_console() -> Console<'static, PvHypercall> {
    static BACKEND: PvHypercall = {
        // SAFETY: as in `backend`.
        unsafe { PvHypercall::new() }
    };
    Console(&BACKEND)
}

/// The domU: rings from start_info, the grant table from `GNTTABOP_setup_table`.
#[cfg(feature = "domu")]
mod domu {
    use core::cell::Cell;
    use core::ptr::NonNull;

    use xen_guest::pv::{Console, StartInfo, convert_ring_frames};
    use xen_hypercall::Error;
    use xen_hypercall::prelude::*;
    use xen_hypercall::sched::SuspendOutcome;
    use xen_hypercall_native::PvHypercall;
    use xen_sys::{shared_info, start_info};

    use super::{RawMemory, SHARED_INFO_SLOT, backend, map_machine_frame, map_shared_info};
    use crate::domu::{DomuError, Platform, RingPage};
    use crate::shared_info::SharedInfo;

    /// The page the grant table's frame 0 is mapped over.
    static GRANT_TABLE_SLOT: RawMemory<[u8; 4096]> = RawMemory::new([0; 4096]);

    /// A PV domU.
    struct PvDomu {
        h: PvHypercall,
        /// The start_info page, which a restore rewrites.
        page: *mut start_info,
        /// Its checked copy (taken again after a restore).
        info: Cell<StartInfo>,
        /// The machine frame of grant table frame 0 once mapped (0 before).
        grant_frame: Cell<u64>,
        /// The command line, copied at boot.
        cmdline: &'static [u8],
    }

    impl PvDomu {
        /// The pseudo-physical frame of machine frame `mfn`, from the read-only
        /// machine-to-physical table Xen maps into every 64-bit PV guest at
        /// `MACH2PHYS_VIRT_START` (arch-x86/xen-x86_64.h), checked against our own
        /// physical-to-machine list so that a wrong answer is caught.
        fn pfn_of_mfn(&self, mfn: u64) -> Result<u64, DomuError> {
            let m2p = xen_sys::MACH2PHYS_VIRT_START as u64 as *const u64;
            if mfn >= xen_sys::MACH2PHYS_NR_ENTRIES {
                return Err(DomuError::Unexpected("machine frame beyond the M2P"));
            }
            // SAFETY: the M2P is mapped read-only for the guest's life, one `u64`
            // per machine frame; `mfn` is a frame Xen gave this domain (start_info),
            // so its entry is mapped. Volatile: Xen owns the table.
            let pfn = unsafe { core::ptr::read_volatile(m2p.wrapping_add(mfn as usize)) };
            if self.mfn_of_pfn(pfn)? != mfn {
                return Err(DomuError::Unexpected("M2P and P2M disagree"));
            }
            Ok(pfn)
        }

        /// The machine frame of our pseudo-physical frame `pfn`, from the
        /// physical-to-machine list the domain builder left (start_info `mfn_list`).
        fn mfn_of_pfn(&self, pfn: u64) -> Result<u64, DomuError> {
            if pfn >= self.info.get().nr_pages() {
                return Err(DomuError::Unexpected("frame beyond the domain's pages"));
            }
            let list = self.info.get().mfn_list() as *const u64;
            // SAFETY: `mfn_list` is the virtual address of `nr_pages` `unsigned long`s
            // in the initial mapping (public/xen.h, start_info), and `pfn` <
            // `nr_pages`. Only the domain itself writes it; we never do.
            Ok(unsafe { core::ptr::read_volatile(list.wrapping_add(pfn as usize)) })
        }

        /// The ring on machine frame `mfn`, signalled by `port`: in the initial
        /// mapping (VIRT_BASE 0: virtual address = pfn << 12).
        fn ring(&self, ring: xen_guest::pv::RingPage) -> Result<RingPage, DomuError> {
            let pfn = self.pfn_of_mfn(ring.mfn)?;
            Ok(RingPage {
                page: (pfn << 12) as *mut u8,
                port: ring.port,
            })
        }
    }

    impl PvDomu {
        /// Maps our own frame back under `slot`, a static page over which a frame of Xen's (shared
        /// info, grant table) was mapped: the save refuses page tables naming frames outside the
        /// domain's memory.
        fn unmap_slot(&self, slot: *mut u8) -> Result<(), DomuError> {
            let own = self.mfn_of_pfn(slot as u64 >> 12)?;
            // SAFETY: `slot` is a page-aligned static only used through raw pointers; its own
            // frame is this domain's.
            Ok(unsafe { map_machine_frame(&self.h, slot, own) }?)
        }

        /// Publishes the physical-to-machine list where the save reads it (xen-guest's
        /// `P2mPublication`: this domU keeps the domain builder's page tables).
        fn publish_p2m(&self) -> Result<(), DomuError> {
            let info = self.info.get();
            let root = self.mfn_of_pfn(info.page_tables().0 >> 12)?;
            let publication = info
                .p2m_publication(root)
                .ok_or(DomuError::Unexpected("the P2M list is not page-aligned"))?;
            let shared = NonNull::new(SHARED_INFO_SLOT.as_mut_ptr().cast::<shared_info>())
                .ok_or(DomuError::Unexpected("shared info at null"))?;
            // SAFETY: the slot maps the shared info page (mapped before this is called), which
            // Rust reaches only through raw pointers and `SharedInfo`'s atomics.
            unsafe { publication.write(shared) };
            Ok(())
        }

        /// Writes the start_info page's ring frames with `convert` (xen-guest's
        /// `convert_ring_frames`).
        fn convert_rings(
            &self,
            convert: impl Fn(&Self, u64) -> Result<u64, DomuError>,
        ) -> Result<(), DomuError> {
            let page = NonNull::new(self.page).ok_or(DomuError::Unexpected("no start_info"))?;
            // SAFETY: `page` is the start_info page, mapped writable in the initial mapping;
            // Rust holds no reference to it (`StartInfo` is a copy).
            unsafe { convert_ring_frames(page, |frame| convert(self, frame)) }
        }

        /// What a cancelled (or failed) suspend undoes: the ring frames and Xen's mappings.
        fn undo_suspend(&self) -> Result<(), DomuError> {
            self.convert_rings(Self::mfn_of_pfn)?;
            map_shared_info(&self.h, &self.info.get())?;
            let grant_frame = self.grant_frame.get();
            if grant_frame != 0 {
                let slot = GRANT_TABLE_SLOT.as_mut_ptr().cast::<u8>();
                // SAFETY: as in `map_grant_table`: the same frame, unchanged by a cancelled
                // suspend.
                unsafe { map_machine_frame(&self.h, slot, grant_frame) }?;
            }
            Ok(())
        }
    }

    impl Platform for PvDomu {
        type Hypercall = PvHypercall;

        fn hypercall(&self) -> PvHypercall {
            self.h
        }

        fn shared_info(&self) -> Result<SharedInfo, Error> {
            let shared = map_shared_info(&self.h, &self.info.get())?;
            // The save reads it before it asks the domain to suspend (a restore keeps the old
            // root there): published at boot and after each resume.
            self.publish_p2m()
                .map_err(|_| Error::InvalidInput("the P2M list cannot be published"))?;
            Ok(shared)
        }

        fn can_suspend(&self) -> bool {
            true
        }

        fn suspend(&self) -> Result<SuspendOutcome, DomuError> {
            let start_info_mfn = self.mfn_of_pfn(self.page as u64 >> 12)?;
            self.unmap_slot(SHARED_INFO_SLOT.as_mut_ptr().cast())?;
            self.unmap_slot(GRANT_TABLE_SLOT.as_mut_ptr().cast())?;
            self.convert_rings(Self::pfn_of_mfn)?;
            // SAFETY: `start_info_mfn` is the machine frame of this domain's start_info page,
            // which Rust reaches only through `page` (raw) and reads again after a restore. The
            // frames a restore changes are reached through the P2M list, which the restore
            // rewrites, and the shared info and grant table slots, unmapped above and mapped
            // again (by the caller after `Resumed`, below after a cancel) before use.
            let outcome = unsafe { self.h.suspend(start_info_mfn) };
            match outcome {
                Ok(SuspendOutcome::Resumed) => {
                    // SAFETY: as in `pv_main`: the start_info page, rewritten by the restore.
                    let info = unsafe { StartInfo::from_ptr(self.page) }
                        .map_err(|_| DomuError::Unexpected("start_info after the restore"))?;
                    self.info.set(info);
                    self.grant_frame.set(0);
                    Ok(SuspendOutcome::Resumed)
                }
                other => {
                    self.undo_suspend()?;
                    Ok(other?)
                }
            }
        }

        fn console(&self) -> Result<RingPage, DomuError> {
            match self.info.get().console() {
                Console::Ring(ring) => self.ring(ring),
                Console::InitialDomain { .. } => Err(DomuError::Unexpected("no console ring")),
            }
        }

        fn store(&self) -> Result<RingPage, DomuError> {
            let ring = self.info.get().xenstore();
            self.ring(ring.ok_or(DomuError::Unexpected("no xenstore ring"))?)
        }

        fn cmdline(&self) -> &[u8] {
            self.cmdline
        }

        fn map_grant_table(&self) -> Result<*mut u8, DomuError> {
            let mfn = crate::domu::setup_table(&self.h)?;
            self.grant_frame.set(mfn);
            let slot = GRANT_TABLE_SLOT.as_mut_ptr().cast::<u8>();
            // SAFETY: the slot is a page-aligned static only used through raw
            // pointers; frame 0 of our grant table is ours to map (setup_table).
            unsafe { map_machine_frame(&self.h, slot, mfn) }?;
            Ok(slot)
        }

        fn frame_of(&self, page: *const u8) -> Result<u32, DomuError> {
            // VIRT_BASE 0: the page's pseudo-physical frame is its address >> 12.
            let mfn = self.mfn_of_pfn(page as u64 >> 12)?;
            u32::try_from(mfn).map_err(|_| DomuError::Unexpected("machine frame above 2^32"))
        }
    }

    pub(super) extern "C" fn pv_main(info: *const start_info) -> ! {
        let h = backend();
        let info_ptr = info;
        // SAFETY: the domain builder passes the virtual address of the start_info
        // page in rsi (public/xen.h, "start_info"), mapped by the initial page tables.
        match unsafe { StartInfo::from_ptr(info) } {
            Ok(info) => crate::domu::run(&PvDomu {
                h,
                page: info_ptr.cast_mut(),
                info: Cell::new(info),
                grant_frame: Cell::new(0),
                cmdline: alloc::vec::Vec::from(info.cmdline()).leak(),
            }),
            // No console without it: crash, which xl reports.
            Err(_) => crate::domu::crash(h),
        }
    }

    /// The panic handler's end.
    pub(crate) fn domu_panic(info: &core::panic::PanicInfo<'_>) -> ! {
        crate::domu::panic(backend(), info)
    }
}
#[cfg(feature = "domu")]
pub(crate) use domu::domu_panic;
#[cfg(feature = "domu")]
use domu::pv_main;
