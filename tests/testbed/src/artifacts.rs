//! The hypervisor, dom0 kernel, Xen modules and busybox, fetched with apt and cached.
//!
//! Packages are resolved with `apt-cache` (local, no network) on every run; a package is downloaded
//! (`apt-get download`) and unpacked (`dpkg-deb --fsys-tarfile | tar -x`, only the needed files) only
//! when the cache does not already hold that exact version, so a second run downloads nothing.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::apt::Apt;
use crate::release::Release;
use crate::{Arch, Error, Result, command_output};

/// The Xen modules dom0 tests need, in the order they are loaded (dependencies are added before).
pub const XEN_MODULES: &[&str] = &[
    "xen-privcmd",
    "xen-evtchn",
    "xen-gntdev",
    "xen-gntalloc",
    "xenfs",
];

/// Linux's block backend, loaded only by the dom0s that serve a disk to a domU
/// ([`crate::initramfs::Preamble::BlockBackend`]): blkback and the loop device that backs its
/// disk with a file.
pub const BLOCK_BACKEND_MODULES: &[&str] = &["xen-blkback", "loop"];

/// The modules of a Linux domU ([`crate::linux_domu`]) beyond [`XEN_MODULES`]: its block
/// frontend.
pub const LINUX_DOMU_MODULES: &[&str] = &["xen-blkfront"];

/// The kernel package's members kept: the image and the directories holding the modules above
/// (`{modules}`: the release's modules directory).
const KERNEL_MEMBERS: &[&str] = &[
    "./boot/vmlinuz-*",
    "./{modules}/*/kernel/drivers/xen/*",
    "./{modules}/*/kernel/drivers/block/loop.ko*",
    "./{modules}/*/kernel/drivers/block/xen-blkback/*",
    "./{modules}/*/kernel/drivers/block/xen-blkfront.ko*",
];

/// The cached artifacts of one architecture.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The architecture.
    pub arch: Arch,
    /// The hypervisor, in a form `qemu -kernel` boots.
    pub xen: PathBuf,
    /// The Linux dom0 kernel.
    pub kernel: PathBuf,
    /// The kernel package's image as shipped (a compressed bzImage on x86_64), for a Linux domU.
    pub kernel_image: PathBuf,
    /// The kernel modules to load, dependencies first.
    pub modules: Vec<PathBuf>,
    /// The block backend's modules ([`BLOCK_BACKEND_MODULES`]), dependencies first, not in
    /// `modules`.
    pub block_backend_modules: Vec<PathBuf>,
    /// A Linux domU's modules ([`LINUX_DOMU_MODULES`]), dependencies first, not in `modules`.
    pub linux_domu_modules: Vec<PathBuf>,
    /// The static busybox binary.
    pub busybox: PathBuf,
    /// `package=version` of everything above.
    pub versions: Vec<String>,
    /// The release they come from.
    pub release: Release,
}

/// The packages of one architecture, resolved to names and versions.
struct Packages {
    xen: (String, String),
    kernel: (String, String),
    busybox: (String, String),
}

impl Arch {
    /// The Debian architecture name.
    pub(crate) fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// `pkg` qualified with this architecture, for apt.
    pub(crate) fn apt_name(self, package: &str) -> String {
        format!("{package}:{}", self.debian())
    }
}

