//! The boot structures, built as Xen's domain builders lay them out, and broken ways.
#![cfg(target_arch = "x86_64")]

use xen_guest::BootInfoError;
use xen_guest::pv::{Console, Module, RingPage, StartFlags, StartInfo};
use xen_guest::pvh::{HvmStartInfo, MemoryRegion, MemoryType, PhysMemory};
use xen_hypercall::Port;
use zerocopy::{FromZeros, IntoBytes};

fn start_info(magic: &[u8]) -> xen_sys::start_info {
    let mut raw = xen_sys::start_info::new_zeroed();
    for (field, &byte) in raw.magic.iter_mut().zip(magic) {
        *field = byte as _;
    }
    raw
}

#[test]
fn a_domu_start_info_reads_back() {
    let mut raw = start_info(b"xen-3.0-x86_64");
    raw.nr_pages = 8192;
    raw.shared_info = 0x1234_5000;
    raw.store_mfn = 0x42;
    raw.store_evtchn = 1;
    raw.console.domU.mfn = 0x43;
    raw.console.domU.evtchn = 2;
    raw.mfn_list = 0xffff_8000_0000_0000;
    raw.mod_start = 0x40_0000;
    raw.mod_len = 4096;
    for (field, &byte) in raw.cmd_line.iter_mut().zip(b"console=hvc0 quiet\0junk") {
        *field = byte as _;
    }
    let info = StartInfo::new(raw).unwrap();
    assert!(!info.is_initial_domain());
    assert_eq!(info.nr_pages(), 8192);
    assert_eq!(info.shared_info_address(), 0x1234_5000);
    assert_eq!(
        info.xenstore(),
        Some(RingPage {
            mfn: 0x42,
            port: Port::new(1)
        })
    );
    assert_eq!(
        info.console(),
        Console::Ring(RingPage {
            mfn: 0x43,
            port: Port::new(2)
        })
    );
    assert_eq!(
        info.module(),
        Some(Module {
            start: 0x40_0000,
            len: 4096
        })
    );
    assert_eq!(info.cmdline(), b"console=hvc0 quiet");
    assert_eq!(info.p2m_frames(), None);
}

#[test]
fn dom0_start_info_has_no_store_and_a_vga_console() {
    let mut raw = start_info(b"xen-3.0-x86_64");
    raw.flags = xen_sys::SIF_PRIVILEGED | xen_sys::SIF_INITDOMAIN | 0x100;
    raw.console.dom0.info_off = 0x490;
    raw.console.dom0.info_size = 0x40;
    let info = StartInfo::new(raw).unwrap();
    assert!(info.is_initial_domain());
    assert!(info.flags().contains(StartFlags::PRIVILEGED));
    // A power-management bit survives as it came.
    assert_eq!(info.flags().bits() & 0x100, 0x100);
    assert_eq!(info.xenstore(), None);
    assert_eq!(
        info.console(),
        Console::InitialDomain {
            info_offset: 0x490,
            info_size: 0x40
        }
    );
    // A full command line with no NUL: all of it, not past it.
    let mut raw = start_info(b"xen-3.0-x86_64");
    raw.cmd_line = [b'x' as _; 1024];
    assert_eq!(StartInfo::new(raw).unwrap().cmdline().len(), 1024);
}

#[test]
fn anything_but_a_64_bit_pv_magic_is_refused() {
    for magic in [
        &b""[..],
        b"xen-3.0-x86_32p",
        b"xen-3.0-x86_64p",
        b"XEN-3.0-x86_64",
    ] {
        assert_eq!(
            StartInfo::new(start_info(magic)).unwrap_err(),
            BootInfoError::BadMagic {
                protocol: "start_info"
            },
            "{magic:?}"
        );
    }
    let raw = start_info(b"xen-3.0-x86_64");
    // SAFETY: a live local `start_info`.
    let info = unsafe { StartInfo::from_ptr(&raw) }.unwrap();
    assert_eq!(info.cmdline(), b"");
}

/// Guest memory from `base`, as a vector.
struct Ram {
    base: u64,
    bytes: Vec<u8>,
}

impl Ram {
    fn put(&mut self, paddr: u64, data: &[u8]) {
        let at = (paddr - self.base) as usize;
        self.bytes[at..at + data.len()].copy_from_slice(data);
    }
}

