//! The scenarios proving `cargo xtask testbed run`: a tiny program and a tiny kernel, each written
//! as its own cargo project outside the workspace (under `<target>/testbed/work`), built and run
//! the way a user runs theirs (`--dom0`: a static Linux program; `--domu`: a PV kernel); what they
//! print, streamed, and how they end are checked.

use std::path::PathBuf;
use std::process::Command;

use crate::user::{DOM0_PROGRAM_TIMEOUT, DomuEnd};
use crate::verdict::{CaseResult, Verdict};
use crate::{Arch, Error, Outcome, Result, Testbed, check_rust_target};

/// The program's package and binary.
const NAME: &str = "hello-xen";
/// The exit status it is asked for (and must hand back).
const STATUS: i32 = 7;
/// What it prints first.
const GREETING: &str = "hello from a program built outside the workspace";

const MANIFEST: &str = "[package]\n\
name = \"hello-xen\"\n\
version = \"0.1.0\"\n\
edition = \"2021\"\n\
\n\
# Its own workspace: not a member of the one it sits in.\n\
[workspace]\n";

const MAIN: &str = r#"//! Says hello with the Xen version from sysfs and exits with the status given.
fn main() {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/sys/hypervisor/version/{file}"))
            .map(|text| text.trim().to_string())
            .unwrap_or_else(|e| format!("?({e})"))
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!(
        "hello from a program built outside the workspace: Xen {}.{}{}, args {:?}",
        read("major"),
        read("minor"),
        read("extra"),
        args
    );
    let status = args.first().and_then(|a| a.parse().ok()).unwrap_or(0);
    std::process::exit(status);
}
"#;

/// What is built outside the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnCode {
    /// A static x86_64 Linux program, run with `--dom0`.
    Dom0Program,
    /// An x86_64 PV kernel, run with `--domu`.
    DomuKernel,
}

/// Writes the cargo project of `code` under the work directory, builds it as a user would, and
/// returns the binary.
pub(crate) fn build(testbed: &Testbed, code: OwnCode) -> Result<PathBuf> {
    let dir = testbed.work_dir().join(match code {
        OwnCode::Dom0Program => NAME,
        OwnCode::DomuKernel => DOMU_NAME,
    });
    let (name, target, files, rustflags) = match code {
        OwnCode::Dom0Program => (
            NAME,
            Arch::X86_64.linux_target(),
            vec![
                ("Cargo.toml", MANIFEST.to_string()),
                ("src/main.rs", MAIN.to_string()),
            ],
            "-C target-feature=+crt-static".to_string(),
        ),
        OwnCode::DomuKernel => (
            DOMU_NAME,
            "x86_64-unknown-none",
            vec![
                ("Cargo.toml", MANIFEST.replace(NAME, DOMU_NAME)),
                ("link.ld", DOMU_LINK.to_string()),
                ("src/main.rs", DOMU_MAIN.to_string()),
            ],
            // Linked at its address by the script, not position independent (Xen loads it there).
            format!(
                "-C link-arg=-T{} -C link-arg=--no-pie -C relocation-model=static",
                dir.join("link.ld").display()
            ),
        ),
    };
    check_rust_target(target)?;
    for (file, text) in &files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .current_dir(&dir)
        .env_remove("CARGO_TARGET_DIR")
        .env("RUSTFLAGS", rustflags)
        .args(["build", "--release", "--target", target]);
    testbed.run_cargo(cargo)?;
    Ok(dir.join("target").join(target).join("release").join(name))
}

/// Runs what [`build`] built and judges it.
pub(crate) fn run(testbed: &Testbed, code: OwnCode, binary: &std::path::Path) -> Result<Outcome> {
    match code {
        OwnCode::Dom0Program => run_dom0_program(testbed, binary),
        OwnCode::DomuKernel => run_domu_kernel(testbed, binary),
    }
}

