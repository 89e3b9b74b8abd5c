//! Kernel-differential tests: fshost's view of an ext4 image must equal the
//! Linux kernel's ext4 driver's view of the same image, in everything a
//! program can observe (see `fshost_tests::compare`), for every on-disk
//! variant mkfs.ext4 can make; and fshost must never write to the image.
//!
//! Two tests prove the comparator itself can fail: equal images give no
//! difference, and an image with planted differences gives exactly those.
//!
//! Needs root (loop devices, mounts): run as root, as CI does.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use fshost_tests::compare::{Difference, compare_trees};
use fshost_tests::fshost::{FshostMount, guest};
use fshost_tests::kernel::{Image, KernelMount, require_root};
use fshost_tests::tree::{self, TreeSize};

/// Fails with the first 50 differences, one per line.
fn assert_no_differences(diffs: &[Difference], what: &str) {
    if diffs.is_empty() {
        return;
    }
    let shown: Vec<String> = diffs.iter().take(50).map(|d| format!("  {d}")).collect();
    panic!("{what}: {} differences (first {}):\n{}", diffs.len(), shown.len(), shown.join("\n"));
}

fn build(size: TreeSize, mkfs_args: &[&str]) -> Image {
    require_root();
    match Image::build(tree::shared(size), mkfs_args) {
        Ok(image) => image,
        Err(err) => panic!("cannot build the image (mkfs.ext4 {mkfs_args:?}): {err:#}"),
    }
}

/// Mounts `image` with fshost and the ext4 guest, compares fshost's view
/// with `kernel` (the kernel's view of the same image), and fails on any
/// difference, or if the image's content changed while fshost had it.
fn assert_fshost_sees_what_the_kernel_sees(image: &Image, kernel: KernelMount) {
    let before = image.content_hash().expect("hash the image");
    let plugin = guest("ext4");
    let diffs = {
        let fshost = FshostMount::mount(&plugin, image.path(), &[]).unwrap_or_else(|err| {
            panic!("fshost mount --plugin {} {}: {err:#}", plugin.display(), image.path().display())
        });
        compare_trees(kernel.path(), fshost.path())
    };
    drop(kernel);
    let after = image.content_hash().expect("hash the image again");
    assert!(
        before == after,
        "fshost wrote to the image it was given (its content hash changed); it also showed {} differences",
        diffs.len()
    );
    assert_no_differences(&diffs, "fshost's view against the kernel's");
}

/// Builds an image from the shared tree with `mkfs.ext4 ARGS`, completes
/// it through the kernel, and compares fshost's view with the kernel's.
fn differential(size: TreeSize, mkfs_args: &[&str]) {
    let image = build(size, mkfs_args);
    let kernel = KernelMount::read_only(image.path()).expect("mount the image with the kernel");
    assert_fshost_sees_what_the_kernel_sees(&image, kernel);
}

/// mke2fs's defaults: 4 KiB blocks, 64bit, metadata_csum, extents, flex_bg,
/// 256-byte inodes, a journal.
#[test]
fn ext4_default() {
    differential(TreeSize::Full, &[]);
}

/// 1 KiB blocks: deeper extent trees, three-level indirect maps for the
/// 100 MB sparse file, xattr blocks of 1 KiB. The light tree, because
/// symlinks cannot exceed 1023 bytes.
#[test]
fn ext4_1k_blocks() {
    differential(TreeSize::Light, &["-b", "1024"]);
}

#[test]
fn ext2() {
    differential(TreeSize::Full, &["-t", "ext2"]);
}

#[test]
fn ext3() {
    differential(TreeSize::Full, &["-t", "ext3"]);
}

/// ext4 with block maps (direct, indirect, double and triple indirect)
/// instead of extents; 64bit needs extents, so it goes too.
#[test]
fn ext4_block_mapped() {
    differential(TreeSize::Full, &["-O", "^extent,^64bit"]);
}

/// Small files, small directories and the system.data xattr in the inode.
#[test]
fn ext4_inline_data() {
    differential(TreeSize::Full, &["-O", "inline_data"]);
}

/// 16 KiB clusters of 4 KiB blocks: free counts are in clusters.
#[test]
fn ext4_bigalloc() {
    differential(TreeSize::Full, &["-O", "bigalloc", "-C", "16384"]);
}

