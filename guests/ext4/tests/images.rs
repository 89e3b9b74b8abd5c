//! The guest against real images: mkfs.ext4 copies a tree built here into an
//! image (one per feature combination), and everything the guest answers is
//! compared with the tree itself and with debugfs, which nobody here wrote.

mod common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use common::*;
use fshost_sdk::{ErrorCode, FileType, Filesystem, IomapFlags, MappingKind};
use fshost_tests::pattern::pattern;

fn write_at(path: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().create(true).write(true).truncate(false).open(path).unwrap();
    f.write_all_at(data, offset).unwrap();
}

/// The tree every image starts from: all file types, odd names, owners,
/// modes, times, xattrs and ACLs.
fn build_tree(root: &Path) {
    let sh = |args: &[&str]| {
        run(Command::new(args[0]).args(&args[1..]));
    };
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("hello.txt"), b"hello, world\n").unwrap();
    fs::write(root.join("a/b/c/deep.bin"), pattern(5000, 1)).unwrap();
    fs::write(root.join("a/one-meg"), pattern(1 << 20, 2)).unwrap();
    // Sparse: data at 0, 3 MiB and 4 MiB. (It ends in data: mke2fs 1.47.0
    // -d loses a trailing hole when inline_data is on.)
    write_at(&root.join("sparse"), 0, &pattern(100, 3));
    write_at(&root.join("sparse"), 3 << 20, &pattern(5000, 4));
    write_at(&root.join("sparse"), 4 << 20, &pattern(100, 6));
    fs::hard_link(root.join("hello.txt"), root.join("a/hardlink")).unwrap();
    symlink("hello.txt", root.join("fast-link")).unwrap();
    symlink("x".repeat(200), root.join("slow-link")).unwrap();
    symlink("a/b/c/deep.bin", root.join("a/b/rel-link")).unwrap();
    symlink("m".repeat(100), root.join("medium-link")).unwrap();
    // A fast symlink that also has an xattr block (i_blocks counts it).
    symlink("hello.txt", root.join("fast-link-xattr")).unwrap();
    let big_link_value = format!("0x{}", pattern(900, 8).iter().map(|b| format!("{b:02x}")).collect::<String>());
    sh(&["setfattr", "-h", "-n", "trusted.big", "-v", &big_link_value, root.join("fast-link-xattr").to_str().unwrap()]);
    sh(&["mknod", root.join("null").to_str().unwrap(), "c", "1", "3"]);
    sh(&["mknod", root.join("sda1").to_str().unwrap(), "b", "8", "1"]);
    sh(&["mknod", root.join("bigdev").to_str().unwrap(), "c", "300", "70000"]);
    sh(&["mkfifo", root.join("fifo").to_str().unwrap()]);
    drop(std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap());
    fs::write(root.join("old"), b"before 1970").unwrap();
    sh(&["touch", "-h", "-d", "1960-03-04 05:06:07 UTC", root.join("old").to_str().unwrap()]);
    fs::write(root.join("future"), b"after 2038").unwrap();
    fs::write(root.join("owned"), b"big ids").unwrap();
    sh(&["chown", "3000000000:3000000001", root.join("owned").to_str().unwrap()]);
    fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir(root.join("sticky")).unwrap();
    fs::set_permissions(root.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    let odd = root.join(std::ffi::OsStr::from_bytes(b"caf\xe9-\xff\xfe-not-utf8"));
    fs::write(&odd, b"latin-1 name").unwrap();
    fs::write(root.join("xattrs"), b"with attributes").unwrap();
    sh(&["setfattr", "-n", "user.small", "-v", "hi", root.join("xattrs").to_str().unwrap()]);
    let big = format!("0x{}", pattern(900, 5).iter().map(|b| format!("{b:02x}")).collect::<String>());
    sh(&["setfattr", "-n", "user.big", "-v", &big, root.join("xattrs").to_str().unwrap()]);
    sh(&["setfattr", "-n", "trusted.t", "-v", "trusted value", root.join("xattrs").to_str().unwrap()]);
    fs::write(root.join("acl"), b"with an ACL").unwrap();
    sh(&["setfacl", "-m", "u:1234:rw,g:55:r", root.join("acl").to_str().unwrap()]);
    sh(&["setfacl", "-d", "-m", "u:77:rwx", root.join("sticky").to_str().unwrap()]);
}

