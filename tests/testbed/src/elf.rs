//! Just enough ELF64 to read a kernel module's `.modinfo` section, an executable's machine and
//! the dynamic linking facts of a program or shared library (interpreter, `DT_NEEDED`, run paths).

use crate::Arch;

/// `e_machine` of x86_64.
const EM_X86_64: u16 = 62;
/// `e_machine` of aarch64.
const EM_AARCH64: u16 = 183;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

/// How a program or library is linked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Dynamic {
    /// `PT_INTERP`: the dynamic loader a program asks for (`None`: static, or a library).
    pub(crate) interpreter: Option<String>,
    /// `DT_NEEDED`: the sonames it needs, in order.
    pub(crate) needed: Vec<String>,
    /// `DT_RUNPATH` and `DT_RPATH` directories.
    pub(crate) run_paths: Vec<String>,
}

/// The architecture of the ELF64 little-endian file `elf`, or `None` if it is not one of ours.
pub(crate) fn arch(elf: &[u8]) -> Option<Arch> {
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    match u16_at(elf, 0x12)? {
        EM_X86_64 => Some(Arch::X86_64),
        EM_AARCH64 => Some(Arch::Aarch64),
        _ => None,
    }
}

/// A program header: (type, file offset, virtual address, file size).
fn program_headers(elf: &[u8]) -> Option<Vec<(u32, usize, u64, usize)>> {
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = usize::try_from(u64_at(elf, 0x20)?).ok()?;
    let phentsize = usize::from(u16_at(elf, 0x36)?);
    let phnum = usize::from(u16_at(elf, 0x38)?);
    (0..phnum)
        .map(|index| {
            let base = phoff.checked_add(index.checked_mul(phentsize)?)?;
            Some((
                u32_at(elf, base)?,
                usize::try_from(u64_at(elf, base + 0x08)?).ok()?,
                u64_at(elf, base + 0x10)?,
                usize::try_from(u64_at(elf, base + 0x20)?).ok()?,
            ))
        })
        .collect()
}

/// The dynamic linking facts of the ELF64 little-endian file `elf`; `None` if it is malformed.
/// A static executable has no interpreter and needs nothing.
pub(crate) fn dynamic(elf: &[u8]) -> Option<Dynamic> {
    let headers = program_headers(elf)?;
    let bytes = |offset: usize, size: usize| elf.get(offset..offset.checked_add(size)?);
    let mut dynamic = Dynamic::default();
    if let Some(&(_, offset, _, size)) = headers.iter().find(|h| h.0 == PT_INTERP) {
        let text = bytes(offset, size)?;
        let text = &text[..text.iter().position(|&b| b == 0).unwrap_or(text.len())];
        dynamic.interpreter = Some(core::str::from_utf8(text).ok()?.to_string());
    }
    let Some(&(_, offset, _, size)) = headers.iter().find(|h| h.0 == PT_DYNAMIC) else {
        return Some(dynamic);
    };
    let table = bytes(offset, size)?;
    let entries: Vec<(u64, u64)> = table
        .chunks_exact(16)
        .map(|entry| Some((u64_at(entry, 0)?, u64_at(entry, 8)?)))
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .take_while(|(tag, _)| *tag != DT_NULL)
        .collect();
    // DT_STRTAB is a virtual address: find the file offset through the PT_LOAD that holds it.
    let strtab_address = entries.iter().find(|(tag, _)| *tag == DT_STRTAB)?.1;
    let strtab = headers.iter().find_map(|&(kind, offset, address, size)| {
        let within = strtab_address.checked_sub(address)?;
        let within = usize::try_from(within).ok()?;
        (kind == PT_LOAD && within < size).then(|| offset + within)
    })?;
    let string = |at: u64| -> Option<String> {
        let start = strtab.checked_add(usize::try_from(at).ok()?)?;
        let text = elf.get(start..)?;
        let text = &text[..text.iter().position(|&b| b == 0)?];
        Some(core::str::from_utf8(text).ok()?.to_string())
    };
    for &(tag, value) in &entries {
        match tag {
            DT_NEEDED => dynamic.needed.push(string(value)?),
            DT_RUNPATH | DT_RPATH => dynamic
                .run_paths
                .extend(string(value)?.split(':').map(str::to_string)),
            _ => {}
        }
    }
    Some(dynamic)
}

/// The value of `key` in the `.modinfo` section (NUL-separated `key=value` strings) of the ELF64
/// little-endian object `elf`, or `None` if the file is not such an object or has no such key.
pub(crate) fn modinfo<'a>(elf: &'a [u8], key: &str) -> Option<&'a str> {
    let section = section(elf, ".modinfo")?;
    section
        .split(|&b| b == 0)
        .filter_map(|entry| core::str::from_utf8(entry).ok())
        .find_map(|entry| entry.strip_prefix(key)?.strip_prefix('='))
}

