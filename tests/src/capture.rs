//! What a tree *means*, captured so it can be compared later: after a
//! workload ran on two copies of an image through two implementations, the
//! trees must hold the same names (as bytes), types, modes, owners, sizes,
//! link counts, device numbers, symlink targets, xattrs (names and values),
//! contents and holes. [`crate::compare`] walks two live mounts side by side
//! and also compares what two writers may legitimately choose differently
//! (inode numbers, block counts, ctime); a capture leaves those out, and is
//! owned data, so fshost's view can be taken before its unmount and
//! compared with the kernel's view of the same image afterwards.
//!
//! Times are captured but compared only for the paths a caller names (those
//! a workload set explicitly with utimensat).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::compare::Difference;
use crate::kernel::data_ranges;
use crate::workload::sys;

/// Files up to this size are hashed whole; larger ones by their data
/// ranges plus samples of their holes (a sparse file of 8 GiB would take
/// seconds to read through FUSE, and its holes are already compared as a
/// map).
const READ_WHOLE: u64 = 64 << 20;

/// Xattr name to value, or to the errno getxattr gave.
pub type Xattrs = BTreeMap<Vec<u8>, Result<Vec<u8>, i32>>;

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// S_IFMT bits.
    pub kind: u32,
    /// Permission bits (07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    /// For directories this is the directory's size on disk, which depends
    /// on how the writer grew it ([`Options::dir_sizes`]).
    pub size: u64,
    pub rdev: u64,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
    /// Regular files: SHA-256 of the content (or the errno of reading it).
    pub content: Option<Result<String, i32>>,
    /// Regular files: (offset, FNV-1a) of each 4 KiB piece hashed, to say
    /// where two contents part.
    pub pieces: Vec<(u64, u64)>,
    /// Regular files: the SEEK_DATA/SEEK_HOLE map, or its errno.
    pub data: Option<Result<Vec<(u64, u64)>, i32>>,
    pub target: Option<Result<Vec<u8>, i32>>,
    pub xattrs: Result<Xattrs, i32>,
    /// The other captured paths naming the same inode (not directories).
    pub links: BTreeSet<Vec<u8>>,
    ino: u64,
}

/// A captured tree: path (bytes from the root, `/a/b`; the root is `/`)
/// to what it is, or to the errno lstat gave.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    pub nodes: BTreeMap<Vec<u8>, Result<Node, i32>>,
    /// Directories that could not be listed, with the errno.
    pub unlisted: BTreeMap<Vec<u8>, i32>,
}

/// What a comparison looks at beyond the always-compared fields.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Paths whose atime and mtime are compared.
    pub timed: BTreeSet<Vec<u8>>,
    /// Compare directory sizes (how many blocks the writer gave each
    /// directory: a writer free to grow and shrink directories its own way
    /// may differ from the kernel here and nowhere else).
    pub dir_sizes: bool,
}

fn errno(err: &io::Error) -> i32 {
    sys::errno(err)
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = if dir == b"/" { Vec::new() } else { dir.to_vec() };
    path.push(b'/');
    path.extend_from_slice(name);
    path
}

fn on_disk(root: &Path, rel: &[u8]) -> std::path::PathBuf {
    if rel == b"/" { root.to_path_buf() } else { root.join(std::ffi::OsStr::from_bytes(&rel[1..])) }
}

/// Captures the tree mounted (or lying) at `root`.
pub fn capture(root: &Path) -> Tree {
    let mut tree = Tree::default();
    let mut seen = Seen::new();
    let mut pending = vec![b"/".to_vec()];
    while let Some(dir) = pending.pop() {
        let found = node(&on_disk(root, &dir), &mut seen);
        let is_dir = matches!(&found, Ok(n) if n.kind == libc::S_IFDIR);
        tree.nodes.insert(dir.clone(), found);
        if !is_dir {
            continue;
        }
        match std::fs::read_dir(on_disk(root, &dir)) {
            Ok(entries) => {
                for entry in entries {
                    match entry {
                        Ok(entry) => {
                            let path = join(&dir, &entry.file_name().into_vec());
                            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                            if is_dir {
                                pending.push(path);
                            } else {
                                let node = node(&on_disk(root, &path), &mut seen);
                                tree.nodes.insert(path, node);
                            }
                        }
                        Err(err) => {
                            tree.unlisted.insert(dir.clone(), errno(&err));
                            break;
                        }
                    }
                }
            }
            Err(err) => {
                tree.unlisted.insert(dir.clone(), errno(&err));
            }
        }
    }
    // Link groups: every non-directory path sharing an inode.
    let mut by_ino: BTreeMap<u64, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for (path, node) in &tree.nodes {
        if let Ok(n) = node
            && n.kind != libc::S_IFDIR
        {
            by_ino.entry(n.ino).or_default().insert(path.clone());
        }
    }
    for (path, node) in tree.nodes.iter_mut() {
        if let Ok(n) = node
            && n.kind != libc::S_IFDIR
        {
            n.links = by_ino[&n.ino].iter().filter(|p| *p != path).cloned().collect();
        }
    }
    tree
}

