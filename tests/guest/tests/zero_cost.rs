//! Zero cost, shown: builds the x86_64 guests and disassembles `probe_xen_version`
//! (the typed `xen_version()` wrapper on the guest's backend, kept out of line),
//! asserting it is the hypercall instruction and a few moves: no `call` at all
//! (so no memcpy, no allocator, no hypercall page), no stack buffer copies.
//!
//! Needs the `x86_64-unknown-none` target and `llvm-tools`
//! (`rustup component add llvm-tools`); fails with that message otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cargo_target_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    // A separate directory: the outer `cargo test` holds the lock of its own.
    base.join("zero-cost")
}

fn llvm_objdump() -> PathBuf {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("run rustc --print sysroot");
    let sysroot = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let host = std::env::var("TARGET").unwrap_or_else(|_| "x86_64-unknown-linux-gnu".into());
    let path = sysroot
        .join("lib/rustlib")
        .join(host)
        .join("bin/llvm-objdump");
    assert!(
        path.exists(),
        "{} is missing: rustup component add llvm-tools",
        path.display()
    );
    path
}

/// Builds the guest with `feature` and returns the disassembly of `probe_xen_version`.
fn probe_disassembly(feature: &str) -> Vec<String> {
    let target_dir = cargo_target_dir().join(feature);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "xen-test-guest"])
        .args(["--target", "x86_64-unknown-none", "--features", feature])
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building the {feature} guest failed");
    let elf = target_dir.join("x86_64-unknown-none/release/xen-test-guest");
    let out = Command::new(llvm_objdump())
        .args([
            "-d",
            "--no-show-raw-insn",
            "--disassemble-symbols=probe_xen_version",
        ])
        .arg(&elf)
        .output()
        .expect("run llvm-objdump");
    assert!(out.status.success(), "llvm-objdump failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let (address, insn) = line.trim().split_once(':')?;
            let is_address = !address.is_empty() && address.bytes().all(|b| b.is_ascii_hexdigit());
            is_address.then(|| insn.trim().to_owned())
        })
        .filter(|insn| !insn.starts_with("int3"))
        .collect();
    println!(
        "{feature} guest, probe_xen_version:\n  {}",
        lines.join("\n  ")
    );
    assert!(
        !lines.is_empty(),
        "probe_xen_version not found in {}",
        elf.display()
    );
    lines
}

fn assert_direct(lines: &[String], instructions: &[&str]) {
    for insn in instructions {
        assert!(
            lines
                .iter()
                .any(|l| l.split_whitespace().next() == Some(*insn)),
            "no {insn} in probe_xen_version"
        );
    }
    let calls: Vec<_> = lines.iter().filter(|l| l.starts_with("call")).collect();
    assert!(calls.is_empty(), "calls on the direct path: {calls:?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("memcpy") || l.contains("alloc")),
        "memcpy or allocation in probe_xen_version"
    );
    // The hypercall, the result decoding and the stores of a `Result<Version>`.
    assert!(
        lines.len() <= 40,
        "{} instructions: not a thin wrapper",
        lines.len()
    );
}

#[test]
fn pv_xen_version_is_one_syscall() {
    assert_direct(&probe_disassembly("pv"), &["syscall"]);
}

#[test]
fn pvh_xen_version_is_one_vmcall_or_vmmcall() {
    // The vendor's instruction is chosen at run time: both appear, one branch.
    assert_direct(&probe_disassembly("pvh"), &["vmcall", "vmmcall"]);
}
