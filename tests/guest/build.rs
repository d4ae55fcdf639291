//! Linker arguments for the freestanding builds; nothing for the host build.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link");
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "none" {
        return;
    }
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let pv = env::var_os("CARGO_FEATURE_PV").is_some();
    let pvh = env::var_os("CARGO_FEATURE_PVH").is_some();
    let script = match (arch.as_str(), pv, pvh) {
        ("x86_64", true, false) | ("x86_64", false, true) => "x86_64.ld",
        ("x86_64", _, _) => panic!("build the x86_64 guest with exactly one of --features pv, pvh"),
        ("aarch64", false, false) => "aarch64.ld",
        ("aarch64", _, _) => panic!("the pv and pvh features are x86_64 only"),
        (other, _, _) => panic!("no freestanding guest for {other}"),
    };
    println!("cargo:rustc-link-arg-bins=-T{dir}/link/{script}");
    // x86_64: the PVH entry is 32-bit code with absolute addresses, and Xen loads
    // the PV and PVH images at their link addresses: a fixed-address executable.
    // aarch64: Xen loads the Image wherever dom0's RAM is, so it is a
    // position-independent executable that applies its own relocations.
    let pie = if arch == "x86_64" {
        "--no-pie"
    } else {
        "--pie"
    };
    println!("cargo:rustc-link-arg-bins={pie}");
    if arch == "aarch64" {
        // The relocations may patch .rodata (vtables): the entry applies them
        // before the MMU is on, so nothing is read-only yet.
        println!("cargo:rustc-link-arg-bins=-znotext");
    }
}
