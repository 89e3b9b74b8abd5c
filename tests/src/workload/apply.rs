//! Applies a script beneath a directory with plain syscalls and records what
//! each call answered. The same code runs against a kernel ext4 mount and a
//! FUSE mount; the recorded outcomes are part of what is compared.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::script::{AclEntry, Op, OpenMode, Special};
use super::sys;
use crate::tree::pattern;

/// What one op answered: success (with what it returned, when it returns
/// data: bytes read, a hash, attributes) or an errno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok(String),
    Err(i32),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok(what) if what.is_empty() => f.write_str("ok"),
            Outcome::Ok(what) => write!(f, "ok ({what})"),
            Outcome::Err(errno) => write!(f, "{}", io::Error::from_raw_os_error(*errno)),
        }
    }
}

impl From<io::Result<String>> for Outcome {
    fn from(result: io::Result<String>) -> Outcome {
        match result {
            Ok(what) => Outcome::Ok(what),
            Err(err) => Outcome::Err(sys::errno(&err)),
        }
    }
}

fn full(base: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() { base.to_path_buf() } else { base.join(std::ffi::OsStr::from_bytes(rel)) }
}

fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `len` pattern bytes (those that belong at `offset`) in 1 MiB
/// pieces, at `offset` or, with `append`, wherever O_APPEND puts them.
fn write_pattern(file: &File, seed: u64, offset: u64, len: u64, append: bool) -> io::Result<()> {
    let mut done = 0;
    while done < len {
        let piece = (len - done).min(1 << 20);
        let bytes = pattern(seed, offset + done, piece as usize);
        if append {
            sys::write_all(file, &bytes)?;
        } else {
            file.write_all_at(&bytes, offset + done)?;
        }
        done += piece;
    }
    Ok(())
}

/// The binary form of a POSIX ACL xattr (version 2, then 8-byte entries).
pub fn acl_bytes(entries: &[AclEntry]) -> Vec<u8> {
    let mut out = 2u32.to_le_bytes().to_vec();
    for e in entries {
        out.extend_from_slice(&e.tag.to_le_bytes());
        out.extend_from_slice(&e.perm.to_le_bytes());
        out.extend_from_slice(&e.id.to_le_bytes());
    }
    out
}

/// `lstat` fields that do not depend on the implementation's allocator or
/// clock: type and mode, nlink, owner, size (not for directories), rdev.
fn stat_summary(path: &Path) -> io::Result<String> {
    let m = std::fs::symlink_metadata(path)?;
    let size = if m.is_dir() { "-".to_string() } else { m.size().to_string() };
    Ok(format!("{:o} nlink {} {}:{} size {size} rdev {:x}", m.mode(), m.nlink(), m.uid(), m.gid(), m.rdev()))
}

/// Opens `path` for its data, never a device node and never blocking on a
/// fifo. The script makes character devices with arbitrary numbers, and
/// the generator's model can be wrong about what a path is now: opening
/// such a node would reach a real device of this machine (1:1 is
/// /dev/mem). A device, followed through symlinks too, is refused with
/// ENXIO before any open, on both sides alike; O_NONBLOCK makes a fifo
/// open return at once (ENXIO for a writer without a reader, as POSIX
/// says) instead of waiting for a peer that never comes.
fn open_data(path: &Path, flags: libc::c_int, mode: u32) -> io::Result<File> {
    // A missing path (perhaps to be created) is left to the open.
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_char_device() || meta.file_type().is_block_device() {
            return Err(io::Error::from_raw_os_error(libc::ENXIO));
        }
    }
    sys::open(path, flags | libc::O_NONBLOCK, mode)
}

