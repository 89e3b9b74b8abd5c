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
pub fn kind(k: wit::FileType) -> Option<FileKind> {
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
            // `unknown` (ext2 without `filetype`): the FUSE adapter
            // resolves the type from the inode.
            Ok(DirEntry { ino: Ino(e.ino), kind: kind(e.kind), name: e.name, cookie: e.cookie })
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

/// Validate a write's iomap-begin answer: as [`mappings`], and every
/// mapping mapped or unwritten (the guest allocates holes for a write; a
/// hole or inline bytes leave the host nowhere to put the data).
pub fn write_mappings(raw: Vec<wit::Mapping>, check: &MapCheck, limits: &Limits) -> Result<Vec<Mapping>, FsError> {
    let out = mappings(raw, check, limits)?;
    if let Some((i, m)) = out.iter().enumerate().find(|(_, m)| !m.is_device()) {
        let what = if matches!(m.kind, MappingKind::Hole) { "a hole" } else { "inline bytes" };
        return Err(invalid(
            "iomap-begin",
            format!(
                "inode {} offset {}: write mapping {i} [{}, {}) is {what}, not mapped or unwritten",
                check.ino,
                check.offset,
                m.offset.0,
                m.end()
            ),
        ));
    }
    Ok(out)
}

/// Validate the attributes of an inode `create`, `mkdir`, `mknod` or
/// `symlink` made: valid as any attributes, of the type asked, with the
/// permission bits and owner the host decided, linked, not the parent, and
/// not an inode the kernel still holds (`live`: a new inode cannot have
/// the number of one the kernel has not forgotten). A symlink's size is
/// its target's length.
pub fn created(
    op: &'static str,
    a: wit::Attr,
    parent: Ino,
    new: &NewInode,
    symlink_len: Option<usize>,
    live: impl Fn(Ino) -> bool,
) -> Result<Attr, FsError> {
    let attr = attr(op, a, None)?;
    let ino = attr.ino;
    let bad = |reason: String| invalid(op, format!("new inode {ino} in directory {parent}: {reason}"));
    if attr.kind != new.kind {
        return Err(bad(format!("a {:?} was asked for, the answer is a {:?}", new.kind, attr.kind)));
    }
    if (attr.perm, attr.uid, attr.gid) != (new.perm, new.uid, new.gid) {
        return Err(bad(format!(
            "mode {:o}, owner {}:{} asked, {:o}, {}:{} answered (another inode's attributes?)",
            new.perm, new.uid, new.gid, attr.perm, attr.uid, attr.gid
        )));
    }
    if ino == parent || attr.nlink == 0 || live(ino) {
        return Err(bad(format!("inode {ino} with {} links is the parent, unlinked or already in use", attr.nlink)));
    }
    if let Some(len) = symlink_len
        && attr.size != len as u64
    {
        return Err(bad(format!("a symlink of {len} bytes reported with size {}", attr.size)));
    }
    Ok(attr)
}

/// Validate the attributes `setattr` answered: those of the inode asked,
/// with every change asked applied.
pub fn changed(a: wit::Attr, ino: Ino, changes: &AttrChanges) -> Result<Attr, FsError> {
    const OP: &str = "setattr";
    let attr = attr(OP, a, Some(ino))?;
    let differs = |what: &str, asked: String, got: String| {
        invalid(OP, format!("inode {ino}: {what} {asked} asked, {got} answered"))
    };
    if let Some(size) = changes.size
        && attr.size != size
    {
        return Err(differs("size", size.to_string(), attr.size.to_string()));
    }
    if let Some(perm) = changes.perm
        && attr.perm != perm
    {
        return Err(differs("mode", format!("{perm:o}"), format!("{:o}", attr.perm)));
    }
    if let Some(uid) = changes.uid
        && attr.uid != uid
    {
        return Err(differs("uid", uid.to_string(), attr.uid.to_string()));
    }
    if let Some(gid) = changes.gid
        && attr.gid != gid
    {
        return Err(differs("gid", gid.to_string(), attr.gid.to_string()));
    }
    Ok(attr)
}

/// The size a file must have after fallocate(`offset`, `length`, `mode`)
/// from `old`, when the mode defines it; `None` when it does not fit off_t.
pub fn size_after_fallocate(old: u64, offset: u64, length: u64, mode: FallocateMode) -> Option<u64> {
    let end = offset.checked_add(length)?;
    let size = if mode.keep_size || mode.punch_hole {
        old
    } else if mode.collapse_range {
        old.checked_sub(length)?
    } else if mode.insert_range {
        old.checked_add(length)?
    } else {
        old.max(end)
    };
    i64::try_from(size).is_ok().then_some(size)
}

/// Validate the attributes `fallocate` answered: those of the inode asked,
/// with the size the mode defines.
pub fn fallocated(a: wit::Attr, ino: Ino, expect_size: u64) -> Result<Attr, FsError> {
    const OP: &str = "fallocate";
    let attr = attr(OP, a, Some(ino))?;
    if attr.size != expect_size {
        return Err(invalid(OP, format!("inode {ino}: size {} answered, {expect_size} expected", attr.size)));
    }
    Ok(attr)
}

/// Validate an `unlinked` record: a real inode, not the directory the name
/// was in.
pub fn unlinked(op: &'static str, u: wit::Unlinked, parent: Ino) -> Result<Unlinked, FsError> {
    if u.ino == 0 || u.ino == parent.0 {
        return Err(invalid(op, format!("directory {parent}: unlinked inode {}", u.ino)));
    }
    Ok(Unlinked { ino: Ino(u.ino), nlink: u.nlink })
}

/// Validate the size `ioend` answered after `written` bytes at `offset`
/// of a file that was `old` bytes long: the larger of the old size and
/// the write's end, as the contract defines it (a size past it would show
/// bytes nobody wrote; one short of it would lose the write).
pub fn ioend_size(ino: Ino, old: u64, offset: u64, written: u64, size: u64) -> Result<u64, FsError> {
    const OP: &str = "ioend";
    let end = offset.checked_add(written).filter(|&e| i64::try_from(e).is_ok());
    let Some(end) = end else {
        return Err(invalid(OP, format!("inode {ino}: a write of {written} bytes at {offset} overflows")));
    };
    if size != old.max(end) {
        return Err(invalid(
            OP,
            format!("inode {ino}: size {size} after writing [{offset}, {end}) to a file of {old} bytes"),
        ));
    }
    Ok(size)
}

/// A guest's refusal sentence as a user may read it: control characters
/// become spaces, and it is cut after [`MAX_REFUSAL`] characters.
pub fn refusal(sentence: &str) -> String {
    let clean: String = sentence.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_REFUSAL + 1).collect();
    let clean = clean.trim();
    if clean.chars().count() > MAX_REFUSAL {
        let cut: String = clean.chars().take(MAX_REFUSAL).collect();
        format!("{cut}…")
    } else if clean.is_empty() {
        "(no reason given)".to_string()
    } else {
        clean.to_string()
    }
}

