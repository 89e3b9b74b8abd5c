//! Host-side values that came from a guest and passed validation.
//!
//! The generated WIT types never leave `plugin`; past that boundary the
//! host works with these, whose invariants (a valid file type, a name with
//! no '/' or NUL, a mapping inside the device) have been checked once.

use std::fmt;

/// An inode number as the guest reports it (stable across restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ino(pub u64);

impl fmt::Display for Ino {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A byte offset inside a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileOffset(pub u64);

/// A byte offset on the backing device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceOffset(pub u64);

/// The type of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl FileKind {
    /// The S_IFMT bits of this type.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::Regular => libc::S_IFREG,
            FileKind::Directory => libc::S_IFDIR,
            FileKind::Symlink => libc::S_IFLNK,
            FileKind::CharDevice => libc::S_IFCHR,
            FileKind::BlockDevice => libc::S_IFBLK,
            FileKind::Fifo => libc::S_IFIFO,
            FileKind::Socket => libc::S_IFSOCK,
        }
    }
}

/// Seconds since the epoch and nanoseconds (< 1e9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamp {
    pub seconds: i64,
    pub nanoseconds: u32,
}

/// Validated attributes of one inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: FileKind,
    /// mode & 0o7777.
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub blocks: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Option<Timestamp>,
    /// Major and minor device numbers (device files only; 0 otherwise).
    pub rdev: (u32, u32),
    pub generation: u32,
    pub flags: InodeFlags,
}

/// Inode flags reported by the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

/// A directory entry with a valid name (non-empty, no '/', no NUL, not "."
/// or "..").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: Ino,
    /// `None`: the format does not record it in the entry (DT_UNKNOWN).
    pub kind: Option<FileKind>,
    pub name: Vec<u8>,
    /// Resumes the listing after this entry; 1..2^62.
    pub cookie: u64,
}

/// Filesystem-wide facts.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// What a validated mapping is backed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappingKind {
    Hole,
    Mapped(DeviceOffset),
    Unwritten(DeviceOffset),
    Inline(std::sync::Arc<[u8]>),
}

/// A validated file range: inside the device, no overflow, length > 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub offset: FileOffset,
    pub length: u64,
    pub kind: MappingKind,
}

impl Mapping {
    /// The file offset one past the end (cannot overflow: validated).
    pub fn end(&self) -> u64 {
        self.offset.0 + self.length
    }

    /// Whether file offset `pos` lies inside.
    pub fn contains(&self, pos: u64) -> bool {
        self.offset.0 <= pos && pos < self.end()
    }

    /// Whether it points at device blocks (mapped or unwritten).
    pub fn is_device(&self) -> bool {
        matches!(self.kind, MappingKind::Mapped(_) | MappingKind::Unwritten(_))
    }

    /// Whether reading this range yields data (not a hole) for SEEK_DATA.
    pub fn is_data(&self) -> bool {
        matches!(self.kind, MappingKind::Mapped(_) | MappingKind::Inline(_))
    }
}

/// The inode a namespace call creates, every field decided by the host
/// (the caller's ids, setgid inheritance, the umask the kernel applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInode {
    pub kind: FileKind,
    /// mode & 0o7777.
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    /// Major and minor (device files only).
    pub rdev: (u32, u32),
    /// Its atime, mtime, ctime (and crtime), and the parent's mtime and ctime.
    pub time: Timestamp,
}

/// What a setattr changes; `None` keeps the field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttrChanges {
    pub perm: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
    pub ctime: Option<Timestamp>,
}

/// An inode that lost a name, and its link count afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unlinked {
    pub ino: Ino,
    pub nlink: u32,
}

/// renameat2 flags the host passes on (RENAME_WHITEOUT is refused before).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenameFlags {
    pub no_replace: bool,
    pub exchange: bool,
}

/// setxattr flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XattrFlags {
    pub create: bool,
    pub replace: bool,
}

/// fallocate modes (FALLOC_FL_*); no flag: allocate and raise the size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FallocateMode {
    pub keep_size: bool,
    pub punch_hole: bool,
    pub zero_range: bool,
    pub collapse_range: bool,
    pub insert_range: bool,
}

impl FallocateMode {
    /// The mode of fallocate(2)'s `mode` argument; `None` for bits this
    /// host does not pass on (EOPNOTSUPP).
    pub fn from_bits(mode: i32) -> Option<FallocateMode> {
        const KNOWN: i32 = libc::FALLOC_FL_KEEP_SIZE
            | libc::FALLOC_FL_PUNCH_HOLE
            | libc::FALLOC_FL_ZERO_RANGE
            | libc::FALLOC_FL_COLLAPSE_RANGE
            | libc::FALLOC_FL_INSERT_RANGE;
        if mode & !KNOWN != 0 {
            return None;
        }
        Some(FallocateMode {
            keep_size: mode & libc::FALLOC_FL_KEEP_SIZE != 0,
            punch_hole: mode & libc::FALLOC_FL_PUNCH_HOLE != 0,
            zero_range: mode & libc::FALLOC_FL_ZERO_RANGE != 0,
            collapse_range: mode & libc::FALLOC_FL_COLLAPSE_RANGE != 0,
            insert_range: mode & libc::FALLOC_FL_INSERT_RANGE != 0,
        })
    }
}

/// Decode a Linux 64-bit dev_t (glibc makedev layout) into major and minor.
pub fn split_rdev(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & 0xffff_f000);
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xffff_ff00);
    (major as u32, minor as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_rdev_inverts_libc_makedev() {
        for (ma, mi) in [(0u32, 0u32), (8, 1), (259, 300_000), (0xfff, 0xff), (0x12345, 0x6789a)] {
            assert_eq!(split_rdev(libc::makedev(ma, mi)), (ma, mi));
        }
    }
}
