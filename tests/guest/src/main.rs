//! Freestanding Rust kernels that boot as Xen's dom0 and test the hypercall crates.
//!
//! Built for `x86_64-unknown-none` with `--features pv` (a PV64 kernel) or
//! `--features pvh` (a PVH kernel), and for `aarch64-unknown-none` (an arm64
//! Image after `llvm-objcopy -O binary`). Each runs the cases of the `cases` module and
//! reports them on Xen's console with the `XENTEST` protocol. Then, if every case
//! passed, it announces `XENTEST SHUTDOWN reboot` and asks Xen to reboot the
//! machine (`SCHEDOP_shutdown`), which ends QEMU; otherwise it exits QEMU with
//! failure.
//!
//! With `--features domu` (added to `pv` or `pvh`, or alone on aarch64) the same
//! kernels are a domU instead, created by the toolstack in a Linux dom0: they
//! report on their PV console ring and exchange an event channel and a granted
//! page with dom0 (the `domu` module).
//!
//! `cargo xtask testbed` builds and boots them; on the host this crate only
//! builds a program that says so.
#![cfg_attr(target_os = "none", no_std, no_main)]

// The domU has a heap (its xenstore client's buffers, the block run's requests).
#[cfg(all(target_os = "none", feature = "domu"))]
extern crate alloc;

#[cfg(target_os = "none")]
mod arch;
#[cfg(all(target_os = "none", not(feature = "domu")))]
mod cases;
#[cfg(all(target_os = "none", not(feature = "domu")))]
mod console;
#[cfg(all(target_os = "none", feature = "domu"))]
mod domu;
#[cfg(all(target_os = "none", not(feature = "domu")))]
mod evtchn;
#[cfg(target_os = "none")]
mod fail;
#[cfg(all(target_os = "none", not(feature = "domu")))]
mod grant;
#[cfg(target_os = "none")]
mod shared_info;
#[cfg(all(
    target_os = "none",
    any(not(feature = "domu"), all(target_arch = "x86_64", feature = "pv"))
))]
mod upcall;

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
#[cfg(all(target_os = "none", not(feature = "domu")))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut console = arch::panic_console();
    xen_testbed_protocol::report_panic(&mut console, info);
    arch::exit(1)
}

/// The domU's panic handler: reports `XENTEST PANIC` on the console ring (once
/// found), then crashes the domain.
#[cfg(all(target_os = "none", feature = "domu"))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    arch::domu_panic(info)
}