impl PhysMemory for Ram {
    fn read(&self, paddr: u64, buf: &mut [u8]) -> Result<(), BootInfoError> {
        let unreadable = BootInfoError::Unreadable {
            paddr,
            len: buf.len(),
        };
        let at = paddr.checked_sub(self.base).ok_or(unreadable)? as usize;
        let end = at.checked_add(buf.len()).ok_or(unreadable)?;
        buf.copy_from_slice(self.bytes.get(at..end).ok_or(unreadable)?);
        Ok(())
    }
}

const BASE: u64 = 0x10_0000;

/// An `hvm_start_info` at BASE as libxenguest's PVH builder writes it: a command line, one
/// module with its own, and a memory map of three entries.
fn pvh_ram(version: u32) -> Ram {
    let mut ram = Ram {
        base: BASE,
        bytes: vec![0; 4096],
    };
    let mut info = xen_sys::hvm_start_info::new_zeroed();
    info.magic = xen_sys::XEN_HVM_START_MAGIC_VALUE;
    info.version = version;
    info.cmdline_paddr = BASE + 0x100;
    info.nr_modules = 1;
    info.modlist_paddr = BASE + 0x200;
    info.memmap_paddr = BASE + 0x300;
    info.memmap_entries = 3;
    info.rsdp_paddr = 0;
    ram.put(BASE, info.as_bytes());
    ram.put(BASE + 0x100, b"console=hvc0\0");
    let module = xen_sys::hvm_modlist_entry {
        paddr: 0x20_0000,
        size: 1234,
        cmdline_paddr: BASE + 0x180,
        reserved: 0,
    };
    ram.put(BASE + 0x200, module.as_bytes());
    ram.put(BASE + 0x180, b"initrd\0");
    for (i, (addr, size, kind)) in [
        (0u64, 0xa_0000u64, xen_sys::XEN_HVM_MEMMAP_TYPE_RAM),
        (
            0xfc00_0000,
            0x400_0000,
            xen_sys::XEN_HVM_MEMMAP_TYPE_RESERVED,
        ),
        (0x10_0000, 0x7f0_0000, 99),
    ]
    .into_iter()
    .enumerate()
    {
        let entry = xen_sys::hvm_memmap_table_entry {
            addr,
            size,
            type_: kind,
            reserved: 0,
        };
        ram.put(BASE + 0x300 + 24 * i as u64, entry.as_bytes());
    }
    ram
}

#[test]
fn a_pvh_start_info_reads_back() {
    let info = HvmStartInfo::read(pvh_ram(1), BASE).unwrap();
    assert_eq!(info.version(), 1);
    assert_eq!(info.rsdp(), None);
    let mut buf = [0u8; 64];
    assert_eq!(info.cmdline(&mut buf).unwrap(), Some(&b"console=hvc0"[..]));
    let modules: Vec<_> = info.modules().collect::<Result<_, _>>().unwrap();
    assert_eq!(modules.len(), 1);
    assert_eq!((modules[0].paddr, modules[0].size), (0x20_0000, 1234));
    assert_eq!(
        info.module_cmdline(&modules[0], &mut buf).unwrap(),
        Some(&b"initrd"[..])
    );
    let map: Vec<_> = info.memory_map().collect::<Result<_, _>>().unwrap();
    assert_eq!(
        map,
        [
            MemoryRegion {
                addr: 0,
                size: 0xa_0000,
                kind: MemoryType::Ram
            },
            MemoryRegion {
                addr: 0xfc00_0000,
                size: 0x400_0000,
                kind: MemoryType::Reserved
            },
            MemoryRegion {
                addr: 0x10_0000,
                size: 0x7f0_0000,
                kind: MemoryType::Other(99)
            },
        ]
    );
    // Version 0 has no memory map, whatever the fields after it hold.
    let info = HvmStartInfo::read(pvh_ram(0), BASE).unwrap();
    assert_eq!(info.memory_map().count(), 0);
}

