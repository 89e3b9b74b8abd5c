//! The writer on inline_data filesystems, against oracles nobody here
//! wrote: images made by `mkfs.ext4 -O inline_data -d` (small files and
//! directories inline) and by the kernel's ext4 (which makes small files
//! and directories inline too) are changed through the `Filesystem` trait
//! (data written into the write mappings as the host writes it), then
//! `e2fsck -fn` must find them clean and the kernel, mounting read-only,
//! must read back exactly the bytes, names, sizes and xattrs a model of
//! POSIX semantics in this file expects (not what the guest says).
//!
//! Covered: a write into an inline file, a write growing one past its
//! capacity, truncates down and up, a punched hole, 200 names added to an
//! inline directory and half of them removed, renames into, out of and
//! across inline directories (the moved inline directory's ".." too),
//! rmdir of an empty and a non-empty inline directory, unlink and evict of
//! inline files, xattrs large enough not to fit beside `system.data`, and
//! xattrs on inline-data symlinks (whose xattr block e2fsck 1.47 does not
//! count: the guest moves the target out of inline data first).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{Scratch, debugfs, resolve};
use ext4::Ext4;
use fshost_sdk::{
    AttrChanges, ErrorCode, FallocateFlags, FileType, Filesystem, Ino, IomapFlags, MappingKind, MountOptions, NewInode,
    RenameFlags, Timestamp, XattrFlags, testing,
};
use fshost_tests::kernel::{Image, KernelMount, require_root};
use fshost_tests::pattern::pattern;

const T: Timestamp = Timestamp { seconds: 1_700_000_000, nanoseconds: 5 };

fn open_rw(image: &Path) -> Ext4 {
    let device = testing::open_image_rw(image).expect("open image");
    let mut fs = Ext4::mount(device, &MountOptions { read_only: false, options: Vec::new() }).expect("mount");
    fs.begin_write().expect("begin_write on an inline_data filesystem");
    fs
}

fn new(kind: FileType, perm: u16) -> NewInode {
    NewInode { kind, perm, uid: 0, gid: 0, rdev: 0, time: T }
}

fn ino_of(fs: &mut Ext4, path: &str) -> Ino {
    resolve(fs, path.as_bytes()).unwrap_or_else(|e| panic!("{path}: {e}")).ino
}

/// Whether debugfs says `path` has inline data (EXT4_INLINE_DATA_FL in
/// the flags its `stat` prints).
fn is_inline(image: &Path, path: &str) -> bool {
    let out = debugfs(image, &format!("stat /{path}"));
    let flags = out.split("Flags: 0x").nth(1).and_then(|r| r.split_whitespace().next());
    let flags = flags.and_then(|f| u32::from_str_radix(f, 16).ok()).unwrap_or_else(|| panic!("{path}: {out}"));
    flags & 0x1000_0000 != 0
}

/// Write `data` at `offset` of `ino` as the host does: iomap_begin with the
/// write flag, the bytes into the mappings (unwritten blocks zero-filled
/// around them), ioend.
fn host_write(fs: &mut Ext4, img: &File, ino: Ino, offset: u64, data: &[u8]) {
    let bs = u64::from(fs.info().unwrap().block_size);
    let end = offset + data.len() as u64;
    let mut pos = offset;
    while pos < end {
        let flags = IomapFlags { write: true, ..Default::default() };
        let maps = fs.iomap_begin(ino, pos, end - pos, flags).expect("iomap_begin(write)");
        let start = pos;
        for m in &maps {
            if pos >= end {
                break;
            }
            let (s, e) = (pos.max(m.offset), end.min(m.offset + m.length));
            let piece = &data[(s - offset) as usize..(e - offset) as usize];
            match m.kind {
                MappingKind::Mapped(dev) => img.write_all_at(piece, dev + (s - m.offset)).unwrap(),
                MappingKind::Unwritten(dev) => {
                    let (head, tail) = (s / bs * bs, e.div_ceil(bs) * bs);
                    let mut buf = vec![0u8; (tail - head) as usize];
                    buf[(s - head) as usize..(e - head) as usize].copy_from_slice(piece);
                    img.write_all_at(&buf, dev + (head - m.offset)).unwrap();
                }
                ref other => panic!("a write mapping of kind {other:?}"),
            }
            pos = e;
        }
        fs.ioend(ino, start, pos - start, T).expect("ioend");
    }
}

