//! Journal recovery: debugfs writes committed transactions into the journal
//! of an image (leaving it `needs_recovery`); the guest must then show what
//! e2fsck shows after it replays the same journal in place, and the stale
//! state with `norecovery`.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use fshost_sdk::{ErrorCode, MappingKind};

const BS: u64 = 4096;

fn image(s: &Scratch) -> std::path::PathBuf {
    let src = s.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("hello"), b"hello").unwrap();
    fs::write(src.join("data"), vec![b'd'; 2 * BS as usize]).unwrap();
    let img = s.join("img");
    mkfs(&src, &img, &["-b", "4096", "-I", "256"], "32M");
    img
}

/// Write one transaction with `blocks` (block number, contents file) into
/// the journal of `image`.
fn journal_write(image: &Path, blocks: &[(u64, &Path)]) {
    let mut script = String::from("jo\n");
    for (block, file) in blocks {
        script.push_str(&format!("jw -b {block} {}\n", file.display()));
    }
    script.push_str("jc\n");
    let script_path = image.with_extension("script");
    fs::write(&script_path, script).unwrap();
    run(Command::new("debugfs").arg("-w").arg("-f").arg(&script_path).arg(image));
    let header = run(Command::new("dumpe2fs").arg("-h").arg(image));
    assert!(header.contains("needs_recovery"), "{header}");
}

/// A copy of `image` that e2fsck recovered in place.
fn recovered_copy(image: &Path) -> std::path::PathBuf {
    let copy = image.with_extension("recovered");
    fs::copy(image, &copy).unwrap();
    let out = Command::new("e2fsck").arg("-fy").arg(&copy).output().unwrap();
    assert!(out.status.code().is_some_and(|c| c <= 1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(!run(Command::new("dumpe2fs").arg("-h").arg(&copy)).contains("needs_recovery"));
    copy
}

fn file_bytes(image: &Path, options: &[(&str, &str)], path: &[u8]) -> (Vec<u8>, Vec<fshost_sdk::Mapping>) {
    let mut fs = mount(image, options).unwrap();
    let attr = resolve(&mut fs, path).unwrap();
    read_file(&mut fs, image, attr.ino, attr.size).unwrap()
}

#[test]
fn replayed_data_blocks_are_served_inline() {
    let s = Scratch::new("jdata");
    let img = image(&s);
    let pblk: u64 = debugfs(&img, "bmap /data 1").trim().parse().unwrap();
    let new = s.join("new-block");
    fs::write(&new, vec![b'J'; BS as usize]).unwrap();
    journal_write(&img, &[(pblk, &new)]);

    let (bytes, maps) = file_bytes(&img, &[], b"data");
    let mut want = vec![b'd'; BS as usize];
    want.extend(vec![b'J'; BS as usize]);
    assert!(bytes == want, "replayed view");
    assert!(maps.iter().any(|m| matches!(m.kind, MappingKind::Inline(_)) && m.offset == BS));

    let (stale, _) = file_bytes(&img, &[("norecovery", "")], b"data");
    assert!(stale == vec![b'd'; 2 * BS as usize], "norecovery shows the stale state");

    let copy = recovered_copy(&img);
    assert!(file_bytes(&copy, &[], b"data").0 == want, "e2fsck agrees");
}

#[test]
fn replayed_metadata_changes_inodes_and_directories() {
    let s = Scratch::new("jmeta");
    let img = image(&s);
    // Make the changes on a copy, then journal the changed blocks into the
    // original: the inode table block of /hello and the root directory block.
    let changed = s.join("changed.img");
    fs::copy(&img, &changed).unwrap();
    debugfs_w(&changed, "set_inode_field /hello mode 0100600");
    debugfs_w(&changed, "set_inode_field /hello uid 4242");
    debugfs_w(&changed, "ln /hello /added");
    let imap = debugfs(&changed, "imap /hello");
    let itable: u64 = imap.split("located at block ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    let root_blk: u64 = debugfs(&changed, "bmap / 0").trim().parse().unwrap();
    let whole = fs::read(&changed).unwrap();
    let mut blocks = Vec::new();
    for b in [itable, root_blk] {
        let path = s.join(format!("block-{b}"));
        fs::write(&path, &whole[(b * BS) as usize..((b + 1) * BS) as usize]).unwrap();
        blocks.push((b, path));
    }
    let refs: Vec<(u64, &Path)> = blocks.iter().map(|(b, p)| (*b, p.as_path())).collect();
    journal_write(&img, &refs);

    let copy = recovered_copy(&img);
    for image in [&img, &copy] {
        let mut fs = mount(image, &[]).unwrap();
        let hello = resolve(&mut fs, b"hello").unwrap();
        assert_eq!((hello.perm, hello.uid), (0o600, 4242), "{image:?}");
        assert_eq!(resolve(&mut fs, b"added").unwrap().ino, hello.ino, "{image:?}");
    }
    let mut stale = mount(&img, &[("norecovery", "")]).unwrap();
    assert_eq!(resolve(&mut stale, b"hello").unwrap().perm, 0o644);
    assert_eq!(resolve(&mut stale, b"added").unwrap_err().code(), ErrorCode::NotFound);
}

#[test]
fn external_journal_needing_recovery_is_refused() {
    let s = Scratch::new("jext");
    let img = image(&s);
    debugfs_w(&img, "ssv journal_inum 0");
    debugfs_w(&img, "ssv journal_dev 0x801");
    debugfs_w(&img, "feature needs_recovery");
    let err = mount(&img, &[]).err().expect("must refuse");
    assert_eq!(err.code(), ErrorCode::Unsupported);
    assert!(err.message().contains("external"), "{err}");
    let mut fs = mount(&img, &[("norecovery", "")]).unwrap();
    assert_eq!(resolve(&mut fs, b"hello").unwrap().size, 5);
}
