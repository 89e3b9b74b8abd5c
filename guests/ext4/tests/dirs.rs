//! Directories: htree lookups of every name (indexes built by e2fsck -D,
//! with signed and unsigned hashes, with and without checksums, three levels
//! with large_dir), casefolded directories, and listing through cookies.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use fshost_sdk::{ErrorCode, Filesystem};

/// `e2fsck -fyD`: rebuild (index) every directory. Exit 1 means "changed".
fn reindex(image: &Path) {
    let out = Command::new("e2fsck").args(["-fyD"]).arg(image).output().unwrap();
    let code = out.status.code().unwrap_or(-1);
    assert!(code == 0 || code == 1, "e2fsck -fyD: {}", String::from_utf8_lossy(&out.stdout));
}

/// Names of `n` entries, some with bytes above 0x7f (where signed and
/// unsigned hashes differ) and some long.
fn names(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut name = format!("entry-{i:05}-").into_bytes();
            if i % 3 == 0 {
                name.extend_from_slice(b"\xe9\xff\x80");
            }
            name.extend(std::iter::repeat_n(b'x', i % 40));
            name
        })
        .collect()
}

/// Build `src/big` with `n` hard links to one file (names only, no inodes).
fn big_dir(src: &Path, n: usize) -> Vec<Vec<u8>> {
    fs::create_dir_all(src.join("big")).unwrap();
    fs::write(src.join("target"), b"linked").unwrap();
    let names = names(n);
    for name in &names {
        fs::hard_link(src.join("target"), src.join("big").join(OsStr::from_bytes(name))).unwrap();
    }
    names
}

/// Check that the guest lists exactly `names` in `big` and finds each one.
fn check_big(image: &Path, names: &[Vec<u8>], levels: u32) {
    let dump = debugfs(image, "htree_dump /big");
    assert!(
        dump.contains(&format!("Indirect levels: {levels}")),
        "not an htree of {levels} levels:\n{}",
        &dump[..400.min(dump.len())]
    );
    let mut fs = mount(image, &[]).unwrap();
    let dir = resolve(&mut fs, b"big").unwrap();
    let target = resolve(&mut fs, b"target").unwrap();
    let listed: BTreeSet<Vec<u8>> = list_dir(&mut fs, dir.ino, 500).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(listed, names.iter().cloned().collect::<BTreeSet<_>>());
    for name in names {
        let attr =
            fs.lookup(dir.ino, name).unwrap_or_else(|e| panic!("lookup {:?}: {e}", String::from_utf8_lossy(name)));
        assert_eq!(attr.ino, target.ino);
    }
    for missing in [&b"entry-99999-"[..], b"nope", b"entry-00001-\xe9\xff\x80"] {
        assert_eq!(fs.lookup(dir.ino, missing).unwrap_err().code(), ErrorCode::NotFound);
    }
    assert_eq!(fs.lookup(dir.ino, b"..").unwrap().ino, fs.info().unwrap().root);
}

#[test]
fn htree_lookup_of_every_name() {
    let s = Scratch::new("htree");
    let names = big_dir(&s.join("src"), 3000);
    mkfs(&s.join("src"), &s.join("img"), &["-b", "1024"], "64M");
    reindex(&s.join("img"));
    check_big(&s.join("img"), &names, 1);
}

#[test]
fn htree_without_checksums_4k_blocks() {
    let s = Scratch::new("htree4k");
    let names = big_dir(&s.join("src"), 3000);
    mkfs(&s.join("src"), &s.join("img"), &["-b", "4096", "-O", "^metadata_csum"], "64M");
    reindex(&s.join("img"));
    check_big(&s.join("img"), &names, 0);
}

#[test]
fn htree_with_unsigned_hash() {
    let s = Scratch::new("unsigned");
    let names = big_dir(&s.join("src"), 3000);
    mkfs(&s.join("src"), &s.join("img"), &["-b", "1024"], "64M");
    // Flip the superblock to "unsigned char" hashing, then let e2fsck
    // rebuild every index with it.
    debugfs_w(&s.join("img"), "ssv flags 2");
    reindex(&s.join("img"));
    assert!(run(Command::new("dumpe2fs").arg("-h").arg(s.join("img"))).contains("unsigned_directory_hash"));
    check_big(&s.join("img"), &names, 1);
}

/// Three index levels need about 47,000 long names in 1 KiB blocks, and
/// mke2fs -d links them in quadratic time (about 8 minutes): run by hand
/// with `cargo test -- --ignored`.
#[test]
#[ignore]
fn htree_three_levels_with_large_dir() {
    let s = Scratch::new("largedir");
    let src = s.join("src");
    fs::create_dir_all(src.join("big")).unwrap();
    fs::write(src.join("target"), b"linked").unwrap();
    let names: Vec<Vec<u8>> = (0..50_000).map(|i| format!("{i:06}-{}", "x".repeat(240)).into_bytes()).collect();
    for name in &names {
        fs::hard_link(src.join("target"), src.join("big").join(OsStr::from_bytes(name))).unwrap();
    }
    mkfs(&src, &s.join("img"), &["-b", "1024", "-O", "large_dir", "-N", "2000"], "128M");
    reindex(&s.join("img"));
    check_big(&s.join("img"), &names, 2);
}

