//! Shared helpers for the image tests: scratch directories, mkfs/debugfs
//! wrappers, and a checker that compares what the guest answers with the
//! source tree mkfs copied (names, types, modes, owners, sizes, times, device
//! numbers, symlink targets, xattrs, and file bytes reassembled from the
//! guest's mappings by reading the image file).

#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use ext4::Ext4;
use fshost_sdk::{Attr, FileType, Filesystem, Ino, IomapFlags, Mapping, MappingKind, MountOptions, Result, testing};

/// A directory under the system temp dir, removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "fshost-ext4-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Scratch(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run a command, panicking with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `mkfs.ext4 -q -F -d src [args] image size`.
pub fn mkfs(src: &Path, image: &Path, args: &[&str], size: &str) {
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(src).args(args).arg(image).arg(size));
}

/// Output of `debugfs -R request image` (read-only).
pub fn debugfs(image: &Path, request: &str) -> String {
    run(Command::new("debugfs").arg("-R").arg(request).arg(image))
}

/// Output of `debugfs -w -R request image`.
pub fn debugfs_w(image: &Path, request: &str) -> String {
    run(Command::new("debugfs").arg("-w").arg("-R").arg(request).arg(image))
}

/// Mount `image` with the guest and the given `-o` options.
pub fn mount(image: &Path, options: &[(&str, &str)]) -> Result<Ext4> {
    let device = testing::open_image(image)?;
    let options = MountOptions {
        read_only: true,
        options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    Ext4::mount(device, &options)
}

/// Resolve `path` (relative to the root, components separated by '/').
pub fn resolve(fs: &mut Ext4, path: &[u8]) -> Result<Attr> {
    let root = fs.info()?.root;
    let mut attr = fs.getattr(root)?;
    for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        attr = fs.lookup(attr.ino, comp)?;
    }
    Ok(attr)
}

/// All entries of directory `ino`, read `batch` at a time through cookies.
pub fn list_dir(fs: &mut Ext4, ino: Ino, batch: u32) -> Result<Vec<fshost_sdk::DirEntry>> {
    let mut out = Vec::new();
    let mut cookie = 0;
    loop {
        let chunk = fs.readdir(ino, cookie, batch)?;
        let Some(last) = chunk.last() else { return Ok(out) };
        assert!(chunk.len() <= batch as usize);
        assert!(last.cookie != 0 && last.cookie > cookie, "cookies must advance");
        cookie = last.cookie;
        out.extend(chunk);
    }
}

/// Check one `iomap_begin` answer against the contract and return it.
pub fn check_mappings(maps: &[Mapping], offset: u64, block_size: u64) -> Vec<Mapping> {
    assert!(!maps.is_empty() && maps.len() <= 256, "mapping list of {} at {offset}", maps.len());
    let first = &maps[0];
    assert!(first.offset <= offset && offset < first.offset + first.length, "first mapping {first:?} misses {offset}");
    for pair in maps.windows(2) {
        assert_eq!(pair[0].offset + pair[0].length, pair[1].offset, "mappings not contiguous: {pair:?}");
    }
    for m in maps {
        assert!(m.length > 0, "empty mapping {m:?}");
        match &m.kind {
            MappingKind::Inline(bytes) => assert_eq!(bytes.len() as u64, m.length),
            MappingKind::Mapped(dev) | MappingKind::Unwritten(dev) => {
                assert_eq!(dev % block_size, 0, "{m:?}");
                assert_eq!(m.offset % block_size, 0, "{m:?}");
                assert_eq!(m.length % block_size, 0, "{m:?}");
            }
            MappingKind::Hole => {
                assert_eq!(m.offset % block_size, 0, "{m:?}");
                assert_eq!(m.length % block_size, 0, "{m:?}");
            }
        }
    }
    maps.to_vec()
}