struct Fixture {
    scratch: Scratch,
}

impl Fixture {
    fn new(tag: &str) -> Self {
        let scratch = Scratch::new(tag);
        build_tree(&scratch.join("src"));
        Fixture { scratch }
    }
    fn src(&self) -> std::path::PathBuf {
        self.scratch.join("src")
    }
    fn image(&self) -> std::path::PathBuf {
        self.scratch.join("image")
    }
    /// mkfs with `args`, then mount and compare the whole tree.
    fn check(&self, args: &[&str], size: &str) -> (ext4::Ext4, Walked) {
        mkfs(&self.src(), &self.image(), args, size);
        let mut fs = mount(&self.image(), &[]).unwrap_or_else(|e| panic!("mount {args:?}: {e}"));
        let walked = compare_tree(&mut fs, &self.image(), &self.src());
        assert!(walked.files >= 13 && walked.xattrs >= 5, "{walked:?}");
        (fs, walked)
    }
}

/// Compare the guest's view of inode `ino` with `debugfs stat`.
fn compare_with_debugfs(fs: &mut ext4::Ext4, image: &Path, path: &[u8]) {
    let attr = resolve(fs, path).unwrap();
    let stat = debugfs_stat(image, attr.ino);
    assert_eq!(stat["Generation"].parse::<u32>().unwrap(), attr.generation, "{stat:?}");
    assert_eq!(stat["Blockcount"].parse::<u64>().unwrap(), attr.blocks, "{stat:?}");
    assert_eq!(stat["Links"].parse::<u32>().unwrap(), attr.nlink);
    if let Some(crtime) = stat.get("crtime") {
        let (secs, _) = crtime.trim_start_matches("0x").split_once(':').unwrap();
        let secs = u32::from_str_radix(secs, 16).unwrap();
        assert_eq!(attr.crtime.unwrap().seconds, i64::from(secs as i32), "{stat:?}");
    } else {
        assert_eq!(attr.crtime, None);
    }
}

#[test]
fn ext4_default_features() {
    let fx = Fixture::new("default");
    let (mut fs, walked) = fx.check(&["-b", "4096", "-I", "256"], "64M");
    let info = fs.info().unwrap();
    assert_eq!(info.fs_type, "ext4");
    assert_eq!(info.block_size, 4096);
    for path in [&b"hello.txt"[..], b"a/one-meg", b"xattrs", b"sticky"] {
        compare_with_debugfs(&mut fs, &fx.image(), path);
    }
    // The sparse file's gap is one hole reaching the next extent.
    let (_, maps) = walked.mappings.iter().find(|(p, _)| p == Path::new("sparse")).unwrap();
    assert!(
        maps.iter().any(|m| m.kind == MappingKind::Hole && m.offset == 4096 && m.offset + m.length == 3 << 20),
        "{maps:?}"
    );
    // Errors for the wrong kind of inode.
    let root = info.root;
    let dir = resolve(&mut fs, b"a").unwrap();
    assert_eq!(fs.iomap_begin(dir.ino, 0, 1, IomapFlags::default()).unwrap_err().code(), ErrorCode::IsDir);
    let file = resolve(&mut fs, b"hello.txt").unwrap();
    assert_eq!(fs.readdir(file.ino, 0, 10).unwrap_err().code(), ErrorCode::NotDir);
    assert_eq!(fs.lookup(root, b"nope").unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(fs.lookup(root, b"a/b").unwrap_err().code(), ErrorCode::Invalid);
    assert_eq!(fs.getxattr(file.ino, b"user.none").unwrap_err().code(), ErrorCode::NoData);
    assert_eq!(fs.lookup(dir.ino, b"..").unwrap().ino, root);
    assert_eq!(fs.lookup(dir.ino, b".").unwrap().ino, dir.ino);
    let label = fs.info().unwrap().label;
    assert!(label.is_empty());
    assert_eq!(info.uuid.len(), 16);
}

#[test]
fn ext4_label_uuid_and_statfs_match_dumpe2fs() {
    let fx = Fixture::new("label");
    mkfs(&fx.src(), &fx.image(), &["-L", "my-label", "-U", "01234567-89ab-cdef-0123-456789abcdef"], "32M");
    let mut fs = mount(&fx.image(), &[]).unwrap();
    let info = fs.info().unwrap();
    assert_eq!(info.label, b"my-label");
    assert_eq!(
        info.uuid,
        [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]
    );
    let dump = run(Command::new("dumpe2fs").arg("-h").arg(fx.image()));
    let field = |name: &str| -> u64 {
        dump.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim_start_matches(':').trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("{name} not in dumpe2fs output"))
    };
    // statfs follows the kernel: metadata overhead is not counted in the
    // total, and a reserve is kept back from "available" (the exact numbers
    // are checked against the kernel by tests/ext4_kernel_diff.rs).
    assert!(info.total_blocks < field("Block count") && info.total_blocks > field("Block count") / 2);
    assert_eq!(info.free_blocks, field("Free blocks"));
    assert!(info.available_blocks <= field("Free blocks") - field("Reserved block count"));
    assert_eq!(info.total_inodes, field("Inode count"));
    assert_eq!(info.free_inodes, field("Free inodes"));
}

