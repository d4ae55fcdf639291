//! Freestanding Rust kernels that boot as Xen's dom0 and test the hypercall crates.
//!
//! Built for `x86_64-unknown-none` with `--features pv` (a PV64 kernel) or
//! `--features pvh` (a PVH kernel), and for `aarch64-unknown-none` (an arm64
//! Image after `llvm-objcopy -O binary`). Each runs the cases of the `cases` module and
//! reports them on Xen's console with the `XENTEST` protocol. Then, if every case
//! passed, it announces `XENTEST SHUTDOWN reboot` and asks Xen to reboot the
//! machine (`SCHEDOP_shutdown`), which ends QEMU; otherwise it exits QEMU with
//! failure.
//! `cargo xtask testbed` builds and boots them; on the host this crate only
//! builds a program that says so.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod cases;
#[cfg(target_os = "none")]
mod console;
#[cfg(target_os = "none")]
mod shared_info;

/// The host build: explains how the guests are run.
#[cfg(not(target_os = "none"))]
fn main() {
    println!(
        "xen-test-guest is a freestanding kernel: build it with\n  \
         cargo build --release -p xen-test-guest --target x86_64-unknown-none --features pv|pvh\n  \
         cargo build --release -p xen-test-guest --target aarch64-unknown-none\n\
         and boot it as Xen's dom0 with `cargo xtask testbed`."
    );
}

/// The panic handler: reports `XENTEST PANIC` and exits QEMU with failure.
#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut console = arch::panic_console();
    xen_testbed_protocol::report_panic(&mut console, info);
    arch::exit(1)
}
