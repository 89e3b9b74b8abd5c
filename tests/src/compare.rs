//! The comparator: walks two mounted trees in parallel — the kernel's view
//! of an image and fshost's — and lists every observable difference.
//!
//! Per entry it compares what a program can see through the syscall API:
//! the directory listing (names as bytes, d_ino, d_type, including `.` and
//! `..`), everything lstat returns except st_dev (type, mode, ino, nlink,
//! uid, gid, rdev, size, blksize, blocks, atime/mtime/ctime to the
//! nanosecond), every xattr name and value, symlink targets as bytes, the
//! SEEK_DATA/SEEK_HOLE layout and the full contents of regular files, and
//! which names share an inode. At the root it also compares statvfs.
//!
//! It never stops at the first difference and never panics on what it
//! reads: a syscall that fails on one side is itself a difference.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, OsStr};
use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::kernel::data_ranges;
use crate::scratch::c_path;

/// One observable difference between the two views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The entry, from the mount root, non-UTF-8 bytes escaped (`/dir/\xff`).
    pub path: String,
    /// What differs: a field name such as `mtime_nsec`, `xattr user.x`,
    /// `content`, `data ranges`, `entry`, `statvfs f_bfree`.
    pub what: String,
    /// Both sides' values, kernel first.
    pub detail: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} {}", self.path, self.what, self.detail)
    }
}

/// Which side a value came from, for messages.
#[derive(Debug, Clone, Copy)]
enum Side {
    Kernel,
    Fshost,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Kernel => "the kernel's view",
            Side::Fshost => "fshost's view",
        })
    }
}

/// Compares the trees mounted at `kernel` and `fshost`; empty means equal.
pub fn compare_trees(kernel: &Path, fshost: &Path) -> Vec<Difference> {
    let mut walk = Walk {
        roots: [kernel.to_path_buf(), fshost.to_path_buf()],
        diffs: Vec::new(),
        inodes: [vec![], vec![]],
        buffers: [vec![0; CHUNK], vec![0; CHUNK]],
    };
    walk.statvfs();
    walk.entry(b"");
    let mut pending = vec![Vec::new()];
    while let Some(dir) = pending.pop() {
        pending.extend(walk.directory(&dir));
    }
    let [kernel_inodes, fshost_inodes] = std::mem::take(&mut walk.inodes);
    walk.diffs.extend(link_group_differences(&kernel_inodes, &fshost_inodes));
    walk.diffs
}

/// `rel` (bytes after the mount root, each component led by `/`) for humans.
fn show(rel: &[u8]) -> String {
    if rel.is_empty() { "/".to_string() } else { rel.escape_ascii().to_string() }
}

fn show_bytes(bytes: &[u8]) -> String {
    const MAX: usize = 80;
    if bytes.len() > MAX {
        format!("\"{}\"... ({} bytes)", bytes[..MAX].escape_ascii(), bytes.len())
    } else {
        format!("\"{}\"", bytes.escape_ascii())
    }
}

struct Walk {
    roots: [PathBuf; 2],
    diffs: Vec<Difference>,
    /// (path, inode) of every non-directory entry seen, per side.
    inodes: [Vec<(Vec<u8>, u64)>; 2],
    /// Read buffers for file contents, one per side.
    buffers: [Vec<u8>; 2],
}

/// Files are compared in pieces of this size.
const CHUNK: usize = 1 << 20;

/// A directory entry as readdir returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dirent {
    ino: u64,
    kind: u8,
}

impl Walk {
    fn full(&self, side: usize, rel: &[u8]) -> PathBuf {
        let rel = rel.strip_prefix(b"/").unwrap_or(rel);
        if rel.is_empty() { self.roots[side].clone() } else { self.roots[side].join(OsStr::from_bytes(rel)) }
    }

    fn differ(&mut self, rel: &[u8], what: impl Into<String>, detail: impl Into<String>) {
        self.diffs.push(Difference { path: show(rel), what: what.into(), detail: detail.into() });
    }

    /// Compares two values; records a difference if they are not equal.
    fn field<T: PartialEq + fmt::Display>(&mut self, rel: &[u8], what: &str, kernel: T, fshost: T) {
        if kernel != fshost {
            self.differ(rel, what, format!("{kernel} vs {fshost}"));
        }
    }