#[test]
fn ext2_indirect_blocks() {
    let fx = Fixture::new("ext2");
    let (mut fs, _) = fx.check(&["-t", "ext2"], "64M");
    assert_eq!(fs.info().unwrap().fs_type, "ext2");
    compare_with_debugfs(&mut fs, &fx.image(), b"a/one-meg");
}

#[test]
fn ext3_journal_and_indirect_blocks() {
    let fx = Fixture::new("ext3");
    let (mut fs, _) = fx.check(&["-t", "ext3"], "64M");
    assert_eq!(fs.info().unwrap().fs_type, "ext3");
    compare_with_debugfs(&mut fs, &fx.image(), b"sparse");
}

#[test]
fn ext4_without_extents_1k_blocks_triple_indirect() {
    let fx = Fixture::new("noextent");
    // With 1 KiB blocks, block 12 + 256 + 65536 is the first one reached
    // through the triple-indirect block: put data there.
    let far = (12 + 256 + 65536 + 100) * 1024u64;
    write_at(&fx.src().join("triple"), far, &pattern(3000, 9));
    write_at(&fx.src().join("triple"), 300 * 1024, &pattern(1000, 10));
    let (mut fs, walked) = fx.check(&["-O", "^extent,^64bit", "-b", "1024"], "64M");
    compare_with_debugfs(&mut fs, &fx.image(), b"triple");
    // One-meg is contiguous on a fresh image: far fewer mappings than blocks.
    let (_, maps) = walked.mappings.iter().find(|(p, _)| p == Path::new("a/one-meg")).unwrap();
    assert!(maps.len() < 20, "{} mappings for a contiguous file", maps.len());
}

#[test]
fn ext4_inline_data_files_and_dirs() {
    let fx = Fixture::new("inline");
    fs::create_dir(fx.src().join("small-dir")).unwrap();
    for i in 0..3 {
        fs::write(fx.src().join(format!("small-dir/f{i}")), format!("tiny {i}")).unwrap();
    }
    fs::write(fx.src().join("ninety"), pattern(90, 11)).unwrap();
    let (mut fs, walked) = fx.check(&["-O", "inline_data", "-I", "256"], "64M");
    let inline = |p: &str| {
        walked
            .mappings
            .iter()
            .find(|(q, _)| q == Path::new(p))
            .is_some_and(|(_, m)| matches!(m.as_slice(), [m] if matches!(m.kind, MappingKind::Inline(_))))
    };
    assert!(inline("hello.txt") && inline("ninety"), "small files must be inline");
    let dir = resolve(&mut fs, b"small-dir").unwrap();
    let stat = debugfs_stat(&fx.image(), dir.ino);
    assert!(u32::from_str_radix(stat["Flags"].trim_start_matches("0x"), 16).unwrap() & 0x1000_0000 != 0);
    assert_eq!(list_dir(&mut fs, dir.ino, 1).unwrap().len(), 3);
    // system.data holds inline bytes and is hidden from listxattr.
    let ninety = resolve(&mut fs, b"ninety").unwrap();
    assert!(!fs.listxattr(ninety.ino).unwrap().contains(&b"system.data".to_vec()));
}

