//! The writer's namespace calls (create, symlink, link, unlink, rmdir,
//! rename, xattrs, evict and the orphan list) run natively on images made
//! by mkfs.ext4 (and by the kernel), then judged by oracles nobody here
//! wrote: `e2fsck -fn` must find the image clean (it checks link counts,
//! bitmaps, htree indexes, checksums and orphans), and the kernel's ext4
//! driver, mounting it read-only, must show exactly the tree the guest
//! showed before its unmount (names, types, permissions, link counts,
//! device numbers, symlink targets, xattrs).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::*;
use ext4::Ext4;
use fshost_sdk::{
    ErrorCode, FileType, Filesystem, Ino, MountOptions, NewInode, RenameFlags, Timestamp, XattrFlags, encode_rdev,
    testing,
};
use fshost_tests::fsck::e2fsck;
use fshost_tests::kernel::KernelMount;

const ROOT: Ino = 2;

/// What one path shows, from either side.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: char,
    perm: u32,
    nlink: u64,
    uid: u32,
    gid: u32,
    rdev: u64,
    /// Symlink target, or regular file size.
    target: Vec<u8>,
    size: u64,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

type Tree = BTreeMap<Vec<u8>, Node>;

fn kind_char(kind: FileType) -> char {
    match kind {
        FileType::Regular => 'f',
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        FileType::CharDevice => 'c',
        FileType::BlockDevice => 'b',
        FileType::Fifo => 'p',
        FileType::Socket => 's',
        FileType::Unknown => '?',
    }
}

/// The tree as the guest shows it.
fn guest_tree(fs: &mut Ext4) -> Tree {
    let mut out = Tree::new();
    let mut todo = vec![(Vec::new(), ROOT)];
    while let Some((path, ino)) = todo.pop() {
        let attr = fs.getattr(ino).unwrap();
        let target = if attr.kind == FileType::Symlink { fs.readlink(ino).unwrap() } else { Vec::new() };
        let mut xattrs = BTreeMap::new();
        for name in fs.listxattr(ino).unwrap() {
            let value = fs.getxattr(ino, &name).unwrap();
            xattrs.insert(name, value);
        }
        out.insert(
            path.clone(),
            Node {
                kind: kind_char(attr.kind),
                perm: u32::from(attr.perm),
                nlink: u64::from(attr.nlink),
                uid: attr.uid,
                gid: attr.gid,
                rdev: attr.rdev,
                target,
                size: if attr.kind == FileType::Regular { attr.size } else { 0 },
                xattrs,
            },
        );
        if attr.kind == FileType::Directory {
            for e in list_dir(fs, ino, 1000).unwrap() {
                assert_ne!(e.kind, FileType::Unknown);
                let mut p = path.clone();
                p.push(b'/');
                p.extend_from_slice(&e.name);
                todo.push((p, e.ino));
            }
        }
    }
    out
}

/// The tree as the kernel's ext4 shows it (image mounted read-only).
fn kernel_tree(image: &Path) -> Tree {
    let mount = KernelMount::read_only(image).expect("kernel mount");
    let root = mount.path().to_path_buf();
    let mut out = Tree::new();
    let mut todo = vec![(Vec::new(), root.clone())];
    while let Some((path, full)) = todo.pop() {
        let m = std::fs::symlink_metadata(&full).unwrap();
        let t = m.file_type();
        let kind = if t.is_dir() {
            'd'
        } else if t.is_symlink() {
            'l'
        } else if t.is_char_device() {
            'c'
        } else if t.is_block_device() {
            'b'
        } else if t.is_fifo() {
            'p'
        } else if t.is_socket() {
            's'
        } else {
            'f'
        };
        let target =
            if kind == 'l' { std::fs::read_link(&full).unwrap().as_os_str().as_bytes().to_vec() } else { Vec::new() };
        out.insert(
            path.clone(),
            Node {
                kind,
                perm: m.mode() & 0o7777,
                nlink: m.nlink(),
                uid: m.uid(),
                gid: m.gid(),
                rdev: m.rdev(),
                target,
                size: if kind == 'f' { m.size() } else { 0 },
                xattrs: source_xattrs(&full),
            },
        );
        if kind == 'd' {
            for e in std::fs::read_dir(&full).unwrap() {
                let e = e.unwrap();
                let mut p = path.clone();
                p.push(b'/');
                p.extend_from_slice(e.file_name().as_bytes());
                todo.push((p, e.path()));
            }
        }
    }
    out
}

/// Differences between two trees, one line each.
fn diff(guest: &Tree, kernel: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (p, g) in guest {
        match kernel.get(p) {
            None => out.push(format!("{}: only the guest shows it", p.escape_ascii())),
            Some(k) if k != g => out.push(format!("{}: guest {g:?}\n   kernel {k:?}", p.escape_ascii())),
            _ => {}
        }
    }
    for p in kernel.keys().filter(|p| !guest.contains_key(*p)) {
        out.push(format!("{}: only the kernel shows it", p.escape_ascii()));
    }
    out
}

/// An image of `size` made by mkfs.ext4 from `src` with `args`.
fn image(scratch: &Scratch, src: &Path, args: &[&str], size: &str) -> std::path::PathBuf {
    let img = scratch.join("rw.img");
    mkfs(src, &img, args, size);
    img
}

fn open_rw(image: &Path) -> Ext4 {
    let device = testing::open_image_rw(image).unwrap();
    let mut fs = Ext4::mount(device, &MountOptions { read_only: false, options: Vec::new() }).unwrap();
    fs.begin_write().unwrap();
    fs
}

/// Unmount, then hold the image to both oracles: e2fsck clean, and the
/// kernel showing the tree the guest showed.
fn finish_and_check(mut fs: Ext4, image: &Path) -> Tree {
    let seen = guest_tree(&mut fs);
    fs.unmount().unwrap();
    drop(fs);
    if let Err(e) = e2fsck(image) {
        panic!("{e}");
    }
    let kernel = kernel_tree(image);
    let d = diff(&seen, &kernel);
    assert!(d.is_empty(), "the kernel shows another tree than the guest did:\n{}", d.join("\n"));
    eprintln!("e2fsck -fn clean; the kernel shows the guest's {} paths", kernel.len());
    kernel
}