/// A regular file's map and contents by inode number, taken at the first
/// of its names: reading the bytes through one name caches pages that the
/// kernel's SEEK_DATA then reports as data through the next name (zero
/// pages over unwritten extents), so every later name gets what the first
/// saw, whichever order the two sides list names in.
type Seen = BTreeMap<u64, (Option<Result<String, i32>>, Option<Result<Vec<(u64, u64)>, i32>>, Vec<(u64, u64)>)>;

fn node(path: &Path, seen: &mut Seen) -> Result<Node, i32> {
    // Times first: nothing below may move them (reading can, on a
    // read-write mount with relatime).
    let meta = std::fs::symlink_metadata(path).map_err(|e| errno(&e))?;
    let kind = meta.mode() & libc::S_IFMT;
    let mut node = Node {
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        nlink: meta.nlink(),
        size: meta.size(),
        rdev: if matches!(kind, libc::S_IFCHR | libc::S_IFBLK) { meta.rdev() } else { 0 },
        atime: (meta.atime(), meta.atime_nsec()),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        content: None,
        pieces: Vec::new(),
        data: None,
        target: None,
        xattrs: xattrs(path),
        links: BTreeSet::new(),
        ino: meta.ino(),
    };
    match kind {
        libc::S_IFLNK => {
            node.target = Some(std::fs::read_link(path).map(|t| t.into_os_string().into_vec()).map_err(|e| errno(&e)))
        }
        libc::S_IFREG if seen.contains_key(&node.ino) => {
            let (content, data, pieces) = seen[&node.ino].clone();
            (node.content, node.data, node.pieces) = (content, data, pieces);
        }
        libc::S_IFREG => {
            let opened =
                std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path);
            match opened {
                Ok(file) => {
                    // The map before the bytes: on the kernel's side reading
                    // an unwritten extent caches zero pages that SEEK_DATA
                    // would then report as data.
                    let map = data_ranges(&file, node.size).map_err(|e| errno(&e));
                    let hashed = content_hash(&file, node.size, map.as_ref().ok(), &mut node.pieces);
                    node.content = Some(hashed);
                    node.data = Some(map);
                }
                Err(err) => node.content = Some(Err(errno(&err))),
            }
            seen.insert(node.ino, (node.content.clone(), node.data.clone(), node.pieces.clone()));
        }
        _ => {}
    }
    Ok(node)
}

fn xattrs(path: &Path) -> Result<Xattrs, i32> {
    let names = sys::listxattr(path).map_err(|e| errno(&e))?;
    Ok(names.into_iter().map(|n| (n.clone(), sys::getxattr(path, &n).map_err(|e| errno(&e)))).collect())
}

