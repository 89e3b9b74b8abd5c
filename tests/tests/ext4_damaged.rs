//! Damaged ext4 images: fshost must never show less than the kernel does.
//!
//! Each case builds a small image with `mkfs.ext4 -d`, damages it with
//! e2fsprogs' own tools (debugfs `set_inode_field`, `set_bg`,
//! `set_super_value`, `zap_block`, `punch`) or by patching bytes at places
//! debugfs names, then compares fshost's view with the kernel's (the
//! kernel mounts a private copy read-only, so it may replay its journal)
//! through the comparator of `fshost_tests::compare`, which also compares
//! the errno of every operation that fails on either side.
//!
//! A difference is allowed only when it is listed in the case's `known`
//! list, with its reason, and every listed difference must occur (a fix
//! that removes one must remove it from the list). What may be listed:
//! fshost showing *more* than the kernel (an entry, an attribute, a target
//! or bytes the kernel refuses). Errnos must be the kernel's, EBADMSG
//! (EFSBADCRC) for a bad checksum included (`bad-checksum` in
//! `fshost:plugin@0.2.0`).
//! Anything fshost shows *less* of, or shows differently, fails the case.
//! The policy behind it is ARCHITECTURE.md's "Damaged images".
//!
//! Needs root (loop devices, mounts), as the other kernel comparisons.
//! `FSHOST_EXT4_GUEST=PATH` runs the suite with another build of the guest
//! (and `FSHOST_BIN` with another host), to see what an older one showed.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use fshost_tests::compare::{Difference, compare_trees};
use fshost_tests::fshost::{FshostMount, guest};
use fshost_tests::kernel::{Image, KernelMount, require_root};
use fshost_tests::scratch::ScratchDir;
use fshost_tests::tree::set_xattr;

/// How a difference departs from the kernel's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// fshost shows something the kernel refuses (allowed when listed).
    More,
    /// The kernel shows something fshost refuses (never allowed).
    Less,
    /// Both fail, with different errnos.
    Errno,
    /// Both fail with the same errno (the comparator reports a failed read
    /// on either side; equal failures are agreement, not a difference).
    Same,
    /// Both show it, differently (never allowed).
    Different,
}

/// A deliberate difference: where (a path, or a prefix ending in `*`),
/// what (a prefix of the comparator's field), and why it is kept.
struct Known {
    path: &'static str,
    what: &'static str,
    kind: Kind,
    reason: &'static str,
}

/// Where one side's value starts failing: `error (...)` on either side of
/// the comparator's `KERNEL vs FSHOST` detail.
fn classify(d: &Difference) -> Kind {
    if d.what == "d_type" && d.detail.starts_with("0 vs ") {
        return Kind::More; // DT_UNKNOWN in the kernel's view, a type in fshost's
    }
    if d.what == "entry" {
        if d.detail.contains("only in the kernel's view") {
            return Kind::Less;
        }
        if d.detail.contains("only in fshost's view") {
            return Kind::More;
        }
        return Kind::Different;
    }
    let detail = match d.detail.split_once(": ") {
        Some((head, rest)) if head.contains("read at") => rest,
        _ => d.detail.as_str(),
    };
    let Some((kernel, fshost)) = detail.split_once(" vs ") else { return Kind::Different };
    match (kernel.starts_with("error"), fshost.starts_with("error")) {
        (true, false) => Kind::More,
        (false, true) => Kind::Less,
        (true, true) if kernel == fshost => Kind::Same,
        (true, true) => Kind::Errno,
        (false, false) => Kind::Different,
    }
}

fn matches(known: &Known, d: &Difference) -> bool {
    let path = match known.path.strip_suffix('*') {
        Some(prefix) => d.path.starts_with(prefix),
        None => known.path == d.path,
    };
    path && d.what.starts_with(known.what) && classify(d) == known.kind
}

// ---------------------------------------------------------------------
// The tree every image is made from.

/// Names in the big directories: long enough that 300 of them fill
/// several blocks.
fn big_name(i: usize) -> String {
    format!("entry-with-a-somewhat-long-name-{i:03}")
}

const BIG_ENTRIES: usize = 300;