/// Makes sure the artifacts of `arch` in `release` (packages from `apt`) are in `cache` (under
/// `<target>/testbed/cache`) and returns them.
pub fn fetch(cache: &Path, release: &Release, apt: &Apt, arch: Arch) -> Result<Artifacts> {
    if arch == Arch::Aarch64 && release.host_apt {
        check_foreign_arch("arm64")?;
    }
    let packages = resolve(release, apt, arch)?;
    let hypervisor = release.hypervisor_file(arch);
    let dir = cache.join(arch.debian());
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;

    let pattern = format!("./boot/xen-{}-*", release.xen);
    let xen_dir = unpacked(
        apt,
        &dir,
        &packages.xen,
        arch,
        &[pattern.as_str()],
        |root| {
            let out = root.join("xen");
            match arch {
                Arch::X86_64 => {
                    // The package ships a gzip'd 32-bit multiboot ELF; QEMU's -kernel wants it plain.
                    let compressed = root.join(&hypervisor);
                    let plain = command_output(Command::new("gzip").arg("-dc").arg(&compressed))?;
                    fs::write(&out, plain).map_err(|e| Error::io(&out, e))
                }
                Arch::Aarch64 => rename(&root.join(&hypervisor), &out),
            }
        },
    )?;
    let members: Vec<String> = KERNEL_MEMBERS
        .iter()
        .map(|member| member.replace("{modules}", release.modules_dir()))
        .collect();
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    let kernel_dir = unpacked(apt, &dir, &packages.kernel, arch, &members, |root| {
        unpack_kernel(root, arch)
    })?;
    let busybox = release.busybox_file();
    let busybox_dir = unpacked(
        apt,
        &dir,
        &packages.busybox,
        arch,
        &[format!("./{busybox}").as_str()],
        |root| rename(&root.join(busybox), &root.join("busybox")),
    )?;

    let listed = |order: &str| -> Result<Vec<PathBuf>> {
        let path = kernel_dir.join(order);
        Ok(fs::read_to_string(&path)
            .map_err(|e| Error::io(&path, e))?
            .lines()
            .map(|name| kernel_dir.join(format!("{name}.ko")))
            .collect())
    };
    let modules = listed(MODULES_ORDER)?;
    let block_backend_modules = listed(BLOCK_BACKEND_ORDER)?;
    let linux_domu_modules = listed(LINUX_DOMU_ORDER)?;
    let kernel = match arch {
        // Xen takes ~3 s to decompress the XZ bzImage under TCG: boot the ELF inside it.
        Arch::X86_64 => uncompressed_kernel(&kernel_dir)?,
        Arch::Aarch64 => kernel_dir.join("vmlinuz"),
    };
    Ok(Artifacts {
        arch,
        xen: xen_dir.join("xen"),
        kernel,
        kernel_image: kernel_dir.join("vmlinuz"),
        modules,
        block_backend_modules,
        linux_domu_modules,
        busybox: busybox_dir.join("busybox"),
        versions: [&packages.xen, &packages.kernel, &packages.busybox]
            .iter()
            .map(|(name, version)| format!("{name}={version}"))
            .collect(),
        release: *release,
    })
}

/// Checks that the foreign dpkg architecture `debian_arch` is configured, or names the command that
/// configures it (`cargo xtask setup` is the one place the machine is set up).
fn check_foreign_arch(debian_arch: &str) -> Result<()> {
    let foreign = command_output(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    if String::from_utf8_lossy(&foreign)
        .split_whitespace()
        .any(|a| a == debian_arch)
    {
        return Ok(());
    }
    Err(Error::new(format!(
        "the {debian_arch} packages need the dpkg architecture {debian_arch}: {SETUP}"
    )))
}

/// Resolves the package names (the kernel's ABI number comes from the `linux-image-*` metapackage)
/// and their candidate versions.
fn resolve(release: &Release, apt: &Apt, arch: Arch) -> Result<Packages> {
    let metapackage = arch.apt_name(&format!("linux-image-{}", arch.debian()));
    let depends = command_output(apt.command("apt-cache").args(["depends", &metapackage]))?;
    let prefix = release.kernel_package_prefix();
    let kernel = String::from_utf8_lossy(&depends)
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: "))
        .map(|dep| dep.split(':').next().unwrap_or(dep).to_string())
        .find(|dep| dep.starts_with(&prefix))
        .ok_or_else(|| {
            Error::new(format!(
                "`apt-cache depends {metapackage}` names no {prefix}* kernel"
            ))
        })?;
    // arm64: the `-unsigned` package has the plain Image Xen boots.
    let kernel = match arch {
        Arch::X86_64 => kernel,
        Arch::Aarch64 => format!("{kernel}-unsigned"),
    };
    let names = [
        release.hypervisor_package(arch),
        kernel,
        "busybox-static".to_string(),
    ];
    let specs: Vec<String> = names.iter().map(|name| arch.apt_name(name)).collect();
    let [xen, kernel, busybox] = names;
    let [xen_version, kernel_version, busybox_version]: [String; 3] =
        candidate_versions(apt, &specs)?
            .try_into()
            .expect("one version per package");
    Ok(Packages {
        xen: (xen, xen_version),
        kernel: (kernel, kernel_version),
        busybox: (busybox, busybox_version),
    })
}

/// The versions `apt-get download` would fetch of `packages` (`name:arch`), in their order, from one
/// `apt-cache show` call.
pub(crate) fn candidate_versions(apt: &Apt, packages: &[String]) -> Result<Vec<String>> {
    let show = command_output(
        apt.command("apt-cache")
            .args(["show", "--no-all-versions"])
            .args(packages),
    )
    .map_err(|e| {
        Error::new(format!(
            "{e}\n(is the package index current? {})",
            apt.describe()
        ))
    })?;
    let show = String::from_utf8_lossy(&show);
    // One stanza per package: `Package:`, `Architecture:` and `Version:` fields.
    let stanzas: Vec<(String, String)> = show
        .split("\n\n")
        .filter_map(|stanza| {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .map(str::trim)
            };
            Some((
                format!("{}:{}", field("Package:")?, field("Architecture:")?),
                field("Version:")?.to_string(),
            ))
        })
        .collect();
    packages
        .iter()
        .map(|package| {
            stanzas
                .iter()
                .find(|(name, _)| {
                    name == package
                        || name
                            .strip_suffix(":all")
                            .is_some_and(|n| package.starts_with(&format!("{n}:")))
                })
                .map(|(_, version)| version.clone())
                .ok_or_else(|| Error::new(format!("`apt-cache show {package}` gives no version")))
        })
        .collect()
}