/// Runs the built program as `cargo xtask testbed run --dom0 <binary> -- 7` does, and judges it.
fn run_dom0_program(testbed: &Testbed, binary: &std::path::Path) -> Result<Outcome> {
    let mut printed = Vec::new();
    let (mut outcome, status) = testbed.run_dom0_program(
        binary,
        &[STATUS.to_string()],
        DOM0_PROGRAM_TIMEOUT,
        &mut |line| {
            printed.push(line.to_string());
        },
    )?;
    let greeting = printed.iter().find(|line| line.starts_with(GREETING));
    let checks = [
        (
            "output_streamed",
            match greeting {
                Some(line) if line.contains("Xen 4.") && line.ends_with("args [\"7\"]") => Ok(()),
                Some(line) => Err(format!("unexpected line {line:?}")),
                None => Err(format!("no line starting {GREETING:?} in {printed:?}")),
            },
        ),
        (
            "exit_status_returned",
            match status {
                Some(STATUS) => Ok(()),
                other => Err(format!("exit status {other:?}, expected {STATUS}")),
            },
        ),
    ];
    outcome.verdict = verdict_of(checks, &outcome.verdict);
    Ok(outcome)
}

/// The verdict of `checks`, keeping the run's other problems. The run's dom0 command exits with
/// the user code's status, so QEMU's failure exit after a non-zero status is expected here.
fn verdict_of<const N: usize>(
    checks: [(&str, std::result::Result<(), String>); N],
    run: &Verdict,
) -> Verdict {
    Verdict {
        cases: checks
            .into_iter()
            .map(|(name, result)| {
                let result = match result {
                    Ok(()) => CaseResult::Passed,
                    Err(message) => CaseResult::Failed(message),
                };
                (name.to_string(), result)
            })
            .collect(),
        problems: run
            .problems
            .iter()
            .filter(|p| !p.starts_with("payload exited with failure"))
            .cloned()
            .collect(),
        banner: run.banner.clone(),
    }
}

/// The kernel's package and binary.
const DOMU_NAME: &str = "hello-domu";
/// What the kernel prints on its console.
const DOMU_GREETING: &str = "hello from a domU built outside the workspace";

const DOMU_LINK: &str = "ENTRY(_start)
PHDRS { text PT_LOAD FLAGS(7); note PT_NOTE; }
SECTIONS {
    . = 0x100000;
    .text : { KEEP(*(.text.entry)) *(.text .text.*) } :text
    .rodata : { *(.rodata .rodata.*) } :text
    .data : { *(.data .data.*) } :text
    .bss : ALIGN(4096) { *(.bss .bss.*) } :text
    .note.Xen : { KEEP(*(.note.Xen)) } :text :note
    /DISCARD/ : { *(.eh_frame*) *(.comment) }
}
";

/// Runs the built kernel as `cargo xtask testbed run --domu <kernel>` does, and judges it.
fn run_domu_kernel(testbed: &Testbed, kernel: &std::path::Path) -> Result<Outcome> {
    let mut printed = Vec::new();
    let (mut outcome, end) = testbed.run_domu_kernel(
        kernel,
        "pv",
        16,
        std::time::Duration::from_secs(30),
        &mut |line| printed.push(line.to_string()),
    )?;
    let checks = [
        (
            "console_streamed",
            if printed.iter().any(|line| line == DOMU_GREETING) {
                Ok(())
            } else {
                Err(format!("no line {DOMU_GREETING:?} in {printed:?}"))
            },
        ),
        (
            "powered_off",
            if end == DomuEnd::Poweroff {
                Ok(())
            } else {
                Err(format!("the domU ended with {end:?}"))
            },
        ),
    ];
    outcome.verdict = verdict_of(checks, &outcome.verdict);
    Ok(outcome)
}

const DOMU_MAIN: &str = r#"//! A tiny x86_64 PV domU: prints a line on its PV console ring and powers off.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::sync::atomic::{fence, Ordering};