fn write(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The source tree, built once per test process and removed when it exits
/// (a static is never dropped: an `atexit` handler removes it).
fn tree() -> &'static Path {
    static TREE: OnceLock<ScratchDir> = OnceLock::new();
    extern "C" fn remove_tree() {
        if let Some(dir) = TREE.get() {
            let _ = fs::remove_dir_all(dir.path());
        }
    }
    TREE.get_or_init(|| {
        // SAFETY: registers a plain function with no arguments; it runs at
        // process exit, after the tests, and only removes a directory.
        unsafe { libc::atexit(remove_tree) };
        let dir = ScratchDir::new("damaged-tree").expect("scratch dir");
        let root = dir.path();
        let mk = |p: &str| fs::create_dir_all(root.join(p)).expect("mkdir");
        mk("plain/sub");
        mk("victims/dir");
        mk("big");
        write(&root.join("plain/small.txt"), b"hello, damaged world\n");
        write(&root.join("plain/sub/inner.txt"), b"inner\n");
        for i in 0..4 {
            write(&root.join(format!("plain/f{i}")), &fshost_tests::pattern::pattern(1000 + i * 777, i as u32));
        }
        write(&root.join("plain/big.bin"), &fshost_tests::pattern::pattern(300 * 1024, 7));
        // Data blocks with holes between them: 12 extents, more than the
        // inode holds, so the tree has a leaf block.
        let frag = File::create(root.join("plain/frag")).expect("create frag");
        for i in 0..12u64 {
            frag.write_all_at(&fshost_tests::pattern::pattern(4096, 100 + i as u32), i * 2 * 4096).expect("write frag");
        }
        drop(frag);
        std::os::unix::fs::symlink("target-of-a-fast-link", root.join("plain/fast")).expect("symlink");
        std::os::unix::fs::symlink("s".repeat(100), root.join("plain/slow")).expect("symlink");
        write(&root.join("plain/xattr-small"), b"x\n");
        set_xattr(&root.join("plain/xattr-small"), "user.small", b"1").expect("xattr");
        write(&root.join("plain/xattr-block"), b"y\n");
        set_xattr(&root.join("plain/xattr-block"), "user.big", &[b'v'; 600]).expect("xattr");
        for name in ["a", "b", "c", "d", "e", "f", "g", "h"] {
            write(&root.join("victims").join(name), format!("victim {name}\n").as_bytes());
        }
        write(&root.join("victims/dir/inside"), b"inside\n");
        std::os::unix::fs::symlink("a", root.join("victims/link")).expect("symlink");
        for i in 0..BIG_ENTRIES {
            write(&root.join("big").join(big_name(i)), format!("{i}\n").as_bytes());
        }
        dir
    })
    .path()
}

