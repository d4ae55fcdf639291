//! The generated layouts and constants equal what a C compiler computes from the same headers.
//!
//! `tests/c_layout/<arch>.rs` (written by `cargo xtask gen-sys`) lists every named struct and
//! union with its fields, and every integer constant. For each, this test takes the Rust value
//! (`size_of`, `align_of`, `offset_of!`, the constant) and the C value: it compiles a C file that
//! stores the same expressions in an array (`cc` for x86_64, `clang --target=aarch64-linux-gnu`
//! for aarch64) and reads the array back from the object file, so nothing has to run on the
//! target.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One value computed on both sides: `c_expr` by the C compiler, `rust` here.
struct Entry {
    c_expr: String,
    rust: u64,
}

struct Layout {
    headers: Vec<&'static str>,
    entries: Vec<Entry>,
}

fn entry(c_expr: String, rust: u64) -> Entry {
    Entry { c_expr, rust }
}

macro_rules! xen_layout {
    (
        [$($header:literal),* $(,)?],
        [$(($c_name:literal, $ty:ident, [$(($field:ident, $c_field:literal)),* $(,)?])),* $(,)?],
        [$($constant:ident),* $(,)?],
        [$(($enum_ty:ident, $variant:ident)),* $(,)?] $(,)?
    ) => {
        crate::Layout {
            headers: vec![$($header),*],
            entries: {
                let mut entries = Vec::new();
                $(
                    entries.push(crate::entry(
                        format!("sizeof({})", $c_name),
                        ::core::mem::size_of::<$ty>() as u64,
                    ));
                    entries.push(crate::entry(
                        format!("_Alignof({})", $c_name),
                        ::core::mem::align_of::<$ty>() as u64,
                    ));
                    $(
                        entries.push(crate::entry(
                            format!("offsetof({}, {})", $c_name, $c_field),
                            ::core::mem::offset_of!($ty, $field) as u64,
                        ));
                    )*
                )*
                $(
                    entries.push(crate::entry(stringify!($constant).to_owned(), $constant as u64));
                )*
                $(
                    entries.push(crate::entry(
                        stringify!($variant).to_owned(),
                        u64::from($enum_ty::$variant.0),
                    ));
                )*
                entries
            },
        }
    };
}

fn x86_64_layout() -> Layout {
    use xen_sys::x86_64::*;
    include!("c_layout/x86_64.rs")
}

fn aarch64_layout() -> Layout {
    use xen_sys::aarch64::*;
    include!("c_layout/aarch64.rs")
}

/// Where Debian's libxen-dev puts Xen's public headers; `XEN_INCLUDE_DIR` overrides it.
fn xen_include_dir() -> PathBuf {
    let dir = std::env::var_os("XEN_INCLUDE_DIR")
        .map_or_else(|| "/usr/include/xen".into(), PathBuf::from);
    assert!(
        dir.join("xen.h").is_file(),
        "Xen's public headers are not in {} (install them: apt-get install libxen-dev)",
        dir.display()
    );
    dir
}