/// The directory holding `package` at `version`, unpacked and post-processed by `finish`, downloading
/// it first if the cache does not hold that version with those `patterns` (its stamp records both:
/// a changed list of members unpacks the package again).
fn unpacked(
    apt: &Apt,
    cache: &Path,
    (name, version): &(String, String),
    arch: Arch,
    patterns: &[&str],
    finish: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let dir = cache.join(format!("{name}_{}", version.replace(':', "%3a")));
    let stamp = dir.join(".complete");
    let recorded = format!("{name}={version}\n{}\n", patterns.join("\n"));
    if fs::read_to_string(&stamp).is_ok_and(|text| text == recorded) {
        return Ok(dir);
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    let download = dir.join(".download");
    fs::create_dir_all(&download).map_err(|e| Error::io(&download, e))?;
    eprintln!("testbed: downloading {name}={version} ({})", arch.debian());
    let spec = format!("{}={version}", arch.apt_name(name));
    command_output(
        apt.command("apt-get")
            .args(["download", "-q", &spec])
            .current_dir(&download),
    )?;
    let deb = fs::read_dir(&download)
        .map_err(|e| Error::io(&download, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .ok_or_else(|| Error::new(format!("`apt-get download {spec}` left no .deb")))?;
    extract(&deb, &dir, patterns)?;
    fs::remove_dir_all(&download).map_err(|e| Error::io(&download, e))?;
    finish(&dir)?;
    fs::write(&stamp, recorded).map_err(|e| Error::io(&stamp, e))?;
    Ok(dir)
}

/// Extracts the members of `deb` matching the tar `patterns` (tar wildcards; none: all) into `into`.
pub(crate) fn extract(deb: &Path, into: &Path, patterns: &[&str]) -> Result<()> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::new(format!("cannot run dpkg-deb: {e}")))?;
    let tar_input = dpkg.stdout.take().map(Stdio::from).unwrap_or(Stdio::null());
    let tar = Command::new("tar")
        .args(["-x", "--wildcards", "-C"])
        .arg(into)
        .args(patterns)
        .stdin(tar_input)
        .output()
        .map_err(|e| Error::new(format!("cannot run tar: {e}")))?;
    let dpkg = dpkg
        .wait()
        .map_err(|e| Error::new(format!("dpkg-deb: {e}")))?;
    if !dpkg.success() || !tar.status.success() {
        return Err(Error::new(format!(
            "unpacking {patterns:?} from {} failed: {}",
            deb.display(),
            String::from_utf8_lossy(&tar.stderr).trim()
        )));
    }
    Ok(())
}

/// `vmlinux`, the ELF kernel inside the compressed x86 `vmlinuz` (a bzImage) of `kernel_dir`,
/// extracted on first use. The payload is where the boot protocol's header says (`payload_offset`,
/// `payload_length`); Debian 12 compresses it with XZ, Debian 13 with zstd.
fn uncompressed_kernel(kernel_dir: &Path) -> Result<PathBuf> {
    let vmlinux = kernel_dir.join("vmlinux");
    if vmlinux.exists() {
        return Ok(vmlinux);
    }
    let vmlinuz = kernel_dir.join("vmlinuz");
    let image = fs::read(&vmlinuz).map_err(|e| Error::io(&vmlinuz, e))?;
    let payload = bzimage_payload(&image)
        .ok_or_else(|| Error::new(format!("{}: not a bzImage", vmlinuz.display())))?;
    let decompressor: &[&str] = if payload.starts_with(b"\xfd7zXZ\0") {
        &["xz", "-dc", "--single-stream"]
    } else if payload.starts_with(b"\x28\xb5\x2f\xfd") {
        &["zstd", "-dcq"]
    } else {
        return Err(Error::new(format!(
            "{}: the payload is neither XZ nor zstd",
            vmlinuz.display()
        )));
    };
    let mut child = Command::new(decompressor[0])
        .args(&decompressor[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::new(format!("cannot run {}: {e}", decompressor[0])))?;
    let mut input = child.stdin.take().expect("piped stdin");
    let compressed = payload.to_vec();
    // Fed from a thread: the decompressor writes while it reads, and both pipes are bounded.
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        // xz stops reading after the stream: a broken pipe after it is expected.
        let _ = input.write_all(&compressed);
    });
    let output = child
        .wait_with_output()
        .map_err(|e| Error::new(format!("{}: {e}", decompressor[0])))?;
    let _ = feeder.join();
    if !output.stdout.starts_with(b"\x7fELF") {
        return Err(Error::new(format!(
            "{}: the payload is not an ELF kernel ({} {})",
            vmlinuz.display(),
            decompressor[0],
            output.status
        )));
    }
    let partial = kernel_dir.join("vmlinux.partial");
    fs::write(&partial, &output.stdout).map_err(|e| Error::io(&partial, e))?;
    rename(&partial, &vmlinux)?;
    Ok(vmlinux)
}