// ---------------------------------------------------------------------
// Tools.

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One debugfs request, read-write; fails on any complaint.
fn debugfs(img: &Path, request: &str) -> String {
    let out = Command::new("debugfs").arg("-w").arg("-R").arg(request).arg(img).output().expect("run debugfs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("debugfs ")).collect();
    assert!(out.status.success() && complaints.is_empty(), "debugfs -R {request:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn block_size(img: &Path) -> u64 {
    let out = run(Command::new("dumpe2fs").arg("-h").arg(img));
    out.lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("dumpe2fs shows the block size")
}

/// The physical block holding logical block `lblk` of `path`.
fn bmap(img: &Path, path: &str, lblk: u64) -> u64 {
    let out = debugfs(img, &format!("bmap {path} {lblk}"));
    out.trim().parse().unwrap_or_else(|_| panic!("debugfs bmap {path} {lblk} printed {out:?}"))
}

/// The inode number of `path`.
fn inum(img: &Path, path: &str) -> u64 {
    let out = debugfs(img, &format!("stat {path}"));
    out.split_whitespace()
        .skip_while(|w| *w != "Inode:")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("debugfs stat {path}: {out}"))
}

fn read_at(img: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    File::open(img).expect("open image").read_exact_at(&mut buf, offset).expect("read image");
    buf
}

fn write_at(img: &Path, offset: u64, bytes: &[u8]) {
    OpenOptions::new().write(true).open(img).expect("open image").write_all_at(bytes, offset).expect("write image");
}

/// Byte offsets of the records of directory block `block` (physical),
/// with their names.
fn records(img: &Path, block: u64) -> Vec<(u64, Vec<u8>)> {
    let bs = block_size(img);
    let data = read_at(img, block * bs, bs as usize);
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= data.len() {
        let rec_len = usize::from(u16::from_le_bytes([data[pos + 4], data[pos + 5]]));
        let name_len = usize::from(data[pos + 6]);
        out.push((block * bs + pos as u64, data.get(pos + 8..pos + 8 + name_len).unwrap_or_default().to_vec()));
        if rec_len < 12 {
            break;
        }
        pos += rec_len;
    }
    out
}

// ---------------------------------------------------------------------
// The comparison.

/// Builds the image for `mkfs_args` (directories of several blocks
/// indexed by `e2fsck -fyD` when dir_index is on), applies `damage`, and
/// compares fshost with the kernel; fails on every difference not in
/// `known`, and on every entry of `known` that did not occur. Returns
/// fshost's log: its damage report.
fn case(mkfs_args: &[&str], damage: impl FnOnce(&Path), known: &[Known]) -> String {
    require_root();
    let image = Image::mkfs(tree(), mkfs_args, "64M").expect("mkfs.ext4");
    let img = image.path();
    // -D rebuilds directories (an htree for each of several blocks); exit
    // status 1 means "changed", which is what is asked.
    let status = Command::new("e2fsck").arg("-fyD").arg(img).output().expect("e2fsck").status;
    assert!(matches!(status.code(), Some(0 | 1)), "e2fsck -fyD: {status}");
    damage(img);
    let (diffs, log) = differences(&image);
    let unexpected: Vec<String> = diffs
        .iter()
        .filter(|d| !known.iter().any(|k| matches(k, d)))
        .map(|d| format!("  [{:?}] {d}", classify(d)))
        .collect();
    let missing: Vec<String> = known
        .iter()
        .filter(|k| !diffs.iter().any(|d| matches(k, d)))
        .map(|k| format!("  {} {} [{:?}] ({})", k.path, k.what, k.kind, k.reason))
        .collect();
    assert!(
        unexpected.is_empty() && missing.is_empty(),
        "fshost against the kernel on a damaged image:\n{} differences not allowed:\n{}\n{} deliberate \
         differences that did not occur:\n{}\nfshost's log:\n{}",
        unexpected.len(),
        unexpected.iter().take(60).cloned().collect::<Vec<_>>().join("\n"),
        missing.len(),
        missing.join("\n"),
        log.lines().take(40).collect::<Vec<_>>().join("\n")
    );
    log
}

/// fshost's view of `image` against the kernel's: the differences (equal
/// failures dropped) and fshost's log. A mount fshost refuses and the
/// kernel makes is a `Less` difference at "/".
fn differences(image: &Image) -> (Vec<Difference>, String) {
    let plugin = std::env::var_os("FSHOST_EXT4_GUEST").map_or_else(|| guest("ext4"), Into::into);
    let kernel = KernelMount::replaying(image);
    let fshost = FshostMount::mount(&plugin, image.path(), &[]);
    let mount = |detail: String| vec![Difference { path: "/".into(), what: "mount".into(), detail }];
    let (diffs, log) = match (&kernel, &fshost) {
        (Ok(k), Ok(f)) => (compare_trees(k.path(), f.path()), f.log()),
        (Err(_), Ok(f)) => (mount("error (refused) vs ok".into()), f.log()),
        (Ok(_), Err(e)) => (mount(format!("ok vs error ({e:#})")), String::new()),
        (Err(_), Err(_)) => (Vec::new(), String::new()),
    };
    drop((kernel, fshost));
    (diffs.into_iter().filter(|d| classify(d) != Kind::Same).collect(), log)
}

/// mke2fs's defaults (metadata_csum), two block groups of 32 MiB.
const CSUM: &[&str] = &["-b", "4096", "-g", "8192"];
/// No metadata_csum: damage inside directory blocks is not hidden behind
/// a checksum failure.
const NOCSUM: &[&str] = &["-b", "4096", "-g", "8192", "-O", "^metadata_csum"];
/// Linear directories only.
const LINEAR: &[&str] = &["-b", "4096", "-g", "8192", "-O", "^metadata_csum,^dir_index"];

// ---------------------------------------------------------------------
// Undamaged: the suite's own baseline.

#[test]
fn undamaged_images_show_no_difference() {
    case(CSUM, |_| {}, &[]);
    case(LINEAR, |_| {}, &[]);
}

// ---------------------------------------------------------------------
// One bad inode: its directory still lists every name; only that one fails.

#[test]
fn inode_with_a_bad_checksum() {
    let mut ino = 0;
    let damage = |img: &Path| {
        ino = inum(img, "/victims/c");
        debugfs(img, "set_inode_field /victims/c checksum 0xdead");
    };
    let log = case(CSUM, damage, &[]);
    let report = format!("inode {ino} (block ");
    assert!(log.contains(&report) && log.contains("checksum"), "the log names {report:?}:\n{log}");
}

#[test]
fn inode_with_a_bad_mode() {
    case(CSUM, |img| debugfs(img, "set_inode_field /victims/c mode 0170644").truncate(0), &[]);
}

#[test]
fn inode_with_a_bad_extra_isize() {
    case(CSUM, |img| debugfs(img, "set_inode_field /victims/c extra_isize 3").truncate(0), &[]);
}

#[test]
fn directory_inode_with_a_bad_checksum() {
    case(CSUM, |img| debugfs(img, "set_inode_field /victims/dir checksum 0xdead").truncate(0), &[]);
}

#[test]
fn inode_flagged_inline_without_the_feature() {
    case(CSUM, |img| debugfs(img, "set_inode_field /victims/c flags 0x10080000").truncate(0), &[]);
}

#[test]
fn bad_inode_in_a_directory_without_filetype() {
    case(
        &["-b", "4096", "-g", "8192", "-O", "^metadata_csum,^filetype"],
        |img| debugfs(img, "set_inode_field /victims/c mode 0170644").truncate(0),
        &[Known {
            path: "*",
            what: "d_type",
            kind: Kind::More,
            reason: "without the filetype feature the kernel's getdents says DT_UNKNOWN; the contract has no \
                     unknown type, so fshost gives the inode's type, or DT_REG for an inode it cannot read",
        }],
    );
}

/// Why an inode whose block map the kernel refuses at iget is shown.
const BLOCK_MAP_AT_READ: &str = "the kernel's iget checks every block pointer in i_block (ext4_ind_check_inode) \
     and refuses the inode (EUCLEAN); fshost checks a block map when it is used, so stat shows the \
     inode and reading it fails where a pointer is outside the filesystem";

/// Small files and directories kept in their inodes.
const INLINE: &[&str] = &["-b", "4096", "-g", "8192", "-O", "inline_data"];

#[test]
fn inline_file_also_flagged_extents() {
    case(INLINE, |img| debugfs(img, "set_inode_field /victims/c flags 0x10080000").truncate(0), &[]);
}

#[test]
fn inline_file_without_its_flag() {
    case(
        INLINE,
        |img| debugfs(img, "set_inode_field /victims/c flags 0").truncate(0),
        &[Known { path: "/victims/c", what: "lstat", kind: Kind::More, reason: BLOCK_MAP_AT_READ }],
    );
}

#[test]
fn inline_file_larger_than_its_data() {
    case(INLINE, |img| debugfs(img, "set_inode_field /victims/c size 5000").truncate(0), &[]);
}

#[test]
fn inline_directory_without_its_flag() {
    case(
        INLINE,
        |img| debugfs(img, "set_inode_field /victims/dir flags 0").truncate(0),
        &[Known { path: "/victims/dir", what: "lstat", kind: Kind::More, reason: BLOCK_MAP_AT_READ }],
    );
}

#[test]
fn inline_directory_with_a_bad_record_length() {
    case(
        INLINE,
        |img| {
            // i_block[1] holds the first record after the 4-byte parent:
            // inode number; i_block[2] its rec_len (low half) and name_len.
            debugfs(img, "set_inode_field /victims/dir block[2] 0x0605");
        },
        &[],
    );
}

#[test]
fn directory_with_a_hole_in_its_htree() {
    case(
        NOCSUM,
        |img| debugfs(img, "punch /big 2 2").truncate(0),
        &[Known {
            path: "/big",
            what: "readdir",
            kind: Kind::More,
            reason: "the kernel's htree readdir fails the whole listing (EUCLEAN) at a hole where a leaf \
                 should be; fshost skips the hole, as the kernel's linear readdir does",
        }],
    );
}

// ---------------------------------------------------------------------
// Directory blocks.

/// Record `n` of logical block `lblk` of `dir` gets a rec_len too small
/// to be one (5).
fn break_record(img: &Path, dir: &str, lblk: u64, n: usize) {
    let block = bmap(img, dir, lblk);
    let all = records(img, block);
    let (at, _) = all.get(n).unwrap_or_else(|| panic!("block {lblk} of {dir} has {} records", all.len()));
    write_at(img, at + 4, &5u16.to_le_bytes());
}

#[test]
fn linear_directory_with_a_bad_record_length() {
    let mut ino = 0;
    let damage = |img: &Path| {
        ino = inum(img, "/big");
        break_record(img, "/big", 1, 20);
    };
    let log = case(LINEAR, damage, &[]);
    let report = format!("directory {ino} block 1: bad entry at offset");
    assert!(log.contains(&report), "the log says {report:?}:\n{log}");
}

#[test]
fn htree_directory_with_a_bad_record_length() {
    case(NOCSUM, |img| break_record(img, "/big", 2, 20), &[]);
}

#[test]
fn single_block_directory_with_a_bad_record_length() {
    case(LINEAR, |img| break_record(img, "/victims", 0, 5), &[]);
}

/// The last record of a block claims more than the block holds.
#[test]
fn directory_block_with_an_overrunning_tail() {
    case(
        LINEAR,
        |img| {
            let block = bmap(img, "/big", 1);
            let bs = block_size(img);
            let data = read_at(img, block * bs, bs as usize);
            let mut pos = 0usize;
            loop {
                let rec_len = usize::from(u16::from_le_bytes([data[pos + 4], data[pos + 5]]));
                if pos + rec_len >= data.len() {
                    write_at(img, block * bs + pos as u64 + 4, &((rec_len + 8) as u16).to_le_bytes());
                    break;
                }
                pos += rec_len;
            }
        },
        &[],
    );
}

#[test]
fn zeroed_block_in_a_linear_directory() {
    case(
        LINEAR,
        |img| debugfs(img, "zap_block -f /big 1").truncate(0),
        &[Known {
            path: "/big/*",
            what: "lstat",
            kind: Kind::More,
            reason: "the kernel's linear lookup (ext4_search_dir) gives up at the zeroed block, so the names \
                 it lists from the blocks after it cannot be looked up; fshost's lookup skips the damaged \
                 block as listing does",
        }],
    );
}

#[test]
fn zeroed_leaf_in_an_htree_directory() {
    case(NOCSUM, |img| debugfs(img, "zap_block -f /big 2").truncate(0), &[]);
}

/// Marks the first extent in `path`'s inode unwritten (ee_len + 32768).
fn mark_unwritten(img: &Path, path: &str) {
    let out = debugfs(img, &format!("imap {path}"));
    let field = |key: &str| {
        out.split(key).nth(1).and_then(|s| s.split(|c: char| c == ',' || c.is_whitespace()).next()).map(str::to_owned)
    };
    let block: u64 = field("located at block ").and_then(|b| b.parse().ok()).expect("imap block");
    let offset = field("offset 0x").and_then(|o| u64::from_str_radix(&o, 16).ok()).expect("imap offset");
    let at = block * block_size(img) + offset + 0x28 + 16; // i_block[4]
    let word = u32::from_le_bytes(read_at(img, at, 4).try_into().expect("4 bytes"));
    assert!(word & 0xffff <= 32768, "{path}: first extent already unwritten");
    debugfs(img, &format!("set_inode_field {path} block[4] {:#x}", word + 32768));
}

#[test]
fn directory_whose_blocks_are_unwritten() {
    case(LINEAR, |img| mark_unwritten(img, "/big"), &[]);
}

#[test]
fn hole_in_a_linear_directory() {
    case(LINEAR, |img| debugfs(img, "punch /big 1 1").truncate(0), &[]);
}

#[test]
fn directory_block_with_a_bad_checksum() {
    case(
        CSUM,
        |img| debugfs(img, "zap_block -f /big -o 100 -l 1 -p 0x58 2").truncate(0),
        &[Known {
            path: "/big",
            what: "readdir",
            kind: Kind::More,
            reason: "the kernel's htree readdir (ext4_dx_readdir) fails the whole listing with EBADMSG at a leaf \
                 whose checksum is bad; fshost skips that block, as the kernel's linear readdir does, and \
                 lists the rest",
        }],
    );
}

#[test]
fn htree_root_with_a_bad_hash_version() {
    case(NOCSUM, |img| debugfs(img, "zap_block -f /big -o 28 -l 1 -p 0x09 0").truncate(0), &[]);
}

// ---------------------------------------------------------------------
// Group descriptors, bitmaps, superblock counters: tolerated read-only.

#[test]
fn group_descriptor_with_a_bad_checksum() {
    case(CSUM, |img| debugfs(img, "set_bg 0 checksum 0xbeef").truncate(0), &[]);
}

#[test]
fn group_descriptor_with_a_bad_crc16() {
    case(
        &["-b", "4096", "-g", "8192", "-O", "^metadata_csum,uninit_bg"],
        |img| debugfs(img, "set_bg 0 checksum 0xbeef").truncate(0),
        &[],
    );
}

#[test]
fn group_descriptor_with_a_bitmap_outside_the_filesystem() {
    case(
        CSUM,
        |img| debugfs(img, "set_bg 1 block_bitmap 99999999").truncate(0),
        &[Known {
            path: "/",
            what: "mount",
            kind: Kind::More,
            reason: "the kernel's ext4_check_descriptors refuses any mount whose descriptors place a bitmap \
                 or inode table outside the filesystem; a read-only fshost never reads bitmaps and checks \
                 each inode table when an inode of its group is read",
        }],
    );
}

#[test]
fn block_bitmap_with_a_bad_checksum() {
    case(
        CSUM,
        |img| {
            let out = debugfs(img, "stats");
            let bitmap = out
                .split("block bitmap at ")
                .nth(1)
                .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<u64>().ok())
                .expect("debugfs stats shows group 0's block bitmap");
            debugfs(img, &format!("zap_block -o 4000 -l 8 -p 0xff {bitmap}"));
        },
        &[],
    );
}