/// Compiles `layout`'s C expressions into an object file with `compiler` and returns their values.
fn c_values(arch: &str, compiler: &[&str], layout: &Layout) -> Vec<u64> {
    let include_dir = xen_include_dir();
    let work_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("c_layout-{arch}"));
    std::fs::create_dir_all(&work_dir).expect("cannot create the test's directory");
    let mut source = String::from("#include <stddef.h>\n#include <stdint.h>\n");
    for header in &layout.headers {
        source.push_str(&format!("#include \"{header}\"\n"));
    }
    source.push_str(
        "__attribute__((used, section(\"xen_layout\")))\n\
         const unsigned long long xen_sys_layout_values[] = {\n",
    );
    for entry in &layout.entries {
        source.push_str(&format!("    (unsigned long long)({}),\n", entry.c_expr));
    }
    source.push_str("};\n");
    let c_file = work_dir.join("layout.c");
    let object = work_dir.join("layout.o");
    std::fs::write(&c_file, source).expect("cannot write the C file");
    let (program, args) = compiler.split_first().expect("a compiler command");
    let output = Command::new(program)
        .args(args)
        .args(["-ffreestanding", "-D__XEN_TOOLS__", "-c", "-o"])
        .arg(&object)
        .arg("-I")
        .arg(&include_dir)
        .arg(&c_file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (apt-get install gcc clang): {e}"));
    assert!(
        output.status.success(),
        "{program} could not compile {} against {} (apt-get install libxen-dev):\n{}",
        c_file.display(),
        include_dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let elf = std::fs::read(&object).expect("cannot read the object file");
    let bytes = elf_section(&elf, "xen_layout").expect("no xen_layout section in the object file");
    bytes
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect()
}

/// The contents of the section called `name` in a little-endian ELF64 object.
fn elf_section<'a>(elf: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| {
        let value = u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?);
        usize::try_from(value).ok()
    };
    // ELF64 header: e_shoff at 0x28, e_shentsize 0x3a, e_shnum 0x3c, e_shstrndx 0x3e.
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let section_headers = u64_at(0x28)?;
    let entry_size = usize::from(u16_at(0x3a)?);
    let count = usize::from(u16_at(0x3c)?);
    let names_index = usize::from(u16_at(0x3e)?);
    // Section header: sh_name at 0, sh_offset at 0x18, sh_size at 0x20.
    let section = |index: usize| {
        let header = section_headers + index * entry_size;
        let offset = u64_at(header + 0x18)?;
        let size = u64_at(header + 0x20)?;
        Some((u32_at(header)?, elf.get(offset..offset + size)?))
    };
    let (_, names) = section(names_index)?;
    (0..count).find_map(|index| {
        let (name_offset, contents) = section(index)?;
        let rest = names.get(usize::try_from(name_offset).ok()?..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        (&rest[..end] == name.as_bytes()).then_some(contents)
    })
}

fn compare(arch: &str, compiler: &[&str], layout: &Layout) {
    let c = c_values(arch, compiler, layout);
    assert_eq!(
        c.len(),
        layout.entries.len(),
        "the C array has the wrong length"
    );
    let mismatches: Vec<String> = layout
        .entries
        .iter()
        .zip(&c)
        .filter(|(entry, c)| entry.rust != **c)
        .map(|(entry, c)| format!("  {}: C {c}, Rust {}", entry.c_expr, entry.rust))
        .collect();
    assert!(
        mismatches.is_empty(),
        "xen_sys::{arch} differs from {}:\n{}",
        compiler.join(" "),
        mismatches.join("\n")
    );
    eprintln!(
        "xen_sys::{arch}: {} values equal {}'s",
        c.len(),
        compiler.join(" ")
    );
}

#[test]
#[cfg_attr(miri, ignore = "runs a C compiler")]
fn x86_64_equals_c() {
    let compiler: &[&str] = if cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        &["cc"]
    } else {
        &["clang", "--target=x86_64-linux-gnu"]
    };
    compare("x86_64", compiler, &x86_64_layout());
}

#[test]
#[cfg_attr(miri, ignore = "runs a C compiler")]
fn aarch64_equals_c() {
    compare(
        "aarch64",
        &["clang", "--target=aarch64-linux-gnu"],
        &aarch64_layout(),
    );
}

/// The facts other crates depend on, stated once more by hand.
#[test]
fn x86_64_abi_facts() {
    use core::mem::{offset_of, size_of};
    use xen_sys::x86_64::*;
    assert_eq!(size_of::<sched_poll>(), 24);
    assert_eq!(size_of::<evtchn_status>(), 24);
    assert_eq!(size_of::<evtchn_alloc_unbound>(), 8);
    // Xen 4.17 has no `connection` field (later releases append one, making 3092 bytes).
    assert_eq!(size_of::<xencons_interface>(), 3088);
    assert_eq!(offset_of!(xencons_interface, in_prod), 3076);
    assert_eq!(size_of::<vcpu_info>(), 64);
    assert_eq!(offset_of!(shared_info, evtchn_pending), 2048);
    assert_eq!(offset_of!(shared_info, evtchn_mask), 2560);
    assert_eq!(size_of::<xen_hvm_param>(), 16);
    assert_eq!(offset_of!(xen_hvm_param, index), 4);
    assert_eq!(offset_of!(xen_hvm_param, value), 8);
    assert_eq!(DOMID_SELF, 0x7FF0);
    assert_eq!(__HYPERVISOR_xen_version, 17);
    assert_eq!(__HYPERVISOR_event_channel_op, 32);
    assert_eq!(EVTCHNOP_alloc_unbound, 6);
    assert_eq!(HVM_PARAM_CONSOLE_EVTCHN, 18);
    assert_eq!(xen_errno::XEN_ENOSYS.0, 38);
}