#[test]
fn casefolded_directories() {
    let s = Scratch::new("casefold");
    let src = s.join("src");
    fs::create_dir_all(src.join("small")).unwrap();
    fs::create_dir_all(src.join("big")).unwrap();
    for name in ["Hello.TXT", "MiXeD", "caf\u{e9}"] {
        fs::write(src.join("small").join(name), name).unwrap();
    }
    for i in 0..2000 {
        fs::write(src.join("big").join(format!("File-{i:04}-Name")), b"").unwrap();
    }
    let img = s.join("img");
    mkfs(&src, &img, &["-b", "1024", "-O", "casefold"], "64M");
    // Mark both directories casefolded (+F), keeping the extents flag, and
    // let e2fsck index the big one with casefolded hashes.
    for dir in ["/small", "/big"] {
        debugfs_w(&img, &format!("set_inode_field {dir} flags 0x40080000"));
    }
    reindex(&img);
    assert!(debugfs(&img, "htree_dump /big").contains("Indirect levels"), "big must be indexed");

    let mut fs = mount(&img, &[]).unwrap();
    let small = resolve(&mut fs, b"small").unwrap();
    assert!(small.flags.casefold);
    let hello = fs.lookup(small.ino, b"hello.txt").unwrap();
    assert_eq!(hello.ino, fs.lookup(small.ino, b"HELLO.txt").unwrap().ino);
    assert_eq!(fs.lookup(small.ino, b"mixed").unwrap().size, 5);
    assert_eq!(fs.lookup(small.ino, "caf\u{e9}".as_bytes()).unwrap().size, 5, "exact bytes always match");
    // Folding a non-ASCII name needs Unicode tables: refused, not guessed.
    assert_eq!(fs.lookup(small.ino, "CAF\u{c9}".as_bytes()).unwrap_err().code(), ErrorCode::Unsupported);
    let listed: BTreeSet<Vec<u8>> = list_dir(&mut fs, small.ino, 2).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(listed.len(), 3);

    let big = resolve(&mut fs, b"big").unwrap();
    assert_eq!(list_dir(&mut fs, big.ino, 100).unwrap().len(), 2000);
    for i in (0..2000).step_by(7) {
        let exact = fs.lookup(big.ino, format!("File-{i:04}-Name").as_bytes()).unwrap();
        let folded = fs.lookup(big.ino, format!("FILE-{i:04}-name").as_bytes()).unwrap();
        assert_eq!(exact.ino, folded.ino);
    }
    assert_eq!(fs.lookup(big.ino, b"file-9999-name").unwrap_err().code(), ErrorCode::NotFound);
}

#[test]
fn listing_resumes_from_any_cookie() {
    let s = Scratch::new("cookies");
    let names = big_dir(&s.join("src"), 300);
    mkfs(&s.join("src"), &s.join("img"), &["-b", "1024"], "32M");
    let mut fs = mount(&s.join("img"), &[]).unwrap();
    let dir = resolve(&mut fs, b"big").unwrap();
    let all = list_dir(&mut fs, dir.ino, 1000).unwrap();
    assert_eq!(all.len(), names.len());
    // Resuming after entry i gives exactly the entries after it.
    for i in (0..all.len()).step_by(37) {
        let rest = fs.readdir(dir.ino, all[i].cookie, 1000).unwrap();
        assert_eq!(rest, all[i + 1..].to_vec());
    }
    assert!(fs.readdir(dir.ino, all.last().unwrap().cookie, 10).unwrap().is_empty());
}

#[test]
fn directory_claiming_a_huge_size_is_walked_by_its_allocated_blocks() {
    let s = Scratch::new("hugedir");
    let names = big_dir(&s.join("src"), 50);
    mkfs(&s.join("src"), &s.join("img"), &["-b", "1024", "-O", "^metadata_csum"], "32M");
    // 4 GiB of directory in 1 KiB blocks: four million holes to skip.
    debugfs_w(&s.join("img"), "set_inode_field /big size 0xfffffc00");
    let mut fs = mount(&s.join("img"), &[]).unwrap();
    let dir = resolve(&mut fs, b"big").unwrap();
    let start = std::time::Instant::now();
    assert_eq!(list_dir(&mut fs, dir.ino, 1000).unwrap().len(), names.len());
    assert_eq!(fs.lookup(dir.ino, b"absent").unwrap_err().code(), ErrorCode::NotFound);
    assert!(start.elapsed() < std::time::Duration::from_secs(5), "took {:?}", start.elapsed());
}