#[test]
fn inode_bitmap_with_a_bad_checksum() {
    case(
        CSUM,
        |img| {
            let out = debugfs(img, "stats");
            let bitmap = out
                .split("inode bitmap at ")
                .nth(1)
                .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<u64>().ok())
                .expect("debugfs stats shows group 0's inode bitmap");
            debugfs(img, &format!("zap_block -o 1000 -l 8 -p 0xff {bitmap}"));
        },
        &[],
    );
}

#[test]
fn uninit_flags_that_contradict_the_counts() {
    case(
        CSUM,
        |img| {
            // INODE_UNINIT and BLOCK_UNINIT on the group holding the root.
            debugfs(img, "set_bg 0 flags 3");
            debugfs(img, "set_bg 0 itable_unused 8000");
            debugfs(img, "set_bg 0 checksum calc");
        },
        &[],
    );
}

#[test]
fn superblock_counters_that_contradict_the_groups() {
    case(
        CSUM,
        |img| {
            debugfs(img, "set_super_value free_blocks_count 3");
            debugfs(img, "set_super_value free_inodes_count 5");
        },
        &[],
    );
}

// ---------------------------------------------------------------------
// File contents, symlinks, xattrs.

#[test]
fn extent_block_with_a_bad_checksum() {
    case(
        CSUM,
        |img| debugfs(img, &format!("zap_block -o 200 -l 4 -p 0x33 {}", extent_leaf(img, "/plain/frag"))).truncate(0),
        &[],
    );
}

