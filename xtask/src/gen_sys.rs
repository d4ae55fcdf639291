//! `cargo xtask gen-sys [--check]`: generates `xen-sys/src/{x86_64,aarch64}.rs` from Xen's public
//! headers (Debian's libxen-dev) with bindgen, then rewrites bindgen's output so that it is the
//! ABI and only the ABI:
//!
//! - every `XEN_GUEST_HANDLE(T)` becomes `crate::GuestHandle<T>` (a `u64`, so structs holding
//!   handles stay plain data);
//! - zerocopy derives are added wherever the layout allows them;
//! - bindgen's layout checks become `const _: () = assert!(..)` items.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use bindgen::callbacks::{IntKind, ParseCallbacks, Token, TokenKind};
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
    "event_channel.h",
    "sched.h",
    "memory.h",
    "physdev.h",
    "vcpu.h",
    "grant_table.h",
    "hvm/hvm_op.h",
    "hvm/params.h",
    "io/console.h",
];

/// From `sysctl.h` only the hypervisor console ring reader is taken (the rest is toolstack ABI
/// that changes with `XEN_SYSCTL_INTERFACE_VERSION`).
const SYSCTL_TYPES: &str = "xen_sysctl_readconsole";
const SYSCTL_HEADER_NOTE: &str = "sysctl.h (xen_sysctl_readconsole)";
const SYSCTL_VARS: &str = "XEN_SYSCTL_(readconsole|INTERFACE_VERSION)";

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
    let out_dir = workspace_root().join("xen-sys/src");
    let mut stale = Vec::new();
    for arch in ARCHES {
        let code = generate(arch, &include_dir, &xen_version)?;
        let path = out_dir.join(format!("{}.rs", arch.module));
        if check {
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current != code {
                stale.push(format!("xen-sys/src/{}.rs", arch.module));
            }
        } else {
            std::fs::write(&path, code)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} differ from what the generator produces; run `cargo xtask gen-sys` and commit the result",
            stale.join(", ")
        ))
    }
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

fn generate(arch: &Arch, include_dir: &Path, xen_version: &str) -> Result<String> {
    let headers: Vec<&str> = COMMON_HEADERS
        .iter()
        .chain(arch.extra_headers)
        .copied()
        .collect();
    let raw = run_bindgen(arch, include_dir, &headers)?;
    let file = syn::parse_file(&raw).map_err(|e| format!("cannot parse bindgen's output: {e}"))?;
    let body = rewrite(file)?;
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
    rustfmt(&format!("{header}\n{body}"))
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

fn run_bindgen(arch: &Arch, include_dir: &Path, headers: &[&str]) -> Result<String> {
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
        .allowlist_type(SYSCTL_TYPES)
        .allowlist_var(SYSCTL_VARS)
        .use_core()
        .ctypes_prefix("core::ffi")
        .default_enum_style(bindgen::EnumVariation::NewType {
            is_bitfield: false,
            is_global: false,
        })
        .explicit_padding(true)
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
        .parse_callbacks(Box::new(Callbacks))
        .generate()
        .map_err(|e| format!("bindgen failed for {}: {e}", arch.module))?;
    Ok(bindings.to_string())
}

#[derive(Debug)]
struct Callbacks;

impl ParseCallbacks for Callbacks {
    fn modify_macro(&self, _name: &str, tokens: &mut Vec<Token>) {
        tokens.retain(|token| {
            !(token.kind == TokenKind::Identifier
                && NUMBER_MACROS.iter().any(|m| m.as_bytes() == &*token.raw))
        });
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
fn rewrite(file: syn::File) -> Result<String> {
    if std::env::var_os("GEN_SYS_RAW").is_some() {
        return Ok(file.into_token_stream().to_string());
    }
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
    }
    if let Some(name) = layout_checks.keys().next() {
        return Err(format!(
            "layout checks for `{name}`, a type that was not generated"
        ));
    }
    Ok(out.to_string())
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
