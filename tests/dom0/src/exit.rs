//! Ending the QEMU run from dom0 userland, as the testbed protocol asks.

/// Exits QEMU with `code` (0: all passed); returns only if that failed, with the reason.
#[cfg(target_arch = "x86_64")]
pub(crate) fn exit_qemu(code: u8) -> std::io::Error {
    use std::os::unix::fs::FileExt;
    // QEMU's `isa-debug-exit` device at I/O port 0xf4 exits with status `(code << 1) | 1`;
    // /dev/port maps file offsets to I/O ports (Documentation/admin-guide/devices.txt, char 1:4).
    match std::fs::OpenOptions::new().write(true).open("/dev/port") {
        Ok(port) => match port.write_at(&[code], 0xf4) {
            Ok(_) => std::io::Error::other("QEMU did not exit (no isa-debug-exit device?)"),
            Err(error) => error,
        },
        Err(error) => error,
    }
}

/// Exits QEMU with `code` (0: all passed); returns only if that failed, with the reason.
#[cfg(target_arch = "aarch64")]
pub(crate) fn exit_qemu(code: u8) -> std::io::Error {
    /// Semihosting `SYS_EXIT` (ARM "Semihosting for AArch32 and AArch64", 6.5).
    const SYS_EXIT: u64 = 0x18;
    /// `ADP_Stopped_ApplicationExit`: the second word is the exit code.
    const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;
    let block: [u64; 2] = [ADP_STOPPED_APPLICATION_EXIT, u64::from(code)];
    // SAFETY:
    // - `hlt #0xf000` is the AArch64 semihosting trap. QEMU started with
    //   `-semihosting-config enable=on,userspace=on` handles it from EL0 and exits; without
    //   semihosting the instruction raises an exception Linux turns into SIGILL/SIGTRAP, which ends
    //   this process: no memory of ours is touched either way.
    // - x1 points at `block`, two live, initialized 64-bit words, as SYS_EXIT on AArch64 requires;
    //   x0 (the operation, and the result register) is declared clobbered.
    unsafe {
        core::arch::asm!(
            "hlt #0xf000",
            inout("x0") SYS_EXIT => _,
            in("x1") block.as_ptr(),
            options(nostack, readonly),
        );
    }
    std::io::Error::other("semihosting SYS_EXIT returned (QEMU without -semihosting-config?)")
}