#[test]
fn extent_block_with_a_bad_magic() {
    case(
        NOCSUM,
        |img| debugfs(img, &format!("zap_block -o 0 -l 2 -p 0 {}", extent_leaf(img, "/plain/frag"))).truncate(0),
        &[],
    );
}

/// The block of the extent tree's first leaf under `path`'s inode (the
/// index entry debugfs prints at level 0 of 1).
fn extent_leaf(img: &Path, path: &str) -> u64 {
    let out = debugfs(img, &format!("ex {path}"));
    out.lines()
        .find(|l| l.trim_start().starts_with("0/ 1"))
        .and_then(|l| l.split_whitespace().rev().nth(1))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no extent leaf in {out}"))
}

#[test]
fn in_inode_xattr_with_a_value_outside_the_inode() {
    case(
        NOCSUM,
        |img| {
            let out = debugfs(img, "imap /plain/xattr-small");
            let field =
                |key: &str| out.split(key).nth(1).and_then(|s| s.split(|c: char| c == ',' || c.is_whitespace()).next());
            let block: u64 = field("located at block ").and_then(|b| b.parse().ok()).expect("imap block");
            let offset = field("offset 0x").and_then(|o| u64::from_str_radix(o, 16).ok()).expect("imap offset");
            // 128 + extra_isize (32): the magic, then the first entry; its
            // e_value_offs is 2 bytes in.
            write_at(img, block * block_size(img) + offset + 128 + 32 + 4 + 2, &0xfff0u16.to_le_bytes());
        },
        &[Known {
            path: "/plain/xattr-small",
            what: "lstat",
            kind: Kind::More,
            reason: "the kernel's iget checks the in-inode xattrs (xattr_check_inode) and refuses the inode \
                     (EUCLEAN); fshost checks them when they are read, so stat shows the inode and \
                     listxattr fails",
        }],
    );
}