#[test]
fn bad_htree_root_fails_its_checksum_or_falls_back_to_a_linear_scan() {
    let s = Scratch::new("badroot");
    let names = big_dir(&s.join("src"), 400);
    let img = s.join("img");
    mkfs(&s.join("src"), &img, &["-b", "1024"], "32M");
    reindex(&img);
    let root_blk: u64 = debugfs(&img, "bmap /big 0").trim().parse().unwrap();
    // dx_root_info.hash_version := 9 (no such hash).
    let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[9], root_blk * 1024 + 28).unwrap();

    let mut fs = mount(&img, &[]).unwrap();
    let dir = resolve(&mut fs, b"big").unwrap();
    let err = fs.lookup(dir.ino, &names[5]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadChecksum);
    assert!(err.message().contains("index checksum"), "{err}");

    // Without checksums the index is found malformed and, like the kernel,
    // the lookup falls back to reading every block.
    let mut fs = mount(&img, &[("nocsum", "")]).unwrap();
    for name in names.iter().step_by(13) {
        fs.lookup(dir.ino, name).unwrap();
    }
    assert_eq!(list_dir(&mut fs, dir.ino, 64).unwrap().len(), names.len());
}

/// An image (4 KiB blocks, no checksums, no htree) whose directory /d holds
/// alpha, bravo and charlie in one block: the image's path, its bytes, and
/// where /d's block starts in them, for a test to plant damage.
fn small_unindexed_dir(s: &Scratch) -> (PathBuf, Vec<u8>, usize) {
    let src = s.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    for name in ["alpha", "bravo", "charlie"] {
        fs::write(src.join("d").join(name), name).unwrap();
    }
    let image = s.join("img");
    mkfs(&src, &image, &["-b", "4096", "-O", "^metadata_csum,^dir_index"], "4M");
    let block: u64 = debugfs(&image, "blocks /d").split_whitespace().next().unwrap().parse().unwrap();
    let bytes = fs::read(&image).unwrap();
    (image, bytes, (block * 4096) as usize)
}

/// A record whose name holds '/' (a crafted or corrupted block) is
/// skipped; one whose name holds a NUL is listed cut at the NUL, as
/// programs receive it from the kernel's getdents, and no lookup finds it
/// (the record's bytes are longer); the neighbours still list and resolve.
#[test]
fn names_with_slash_are_skipped_names_with_nul_are_cut() {
    let s = Scratch::new("bad-names");
    let (image, mut bytes, at) = small_unindexed_dir(&s);
    let dir = &mut bytes[at..at + 4096];
    // Plant '/' in "bravo" and NUL in "charlie" (the record layout is the
    // kernel's: the name follows an 8-byte header).
    for (name, bad) in [(&b"bravo"[..], b'/'), (&b"charlie"[..], 0)] {
        let pos = dir.windows(name.len()).position(|w| w == name).unwrap();
        dir[pos + 2] = bad;
    }
    fs::write(&image, &bytes).unwrap();

    let mut fs = mount(&image, &[]).unwrap();
    let d = resolve(&mut fs, b"d").unwrap();
    let listed: Vec<Vec<u8>> = list_dir(&mut fs, d.ino, 100).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(listed, vec![b"alpha".to_vec(), b"ch".to_vec()]);
    assert_eq!(fs.lookup(d.ino, b"alpha").unwrap().size, 5);
    assert_eq!(fs.lookup(d.ino, b"ch").unwrap_err().code(), ErrorCode::NotFound);
    let out = Command::new("e2fsck").args(["-fn"]).arg(&image).output().unwrap();
    assert_ne!(out.status.code(), Some(0), "e2fsck must see the planted damage");
}

/// Lookups in an unindexed directory go through a name index built once
/// (names.rs). With two records of the same name (a crafted block) the
/// answer must still be the record a linear scan meets first, as the
/// kernel answers; and names present once resolve to their own inodes.
#[test]
fn unindexed_lookup_answers_the_first_record_like_the_kernel() {
    if unsafe { libc_geteuid() } != 0 {
        eprintln!("skipped: needs root for the kernel's loop mount");
        return;
    }
    let s = Scratch::new("dup-names");
    let (image, mut bytes, at) = small_unindexed_dir(&s);
    let dir = &mut bytes[at..at + 4096];
    let pos = dir.windows(5).position(|w| w == b"bravo").unwrap();
    dir[pos..pos + 5].copy_from_slice(b"alpha");
    fs::write(&image, &bytes).unwrap();

    let mnt = s.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    run(Command::new("mount").args(["-t", "ext4", "-o", "ro,loop"]).arg(&image).arg(&mnt));
    let kernel: Vec<u64> = ["alpha", "charlie"]
        .iter()
        .map(|n| std::os::unix::fs::MetadataExt::ino(&fs::symlink_metadata(mnt.join("d").join(n)).unwrap()))
        .collect();
    run(Command::new("umount").arg(&mnt));

    let mut fs = mount(&image, &[]).unwrap();
    let d = resolve(&mut fs, b"d").unwrap();
    for (name, want) in [(&b"alpha"[..], kernel[0]), (b"charlie", kernel[1])] {
        assert_eq!(fs.lookup(d.ino, name).unwrap().ino, want, "{}", String::from_utf8_lossy(name));
    }
    assert_eq!(fs.lookup(d.ino, b"bravo").unwrap_err().code(), ErrorCode::NotFound);
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