/// Applies one op beneath `base`.
pub fn apply_one(base: &Path, op: &Op) -> Outcome {
    let p = |rel: &[u8]| full(base, rel);
    let result: io::Result<String> = match op {
        Op::Create { path, mode } => {
            sys::open(&p(path), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, *mode).map(|_| String::new())
        }
        Op::Write { path, open, offset, len, seed } => (|| {
            let flags = libc::O_WRONLY
                | match open {
                    OpenMode::Existing => 0,
                    OpenMode::Create => libc::O_CREAT,
                    OpenMode::Truncate => libc::O_TRUNC,
                    OpenMode::Append => libc::O_APPEND,
                };
            let file = open_data(&p(path), flags, 0o644)?;
            let append = *open == OpenMode::Append;
            write_pattern(&file, *seed, *offset, *len, append)?;
            if append {
                // Where O_APPEND left the offset: the new end of file.
                return Ok(format!("at {}", sys::position(&file)?));
            }
            Ok(String::new())
        })(),
        // Through a descriptor, never truncate(2) by path: on Linux 6.18 a
        // path truncate that grows an inline_data file not opened for
        // writing since the mount dereferences a NULL jbd2 inode in
        // ext4_convert_inline_data (an oops that leaves a journal handle
        // open and every later sync(2) of the machine hung).
        Op::Truncate { path, size } => (|| {
            let file = open_data(&p(path), libc::O_WRONLY, 0)?;
            file.set_len(*size)?;
            Ok(String::new())
        })(),
        Op::Fallocate { path, mode, offset, len } => (|| {
            let file = open_data(&p(path), libc::O_WRONLY, 0)?;
            sys::fallocate(&file, mode.flags(), *offset, *len)?;
            Ok(String::new())
        })(),
        Op::Mkdir { path, mode } => sys::mkdir(&p(path), *mode).map(|()| String::new()),
        Op::Rmdir { path } => sys::rmdir(&p(path)).map(|()| String::new()),
        Op::Unlink { path } => sys::unlink(&p(path)).map(|()| String::new()),
        Op::Rename { from, to, flags } => sys::rename(&p(from), &p(to), *flags).map(|()| String::new()),
        Op::Link { from, to } => sys::link(&p(from), &p(to)).map(|()| String::new()),
        Op::Symlink { target, path } => sys::symlink(target, &p(path)).map(|()| String::new()),
        Op::Mknod { path, special, mode } => {
            let (kind, dev) = match special {
                Special::Fifo => (libc::S_IFIFO, 0),
                Special::Char { major, minor } => (libc::S_IFCHR, libc::makedev(*major, *minor)),
            };
            sys::mknod(&p(path), kind | mode, dev).map(|()| String::new())
        }
        Op::Chmod { path, mode } => sys::chmod(&p(path), *mode).map(|()| String::new()),
        Op::Chown { path, uid, gid } => sys::lchown(&p(path), *uid, *gid).map(|()| String::new()),
        Op::Utimens { path, atime, mtime } => sys::utimens(&p(path), *atime, *mtime).map(|()| String::new()),
        Op::SetXattr { path, name, value, flags } => {
            sys::setxattr(&p(path), name, value, *flags).map(|()| String::new())
        }
        Op::RemoveXattr { path, name } => sys::removexattr(&p(path), name).map(|()| String::new()),
        Op::SetAcl { path, default, entries } => {
            let name: &[u8] = if *default { b"system.posix_acl_default" } else { b"system.posix_acl_access" };
            // The mode an access ACL implies is part of the answer.
            sys::setxattr(&p(path), name, &acl_bytes(entries), 0).and_then(|()| stat_summary(&p(path)))
        }
        Op::Read { path, offset, len } => (|| {
            let file = open_data(&p(path), libc::O_RDONLY, 0)?;
            let mut buf = vec![0u8; (*len).min(4 << 20) as usize];
            let n = sys::read_full_at(&file, &mut buf, *offset)?;
            Ok(format!("{n} bytes {}", short_hash(&buf[..n])))
        })(),
        Op::Stat { path } => stat_summary(&p(path)),
        Op::List { path } => (|| {
            let mut names: Vec<Vec<u8>> = std::fs::read_dir(p(path))?
                .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
                .collect::<Result<_, _>>()?;
            names.sort();
            Ok(format!("{} names {}", names.len(), short_hash(&names.join(&b'/'))))
        })(),
        Op::OpenUnlinked { path, seed } => (|| {
            let file = open_data(&p(path), libc::O_RDWR | libc::O_CREAT, 0o644)?;
            sys::unlink(&p(path))?;
            write_pattern(&file, *seed, 5000, 10_000, false)?;
            let meta = file.metadata()?;
            let mut buf = vec![0u8; 20_000];
            let n = sys::read_full_at(&file, &mut buf, 0)?;
            Ok(format!("nlink {} size {} read {n} {}", meta.nlink(), meta.size(), short_hash(&buf[..n])))
        })(),
    };
    result.into()
}

/// Applies every op in order beneath `base`; one outcome per op.
pub fn apply(base: &Path, ops: &[Op]) -> Vec<Outcome> {
    ops.iter().map(|op| apply_one(base, op)).collect()
}

/// The ops whose outcomes differ, as lines for a failure message (at most
/// `max`, then a count). Empty when the sequences are equal.
pub fn outcome_differences(ops: &[Op], a: &[Outcome], b: &[Outcome], max: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut count = 0;
    if a.len() != b.len() {
        lines.push(format!("{} outcomes vs {}", a.len(), b.len()));
    }
    for (i, ((op, x), y)) in ops.iter().zip(a).zip(b).enumerate() {
        if x != y {
            count += 1;
            if count <= max {
                lines.push(format!("op {i} [{}] {op}: {x} vs {y}", op.kind().name()));
            }
        }
    }
    if count > max {
        lines.push(format!("... and {} more", count - max));
    }
    lines
}
