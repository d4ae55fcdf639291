//! Links the freestanding examples at fixed addresses: Xen's PV loader applies no relocations.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-none") {
        println!("cargo:rustc-link-arg-examples=--no-pie");
    }
}