/// Zero `[from, to)` of `ino` where it is mapped, as the host does around
/// truncates and punched holes (asking from the start of the block: past
/// the size the guest answers a hole).
fn host_zero(fs: &mut Ext4, img: &File, ino: Ino, from: u64, to: u64) {
    let bs = u64::from(fs.info().unwrap().block_size);
    let block = from / bs * bs;
    for m in fs.iomap_begin(ino, block, to - block, IomapFlags::default()).unwrap() {
        let (s, e) = (from.max(m.offset), to.min(m.offset + m.length));
        if let MappingKind::Mapped(dev) = m.kind
            && s < e
        {
            img.write_all_at(&vec![0; (e - s) as usize], dev + (s - m.offset)).unwrap();
        }
    }
}

/// What the kernel must show afterwards.
#[derive(Default)]
struct Expect {
    /// Regular file path to its bytes.
    files: BTreeMap<String, Vec<u8>>,
    /// Directory path to its names (without "." and "..").
    dirs: BTreeMap<String, BTreeSet<String>>,
    /// Paths that must not exist.
    gone: Vec<String>,
    /// (path, xattr name, value).
    xattrs: Vec<(String, String, Vec<u8>)>,
    /// (directory, the inode its ".." names).
    parents: Vec<(String, String)>,
    /// Symlink path to its target.
    links: BTreeMap<String, Vec<u8>>,
}

fn check(image: &Path, expect: &Expect) {
    if let Err(e) = fshost_tests::fsck::e2fsck(image) {
        panic!("{e:#}");
    }
    let mount = KernelMount::read_only(image).expect("kernel mount");
    let at = |p: &str| mount.path().join(p);
    for (path, bytes) in &expect.files {
        let got = std::fs::read(at(path)).unwrap_or_else(|e| panic!("the kernel cannot read {path}: {e}"));
        assert_eq!(got.len(), bytes.len(), "{path}: size");
        if let Some(i) = got.iter().zip(bytes).position(|(a, b)| a != b) {
            panic!("{path}: the kernel reads another byte at {i}");
        }
    }
    for (path, names) in &expect.dirs {
        let got: BTreeSet<String> = std::fs::read_dir(at(path))
            .unwrap_or_else(|e| panic!("the kernel cannot list {path}: {e}"))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(&got, names, "{path}: names");
    }
    for path in &expect.gone {
        assert!(std::fs::symlink_metadata(at(path)).is_err(), "{path} still exists");
    }
    for (path, target) in &expect.links {
        let got = std::fs::read_link(at(path)).unwrap_or_else(|e| panic!("readlink {path}: {e}"));
        assert_eq!(got.as_os_str().as_encoded_bytes(), &target[..], "{path}: target");
    }
    for (path, name, value) in &expect.xattrs {
        let got = xattr_get(&at(path), name);
        assert_eq!(got.as_deref(), Some(&value[..]), "{path}: xattr {name}");
    }
    use std::os::unix::fs::MetadataExt;
    for (dir, parent) in &expect.parents {
        let dotdot = std::fs::metadata(at(dir).join("..")).unwrap().ino();
        assert_eq!(dotdot, std::fs::metadata(at(parent)).unwrap().ino(), "{dir}/.. is not {parent}");
    }
}

fn xattr_get(path: &Path, name: &str) -> Option<Vec<u8>> {
    fshost_tests::workload::sys::getxattr(path, name.as_bytes()).ok()
}

/// The source tree: small files and directories mkfs stores inline.
fn source(src: &Path) {
    for (name, len, seed) in
        [("f10", 10, 1), ("f60", 60, 2), ("f100", 100, 3), ("trunc", 100, 4), ("up", 30, 5), ("punch", 110, 6)]
    {
        std::fs::write(src.join(name), pattern(len, seed)).unwrap();
    }
    for name in ["keep", "xa", "xb", "gone"] {
        std::fs::write(src.join(name), pattern(50, 7)).unwrap();
    }
    for dir in ["grow", "empty", "full", "moving", "target"] {
        std::fs::create_dir(src.join(dir)).unwrap();
    }
    for name in ["a", "b", "c"] {
        std::fs::write(src.join("grow").join(name), pattern(20, 8)).unwrap();
    }
    std::fs::write(src.join("full/x"), b"x").unwrap();
    std::fs::write(src.join("moving/inside"), b"in").unwrap();
    for (name, len) in [("link70", 70), ("link60", 60)] {
        std::os::unix::fs::symlink(String::from_utf8(vec![b't'; len]).unwrap(), src.join(name)).unwrap();
    }
}

