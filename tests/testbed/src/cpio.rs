//! A writer for the `newc` cpio format the Linux kernel unpacks as an initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst). Entries are written with uid/gid 0,
//! so building an initramfs needs no root.

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// An in-memory `newc` archive.
#[derive(Debug, Default)]
pub struct Cpio {
    bytes: Vec<u8>,
    next_inode: u32,
}

impl Cpio {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory (`path` relative to the root, without a leading `/`).
    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.entry(path, S_IFDIR | 0o755, (0, 0), b"")
    }

    /// Adds a regular file with permission bits `mode`.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.entry(path, S_IFREG | (mode & 0o7777), (0, 0), data)
    }

    /// Adds a symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(path, S_IFLNK | 0o777, (0, 0), target.as_bytes())
    }

    /// Adds a character device node.
    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> &mut Self {
        self.entry(path, S_IFCHR | (mode & 0o7777), (major, minor), b"")
    }

    /// Ends the archive with its trailer and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.next_inode = 0;
        self.entry("TRAILER!!!", 0, (0, 0), b"");
        self.bytes
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        (major, minor): (u32, u32),
        data: &[u8],
    ) -> &mut Self {
        let path = path.trim_start_matches('/');
        self.next_inode += 1;
        let fields = [
            if mode == 0 { 0 } else { self.next_inode },
            mode,
            0, // uid
            0, // gid
            if mode & S_IFDIR == S_IFDIR { 2 } else { 1 },
            0, // mtime: reproducible archives
            u32::try_from(data.len()).expect("initramfs members are far below 4 GiB"),
            0, // devmajor
            0, // devminor
            major,
            minor,
            u32::try_from(path.len() + 1).expect("short path"),
            0, // check
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(path.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
        self
    }

    fn pad(&mut self) {
        while self.bytes.len() % 4 != 0 {
            self.bytes.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_newc_headers_padding_and_trailer() {
        let mut cpio = Cpio::new();
        cpio.dir("bin").file("/init", 0o755, b"#!/bin/sh\n");
        let bytes = cpio.finish();
        // First header: magic, inode 1, directory mode 040755.
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(&bytes[6..14], b"00000001");
        assert_eq!(&bytes[14..22], b"000041ed");
        // Name "bin\0" after the 110-byte header, padded to 116.
        assert_eq!(&bytes[110..114], b"bin\0");
        assert_eq!(&bytes[116..122], b"070701");
        // The file: mode 0100755, size 10, name "init" (leading / stripped).
        let file = &bytes[116..];
        assert_eq!(&file[14..22], b"000081ed");
        assert_eq!(&file[54..62], b"0000000a");
        assert_eq!(&file[110..115], b"init\0");
        assert_eq!(&file[116..126], b"#!/bin/sh\n");
        assert!(bytes.len() % 4 == 0);
        let trailer = bytes.len() - 124;
        assert_eq!(&bytes[trailer + 110..trailer + 121], b"TRAILER!!!\0");
    }

    /// One entry read back: name, mode, (rdev major, minor), data.
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// Reads back (name, mode, rdev, data) of every entry, as the kernel's unpacker does.
    fn read_back(mut bytes: &[u8]) -> Vec<Entry> {
        let field = |header: &[u8], index: usize| {
            let hex = std::str::from_utf8(&header[6 + 8 * index..14 + 8 * index]).unwrap();
            u32::from_str_radix(hex, 16).unwrap()
        };
        let padded = |n: usize| n.div_ceil(4) * 4;
        let mut entries = Vec::new();
        loop {
            assert_eq!(&bytes[..6], b"070701");
            let (size, name_size) = (field(bytes, 6) as usize, field(bytes, 11) as usize);
            let name = String::from_utf8(bytes[110..110 + name_size - 1].to_vec()).unwrap();
            let data_start = padded(110 + name_size);
            let data = bytes[data_start..data_start + size].to_vec();
            if name == "TRAILER!!!" {
                assert_eq!(bytes.len(), data_start);
                return entries;
            }
            entries.push((
                name,
                field(bytes, 1),
                (field(bytes, 9), field(bytes, 10)),
                data,
            ));
            bytes = &bytes[padded(data_start + size)..];
        }
    }

    #[test]
    fn round_trips_every_entry_kind() {
        let mut cpio = Cpio::new();
        cpio.dir("dev")
            .char_device("dev/console", 0o600, 5, 1)
            .symlink("bin/sh", "busybox")
            .file("init", 0o755, b"abcde");
        let entries = read_back(&cpio.finish());
        assert_eq!(
            entries,
            vec![
                ("dev".into(), 0o040_755, (0, 0), vec![]),
                ("dev/console".into(), 0o020_600, (5, 1), vec![]),
                ("bin/sh".into(), 0o120_777, (0, 0), b"busybox".to_vec()),
                ("init".into(), 0o100_755, (0, 0), b"abcde".to_vec()),
            ]
        );
    }
}