/// Longest refusal sentence shown, in characters.
pub const MAX_REFUSAL: usize = 300;

/// The WIT form of a new inode.
pub fn new_inode(n: &NewInode) -> wit::NewInode {
    let (major, minor) = n.rdev;
    wit::NewInode {
        kind: file_type(n.kind),
        perm: n.perm,
        uid: n.uid,
        gid: n.gid,
        rdev: libc::makedev(major, minor),
        time: wit_time(n.time),
    }
}

/// The WIT form of attribute changes.
pub fn attr_changes(c: &AttrChanges) -> wit::AttrChanges {
    wit::AttrChanges {
        perm: c.perm,
        uid: c.uid,
        gid: c.gid,
        size: c.size,
        atime: c.atime.map(wit_time),
        mtime: c.mtime.map(wit_time),
        ctime: c.ctime.map(wit_time),
    }
}

pub fn wit_time(t: Timestamp) -> wit::Timestamp {
    wit::Timestamp { seconds: t.seconds, nanoseconds: t.nanoseconds }
}

pub fn rename_flags(f: RenameFlags) -> wit::RenameFlags {
    let mut out = wit::RenameFlags::empty();
    if f.no_replace {
        out |= wit::RenameFlags::NO_REPLACE;
    }
    if f.exchange {
        out |= wit::RenameFlags::EXCHANGE;
    }
    out
}

pub fn xattr_flags(f: XattrFlags) -> wit::XattrFlags {
    let mut out = wit::XattrFlags::empty();
    if f.create {
        out |= wit::XattrFlags::CREATE;
    }
    if f.replace {
        out |= wit::XattrFlags::REPLACE;
    }
    out
}

pub fn fallocate_flags(m: FallocateMode) -> wit::FallocateFlags {
    let mut out = wit::FallocateFlags::empty();
    for (on, flag) in [
        (m.keep_size, wit::FallocateFlags::KEEP_SIZE),
        (m.punch_hole, wit::FallocateFlags::PUNCH_HOLE),
        (m.zero_range, wit::FallocateFlags::ZERO_RANGE),
        (m.collapse_range, wit::FallocateFlags::COLLAPSE_RANGE),
        (m.insert_range, wit::FallocateFlags::INSERT_RANGE),
    ] {
        if on {
            out |= flag;
        }
    }
    out
}

