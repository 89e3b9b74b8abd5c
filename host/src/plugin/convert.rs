//! The trust boundary for values a guest returns: each generated WIT value
//! becomes a validated `crate::types` value here, or an `FsError::Invalid`
//! saying what was wrong. Code past this module trusts the types.

use std::sync::Arc;

use super::bindings::types as wit;
use super::limits::Limits;
use crate::error::{FsError, GuestCode};
use crate::types::*;

/// Most bytes of a name: the most FUSE carries (the kernel's
/// FUSE_NAME_MAX). Most filesystems stop at 255 bytes (Linux's NAME_MAX),
/// but not all: vfat's UTF-8 names reach 765 bytes (255 UTF-16 units).
pub const NAME_MAX: usize = 1024;
/// Largest cookie a guest may use (the FUSE adapter adds a small offset).
pub const MAX_COOKIE: u64 = 1 << 62;

fn invalid(op: &'static str, reason: String) -> FsError {
    FsError::Invalid { op, reason }
}

pub fn code(c: wit::ErrorCode) -> GuestCode {
    use wit::ErrorCode as W;
    match c {
        W::NotFound => GuestCode::NotFound,
        W::NotDir => GuestCode::NotDir,
        W::IsDir => GuestCode::IsDir,
        W::Corrupted => GuestCode::Corrupted,
        W::Io => GuestCode::Io,
        W::Unsupported => GuestCode::Unsupported,
        W::Invalid => GuestCode::Invalid,
        W::NoData => GuestCode::NoData,
        W::NameTooLong => GuestCode::NameTooLong,
        W::NoMemory => GuestCode::NoMemory,
        W::ReadOnly => GuestCode::ReadOnly,
        W::Access => GuestCode::Access,
        W::Exists => GuestCode::Exists,
        W::NotEmpty => GuestCode::NotEmpty,
        W::NoSpace => GuestCode::NoSpace,
        W::TooManyLinks => GuestCode::TooManyLinks,
        W::FileTooBig => GuestCode::FileTooBig,
        W::NotPermitted => GuestCode::NotPermitted,
        W::BadChecksum => GuestCode::BadChecksum,
        W::NoKey => GuestCode::NoKey,
    }
}

/// The type of an inode; `unknown` (DT_UNKNOWN in a listing) is `None`.
fn kind(k: wit::FileType) -> Option<FileKind> {
    Some(match k {
        wit::FileType::Regular => FileKind::Regular,
        wit::FileType::Directory => FileKind::Directory,
        wit::FileType::Symlink => FileKind::Symlink,
        wit::FileType::CharDevice => FileKind::CharDevice,
        wit::FileType::BlockDevice => FileKind::BlockDevice,
        wit::FileType::Fifo => FileKind::Fifo,
        wit::FileType::Socket => FileKind::Socket,
        wit::FileType::Unknown => return None,
    })
}

fn timestamp(op: &'static str, what: &str, t: wit::Timestamp) -> Result<Timestamp, FsError> {
    if t.nanoseconds >= 1_000_000_000 {
        return Err(invalid(op, format!("{what} has {} nanoseconds", t.nanoseconds)));
    }
    Ok(Timestamp { seconds: t.seconds, nanoseconds: t.nanoseconds })
}

