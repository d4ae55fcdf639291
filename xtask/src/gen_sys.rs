//! `cargo xtask gen-sys [--check]`: generates `xen-sys/src/{x86_64,aarch64}.rs` from Xen's public
//! headers (Debian's libxen-dev) with bindgen and Debian's libclang, then rewrites bindgen's output
//! so that it is the ABI and only the ABI:
//!
//! - every `XEN_GUEST_HANDLE(T)` and every plain pointer field becomes `crate::GuestHandle<T>` (a
//!   `u64`, so structures holding handles stay plain data), the `__guest_handle_*` types aliases
//!   of it;
//! - constants wrapped in `xen_mk_uint()`/`xen_mk_ulong()` are evaluated like plain numbers;
//! - zerocopy derives are added wherever the layout allows them;
//! - bindgen's layout tests become `const _: () = { assert!(..); }` after each type;
//! - types bindgen cannot derive `Debug` for (they hold a union) get a field-by-field `Debug`.
//!
//! The toolstack's versioned interfaces (`domctl.h`, `sysctl.h`: their layouts may change with
//! `XEN_DOMCTL_INTERFACE_VERSION` / `XEN_SYSCTL_INTERFACE_VERSION`) are generated once per
//! supported Xen release, each into its own module `xen-sys/src/<arch>/xen_<major>_<minor>.rs`:
//! 4.17 from the installed libxen-dev, 4.20 from Debian 13's libxen-dev, which the generator
//! downloads (as the testbed does, through a private apt configuration) and unpacks under
//! `target/xen-sys-headers/`.
//!
//! It also writes `xen-sys/tests/c_layout/{x86_64,aarch64}.rs`, the list of named types, fields
//! and constants that `xen-sys/tests/c_layout.rs` compares with a C compiler's values.
//! `--check` generates into a temporary directory and fails if anything differs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use bindgen::callbacks::{
    DiscoveredItem, DiscoveredItemId, IntKind, ParseCallbacks, Token, TokenKind,
};
use proc_macro2::TokenStream;
use quote::{ToTokens, format_ident, quote};

use crate::{Result, workspace_root};

/// Where Debian's libxen-dev puts Xen's public headers; `XEN_INCLUDE_DIR` overrides it.
const DEFAULT_XEN_INCLUDE_DIR: &str = "/usr/include/xen";

/// The headers every architecture's module covers, relative to the include directory.
const COMMON_HEADERS: &[&str] = &[
    "xen.h",
    "errno.h",
    "version.h",
    "features.h",
    "event_channel.h",
    "sched.h",
    "memory.h",
    "physdev.h",
    "vcpu.h",
    "grant_table.h",
    "hvm/hvm_op.h",
    "hvm/params.h",
    "io/blkif.h",
    "io/console.h",
    "io/xs_wire.h",
];

/// `DEFINE_RING_TYPES`' front and back halves (`blkif_front_ring`, ...): each end's private
/// indices and a pointer to the shared page in its own memory, no part of the ABI (the shared
/// page, `<name>_sring`, is).
const RING_PRIVATE_HALVES: &str = ".*_(front|back)_ring(_t)?";

/// From `sysctl.h` only the hypervisor console ring reader is taken (the rest is toolstack ABI
/// that changes with `XEN_SYSCTL_INTERFACE_VERSION`).
const SYSCTL_TYPES: &str = "xen_sysctl_readconsole";
const SYSCTL_HEADER_NOTE: &str = "sysctl.h (xen_sysctl_readconsole)";
const SYSCTL_VARS: &str = "XEN_SYSCTL_(readconsole|INTERFACE_VERSION)";

/// The versioned toolstack types each release's module holds: the domain control plane a dom0
/// tool needs (list, inspect, pause, destroy domains; the host's physical facts), and the
/// `xen_domctl` / `xen_sysctl` envelopes (their unions opaque: each member is a type above).
const VERSIONED_TYPES: &str = "xen_domctl|xen_sysctl|xen_domctl_(getdomaininfo|getvcpuinfo|max_mem)|\
     xen_sysctl_(getdomaininfolist|physinfo)";
/// The envelopes' unions, generated as opaque blobs of the right size and alignment.
const VERSIONED_OPAQUE: &str = "xen_(domctl|sysctl)__bindgen_ty_1";
const VERSIONED_VARS: &str = "XEN_(DOMCTL|SYSCTL)_INTERFACE_VERSION|\
     XEN_DOMCTL_(getdomaininfo|pausedomain|unpausedomain|destroydomain|max_mem|getvcpuinfo)|\
     XEN_SYSCTL_(getdomaininfolist|physinfo)|XEN_DOMINF_.*|XEN_SYSCTL_PHYSCAP_.*|\
     XEN_SYSCTL_CAP_.*";

/// A Xen release whose versioned toolstack interfaces are generated.
struct ToolstackRelease {
    /// Its module under each architecture's (`xen_4_17`).
    module: &'static str,
    /// Where its headers come from.
    source: HeaderSource,
}