#[test]
fn ext4_bigalloc() {
    let fx = Fixture::new("bigalloc");
    fx.check(&["-O", "bigalloc", "-C", "16384"], "128M");
}

#[test]
fn ext4_1k_blocks_128_byte_inodes() {
    let fx = Fixture::new("small");
    let (mut fs, _) = fx.check(&["-b", "1024", "-I", "128"], "64M");
    let old = resolve(&mut fs, b"old").unwrap();
    assert_eq!(old.crtime, None, "128-byte inodes have no crtime");
    assert!(old.mtime.seconds < 0, "before 1970: {:?}", old.mtime);
    compare_with_debugfs(&mut fs, &fx.image(), b"xattrs");
}

#[test]
fn ext4_gdt_csum_without_metadata_csum() {
    let fx = Fixture::new("gdtcsum");
    fx.check(&["-O", "^metadata_csum,uninit_bg"], "64M");
}

#[test]
fn ext4_32bit_descriptors() {
    let fx = Fixture::new("no64");
    fx.check(&["-O", "^64bit"], "64M");
}

#[test]
fn ext4_meta_bg() {
    let fx = Fixture::new("metabg");
    fx.check(&["-O", "meta_bg,^resize_inode", "-b", "1024"], "64M");
}

#[test]
fn backup_superblock_mount_option() {
    let fx = Fixture::new("backup");
    let (_fs, _) = fx.check(&["-b", "4096"], "256M");
    // Group 1 holds the first backup: block 32768, i.e. 131072 KiB.
    let mut fs = mount(&fx.image(), &[("sb", "131072")]).unwrap();
    compare_tree(&mut fs, &fx.image(), &fx.src());
    assert!(mount(&fx.image(), &[("sb", "4")]).is_err(), "no superblock at 4 KiB");
}

#[test]
fn timestamps_past_2038_and_nanoseconds() {
    let fx = Fixture::new("times");
    let (fs, _) = fx.check(&["-b", "4096", "-I", "256"], "64M");
    drop(fs);
    // mke2fs 1.47.0 -d stores only 32 bits of seconds; debugfs sets the
    // epoch bits (its own encoder) and says what date it stored.
    debugfs_w(&fx.image(), "set_inode_field /future mtime 21000607080910");
    let stat = debugfs(&fx.image(), "stat /future");
    assert!(stat.contains("Mon Jun  7 08:09:10 2100"), "{stat}");
    debugfs_w(&fx.image(), &format!("set_inode_field /hello.txt mtime_extra {}", 123_456_789u32 << 2));
    let mut fs = mount(&fx.image(), &[]).unwrap();
    let future = resolve(&mut fs, b"future").unwrap();
    let want = run(Command::new("date").args(["-u", "-d", "2100-06-07 08:09:10", "+%s"]));
    assert_eq!(future.mtime.seconds, want.trim().parse::<i64>().unwrap());
    let hello = resolve(&mut fs, b"hello.txt").unwrap();
    assert_eq!(hello.mtime.nanoseconds, 123_456_789);
}

#[test]
fn devices_fifos_sockets_and_links() {
    let fx = Fixture::new("special");
    let (mut fs, _) = fx.check(&["-b", "4096", "-I", "256"], "64M");
    let null = resolve(&mut fs, b"null").unwrap();
    assert_eq!((null.kind, null.rdev), (FileType::CharDevice, fshost_sdk::encode_rdev(1, 3)));
    let big = resolve(&mut fs, b"bigdev").unwrap();
    assert_eq!(big.rdev, fshost_sdk::encode_rdev(300, 70000));
    assert_eq!(resolve(&mut fs, b"socket").unwrap().kind, FileType::Socket);
    assert_eq!(resolve(&mut fs, b"fifo").unwrap().kind, FileType::Fifo);
    let a = resolve(&mut fs, b"hello.txt").unwrap();
    let b = resolve(&mut fs, b"a/hardlink").unwrap();
    assert_eq!((a.ino, a.nlink), (b.ino, 2));
    let owned = resolve(&mut fs, b"owned").unwrap();
    assert_eq!((owned.uid, owned.gid), (3_000_000_000, 3_000_000_001));
}

