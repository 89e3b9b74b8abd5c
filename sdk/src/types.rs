//! Plain-Rust mirrors of the WIT records, so guests and their native tests
//! never touch generated bindings.

/// An inode number, stable across guest restarts.
pub type Ino = u64;

/// The type of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// A regular file (S_IFREG).
    Regular,
    /// A directory (S_IFDIR).
    Directory,
    /// A symbolic link (S_IFLNK).
    Symlink,
    /// A character device (S_IFCHR); its number is in [`Attr::rdev`].
    CharDevice,
    /// A block device (S_IFBLK); its number is in [`Attr::rdev`].
    BlockDevice,
    /// A named pipe (S_IFIFO).
    Fifo,
    /// A Unix socket (S_IFSOCK).
    Socket,
    /// Not recorded in the directory entry (ext2 without `filetype`):
    /// listed as DT_UNKNOWN. Only in [`DirEntry`], never in [`Attr`].
    Unknown,
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
    /// Whole seconds since 1970-01-01 00:00:00 UTC.
    pub seconds: i64,
    /// Nanoseconds past `seconds`, below 1_000_000_000 (the host checks).
    pub nanoseconds: u32,
}

/// Inode flags FUSE can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct InodeFlags {
    /// FS_IMMUTABLE_FL: the file cannot be changed.
    pub immutable: bool,
    /// FS_APPEND_FL: writes may only append.
    pub append: bool,
    /// FS_NODUMP_FL: dump(8) skips the file.
    pub no_dump: bool,
    /// FS_NOATIME_FL: access times are not updated.
    pub no_atime: bool,
    /// FS_SYNC_FL: writes are synchronous.
    pub sync: bool,
    /// FS_ENCRYPT_FL: the contents (or names) are encrypted.
    pub encrypted: bool,
    /// FS_VERITY_FL: the file is protected by fs-verity.
    pub verity: bool,
    /// FS_CASEFOLD_FL: a directory whose lookups ignore case.
    pub casefold: bool,
}

/// The attributes of one inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// The inode these attributes belong to (the host checks it is the one
    /// it asked for).
    pub ino: Ino,
    /// The file type (the S_IFMT part of st_mode).
    pub kind: FileType,
    /// Permission bits: mode & 0o7777 (rwx, setuid, setgid, sticky).
    pub perm: u16,
    /// Number of hard links.
    pub nlink: u32,
    /// Owner's user id.
    pub uid: u32,
    /// Owner's group id.
    pub gid: u32,
    /// Size in bytes; for a symlink, the length of its target.
    pub size: u64,
    /// Space used, in 512-byte units.
    pub blocks: u64,
    /// Last access.
    pub atime: Timestamp,
    /// Last change of the contents.
    pub mtime: Timestamp,
    /// Last change of the inode.
    pub ctime: Timestamp,
    /// Creation, where the format records it.
    pub crtime: Option<Timestamp>,
    /// Device number of a device node, in Linux's new_encode_dev encoding
    /// (see [`encode_rdev`]); 0 otherwise.
    pub rdev: u64,
    /// The inode's generation number (for NFS-style file handles).
    pub generation: u32,
    /// Inode flags FUSE can report.
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
    /// The inode the entry names.
    pub ino: Ino,
    /// Its file type.
    pub kind: FileType,
    /// The name, as bytes: see [`valid_name`].
    pub name: Vec<u8>,
    /// Where a listing resumes after this entry: stable for the directory,
    /// never 0, below 2^62.
    pub cookie: u64,
}

/// The longest name the host accepts, in bytes (FUSE's limit; most formats
/// stop at 255, vfat's UTF-8 names reach 765).
pub const NAME_MAX: usize = 1024;

/// Whether the host accepts `name` in a directory entry: 1..=[`NAME_MAX`]
/// bytes, no '/' or NUL, not "." or "..". Linux names are bytes, so any
/// other byte is fine. The host refuses a whole answer that holds one bad
/// name, so a guest skips (and logs) records whose names fail this.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && !name.contains(&b'/')
        && !name.contains(&0)
        && name != b"."
        && name != b".."
}