/// The compressed kernel inside an x86 bzImage, as its boot protocol header (2.08+) locates it:
/// `payload_offset` and `payload_length` count from the protected-mode code, which follows
/// `setup_sects` (0 meaning 4) 512-byte sectors and the boot sector.
fn bzimage_payload(image: &[u8]) -> Option<&[u8]> {
    let u32_at = |at: usize| {
        image
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let setup_sects = match *image.get(0x1f1)? {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248)?;
    image.get(start..start.checked_add(u32_at(0x24c)?)?)
}

/// Keeps the kernel image, the Xen modules and the block backend's (with their dependencies) of an
/// unpacked kernel package, writes their load orders ([`MODULES_ORDER`], [`BLOCK_BACKEND_ORDER`]:
/// dependencies first), and removes the rest.
fn unpack_kernel(root: &Path, arch: Arch) -> Result<()> {
    let boot = root.join("boot");
    let image = fs::read_dir(&boot)
        .map_err(|e| Error::io(&boot, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| Error::new(format!("no vmlinuz-* in the {arch} kernel package")))?;
    rename(&image, &root.join("vmlinuz"))?;

    // Every module we unpacked, by its kernel name (`-` and `_` are the same to the kernel).
    let mut available = BTreeMap::new();
    collect_modules(root, &mut available)?;
    let mut loaded = Vec::new();
    let mut xen_count = 0;
    for (wanted, order_name, after_xen) in [
        (XEN_MODULES, MODULES_ORDER, false),
        (BLOCK_BACKEND_MODULES, BLOCK_BACKEND_ORDER, false),
        (LINUX_DOMU_MODULES, LINUX_DOMU_ORDER, true),
    ] {
        // Each list loads after those before it (a domU's only after the Xen modules): what they
        // loaded is not loaded again.
        if after_xen {
            loaded.truncate(xen_count);
        }
        let mut order = loaded.clone();
        for module in wanted {
            add_with_dependencies(&module_key(module), &available, &mut order, 0)?;
        }
        let mut order_file = String::new();
        for key in &order[loaded.len()..] {
            let (name, path) = &available[key];
            let kept = root.join(format!("{name}.ko"));
            // A dependency of two lists was moved for the first.
            if !kept.exists() {
                rename(path, &kept)?;
            }
            order_file.push_str(name);
            order_file.push('\n');
        }
        let order_path = root.join(order_name);
        fs::write(&order_path, order_file).map_err(|e| Error::io(&order_path, e))?;
        if order_name == MODULES_ORDER {
            xen_count = order.len();
        }
        loaded = order;
    }
    for leftover in ["lib", "usr", "boot"] {
        let path = root.join(leftover);
        if path.exists() {
            fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// The file of an unpacked kernel listing [`XEN_MODULES`] and their dependencies, in load order.
const MODULES_ORDER: &str = "modules.order";
/// The file listing [`BLOCK_BACKEND_MODULES`] and the dependencies not in [`MODULES_ORDER`].
const BLOCK_BACKEND_ORDER: &str = "block-backend-modules.order";
/// The file listing [`LINUX_DOMU_MODULES`] and the dependencies not in [`MODULES_ORDER`].
const LINUX_DOMU_ORDER: &str = "linux-domu-modules.order";

fn module_key(name: &str) -> String {
    name.replace('-', "_")
}

fn collect_modules(dir: &Path, found: &mut BTreeMap<String, (String, PathBuf)>) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            collect_modules(&path, found)?;
        } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            let name = match name.strip_suffix(".ko.xz") {
                // Newer kernels ship XZ-compressed modules: decompressed here, so the ELF
                // reader can read their `.modinfo` and busybox's `insmod` can load them.
                Some(name) => {
                    let plain = path.with_file_name(format!("{name}.ko"));
                    let bytes = command_output(Command::new("xz").arg("-dc").arg(&path))?;
                    fs::write(&plain, bytes).map_err(|e| Error::io(&plain, e))?;
                    fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                    found.insert(module_key(name), (name.to_string(), plain));
                    continue;
                }
                None => name.strip_suffix(".ko"),
            };
            if let Some(name) = name {
                found.insert(module_key(name), (name.to_string(), path.clone()));
            }
        }
    }
    Ok(())
}

fn add_with_dependencies(
    key: &str,
    available: &BTreeMap<String, (String, PathBuf)>,
    order: &mut Vec<String>,
    depth: usize,
) -> Result<()> {
    if order.iter().any(|k| k == key) {
        return Ok(());
    }
    if depth > 16 {
        return Err(Error::new(format!("module dependency loop at {key}")));
    }
    let (_, path) = available.get(key).ok_or_else(|| {
        Error::new(format!(
            "kernel module {key} is not among the kernel package's members kept (KERNEL_MEMBERS)"
        ))
    })?;
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    let depends = crate::elf::modinfo(&bytes, "depends")
        .ok_or_else(|| Error::new(format!("{}: no .modinfo depends=", path.display())))?;
    for dependency in depends.split(',').filter(|d| !d.is_empty()) {
        add_with_dependencies(&module_key(dependency), available, order, depth + 1)?;
    }
    order.push(key.to_string());
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io(from, e))
}

