//! File mappings against debugfs's own extent dump (deep trees, unwritten
//! extents), inode flags, and checksum verification: every corrupted object
//! is reported as `BadChecksum` (the kernel's EFSBADCRC), naming it,
//! and `nocsum` turns checks off.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;
use fshost_sdk::{ErrorCode, Filesystem, IomapFlags, MappingKind};

/// Leaf extents from `debugfs ex`: (logical, length, physical, unwritten).
fn debugfs_extents(image: &Path, path: &str) -> Vec<(u64, u64, u64, bool)> {
    let text = debugfs(image, &format!("ex {path}"));
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        // "%2d/%2d %3d/%3d ...": glue each "N/" to the number after it.
        let mut t: Vec<String> = Vec::new();
        for word in line.split_whitespace() {
            match t.last_mut() {
                Some(last) if last.ends_with('/') => last.push_str(word),
                _ => t.push(word.to_string()),
            }
        }
        let (level, max) = t[0].split_once('/').unwrap();
        if level != max {
            continue;
        }
        // level/max entries/total lstart - lend pstart - pend length [Uninit]
        let lstart: u64 = t[2].parse().unwrap();
        let pstart: u64 = t[5].parse().unwrap();
        let len: u64 = t[8].parse().unwrap();
        out.push((lstart, len, pstart, t.get(9).is_some_and(|f| f == "Uninit")));
    }
    out
}

/// (byte offset, block) of `path`'s inode in the image, from `debugfs imap`.
fn inode_location(image: &Path, path: &str) -> u64 {
    let text = debugfs(image, &format!("imap {path}"));
    let block: u64 = text.split("located at block ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    let offset = u64::from_str_radix(text.split("offset 0x").nth(1).unwrap().trim(), 16).unwrap();
    block * block_size(image) + offset
}

fn block_size(image: &Path) -> u64 {
    let dump = run(std::process::Command::new("dumpe2fs").arg("-h").arg(image));
    dump.lines().find_map(|l| l.strip_prefix("Block size:")).unwrap().trim().parse().unwrap()
}

fn flip_byte(image: &Path, offset: u64) {
    let f = fs::OpenOptions::new().read(true).write(true).open(image).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, offset).unwrap();
}

/// A file with every other 1 KiB block written: 1000 extents, a tree of
/// depth 2 in 1 KiB blocks. One block in between is made an unwritten
/// extent with debugfs.
fn fragmented(s: &Scratch) -> std::path::PathBuf {
    let src = s.join("src");
    fs::create_dir_all(&src).unwrap();
    let f = fs::File::create(src.join("frag")).unwrap();
    for i in (0..2000u64).step_by(2) {
        f.write_all_at(&format!("{i:06}").repeat(100).into_bytes(), i * 1024).unwrap();
    }
    fs::write(src.join("hello"), b"hello").unwrap();
    fs::create_dir(src.join("dir")).unwrap();
    fs::write(src.join("dir/inside"), b"x").unwrap();
    let img = s.join("img");
    mkfs(&src, &img, &["-b", "1024"], "32M");
    debugfs_w(&img, "fallocate /frag 1 1");
    img
}

#[test]
fn deep_extent_trees_map_like_debugfs() {
    let s = Scratch::new("deep");
    let img = fragmented(&s);
    assert!(debugfs(&img, "ex /frag").contains(" 2/ 2 "), "expected a tree of depth 2");
    let mut fs = mount(&img, &[]).unwrap();
    let attr = resolve(&mut fs, b"frag").unwrap();
    let (bytes, maps) = read_file(&mut fs, &img, attr.ino, attr.size).unwrap();
    assert!(bytes == fs::read(s.join("src/frag")).unwrap());
    let mut ours: Vec<(u64, u64, u64, bool)> = maps
        .iter()
        .filter_map(|m| match m.kind {
            MappingKind::Mapped(dev) => Some((m.offset / 1024, m.length / 1024, dev / 1024, false)),
            MappingKind::Unwritten(dev) => Some((m.offset / 1024, m.length / 1024, dev / 1024, true)),
            _ => None,
        })
        .collect();
    ours.dedup();
    let theirs = debugfs_extents(&img, "/frag");
    let diff: Vec<_> =
        ours.iter().filter(|e| !theirs.contains(e)).chain(theirs.iter().filter(|e| !ours.contains(e))).collect();
    assert_eq!(ours, theirs, "differences: {diff:?}");
    assert!(ours.iter().any(|e| e.3), "the fallocated block is unwritten");
    // Asking in the middle starts with the extent or hole holding the offset.
    for offset in [1024 * 1001 + 5, 1024 * 1500, 1024 * 1998 + 1023] {
        // Covers the 4 KiB asked for (or up to the end of the file).
        let maps =
            check_mappings(&fs.iomap_begin(attr.ino, offset, 4096, IomapFlags::default()).unwrap(), offset, 1024);
        let end = maps.last().map(|m| m.offset + m.length).unwrap();
        assert!(end >= (offset + 4096).min(attr.size), "{maps:?}");
    }
}