fn code<T: std::fmt::Debug>(r: fshost_sdk::Result<T>) -> ErrorCode {
    r.unwrap_err().code()
}

fn t(seconds: i64) -> Timestamp {
    Timestamp { seconds, nanoseconds: 123_456_789 }
}

fn new(kind: FileType, perm: u16) -> NewInode {
    NewInode { kind, perm, uid: 1000, gid: 100, rdev: 0, time: t(1_700_000_000) }
}

fn lookup(fs: &mut Ext4, parent: Ino, name: &str) -> Ino {
    fs.lookup(parent, name.as_bytes()).unwrap_or_else(|e| panic!("lookup {name}: {e}")).ino
}

fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend(tag.to_le_bytes());
        v.extend(perm.to_le_bytes());
        v.extend(id.to_le_bytes());
    }
    v
}

/// Every namespace call, with the errors the format gives, on one image.
fn namespace_workload(args: &[&str]) {
    let scratch = Scratch::new("ns");
    let src = scratch.join("src");
    std::fs::create_dir(&src).unwrap();
    let img = image(&scratch, &src, args, "64M");
    let mut fs = open_rw(&img);
    let now = t(1_700_000_100);

    let d = fs.create(ROOT, b"d", &new(FileType::Directory, 0o755)).unwrap();
    assert_eq!((d.kind, d.nlink, d.perm), (FileType::Directory, 2, 0o755));
    assert_eq!(fs.getattr(ROOT).unwrap().nlink, 4, "root: ., .., lost+found, d");
    let f = fs.create(d.ino, b"f", &new(FileType::Regular, 0o640)).unwrap();
    fs.create(d.ino, b"p", &new(FileType::Fifo, 0o600)).unwrap();
    fs.create(d.ino, b"s", &new(FileType::Socket, 0o600)).unwrap();
    for (name, kind, major, minor) in [
        ("c", FileType::CharDevice, 1, 3),
        ("b", FileType::BlockDevice, 8, 1),
        ("bigdev", FileType::CharDevice, 300, 70000),
    ] {
        let n = NewInode { rdev: encode_rdev(major, minor), ..new(kind, 0o660) };
        let a = fs.create(d.ino, name.as_bytes(), &n).unwrap();
        assert_eq!(a.rdev, encode_rdev(major, minor));
    }
    let long_target = vec![b'x'; 200];
    fs.symlink(ROOT, b"short", b"d/f", &new(FileType::Symlink, 0o777)).unwrap();
    let long = fs.symlink(ROOT, b"long", &long_target, &new(FileType::Symlink, 0o777)).unwrap();
    assert_eq!(fs.readlink(long.ino).unwrap(), long_target);
    let edge = fs.symlink(ROOT, b"edge59", &[b'e'; 59], &new(FileType::Symlink, 0o777)).unwrap();
    assert_eq!(fs.readlink(edge.ino).unwrap(), vec![b'e'; 59]);
    fs.symlink(ROOT, b"edge60", &[b'e'; 60], &new(FileType::Symlink, 0o777)).unwrap();

    // Names the format refuses, and names taken.
    assert_eq!(code(fs.create(ROOT, &[b'n'; 256], &new(FileType::Regular, 0o644))), ErrorCode::NameTooLong);
    fs.create(ROOT, &[b'n'; 255], &new(FileType::Regular, 0o644)).unwrap();
    assert_eq!(code(fs.create(ROOT, b"d", &new(FileType::Regular, 0o644))), ErrorCode::Exists);
    assert_eq!(code(fs.create(ROOT, b"..", &new(FileType::Directory, 0o755))), ErrorCode::Invalid);
    assert_eq!(code(fs.unlink(ROOT, b".", now)), ErrorCode::Invalid);
    assert_eq!(code(fs.create(f.ino, b"x", &new(FileType::Regular, 0o644))), ErrorCode::NotDir);

    // Hard links.
    let hard = fs.link(f.ino, ROOT, b"hard", now).unwrap();
    assert_eq!(hard.nlink, 2);
    assert_eq!(code(fs.link(d.ino, ROOT, b"dirlink", now)), ErrorCode::NotPermitted);
    assert_eq!(code(fs.link(f.ino, ROOT, b"hard", now)), ErrorCode::Exists);

    // Renames: across directories, a directory moved (its ".."), over a
    // file, over an empty directory, no-replace, exchange.
    let e = fs.create(ROOT, b"e", &new(FileType::Directory, 0o700)).unwrap();
    fs.create(e.ino, b"x", &new(FileType::Regular, 0o600)).unwrap();
    assert_eq!(fs.rename(d.ino, b"f", e.ino, b"g", RenameFlags::default(), now).unwrap(), None);
    assert_eq!(fs.rename(ROOT, b"e", d.ino, b"e2", RenameFlags::default(), now).unwrap(), None);
    assert_eq!(fs.lookup(e.ino, b"..").unwrap().ino, d.ino);
    assert_eq!(fs.getattr(d.ino).unwrap().nlink, 3);
    assert_eq!(fs.getattr(ROOT).unwrap().nlink, 4);
    let victim = fs.create(ROOT, b"victim", &new(FileType::Regular, 0o644)).unwrap();
    let gone = fs.rename(ROOT, b"short", ROOT, b"victim", RenameFlags::default(), now).unwrap().unwrap();
    assert_eq!((gone.ino, gone.nlink), (victim.ino, 0));
    fs.evict(gone.ino).unwrap();
    // A second evict of a freed inode, and one of a linked inode, change nothing.
    fs.evict(gone.ino).unwrap();
    fs.evict(d.ino).unwrap();
    let no_replace = RenameFlags { no_replace: true, ..Default::default() };
    assert_eq!(code(fs.rename(ROOT, b"hard", ROOT, b"victim", no_replace, now)), ErrorCode::Exists);
    fs.create(ROOT, b"empty1", &new(FileType::Directory, 0o755)).unwrap();
    let empty2 = fs.create(ROOT, b"empty2", &new(FileType::Directory, 0o755)).unwrap();
    let gone = fs.rename(ROOT, b"empty1", ROOT, b"empty2", RenameFlags::default(), now).unwrap().unwrap();
    assert_eq!((gone.ino, gone.nlink), (empty2.ino, 0));
    fs.evict(gone.ino).unwrap();
    assert_eq!(code(fs.rename(ROOT, b"empty2", d.ino, b"e2", RenameFlags::default(), now)), ErrorCode::NotEmpty);
    assert_eq!(code(fs.rename(ROOT, b"hard", ROOT, b"empty2", RenameFlags::default(), now)), ErrorCode::IsDir);
    assert_eq!(code(fs.rename(ROOT, b"empty2", ROOT, b"hard", RenameFlags::default(), now)), ErrorCode::NotDir);
    // Two names of one inode: nothing happens.
    assert_eq!(fs.rename(ROOT, b"hard", e.ino, b"g", RenameFlags::default(), now).unwrap(), None);
    let exchange = RenameFlags { exchange: true, ..Default::default() };
    fs.create(ROOT, b"x1", &new(FileType::Regular, 0o644)).unwrap();
    assert_eq!(fs.rename(ROOT, b"x1", d.ino, b"e2", exchange, now).unwrap(), None);
    assert_eq!(fs.lookup(ROOT, b"x1").unwrap().ino, e.ino);
    assert_eq!(fs.lookup(e.ino, b"..").unwrap().ino, ROOT);
    assert_eq!(fs.getattr(d.ino).unwrap().nlink, 2);
    assert_eq!(code(fs.rename(ROOT, b"x1", ROOT, b"nothing", exchange, now)), ErrorCode::NotFound);

    // Unlink, rmdir, and an orphan left for the unmount.
    assert_eq!(code(fs.unlink(ROOT, b"d", now)), ErrorCode::IsDir);
    assert_eq!(code(fs.rmdir(ROOT, b"hard", now)), ErrorCode::NotDir);
    assert_eq!(code(fs.rmdir(ROOT, b"x1", now)), ErrorCode::NotEmpty);
    let u = fs.unlink(ROOT, b"hard", now).unwrap();
    assert_eq!((u.ino, u.nlink), (f.ino, 1));
    let o = fs.create(ROOT, b"orphan", &new(FileType::Regular, 0o644)).unwrap();
    assert_eq!(fs.unlink(ROOT, b"orphan", now).unwrap().nlink, 0);
    assert_eq!(fs.getattr(o.ino).unwrap().nlink, 0, "an orphan stays readable until evict");
    let gone = fs.rmdir(ROOT, b"empty2", now).unwrap();
    fs.evict(gone).unwrap();
    assert_eq!(code(fs.unlink(ROOT, b"empty2", now)), ErrorCode::NotFound);

    // Xattrs: in the inode, in a block, ACLs, flags.
    let x = lookup(&mut fs, e.ino, "x");
    fs.setxattr(x, b"user.a", b"hello", XattrFlags::default(), now).unwrap();
    fs.setxattr(x, b"trusted.t", b"", XattrFlags::default(), now).unwrap();
    fs.setxattr(x, b"security.s", b"label\0", XattrFlags::default(), now).unwrap();
    fs.setxattr(x, b"user.big", &[b'v'; 700], XattrFlags::default(), now).unwrap();
    fs.setxattr(x, b"user.big2", &[b'w'; 200], XattrFlags::default(), now).unwrap();
    assert_eq!(fs.getxattr(x, b"user.big").unwrap(), vec![b'v'; 700]);
    let create = XattrFlags { create: true, ..Default::default() };
    let replace = XattrFlags { replace: true, ..Default::default() };
    assert_eq!(code(fs.setxattr(x, b"user.a", b"again", create, now)), ErrorCode::Exists);
    assert_eq!(code(fs.setxattr(x, b"user.none", b"v", replace, now)), ErrorCode::NoData);
    fs.setxattr(x, b"user.a", b"replaced", replace, now).unwrap();
    fs.removexattr(x, b"trusted.t", now).unwrap();
    assert_eq!(code(fs.removexattr(x, b"trusted.t", now)), ErrorCode::NoData);
    let access = acl(&[(1, 7, u32::MAX), (2, 6, 1234), (4, 5, u32::MAX), (0x10, 7, u32::MAX), (0x20, 4, u32::MAX)]);
    fs.setxattr(d.ino, b"system.posix_acl_access", &access, XattrFlags::default(), now).unwrap();
    fs.setxattr(d.ino, b"system.posix_acl_default", &access, XattrFlags::default(), now).unwrap();
    assert_eq!(fs.getxattr(d.ino, b"system.posix_acl_access").unwrap(), access);
    // An empty ACL removes the default ACL; set again where there is none, it is no error.
    fs.setxattr(d.ino, b"system.posix_acl_default", &acl(&[]), XattrFlags::default(), now).unwrap();
    fs.setxattr(d.ino, b"system.posix_acl_default", &acl(&[]), XattrFlags::default(), now).unwrap();
    assert_eq!(code(fs.getxattr(d.ino, b"system.posix_acl_default")), ErrorCode::NoData);
    fs.setxattr(d.ino, b"system.posix_acl_default", &access, XattrFlags::default(), now).unwrap();
    // A block shared by nothing else is rewritten; one emptied is freed.
    let y = fs.create(ROOT, b"y", &new(FileType::Regular, 0o644)).unwrap();
    fs.setxattr(y.ino, b"user.block", &[b'b'; 900], XattrFlags::default(), now).unwrap();
    fs.removexattr(y.ino, b"user.block", now).unwrap();

    finish_and_check(fs, &img);
}