#[test]
fn fast_symlink_flagged_extents() {
    case(CSUM, |img| debugfs(img, "set_inode_field /plain/fast flags 0x80000").truncate(0), &[]);
}

#[test]
fn xattr_block_with_a_bad_checksum() {
    case(
        CSUM,
        |img| {
            let out = debugfs(img, "stat /plain/xattr-block");
            let block = out
                .split("File ACL: ")
                .nth(1)
                .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no xattr block in {out}"));
            debugfs(img, &format!("zap_block -o 3000 -l 4 -p 0x44 {block}"));
        },
        &[],
    );
}

#[test]
fn slow_symlink_with_a_zeroed_block() {
    case(
        CSUM,
        |img| debugfs(img, "zap_block -f /plain/slow 0").truncate(0),
        &[Known {
            path: "/plain/slow",
            what: "readlink",
            kind: Kind::Less,
            reason: "the kernel shows a symlink whose block is zeros as an empty target; the host refuses empty \
                 targets from any guest (the contract's validation, tested with the evil guest), so the \
                 ext4 guest reports the damage, EUCLEAN; no byte of a target is lost",
        }],
    );
}

#[test]
fn symlink_larger_than_a_block() {
    case(
        NOCSUM,
        |img| debugfs(img, "set_inode_field /plain/slow size 0x7fff0000").truncate(0),
        &[Known {
            path: "/plain/slow",
            what: "lstat",
            kind: Kind::Less,
            reason: "the kernel shows a symlink's i_size as is, however large; the contract's size of a symlink \
                 is its target's length (the host refuses more than 64 KiB, which cost the whole listing \
                 of the directory before), and a target is at most a block, so the guest reports the \
                 inode damaged (EUCLEAN) and only its stat fails",
        }],
    );
}

#[test]
fn fast_symlink_whose_size_passes_its_target() {
    case(
        CSUM,
        |img| debugfs(img, "set_inode_field /plain/fast size 40").truncate(0),
        &[Known {
            path: "/plain/fast",
            what: "lstat",
            kind: Kind::More,
            reason: "the kernel's iget refuses a fast symlink whose size is not its target's length (EUCLEAN); \
                 fshost shows the inode and the target up to its first NUL, which is what is on disk",
        }],
    );
}