    /// Runs `op` on both sides. When both succeed, returns both results;
    /// when either fails, records the failure(s) as a difference, unless
    /// both fail with the same error.
    fn both<T>(&mut self, rel: &[u8], what: &str, mut op: impl FnMut(&Path) -> io::Result<T>) -> Option<(T, T)> {
        let kernel = op(&self.full(0, rel));
        let fshost = op(&self.full(1, rel));
        match (kernel, fshost) {
            (Ok(k), Ok(f)) => Some((k, f)),
            (Err(k), Err(f)) if k.raw_os_error().is_some() && k.raw_os_error() == f.raw_os_error() => None,
            (k, f) => {
                let show = |r: &io::Result<T>| match r {
                    Ok(_) => "ok".to_string(),
                    Err(e) => format!("error ({e})"),
                };
                let detail = format!("{} vs {}", show(&k), show(&f));
                self.differ(rel, what, detail);
                None
            }
        }
    }

    fn statvfs(&mut self) {
        let Some((k, f)) = self.both(b"", "statvfs", statvfs) else { return };
        for (name, kv, fv) in [
            ("f_bsize", k.f_bsize, f.f_bsize),
            ("f_frsize", k.f_frsize, f.f_frsize),
            ("f_blocks", k.f_blocks, f.f_blocks),
            ("f_bfree", k.f_bfree, f.f_bfree),
            ("f_bavail", k.f_bavail, f.f_bavail),
            ("f_files", k.f_files, f.f_files),
            ("f_ffree", k.f_ffree, f.f_ffree),
            ("f_namemax", k.f_namemax, f.f_namemax),
        ] {
            self.field(b"", &format!("statvfs {name}"), kv, fv);
        }
    }

    /// Compares the listings of directory `rel` and every entry in it;
    /// returns the subdirectories present on both sides, to walk next.
    fn directory(&mut self, rel: &[u8]) -> Vec<Vec<u8>> {
        let Some((kernel, fshost)) = self.both(rel, "readdir", read_dir) else { return Vec::new() };
        for (side, listing) in [(Side::Kernel, &kernel), (Side::Fshost, &fshost)] {
            let mut seen = BTreeSet::new();
            for (name, _) in listing {
                if !seen.insert(name) {
                    self.differ(&child(rel, name), "entry", format!("listed more than once in {side}"));
                }
            }
        }
        let kernel: BTreeMap<Vec<u8>, Dirent> = kernel.into_iter().collect();
        let fshost: BTreeMap<Vec<u8>, Dirent> = fshost.into_iter().collect();
        for name in fshost.keys().filter(|name| !kernel.contains_key(*name)) {
            self.differ(&child(rel, name), "entry", format!("only in {}", Side::Fshost));
        }
        let mut subdirs = Vec::new();
        for (name, k) in &kernel {
            let path = child(rel, name);
            let Some(f) = fshost.get(name) else {
                self.differ(&path, "entry", format!("only in {}", Side::Kernel));
                continue;
            };
            self.field(&path, "d_ino", k.ino, f.ino);
            self.field(&path, "d_type", k.kind, f.kind);
            if name == b"." || name == b".." {
                continue;
            }
            if self.entry(&path) {
                subdirs.push(path);
            }
        }
        subdirs
    }

    /// Compares one entry on both sides; true if it is a directory on both.
    fn entry(&mut self, rel: &[u8]) -> bool {
        let Some((k, f)) = self.both(rel, "lstat", |p| std::fs::symlink_metadata(p)) else { return false };
        self.metadata(rel, &k, &f);
        self.xattrs(rel);
        let (kt, ft) = (k.mode() & libc::S_IFMT, f.mode() & libc::S_IFMT);
        if kt != ft {
            return false; // contents of different kinds of thing are not comparable
        }
        match kt {
            libc::S_IFDIR => return true,
            libc::S_IFLNK => {
                if let Some((kl, fl)) = self.both(rel, "readlink", |p| std::fs::read_link(p)) {
                    let (kl, fl) = (kl.into_os_string().into_vec(), fl.into_os_string().into_vec());
                    if kl != fl {
                        self.differ(rel, "symlink target", format!("{} vs {}", show_bytes(&kl), show_bytes(&fl)));
                    }
                }
            }
            libc::S_IFREG => self.contents(rel, k.size()),
            _ => {}
        }
        for (side, meta) in [(0, &k), (1, &f)] {
            self.inodes[side].push((rel.to_vec(), meta.ino()));
        }
        false
    }