fn section<'a>(elf: &'a [u8], wanted: &str) -> Option<&'a [u8]> {
    // e_ident: magic, ELFCLASS64 (2), ELFDATA2LSB (1).
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let shoff = usize::try_from(u64_at(elf, 0x28)?).ok()?;
    let shentsize = usize::from(u16_at(elf, 0x3a)?);
    let shnum = usize::from(u16_at(elf, 0x3c)?);
    let shstrndx = usize::from(u16_at(elf, 0x3e)?);
    let header = |index: usize| -> Option<(u32, &'a [u8])> {
        let base = shoff.checked_add(index.checked_mul(shentsize)?)?;
        let name = u32_at(elf, base)?;
        let offset = usize::try_from(u64_at(elf, base + 0x18)?).ok()?;
        let size = usize::try_from(u64_at(elf, base + 0x20)?).ok()?;
        Some((name, elf.get(offset..offset.checked_add(size)?)?))
    };
    let (_, names) = header(shstrndx)?;
    (0..shnum).find_map(|index| {
        let (name, data) = header(index)?;
        let name = names.get(usize::try_from(name).ok()?..)?;
        let name = &name[..name.iter().position(|&b| b == 0)?];
        (name == wanted.as_bytes()).then_some(data)
    })
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with a null section, `.shstrtab` and `.modinfo`.
    fn module(modinfo_data: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0";
        let mut elf = vec![0u8; 0x40];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let shstrtab_off = elf.len();
        elf.extend_from_slice(shstrtab);
        let modinfo_off = elf.len();
        elf.extend_from_slice(modinfo_data);
        let shoff = elf.len();
        let mut header = |name: u32, offset: usize, size: usize| {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(offset as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        header(0, 0, 0);
        header(1, shstrtab_off, shstrtab.len());
        header(11, modinfo_off, modinfo_data.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn reads_modinfo_keys() {
        let elf = module(b"license=GPL\0depends=xen-privcmd,foo\0name=xenfs\0");
        assert_eq!(modinfo(&elf, "depends"), Some("xen-privcmd,foo"));
        assert_eq!(modinfo(&elf, "name"), Some("xenfs"));
        assert_eq!(modinfo(&elf, "vermagic"), None);
        let empty = module(b"depends=\0");
        assert_eq!(modinfo(&empty, "depends"), Some(""));
    }

    /// A minimal ELF64 executable with `PT_INTERP`, one `PT_LOAD` and a dynamic section.
    fn program(machine: u16, interpreter: Option<&str>, needed: &[&str], runpath: &str) -> Vec<u8> {
        let mut strtab = vec![0u8];
        let mut string = |text: &str| {
            let at = strtab.len() as u64;
            strtab.extend_from_slice(text.as_bytes());
            strtab.push(0);
            at
        };
        let mut dynamic: Vec<(u64, u64)> = needed.iter().map(|n| (DT_NEEDED, string(n))).collect();
        dynamic.push((DT_RUNPATH, string(runpath)));
        let interp = interpreter.map(|i| format!("{i}\0").into_bytes());
        // Layout: header (0x40), 3 program headers (0x38 each), interp, strtab, dynamic.
        let mut elf = vec![0u8; 0x40 + 3 * 0x38];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        let interp_off = elf.len();
        elf.extend_from_slice(interp.as_deref().unwrap_or_default());
        let strtab_off = elf.len();
        elf.extend_from_slice(&strtab);
        // The PT_LOAD maps file offset 0 at 0x400000: DT_STRTAB is that address plus the offset.
        dynamic.push((DT_STRTAB, 0x40_0000 + strtab_off as u64));
        dynamic.push((DT_NULL, 0));
        let dynamic_off = elf.len();
        for (tag, value) in &dynamic {
            elf.extend_from_slice(&tag.to_le_bytes());
            elf.extend_from_slice(&value.to_le_bytes());
        }
        let total = elf.len();
        let mut headers = vec![(PT_LOAD, 0, 0x40_0000u64, total)];
        headers.push((PT_DYNAMIC, dynamic_off, 0, dynamic.len() * 16));
        if let Some(interp) = &interp {
            headers.push((PT_INTERP, interp_off, 0, interp.len()));
        }
        for (index, (kind, offset, address, size)) in headers.iter().enumerate() {
            let base = 0x40 + index * 0x38;
            elf[base..base + 4].copy_from_slice(&kind.to_le_bytes());
            elf[base + 8..base + 16].copy_from_slice(&(*offset as u64).to_le_bytes());
            elf[base + 16..base + 24].copy_from_slice(&address.to_le_bytes());
            elf[base + 32..base + 40].copy_from_slice(&(*size as u64).to_le_bytes());
        }
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&(headers.len() as u16).to_le_bytes());
        elf
    }

    #[test]
    fn reads_needed_libraries_interpreter_and_run_paths() {
        let elf = program(
            EM_X86_64,
            Some("/lib64/ld-linux-x86-64.so.2"),
            &["libxenctrl.so.4.17", "libc.so.6"],
            "/usr/lib/xen-4.17/lib:$ORIGIN",
        );
        assert_eq!(arch(&elf), Some(Arch::X86_64));
        assert_eq!(
            dynamic(&elf),
            Some(Dynamic {
                interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
                needed: vec!["libxenctrl.so.4.17".into(), "libc.so.6".into()],
                run_paths: vec!["/usr/lib/xen-4.17/lib".into(), "$ORIGIN".into()],
            })
        );
        let library = program(EM_AARCH64, None, &["libc.so.6"], "");
        assert_eq!(arch(&library), Some(Arch::Aarch64));
        assert_eq!(dynamic(&library).map(|d| d.interpreter), Some(None));
        assert_eq!(arch(&program(3, None, &[], "")), None);
    }

    #[test]
    fn a_truncated_program_is_refused() {
        let elf = program(EM_X86_64, Some("/lib/ld.so"), &["libc.so.6"], "");
        for length in [0, 0x20, 0x60, elf.len() - 20] {
            assert_eq!(dynamic(&elf[..length]), None, "{length}");
        }
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert_eq!(modinfo(b"", "depends"), None);
        assert_eq!(modinfo(b"\x7fELF\x02\x01", "depends"), None);
        let mut truncated = module(b"depends=\0");
        truncated.truncate(100);
        assert_eq!(modinfo(&truncated, "depends"), None);
    }
}