#[test]
fn file_whose_extent_points_outside_the_filesystem() {
    case(
        CSUM,
        |img| {
            // i_block[5] is ee_start_lo of the first extent in the inode.
            debugfs(img, "set_inode_field /plain/small.txt block[5] 0x7fffffff");
        },
        &[Known {
            path: "/plain/small.txt",
            what: "lstat",
            kind: Kind::More,
            reason: "the kernel's iget checks the extent root in the inode and refuses the inode (EUCLEAN); \
                     fshost checks extents when the file is read, so stat shows the inode and a read \
                     fails (EIO, as the kernel's read of a damaged extent tree)",
        }],
    );
}

#[test]
fn truncated_image() {
    case(
        CSUM,
        |img| {
            let f = OpenOptions::new().write(true).open(img).expect("open image");
            f.set_len(40 << 20).expect("truncate");
        },
        &[],
    );
}

// ---------------------------------------------------------------------
// Encrypted directories, seen without their key.

/// `FS_IOC_ADD_ENCRYPTION_KEY` and `FS_IOC_SET_ENCRYPTION_POLICY`.
const ADD_KEY: u64 = 0xC050_6617;
const SET_POLICY: u64 = 0x800C_6613;

fn ioctl(file: &File, request: u64, arg: *mut u8) {
    use std::os::fd::AsRawFd;
    // SAFETY: `arg` points to a buffer of the size `request` encodes (or,
    // for SET_POLICY, the v2 policy the kernel reads after its version).
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request as libc::Ioctl, arg) };
    assert_eq!(rc, 0, "ioctl {request:#x}: {}", std::io::Error::last_os_error());
}