    fn metadata(&mut self, rel: &[u8], k: &Metadata, f: &Metadata) {
        self.field(rel, "type", file_type_name(k.mode()), file_type_name(f.mode()));
        self.field(rel, "mode", Octal(k.mode() & 0o7777), Octal(f.mode() & 0o7777));
        self.field(rel, "ino", k.ino(), f.ino());
        self.field(rel, "nlink", k.nlink(), f.nlink());
        self.field(rel, "uid", k.uid(), f.uid());
        self.field(rel, "gid", k.gid(), f.gid());
        self.field(rel, "rdev", DevT(k.rdev()), DevT(f.rdev()));
        self.field(rel, "size", k.size(), f.size());
        self.field(rel, "blksize", k.blksize(), f.blksize());
        self.field(rel, "blocks", k.blocks(), f.blocks());
        self.field(rel, "atime", k.atime(), f.atime());
        self.field(rel, "atime_nsec", k.atime_nsec(), f.atime_nsec());
        self.field(rel, "mtime", k.mtime(), f.mtime());
        self.field(rel, "mtime_nsec", k.mtime_nsec(), f.mtime_nsec());
        self.field(rel, "ctime", k.ctime(), f.ctime());
        self.field(rel, "ctime_nsec", k.ctime_nsec(), f.ctime_nsec());
    }

    fn xattrs(&mut self, rel: &[u8]) {
        let Some((k, f)) = self.both(rel, "listxattr", list_xattrs) else { return };
        let (k_listed, f_listed) = (k.len(), f.len());
        let (k, f): (BTreeSet<_>, BTreeSet<_>) = (k.into_iter().collect(), f.into_iter().collect());
        for (side, listed, names) in [(Side::Kernel, k_listed, &k), (Side::Fshost, f_listed, &f)] {
            if listed != names.len() {
                self.differ(rel, "listxattr", format!("lists a name more than once in {side}"));
            }
        }
        for name in k.symmetric_difference(&f) {
            let side = if k.contains(name) { Side::Kernel } else { Side::Fshost };
            self.differ(rel, format!("xattr {}", name.escape_ascii()), format!("only in {side}"));
        }
        for name in k.intersection(&f) {
            let what = format!("xattr {}", name.escape_ascii());
            let Some((kv, fv)) = self.both(rel, &what, |p| get_xattr(p, name)) else { continue };
            if kv != fv {
                self.differ(rel, what, format!("value {} vs {}", show_bytes(&kv), show_bytes(&fv)));
                continue;
            }
            // Programs ask for the size first (a zero-length buffer), then
            // the value: with equal values, the sizes must agree too.
            let what = format!("xattr {} size query", name.escape_ascii());
            if let Some((kn, fn_)) = self.both(rel, &what, |p| xattr_size(p, Some(name))) {
                self.field(rel, &what, kn, fn_);
            }
        }
        if k == f
            && let Some((kn, fn_)) = self.both(rel, "listxattr size query", |p| xattr_size(p, None))
        {
            self.field(rel, "listxattr size query", kn, fn_);
        }
    }

    /// The SEEK_DATA/SEEK_HOLE layout, then the bytes. Layout first: on the
    /// kernel side, reading an unwritten extent caches zero pages that
    /// SEEK_DATA would then report as data.
    fn contents(&mut self, rel: &[u8], size: u64) {
        let Some((k, f)) = self.both(rel, "open", open_for_reading) else { return };
        match (data_ranges(&k, size), data_ranges(&f, size)) {
            (Ok(kr), Ok(fr)) if kr == fr => {}
            // The kernel fails SEEK_DATA on some files (ENOENT on an inline-
            // data inode whose size passes its inline data); failing the
            // same way is faithful.
            (Err(ke), Err(fe)) if ke.raw_os_error().is_some() && ke.raw_os_error() == fe.raw_os_error() => {}
            (kr, fr) => {
                let show = |r: io::Result<Vec<(u64, u64)>>| match r {
                    Ok(ranges) => show_ranges(&ranges),
                    Err(e) => format!("error ({e})"),
                };
                let detail = format!("{} vs {}", show(kr), show(fr));
                self.differ(rel, "data ranges", detail);
            }
        }
        // pread at explicit offsets: the lseeks above moved the file offset.
        let [kb, fb] = &mut self.buffers;
        let mut offset = 0u64;
        let difference = loop {
            let (kn, fn_) = match (read_full_at(&k, kb, offset), read_full_at(&f, fb, offset)) {
                (Ok(kn), Ok(fn_)) => (kn, fn_),
                (kr, fr) => {
                    let show =
                        |r: io::Result<usize>| r.map_or_else(|e| format!("error ({e})"), |n| format!("{n} bytes"));
                    break Some(format!("read at {offset}: {} vs {}", show(kr), show(fr)));
                }
            };
            if let Some(at) = kb[..kn].iter().zip(&fb[..fn_]).position(|(a, b)| a != b) {
                break Some(format!("first differs at byte {}", offset + at as u64));
            }
            if kn != fn_ {
                break Some(format!("length {} vs {}", offset + kn as u64, offset + fn_ as u64));
            }
            if kn == 0 {
                break None;
            }
            offset += kn as u64;
        };
        if let Some(detail) = difference {
            self.differ(rel, "content", detail);
            return;
        }
        // Small reads at unaligned offsets, around block edges and the end.
        for offset in [1, 511, 1023, 4095, 4097, size / 2 + 3, size.saturating_sub(1), size, size + 1] {
            let mut kp = [0u8; 3];
            let mut fp = [0u8; 3];
            match (read_full_at(&k, &mut kp, offset), read_full_at(&f, &mut fp, offset)) {
                (Ok(kn), Ok(fn_)) if kp[..kn] == fp[..fn_] => {}
                (kr, fr) => {
                    let show = |r: io::Result<usize>, b: &[u8]| match r {
                        Ok(n) => show_bytes(&b[..n]),
                        Err(e) => format!("error ({e})"),
                    };
                    let detail = format!("3-byte read at {offset}: {} vs {}", show(kr, &kp), show(fr, &fp));
                    self.differ(rel, "content", detail);
                    return;
                }
            }
        }
    }
}

