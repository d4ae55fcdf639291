//! A freestanding x86_64 PV guest kernel that writes "hello from a Rust PV guest" to Xen's
//! console with `CONSOLEIO_write` and powers itself off with `SCHEDOP_shutdown`.
//!
//! Build it with `cargo build -p xen-rust-hypercall-native --example pv_hello --target
//! x86_64-unknown-none`; on other targets it is a placeholder `main`. The ELF notes below
//! make it a Xen PV image (`public/elfnote.h`; Xen's libelf loads an image whose `LOADER` is
//! `generic` and whose `XEN_VERSION` is `xen-3.0`); with no `VIRT_BASE` note it is loaded at
//! its link addresses and entered at the ELF entry point, in 64-bit guest kernel mode, with
//! `rsp` at the top of the boot stack (`public/xen.h`, "start_info").
//!
//! Xen's default policy lets only the hardware domain (or any domain, on a Xen built with
//! `CONFIG_VERBOSE_DEBUG`) write to its console; elsewhere the write fails with `XEN_EPERM`
//! and the guest crashes itself instead of powering off, which the toolstack reports.

#![cfg_attr(all(target_os = "none", target_arch = "x86_64"), no_std, no_main)]

#[cfg(all(target_os = "none", target_arch = "x86_64"))]
mod guest {
    use xen_hypercall::ShutdownReason;
    use xen_hypercall::console::ConsoleOps;
    use xen_hypercall::sched::SchedOps;
    use xen_hypercall_native::PvHypercall;

    /// One ELF note of Xen's (`name` "Xen"), its descriptor padded to 4 bytes.
    #[repr(C, align(4))]
    struct Note<const N: usize> {
        namesz: u32,
        descsz: u32,
        kind: u32,
        name: [u8; 4],
        desc: [u8; N],
    }

    impl<const N: usize> Note<N> {
        /// A note whose descriptor is the NUL-terminated `text` (`N` a multiple of 4, at
        /// least `text.len() + 1`).
        const fn string(kind: u32, text: &[u8]) -> Self {
            let mut desc = [0; N];
            let mut i = 0;
            while i < text.len() {
                desc[i] = text[i];
                i += 1;
            }
            Self {
                namesz: 4,
                descsz: text.len() as u32 + 1,
                kind,
                name: *b"Xen\0",
                desc,
            }
        }
    }

    /// `XEN_ELFNOTE_*` numbers (`public/elfnote.h`).
    const XEN_VERSION: u32 = 5;
    const GUEST_OS: u32 = 6;
    const LOADER: u32 = 8;

    #[repr(C)]
    struct Notes {
        guest_os: Note<8>,
        xen_version: Note<8>,
        loader: Note<8>,
    }

    // A section whose name starts with `.note` is an `SHT_NOTE` section, which the linker
    // keeps and puts in a `PT_NOTE` segment, where Xen's libelf looks for these notes.
    #[used]
    #[unsafe(link_section = ".note.Xen")]
    static NOTES: Notes = Notes {
        guest_os: Note::string(GUEST_OS, b"hello"),
        xen_version: Note::string(XEN_VERSION, b"xen-3.0"),
        loader: Note::string(LOADER, b"generic"),
    };

    /// The entry point Xen jumps to.
    #[unsafe(no_mangle)]
    extern "C" fn _start() -> ! {
        // SAFETY: Xen entered this image as a 64-bit PV guest kernel (the notes above), and
        // nothing here leaves guest kernel mode.
        let xen = unsafe { PvHypercall::new() };
        let reason = match xen.console_write(b"hello from a Rust PV guest\n") {
            Ok(()) => ShutdownReason::POWEROFF,
            Err(_) => ShutdownReason::CRASH,
        };
        let _ = xen.shutdown(reason);
        loop {
            core::hint::spin_loop();
        }
    }

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        loop {
            core::hint::spin_loop();
        }
    }
}

#[cfg(not(all(target_os = "none", target_arch = "x86_64")))]
fn main() {
    println!("pv_hello is a guest kernel: build it with --target x86_64-unknown-none");
}