/// SHA-256 of the file's `size` bytes: all of them when small; for a large
/// file, the bytes of each data range (with its offset) and, from each
/// hole, 4 KiB at its start, middle and end, which must read as zeros (a
/// sample that is not zero is hashed with its offset, so it shows).
fn content_hash(
    file: &File,
    size: u64,
    map: Option<&Vec<(u64, u64)>>,
    pieces: &mut Vec<(u64, u64)>,
) -> Result<String, i32> {
    let mut hasher = Sha256::new();
    hasher.update(size.to_le_bytes());
    let mut buf = vec![0u8; 1 << 20];
    let mut hash_range = |hasher: &mut Sha256, start: u64, end: u64| -> Result<(), i32> {
        let mut pos = start;
        while pos < end {
            let want = ((end - pos) as usize).min(buf.len());
            let n = sys::read_full_at(file, &mut buf[..want], pos).map_err(|e| errno(&e))?;
            hasher.update(pos.to_le_bytes());
            hasher.update(&buf[..n]);
            for (i, piece) in buf[..n].chunks(4096).enumerate() {
                pieces.push((pos + i as u64 * 4096, fnv1a(piece)));
            }
            if n < want {
                hasher.update(b"short read");
                break;
            }
            pos += n as u64;
        }
        Ok(())
    };
    match map {
        Some(map) if size > READ_WHOLE => {
            let mut holes = Vec::new();
            let mut at = 0;
            for &(start, end) in map {
                hash_range(&mut hasher, start, end)?;
                if start > at {
                    holes.push((at, start));
                }
                at = end;
            }
            if at < size {
                holes.push((at, size));
            }
            let mut sample = vec![0u8; 4096];
            for (start, end) in holes {
                let mid = start + (end - start) / 2;
                for pos in [start, mid, end.saturating_sub(4096).max(start)] {
                    let want = ((end - pos) as usize).min(sample.len());
                    let n = sys::read_full_at(file, &mut sample[..want], pos).map_err(|e| errno(&e))?;
                    if n != want || sample[..n].iter().any(|&b| b != 0) {
                        hasher.update(b"hole not zero at");
                        hasher.update(pos.to_le_bytes());
                        hasher.update(&sample[..n]);
                    }
                }
            }
        }
        _ => hash_range(&mut hasher, 0, size)?,
    }
    // Past the end: nothing.
    let mut one = [0u8; 1];
    if file.read_at(&mut one, size).map_err(|e| errno(&e))? != 0 {
        hasher.update(b"bytes past the size");
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Where two files' hashed pieces first part, for a message.
fn first_difference(x: &[(u64, u64)], y: &[(u64, u64)]) -> String {
    match x.iter().zip(y).find(|(a, b)| a != b) {
        Some((a, _)) => format!(" (first in the 4 KiB at {})", a.0),
        None if x.len() != y.len() => format!(" (past {} pieces)", x.len().min(y.len())),
        None => String::new(),
    }
}

fn show(path: &[u8]) -> String {
    path.escape_ascii().to_string()
}

fn show_errno(errno: i32) -> String {
    io::Error::from_raw_os_error(errno).to_string()
}

fn show_bytes(bytes: &[u8]) -> String {
    const MAX: usize = 60;
    if bytes.len() > MAX {
        format!("\"{}\"... ({} bytes)", bytes[..MAX].escape_ascii(), bytes.len())
    } else {
        format!("\"{}\"", bytes.escape_ascii())
    }
}

fn show_ranges(ranges: &Result<Vec<(u64, u64)>, i32>) -> String {
    match ranges {
        Err(e) => show_errno(*e),
        Ok(ranges) => {
            let shown: Vec<String> = ranges.iter().take(6).map(|(s, e)| format!("{s}..{e}")).collect();
            let more = if ranges.len() > 6 { format!(" +{}", ranges.len() - 6) } else { String::new() };
            format!("[{}]{more}", shown.join(", "))
        }
    }
}

/// Every difference between `a` and `b` (each side named in details, `a`
/// first). Empty means the trees mean the same.
pub fn diff(a: &Tree, b: &Tree, options: &Options) -> Vec<Difference> {
    let mut diffs = Vec::new();
    let mut differ = |path: &[u8], what: &str, detail: String| {
        diffs.push(Difference { path: show(path), what: what.to_string(), detail });
    };
    for path in a.nodes.keys().filter(|p| !b.nodes.contains_key(*p)) {
        differ(path, "entry", "only in the first tree".into());
    }
    for path in b.nodes.keys().filter(|p| !a.nodes.contains_key(*p)) {
        differ(path, "entry", "only in the second tree".into());
    }
    for (path, errno) in &a.unlisted {
        if b.unlisted.get(path) != Some(errno) {
            differ(
                path,
                "readdir",
                format!("{} vs {:?}", show_errno(*errno), b.unlisted.get(path).map(|e| show_errno(*e))),
            );
        }
    }
    for (path, errno) in &b.unlisted {
        if !a.unlisted.contains_key(path) {
            differ(path, "readdir", format!("ok vs {}", show_errno(*errno)));
        }
    }
    for (path, x) in &a.nodes {
        let Some(y) = b.nodes.get(path) else { continue };
        let (x, y) = match (x, y) {
            (Ok(x), Ok(y)) => (x, y),
            (Err(e), Err(f)) if e == f => continue,
            (x, y) => {
                let s = |r: &Result<Node, i32>| r.as_ref().map_or_else(|e| show_errno(*e), |_| "ok".into());
                differ(path, "lstat", format!("{} vs {}", s(x), s(y)));
                continue;
            }
        };
        let mut field = |what: &str, xv: String, yv: String| {
            if xv != yv {
                differ(path, what, format!("{xv} vs {yv}"));
            }
        };
        field("type", format!("{:o}", x.kind), format!("{:o}", y.kind));
        field("mode", format!("{:04o}", x.mode), format!("{:04o}", y.mode));
        field("uid", x.uid.to_string(), y.uid.to_string());
        field("gid", x.gid.to_string(), y.gid.to_string());
        field("nlink", x.nlink.to_string(), y.nlink.to_string());
        if x.kind != libc::S_IFDIR || y.kind != libc::S_IFDIR || options.dir_sizes {
            field("size", x.size.to_string(), y.size.to_string());
        }
        field(
            "rdev",
            format!("{}:{}", libc::major(x.rdev), libc::minor(x.rdev)),
            format!("{}:{}", libc::major(y.rdev), libc::minor(y.rdev)),
        );
        if options.timed.contains(&path[1..]) {
            field("atime", format!("{}.{:09}", x.atime.0, x.atime.1), format!("{}.{:09}", y.atime.0, y.atime.1));
            field("mtime", format!("{}.{:09}", x.mtime.0, x.mtime.1), format!("{}.{:09}", y.mtime.0, y.mtime.1));
        }
        if x.content != y.content {
            let s = |c: &Option<Result<String, i32>>| match c {
                None => "none".to_string(),
                Some(Ok(h)) => h[..16].to_string(),
                Some(Err(e)) => show_errno(*e),
            };
            let at = first_difference(&x.pieces, &y.pieces);
            field("content", s(&x.content), format!("{}{at}", s(&y.content)));
        }
        if x.data != y.data {
            let s = |d: &Option<Result<Vec<(u64, u64)>, i32>>| d.as_ref().map_or("none".into(), show_ranges);
            field("data ranges", s(&x.data), s(&y.data));
        }
        if x.target != y.target {
            let s = |t: &Option<Result<Vec<u8>, i32>>| match t {
                None => "none".to_string(),
                Some(Ok(t)) => show_bytes(t),
                Some(Err(e)) => show_errno(*e),
            };
            field("symlink target", s(&x.target), s(&y.target));
        }
        match (&x.xattrs, &y.xattrs) {
            (Ok(xa), Ok(ya)) => {
                for name in xa.keys().chain(ya.keys()).collect::<BTreeSet<_>>() {
                    let what = format!("xattr {}", name.escape_ascii());
                    let s = |v: Option<&Result<Vec<u8>, i32>>| match v {
                        None => "absent".to_string(),
                        Some(Ok(v)) => show_bytes(v),
                        Some(Err(e)) => show_errno(*e),
                    };
                    let (xv, yv) = (xa.get(name), ya.get(name));
                    if xv != yv {
                        field(&what, s(xv), s(yv));
                    }
                }
            }
            (xr, yr) if xr != yr => {
                let s = |r: &Result<_, i32>| r.as_ref().map_or_else(|e| show_errno(*e), |_| "ok".into());
                field("listxattr", s(xr), s(yr));
            }
            _ => {}
        }
        if x.links != y.links {
            let s = |l: &BTreeSet<Vec<u8>>| format!("[{}]", l.iter().map(|p| show(p)).collect::<Vec<_>>().join(", "));
            field("hard links", s(&x.links), s(&y.links));
        }
    }
    diffs
}

/// `diffs` as a failure message (at most `max` lines), or None if empty.
pub fn report(diffs: &[Difference], max: usize) -> Option<String> {
    if diffs.is_empty() {
        return None;
    }
    let mut lines: Vec<String> = diffs.iter().take(max).map(|d| format!("  {d}")).collect();
    if diffs.len() > max {
        lines.push(format!("  ... and {} more", diffs.len() - max));
    }
    Some(format!("{} differences:\n{}", diffs.len(), lines.join("\n")))
}