#[test]
fn inode_flags_encryption_and_verity() {
    let s = Scratch::new("flags");
    let img = fragmented(&s);
    // immutable|append|nodump|noatime|sync, with extents.
    debugfs_w(&img, "set_inode_field /hello flags 0x800f8");
    let mut fs = mount(&img, &[]).unwrap();
    let f = resolve(&mut fs, b"hello").unwrap().flags;
    assert!(f.immutable && f.append && f.no_dump && f.no_atime && f.sync && !f.encrypted && !f.verity);
    drop(fs);

    debugfs_w(&img, "set_inode_field /hello flags 0x80800");
    debugfs_w(&img, "set_inode_field /frag flags 0x180000");
    debugfs_w(&img, "set_inode_field /dir flags 0x80800");
    let mut fs = mount(&img, &[]).unwrap();
    let hello = resolve(&mut fs, b"hello").unwrap();
    assert!(hello.flags.encrypted);
    let err = fs.iomap_begin(hello.ino, 0, 5, IomapFlags::default()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NoKey, "{err}");
    // Encrypted directories list no-key names (tests/tests/ext4_damaged.rs
    // compares them with the kernel's). This one's names were never
    // encrypted: "inside" is shorter than any ciphertext, so it is not
    // shown (the kernel fails the listing, EUCLEAN) and no lookup finds it.
    let dir = resolve(&mut fs, b"dir").unwrap();
    assert!(dir.flags.encrypted);
    assert_eq!(fs.readdir(dir.ino, 0, 10).unwrap(), vec![]);
    assert_eq!(fs.lookup(dir.ino, b"inside").unwrap_err().code(), ErrorCode::NotFound);
    // Verity files map their data normally.
    let frag = resolve(&mut fs, b"frag").unwrap();
    assert!(frag.flags.verity);
    let (bytes, _) = read_file(&mut fs, &img, frag.ino, frag.size).unwrap();
    assert!(bytes == fs::read(s.join("src/frag")).unwrap());
    let write = IomapFlags { write: true, ..Default::default() };
    assert_eq!(fs.iomap_begin(frag.ino, 0, 5, write).unwrap_err().code(), ErrorCode::ReadOnly);
}

#[test]
fn corrupted_inode_is_reported_and_nocsum_reads_it() {
    let s = Scratch::new("csum-inode");
    let img = fragmented(&s);
    flip_byte(&img, inode_location(&img, "/hello") + 0x64); // i_generation
    let mut fs = mount(&img, &[]).unwrap();
    let root = fs.info().unwrap().root;
    let err = fs.lookup(root, b"hello").unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadChecksum);
    assert!(err.message().contains("inode") && err.message().contains("checksum"), "{err}");
    let mut fs = mount(&img, &[("nocsum", "")]).unwrap();
    assert_eq!(fs.lookup(root, b"hello").unwrap().size, 5);
}

#[test]
fn corrupted_directory_block_superblock_and_extent_block() {
    let s = Scratch::new("csum-more");
    let img = fragmented(&s);
    let dir_block: u64 = debugfs(&img, "bmap /dir 0").trim().parse().unwrap();
    flip_byte(&img, dir_block * 1024 + 14); // inside the ".." record
    let mut fs = mount(&img, &[]).unwrap();
    let dir = resolve(&mut fs, b"dir").unwrap();
    // As the kernel's readdir, the block whose checksum fails is skipped
    // (logged), not the directory: this one has a single block.
    assert_eq!(fs.readdir(dir.ino, 0, 10).unwrap(), vec![]);
    assert_eq!(fs.lookup(dir.ino, b"inside").unwrap_err().code(), ErrorCode::NotFound);

    // The first index block of the extent tree (level 1 of 2).
    let ex = debugfs(&img, "ex /frag");
    let node: u64 = ex.lines().nth(2).unwrap().split_whitespace().nth(7).unwrap().parse().unwrap();
    flip_byte(&img, node * 1024 + 20);
    let frag = resolve(&mut fs, b"frag").unwrap();
    let err = fs.iomap_begin(frag.ino, 0, 1024, IomapFlags::default()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadChecksum);
    assert!(err.message().contains(&format!("extent block {node}")), "{err}");

    flip_byte(&img, 1024 + 0x34); // s_mnt_count
    let err = mount(&img, &[]).err().unwrap();
    assert_eq!(err.code(), ErrorCode::Corrupted);
    assert!(err.message().contains("superblock"), "{err}");
    let mut fs = mount(&img, &[("nocsum", "")]).unwrap();
    let frag = resolve(&mut fs, b"frag").unwrap();
    assert!(read_file(&mut fs, &img, frag.ino, frag.size).is_ok());
}

#[test]
fn corrupted_xattr_block_and_group_descriptor() {
    let s = Scratch::new("csum-xattr");
    let src = s.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("x"), b"x").unwrap();
    run(std::process::Command::new("setfattr").args(["-n", "user.v", "-v", &"v".repeat(500)]).arg(src.join("x")));
    let img = s.join("img");
    mkfs(&src, &img, &["-b", "4096", "-I", "128"], "32M");
    let acl_block: u64 = debugfs_stat(&img, 12)["raw"]
        .split("File ACL: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(acl_block > 0);
    flip_byte(&img, acl_block * 4096 + 40);
    let mut fs = mount(&img, &[]).unwrap();
    let x = resolve(&mut fs, b"x").unwrap();
    let err = fs.listxattr(x.ino).unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadChecksum);
    assert!(err.message().contains(&format!("xattr block {acl_block}")), "{err}");

    // Group 0's descriptor (in block 1 of a 4 KiB filesystem), its free
    // blocks count: the checksum fails, which the kernel reports at mount
    // and tolerates read-only, and so does the guest; the root's inode (in
    // group 0) is read through it.
    flip_byte(&img, 4096 + 0xC);
    let mut fs = mount(&img, &[]).unwrap();
    assert_eq!(resolve(&mut fs, b"x").unwrap().ino, x.ino);
    assert!(mount(&img, &[("nocsum", "")]).is_ok());
}
