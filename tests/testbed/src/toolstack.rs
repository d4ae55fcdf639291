//! Debian's Xen toolstack for a Linux dom0: `xl`, the C `xenstored`, `xenconsoled`, `xen-init-dom0`,
//! `libxl-save-helper`, the `xenstore-*` tools, and the shared libraries they load.
//!
//! The packages are downloaded in one batched `apt-get download`, pinned to the versions `apt-cache`
//! reports, and unpacked into the cache. Which files dom0 gets is computed from the programs'
//! `DT_NEEDED` entries (read with the testbed's own ELF reader), followed through the libraries,
//! plus `libgcc_s.so.1`, which glibc loads with `dlopen` (without it `xl create` aborts).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::apt::Apt;
use crate::artifacts::{candidate_versions, extract};
use crate::release::Release;
use crate::{Arch, Error, Result, command_output, elf};

/// The packages unpacked for the toolstack (each qualified with the architecture for apt; `{xen}`
/// is the release's Xen version). Which of their files dom0 gets is decided by [`PROGRAMS`]'
/// library closure.
pub const PACKAGES: &[&str] = &[
    "xen-utils-{xen}",
    "xen-utils-common",
    "xenstore-utils",
    "libxencall1",
    "libxenevtchn1",
    "libxenforeignmemory1",
    "libxengnttab1",
    "libxenmisc{xen}",
    "libxenstore4",
    "libxentoollog1",
    "libxentoolcore1",
    "libxendevicemodel1",
    "libxenhypfs1",
    "libyajl2",
    "libfdt1",
    "libc6",
    "libgcc-s1",
    "liblzma5",
    "libuuid1",
    "zlib1g",
    "libzstd1",
];

/// The programs dom0 runs, as paths in the packages (`{bin}`: the release's toolstack directory).
pub const PROGRAMS: &[&str] = &[
    "{bin}/xl",
    "{bin}/xenstored",
    "{bin}/xenconsoled",
    "{bin}/xen-init-dom0",
    // Run by libxl for `xl save` and `xl restore` (without it: "cannot execute").
    "{bin}/libxl-save-helper",
    "usr/bin/xenstore",
];

/// `xenstore` acts by the name it is run as: these are links to it.
pub const XENSTORE_TOOLS: &[&str] = &[
    "xenstore-read",
    "xenstore-write",
    "xenstore-ls",
    "xenstore-list",
    "xenstore-rm",
    "xenstore-exists",
    "xenstore-watch",
];

/// Data files the programs read.
const DATA_FILES: &[&str] = &["etc/xen/xl.conf"];

/// Loaded with `dlopen` by glibc (`pthread_cancel`), so no `DT_NEEDED` names it.
const DLOPENED: &[&str] = &["libgcc_s.so.1"];

/// The toolstack of one architecture, as initramfs entries.
#[derive(Debug, Clone)]
pub struct Toolstack {
    /// Regular files: path in dom0 (relative to `/`) and path on the host.
    pub files: Vec<(String, PathBuf)>,
    /// Symbolic links: path in dom0 (relative to `/`) and target.
    pub links: Vec<(String, String)>,
    /// `package=version` of every package.
    pub versions: Vec<String>,
    /// Where the programs are (to add to `PATH`).
    pub bin_dir: String,
}

impl Arch {
    /// The Debian multiarch triple (library directories).
    fn multiarch(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-linux-gnu",
            Arch::Aarch64 => "aarch64-linux-gnu",
        }
    }
}

