//! Just enough ELF64 to read a kernel module's `.modinfo` section.

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

    #[test]
    fn rejects_garbage_without_panicking() {
        assert_eq!(modinfo(b"", "depends"), None);
        assert_eq!(modinfo(b"\x7fELF\x02\x01", "depends"), None);
        let mut truncated = module(b"depends=\0");
        truncated.truncate(100);
        assert_eq!(modinfo(&truncated, "depends"), None);
    }
}