enum HeaderSource {
    /// The installed libxen-dev (the machine's Debian 12: Xen 4.17).
    Installed,
    /// Debian suite `suite`'s libxen-dev, downloaded.
    Debian { suite: &'static str },
}

const TOOLSTACK_RELEASES: &[ToolstackRelease] = &[
    ToolstackRelease {
        module: "xen_4_17",
        source: HeaderSource::Installed,
    },
    ToolstackRelease {
        module: "xen_4_20",
        source: HeaderSource::Debian { suite: "trixie" },
    },
];

/// Function-like macros Xen's headers wrap numbers in (`#define DOMID_SELF xen_mk_uint(0x7FF0)`):
/// they only add a C suffix, so the generator drops them before evaluating a constant.
const NUMBER_MACROS: &[&str] = &["xen_mk_uint", "xen_mk_ulong", "xen_mk_ullong"];

struct Arch {
    /// The module in `xen-sys/src/` (`<module>.rs`).
    module: &'static str,
    /// The target clang compiles the headers for.
    clang_target: &'static str,
    /// Headers covered for this architecture only.
    extra_headers: &'static [&'static str],
}

const ARCHES: &[Arch] = &[
    Arch {
        module: "x86_64",
        clang_target: "x86_64-unknown-linux-gnu",
        extra_headers: &[
            "arch-x86/xen.h",
            "arch-x86/xen-x86_64.h",
            "arch-x86/cpuid.h",
            "arch-x86/hvm/start_info.h",
        ],
    },
    Arch {
        module: "aarch64",
        clang_target: "aarch64-unknown-linux-gnu",
        extra_headers: &["arch-arm.h"],
    },
];