/// The changes, applied to an image whose tree [`source`] made (by mkfs or
/// by the kernel: only mkfs stores symlinks inline); returns what the
/// kernel must then show.
fn workload(image: &Path, inline_symlinks: bool) -> Expect {
    let mut e = Expect::default();
    for (name, len, seed) in
        [("f10", 10, 1), ("f60", 60, 2), ("f100", 100, 3), ("trunc", 100, 4), ("up", 30, 5), ("punch", 110, 6)]
    {
        e.files.insert(name.into(), pattern(len, seed));
    }
    for name in ["keep", "xa", "xb"] {
        e.files.insert(name.into(), pattern(50, 7));
    }
    for name in ["f10", "f100", "grow", "empty", "moving", "keep"] {
        assert!(is_inline(image, name), "the image should hold {name} inline");
    }
    assert_eq!(is_inline(image, "link70"), inline_symlinks, "link70 inline");
    let img = File::options().read(true).write(true).open(image).unwrap();
    let mut fs = open_rw(image);
    let bs = u64::from(fs.info().unwrap().block_size);
    let root = fs.info().unwrap().root;

    // A write inside an inline file, and one growing another past any inode.
    let f10 = ino_of(&mut fs, "f10");
    host_write(&mut fs, &img, f10, 3, b"hello");
    e.files.get_mut("f10").unwrap()[3..8].copy_from_slice(b"hello");
    let f60 = ino_of(&mut fs, "f60");
    let big = pattern(5000, 9);
    host_write(&mut fs, &img, f60, 50, &big);
    let f = e.files.get_mut("f60").unwrap();
    f.truncate(50);
    f.extend_from_slice(&big);
    // An append just past the end of one with data in system.data.
    let f100 = ino_of(&mut fs, "f100");
    host_write(&mut fs, &img, f100, 100, b"++");
    e.files.get_mut("f100").unwrap().extend_from_slice(b"++");

    // Truncate down (the host zeroes the rest of the block afterwards), up.
    let trunc = ino_of(&mut fs, "trunc");
    let a = fs.setattr(trunc, &AttrChanges { size: Some(41), ..Default::default() }).unwrap();
    assert_eq!(a.size, 41);
    host_zero(&mut fs, &img, trunc, 41, bs);
    e.files.get_mut("trunc").unwrap().truncate(41);
    fs.setattr(trunc, &AttrChanges { size: Some(90), ..Default::default() }).unwrap();
    e.files.get_mut("trunc").unwrap().resize(90, 0);
    let up = ino_of(&mut fs, "up");
    fs.setattr(up, &AttrChanges { size: Some(3 * bs + 7), ..Default::default() }).unwrap();
    e.files.get_mut("up").unwrap().resize((3 * bs + 7) as usize, 0);

    // Punch [20, 50): the host zeroes partial blocks after the guest.
    let punch = ino_of(&mut fs, "punch");
    let flags = FallocateFlags { punch_hole: true, keep_size: true, ..Default::default() };
    fs.fallocate(punch, 20, 30, flags, T).unwrap();
    host_zero(&mut fs, &img, punch, 20, 50);
    e.files.get_mut("punch").unwrap()[20..50].fill(0);

    // 200 names into an inline directory, then every other one removed.
    let grow = ino_of(&mut fs, "grow");
    let mut names: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
    for i in 0..200 {
        let name = format!("entry-with-a-longer-name-{i:04}");
        fs.create(grow, name.as_bytes(), &new(FileType::Regular, 0o644)).unwrap();
        names.insert(name);
    }
    for i in (0..200).step_by(2) {
        let name = format!("entry-with-a-longer-name-{i:04}");
        fs.unlink(grow, name.as_bytes(), T).unwrap();
        names.remove(&name);
    }
    e.dirs.insert("grow".into(), names);

    // rmdir: an empty inline directory goes, a non-empty one stays.
    assert_eq!(fs.rmdir(root, b"full", T).unwrap_err().code(), ErrorCode::NotEmpty);
    let empty = fs.rmdir(root, b"empty", T).unwrap();
    fs.evict(empty).unwrap();
    e.gone.push("empty".into());
    e.dirs.insert("full".into(), ["x".to_string()].into());

    // Renames: an inline directory moved into another inline directory
    // (its ".." in i_block), a file out of an inline directory, a file
    // across two of them.
    let target = ino_of(&mut fs, "target");
    fs.rename(root, b"moving", target, b"moved", RenameFlags::default(), T).unwrap();
    fs.rename(target, b"moved", target, b"moved2", RenameFlags::default(), T).unwrap();
    let moved = ino_of(&mut fs, "target/moved2");
    fs.rename(moved, b"inside", root, b"outside", RenameFlags::default(), T).unwrap();
    e.files.insert("outside".into(), b"in".to_vec());
    fs.rename(grow, b"a", moved, b"a-moved", RenameFlags::default(), T).unwrap();
    e.files.insert("target/moved2/a-moved".into(), pattern(20, 8));
    e.dirs.get_mut("grow").unwrap().remove("a");
    e.dirs.insert("target".into(), ["moved2".to_string()].into());
    e.dirs.insert("target/moved2".into(), ["a-moved".to_string()].into());
    e.parents.push(("target/moved2".into(), "target".into()));
    e.gone.push("moving".into());

    // A directory that stays inline moves: only its ".." changes.
    fs.create(root, b"p2", &new(FileType::Directory, 0o755)).unwrap();
    let p2 = ino_of(&mut fs, "p2");
    fs.rename(root, b"full", p2, b"full", RenameFlags::default(), T).unwrap();
    e.dirs.remove("full");
    e.dirs.insert("p2/full".into(), ["x".to_string()].into());
    e.parents.push(("p2/full".into(), "p2".into()));

    // Unlink and evict an inline file: its inode goes, no blocks were its.
    let gone = fs.unlink(root, b"gone", T).unwrap();
    fs.evict(gone.ino).unwrap();
    e.gone.push("gone".into());

    // Xattrs: one small enough for the body, one that is not (it goes to
    // a block: system.data stays in the body), one replaced by a bigger
    // value; the inline bytes stay.
    let xa = ino_of(&mut fs, "xa");
    let small = b"small".to_vec();
    let large = pattern(700, 10);
    fs.setxattr(xa, b"user.small", &small, XattrFlags::default(), T).unwrap();
    fs.setxattr(xa, b"user.large", &large, XattrFlags::default(), T).unwrap();
    let xb = ino_of(&mut fs, "xb");
    fs.setxattr(xb, b"user.v", b"1", XattrFlags::default(), T).unwrap();
    let bigger = pattern(80, 11);
    fs.setxattr(xb, b"user.v", &bigger, XattrFlags::default(), T).unwrap();
    for (path, name, value) in [("xa", "user.small", small), ("xa", "user.large", large), ("xb", "user.v", bigger)] {
        e.xattrs.push((path.into(), name.into(), value));
    }
    // On inline-data symlinks (e2fsck does not count an xattr block of
    // one: the guest moves the target out of inline data first).
    for name in ["link70", "link60"] {
        let ino = ino_of(&mut fs, name);
        let value = pattern(700, 12);
        fs.setxattr(ino, b"trusted.big", &value, XattrFlags::default(), T).unwrap();
        e.xattrs.push((name.into(), "trusted.big".into(), value));
        let len = if name == "link70" { 70 } else { 60 };
        e.links.insert(name.into(), vec![b't'; len]);
        assert_eq!(fs.readlink(ino).unwrap(), vec![b't'; len]);
    }
    // The guest itself still reads the inline bytes.
    let maps = fs.iomap_begin(xa, 0, 50, IomapFlags::default()).unwrap();
    assert!(matches!(&maps[0].kind, MappingKind::Inline(b) if b[..] == pattern(50, 7)[..]), "xa after setxattr");
    assert!(
        !fs.listxattr(xa).unwrap().iter().any(|n| n == b"system.data"),
        "system.data is internal (the kernel hides it)"
    );

    fs.unmount().unwrap();
    drop(fs);
    for name in ["keep", "xa", "xb", "p2/full"] {
        assert!(is_inline(image, name), "{name} was not changed and should still be inline");
    }
    for name in ["f10", "f60", "trunc", "grow", "target/moved2"] {
        assert!(!is_inline(image, name), "{name} was changed and should have been converted");
    }
    e
}