/// Makes sure the toolstack of `arch` in `release` (packages from `apt`) is unpacked under `cache`
/// and returns its files.
pub fn fetch(cache: &Path, release: &Release, apt: &Apt, arch: Arch) -> Result<Toolstack> {
    let names: Vec<String> = PACKAGES
        .iter()
        .map(|p| arch.apt_name(&release.fill(p)))
        .collect();
    let versions = candidate_versions(apt, &names)?;
    let pinned: Vec<String> = names
        .iter()
        .zip(&versions)
        .map(|(name, version)| format!("{name}={version}"))
        .collect();
    let dir = cache.join(arch.debian()).join(format!(
        "toolstack_{:016x}",
        digest(pinned.join("\n").as_bytes())
    ));
    let stamp = dir.join(".complete");
    if !stamp.exists() {
        download(apt, &dir, &pinned)?;
        fs::write(&stamp, pinned.join("\n")).map_err(|e| Error::io(&stamp, e))?;
    }
    let bin_dir = release.toolstack_bin_dir();
    let programs: Vec<String> = PROGRAMS
        .iter()
        .map(|p| p.replace("{bin}", &bin_dir))
        .collect();
    let mut toolstack = closure(&dir, arch, &programs)?;
    toolstack.versions = pinned;
    toolstack.bin_dir = bin_dir;
    Ok(toolstack)
}

/// Downloads `pinned` (`name:arch=version`) in one `apt-get download` and unpacks each into `dir`.
fn download(apt: &Apt, dir: &Path, pinned: &[String]) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let debs = dir.join(".download");
    fs::create_dir_all(&debs).map_err(|e| Error::io(&debs, e))?;
    eprintln!(
        "testbed: downloading the toolstack ({} packages)",
        pinned.len()
    );
    command_output(
        apt.command("apt-get")
            .args(["download", "-q"])
            .args(pinned)
            .current_dir(&debs),
    )?;
    for entry in fs::read_dir(&debs).map_err(|e| Error::io(&debs, e))? {
        let deb = entry.map_err(|e| Error::io(&debs, e))?.path();
        if deb.extension().is_some_and(|ext| ext == "deb") {
            extract(&deb, dir, &[])?;
        }
    }
    fs::remove_dir_all(&debs).map_err(|e| Error::io(&debs, e))
}

/// The protocol's 64-bit FNV-1a digest of `bytes`: names the cache directory of one set of
/// versions.
fn digest(bytes: &[u8]) -> u64 {
    let mut digest = xen_testbed_protocol::bulk::Digest::new();
    digest.update(bytes);
    digest.value()
}

/// The programs, data files, their libraries' closure and the loader, from the unpacked `root`.
fn closure(root: &Path, arch: Arch, programs: &[String]) -> Result<Toolstack> {
    let mut tree = Tree {
        root,
        files: BTreeSet::new(),
        links: BTreeSet::new(),
    };
    let search: Vec<String> = [
        format!("lib/{}", arch.multiarch()),
        format!("usr/lib/{}", arch.multiarch()),
        "lib".into(),
        "usr/lib".into(),
    ]
    .into();
    let mut loaded: BTreeSet<String> = BTreeSet::new();
    let mut interpreters = BTreeSet::new();
    let mut queue: Vec<Wanted> = programs.iter().map(|p| Wanted::Path(p.clone())).collect();
    queue.extend(
        DLOPENED
            .iter()
            .map(|soname| Wanted::Soname(soname.to_string())),
    );
    while let Some(next) = queue.pop() {
        let path = match next {
            Wanted::Path(path) => path,
            Wanted::Soname(soname) => {
                if !loaded.insert(soname.clone()) {
                    continue;
                }
                search
                    .iter()
                    .map(|dir| format!("{dir}/{soname}"))
                    .find(|candidate| tree.exists(candidate))
                    .ok_or_else(|| {
                        Error::new(format!(
                            "toolstack: no {soname} in the {arch} packages (searched {search:?}): add its package to toolstack::PACKAGES"
                        ))
                    })?
            }
        };
        let file = tree.add(&path)?;
        let bytes = fs::read(&file).map_err(|e| Error::io(&file, e))?;
        let dynamic = elf::dynamic(&bytes)
            .ok_or_else(|| Error::new(format!("toolstack: {path}: not an ELF64 object")))?;
        if let Some(interpreter) = dynamic.interpreter {
            interpreters.insert(interpreter);
        }
        queue.extend(dynamic.needed.into_iter().map(Wanted::Soname));
    }
    // The loader a program names (e.g. /lib64/ld-linux-x86-64.so.2); a link to the packaged one if
    // that path is not in the packages.
    for interpreter in interpreters {
        let path = interpreter.trim_start_matches('/').to_string();
        if tree.exists(&path) {
            tree.add(&path)?;
            continue;
        }
        let name = path.rsplit('/').next().unwrap_or(&path).to_string();
        let packaged = search
            .iter()
            .map(|dir| format!("{dir}/{name}"))
            .find(|candidate| tree.exists(candidate))
            .ok_or_else(|| Error::new(format!("toolstack: no loader {interpreter}")))?;
        tree.add(&packaged)?;
        tree.links.insert((path, format!("/{packaged}")));
    }
    for data in DATA_FILES {
        tree.add(data)?;
    }
    for tool in XENSTORE_TOOLS {
        tree.links
            .insert((format!("usr/bin/{tool}"), "xenstore".to_string()));
    }
    Ok(Toolstack {
        files: tree
            .files
            .into_iter()
            .map(|path| {
                let host = root.join(&path);
                (path, host)
            })
            .collect(),
        links: tree.links.into_iter().collect(),
        versions: Vec::new(),
        bin_dir: String::new(),
    })
}