#[test]
fn ext4_ea_inode_values() {
    let fx = Fixture::new("eainode");
    let value = format!("0x{}", pattern(3000, 12).iter().map(|b| format!("{b:02x}")).collect::<String>());
    let path = fx.src().join("ea-inode");
    fs::write(&path, b"value in an inode").unwrap();
    run(Command::new("setfattr").args(["-n", "user.huge", "-v", &value]).arg(&path));
    let (mut fs, _) = fx.check(&["-O", "ea_inode"], "64M");
    let attr = resolve(&mut fs, b"ea-inode").unwrap();
    // 3000 bytes fit neither in the inode nor (with the other attributes'
    // room) anywhere but an EA inode: no xattr block is used.
    assert!(debugfs_stat(&fx.image(), attr.ino)["raw"].contains("File ACL: 0"));
}

#[test]
fn ext2_without_filetype_gets_types_from_inodes() {
    let fx = Fixture::new("nofiletype");
    fx.check(&["-t", "ext2", "-O", "^filetype"], "64M");
}

#[test]
fn ext4_64k_blocks() {
    let fx = Fixture::new("64k");
    fx.check(&["-b", "65536"], "128M");
}

#[test]
fn unknown_incompat_features_refuse_the_mount() {
    let fx = Fixture::new("incompat");
    mkfs(&fx.src(), &fx.image(), &["-b", "4096"], "32M");
    // Add dirdata (0x1000) to whatever is set.
    let sb = fs::read(fx.image()).unwrap();
    let incompat = u32::from_le_bytes(sb[1024 + 0x60..1024 + 0x64].try_into().unwrap());
    debugfs_w(&fx.image(), &format!("ssv feature_incompat {:#x}", incompat | 0x1000));
    let err = mount(&fx.image(), &[]).err().expect("must refuse");
    assert_eq!(err.code(), ErrorCode::Unsupported);
    assert!(err.message().contains("dirdata"), "{err}");
}

#[test]
fn symlink_kinds_are_stored_as_expected() {
    // The tree check reads every link; this makes sure each storage kind
    // was really exercised, by asking debugfs how each inode stores it.
    let fx = Fixture::new("links");
    let (mut fs, _) = fx.check(&["-O", "inline_data", "-b", "4096", "-I", "256"], "64M");
    let flags = |fs: &mut ext4::Ext4, p: &[u8]| {
        let ino = resolve(fs, p).unwrap().ino;
        let stat = debugfs_stat(&fx.image(), ino);
        (u32::from_str_radix(stat["Flags"].trim_start_matches("0x"), 16).unwrap(), stat)
    };
    let (fast, _) = flags(&mut fs, b"fast-link");
    assert_eq!(fast & 0x1008_0000, 0, "fast link: neither extents nor inline");
    let (xattr_fast, stat) = flags(&mut fs, b"fast-link-xattr");
    assert_eq!(xattr_fast & 0x1008_0000, 0);
    assert!(!stat["raw"].contains("File ACL: 0\n"), "the fast link has an xattr block:\n{}", stat["raw"]);
    let (medium, _) = flags(&mut fs, b"medium-link");
    assert_ne!(medium & 0x1000_0000, 0, "100-byte target stored inline");
    let (slow, _) = flags(&mut fs, b"slow-link");
    assert_ne!(slow & 0x0008_0000, 0, "200-byte target in an extent-mapped block");
}

#[test]
fn cache_and_readahead_options_change_no_answer() {
    let fx = Fixture::new("cacheopts");
    // 1 KiB blocks: four inodes a block, so readahead spans many blocks.
    fx.check(&["-b", "1024", "-I", "256"], "64M");
    // The smallest caches without readahead, and a readahead past the table.
    let smallest = [("block_cache", "2"), ("inode_cache", "2"), ("inode_readahead_blks", "0")];
    for options in [&smallest[..], &[("inode_readahead_blks", "4096")][..]] {
        let mut fs = mount(&fx.image(), options).unwrap();
        compare_tree(&mut fs, &fx.image(), &fx.src());
    }
    assert!(mount(&fx.image(), &[("inode_readahead_blks", "3")]).is_err(), "not a power of two");
    assert!(mount(&fx.image(), &[("block_cache", "lots")]).is_err());
}