#[test]
fn inline_files_and_directories_from_mkfs() {
    require_root();
    let src = Scratch::new("inline-src");
    source(src.path());
    let image = Image::mkfs(src.path(), &["-O", "inline_data", "-b", "4096"], "64M").expect("mkfs -O inline_data");
    let expect = workload(image.path(), true);
    check(image.path(), &expect);
}

#[test]
fn inline_files_and_directories_from_mkfs_1k_blocks_no_csum() {
    require_root();
    let src = Scratch::new("inline-src");
    source(src.path());
    let image = Image::mkfs(src.path(), &["-O", "inline_data,^metadata_csum", "-b", "1024"], "64M").expect("mkfs");
    let expect = workload(image.path(), true);
    check(image.path(), &expect);
}

/// The same tree made by the kernel's ext4 (it stores small files and
/// directories inline itself), written through a descriptor only.
#[test]
fn inline_files_and_directories_from_the_kernel() {
    require_root();
    let empty = Scratch::new("inline-empty");
    let image = Image::mkfs(empty.path(), &["-O", "inline_data"], "64M").expect("mkfs -O inline_data");
    {
        let mount = KernelMount::read_write(image.path(), "").expect("kernel mount rw");
        source(mount.path());
    }
    if let Err(e) = fshost_tests::fsck::e2fsck(image.path()) {
        panic!("the kernel's image: {e:#}");
    }
    let expect = workload(image.path(), false);
    check(image.path(), &expect);
}