/// Makes `/enc` an encrypted directory (an fscrypt v2 policy, AES-256-XTS
/// and AES-256-CTS) through a read-write kernel mount and fills it: names
/// short and long (past the 149 bytes a no-key name carries whole), a
/// subdirectory, fast and slow symlinks, enough names for an htree. The key
/// leaves with the mount, so every later mount sees the directory locked.
fn encrypt(img: &Path) {
    let mount = KernelMount::read_write(img, "").expect("mount the image read-write");
    let root = mount.path();
    let enc = root.join("enc");
    fs::create_dir(&enc).expect("mkdir enc");
    let mut arg = vec![0u8; 80 + 64];
    arg[0] = 2; // FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER
    arg[40] = 64; // raw_size
    for (i, b) in arg[80..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    ioctl(&File::open(root).expect("open root"), ADD_KEY, arg.as_mut_ptr());
    let mut policy = vec![2u8, 1, 4, 0, 0, 0, 0, 0];
    policy.extend_from_slice(&arg[8..24]);
    ioctl(&File::open(&enc).expect("open enc"), SET_POLICY, policy.as_mut_ptr());
    write(&enc.join("short"), b"secret\n");
    write(&enc.join("x".repeat(200)), b"long name\n");
    fs::create_dir(enc.join("sub")).expect("mkdir");
    write(&enc.join("sub/inner"), b"inner secret\n");
    std::os::unix::fs::symlink("short", enc.join("fast-link")).expect("symlink");
    std::os::unix::fs::symlink("t".repeat(300), enc.join("slow-link")).expect("symlink");
    for i in 0..100 {
        write(&enc.join(big_name(i)), b"e\n");
    }
}

#[test]
fn encrypted_directory_without_its_key() {
    case(
        &["-b", "4096", "-g", "8192", "-O", "encrypt"],
        encrypt,
        &[Known {
            path: "/enc/*",
            what: "open",
            kind: Kind::More,
            reason: "the kernel's open of an encrypted file without its key fails with ENOKEY; fshost's \
                 opens never reach the guest (zero-message opens), so the open succeeds and a read \
                 fails with ENOKEY",
        }],
    );
}

// ---------------------------------------------------------------------
// Random damage.

/// xorshift64*: a tiny seeded generator.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// Bytes flipped at random in the metadata of an image without checksums
/// (so no damage hides behind a checksum failure): inodes in use, directory
/// blocks, an extent leaf, an xattr block. Whatever the kernel shows,
/// fshost must show: no `Less` or `Different` difference, no errno
/// difference at all. `FSHOST_DAMAGE_CASES` (default 16) and
/// `FSHOST_DAMAGE_SEED` for longer runs; a failure names the seed and the
/// bytes flipped.
#[test]
fn random_damage_never_shows_less() {
    require_root();
    let cases: u64 = std::env::var("FSHOST_DAMAGE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let seed: u64 = std::env::var("FSHOST_DAMAGE_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed);
    let base = Image::mkfs(tree(), NOCSUM, "64M").expect("mkfs.ext4");
    let status = Command::new("e2fsck").arg("-fyD").arg(base.path()).output().expect("e2fsck").status;
    assert!(matches!(status.code(), Some(0 | 1)), "e2fsck -fyD: {status}");
    let img = base.path();
    let bs = block_size(img);
    // Regions as (first byte, length).
    let mut regions = Vec::new();
    for path in ["/victims", "/plain", "/plain/sub", "/victims/dir"] {
        regions.push((bmap(img, path, 0) * bs, bs));
    }
    for lblk in 0..3 {
        regions.push((bmap(img, "/big", lblk) * bs, bs));
    }
    regions.push((extent_leaf(img, "/plain/frag") * bs, bs));
    let stat = debugfs(img, "stat /plain/xattr-block");
    let acl: Option<u64> =
        stat.split("File ACL: ").nth(1).and_then(|s| s.split_whitespace().next()).and_then(|n| n.parse().ok());
    regions.push((acl.expect("an xattr block") * bs, bs));
    for path in ["/victims/c", "/plain/fast", "/plain/slow", "/plain/frag", "/plain/xattr-small", "/victims/dir"] {
        let out = debugfs(img, &format!("imap {path}"));
        let field = |key: &str| out.split(key).nth(1).and_then(|s| s.split([',', ' ', '\n']).next());
        let block: u64 = field("located at block ").and_then(|b| b.parse().ok()).expect("imap block");
        let offset = field("offset 0x").and_then(|o| u64::from_str_radix(o, 16).ok()).expect("imap offset");
        regions.push((block * bs + offset, 256));
    }
    let mut rng = Rng(seed);
    let mut failures = Vec::new();
    // FSHOST_DAMAGE_BYTES="OFFSET=BYTE ...": replay one failure, verbosely.
    let replay = std::env::var("FSHOST_DAMAGE_BYTES").ok();
    let cases = if replay.is_some() { 1 } else { cases };
    for case in 0..cases {
        let image = base.copy().expect("copy the image");
        let mut flipped = Vec::new();
        if let Some(bytes) = &replay {
            for pair in bytes.split_whitespace() {
                let (at, byte) = pair.split_once('=').expect("OFFSET=BYTE");
                let byte = u8::from_str_radix(byte.trim_start_matches("0x"), 16).expect("a hex byte");
                write_at(image.path(), at.parse().expect("an offset"), &[byte]);
                flipped.push(pair.to_string());
            }
        } else {
            let (start, len) = regions[rng.below(regions.len() as u64) as usize];
            for _ in 0..=rng.below(3) {
                let at = start + rng.below(len);
                let byte = read_at(image.path(), at, 1)[0] ^ (1 + rng.below(255)) as u8;
                write_at(image.path(), at, &[byte]);
                flipped.push(format!("{at}={byte:#04x}"));
            }
        }
        let (diffs, log) = differences(&image);
        if replay.is_some() {
            eprintln!("regions: {regions:?}\ndifferences:");
            for d in &diffs {
                eprintln!("  [{:?}] {d}", classify(d));
            }
            eprintln!("fshost's log:\n{log}");
        }
        let bad: Vec<String> = diffs
            .iter()
            .filter(|d| match classify(d) {
                // "." and ".." are the host's (the contract's guests do not
                // list them): their d_ino is the directory's and its parent's,
                // where the kernel's htree readdir copies the records' numbers
                // unchecked, damaged or not.
                _ if d.what == "d_ino" && (d.path.ends_with("/.") || d.path.ends_with("/..")) => false,
                // A damaged record naming the root (2) under another name: its
                // node id is FUSE's root node, 1, which getdents shows as d_ino.
                _ if d.what == "d_ino" && d.detail == "2 vs 1" => false,
                Kind::More | Kind::Same => false,
                // ext4's extra time fields hold nanoseconds up to 2^30 - 1,
                // which the kernel shows as is; the contract's timestamps
                // are normalised (< 10^9), so the guest clamps them.
                Kind::Different if d.what.ends_with("time_nsec") && d.detail.ends_with(" vs 999999999") => false,
                // A symlink larger than a block (symlink_larger_than_a_block).
                Kind::Less if d.what == "lstat" && log.contains("is more than a block") => false,
                // The one deliberate `Less` (slow_symlink_with_a_zeroed_block).
                Kind::Less if d.what == "readlink" && log.contains("empty target") => false,
                Kind::Errno => true,
                Kind::Less | Kind::Different => true,
            })
            .map(|d| format!("    [{:?}] {d}", classify(d)))
            .collect();
        if !bad.is_empty() {
            failures.push(format!("  case {case} (bytes {}):\n{}", flipped.join(" "), bad.join("\n")));
        }
    }
    assert!(
        failures.is_empty(),
        "seed {seed}: {} of {cases} damaged images show less:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