fn child(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(dir.len() + 1 + name.len());
    path.extend_from_slice(dir);
    path.push(b'/');
    path.extend_from_slice(name);
    path
}

/// Entries sharing an inode in one view must share one in the other: for
/// every path seen on both sides, the set of names that share its inode
/// must be the same set. Reports each mismatched group once.
pub fn link_group_differences(kernel: &[(Vec<u8>, u64)], fshost: &[(Vec<u8>, u64)]) -> Vec<Difference> {
    fn groups(entries: &[(Vec<u8>, u64)]) -> BTreeMap<&[u8], BTreeSet<&[u8]>> {
        let mut by_inode: BTreeMap<u64, BTreeSet<&[u8]>> = BTreeMap::new();
        for (path, ino) in entries {
            by_inode.entry(*ino).or_default().insert(path);
        }
        entries.iter().map(|(path, ino)| (&path[..], by_inode[ino].clone())).collect()
    }
    let (k, f) = (groups(kernel), groups(fshost));
    let mut reported = BTreeSet::new();
    let mut diffs = Vec::new();
    for (path, kg) in &k {
        let Some(fg) = f.get(path) else { continue };
        // Compare only names seen on both sides; a missing entry is already
        // reported by the directory comparison.
        let kg: BTreeSet<&[u8]> = kg.iter().copied().filter(|p| f.contains_key(p)).collect();
        let fg: BTreeSet<&[u8]> = fg.iter().copied().filter(|p| k.contains_key(p)).collect();
        if kg != fg && reported.insert((kg.clone(), fg.clone())) {
            let list = |g: &BTreeSet<&[u8]>| g.iter().map(|p| show(p)).collect::<Vec<_>>().join(", ");
            diffs.push(Difference {
                path: show(path),
                what: "hard links".to_string(),
                detail: format!("[{}] vs [{}]", list(&kg), list(&fg)),
            });
        }
    }
    diffs
}

fn show_ranges(ranges: &[(u64, u64)]) -> String {
    const MAX: usize = 8;
    let shown: Vec<String> = ranges.iter().take(MAX).map(|(s, e)| format!("{s}..{e}")).collect();
    let more = if ranges.len() > MAX { format!(" +{} more", ranges.len() - MAX) } else { String::new() };
    format!("[{}]{more} ({} ranges)", shown.join(", "), ranges.len())
}

#[derive(PartialEq)]
struct Octal(u32);

impl fmt::Display for Octal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

#[derive(PartialEq)]
struct DevT(u64);

impl fmt::Display for DevT {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", libc::major(self.0), libc::minor(self.0))
    }
}

fn file_type_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "regular",
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symlink",
        libc::S_IFCHR => "char-device",
        libc::S_IFBLK => "block-device",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        _ => "unknown",
    }
}

fn statvfs(path: &Path) -> io::Result<libc::statvfs> {
    let c = c_path(path)?;
    // SAFETY: zeroed is a valid statvfs (plain integers); statvfs fills it.
    let mut out: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut out) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(out)
}