/// Validate attributes; `expect` is the inode asked for, if any.
pub fn attr(op: &'static str, a: wit::Attr, expect: Option<Ino>) -> Result<Attr, FsError> {
    let ino = Ino(a.ino);
    if a.ino == 0 {
        return Err(invalid(op, "inode number 0".into()));
    }
    if let Some(want) = expect
        && want != ino
    {
        return Err(invalid(op, format!("asked for inode {want}, got attributes of inode {ino}")));
    }
    if a.perm > 0o7777 {
        return Err(invalid(op, format!("inode {ino}: permission bits {:o} out of range", a.perm)));
    }
    let kind = kind(a.kind).ok_or_else(|| invalid(op, format!("inode {ino}: attributes with an unknown file type")))?;
    let is_device = matches!(kind, FileKind::CharDevice | FileKind::BlockDevice);
    let rdev = if is_device { split_rdev(a.rdev) } else { (0, 0) };
    if kind == FileKind::Symlink && a.size > 4096 * 16 {
        return Err(invalid(op, format!("inode {ino}: symlink of {} bytes", a.size)));
    }
    if i64::try_from(a.size).is_err() {
        return Err(invalid(op, format!("inode {ino}: size {} does not fit off_t", a.size)));
    }
    let f = a.flags;
    Ok(Attr {
        ino,
        kind,
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        size: a.size,
        blocks: a.blocks,
        atime: timestamp(op, "atime", a.atime)?,
        mtime: timestamp(op, "mtime", a.mtime)?,
        ctime: timestamp(op, "ctime", a.ctime)?,
        crtime: a.crtime.map(|t| timestamp(op, "crtime", t)).transpose()?,
        rdev,
        generation: a.generation,
        flags: InodeFlags {
            immutable: f.contains(wit::InodeFlags::IMMUTABLE),
            append: f.contains(wit::InodeFlags::APPEND),
            no_dump: f.contains(wit::InodeFlags::NO_DUMP),
            no_atime: f.contains(wit::InodeFlags::NO_ATIME),
            sync: f.contains(wit::InodeFlags::SYNC),
            encrypted: f.contains(wit::InodeFlags::ENCRYPTED),
            verity: f.contains(wit::InodeFlags::VERITY),
            casefold: f.contains(wit::InodeFlags::CASEFOLD),
        },
    })
}

/// Check a name is one valid path component.
pub fn name(op: &'static str, n: &[u8]) -> Result<(), FsError> {
    if n.is_empty() || n.len() > NAME_MAX || n.contains(&b'/') || n.contains(&0) || n == b"." || n == b".." {
        return Err(invalid(op, format!("invalid entry name {:?}", String::from_utf8_lossy(n))));
    }
    Ok(())
}

/// Validate a readdir answer: at most the `asked_max` entries asked for,
/// valid names, and cookies that are non-zero, bounded and not the one asked
/// (cookies are opaque, so this is what guarantees a listing makes progress).
pub fn entries(
    op: &'static str,
    raw: Vec<wit::DirEntry>,
    asked_cookie: u64,
    asked_max: u32,
) -> Result<Vec<DirEntry>, FsError> {
    if raw.len() > asked_max as usize {
        return Err(invalid(op, format!("{} entries, more than the {asked_max} asked", raw.len())));
    }
    raw.into_iter()
        .map(|e| {
            name(op, &e.name)?;
            if e.ino == 0 || e.cookie == 0 || e.cookie > MAX_COOKIE || e.cookie == asked_cookie {
                return Err(invalid(op, format!("entry with inode {} and cookie {}", e.ino, e.cookie)));
            }
            // TODO(rw host): DT_UNKNOWN entries (ext2 without filetype).
            let kind =
                kind(e.kind).ok_or_else(|| invalid(op, format!("entry of inode {}: unknown file type", e.ino)))?;
            Ok(DirEntry { ino: Ino(e.ino), kind, name: e.name, cookie: e.cookie })
        })
        .collect()
}

/// Filesystem info.
pub fn info(op: &'static str, i: wit::FsInfo) -> Result<FsInfo, FsError> {
    if i.root == 0 {
        return Err(invalid(op, "root inode 0".into()));
    }
    if !(512..=(1 << 20)).contains(&i.block_size) || !i.block_size.is_power_of_two() {
        return Err(invalid(op, format!("block size {}", i.block_size)));
    }
    if i.fs_type.len() > 64 || i.label.len() > 256 || i.uuid.len() > 64 {
        return Err(invalid(op, "oversized fs type, label or uuid".into()));
    }
    Ok(FsInfo {
        root: Ino(i.root),
        block_size: i.block_size,
        // Only reported (vfat says 1530: 255 units of up to 6 bytes).
        name_max: i.name_max.min(libc::PATH_MAX as u32),
        total_blocks: i.total_blocks,
        free_blocks: i.free_blocks.min(i.total_blocks),
        available_blocks: i.available_blocks.min(i.free_blocks).min(i.total_blocks),
        total_inodes: i.total_inodes,
        free_inodes: i.free_inodes.min(i.total_inodes),
        fs_type: i.fs_type,
        label: i.label,
        uuid: i.uuid,
    })
}