/// Filesystem-wide facts and counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FsInfo {
    /// The root directory's inode.
    pub root: Ino,
    /// The allocation unit: mapped and unwritten mappings are aligned to it
    /// (except that a file's last mapping may end at the device's end).
    pub block_size: u32,
    /// The longest name a directory can hold, in bytes.
    pub name_max: u32,
    /// Size of the filesystem, in `block_size` units.
    pub total_blocks: u64,
    /// Free blocks.
    pub free_blocks: u64,
    /// Free blocks available to unprivileged users.
    pub available_blocks: u64,
    /// Number of inodes.
    pub total_inodes: u64,
    /// Free inodes.
    pub free_inodes: u64,
    /// A short format name, e.g. "ext4".
    pub fs_type: String,
    /// The volume label as stored (may be empty).
    pub label: Vec<u8>,
    /// The volume UUID or serial as stored (may be empty).
    pub uuid: Vec<u8>,
}

/// Options for mount.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MountOptions {
    /// The host will never write; the guest must not either.
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
    /// Length in bytes (> 0).
    pub length: u64,
    /// What backs the range.
    pub kind: MappingKind,
}

/// What the host is about to do with a mapped range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IomapFlags {
    /// A write is coming (never on read-only mounts).
    pub write: bool,
    /// Only the layout is wanted (SEEK_DATA/SEEK_HOLE, FIEMAP); report
    /// what the format stores, e.g. inline data as inline.
    pub report: bool,
    /// Direct IO.
    pub direct: bool,
}

/// The inode a namespace call creates; the host decided every field
/// (caller's ids, setgid inheritance, umask).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewInode {
    /// Its type (never [`FileType::Unknown`]).
    pub kind: FileType,
    /// mode & 0o7777.
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number for char and block devices (new_encode_dev).
    pub rdev: u64,
    /// Its atime, mtime, ctime and crtime, and the parent's mtime and ctime.
    pub time: Timestamp,
}

/// What [`Filesystem::setattr`](crate::Filesystem::setattr) changes;
/// `None` keeps the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttrChanges {
    /// New permission bits (mode & 0o7777).
    pub perm: Option<u16>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size: free the blocks wholly past it. The rest of the block the
    /// smaller of the old and new sizes ends in is the host's to zero.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<Timestamp>,
    /// New modification time.
    pub mtime: Option<Timestamp>,
    /// New change time.
    pub ctime: Option<Timestamp>,
}

/// An inode that lost a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unlinked {
    /// The inode.
    pub ino: Ino,
    /// Its link count afterwards; at 0 it is an orphan until
    /// [`Filesystem::evict`](crate::Filesystem::evict).
    pub nlink: u32,
}

/// renameat2 flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RenameFlags {
    /// RENAME_NOREPLACE.
    pub no_replace: bool,
    /// RENAME_EXCHANGE.
    pub exchange: bool,
}

/// setxattr flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XattrFlags {
    /// XATTR_CREATE: fail with `Exists` if present.
    pub create: bool,
    /// XATTR_REPLACE: fail with `NoData` if absent.
    pub replace: bool,
}

/// fallocate modes; all false: allocate and raise the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FallocateFlags {
    /// FALLOC_FL_KEEP_SIZE.
    pub keep_size: bool,
    /// FALLOC_FL_PUNCH_HOLE: free the whole blocks inside the range (the
    /// host zeroes the partial ones once the guest agreed).
    pub punch_hole: bool,
    /// FALLOC_FL_ZERO_RANGE: whole blocks inside become unwritten (the host
    /// zeroes the partial ones once the guest agreed).
    pub zero_range: bool,
    /// FALLOC_FL_COLLAPSE_RANGE (may be unsupported).
    pub collapse_range: bool,
    /// FALLOC_FL_INSERT_RANGE (may be unsupported).
    pub insert_range: bool,
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

    #[test]
    fn valid_names_are_what_the_host_accepts() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b", &[b'x'; NAME_MAX + 1]] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        for good in [&b"a"[..], b"...", b".hidden", b"\xff\xfe not utf-8", &[b'x'; NAME_MAX]] {
            assert!(valid_name(good), "{good:?}");
        }
    }
}