/// Every entry readdir returns (including `.` and `..`), with raw d_ino and
/// d_type: std's DirEntry would hide a DT_UNKNOWN behind an lstat.
fn read_dir(path: &Path) -> io::Result<Vec<(Vec<u8>, Dirent)>> {
    let c = c_path(path)?;
    // SAFETY: valid C string.
    let dir = unsafe { libc::opendir(c.as_ptr()) };
    if dir.is_null() {
        return Err(io::Error::last_os_error());
    }
    let mut entries = Vec::new();
    let result = loop {
        // readdir signals errors only through errno; clear it first.
        // SAFETY: __errno_location returns this thread's errno.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `dir` is an open DIR* used by this thread only.
        let entry = unsafe { libc::readdir64(dir) };
        if entry.is_null() {
            let err = io::Error::last_os_error();
            break if err.raw_os_error() == Some(0) { Ok(()) } else { Err(err) };
        }
        // SAFETY: readdir returned a valid dirent64 that lives until the next
        // readdir call; we copy what we need now.
        let (name, ino, kind) = unsafe {
            let e = &*entry;
            (CStr::from_ptr(e.d_name.as_ptr()).to_bytes().to_vec(), e.d_ino, e.d_type)
        };
        entries.push((name, Dirent { ino, kind }));
    };
    // SAFETY: `dir` is open and not used after this.
    unsafe { libc::closedir(dir) };
    result.map(|()| entries)
}

/// Every xattr name of `path` itself (llistxattr), as bytes.
fn list_xattrs(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let c = c_path(path)?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: valid C string and a buffer of the given length.
        let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf.split(|&b| b == 0).filter(|n| !n.is_empty()).map(<[u8]>::to_vec).collect());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) || buf.len() >= 1 << 20 {
            return Err(err);
        }
        buf.resize(buf.len() * 4, 0);
    }
}

/// What a zero-length lgetxattr (for `name`) or llistxattr (for `None`)
/// says the answer's size is.
fn xattr_size(path: &Path, name: Option<&[u8]>) -> io::Result<usize> {
    let c = c_path(path)?;
    let n = match name {
        Some(name) => {
            Some(std::ffi::CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?)
        }
        None => None,
    };
    // SAFETY: valid C strings; a null buffer of length 0 asks for the size.
    let got = unsafe {
        match &n {
            Some(n) => libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0),
            None => libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0),
        }
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(got as usize)
}

/// The value of xattr `name` of `path` itself (lgetxattr).
fn get_xattr(path: &Path, name: &[u8]) -> io::Result<Vec<u8>> {
    let c = c_path(path)?;
    let n = std::ffi::CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: valid C strings and a buffer of the given length.
        let got = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) || buf.len() >= 1 << 20 {
            return Err(err);
        }
        buf.resize(buf.len() * 4, 0);
    }
}

fn open_for_reading(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)
}

/// Reads at `offset` until `buf` is full or end of file; returns the
/// bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[(&str, u64)]) -> Vec<(Vec<u8>, u64)> {
        list.iter().map(|(p, i)| (p.as_bytes().to_vec(), *i)).collect()
    }

    #[test]
    fn equal_link_groups_give_no_difference_even_with_other_numbers() {
        let kernel = entries(&[("/a", 12), ("/b", 12), ("/c", 13)]);
        let fshost = entries(&[("/a", 40), ("/b", 40), ("/c", 41)]);
        assert_eq!(link_group_differences(&kernel, &fshost), vec![]);
    }

    #[test]
    fn a_split_link_group_is_reported_for_each_side_of_the_split() {
        let kernel = entries(&[("/a", 12), ("/b", 12), ("/c", 13)]);
        let fshost = entries(&[("/a", 12), ("/b", 14), ("/c", 13)]);
        let diffs: Vec<String> = link_group_differences(&kernel, &fshost).iter().map(|d| d.to_string()).collect();
        assert_eq!(diffs, vec!["/a: hard links [/a, /b] vs [/a]", "/b: hard links [/a, /b] vs [/b]"]);
    }

    #[test]
    fn a_merged_link_group_is_reported() {
        let kernel = entries(&[("/a", 12), ("/b", 13)]);
        let fshost = entries(&[("/a", 12), ("/b", 12)]);
        let diffs: Vec<String> = link_group_differences(&kernel, &fshost).iter().map(|d| d.to_string()).collect();
        assert_eq!(diffs, vec!["/a: hard links [/a] vs [/a, /b]", "/b: hard links [/b] vs [/a, /b]"]);
    }

    #[test]
    fn non_utf8_paths_are_escaped() {
        assert_eq!(show(b"/dir/caf\xe9"), "/dir/caf\\xe9");
        assert_eq!(show(b""), "/");
    }
}