#[test]
fn namespace_calls_on_4k_blocks() {
    namespace_workload(&["-b", "4096"]);
}

#[test]
fn namespace_calls_on_1k_blocks() {
    namespace_workload(&["-b", "1024"]);
}

#[test]
fn namespace_calls_without_metadata_csum() {
    namespace_workload(&["-b", "4096", "-O", "^metadata_csum"]);
}

#[test]
fn namespace_calls_on_ext2() {
    namespace_workload(&["-t", "ext2"]);
}

#[test]
fn namespace_calls_on_ext3_without_filetype() {
    namespace_workload(&["-t", "ext3", "-O", "^filetype"]);
}

/// The `File ACL:` block debugfs shows for `path`.
fn xattr_block(image: &Path, path: &str) -> u64 {
    let stat = debugfs(image, &format!("stat {path}"));
    stat.split("File ACL:").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// An xattr block the kernel shares between two inodes (128-byte inodes:
/// every attribute lives in a block): changing one inode's attributes
/// copies the block, emptying the other's frees it, and e2fsck agrees with
/// the refcounts left.
#[test]
fn shared_xattr_blocks_are_copied_on_write() {
    let scratch = Scratch::new("xshare");
    let src = scratch.join("src");
    std::fs::create_dir(&src).unwrap();
    let img = image(&scratch, &src, &["-I", "128", "-b", "4096"], "64M");
    {
        let mount = KernelMount::read_write(&img, "").unwrap();
        for name in ["f1", "f2", "f3"] {
            let p = mount.path().join(name);
            std::fs::write(&p, b"").unwrap();
            let out = std::process::Command::new("setfattr")
                .args(["-n", "user.shared", "-v", &"s".repeat(100)])
                .arg(&p)
                .output()
                .unwrap();
            assert!(out.status.success(), "setfattr: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let shared = xattr_block(&img, "/f1");
    assert!(
        shared != 0 && xattr_block(&img, "/f2") == shared && xattr_block(&img, "/f3") == shared,
        "the kernel shares one block"
    );
    let mut fs = open_rw(&img);
    let now = t(1_700_000_400);
    let (f1, f2) = (lookup(&mut fs, ROOT, "f1"), lookup(&mut fs, ROOT, "f2"));
    fs.setxattr(f1, b"user.own", b"mine", XattrFlags::default(), now).unwrap();
    fs.removexattr(f2, b"user.shared", now).unwrap();
    let f3 = lookup(&mut fs, ROOT, "f3");
    assert_eq!(fs.getxattr(f3, b"user.shared").unwrap(), "s".repeat(100).into_bytes());
    finish_and_check(fs, &img);
    assert_ne!(xattr_block(&img, "/f1"), shared, "f1 got a copy");
    assert_eq!(xattr_block(&img, "/f2"), 0, "f2 has no block left");
    assert_eq!(xattr_block(&img, "/f3"), shared, "f3 keeps the original");
}

/// A directory moved over an empty one in another directory, and a
/// directory exchanged with a file across directories: link counts and
/// ".." as the kernel keeps them.
#[test]
fn directories_moved_across_parents() {
    let scratch = Scratch::new("mv");
    let src = scratch.join("src");
    std::fs::create_dir(&src).unwrap();
    let img = image(&scratch, &src, &["-b", "4096"], "64M");
    let mut fs = open_rw(&img);
    let now = t(1_700_000_500);
    let a = fs.create(ROOT, b"a", &new(FileType::Directory, 0o755)).unwrap();
    let b = fs.create(ROOT, b"b", &new(FileType::Directory, 0o755)).unwrap();
    let moving = fs.create(a.ino, b"moving", &new(FileType::Directory, 0o755)).unwrap();
    fs.create(moving.ino, b"inside", &new(FileType::Regular, 0o644)).unwrap();
    fs.create(b.ino, b"target", &new(FileType::Directory, 0o755)).unwrap();
    let gone = fs.rename(a.ino, b"moving", b.ino, b"target", RenameFlags::default(), now).unwrap().unwrap();
    assert_eq!(gone.nlink, 0);
    fs.evict(gone.ino).unwrap();
    assert_eq!(fs.lookup(moving.ino, b"..").unwrap().ino, b.ino);
    assert_eq!((fs.getattr(a.ino).unwrap().nlink, fs.getattr(b.ino).unwrap().nlink), (2, 3));
    fs.create(a.ino, b"file", &new(FileType::Regular, 0o644)).unwrap();
    let exchange = RenameFlags { exchange: true, ..Default::default() };
    fs.rename(a.ino, b"file", b.ino, b"target", exchange, now).unwrap();
    assert_eq!(fs.lookup(moving.ino, b"..").unwrap().ino, a.ino);
    assert_eq!((fs.getattr(a.ino).unwrap().nlink, fs.getattr(b.ino).unwrap().nlink), (3, 2));
    finish_and_check(fs, &img);
}

/// EXT4_LINK_MAX: a file takes 65,000 links and refuses the next
/// (EMLINK); a directory passing 65,000 subdirectories counts 1, as
/// dir_nlink has the kernel do, and e2fsck agrees.
#[test]
fn link_limits() {
    let scratch = Scratch::new("emlink");
    let src = scratch.join("src");
    std::fs::create_dir(&src).unwrap();
    let img = image(&scratch, &src, &["-b", "1024", "-N", "70000"], "256M");
    let mut fs = open_rw(&img);
    let now = t(1_700_000_600);
    let links = fs.create(ROOT, b"links", &new(FileType::Directory, 0o755)).unwrap();
    let f = fs.create(links.ino, b"f", &new(FileType::Regular, 0o644)).unwrap();
    for i in 1..65_000 {
        fs.link(f.ino, links.ino, format!("l{i}").as_bytes(), now).unwrap_or_else(|e| panic!("link #{i}: {e}"));
    }
    assert_eq!(fs.getattr(f.ino).unwrap().nlink, 65_000);
    assert_eq!(code(fs.link(f.ino, links.ino, b"one-more", now)), ErrorCode::TooManyLinks);
    let subdirs = fs.create(ROOT, b"subdirs", &new(FileType::Directory, 0o755)).unwrap();
    for i in 0..65_000 {
        fs.create(subdirs.ino, format!("d{i}").as_bytes(), &new(FileType::Directory, 0o755))
            .unwrap_or_else(|e| panic!("mkdir #{i}: {e}"));
    }
    assert_eq!(fs.getattr(subdirs.ino).unwrap().nlink, 1, "past EXT4_LINK_MAX a directory counts 1");
    fs.create(subdirs.ino, b"more", &new(FileType::Directory, 0o755)).unwrap();
    let gone = fs.rmdir(subdirs.ino, b"more", now).unwrap();
    fs.evict(gone).unwrap();
    assert_eq!(fs.getattr(subdirs.ino).unwrap().nlink, 1);
    let seen = guest_tree_summary(&mut fs, &[links.ino, subdirs.ino]);
    fs.unmount().unwrap();
    drop(fs);
    if let Err(e) = e2fsck(&img) {
        panic!("{e}");
    }
    let mount = KernelMount::read_only(&img).unwrap();
    let kernel_links = std::fs::symlink_metadata(mount.path().join("links/f")).unwrap().nlink();
    let kernel_subdirs = std::fs::symlink_metadata(mount.path().join("subdirs")).unwrap().nlink();
    let listed = std::fs::read_dir(mount.path().join("subdirs")).unwrap().count();
    eprintln!("guest (links, subdir count, entries) {seen:?}, kernel ({kernel_links}, {kernel_subdirs}, {listed})");
    assert_eq!((kernel_links, kernel_subdirs, listed), seen);
}

/// The link count of `links/f`, the count of `subdirs` and its entries.
fn guest_tree_summary(fs: &mut Ext4, dirs: &[Ino]) -> (u64, u64, usize) {
    let f = lookup(fs, dirs[0], "f");
    let nlink = u64::from(fs.getattr(f).unwrap().nlink);
    let subdirs = u64::from(fs.getattr(dirs[1]).unwrap().nlink);
    (nlink, subdirs, list_dir(fs, dirs[1], 4096).unwrap().len())
}

/// Running out of inodes, then of blocks: each failing call is a clean
/// `NoSpace`, undone (no inode or block leaked, as e2fsck confirms), and
/// what was made before stays.
#[test]
fn running_out_of_inodes_and_blocks() {
    let scratch = Scratch::new("enospc");
    let src = scratch.join("src");
    std::fs::create_dir(&src).unwrap();
    let img = image(&scratch, &src, &["-b", "1024", "-N", "64", "-m", "0", "-O", "^has_journal"], "1M");
    let mut fs = open_rw(&img);
    let mut made = 0;
    let err = loop {
        match fs.create(ROOT, format!("f{made}").as_bytes(), &new(FileType::Regular, 0o644)) {
            Ok(_) => made += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), ErrorCode::NoSpace, "{err}");
    assert!(made > 10, "{made} files before the inodes ran out");
    // Free a few inodes, then use up the blocks with directories (each
    // takes one) and with names (directory blocks).
    for i in 0..20 {
        let u = fs.unlink(ROOT, format!("f{i}").as_bytes(), t(1_700_000_700)).unwrap();
        fs.evict(u.ino).unwrap();
    }
    let x = lookup(&mut fs, ROOT, "f30");
    let mut attrs = 0;
    let err = loop {
        let value = vec![b'x'; 600];
        match fs.setxattr(x, format!("user.{attrs}").as_bytes(), &value, XattrFlags::default(), t(1)) {
            Ok(()) => attrs += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), ErrorCode::NoSpace, "xattrs: {err}");
    // Hard links take no inode: long names fill directory blocks until
    // no block is left.
    let mut links = 0;
    let err = loop {
        let name = format!("{links:04}-{}", "l".repeat(200));
        match fs.link(x, ROOT, name.as_bytes(), t(2)) {
            Ok(_) => links += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), ErrorCode::NoSpace, "links: {err}");
    // A directory needs an inode (there are some) and a block (there is none).
    let err = fs.create(ROOT, b"no-room", &new(FileType::Directory, 0o755)).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NoSpace, "mkdir: {err}");
    let dirs = links;
    eprintln!("{made} files, {attrs} xattrs, {dirs} links before NoSpace");
    finish_and_check(fs, &img);
}

/// New inodes take the parent's inheritable flags (noatime and nodump
/// here), as the kernel's `ext4_new_inode` gives them; lsattr through the
/// kernel shows them.
#[test]
fn new_inodes_inherit_flags() {
    let scratch = Scratch::new("flags");
    let src = scratch.join("src");
    std::fs::create_dir_all(src.join("attrs")).unwrap();
    let img = image(&scratch, &src, &["-b", "4096"], "64M");
    // EXTENTS | NOATIME | NODUMP.
    debugfs_w(&img, "set_inode_field /attrs flags 0x800c0");
    let mut fs = open_rw(&img);
    let attrs = lookup(&mut fs, ROOT, "attrs");
    for (name, kind) in [("file", FileType::Regular), ("dir", FileType::Directory), ("fifo", FileType::Fifo)] {
        let a = fs.create(attrs, name.as_bytes(), &new(kind, 0o755)).unwrap();
        assert!(a.flags.no_atime && a.flags.no_dump, "{name}: {:?}", a.flags);
    }
    finish_and_check(fs, &img);
    let mount = KernelMount::read_only(&img).unwrap();
    for name in ["file", "dir"] {
        let out =
            std::process::Command::new("lsattr").arg("-d").arg(mount.path().join("attrs").join(name)).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let flags = text.split_whitespace().next().unwrap_or_default();
        assert!(flags.contains('A') && flags.contains('d'), "lsattr {name}: {text}");
    }
}

/// Append-only directories take names but give none up; immutable ones
/// do neither (EPERM, the kernel's may_create and may_delete).
#[test]
fn append_only_and_immutable_directories() {
    let scratch = Scratch::new("apimm");
    let src = scratch.join("src");
    std::fs::create_dir_all(src.join("ap")).unwrap();
    std::fs::create_dir_all(src.join("imm")).unwrap();
    std::fs::write(src.join("ap/old"), b"").unwrap();
    let img = image(&scratch, &src, &["-b", "4096"], "64M");
    debugfs_w(&img, "set_inode_field /ap flags 0x80020");
    debugfs_w(&img, "set_inode_field /imm flags 0x80010");
    let mut fs = open_rw(&img);
    let now = t(1_700_000_800);
    let (ap, imm) = (lookup(&mut fs, ROOT, "ap"), lookup(&mut fs, ROOT, "imm"));
    fs.create(ap, b"new", &new(FileType::Regular, 0o644)).unwrap();
    assert_eq!(code(fs.unlink(ap, b"old", now)), ErrorCode::NotPermitted);
    assert_eq!(code(fs.rename(ap, b"old", ROOT, b"out", RenameFlags::default(), now)), ErrorCode::NotPermitted);
    fs.create(ROOT, b"in", &new(FileType::Regular, 0o644)).unwrap();
    fs.rename(ROOT, b"in", ap, b"in", RenameFlags::default(), now).unwrap();
    assert_eq!(code(fs.rename(ap, b"in", ap, b"new", RenameFlags::default(), now)), ErrorCode::NotPermitted);
    assert_eq!(code(fs.create(imm, b"x", &new(FileType::Regular, 0o644))), ErrorCode::NotPermitted);
    finish_and_check(fs, &img);
}

/// A directory grown to `n` entries by create, thinned by unlink: the
/// htree grows (leaf splits, on 1 KiB blocks a second index level) and
/// e2fsck's htree checks pass; the kernel lists exactly the names left.
fn grow_and_thin(args: &[&str], n: usize, min_levels: u32) {
    grow_and_thin_tuned(args, None, n, min_levels);
}

/// As [`grow_and_thin`], with a `debugfs -w` request applied after mkfs.
fn grow_and_thin_tuned(args: &[&str], tune: Option<&str>, n: usize, min_levels: u32) {
    let scratch = Scratch::new("big");
    let src = scratch.join("src");
    std::fs::create_dir(&src).unwrap();
    let img = image(&scratch, &src, args, "256M");
    if let Some(request) = tune {
        debugfs_w(&img, request);
    }
    let mut fs = open_rw(&img);
    let now = t(1_700_000_200);
    let big = fs.create(ROOT, b"big", &new(FileType::Directory, 0o755)).unwrap();
    // Every fifth name has bytes past 0x7f, where signed and unsigned
    // hashing differ.
    let name = |i: usize| {
        let mut n = format!("entry-{i:06}-{}", "z".repeat(i % 40)).into_bytes();
        if i.is_multiple_of(5) {
            n.extend_from_slice(&[0xc3, 0xa9, 0xff, 0x80]);
        }
        n
    };
    for i in 0..n {
        let kind = if i % 100 == 7 { FileType::Directory } else { FileType::Regular };
        fs.create(big.ino, &name(i), &new(kind, 0o644)).unwrap_or_else(|e| panic!("create #{i}: {e}"));
    }
    let mut left = BTreeSet::new();
    for i in 0..n {
        let keep = i % 3 == 0 || (i > n / 2 && i < n / 2 + 500);
        if keep {
            left.insert(name(i));
            continue;
        }
        if i % 100 == 7 {
            let ino = fs.rmdir(big.ino, &name(i), now).unwrap();
            fs.evict(ino).unwrap();
        } else {
            let u = fs.unlink(big.ino, &name(i), now).unwrap();
            fs.evict(u.ino).unwrap();
        }
    }
    // Names that were there and are gone, and names that stay, look up right.
    for i in (0..n).step_by(97) {
        assert_eq!(fs.lookup(big.ino, &name(i)).is_ok(), left.contains(&name(i)), "lookup #{i}");
    }
    let kernel = finish_and_check(fs, &img);
    // debugfs reads the index the guest grew: deep enough to have
    // exercised what this test is for.
    let dump = debugfs(&img, "htree_dump /big");
    let levels: u32 = dump
        .lines()
        .find_map(|l| l.trim().strip_prefix("Indirect levels:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("debugfs htree_dump shows no index:\n{}", &dump[..dump.len().min(2000)]));
    assert!(levels >= min_levels, "the index has {levels} indirect levels, the test wants {min_levels}");
    let listed: BTreeSet<Vec<u8>> = kernel
        .keys()
        .filter_map(|p| p.strip_prefix(&b"/big/"[..]))
        .filter(|p| !p.contains(&b'/'))
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(listed, left);
}

#[test]
fn a_directory_of_20k_entries_on_4k_blocks() {
    grow_and_thin(&["-b", "4096"], 20_000, 0);
}

#[test]
fn a_directory_of_20k_entries_without_metadata_csum() {
    grow_and_thin(&["-b", "1024", "-O", "^metadata_csum"], 20_000, 1);
}

/// largedir: 250-byte names in 1 KiB blocks need a third index level,
/// which e2fsck checks and the kernel reads.
#[test]
fn a_largedir_directory_grows_a_third_level() {
    let scratch = Scratch::new("largedir");
    let src = scratch.join("src");
    std::fs::create_dir(&src).unwrap();
    let img = image(&scratch, &src, &["-b", "1024", "-O", "large_dir", "-N", "50000"], "512M");
    let mut fs = open_rw(&img);
    let big = fs.create(ROOT, b"big", &new(FileType::Directory, 0o755)).unwrap();
    let n = 40_000;
    for i in 0..n {
        let name = format!("{i:06}-{}", "L".repeat(243));
        fs.create(big.ino, name.as_bytes(), &new(FileType::Regular, 0o644)).unwrap_or_else(|e| panic!("#{i}: {e}"));
    }
    let kernel = finish_and_check(fs, &img);
    assert_eq!(kernel.keys().filter(|p| p.starts_with(b"/big/")).count(), n);
    let dump = debugfs(&img, "htree_dump /big");
    let levels = dump.lines().find_map(|l| l.trim().strip_prefix("Indirect levels:")).map(str::trim);
    assert_eq!(levels, Some("2"), "debugfs htree_dump");
}

/// The unsigned-hash flag (names hashed as unsigned bytes, as mkfs does on
/// platforms whose char is unsigned).
#[test]
fn a_directory_of_20k_entries_with_unsigned_hashes() {
    grow_and_thin_tuned(&["-b", "1024"], Some("ssv flags 2"), 20_000, 1);
}

#[test]
fn a_directory_of_20k_entries_on_1k_blocks() {
    grow_and_thin(&["-b", "1024"], 20_000, 1);
}

/// Directories made by others: an htree the kernel built, and a linear
/// multi-block directory mkfs -d wrote; names added, removed and renamed
/// between them.
#[test]
fn directories_the_kernel_and_mkfs_made() {
    let scratch = Scratch::new("made");
    let src = scratch.join("src");
    std::fs::create_dir_all(src.join("linear")).unwrap();
    for i in 0..3000 {
        std::fs::write(src.join("linear").join(format!("mkfs-{i:05}")), b"").unwrap();
    }
    let img = image(&scratch, &src, &["-b", "1024"], "128M");
    {
        let mount = KernelMount::read_write(&img, "").unwrap();
        std::fs::create_dir(mount.path().join("hashed")).unwrap();
        for i in 0..5000 {
            std::fs::write(mount.path().join("hashed").join(format!("kernel-{i:05}")), b"").unwrap();
        }
    }
    e2fsck(&img).unwrap();
    let mut fs = open_rw(&img);
    let now = t(1_700_000_300);
    let hashed = lookup(&mut fs, ROOT, "hashed");
    let linear = lookup(&mut fs, ROOT, "linear");
    for i in 0..3000 {
        fs.create(hashed, format!("guest-{i:05}").as_bytes(), &new(FileType::Regular, 0o644)).unwrap();
        fs.create(linear, format!("guest-{i:05}").as_bytes(), &new(FileType::Regular, 0o644)).unwrap();
    }
    for i in (0..5000).step_by(2) {
        let u = fs.unlink(hashed, format!("kernel-{i:05}").as_bytes(), now).unwrap();
        fs.evict(u.ino).unwrap();
    }
    for i in (0..3000).step_by(3) {
        let name = format!("mkfs-{i:05}");
        fs.rename(linear, name.as_bytes(), hashed, format!("moved-{name}").as_bytes(), RenameFlags::default(), now)
            .unwrap();
    }
    let kernel = finish_and_check(fs, &img);
    assert_eq!(kernel.keys().filter(|p| p.starts_with(b"/hashed/")).count(), 2500 + 3000 + 1000);
    assert_eq!(kernel.keys().filter(|p| p.starts_with(b"/linear/")).count(), 2000 + 3000);
}

/// A seeded random walk of namespace calls over a small tree, checked
/// against a model of the names as it goes (each call's success or error
/// is the one the model predicts), then by e2fsck and the kernel.
#[test]
fn random_namespace_calls_match_a_model() {
    let layouts: [&[&str]; 5] = [
        &["-b", "1024"],
        &["-b", "4096"],
        &["-t", "ext2"],
        &["-b", "4096", "-O", "^metadata_csum,^dir_nlink"],
        &["-b", "1024", "-O", "^dir_index"],
    ];
    for (seed, args) in (1u64..).zip(layouts) {
        random_walk(seed, args, 6000);
    }
}

/// Name `k` of the walk's pool: lengths up to 100 bytes, so directories
/// of 1 KiB blocks outgrow a block (and become indexed, or grow linearly).
fn pool_name(k: usize) -> Vec<u8> {
    format!("n{k}-{}", "x".repeat(k * 37 % 100)).into_bytes()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The model: each directory's entries (name -> inode, is a directory),
/// each directory's parent, each non-directory's link count.
#[derive(Default)]
struct Model {
    dirs: BTreeMap<Ino, BTreeMap<Vec<u8>, (Ino, bool)>>,
    parent: BTreeMap<Ino, Ino>,
    links: BTreeMap<Ino, u32>,
}

impl Model {
    /// Whether `dir` is `ancestor` or beneath it.
    fn beneath(&self, mut dir: Ino, ancestor: Ino) -> bool {
        loop {
            if dir == ancestor {
                return true;
            }
            match self.parent.get(&dir) {
                Some(&p) if p != dir => dir = p,
                _ => return false,
            }
        }
    }
}

fn random_walk(seed: u64, args: &[&str], steps: usize) {
    let scratch = Scratch::new("walk");
    let src = scratch.join("src");
    std::fs::create_dir(&src).unwrap();
    let img = image(&scratch, &src, args, "128M");
    let mut fs = open_rw(&img);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut m = Model::default();
    m.dirs.insert(ROOT, BTreeMap::new());
    m.parent.insert(ROOT, ROOT);
    let lf = lookup(&mut fs, ROOT, "lost+found");
    m.dirs.get_mut(&ROOT).unwrap().insert(b"lost+found".to_vec(), (lf, true));
    m.dirs.insert(lf, BTreeMap::new());
    m.parent.insert(lf, ROOT);
    let now = t(1_700_001_000);
    for step in 0..steps {
        let dirs: Vec<Ino> = m.dirs.keys().copied().collect();
        let dir = dirs[rng.below(dirs.len())];
        // Names from a small pool, so calls collide with existing names.
        let name = pool_name(rng.below(80));
        let existing = m.dirs[&dir].get(&name).copied();
        let ctx = format!("step {step} in {dir} on {}", String::from_utf8_lossy(&name));
        match rng.below(10) {
            0..=2 => {
                let is_dir = rng.below(3) == 0;
                let kind = if is_dir { FileType::Directory } else { FileType::Regular };
                let r = fs.create(dir, &name, &new(kind, 0o755));
                match existing {
                    Some(_) => assert_eq!(code(r), ErrorCode::Exists, "{ctx}"),
                    None => {
                        let ino = r.unwrap_or_else(|e| panic!("{ctx}: {e}")).ino;
                        m.dirs.get_mut(&dir).unwrap().insert(name, (ino, is_dir));
                        if !is_dir {
                            m.links.insert(ino, 1);
                        }
                        if is_dir {
                            m.dirs.insert(ino, BTreeMap::new());
                            m.parent.insert(ino, dir);
                        }
                    }
                }
            }
            3 => {
                let target = vec![b't'; 1 + rng.below(120)];
                let r = fs.symlink(dir, &name, &target, &new(FileType::Symlink, 0o777));
                match existing {
                    Some(_) => assert_eq!(code(r), ErrorCode::Exists, "{ctx}"),
                    None => {
                        let ino = r.unwrap_or_else(|e| panic!("{ctx}: {e}")).ino;
                        m.dirs.get_mut(&dir).unwrap().insert(name, (ino, false));
                        m.links.insert(ino, 1);
                    }
                }
            }
            4 => {
                // Link some file of some directory here.
                let from = dirs[rng.below(dirs.len())];
                let files: Vec<Ino> = m.dirs[&from].values().filter(|e| !e.1).map(|e| e.0).collect();
                let Some(&ino) = files.get(rng.below(files.len())) else { continue };
                let r = fs.link(ino, dir, &name, now);
                match existing {
                    Some(_) => assert_eq!(code(r), ErrorCode::Exists, "{ctx}"),
                    None => {
                        r.unwrap_or_else(|e| panic!("{ctx}: {e}"));
                        m.dirs.get_mut(&dir).unwrap().insert(name, (ino, false));
                        *m.links.get_mut(&ino).unwrap() += 1;
                    }
                }
            }
            5 | 6 => {
                let Some((ino, is_dir)) = existing else {
                    assert_eq!(code(fs.unlink(dir, &name, now)), ErrorCode::NotFound, "{ctx}");
                    continue;
                };
                if ino == lf {
                    continue;
                }
                if is_dir {
                    let empty = m.dirs[&ino].is_empty();
                    let r = fs.rmdir(dir, &name, now);
                    if !empty {
                        assert_eq!(code(r), ErrorCode::NotEmpty, "{ctx}");
                        continue;
                    }
                    let gone = r.unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    assert_eq!(gone, ino);
                    m.dirs.get_mut(&dir).unwrap().remove(&name);
                    m.dirs.remove(&ino);
                    m.parent.remove(&ino);
                    m.links.remove(&ino);
                    fs.evict(ino).unwrap();
                } else {
                    let u = fs.unlink(dir, &name, now).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    let left = m.links.get_mut(&ino).unwrap();
                    *left -= 1;
                    assert_eq!(u.nlink, *left, "{ctx}");
                    m.dirs.get_mut(&dir).unwrap().remove(&name);
                    if *left == 0 {
                        m.links.remove(&ino);
                        // Some orphans wait for the unmount.
                        if rng.below(4) != 0 {
                            fs.evict(ino).unwrap();
                        }
                    }
                }
            }
            7 | 8 => {
                let Some((ino, is_dir)) = existing else { continue };
                if ino == lf {
                    continue;
                }
                let to = dirs[rng.below(dirs.len())];
                let to_name = pool_name(rng.below(80));
                if to == dir && to_name == name {
                    continue;
                }
                let ctx = format!("{ctx} -> {to} {}", String::from_utf8_lossy(&to_name));
                if is_dir && m.beneath(to, ino) {
                    continue; // the host refuses this one
                }
                let dst = m.dirs[&to].get(&to_name).copied();
                if let Some((d, d_is_dir)) = dst
                    && rng.below(3) == 0
                {
                    // RENAME_EXCHANGE, unless it would move a directory beneath itself.
                    if d == lf || d == ino || (d_is_dir && m.beneath(dir, d)) {
                        continue;
                    }
                    let exchange = RenameFlags { exchange: true, ..Default::default() };
                    fs.rename(dir, &name, to, &to_name, exchange, now)
                        .unwrap_or_else(|e| panic!("{ctx} (exchange): {e}"));
                    m.dirs.get_mut(&dir).unwrap().insert(name, (d, d_is_dir));
                    m.dirs.get_mut(&to).unwrap().insert(to_name, (ino, is_dir));
                    if is_dir {
                        m.parent.insert(ino, to);
                    }
                    if d_is_dir {
                        m.parent.insert(d, dir);
                    }
                    continue;
                }
                if dst.is_some() && rng.below(4) == 0 {
                    let no_replace = RenameFlags { no_replace: true, ..Default::default() };
                    assert_eq!(code(fs.rename(dir, &name, to, &to_name, no_replace, now)), ErrorCode::Exists, "{ctx}");
                    continue;
                }
                let r = fs.rename(dir, &name, to, &to_name, RenameFlags::default(), now);
                let replaced = match dst {
                    Some((d, _)) if d == ino => {
                        assert_eq!(r.unwrap_or_else(|e| panic!("{ctx}: {e}")), None, "{ctx}");
                        continue;
                    }
                    Some((d, _)) if d == lf => {
                        if r.is_ok() {
                            panic!("{ctx}: replaced lost+found");
                        }
                        continue;
                    }
                    Some((_, true)) if !is_dir => {
                        assert_eq!(code(r), ErrorCode::IsDir, "{ctx}");
                        continue;
                    }
                    Some((_, false)) if is_dir => {
                        assert_eq!(code(r), ErrorCode::NotDir, "{ctx}");
                        continue;
                    }
                    Some((d, true)) if !m.dirs[&d].is_empty() => {
                        assert_eq!(code(r), ErrorCode::NotEmpty, "{ctx}");
                        continue;
                    }
                    other => {
                        let got = r.unwrap_or_else(|e| panic!("{ctx}: {e}"));
                        assert_eq!(got.map(|u| u.ino), other.map(|o| o.0), "{ctx}");
                        other
                    }
                };
                m.dirs.get_mut(&dir).unwrap().remove(&name);
                m.dirs.get_mut(&to).unwrap().insert(to_name, (ino, is_dir));
                if is_dir {
                    m.parent.insert(ino, to);
                }
                if let Some((d, d_is_dir)) = replaced {
                    if d_is_dir {
                        m.dirs.remove(&d);
                        m.parent.remove(&d);
                        m.links.remove(&d);
                        fs.evict(d).unwrap();
                    } else {
                        let left = m.links.get_mut(&d).unwrap();
                        *left -= 1;
                        if *left == 0 {
                            m.links.remove(&d);
                            fs.evict(d).unwrap();
                        }
                    }
                }
            }
            _ => {
                let Some((ino, _)) = existing else { continue };
                // user.* only on files and directories (the VFS's rule).
                if !matches!(fs.getattr(ino).unwrap().kind, FileType::Regular | FileType::Directory) {
                    continue;
                }
                let value = vec![b'v'; rng.below(300)];
                let key = format!("user.k{}", rng.below(4));
                fs.setxattr(ino, key.as_bytes(), &value, XattrFlags::default(), now)
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
            }
        }
    }
    // The guest's names are the model's.
    for (dir, entries) in &m.dirs {
        let listed: BTreeMap<Vec<u8>, Ino> =
            list_dir(&mut fs, *dir, 512).unwrap().into_iter().map(|e| (e.name, e.ino)).collect();
        let want: BTreeMap<Vec<u8>, Ino> = entries.iter().map(|(n, e)| (n.clone(), e.0)).collect();
        assert_eq!(listed, want, "directory {dir}");
    }
    for (ino, links) in &m.links {
        assert_eq!(fs.getattr(*ino).unwrap().nlink, *links, "inode {ino}");
    }
    for (dir, entries) in &m.dirs {
        let subdirs = entries.values().filter(|e| e.1).count() as u32;
        assert_eq!(fs.getattr(*dir).unwrap().nlink, 2 + subdirs, "directory {dir}");
    }
    finish_and_check(fs, &img);
}