/// Group descriptors checksummed with crc16 (uninit_bg / gdt_csum) instead
/// of metadata_csum.
#[test]
fn ext4_gdt_csum() {
    differential(TreeSize::Full, &["-O", "^metadata_csum,uninit_bg"]);
}

/// 32-byte group descriptors.
#[test]
fn ext4_32bit() {
    differential(TreeSize::Full, &["-O", "^64bit"]);
}

/// 128-byte inodes: no extra fields, so no nanoseconds, no crtime, times
/// clamped to 1901..2038, every xattr in a block.
#[test]
fn ext4_128_byte_inodes() {
    differential(TreeSize::Full, &["-I", "128"]);
}

/// Every directory linear, however big (the light tree: the kernel's
/// linear inserts are quadratic).
#[test]
fn ext4_no_dir_index() {
    differential(TreeSize::Light, &["-O", "^dir_index"]);
}

#[test]
fn ext4_large_dir() {
    differential(TreeSize::Full, &["-O", "large_dir"]);
}

/// Many inodes per group: inode tables far larger than what is used.
#[test]
fn ext4_many_inodes() {
    differential(TreeSize::Full, &["-N", "500000"]);
}

/// Group descriptors in meta block groups instead of after the superblock.
#[test]
fn ext4_meta_bg() {
    differential(TreeSize::Full, &["-O", "meta_bg,^resize_inode"]);
}

/// Xattr values in their own inodes (the tree adds a 60,000-byte one).
#[test]
fn ext4_ea_inode() {
    differential(TreeSize::Full, &["-O", "ea_inode"]);
}

#[test]
fn ext4_no_journal() {
    differential(TreeSize::Full, &["-O", "^has_journal"]);
}

/// 2 KiB blocks: neither the smallest nor the page size.
#[test]
fn ext4_2k_blocks() {
    differential(TreeSize::Light, &["-b", "2048"]);
}

/// ext3 at its oldest-style layout: 1 KiB blocks, 128-byte inodes.
#[test]
fn ext3_1k_blocks_128_byte_inodes() {
    differential(TreeSize::Light, &["-t", "ext3", "-b", "1024", "-I", "128"]);
}

/// Large inodes: 1 KiB each, most of it in-inode xattr space.
#[test]
fn ext4_1k_inodes() {
    differential(TreeSize::Light, &["-I", "1024"]);
}

/// Features that change the layout or only the flags the driver must
/// accept on a read-only mount: fast_commit (a journal with a fast-commit
/// area), mmp (a multi-mount protection block), sparse_super2 (two backup
/// superblocks), no flex_bg, stable_inodes, verity and encrypt.
#[test]
fn ext4_rarer_features() {
    differential(TreeSize::Light, &["-O", "fast_commit,mmp,sparse_super2,^flex_bg,stable_inodes,verity,encrypt"]);
}

/// Every group's metadata packed at the start of the device.
#[test]
fn ext4_packed_meta_blocks() {
    differential(TreeSize::Light, &["-E", "packed_meta_blocks=1", "-O", "^resize_inode"]);
}

/// A crashed image: fshost must show what the kernel shows after replaying
/// the journal (into a private copy), without writing to the image.
#[test]
fn ext4_crashed_with_dirty_journal() {
    let image = build(TreeSize::Full, &[]);
    image.crash_with_dirty_journal(tree::change_in_journal).expect("crash with a dirty journal");
    let kernel = KernelMount::replaying(&image).expect("mount a replayed copy with the kernel");
    assert_fshost_sees_what_the_kernel_sees(&image, kernel);
}