#[test]
fn a_bad_pvh_start_info_is_a_typed_error_never_a_wild_read() {
    let mut ram = pvh_ram(1);
    ram.put(BASE, &0u32.to_ne_bytes());
    assert!(matches!(
        HvmStartInfo::read(ram, BASE),
        Err(BootInfoError::BadMagic { .. })
    ));
    assert!(matches!(
        HvmStartInfo::read(pvh_ram(2), BASE),
        Err(BootInfoError::UnsupportedVersion { version: 2, .. })
    ));
    // Outside memory: the structure itself, and lists that run off its end.
    assert!(matches!(
        HvmStartInfo::read(pvh_ram(1), 0),
        Err(BootInfoError::Unreadable { .. })
    ));
    let mut ram = pvh_ram(1);
    // 1 << 32 - 1 modules, far past memory: each read fails; nothing is allocated for them.
    ram.put(BASE + 12, &u32::MAX.to_ne_bytes());
    ram.put(BASE + 48, &u32::MAX.to_ne_bytes());
    let info = HvmStartInfo::read(ram, BASE).unwrap();
    assert!(info.modules().nth(200).unwrap().is_err());
    assert!(info.memory_map().take(200).any(|entry| entry.is_err()));
    // A list based near the top of the address space wraps: refused, not wrapped around.
    let mut ram = pvh_ram(1);
    ram.put(BASE + 40, &(u64::MAX - 8).to_ne_bytes());
    let info = HvmStartInfo::read(ram, BASE).unwrap();
    assert!(info.memory_map().all(|entry| entry.is_err()));
    // A command line longer than the buffer, and one with no NUL before memory ends.
    let info = HvmStartInfo::read(pvh_ram(1), BASE).unwrap();
    let mut small = [0u8; 4];
    assert!(matches!(
        info.cmdline(&mut small),
        Err(BootInfoError::Unterminated { max: 4, .. })
    ));
    let mut ram = pvh_ram(1);
    let end = BASE + 4096 - 3;
    ram.put(end, b"abc");
    ram.put(BASE + 24, &end.to_ne_bytes());
    let info = HvmStartInfo::read(ram, BASE).unwrap();
    let mut buf = [0u8; 64];
    assert!(matches!(
        info.cmdline(&mut buf),
        Err(BootInfoError::Unreadable { .. })
    ));
}

#[test]
fn identity_mapped_memory_reads_only_inside_its_range() {
    use xen_guest::pvh::IdentityMapped;
    let ram = [7u8; 64];
    let base = ram.as_ptr() as u64;
    // SAFETY: the range is `ram`, live and unwritten for the test.
    let memory = unsafe { IdentityMapped::new(base..base + 64) };
    let mut buf = [0u8; 16];
    memory.read(base + 48, &mut buf).unwrap();
    assert_eq!(buf, [7; 16]);
    for paddr in [base - 1, base + 49, 0, u64::MAX - 4] {
        assert!(matches!(
            memory.read(paddr, &mut buf),
            Err(BootInfoError::Unreadable { .. })
        ));
    }
    // A start_info that would run past the range is refused, not read.
    assert!(HvmStartInfo::read(memory, base + 32).is_err());
}

#[test]
fn the_p2m_is_published_where_the_save_reads_it() {
    let mut raw = start_info(xen_guest::pv::MAGIC);
    raw.nr_pages = 4096;
    raw.mfn_list = 0x80_0000;
    let info = StartInfo::new(raw).unwrap();
    let publication = info.p2m_publication(0x1234).unwrap();
    assert_eq!(
        publication,
        xen_guest::pv::P2mPublication {
            max_pfn: 4096,
            p2m_cr3: 0x123_4000,
            p2m_vaddr: 0x80_0000
        }
    );
    let mut shared = xen_sys::shared_info::new_zeroed();
    shared.arch.p2m_generation = 7;
    // SAFETY: a local shared info, no reference to it alive during the call.
    unsafe { publication.write(core::ptr::NonNull::from(&mut shared)) };
    assert_eq!(
        (
            shared.arch.max_pfn,
            shared.arch.p2m_cr3,
            shared.arch.p2m_vaddr,
            shared.arch.p2m_generation
        ),
        (4096, 0x123_4000, 0x80_0000, 0)
    );
    raw.mfn_list += 8;
    assert_eq!(StartInfo::new(raw).unwrap().p2m_publication(0x1234), None);
}

#[test]
fn the_ring_frames_are_converted_and_a_refusal_stops_there() {
    let mut raw = start_info(xen_guest::pv::MAGIC);
    raw.store_mfn = 0x42;
    raw.console.domU.mfn = 0x43;
    let page = core::ptr::NonNull::from(&mut raw);
    // SAFETY: a local start_info, no reference to it alive during the calls.
    unsafe { xen_guest::pv::convert_ring_frames(page, |mfn| Ok::<_, ()>(mfn + 0x100)) }.unwrap();
    // SAFETY: as above.
    let refused = unsafe {
        xen_guest::pv::convert_ring_frames(page, |mfn| if mfn == 0x142 { Err(mfn) } else { Ok(0) })
    };
    assert_eq!(refused, Err(0x142));
    // SAFETY: the union member the test wrote.
    let console = unsafe { raw.console.domU.mfn };
    assert_eq!((raw.store_mfn, console), (0x142, 0x143));
}