/// The bytes of regular file `ino` (`size` long), reassembled from the
/// guest's mappings by reading `image` at the mapped device offsets. Also
/// returns every mapping seen.
pub fn read_file(fs: &mut Ext4, image: &Path, ino: Ino, size: u64) -> Result<(Vec<u8>, Vec<Mapping>)> {
    let bs = u64::from(fs.info()?.block_size);
    let img = File::open(image).expect("open image");
    let mut out = vec![0u8; size as usize];
    let mut seen = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let maps = check_mappings(&fs.iomap_begin(ino, pos, size - pos, IomapFlags::default())?, pos, bs);
        let mut end = pos;
        for m in &maps {
            let from = m.offset.max(pos);
            let to = (m.offset + m.length).min(size);
            if from < to {
                let dst = &mut out[from as usize..to as usize];
                match &m.kind {
                    MappingKind::Hole | MappingKind::Unwritten(_) => dst.fill(0),
                    MappingKind::Mapped(dev) => img.read_exact_at(dst, dev + (from - m.offset)).expect("read image"),
                    MappingKind::Inline(bytes) => {
                        dst.copy_from_slice(&bytes[(from - m.offset) as usize..(to - m.offset) as usize])
                    }
                }
            }
            end = end.max(m.offset + m.length);
        }
        assert!(end > pos, "no progress at {pos}");
        pos = end;
        seen.extend(maps);
    }
    Ok((out, seen))
}

/// The xattrs of `path` as getfattr reports them (all namespaces), values
/// decoded from hex.
pub fn source_xattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let out = Command::new("getfattr")
        .args(["-h", "-d", "-m", "-", "-e", "hex", "--absolute-names"])
        .arg(path)
        .output()
        .expect("run getfattr");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut map = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once('=').unwrap_or((line, ""));
        let hex = value.strip_prefix("0x").unwrap_or("");
        let bytes = (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
        map.insert(name.as_bytes().to_vec(), bytes);
    }
    map
}

/// What the check of a tree found, for tests that want to assert on it.
#[derive(Default, Debug)]
pub struct Walked {
    pub files: usize,
    pub dirs: usize,
    pub xattrs: usize,
    pub mappings: Vec<(PathBuf, Vec<Mapping>)>,
}

/// Compare everything the guest says about the tree at `src` (which mkfs
/// copied into `image`) with the tree itself.
pub fn compare_tree(fs: &mut Ext4, image: &Path, src: &Path) -> Walked {
    let mut walked = Walked::default();
    let root = fs.info().unwrap().root;
    compare_dir(fs, image, src, root, Path::new(""), &mut walked);
    walked
}

