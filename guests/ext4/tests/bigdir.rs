//! Huge htree directories, listed the way the host lists them: in batches,
//! each resumed from the cookie of the batch before. The directories are
//! made by the kernel's ext4 (as on real disks), and the kernel is the
//! oracle: the guest lists exactly the names, inodes and types the
//! kernel's getdents returns, in the kernel's (hash) order. The cost of a
//! batch is counted in device reads, not timed: resuming at the end of the
//! directory must read as few blocks as resuming at its start. On a
//! read-write mount, a listing that goes on while leaves split under it
//! returns every name that was there all along exactly once.

mod common;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, FileTypeExt};
use std::path::Path;
use std::process::Command;
use std::rc::Rc;

use common::*;
use ext4::Ext4;
use fshost_sdk::{BlockIo, Device, DirEntry, FileType, Filesystem, MountOptions, NewInode, Timestamp, testing};
use fshost_tests::kernel::KernelMount;

/// A fixed hash seed, so the directory's layout (and the test) is the same
/// on every run.
const HASH_SEED: &str = "2f4b8c1e-6a3d-4e5f-9b7c-1d2e3f4a5b6c";

/// The batch size the FUSE adapter asks for with READDIRPLUS.
const BATCH: u32 = 128;

/// A device that counts the reads reaching the image (the guest's block
/// cache misses).
struct Counting {
    file: File,
    size: u64,
    reads: Rc<Cell<u64>>,
}

impl BlockIo for Counting {
    fn size(&self) -> u64 {
        self.size
    }
    fn sector_size(&self) -> u32 {
        512
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> fshost_sdk::Result<()> {
        self.reads.set(self.reads.get() + 1);
        self.file.read_exact_at(buf, offset).map_err(|e| fshost_sdk::Error::io(e.to_string()))
    }
}

/// Mount `image` read-only through a counting device.
fn mount_counting(image: &Path) -> (Ext4, Rc<Cell<u64>>) {
    let file = File::open(image).unwrap();
    let size = file.metadata().unwrap().len();
    let reads = Rc::new(Cell::new(0));
    let device = Device::new(Box::new(Counting { file, size, reads: reads.clone() }));
    let fs = Ext4::mount(device, &MountOptions { read_only: true, options: Vec::new() }).unwrap();
    (fs, reads)
}

/// The `i`th name: mostly the shape `touch` loops make, some longer and
/// with bytes above 0x7f (where signed and unsigned hashes differ).
fn name(i: usize) -> Vec<u8> {
    let mut n = format!("file-{i:07}").into_bytes();
    if i.is_multiple_of(5) {
        n.extend_from_slice(b"-\xc3\xa9t\xc3\xa9");
    }
    if i.is_multiple_of(7) {
        n.extend(std::iter::repeat_n(b'x', i % 60));
    }
    n
}

/// An image whose /big holds `count` entries made by the kernel's ext4
/// (an htree: the kernel indexes a directory as it grows past a block):
/// empty files, every 50th a directory and every 51st a symlink.
fn kernel_big_dir(s: &Scratch, count: usize, block_size: &str) -> std::path::PathBuf {
    let img = s.join("big.img");
    let inodes = (3 * count + 1000).to_string();
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", block_size, "-N", &inodes, "-E"])
        .arg(format!("hash_seed={HASH_SEED}"))
        .arg(&img)
        .arg("96M"));
    let mnt = KernelMount::read_write(&img, "").unwrap();
    let big = mnt.path().join("big");
    std::fs::create_dir(&big).unwrap();
    for i in 0..count {
        let path = big.join(std::ffi::OsStr::from_bytes(&name(i)));
        if i.is_multiple_of(50) {
            std::fs::create_dir(&path).unwrap();
        } else if i.is_multiple_of(51) {
            std::os::unix::fs::symlink("target", &path).unwrap();
        } else {
            File::create(&path).unwrap();
        }
    }
    drop(mnt);
    img
}

/// (name, inode, type) of every entry, in the kernel's getdents order.
fn kernel_listing(img: &Path) -> Vec<(Vec<u8>, u64, FileType)> {
    let mnt = KernelMount::read_only(img).unwrap();
    std::fs::read_dir(mnt.path().join("big"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            let kind = if t.is_dir() {
                FileType::Directory
            } else if t.is_symlink() {
                FileType::Symlink
            } else if t.is_file() {
                FileType::Regular
            } else if t.is_fifo() {
                FileType::Fifo
            } else {
                FileType::Unknown
            };
            (e.file_name().as_bytes().to_vec(), e.ino(), kind)
        })
        .collect()
}

/// Every batch of `dir`, each resumed from the cookie of the one before.
fn batches(fs: &mut Ext4, dir: u64) -> Vec<Vec<DirEntry>> {
    let mut out: Vec<Vec<DirEntry>> = Vec::new();
    let mut cookie = 0;
    loop {
        let batch = fs.readdir(dir, cookie, BATCH).unwrap();
        let Some(last) = batch.last() else { return out };
        assert!(batch.len() <= BATCH as usize);
        assert!(last.cookie > cookie, "cookies must advance: {cookie} then {}", last.cookie);
        cookie = last.cookie;
        out.push(batch);
    }
}

