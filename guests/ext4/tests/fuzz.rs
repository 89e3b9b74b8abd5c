//! Bounded random-mutation fuzzing: flip bytes in the metadata of small real
//! images (superblock, group descriptors, inode table, directory, htree,
//! extent and xattr blocks), then mount, walk the whole tree and map every
//! file. Every answer must be `Ok` or an error: no panic, no hang (each case
//! runs on its own thread under a deadline), no mapping that breaks the
//! contract. Half the cases mount with `nocsum` so mutations reach the
//! parsers behind the checksums.

mod common;

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use fshost_sdk::{FileType, Filesystem, IomapFlags, Result};

/// Cases per base image, and the per-case deadline.
const CASES: u64 = 400;
const DEADLINE: Duration = Duration::from_secs(20);

/// Byte ranges of the image's metadata, found with debugfs.
fn metadata_regions(img: &Path, bs: u64, dirs: &[&str], files: &[&str]) -> Vec<(u64, u64)> {
    let mut regions = vec![(1024, 2048)];
    let gdt = if bs == 1024 { 2 } else { 1 };
    regions.push((gdt * bs, (gdt + 1) * bs));
    let imap = debugfs(img, "imap <2>");
    let itable: u64 = imap.split("located at block ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    regions.push((itable * bs, (itable + 16) * bs));
    for dir in dirs {
        for b in debugfs(img, &format!("blocks {dir}")).split_whitespace() {
            let b: u64 = b.parse().unwrap();
            regions.push((b * bs, (b + 1) * bs));
        }
    }
    for file in files {
        let stat = debugfs(img, &format!("stat {file}"));
        if let Some(acl) = stat.split("File ACL: ").nth(1).and_then(|r| r.split_whitespace().next()) {
            let acl: u64 = acl.parse().unwrap();
            if acl != 0 {
                regions.push((acl * bs, (acl + 1) * bs));
            }
        }
        for line in debugfs(img, &format!("ex {file}")).lines().skip(1) {
            let words: Vec<&str> =
                line.split(|c: char| c.is_whitespace() || c == '/').filter(|w| !w.is_empty()).collect();
            // Index nodes: level < max; their "physical" is the child block.
            if words.len() >= 8 && words[0] != words[1] {
                let b: u64 = words[7].parse().unwrap();
                regions.push((b * bs, (b + 1) * bs));
            }
        }
    }
    regions
}

/// Walk everything reachable, bounded; return the first error or Ok.
fn walk(img: &Path, nocsum: bool) -> Result<usize> {
    let options: &[(&str, &str)] = if nocsum { &[("nocsum", "")] } else { &[] };
    let mut fs = mount(img, options)?;
    fs.info()?;
    let root = fs.info()?.root;
    let mut stack = vec![root];
    let mut seen = HashSet::new();
    let mut visited = 0;
    let mut first_err = None;
    let mut note = |r: Result<()>| {
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    };
    while let Some(dir) = stack.pop() {
        if !seen.insert(dir) || visited > 2000 {
            continue;
        }
        let entries = match list_dir(&mut fs, dir, 13) {
            Ok(e) => e,
            Err(e) => {
                note(Err(e));
                continue;
            }
        };
        for entry in entries.into_iter().take(500) {
            visited += 1;
            let attr = match fs.lookup(dir, &entry.name) {
                Ok(a) => a,
                Err(e) => {
                    note(Err(e));
                    continue;
                }
            };
            note(fs.listxattr(attr.ino).and_then(|names| {
                for name in names.iter().take(20) {
                    match fs.getxattr(attr.ino, name) {
                        Ok(_) => {}
                        Err(e) if e.code() == fshost_sdk::ErrorCode::NoData => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }));
            match attr.kind {
                FileType::Directory => stack.push(attr.ino),
                FileType::Symlink => note(fs.readlink(attr.ino).map(drop)),
                FileType::Regular => note(map_file(&mut fs, attr.ino, attr.size)),
                _ => {}
            }
        }
    }
    first_err.map_or(Ok(visited), Err)
}

/// Map a file front to back (at most 64 MiB and 2000 calls), checking each
/// answer against the contract.
fn map_file(fs: &mut ext4::Ext4, ino: u64, size: u64) -> Result<()> {
    let bs = u64::from(fs.info()?.block_size);
    let mut pos = 0;
    for _ in 0..2000 {
        if pos >= size.min(64 << 20) {
            break;
        }
        let maps = check_mappings(&fs.iomap_begin(ino, pos, size - pos, IomapFlags::default())?, pos, bs);
        pos = maps.last().map(|m| m.offset + m.length).unwrap();
    }
    Ok(())
}

fn fuzz(tag: &str, mkfs_args: &[&str], seed: u64) {
    fuzz_with(tag, mkfs_args, seed, false)
}

/// With `dirty_journal`, the root directory and root inode blocks are
/// journaled first (the image needs recovery) and the journal's own blocks
/// are mutated too.
fn fuzz_with(tag: &str, mkfs_args: &[&str], seed: u64, dirty_journal: bool) {
    let s = Scratch::new(tag);
    let src = s.join("src");
    fs::create_dir_all(src.join("big")).unwrap();
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    for i in 0..150 {
        fs::write(src.join("big").join(format!("name-{i:03}-padding")), format!("{i}")).unwrap();
    }
    let frag = fs::File::create(src.join("frag")).unwrap();
    for i in (0..300u64).step_by(2) {
        std::os::unix::fs::FileExt::write_all_at(&frag, &[i as u8 | 1; 700], i * 1024).unwrap();
    }
    fs::write(src.join("sub/deeper/file"), vec![7u8; 20_000]).unwrap();
    fs::write(src.join("tiny"), b"tiny").unwrap();
    std::os::unix::fs::symlink("tiny", src.join("fast")).unwrap();
    std::os::unix::fs::symlink("s".repeat(300), src.join("sub/slow")).unwrap();
    run(std::process::Command::new("setfattr").args(["-n", "user.a", "-v", "in-inode"]).arg(src.join("tiny")));
    run(std::process::Command::new("setfattr").args(["-n", "user.b", "-v", &"B".repeat(600)]).arg(src.join("tiny")));
    let img = s.join("img");
    mkfs(&src, &img, mkfs_args, "4M");
    let out = std::process::Command::new("e2fsck").arg("-fyD").arg(&img).output().unwrap();
    assert!(out.status.code().is_some_and(|c| c <= 1));
    let bs = if mkfs_args.contains(&"4096") { 4096 } else { 1024 };
    let mut regions =
        metadata_regions(&img, bs, &["/", "/big", "/sub", "/sub/deeper"], &["/frag", "/tiny", "/sub/deeper/file"]);
    if dirty_journal {
        let whole = fs::read(&img).unwrap();
        let mut script = String::from("jo\n");
        for (i, &(start, _)) in regions.iter().enumerate().skip(2).take(4) {
            let block = s.join(format!("journaled-{i}"));
            fs::write(&block, &whole[start as usize..(start + bs) as usize]).unwrap();
            script.push_str(&format!("jw -b {} {}\n", start / bs, block.display()));
        }
        script.push_str("jc\n");
        fs::write(s.join("script"), script).unwrap();
        run(std::process::Command::new("debugfs").arg("-w").arg("-f").arg(s.join("script")).arg(&img));
        for b in debugfs(&img, "blocks <8>").split_whitespace().take(8) {
            let b: u64 = b.parse().unwrap();
            regions.push((b * bs, (b + 1) * bs));
        }
    }
    let pristine = fs::read(&img).unwrap();
    walk(&img, false).unwrap_or_else(|e| panic!("{tag}: pristine image fails: {e}"));

    let mut rng = Rng(seed);
    let mut outcomes = [0usize; 2];
    for case in 0..CASES {
        let mut bytes = pristine.clone();
        for _ in 0..1 + rng.below(8) {
            let (start, end) = regions[rng.below(regions.len() as u64) as usize];
            let at = (start + rng.below(end - start)) as usize;
            if let Some(b) = bytes.get_mut(at) {
                *b = match rng.below(4) {
                    0 => 0,
                    1 => 0xff,
                    _ => rng.next() as u8,
                };
            }
        }
        let path = s.join(format!("case-{case}"));
        fs::write(&path, &bytes).unwrap();
        let nocsum = case % 2 == 1;
        let (tx, rx) = mpsc::channel();
        let worker_path = path.clone();
        let worker = std::thread::spawn(move || {
            let _ = tx.send(walk(&worker_path, nocsum).is_ok());
        });
        match rx.recv_timeout(DEADLINE) {
            Ok(ok) => outcomes[usize::from(ok)] += 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{tag} case {case} (seed {seed}): no answer in {DEADLINE:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = worker.join();
                panic!("{tag} case {case} (seed {seed}): the guest panicked");
            }
        }
        let _ = worker.join();
        fs::remove_file(&path).unwrap();
    }
    eprintln!("{tag}: {} cases walked cleanly, {} ended in an error", outcomes[1], outcomes[0]);
}

#[test]
fn fuzz_ext4_with_checksums_htree_and_extents() {
    fuzz("fuzz-ext4", &["-b", "1024", "-I", "256"], 0x1234_5678_9abc_def1);
}

#[test]
fn fuzz_ext2_indirect_blocks() {
    fuzz("fuzz-ext2", &["-t", "ext2", "-b", "1024", "-I", "128"], 0x0fed_cba9_8765_4321);
}

#[test]
fn fuzz_ext4_inline_data_4k() {
    fuzz("fuzz-inline", &["-b", "4096", "-O", "inline_data,^has_journal", "-I", "256"], 0x5555_aaaa_1234_4321);
}

#[test]
fn fuzz_ext4_with_a_dirty_journal() {
    fuzz_with("fuzz-journal", &["-b", "1024", "-I", "256"], 0x0123_4567_89ab_cdef, true);
}