pub(crate) fn run(args: &[String]) -> Result {
    let check = match args {
        [] => false,
        [flag] if flag == "--check" => true,
        _ => return Err("usage: cargo xtask gen-sys [--check]".into()),
    };
    let include_dir = std::env::var_os("XEN_INCLUDE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| DEFAULT_XEN_INCLUDE_DIR.into());
    if !include_dir.join("xen.h").is_file() {
        return Err(format!(
            "Xen's public headers are not in {} (install them: apt-get install libxen-dev)",
            include_dir.display()
        ));
    }
    let xen_version = libxen_dev_version()?;
    let releases = TOOLSTACK_RELEASES
        .iter()
        .map(|release| match release.source {
            HeaderSource::Installed => Ok((release, include_dir.clone(), xen_version.clone())),
            HeaderSource::Debian { suite } => {
                let (dir, version) = debian_headers(suite)?;
                Ok((release, dir, version))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let crate_dir = workspace_root().join("xen-sys");
    if !check {
        for path in generate_into(&crate_dir, &include_dir, &xen_version, &releases)? {
            eprintln!("wrote xen-sys/{path}");
        }
        return Ok(());
    }
    let temp_dir = std::env::temp_dir().join(format!("xen-sys-gen-{}", std::process::id()));
    let generated = generate_into(&temp_dir, &include_dir, &xen_version, &releases);
    let stale = generated.map(|paths| {
        paths
            .into_iter()
            .filter(|path| {
                let fresh = std::fs::read(temp_dir.join(path)).ok();
                fresh.is_none() || fresh != std::fs::read(crate_dir.join(path)).ok()
            })
            .map(|path| format!("xen-sys/{path}"))
            .collect::<Vec<_>>()
    });
    // Best effort: a leftover temporary directory is harmless.
    let _ = std::fs::remove_dir_all(&temp_dir);
    let stale = stale?;
    if stale.is_empty() {
        eprintln!("xen-sys is up to date with Xen's headers");
        Ok(())
    } else {
        Err(format!(
            "{} differ(s) from what the generator produces from the installed headers; \
             run `cargo xtask gen-sys` and commit the result",
            stale.join(", ")
        ))
    }
}

/// A toolstack release, the include directory of its headers and its libxen-dev's version.
type ReleaseHeaders<'a> = (&'a ToolstackRelease, PathBuf, String);

/// Generates every file into `crate_dir` (`src/<arch>.rs`, `src/<arch>/xen_*.rs`,
/// `tests/c_layout/<arch>.rs`), returning their paths relative to it.
fn generate_into(
    crate_dir: &Path,
    include_dir: &Path,
    xen_version: &str,
    releases: &[ReleaseHeaders<'_>],
) -> Result<Vec<String>> {
    let mut written = Vec::new();
    for arch in ARCHES {
        let (code, layout_list) = generate(arch, include_dir, xen_version)?;
        let mut files = vec![
            (format!("src/{}.rs", arch.module), code),
            (format!("tests/c_layout/{}.rs", arch.module), layout_list),
        ];
        for (release, dir, version) in releases {
            files.push((
                format!("src/{}/{}.rs", arch.module, release.module),
                generate_versioned(arch, dir, version)?,
            ));
        }
        for (path, contents) in files {
            let full = crate_dir.join(&path);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            std::fs::write(&full, contents)
                .map_err(|e| format!("cannot write {}: {e}", full.display()))?;
            written.push(path);
        }
    }
    Ok(written)
}

/// The version of Debian's libxen-dev, named in the generated files' header.
fn libxen_dev_version() -> Result<String> {
    let output = Command::new("dpkg-query")
        .args(["--showformat=${Version}", "--show", "libxen-dev"])
        .output()
        .map_err(|e| format!("cannot run dpkg-query: {e}"))?;
    if !output.status.success() {
        return Err("libxen-dev is not installed (apt-get install libxen-dev)".into());
    }
    String::from_utf8(output.stdout).map_err(|_| "dpkg-query printed non-UTF-8".into())
}

/// Debian suite `suite`'s libxen-dev, downloaded (through the testbed's private apt
/// configuration) and its `usr/include/xen` unpacked under `target/xen-sys-headers/`: the include
/// directory and the package's version.
fn debian_headers(suite: &str) -> Result<(PathBuf, String)> {
    let target = workspace_root().join("target");
    let apt = xen_testbed::apt::Apt::private(&target.join("testbed/apt"), suite)
        .map_err(|e| format!("apt for Debian {suite}: {e}"))?;
    let output = apt
        .command("apt-cache")
        .args(["show", "--no-all-versions", "libxen-dev:amd64"])
        .output()
        .map_err(|e| format!("cannot run apt-cache: {e}"))?;
    let version = String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("Version:").map(|v| v.trim().to_owned()))
        .ok_or_else(|| format!("no libxen-dev in Debian {suite} ({})", apt.describe()))?;
    let dir = target
        .join("xen-sys-headers")
        .join(format!("libxen-dev_{}", version.replace(':', "%3a")));
    let include = dir.join("usr/include/xen");
    if include.join("domctl.h").is_file() {
        return Ok((include, version));
    }
    let download = dir.join(".download");
    std::fs::create_dir_all(&download)
        .map_err(|e| format!("cannot create {}: {e}", download.display()))?;
    eprintln!("gen-sys: downloading libxen-dev={version} (Debian {suite})");
    let status = apt
        .command("apt-get")
        .args(["download", "-q", &format!("libxen-dev:amd64={version}")])
        .current_dir(&download)
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !status.success() {
        return Err(format!("apt-get download libxen-dev={version} failed"));
    }
    let deb = std::fs::read_dir(&download)
        .map_err(|e| format!("cannot read {}: {e}", download.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .ok_or("`apt-get download libxen-dev` left no .deb")?;
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&dir)
        .status()
        .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
    if !status.success() || !include.join("domctl.h").is_file() {
        return Err(format!("unpacking {} failed", deb.display()));
    }
    // Best effort: the unpacked headers are what counts.
    let _ = std::fs::remove_dir_all(&download);
    Ok((include, version))
}

/// The options every bindgen run of the generator shares: layout, derives, output form.
trait CommonOptions {
    fn common_options(self) -> Self;
}

impl CommonOptions for bindgen::Builder {
    fn common_options(self) -> Self {
        self.explicit_padding(true)
            .layout_tests(true)
            .derive_debug(true)
            .impl_debug(false)
            .derive_default(false)
            .derive_copy(true)
            .derive_eq(true)
            .derive_hash(false)
            .generate_comments(false)
            .disable_header_comment()
            .sort_semantically(true)
            .formatter(bindgen::Formatter::None)
    }
}

/// One release's versioned toolstack types for one architecture (see [`VERSIONED_TYPES`]).
fn generate_versioned(arch: &Arch, include_dir: &Path, xen_version: &str) -> Result<String> {
    let bindings = bindgen::Builder::default()
        .header_contents(
            "xen-sys-versioned.h",
            &format!(
                "{}#include \"domctl.h\"\n#include \"sysctl.h\"\n",
                wrapper_header(&[]).replace("#include \"sysctl.h\"\n", "")
            ),
        )
        .clang_args([
            format!("--target={}", arch.clang_target),
            "-ffreestanding".into(),
            "-nostdinc".into(),
            format!("-I{}", include_dir.display()),
            "-D__XEN_TOOLS__".into(),
        ])
        .allowlist_type(VERSIONED_TYPES)
        .allowlist_var(VERSIONED_VARS)
        .opaque_type(VERSIONED_OPAQUE)
        .use_core()
        .ctypes_prefix("core::ffi")
        .common_options()
        .parse_callbacks(Box::new(Callbacks {
            c_names: Arc::default(),
            tags: BTreeSet::new(),
        }))
        .generate()
        .map_err(|e| format!("bindgen failed for {}: {e}", arch.module))?;
    let mut file = syn::parse_file(&bindings.to_string())
        .map_err(|e| format!("cannot parse bindgen's output: {e}"))?;
    // An opaque union is one byte array: as a struct of the same `repr`, it (and the envelope
    // holding it) can be `IntoBytes`, so a hypercall argument can be built from it.
    for item in &mut file.items {
        if let syn::Item::Union(u) = item {
            if u.fields.named.len() == 1 {
                let (attrs, vis, ident, fields) = (&u.attrs, &u.vis, &u.ident, &u.fields);
                *item = syn::parse_quote! {
                    #(#attrs)* #[derive(PartialEq, Eq)] #vis struct #ident #fields
                };
            }
        }
    }
    let (body, _) = rewrite(file)?;
    let header = format!(
        "// @generated by `cargo xtask gen-sys`: do not edit, regenerate.\n\
         //\n\
         // Xen's versioned toolstack interfaces for {module}, from domctl.h and sysctl.h as\n\
         // Debian's libxen-dev {xen_version} ships them, compiled by libclang for\n\
         // {target} with __XEN_TOOLS__.\n",
        module = arch.module,
        target = arch.clang_target,
    );
    rustfmt(&format!("{header}\n{body}"))
}

/// One architecture's module, and the list of its layouts and constants that
/// `xen-sys/tests/c_layout.rs` compares with what a C compiler computes.
fn generate(arch: &Arch, include_dir: &Path, xen_version: &str) -> Result<(String, String)> {
    let headers: Vec<&str> = COMMON_HEADERS
        .iter()
        .chain(arch.extra_headers)
        .copied()
        .collect();
    let (raw, c_names) = run_bindgen(arch, include_dir, &headers)?;
    let file = syn::parse_file(&raw).map_err(|e| format!("cannot parse bindgen's output: {e}"))?;
    let (body, items) = rewrite(file)?;
    let layout_list = layout_list(&headers, &items, &c_names);
    let mut header = format!(
        "// @generated by `cargo xtask gen-sys`: do not edit, regenerate.\n\
         //\n\
         // The Xen public ABI for {module}, from Xen's public headers as Debian's libxen-dev\n\
         // {xen_version} ships them, compiled by libclang for {target}\n\
         // with __XEN_TOOLS__ (so __XEN_INTERFACE_VERSION__ is __XEN_LATEST_INTERFACE_VERSION__).\n\
         // Headers:",
        module = arch.module,
        target = arch.clang_target,
    );
    let mut line_len = "// Headers:".len();
    for name in headers.iter().copied().chain([SYSCTL_HEADER_NOTE]) {
        if line_len + name.len() > 96 {
            header.push_str("\n//  ");
            line_len = 4;
        }
        header.push(' ');
        header.push_str(name);
        line_len += name.len() + 1;
    }
    header.push('\n');
    let mut submodules = String::new();
    for release in TOOLSTACK_RELEASES {
        let (major, minor) = release
            .module
            .trim_start_matches("xen_")
            .split_once('_')
            .expect("module names are xen_<major>_<minor>");
        writeln!(
            submodules,
            "/// Xen {major}.{minor}'s versioned toolstack interfaces (domctl, sysctl).\n\
             pub mod {};",
            release.module
        )
        .expect("writing to a String cannot fail");
    }
    Ok((
        rustfmt(&format!("{header}\n{submodules}\n{body}"))?,
        layout_list,
    ))
}

/// A wrapper header: freestanding fixed-width integer types (LP64 on both targets), then the
/// covered headers.
fn wrapper_header(headers: &[&str]) -> String {
    let mut wrapper = String::from(
        "typedef signed char int8_t;\n\
         typedef unsigned char uint8_t;\n\
         typedef short int16_t;\n\
         typedef unsigned short uint16_t;\n\
         typedef int int32_t;\n\
         typedef unsigned int uint32_t;\n\
         typedef long int64_t;\n\
         typedef unsigned long uint64_t;\n",
    );
    for header in headers {
        writeln!(wrapper, "#include \"{header}\"").expect("writing to a String cannot fail");
    }
    wrapper.push_str("#include \"sysctl.h\"\n");
    wrapper
}

/// C spellings of the generated structs and unions (`struct evtchn_status`, `xen_uuid_t`), by
/// Rust name; anonymous ones have none.
type CNames = BTreeMap<String, String>;

fn run_bindgen(arch: &Arch, include_dir: &Path, headers: &[&str]) -> Result<(String, CNames)> {
    let c_names = Arc::new(Mutex::new(CNames::new()));
    let file_regex = format!(
        ".*/({})",
        headers
            .iter()
            .map(|h| h.replace('.', "\\."))
            .collect::<Vec<_>>()
            .join("|")
    );
    let bindings = bindgen::Builder::default()
        .header_contents("xen-sys-wrapper.h", &wrapper_header(headers))
        .clang_args([
            format!("--target={}", arch.clang_target),
            "-ffreestanding".into(),
            "-nostdinc".into(),
            format!("-I{}", include_dir.display()),
            "-D__XEN_TOOLS__".into(),
        ])
        .allowlist_file(file_regex)
        .blocklist_type(RING_PRIVATE_HALVES)
        .allowlist_type(SYSCTL_TYPES)
        .allowlist_var(SYSCTL_VARS)
        .use_core()
        .ctypes_prefix("core::ffi")
        .default_enum_style(bindgen::EnumVariation::NewType {
            is_bitfield: false,
            is_global: false,
        })
        .common_options()
        .parse_callbacks(Box::new(Callbacks {
            c_names: Arc::clone(&c_names),
            tags: c_tags(include_dir, headers)?,
        }))
        .generate()
        .map_err(|e| format!("bindgen failed for {}: {e}", arch.module))?;
    let c_names = std::mem::take(&mut *c_names.lock().expect("bindgen does not panic"));
    Ok((bindings.to_string(), c_names))
}

/// Every `struct NAME` / `union NAME` written in the covered headers, or declared by a
/// `DEFINE_RING_TYPES` in them.
fn c_tags(include_dir: &Path, headers: &[&str]) -> Result<BTreeSet<String>> {
    let mut tags = BTreeSet::new();
    for header in headers.iter().copied().chain(["sysctl.h"]) {
        let path = include_dir.join(header);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let words: Vec<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        for pair in words.windows(2) {
            if pair[0] == "struct" || pair[0] == "union" {
                tags.insert(format!("{} {}", pair[0], pair[1]));
            }
            // `DEFINE_RING_TYPES(name, ...)` (io/ring.h) declares the shared page's types.
            if pair[0] == "DEFINE_RING_TYPES" {
                tags.insert(format!("struct {}_sring", pair[1]));
                tags.insert(format!("union {}_sring_entry", pair[1]));
            }
        }
    }
    Ok(tags)
}

#[derive(Debug)]
struct Callbacks {
    c_names: Arc<Mutex<CNames>>,
    /// `struct NAME` and `union NAME` spellings found in the headers: a type named by a
    /// `typedef struct { .. } NAME` has none.
    tags: BTreeSet<String>,
}

impl ParseCallbacks for Callbacks {
    fn modify_macro(&self, _name: &str, tokens: &mut Vec<Token>) {
        tokens.retain(|token| {
            !(token.kind == TokenKind::Identifier
                && NUMBER_MACROS.iter().any(|m| m.as_bytes() == &*token.raw))
        });
    }

    fn new_item_found(&self, _id: DiscoveredItemId, item: DiscoveredItem) {
        let (keyword, original_name, final_name) = match item {
            DiscoveredItem::Struct {
                original_name,
                final_name,
            } => ("struct", original_name, final_name),
            DiscoveredItem::Union {
                original_name,
                final_name,
            } => ("union", original_name, final_name),
            _ => return,
        };
        let c_name = match original_name {
            Some(name) if self.tags.contains(&format!("{keyword} {name}")) => {
                format!("{keyword} {name}")
            }
            Some(name) => name,
            None => return,
        };
        self.c_names
            .lock()
            .expect("bindgen does not panic")
            .insert(final_name, c_name);
    }

    fn int_macro(&self, name: &str, _value: i64) -> Option<IntKind> {
        // Domain ids are `domid_t` (uint16_t) everywhere they are used.
        name.starts_with("DOMID_").then_some(IntKind::U16)
    }
}

fn rustfmt(code: &str) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2024", "--emit", "stdout"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run rustfmt: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(code.as_bytes())
        .map_err(|e| format!("cannot write to rustfmt: {e}"))?;
    let output = child
        .wait_with_output()
        .map_err(|e| format!("rustfmt failed: {e}"))?;
    if !output.status.success() {
        return Err("rustfmt failed on the generated code".into());
    }
    String::from_utf8(output.stdout).map_err(|_| "rustfmt printed non-UTF-8".into())
}

/// What zerocopy can derive for a type.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Caps {
    from_bytes: bool,
    into_bytes: bool,
}

impl Caps {
    const ALL: Caps = Caps {
        from_bytes: true,
        into_bytes: true,
    };
    const NONE: Caps = Caps {
        from_bytes: false,
        into_bytes: false,
    };

    fn and(self, other: Caps) -> Caps {
        Caps {
            from_bytes: self.from_bytes && other.from_bytes,
            into_bytes: self.into_bytes && other.into_bytes,
        }
    }
}

/// The Rust path of the generic guest handle type, defined once in `xen-sys/src/lib.rs`.
const GUEST_HANDLE: &str = "crate::GuestHandle";

/// Rewrites bindgen's output (see the module docs).
/// Returns the module's code and its items.
fn rewrite(file: syn::File) -> Result<(String, Vec<syn::Item>)> {
    let guest_handle: syn::Path = syn::parse_str(GUEST_HANDLE).expect("a valid path");

    // 1. Guest handles: `__guest_handle_NAME` (a struct or union holding `T *p`) become aliases of
    //    `GuestHandle<T>`, and every use of one, or of a plain pointer field, becomes `GuestHandle<T>`.
    let mut handles: BTreeMap<String, syn::Type> = BTreeMap::new();
    for item in &file.items {
        let (ident, fields) = match item {
            syn::Item::Struct(s) => (&s.ident, s.fields.iter().collect::<Vec<_>>()),
            syn::Item::Union(u) => (&u.ident, u.fields.named.iter().collect()),
            _ => continue,
        };
        if !ident.to_string().starts_with("__guest_handle_") {
            continue;
        }
        let pointee = fields.iter().find_map(|f| match (&f.ident, &f.ty) {
            (Some(name), syn::Type::Ptr(ptr)) if name == "p" => Some((*ptr.elem).clone()),
            _ => None,
        });
        match pointee {
            Some(pointee) => handles.insert(ident.to_string(), pointee),
            None => return Err(format!("guest handle `{ident}` has no pointer field `p`")),
        };
    }

    let mut items = Vec::new();
    let mut layout_checks: BTreeMap<String, Vec<syn::Stmt>> = BTreeMap::new();
    for item in file.items {
        match item {
            syn::Item::Const(c) if c.ident == "_" => {
                let (name, asserts) = layout_assertions(&c)?;
                if !handles.contains_key(&name) {
                    layout_checks.insert(name, asserts);
                }
            }
            syn::Item::Struct(s) if handles.contains_key(&s.ident.to_string()) => {
                items.push(handle_alias(&s.vis, &s.ident, &handles, &guest_handle));
            }
            syn::Item::Union(u) if handles.contains_key(&u.ident.to_string()) => {
                items.push(handle_alias(&u.vis, &u.ident, &handles, &guest_handle));
            }
            // bindgen's flexible array member helper: a plain `[T; 0]` does the same without
            // unsafe accessors.
            syn::Item::Struct(s) if s.ident == "__IncompleteArrayField" => {}
            syn::Item::Impl(i) if is_impl_of(&i, "__IncompleteArrayField") => {}
            syn::Item::Impl(i) if handles.keys().any(|h| is_impl_of(&i, h)) => {}
            other => items.push(other),
        }
    }
    let mut fields = FieldTypes {
        handles: &handles,
        guest_handle: &guest_handle,
    };
    for item in &mut items {
        match item {
            syn::Item::Struct(s) => syn::visit_mut::visit_fields_mut(&mut fields, &mut s.fields),
            syn::Item::Union(u) => {
                syn::visit_mut::visit_fields_named_mut(&mut fields, &mut u.fields)
            }
            _ => {}
        }
    }

    // 2. zerocopy derives, from a fixed point over the field types.
    let caps = derivable(&items);
    let mut out = TokenStream::new();
    out.extend(quote! {
        #[allow(unused_imports)]
        use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
    });
    let mut final_items = Vec::new();
    for mut item in items {
        let name = match &mut item {
            syn::Item::Struct(s) => {
                let cap = caps[&s.ident.to_string()];
                s.attrs.push(derive_attr(cap));
                Some(s.ident.to_string())
            }
            syn::Item::Union(u) => {
                let cap = caps[&u.ident.to_string()];
                u.attrs.push(derive_attr(cap));
                Some(u.ident.to_string())
            }
            _ => None,
        };
        item.to_tokens(&mut out);
        if let Some(debug) = debug_impl(&item) {
            debug.to_tokens(&mut out);
        }
        // 3. Each type's layout, as clang computed it, asserted right after the type.
        if let Some(asserts) = name.and_then(|n| layout_checks.remove(&n)) {
            out.extend(quote! { const _: () = { #(#asserts)* }; });
        }
        final_items.push(item);
    }
    if let Some(name) = layout_checks.keys().next() {
        return Err(format!(
            "layout checks for `{name}`, a type that was not generated"
        ));
    }
    Ok((out.to_string(), final_items))
}

/// A `Debug` impl for a struct or union bindgen could not derive one for (it holds a union):
/// fields by name, unions opaque.
fn debug_impl(item: &syn::Item) -> Option<syn::ItemImpl> {
    let (attrs, ident, fields) = match item {
        syn::Item::Struct(s) => (&s.attrs, &s.ident, Some(&s.fields)),
        syn::Item::Union(u) => (&u.attrs, &u.ident, None),
        _ => return None,
    };
    let derives_debug = attrs.iter().any(|attr| {
        attr.path().is_ident("derive") && attr.meta.to_token_stream().to_string().contains("Debug")
    });
    if derives_debug {
        return None;
    }
    let name = ident.to_string();
    let body = match fields {
        None => quote! { f.debug_struct(#name).finish_non_exhaustive() },
        Some(fields) => {
            let names = fields
                .iter()
                .filter_map(|f| f.ident.as_ref())
                .filter(|f| !f.to_string().starts_with("__bindgen_padding"));
            let labels = names.clone().map(|f| f.to_string());
            quote! { f.debug_struct(#name)#(.field(#labels, &self.#names))*.finish() }
        }
    };
    Some(syn::parse_quote! {
        impl ::core::fmt::Debug for #ident {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                #body
            }
        }
    })
}

fn is_impl_of(item: &syn::ItemImpl, name: &str) -> bool {
    matches!(&*item.self_ty, syn::Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == name))
}

fn handle_alias(
    vis: &syn::Visibility,
    ident: &syn::Ident,
    handles: &BTreeMap<String, syn::Type>,
    guest_handle: &syn::Path,
) -> syn::Item {
    let pointee = &handles[&ident.to_string()];
    syn::parse_quote! { #vis type #ident = #guest_handle<#pointee>; }
}

/// Rewrites field types: guest handles and plain pointers become `GuestHandle<T>`, bindgen's
/// flexible array helper becomes `[T; 0]`.
struct FieldTypes<'a> {
    handles: &'a BTreeMap<String, syn::Type>,
    guest_handle: &'a syn::Path,
}

impl syn::visit_mut::VisitMut for FieldTypes<'_> {
    fn visit_type_mut(&mut self, ty: &mut syn::Type) {
        let guest_handle = self.guest_handle;
        let replacement = match ty {
            syn::Type::Ptr(ptr) => {
                let pointee = &ptr.elem;
                Some(syn::parse_quote! { #guest_handle<#pointee> })
            }
            syn::Type::Path(path) if path.qself.is_none() => {
                let last = path.path.segments.last().expect("a path has a segment");
                if let Some(pointee) = self.handles.get(&last.ident.to_string()) {
                    Some(syn::parse_quote! { #guest_handle<#pointee> })
                } else if last.ident == "__IncompleteArrayField" {
                    match &last.arguments {
                        syn::PathArguments::AngleBracketed(args) => {
                            let element = &args.args;
                            Some(syn::parse_quote! { [#element; 0] })
                        }
                        _ => None,
                    }
                } else {
                    None
                }
            }
            _ => None,
        };
        match replacement {
            Some(new) => *ty = new,
            None => syn::visit_mut::visit_type_mut(self, ty),
        }
    }
}

/// Turns one of bindgen's layout test blocks (`["Size of T"][size_of::<T>() - 24usize];` ...)
/// into `assert!(size_of::<T>() == 24usize);` statements, returning the type they check.
fn layout_assertions(item: &syn::ItemConst) -> Result<(String, Vec<syn::Stmt>)> {
    let syn::Expr::Block(block) = &*item.expr else {
        return Err("unexpected bindgen layout test (not a block)".into());
    };
    let mut name = None;
    let mut asserts = Vec::new();
    for stmt in &block.block.stmts {
        let syn::Stmt::Expr(syn::Expr::Index(index), _) = stmt else {
            return Err(format!(
                "unexpected bindgen layout test: {}",
                stmt.to_token_stream()
            ));
        };
        let syn::Expr::Binary(diff) = &*index.index else {
            return Err(format!(
                "unexpected bindgen layout test: {}",
                stmt.to_token_stream()
            ));
        };
        let (actual, expected) = (&diff.left, &diff.right);
        asserts.push(syn::parse_quote! { assert!(#actual == #expected); });
        if name.is_none() {
            name = layout_test_subject(&index.expr);
        }
    }
    let name = name.ok_or("a bindgen layout test without a type name")?;
    Ok((name, asserts))
}

/// The type a layout test message (`["Size of T"]`, `["Offset of field: T::f"]`) is about.
fn layout_test_subject(message: &syn::Expr) -> Option<String> {
    let syn::Expr::Array(array) = message else {
        return None;
    };
    let Some(syn::Expr::Lit(syn::ExprLit {
        lit: syn::Lit::Str(text),
        ..
    })) = array.elems.first()
    else {
        return None;
    };
    let text = text.value();
    let subject = text
        .strip_prefix("Size of ")
        .or_else(|| text.strip_prefix("Alignment of "))
        .or_else(|| {
            text.strip_prefix("Offset of field: ")
                .and_then(|t| t.split("::").next())
        })?;
    Some(subject.to_owned())
}

/// What zerocopy can derive for each generated struct and union.
fn derivable(items: &[syn::Item]) -> BTreeMap<String, Caps> {
    let mut types: BTreeMap<String, (bool, Vec<syn::Type>)> = BTreeMap::new();
    let mut aliases: BTreeMap<String, syn::Type> = BTreeMap::new();
    for item in items {
        match item {
            syn::Item::Struct(s) => {
                let fields = s.fields.iter().map(|f| f.ty.clone()).collect();
                types.insert(s.ident.to_string(), (false, fields));
            }
            syn::Item::Union(u) => {
                let fields = u.fields.named.iter().map(|f| f.ty.clone()).collect();
                types.insert(u.ident.to_string(), (true, fields));
            }
            syn::Item::Type(t) => {
                aliases.insert(t.ident.to_string(), (*t.ty).clone());
            }
            _ => {}
        }
    }
    // Start from "everything derives" and remove what a field forbids until nothing changes.
    let mut caps: BTreeMap<String, Caps> = types.keys().map(|k| (k.clone(), Caps::ALL)).collect();
    loop {
        let mut changed = false;
        for (name, (is_union, fields)) in &types {
            let mut cap = fields
                .iter()
                .fold(Caps::ALL, |acc, ty| acc.and(type_caps(ty, &caps, &aliases)));
            if *is_union {
                // zerocopy derives `IntoBytes` for unions only behind an unstable cfg; a union
                // whose variants differ in size has padding anyway.
                cap.into_bytes = false;
            }
            if caps[name] != cap {
                caps.insert(name.clone(), cap);
                changed = true;
            }
        }
        if !changed {
            return caps;
        }
    }
}

fn type_caps(
    ty: &syn::Type,
    caps: &BTreeMap<String, Caps>,
    aliases: &BTreeMap<String, syn::Type>,
) -> Caps {
    match ty {
        syn::Type::Array(array) => type_caps(&array.elem, caps, aliases),
        syn::Type::Path(path) => {
            let Some(last) = path.path.segments.last() else {
                return Caps::NONE;
            };
            let name = last.ident.to_string();
            if path.path.segments.len() > 1 && path.path.segments[0].ident == "crate" {
                // `crate::GuestHandle<T>`: a `u64` whatever `T` is.
                return Caps::ALL;
            }
            match name.as_str() {
                "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64"
                | "i128" | "isize" | "c_char" | "c_schar" | "c_uchar" | "c_short" | "c_ushort"
                | "c_int" | "c_uint" | "c_long" | "c_ulong" | "c_longlong" | "c_ulonglong" => {
                    Caps::ALL
                }
                _ => {
                    if let Some(cap) = caps.get(&name) {
                        *cap
                    } else if let Some(target) = aliases.get(&name) {
                        type_caps(target, caps, aliases)
                    } else {
                        Caps::NONE
                    }
                }
            }
        }
        _ => Caps::NONE,
    }
}

fn derive_attr(cap: Caps) -> syn::Attribute {
    let mut derives = Vec::new();
    if cap.from_bytes {
        derives.push(format_ident!("FromBytes"));
    }
    if cap.into_bytes {
        derives.push(format_ident!("IntoBytes"));
    }
    derives.push(format_ident!("Immutable"));
    derives.push(format_ident!("KnownLayout"));
    syn::parse_quote! { #[derive(#(#derives),*)] }
}

/// Fields bindgen adds or cannot name in C: padding, anonymous members.
fn is_c_field(name: &str) -> bool {
    !(name.starts_with("__bindgen_") || name.starts_with("_bitfield_"))
}

/// The C spelling of a field bindgen renamed because it is a Rust keyword (`type_`).
fn c_field_name(rust_name: &str) -> &str {
    const KEYWORDS: &[&str] = &[
        "as", "async", "await", "box", "break", "const", "continue", "crate", "dyn", "else",
        "enum", "extern", "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match",
        "mod", "move", "mut", "pub", "ref", "return", "self", "static", "struct", "super", "trait",
        "true", "try", "type", "unsafe", "use", "where", "while", "yield",
    ];
    match rust_name.strip_suffix('_') {
        Some(stripped) if KEYWORDS.contains(&stripped) => stripped,
        _ => rust_name,
    }
}

/// `tests/c_layout/<arch>.rs`: every named type's size, alignment and field offsets and every
/// integer constant, for the test to compute both in Rust and with a C compiler.
fn layout_list(headers: &[&str], items: &[syn::Item], c_names: &CNames) -> String {
    let mut types = Vec::new();
    let mut consts = Vec::new();
    let mut enum_consts = Vec::new();
    for item in items {
        let (ident, fields): (&syn::Ident, Vec<&syn::Field>) = match item {
            syn::Item::Struct(s) => (&s.ident, s.fields.iter().collect()),
            syn::Item::Union(u) => (&u.ident, u.fields.named.iter().collect()),
            syn::Item::Const(c) if is_integer(&c.ty) => {
                consts.push(c.ident.clone());
                continue;
            }
            syn::Item::Impl(i) => {
                for impl_item in &i.items {
                    if let syn::ImplItem::Const(c) = impl_item {
                        let self_ty = &i.self_ty;
                        let name = &c.ident;
                        enum_consts.push(quote! { (#self_ty, #name) });
                    }
                }
                continue;
            }
            _ => continue,
        };
        let Some(c_name) = c_names.get(&ident.to_string()) else {
            continue;
        };
        if matches!(item, syn::Item::Struct(s) if matches!(s.fields, syn::Fields::Unnamed(_))) {
            continue;
        }
        let fields = fields
            .iter()
            .filter_map(|f| f.ident.as_ref())
            .filter(|f| is_c_field(&f.to_string()))
            .map(|f| {
                let c_field = c_field_name(&f.to_string()).to_owned();
                quote! { (#f, #c_field) }
            });
        types.push(quote! { (#c_name, #ident, [#(#fields),*]) });
    }
    let mut out = String::from(
        "// @generated by `cargo xtask gen-sys`: do not edit, regenerate.\n\
         //\n\
         // The headers, the named types (C spelling, Rust name, fields) and the integer constants\n\
         // whose values `tests/c_layout.rs` computes both in Rust and with a C compiler.\n\n\
         xen_layout!(\n    [\n",
    );
    for header in headers.iter().copied().chain(["sysctl.h"]) {
        writeln!(out, "        {header:?},").expect("writing to a String cannot fail");
    }
    let mut section = |entries: Vec<TokenStream>| {
        out.push_str("    ],\n    [\n");
        for entry in entries {
            let entry = entry.to_string().replace(" , ", ", ");
            writeln!(out, "        {entry},").expect("writing to a String cannot fail");
        }
    };
    section(types);
    section(consts.iter().map(ToTokens::to_token_stream).collect());
    section(enum_consts);
    out.push_str("    ]\n)\n");
    out
}

fn is_integer(ty: &syn::Type) -> bool {
    matches!(ty, syn::Type::Path(p) if p.path.get_ident().is_some_and(|i| {
        matches!(
            i.to_string().as_str(),
            "u8" | "u16" | "u32" | "u64" | "i8" | "i16" | "i32" | "i64"
        )
    }))
}