#[test]
fn big_htree_lists_as_the_kernel_in_batches_at_the_same_cost_anywhere() {
    kernel_requirements();
    let s = Scratch::new("bigdir");
    let count = 20_000;
    let img = kernel_big_dir(&s, count, "1024");
    let dump = debugfs(&img, "htree_dump /big");
    assert!(dump.contains("Indirect levels: 1"), "not a two-level htree:\n{}", &dump[..400.min(dump.len())]);
    let kernel = kernel_listing(&img);
    assert_eq!(kernel.len(), count);

    let (mut fs, _) = mount_counting(&img);
    let big = resolve(&mut fs, b"big").unwrap();
    let all = batches(&mut fs, big.ino);
    let listed: Vec<(Vec<u8>, u64, FileType)> = all.iter().flatten().map(|e| (e.name.clone(), e.ino, e.kind)).collect();
    assert_eq!(listed.len(), kernel.len(), "entry count");
    let first_difference = listed.iter().zip(&kernel).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "the listing differs from the kernel's getdents order");

    // The cost of one batch on a fresh mount (nothing cached), resumed at
    // the start, the middle and the end: the device reads it makes.
    let dir_blocks = big.size / 1024;
    let mut costs = BTreeMap::new();
    for at in [0, all.len() / 2, all.len() - 1] {
        let cookie = if at == 0 { 0 } else { all[at - 1].last().unwrap().cookie };
        let (mut fs, reads) = mount_counting(&img);
        let big = resolve(&mut fs, b"big").unwrap();
        let before = reads.get();
        let batch = fs.readdir(big.ino, cookie, BATCH).unwrap();
        assert_eq!(batch, all[at], "batch {at} resumed on a fresh mount");
        costs.insert(at, reads.get() - before);
    }
    let (least, most) = (*costs.values().min().unwrap(), *costs.values().max().unwrap());
    assert!(most <= least + 8, "the cost of a batch depends on where it starts: {costs:?} device reads");
    assert!(most * 20 < dir_blocks, "a batch read {most} of the directory's {dir_blocks} blocks: {costs:?}");

    // On one mount the batches after the first read only the leaves they
    // list: the index is read once.
    drop(fs);
    let (mut fs, reads) = mount_counting(&img);
    let big = resolve(&mut fs, b"big").unwrap();
    let mut cookie = 0;
    let mut per_batch = Vec::new();
    loop {
        let before = reads.get();
        let batch = fs.readdir(big.ino, cookie, BATCH).unwrap();
        let Some(last) = batch.last() else { break };
        cookie = last.cookie;
        per_batch.push(reads.get() - before);
    }
    // Each leaf is read once, plus the one a batch resumes in.
    let later: u64 = per_batch.iter().skip(1).sum();
    let bound = dir_blocks + 2 * per_batch.len() as u64;
    assert!(later <= bound, "the batches after the first read {later} blocks (bound {bound}): {per_batch:?}");
}

fn new_file() -> NewInode {
    NewInode {
        kind: FileType::Regular,
        perm: 0o644,
        uid: 0,
        gid: 0,
        rdev: 0,
        time: Timestamp { seconds: 1_700_000_000, nanoseconds: 0 },
    }
}

/// A listing resumed after leaves split (many names added) and names were
/// removed returns every name that was there throughout exactly once, and
/// nothing twice; in block order (cookies as byte positions) the names a
/// split moves to the new block at the end would come again.
#[test]
fn rw_listing_across_leaf_splits_repeats_and_skips_nothing() {
    kernel_requirements();
    let s = Scratch::new("bigdir-rw");
    let count = 3_000;
    let img = kernel_big_dir(&s, count, "1024");
    let device = testing::open_image_rw(&img).unwrap();
    let mut fs = Ext4::mount(device, &MountOptions { read_only: false, options: Vec::new() }).unwrap();
    fs.begin_write().unwrap();
    let big = resolve(&mut fs, b"big").unwrap();
    let original: BTreeSet<Vec<u8>> = (0..count).map(name).collect();

    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut cookie = 0;
    for _ in 0..10 {
        let batch = fs.readdir(big.ino, cookie, 100).unwrap();
        cookie = batch.last().unwrap().cookie;
        seen.extend(batch.into_iter().map(|e| e.name));
    }
    // Split leaves everywhere: as many names again, and remove some names
    // already listed and some not yet listed.
    for i in count..2 * count {
        fs.create(big.ino, &name(i), &new_file()).unwrap();
    }
    let time = Timestamp { seconds: 1_700_000_100, nanoseconds: 0 };
    let mut removed = BTreeSet::new();
    for i in (0..count).step_by(97).filter(|i| i % 50 != 0) {
        let gone = fs.unlink(big.ino, &name(i), time).unwrap();
        if gone.nlink == 0 {
            fs.evict(gone.ino).unwrap();
        }
        removed.insert(name(i));
    }
    loop {
        let batch = fs.readdir(big.ino, cookie, 100).unwrap();
        let Some(last) = batch.last() else { break };
        cookie = last.cookie;
        seen.extend(batch.into_iter().map(|e| e.name));
    }
    let mut times: BTreeMap<&[u8], usize> = BTreeMap::new();
    for n in &seen {
        *times.entry(n).or_default() += 1;
    }
    let twice: Vec<String> =
        times.iter().filter(|&(_, &c)| c > 1).map(|(n, _)| String::from_utf8_lossy(n).into_owned()).collect();
    assert!(twice.is_empty(), "{} names listed twice, e.g. {:?}", twice.len(), &twice[..twice.len().min(5)]);
    let missed: Vec<String> = original
        .iter()
        .filter(|n| !removed.contains(*n) && !times.contains_key(n.as_slice()))
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    assert!(missed.is_empty(), "{} names never listed, e.g. {:?}", missed.len(), &missed[..missed.len().min(5)]);
    fs.unmount().unwrap();
    drop(fs);
    let out = Command::new("e2fsck").arg("-fn").arg(&img).output().unwrap();
    assert!(out.status.success(), "e2fsck -fn: {}", String::from_utf8_lossy(&out.stdout));
}

/// These tests mount images with the kernel's ext4.
fn kernel_requirements() {
    fshost_tests::kernel::require_root();
}