/// The "fshost never writes" check hashes content, not the host's hole
/// map: zeros written into a hole keep the hash; one changed byte, in a
/// hole or in data, changes it.
#[test]
fn content_hash_sees_bytes_not_holes() {
    let image = build(TreeSize::Light, &[]);
    let original = image.content_hash().expect("hash the image");
    let copy = image.copy().expect("copy the image");
    let file = OpenOptions::new().write(true).open(copy.path()).expect("open the copy");
    let len = file.metadata().unwrap().len();
    let ranges = fshost_tests::kernel::data_ranges(&file, len).expect("map the copy");
    // The first hole (8 KiB or longer: a 1 GiB image of a small tree is
    // mostly holes).
    let (data, hole) = ranges[0];
    let next = ranges.get(1).map_or(len, |r| r.0);
    assert!(next >= hole + 8192, "the first hole is 8 KiB or more: {ranges:?}");
    file.write_all_at(&[0u8; 8192], hole).unwrap();
    assert_eq!(copy.content_hash().unwrap(), original, "zeros over a hole are the same content");
    assert_ne!(fshost_tests::kernel::data_ranges(&file, len).unwrap(), ranges, "the hole map changed");
    file.write_all_at(&[1], hole + 100).unwrap();
    assert_ne!(copy.content_hash().unwrap(), original, "a byte written into a hole");
    file.write_all_at(&[0], hole + 100).unwrap();
    assert_eq!(copy.content_hash().unwrap(), original, "the byte put back");
    let mut byte = [0u8];
    std::fs::File::open(copy.path()).unwrap().read_exact_at(&mut byte, data + 1024).unwrap();
    file.write_all_at(&[byte[0] ^ 0x20], data + 1024).unwrap();
    assert_ne!(copy.content_hash().unwrap(), original, "a byte changed in data");
}

#[test]
fn comparator_sees_no_difference_between_equal_images() {
    let image = build(TreeSize::Full, &[]);
    let copy = image.copy().expect("copy the image");
    let a = KernelMount::read_only(image.path()).expect("mount the image");
    let b = KernelMount::read_only(copy.path()).expect("mount the copy");
    assert_no_differences(&compare_trees(a.path(), b.path()), "a kernel mount against a kernel mount of a copy");
}

/// Runs one debugfs request read-write on `image`; fails on any complaint.
fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs").arg("-w").arg("-R").arg(request).arg(image).output().expect("run debugfs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("debugfs ")).collect();
    assert!(out.status.success() && complaints.is_empty(), "debugfs -R {request:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The physical block debugfs's `bmap` reports for `path`'s block `lblk`
/// (`-a` allocates one into a hole first).
fn bmap(image: &Path, args: &str) -> u64 {
    let out = debugfs(image, &format!("bmap {args}"));
    out.trim().parse().unwrap_or_else(|_| panic!("debugfs bmap {args} printed {out:?}"))
}

fn patch_byte(image: &Path, offset: u64) {
    let file = OpenOptions::new().read(true).write(true).open(image).expect("open the image copy");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).expect("read a byte");
    byte[0] ^= 0x5a;
    file.write_all_at(&byte, offset).expect("patch a byte");
}