/// What the host knows when it checks an iomap-begin answer.
pub struct MapCheck {
    pub ino: Ino,
    pub offset: u64,
    pub device_size: u64,
    pub block_size: u64,
}

/// Validate an iomap-begin answer: non-empty, sorted, contiguous, the first
/// containing the asked offset, each inside the device, no overflow, block
/// aligned (the last mapped range may end at the end of the device), inline
/// bytes exactly as long as their range.
pub fn mappings(raw: Vec<wit::Mapping>, check: &MapCheck, limits: &Limits) -> Result<Vec<Mapping>, FsError> {
    const OP: &str = "iomap-begin";
    let ino = check.ino;
    let bad = |reason: String| invalid(OP, format!("inode {ino} offset {}: {reason}", check.offset));
    if raw.is_empty() {
        return Err(bad("no mappings".into()));
    }
    if raw.len() > limits.max_mappings {
        return Err(bad(format!("{} mappings, more than {}", raw.len(), limits.max_mappings)));
    }
    let bs = check.block_size;
    let mut out: Vec<Mapping> = Vec::with_capacity(raw.len());
    let mut inline_total = 0usize;
    for (i, m) in raw.into_iter().enumerate() {
        let end = m.offset.checked_add(m.length).filter(|&e| i64::try_from(e).is_ok());
        let Some(end) = end.filter(|_| m.length > 0) else {
            return Err(bad(format!("mapping {i} at {} of length {} is empty or overflows", m.offset, m.length)));
        };
        match out.last() {
            None if !(m.offset <= check.offset && check.offset < end) => {
                return Err(bad(format!("first mapping [{}, {end}) does not contain the offset asked", m.offset)));
            }
            Some(prev) if prev.end() != m.offset => {
                return Err(bad(format!(
                    "mapping {i} starts at {}, not where the previous ended ({})",
                    m.offset,
                    prev.end()
                )));
            }
            _ => {}
        }
        let kind = match m.kind {
            wit::MappingKind::Hole => MappingKind::Hole,
            wit::MappingKind::Mapped(at) | wit::MappingKind::Unwritten(at) => {
                let inside = at.checked_add(m.length).is_some_and(|dev_end| dev_end <= check.device_size);
                if !inside {
                    return Err(bad(format!(
                        "mapping {i} [{}, {end}) points at device bytes [{at}, +{}) outside the {}-byte device",
                        m.offset, m.length, check.device_size
                    )));
                }
                let ends_device = at + m.length == check.device_size;
                if at % bs != 0 || m.offset % bs != 0 || (m.length % bs != 0 && !ends_device) {
                    return Err(bad(format!(
                        "mapping {i} (file {}, device {at}, length {}) is not aligned to the {bs}-byte block",
                        m.offset, m.length
                    )));
                }
                if matches!(m.kind, wit::MappingKind::Mapped(_)) {
                    MappingKind::Mapped(DeviceOffset(at))
                } else {
                    MappingKind::Unwritten(DeviceOffset(at))
                }
            }
            wit::MappingKind::Inline(bytes) => {
                inline_total = inline_total.saturating_add(bytes.len());
                if bytes.len() as u64 != m.length || inline_total > limits.max_value {
                    return Err(bad(format!("inline mapping {i} holds {} bytes for length {}", bytes.len(), m.length)));
                }
                MappingKind::Inline(Arc::from(bytes))
            }
        };
        out.push(Mapping { offset: FileOffset(m.offset), length: m.length, kind });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(offset: u64, length: u64, kind: wit::MappingKind) -> wit::Mapping {
        wit::Mapping { offset, length, kind }
    }

    fn check(offset: u64) -> MapCheck {
        MapCheck { ino: Ino(12), offset, device_size: 1 << 20, block_size: 4096 }
    }

    #[test]
    fn accepts_contiguous_aligned_mappings() {
        let raw = vec![
            m(0, 8192, wit::MappingKind::Mapped(4096)),
            m(8192, 4096, wit::MappingKind::Hole),
            m(12288, 4096, wit::MappingKind::Unwritten(65536)),
        ];
        let out = mappings(raw, &check(5000), &Limits::default()).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].kind, MappingKind::Unwritten(DeviceOffset(65536)));
    }

    #[test]
    fn refuses_what_a_hostile_guest_might_return() {
        let limits = Limits::default();
        let cases: Vec<(&str, Vec<wit::Mapping>)> = vec![
            ("empty", vec![]),
            ("past device end", vec![m(0, 8192, wit::MappingKind::Mapped((1 << 20) - 4096))]),
            ("device overflow", vec![m(0, 4096, wit::MappingKind::Mapped(u64::MAX - 100))]),
            ("file overflow", vec![m(u64::MAX - 4095, 4096, wit::MappingKind::Hole)]),
            ("zero length", vec![m(0, 0, wit::MappingKind::Hole)]),
            ("misses offset", vec![m(8192, 4096, wit::MappingKind::Hole)]),
            ("gap", vec![m(0, 4096, wit::MappingKind::Hole), m(8192, 4096, wit::MappingKind::Hole)]),
            ("overlap", vec![m(0, 8192, wit::MappingKind::Hole), m(4096, 4096, wit::MappingKind::Hole)]),
            ("unaligned", vec![m(0, 4096, wit::MappingKind::Mapped(100))]),
            ("short inline", vec![m(0, 4096, wit::MappingKind::Inline(vec![1, 2, 3]))]),
        ];
        for (what, raw) in cases {
            let err = mappings(raw, &check(0), &limits).expect_err(what);
            assert!(matches!(err, FsError::Invalid { .. }), "{what}: {err}");
            assert_eq!(err.errno(), libc::EIO, "{what}");
        }
        let many = (0..5000).map(|i| m(i * 4096, 4096, wit::MappingKind::Hole)).collect();
        assert!(mappings(many, &check(0), &limits).is_err());
    }

    #[test]
    fn entries_are_at_most_those_asked_and_make_progress() {
        let e =
            |name: &[u8], ino, cookie| wit::DirEntry { ino, kind: wit::FileType::Regular, name: name.to_vec(), cookie };
        let two = || vec![e(b"a", 12, 1), e(b"b", 13, 2)];
        assert_eq!(entries("readdir", two(), 0, 2).unwrap().len(), 2);
        let err = entries("readdir", two(), 0, 1).expect_err("more than asked");
        assert!(err.to_string().contains("2 entries, more than the 1 asked"), "{err}");
        for (what, bad, asked) in [
            ("inode 0", e(b"a", 0, 1), 0),
            ("cookie 0", e(b"a", 12, 0), 0),
            ("cookie too large", e(b"a", 12, MAX_COOKIE + 1), 0),
            ("cookie asked", e(b"a", 12, 5), 5),
            ("bad name", e(b"a/b", 12, 1), 0),
        ] {
            assert!(entries("readdir", vec![bad], asked, 10).is_err(), "{what}");
        }
    }

    #[test]
    fn refuses_bad_names() {
        for n in [&b""[..], b".", b"..", b"a/b", b"a\0b", &[b'x'; NAME_MAX + 1]] {
            assert!(name("lookup", n).is_err(), "{n:?}");
        }
        assert!(name("lookup", b"\xff\xfe ok").is_ok());
        // vfat's long UTF-8 names pass Linux's 255 bytes.
        assert!(name("lookup", "中".repeat(250).as_bytes()).is_ok());
    }
}