fn compare_dir(fs: &mut Ext4, image: &Path, src_dir: &Path, ino: Ino, rel: &Path, walked: &mut Walked) {
    walked.dirs += 1;
    let entries = list_dir(fs, ino, 7).unwrap_or_else(|e| panic!("readdir {rel:?}: {e}"));
    let got: BTreeSet<Vec<u8>> = entries.iter().map(|e| e.name.clone()).collect();
    assert_eq!(got.len(), entries.len(), "duplicate names in {rel:?}");
    let want: BTreeSet<Vec<u8>> = std::fs::read_dir(src_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .filter(|n| n != b"lost+found" || !rel.as_os_str().is_empty())
        .collect();
    let got_no_lpf: BTreeSet<Vec<u8>> =
        got.iter().filter(|n| *n != b"lost+found" || !rel.as_os_str().is_empty()).cloned().collect();
    assert_eq!(got_no_lpf, want, "names in {rel:?}");
    for entry in entries {
        let name = OsStr::from_bytes(&entry.name);
        if rel.as_os_str().is_empty() && entry.name == b"lost+found" {
            continue;
        }
        let src = src_dir.join(name);
        let rel = rel.join(name);
        let attr = fs.lookup(ino, &entry.name).unwrap_or_else(|e| panic!("lookup {rel:?}: {e}"));
        assert_eq!(attr.ino, entry.ino, "{rel:?}: lookup and readdir disagree");
        assert_eq!(attr.kind, entry.kind, "{rel:?}: readdir type");
        compare_attr(&attr, &src, &rel);
        compare_xattrs(fs, &attr, &src, &rel, walked);
        match attr.kind {
            FileType::Directory => compare_dir(fs, image, &src, attr.ino, &rel, walked),
            FileType::Regular => {
                walked.files += 1;
                let want = std::fs::read(&src).unwrap();
                let (got, maps) =
                    read_file(fs, image, attr.ino, attr.size).unwrap_or_else(|e| panic!("read {rel:?}: {e}"));
                assert!(got == want, "{rel:?}: contents differ");
                walked.mappings.push((rel.clone(), maps));
            }
            FileType::Symlink => {
                let want = std::fs::read_link(&src).unwrap();
                let got = fs.readlink(attr.ino).unwrap_or_else(|e| panic!("readlink {rel:?}: {e}"));
                assert_eq!(got, want.as_os_str().as_bytes(), "{rel:?}: symlink target");
            }
            _ => {}
        }
    }
}

fn compare_attr(attr: &Attr, src: &Path, rel: &Path) {
    let md = std::fs::symlink_metadata(src).unwrap();
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        FileType::Directory
    } else if ft.is_file() {
        FileType::Regular
    } else if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_char_device() {
        FileType::CharDevice
    } else if ft.is_block_device() {
        FileType::BlockDevice
    } else if ft.is_fifo() {
        FileType::Fifo
    } else {
        FileType::Socket
    };
    assert_eq!(attr.kind, kind, "{rel:?}: type");
    assert_eq!(u32::from(attr.perm), md.mode() & 0o7777, "{rel:?}: permissions");
    assert_eq!(attr.uid, md.uid(), "{rel:?}: uid");
    assert_eq!(attr.gid, md.gid(), "{rel:?}: gid");
    if kind != FileType::Directory {
        assert_eq!(attr.size, md.size(), "{rel:?}: size");
        assert_eq!(u64::from(attr.nlink), md.nlink(), "{rel:?}: link count");
    }
    if matches!(kind, FileType::CharDevice | FileType::BlockDevice) {
        assert_eq!(attr.rdev, md.rdev(), "{rel:?}: device number");
    }
    assert_eq!(attr.mtime.seconds, md.mtime(), "{rel:?}: mtime");
}

fn compare_xattrs(fs: &mut Ext4, attr: &Attr, src: &Path, rel: &Path, walked: &mut Walked) {
    let want = source_xattrs(src);
    let names: BTreeSet<Vec<u8>> = fs.listxattr(attr.ino).unwrap().into_iter().collect();
    assert_eq!(names, want.keys().cloned().collect::<BTreeSet<_>>(), "{rel:?}: xattr names");
    for (name, value) in &want {
        let got = fs.getxattr(attr.ino, name).unwrap_or_else(|e| panic!("{rel:?}: getxattr {name:?}: {e}"));
        assert!(&got == value, "{rel:?}: xattr {} differs", String::from_utf8_lossy(name));
        walked.xattrs += 1;
    }
}

/// Parse `debugfs -R 'stat <ino>'` into its "Key: value" fields (first
/// word of each value), plus the raw text under "raw".
pub fn debugfs_stat(image: &Path, ino: Ino) -> BTreeMap<String, String> {
    let text = debugfs(image, &format!("stat <{ino}>"));
    let mut map = BTreeMap::new();
    let words: Vec<&str> = text.split_whitespace().collect();
    for pair in words.windows(2) {
        if let Some(key) = pair[0].strip_suffix(':') {
            map.entry(key.to_string()).or_insert_with(|| pair[1].to_string());
        }
    }
    map.insert("raw".into(), text);
    map
}

/// xorshift64*: a tiny seeded generator, no dependency (the fuzz and crash
/// tests draw their cases from it, so a seed replays a run).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