/// What to run when the machine lacks something the testbed needs.
const SETUP: &str = "run `cargo xtask setup --demo` (as root, or it prints the commands to run)";

/// Checks that QEMU for `arch` is installed, or names the command that installs it.
pub fn check_qemu(arch: Arch) -> Result<()> {
    if crate::which(arch.qemu()).is_some() {
        return Ok(());
    }
    Err(Error::new(format!("{} is missing: {SETUP}", arch.qemu())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic bzImage: 2 setup sectors, the payload 16 bytes into the protected-mode code.
    fn bzimage(setup_sects: u8, payload: &[u8]) -> Vec<u8> {
        let sectors = if setup_sects == 0 { 4 } else { setup_sects };
        let code = (usize::from(sectors) + 1) * 512;
        let mut image = vec![0; code + 16];
        image[0x1f1] = setup_sects;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(payload);
        image.extend_from_slice(b"trailer");
        image
    }

    #[test]
    fn the_payload_is_where_the_header_says() {
        let payload = b"\x28\xb5\x2f\xfdzstd frame";
        assert_eq!(bzimage_payload(&bzimage(2, payload)), Some(&payload[..]));
        assert_eq!(bzimage_payload(&bzimage(0, payload)), Some(&payload[..]));
    }

    #[test]
    fn a_truncated_or_foreign_image_has_no_payload() {
        let image = bzimage(2, b"payload");
        assert_eq!(bzimage_payload(&image[..image.len() - 10]), None);
        let mut foreign = image.clone();
        foreign[0x202] = b'X';
        assert_eq!(bzimage_payload(&foreign), None);
        assert_eq!(bzimage_payload(&[]), None);
    }
}