/// A file the closure needs.
enum Wanted {
    /// A path in the tree.
    Path(String),
    /// A library, looked up in the library directories.
    Soname(String),
}

/// The entries chosen from an unpacked package tree.
struct Tree<'a> {
    root: &'a Path,
    files: BTreeSet<String>,
    links: BTreeSet<(String, String)>,
}

impl Tree<'_> {
    fn exists(&self, path: &str) -> bool {
        self.root.join(path).symlink_metadata().is_ok()
    }

    /// Adds `path` (relative to the root); a symbolic link is kept as a link and followed inside
    /// the tree (an absolute target means the tree's root, not the host's). Returns the host path
    /// of the file it ends at.
    fn add(&mut self, path: &str) -> Result<PathBuf> {
        let mut path = path.to_string();
        for _ in 0..16 {
            let host = self.root.join(&path);
            let metadata = host.symlink_metadata().map_err(|e| Error::io(&host, e))?;
            if !metadata.file_type().is_symlink() {
                self.files.insert(path);
                return Ok(host);
            }
            let target = fs::read_link(&host).map_err(|e| Error::io(&host, e))?;
            let target_text = target.to_string_lossy().into_owned();
            let next = if target.is_absolute() {
                target.clone()
            } else {
                Path::new(&path)
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join(&target)
            };
            self.links.insert((path.clone(), target_text));
            path = normalize(&next);
        }
        Err(Error::new(format!("toolstack: symlink loop at {path}")))
    }
}

/// `path` without `.`, `..` and the leading `/`, as a path relative to the tree's root.
fn normalize(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_followed_inside_the_tree() {
        let root = std::env::temp_dir().join(format!("toolstack-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("lib/x")).expect("mkdir");
        fs::create_dir_all(root.join("lib64")).expect("mkdir");
        fs::write(root.join("lib/x/libc.so.6.real"), b"x").expect("write");
        std::os::unix::fs::symlink("libc.so.6.real", root.join("lib/x/libc.so.6")).expect("ln");
        std::os::unix::fs::symlink("/lib/x/libc.so.6", root.join("lib64/ld.so")).expect("ln");
        let mut tree = Tree {
            root: &root,
            files: BTreeSet::new(),
            links: BTreeSet::new(),
        };
        let file = tree.add("lib64/ld.so").expect("added");
        assert_eq!(file, root.join("lib/x/libc.so.6.real"));
        assert_eq!(
            tree.files.iter().collect::<Vec<_>>(),
            ["lib/x/libc.so.6.real"]
        );
        assert_eq!(
            tree.links.iter().cloned().collect::<Vec<_>>(),
            [
                ("lib/x/libc.so.6".to_string(), "libc.so.6.real".to_string()),
                ("lib64/ld.so".to_string(), "/lib/x/libc.so.6".to_string()),
            ]
        );
        assert!(tree.add("lib/missing.so").is_err());
        fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn normalizes_relative_targets() {
        assert_eq!(normalize(Path::new("usr/bin/../lib/a.so")), "usr/lib/a.so");
        assert_eq!(normalize(Path::new("/lib/./x")), "lib/x");
    }
}