// Xen's PV ELF notes (public/elfnote.h): GUEST_OS, XEN_VERSION, LOADER, VIRT_BASE 0,
// PADDR_OFFSET 0, ENTRY; then the entry: a stack, start_info (rsi) as the argument.
global_asm!(
    ".pushsection .note.Xen, \"a\", @note",
    ".macro note type, start, end",
    ".balign 4", ".long 4", ".long \\end - \\start", ".long \\type", ".asciz \"Xen\"",
    ".endm",
    "note 6, 1f, 2f", "1: .asciz \"hello-domu\"", "2:",
    "note 5, 1f, 2f", "1: .asciz \"xen-3.0\"", "2:",
    "note 8, 1f, 2f", "1: .asciz \"generic\"", "2:",
    "note 3, 1f, 2f", "1: .quad 0", "2:",
    "note 4, 1f, 2f", "1: .quad 0", "2:",
    "note 1, 1f, 2f", "1: .quad _start", "2:",
    ".popsection",
    ".pushsection .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "lea rsp, [rip + {stack} + 16384]",
    "mov rdi, rsi",
    "call {main}",
    "3: hlt",
    "jmp 3b",
    ".popsection",
    stack = sym STACK,
    main = sym main,
);

static mut STACK: [u8; 16384] = [0; 16384];

/// A hypercall through `syscall` (Xen's x86_64 PV ABI).
///
/// # Safety
/// `op` and its arguments must be a hypercall whose pointers are valid for it.
unsafe fn hypercall(op: u64, a1: u64, a2: u64) -> i64 {
    let ret: i64;
    // SAFETY: Xen handles `syscall` from the PV guest kernel; the caller vouches for the
    // arguments; `syscall` clobbers rcx and r11.
    unsafe {
        asm!("syscall", inlateout("rax") op as i64 => ret, in("rdi") a1, in("rsi") a2,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

const SCHED_OP: u64 = 29;
const SCHEDOP_YIELD: u64 = 0;
const SCHEDOP_SHUTDOWN: u64 = 2;
const EVENT_CHANNEL_OP: u64 = 32;
const EVTCHNOP_SEND: u64 = 4;
/// The read-only machine-to-physical table of a 64-bit PV guest.
const M2P: u64 = 0xffff_8000_0000_0000;

/// # Safety
/// Entered once, from `_start`, with Xen's start_info page.
unsafe extern "C" fn main(start_info: *const u8) -> ! {
    // SAFETY: start_info is mapped, with console.domU.mfn at 72 and its event channel at 80; the
    // toolstack maps the console page in the initial mapping (VIRT_BASE 0: address = pfn << 12),
    // found through the M2P; the page is `struct xencons_interface` (io/console.h): out[2048] at
    // 1024, out_cons at 3080, out_prod at 3084. The backend reads it concurrently: every access
    // is volatile. The hypercalls' arguments point at live locals.
    unsafe {
        let mfn = (start_info.add(72) as *const u64).read_volatile();
        let port = (start_info.add(80) as *const u32).read_volatile();
        let pfn = ((M2P + mfn * 8) as *const u64).read_volatile();
        let page = (pfn << 12) as *mut u8;
        let out = page.add(1024);
        let out_cons = page.add(3080) as *const u32;
        let out_prod = page.add(3084) as *mut u32;
        let text = b"hello from a domU built outside the workspace\n";
        let prod = out_prod.read_volatile();
        for (i, byte) in text.iter().enumerate() {
            out.add((prod as usize + i) & 2047).write_volatile(*byte);
        }
        fence(Ordering::SeqCst);
        out_prod.write_volatile(prod.wrapping_add(text.len() as u32));
        let send = [port];
        hypercall(EVENT_CHANNEL_OP, EVTCHNOP_SEND, send.as_ptr() as u64);
        // Power off only once xenconsoled consumed the line (bounded), or it is lost.
        for _ in 0..100_000 {
            if out_cons.read_volatile() == out_prod.read_volatile() {
                break;
            }
            hypercall(SCHED_OP, SCHEDOP_YIELD, 0);
        }
        let poweroff = [0u32];
        hypercall(SCHED_OP, SCHEDOP_SHUTDOWN, poweroff.as_ptr() as u64);
    }
    loop {}
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
"#;