#[test]
fn comparator_reports_each_planted_difference() {
    let image = build(TreeSize::Full, &[]);
    let planted = image.copy().expect("copy the image");
    let reference = KernelMount::read_only(image.path()).expect("mount the image");
    let img = planted.path();
    let block_size = std::fs::metadata(reference.path()).expect("stat the root").blksize();
    let meta = |path: &str| std::fs::symlink_metadata(reference.path().join(path)).expect("lstat");

    // Each plant, and the (path, what) differences it must produce. The
    // planted image plays fshost's part.
    let mut expected: Vec<(&str, &str)> = Vec::new();

    // Timestamps off by one nanosecond (ext4 keeps nsec << 2 in *_extra).
    let nsec = meta("files/size-1").mtime_nsec() as u64;
    debugfs(img, &format!("set_inode_field /files/size-1 mtime_extra {}", (nsec + 1) << 2));
    expected.push(("/files/size-1", "mtime_nsec"));
    let nsec = meta("files/size-2049").ctime_nsec() as u64;
    debugfs(img, &format!("set_inode_field /files/size-2049 ctime_extra {}", (nsec + 1) << 2));
    expected.push(("/files/size-2049", "ctime_nsec"));
    debugfs(img, "set_inode_field /files/size-2048 atime 12345");
    expected.push(("/files/size-2048", "atime"));

    // One xattr value changed, one xattr removed.
    debugfs(img, "ea_set /xattrs/small user.small w");
    expected.push(("/xattrs/small", "xattr user.small"));
    debugfs(img, "ea_rm /xattrs/namespaces user.u");
    expected.push(("/xattrs/namespaces", "xattr user.u"));

    // One byte of file data changed, in place.
    let block = bmap(img, "/files/size-4097 0");
    patch_byte(img, block * block_size + 10);
    expected.push(("/files/size-4097", "content"));

    // One hole filled with a (zeroed) block: the layout, the block count and
    // the free-block counts change; the bytes read do not.
    bmap(img, "-a /sparse/hole-middle 100");
    expected.extend([
        ("/sparse/hole-middle", "data ranges"),
        ("/sparse/hole-middle", "blocks"),
        ("/", "statvfs f_bfree"),
        ("/", "statvfs f_bavail"),
    ]);

    // Inode fields, one each.
    debugfs(img, "set_inode_field /modes/file-0644 mode 0100600");
    expected.push(("/modes/file-0644", "mode"));
    debugfs(img, "set_inode_field /special/fifo mode 0140600");
    expected.push(("/special/fifo", "type"));
    debugfs(img, "set_inode_field /owners/uid-1000-gid-1000 uid 1001");
    expected.push(("/owners/uid-1000-gid-1000", "uid"));
    debugfs(img, "set_inode_field /owners/uid-65535-gid-65535 gid 1");
    expected.push(("/owners/uid-65535-gid-65535", "gid"));
    debugfs(img, "set_inode_field /files/size-0 links_count 2");
    expected.push(("/files/size-0", "nlink"));
    debugfs(img, "set_inode_field /special/char-1-3 block[0] 0x0104");
    expected.push(("/special/char-1-3", "rdev"));
    debugfs(img, "set_inode_field /files/size-2047 blocks 64");
    expected.push(("/files/size-2047", "blocks"));
    debugfs(img, "set_inode_field /files/size-8193 size 8192");
    expected.extend([
        ("/files/size-8193", "size"),
        ("/files/size-8193", "content"),
        ("/files/size-8193", "data ranges"),
    ]);

    // A fast symlink's target: "../f" becomes "../g" in i_block[0].
    debugfs(img, &format!("set_inode_field /symlinks/fast block[0] {:#x}", u32::from_le_bytes(*b"../g")));
    expected.push(("/symlinks/fast", "symlink target"));

    // A name removed from its directory (the inode stays).
    debugfs(img, "unlink /names/-");
    expected.push(("/names/-", "entry"));

    let other = KernelMount::read_only(img).expect("mount the planted image");
    let diffs = compare_trees(reference.path(), other.path());
    let mut got: Vec<(String, String)> = diffs.iter().map(|d| (d.path.clone(), d.what.clone())).collect();
    let mut want: Vec<(String, String)> = expected.iter().map(|(p, w)| (p.to_string(), w.to_string())).collect();
    got.sort();
    want.sort();
    let listing: Vec<String> = diffs.iter().map(|d| format!("  {d}")).collect();
    assert_eq!(
        got,
        want,
        "the comparator must report exactly the planted differences; it reported:\n{}",
        listing.join("\n")
    );
}

/// A crashed image's journal must replay the same way every time, and hold
/// changes that matter: the kernel's replayed view and its journal-ignoring
/// view must differ, in entries,
/// metadata, xattrs and data. (The fshost test on such an image would
/// prove nothing otherwise.)
#[test]
fn a_crashed_image_needs_its_journal_replayed() {
    let image = build(TreeSize::Full, &[]);
    image.crash_with_dirty_journal(tree::change_in_journal).expect("crash with a dirty journal");
    let replayed = KernelMount::replaying(&image).expect("mount a replayed copy");
    let replayed_again = KernelMount::replaying(&image).expect("mount another replayed copy");
    assert_no_differences(&compare_trees(replayed.path(), replayed_again.path()), "two replays of one journal");
    drop(replayed_again);
    let stale = KernelMount::ignoring_journal(image.path()).expect("mount ignoring the journal");
    let diffs = compare_trees(replayed.path(), stale.path());
    for (path, what) in [
        ("/journal", "entry"),
        ("/files/renamed-size-1", "entry"),
        ("/files/size-511", "entry"),
        ("/files/size-8192", "content"),
        ("/files/size-49153", "size"),
        ("/xattrs/small", "xattr user.small"),
        ("/owners/uid-1000-gid-1000", "uid"),
        ("/hardlinks/a", "nlink"),
    ] {
        assert!(
            diffs.iter().any(|d| d.path == path && d.what == what),
            "replaying the journal must change {path} ({what}); the differences were:\n{}",
            diffs.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n")
        );
    }
}
