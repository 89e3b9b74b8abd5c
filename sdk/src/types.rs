//! Plain-Rust mirrors of the WIT records, so guests and their native tests
//! never touch generated bindings.

/// An inode number, stable across guest restarts.
pub type Ino = u64;

/// The type of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl FileType {
    /// The type from the S_IFMT bits of a Unix mode, if valid.
    pub fn from_mode(mode: u32) -> Option<Self> {
        Some(match mode & 0o170000 {
            0o100000 => Self::Regular,
            0o040000 => Self::Directory,
            0o120000 => Self::Symlink,
            0o020000 => Self::CharDevice,
            0o060000 => Self::BlockDevice,
            0o010000 => Self::Fifo,
            0o140000 => Self::Socket,
            _ => return None,
        })
    }
}

/// Seconds since the epoch (negative before 1970) and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Timestamp {
    pub seconds: i64,
    pub nanoseconds: u32,
}

/// Inode flags FUSE can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct InodeFlags {
    pub immutable: bool,
    pub append: bool,
    pub no_dump: bool,
    pub no_atime: bool,
    pub sync: bool,
    pub encrypted: bool,
    pub verity: bool,
    pub casefold: bool,
}

/// The attributes of one inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: FileType,
    /// mode & 0o7777.
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// In 512-byte units.
    pub blocks: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Option<Timestamp>,
    /// Linux new_encode_dev encoding (see [`encode_rdev`]).
    pub rdev: u64,
    pub generation: u32,
    pub flags: InodeFlags,
}

/// Encode a device number the way Linux's `new_encode_dev` does for a
/// 64-bit dev_t (glibc `makedev`).
pub fn encode_rdev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (u64::from(major), u64::from(minor));
    ((major & 0xfffff000) << 32) | ((major & 0xfff) << 8) | ((minor & 0xffffff00) << 12) | (minor & 0xff)
}

/// One directory entry; `cookie` resumes the listing after it (never 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: Ino,
    pub kind: FileType,
    pub name: Vec<u8>,
    pub cookie: u64,
}

/// Filesystem-wide facts and counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FsInfo {
    pub root: Ino,
    pub block_size: u32,
    pub name_max: u32,
    pub total_blocks: u64,
    pub free_blocks: u64,
    pub available_blocks: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
    pub fs_type: String,
    pub label: Vec<u8>,
    pub uuid: Vec<u8>,
}

/// Options for mount.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MountOptions {
    pub read_only: bool,
    /// `(name, value)` pairs from `-o`, value empty for flags.
    pub options: Vec<(String, String)>,
}

impl MountOptions {
    /// Whether flag `name` was given.
    pub fn has(&self, name: &str) -> bool {
        self.options.iter().any(|(n, _)| n == name)
    }

    /// The value of option `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.options.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// What a range of a file is backed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappingKind {
    /// Reads as zeros.
    Hole,
    /// Initialised data at this device byte address.
    Mapped(u64),
    /// Allocated at this device byte address, reads as zeros.
    Unwritten(u64),
    /// The bytes themselves (length equals the mapping's length).
    Inline(Vec<u8>),
}

/// One contiguous range of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// File byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    pub kind: MappingKind,
}

/// What the host is about to do with a mapped range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IomapFlags {
    pub write: bool,
    pub report: bool,
    pub direct: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdev_matches_glibc_makedev() {
        // Values from glibc's gnu_dev_makedev: makedev(8, 1) == 0x801,
        // makedev(0x12345, 0x6789a) == 0x0001_2000_6783_459a.
        assert_eq!(encode_rdev(8, 1), 0x801);
        assert_eq!(encode_rdev(0x12345, 0x6789a), 0x0001_2000_6783_459a);
    }

    #[test]
    fn file_type_from_mode() {
        assert_eq!(FileType::from_mode(0o100644), Some(FileType::Regular));
        assert_eq!(FileType::from_mode(0o040755), Some(FileType::Directory));
        assert_eq!(FileType::from_mode(0o000644), None);
    }
}