fn file_type(k: FileKind) -> wit::FileType {
    match k {
        FileKind::Regular => wit::FileType::Regular,
        FileKind::Directory => wit::FileType::Directory,
        FileKind::Symlink => wit::FileType::Symlink,
        FileKind::CharDevice => wit::FileType::CharDevice,
        FileKind::BlockDevice => wit::FileType::BlockDevice,
        FileKind::Fifo => wit::FileType::Fifo,
        FileKind::Socket => wit::FileType::Socket,
    }
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
    fn a_write_gets_only_device_blocks() {
        let limits = Limits::default();
        let ok = vec![m(0, 4096, wit::MappingKind::Mapped(8192)), m(4096, 4096, wit::MappingKind::Unwritten(65536))];
        assert_eq!(write_mappings(ok, &check(100), &limits).unwrap().len(), 2);
        for (what, kind) in [("hole", wit::MappingKind::Hole), ("inline", wit::MappingKind::Inline(vec![0; 4096]))] {
            let raw = vec![m(0, 4096, wit::MappingKind::Mapped(8192)), m(4096, 4096, kind)];
            let err = write_mappings(raw, &check(0), &limits).expect_err(what);
            assert!(err.to_string().contains("not mapped or unwritten"), "{what}: {err}");
        }
        // Everything the read check refuses, a write's check refuses too.
        let outside = vec![m(0, 4096, wit::MappingKind::Unwritten(1 << 20))];
        assert!(write_mappings(outside, &check(0), &limits).is_err());
    }

    fn wit_attr(ino: u64, kind: wit::FileType, perm: u16, uid: u32, gid: u32) -> wit::Attr {
        let t = wit::Timestamp { seconds: 1, nanoseconds: 0 };
        wit::Attr {
            ino,
            kind,
            perm,
            nlink: 1,
            uid,
            gid,
            size: 0,
            blocks: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: None,
            rdev: 0,
            generation: 0,
            flags: wit::InodeFlags::empty(),
        }
    }

    #[test]
    fn a_created_inode_is_the_one_asked_for() {
        let new = NewInode {
            kind: FileKind::Regular,
            perm: 0o644,
            uid: 1000,
            gid: 100,
            rdev: (0, 0),
            time: Timestamp { seconds: 1, nanoseconds: 0 },
        };
        let parent = Ino(2);
        let none_live = |_| false;
        let good = wit_attr(20, wit::FileType::Regular, 0o644, 1000, 100);
        assert_eq!(created("create", good, parent, &new, None, none_live).unwrap().ino, Ino(20));
        let cases = [
            ("a directory", wit_attr(20, wit::FileType::Directory, 0o644, 1000, 100), "answer is a"),
            ("another mode", wit_attr(20, wit::FileType::Regular, 0o600, 1000, 100), "another inode's"),
            ("another owner", wit_attr(20, wit::FileType::Regular, 0o644, 0, 0), "another inode's"),
            ("the parent", wit_attr(2, wit::FileType::Regular, 0o644, 1000, 100), "already in use"),
        ];
        for (what, a, says) in cases {
            let err = created("create", a, parent, &new, None, none_live).expect_err(what);
            assert!(err.to_string().contains(says), "{what}: {err}");
        }
        let live = created("create", wit_attr(20, wit::FileType::Regular, 0o644, 1000, 100), parent, &new, None, |i| {
            i == Ino(20)
        });
        assert!(live.unwrap_err().to_string().contains("already in use"));
        let link = NewInode { kind: FileKind::Symlink, perm: 0o777, ..new };
        let mut a = wit_attr(21, wit::FileType::Symlink, 0o777, 1000, 100);
        a.size = 5;
        assert!(created("symlink", a, parent, &link, Some(6), none_live).is_err(), "size is not the target's");
    }

    #[test]
    fn ioend_sizes_and_fallocate_sizes() {
        assert_eq!(ioend_size(Ino(5), 100, 50, 100, 150).unwrap(), 150);
        assert_eq!(ioend_size(Ino(5), 1000, 50, 100, 1000).unwrap(), 1000);
        assert!(ioend_size(Ino(5), 1000, 50, 100, 1001).is_err(), "bytes nobody wrote");
        assert!(ioend_size(Ino(5), 100, 50, 100, 149).is_err(), "the write lost");
        assert!(ioend_size(Ino(5), 0, u64::MAX, 2, u64::MAX).is_err(), "overflow");
        assert!(ioend_size(Ino(5), 0, i64::MAX as u64, 1, 0).is_err(), "past off_t");
        let plain = FallocateMode::default();
        let keep = FallocateMode { keep_size: true, ..plain };
        let punch = FallocateMode { keep_size: true, punch_hole: true, ..plain };
        assert_eq!(size_after_fallocate(100, 0, 4096, plain), Some(4096));
        assert_eq!(size_after_fallocate(8192, 0, 4096, plain), Some(8192));
        assert_eq!(size_after_fallocate(100, 0, 4096, keep), Some(100));
        assert_eq!(size_after_fallocate(100, 0, 4096, punch), Some(100));
        assert_eq!(size_after_fallocate(0, u64::MAX, 1, plain), None);
    }

    #[test]
    fn a_refusal_is_cleaned_and_cut() {
        assert_eq!(refusal("metadata_csum_seed\nis not written\x1b[0m"), "metadata_csum_seed is not written [0m");
        assert_eq!(refusal(" \t "), "(no reason given)");
        let long = refusal(&"x".repeat(1000));
        assert_eq!(long.chars().count(), MAX_REFUSAL + 1);
        assert!(long.ends_with('…'));
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
