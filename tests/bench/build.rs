//! Wraps libc's `mmap` and `munmap` at link time (`-Wl,--wrap=`), so that the
//! benchmark counts every call the backend makes, independently of the
//! backend's own counters. The wrappers are in `src/os_calls.rs`.

fn main() {
    // The privcmd backend, hence this program, exists on Linux only.
    if std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux") {
        println!("cargo:rustc-link-arg-bins=-Wl,--wrap=mmap,--wrap=munmap");
    }
}
