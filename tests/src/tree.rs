//! The directory tree that the kernel-differential tests put into every
//! ext4 image: one of each thing an ext4 reader can get wrong.
//!
//! It comes in two halves, because `mkfs.ext4 -d` (e2fsprogs 1.47.0) cannot
//! carry everything into an image:
//!
//! * [`SourceTree::build`] makes a real directory that `mkfs.ext4 -d` copies:
//!   file sizes on 1K/4K block and indirect-map boundaries, sparse and
//!   many-extent files, fast/slow/dangling/absolute symlinks, hard links
//!   across directories, devices with large major/minor, fifos, sockets,
//!   small xattrs in every namespace, POSIX ACLs, a multi-block linear
//!   directory, a 40-deep path, non-UTF-8 and 255-byte names, odd owners and
//!   modes, empty files and directories.
//! * [`complete_in_image`] runs on the image mounted read-write by the
//!   kernel and adds what mkfs cannot write: nanosecond and post-2038
//!   timestamps (mkfs drops both), xattr values over ~1 KiB (libext2fs
//!   refuses them), xattr blocks shared between inodes, unwritten
//!   (fallocated) extents, kernel-allocated extent trees, and a 20,000-entry
//!   directory with long names so the kernel builds a two-level htree.
//!
//! Every byte of file data comes from [`pattern`], so a block read from the
//! wrong place never looks right by accident.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, ensure};

use crate::scratch::{ScratchDir, c_path};

/// How big a tree to build. `Light` is for 1 KiB-block images, whose
/// symlinks cannot exceed 1023 bytes, and for variants that are slow anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeSize {
    Full,
    Light,
}

/// The numbers that differ between the two sizes.
struct Knobs {
    big_file: u64,
    sparse_file: u64,
    fragments: u64,
    longest_symlink: usize,
    /// Entries in the mkfs-made (multi-block, unindexed) directory.
    mkfs_dir_entries: usize,
    /// Entries in the kernel-made (htree) directory.
    kernel_dir_entries: usize,
}

impl TreeSize {
    fn knobs(self) -> Knobs {
        match self {
            TreeSize::Full => Knobs {
                big_file: 20 << 20,
                sparse_file: 100_000_000,
                fragments: 1500,
                longest_symlink: 4000,
                mkfs_dir_entries: 2500,
                kernel_dir_entries: 20_000,
            },
            TreeSize::Light => Knobs {
                big_file: 4 << 20,
                sparse_file: 100_000_000,
                fragments: 300,
                longest_symlink: 1000,
                mkfs_dir_entries: 1000,
                kernel_dir_entries: 5000,
            },
        }
    }
}

/// A built source tree in a scratch directory, removed on drop.
#[derive(Debug)]
pub struct SourceTree {
    dir: ScratchDir,
    size: TreeSize,
}

impl SourceTree {
    /// Builds the tree. Needs root (devices, owners, trusted.* xattrs).
    pub fn build(size: TreeSize) -> anyhow::Result<SourceTree> {
        let dir = ScratchDir::new("tree")?;
        let root = dir.path().join("root");
        fs::create_dir(&root).with_context(|| format!("mkdir {}", root.display()))?;
        populate(&root, &size.knobs()).with_context(|| format!("building the source tree in {}", root.display()))?;
        Ok(SourceTree { dir, size })
    }

    /// The directory to hand to `mkfs.ext4 -d`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn size(&self) -> TreeSize {
        self.size
    }
}

static FULL: OnceLock<SourceTree> = OnceLock::new();
static LIGHT: OnceLock<SourceTree> = OnceLock::new();

/// One tree of each size per test process, built on first use and removed
/// when the process exits (statics are never dropped, so an atexit hook
/// does it).
pub fn shared(size: TreeSize) -> &'static SourceTree {
    let cell = match size {
        TreeSize::Full => &FULL,
        TreeSize::Light => &LIGHT,
    };
    cell.get_or_init(|| {
        static HOOK: OnceLock<()> = OnceLock::new();
        HOOK.get_or_init(|| {
            // SAFETY: registering a plain extern "C" fn with no captured state.
            unsafe { libc::atexit(remove_shared_trees) };
        });
        match SourceTree::build(size) {
            Ok(tree) => tree,
            Err(err) => panic!("cannot build the {size:?} source tree: {err:#}"),
        }
    })
}

extern "C" fn remove_shared_trees() {
    for cell in [&FULL, &LIGHT] {
        if let Some(tree) = cell.get() {
            let _ = fs::remove_dir_all(tree.dir.path());
        }
    }
}

/// Deterministic pseudo-random bytes: the content at byte `offset` of a
/// file seeded with `seed` (splitmix64 over 8-byte words).
pub fn pattern(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let first_word = offset / 8;
    let skip = (offset % 8) as usize;
    let mut out = Vec::with_capacity(len + 16);
    let mut word = first_word;
    while out.len() < len + skip {
        let mut z = seed.wrapping_add(word.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
        word += 1;
    }
    out.drain(..skip);
    out.truncate(len);
    out
}

/// Writes `len` pattern bytes at `offset` of `path` (created if missing,
/// never truncated), in 1 MiB pieces.
fn write_pattern(path: &Path, seed: u64, offset: u64, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
    let mut done = 0;
    while done < len {
        let piece = (len - done).min(1 << 20);
        file.write_all_at(&pattern(seed, offset + done, piece as usize), offset + done)?;
        done += piece;
    }
    Ok(())
}

fn set_len(path: &Path, len: u64) -> io::Result<()> {
    OpenOptions::new().write(true).create(true).truncate(false).open(path)?.set_len(len)
}

fn mkdirs(path: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(path).with_context(|| format!("mkdir -p {}", path.display()))
}

fn symlink(target: impl AsRef<Path>, link: &Path) -> anyhow::Result<()> {
    std::os::unix::fs::symlink(target.as_ref(), link).with_context(|| format!("symlink {}", link.display()))
}

fn hard_link(existing: &Path, new: &Path) -> anyhow::Result<()> {
    // std's hard_link uses linkat without AT_SYMLINK_FOLLOW on Linux, so a
    // symlink is linked itself, not its target.
    fs::hard_link(existing, new).with_context(|| format!("link {} -> {}", new.display(), existing.display()))
}

fn mknod(path: &Path, kind: libc::mode_t, major: u32, minor: u32) -> anyhow::Result<()> {
    let c = c_path(path)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    let rc = unsafe { libc::mknod(c.as_ptr(), kind | 0o640, libc::makedev(major, minor)) };
    if rc != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("mknod {}", path.display()));
    }
    Ok(())
}

/// Sets an xattr on `path` itself (never following a symlink).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> anyhow::Result<()> {
    lsetxattr(path, name, value).with_context(|| format!("setxattr {name} on {}", path.display()))
}

fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c = c_path(path)?;
    let n = std::ffi::CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    // SAFETY: valid C strings and a buffer of the given length.
    let rc = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A timestamp as utimensat takes it.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub sec: i64,
    pub nsec: u32,
}

const fn at(sec: i64, nsec: u32) -> Stamp {
    Stamp { sec, nsec }
}

/// Sets atime and mtime of `path` itself (not a symlink's target).
pub fn set_times(path: &Path, atime: Stamp, mtime: Stamp) -> anyhow::Result<()> {
    let c = c_path(path)?;
    let times = [
        libc::timespec { tv_sec: atime.sec, tv_nsec: atime.nsec.into() },
        libc::timespec { tv_sec: mtime.sec, tv_nsec: mtime.nsec.into() },
    ];
    // SAFETY: valid C string and a two-element timespec array.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if rc != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("utimensat {}", path.display()));
    }
    Ok(())
}

/// Timestamps at the edges of what ext4 can store: i32 seconds, the extra
/// epoch bits (up to 2446-05-10 22:38:55), nanoseconds, negative times with
/// nanoseconds. Set on the source tree (which mkfs truncates) and again by
/// the kernel in the image. (path, atime, mtime).
const SPECIAL_TIMES: &[(&str, Stamp, Stamp)] = &[
    ("times/1901-12-14", at(-2_147_472_000, 0), at(-2_147_472_000, 1)),
    ("times/1969-07-20", at(-14_182_940, 123_456_789), at(-14_182_940, 123_456_789)),
    ("times/epoch", at(0, 0), at(0, 0)),
    ("times/minus-one", at(-1, 999_999_999), at(-1, 999_999_999)),
    ("times/2038-last", at(2_147_483_647, 999_999_999), at(2_147_483_647, 999_999_999)),
    ("times/2038-after", at(2_147_483_648, 0), at(2_147_483_648, 1)),
    ("times/2100-01-01", at(4_102_444_800, 500_000_000), at(4_102_444_800, 500_000_000)),
    ("times/2446-05-10", at(15_032_304_000, 999_999_999), at(15_032_304_000, 999_999_999)),
    ("times/2446-last", at(15_032_385_535, 0), at(15_032_385_535, 999_999_999)),
    ("times/atime-1969-mtime-2100", at(-14_182_940, 1), at(4_102_444_800, 2)),
    ("times/symlink-1969", at(-14_182_940, 5), at(-14_182_940, 6)),
    ("times/dir-2100", at(4_102_444_800, 7), at(4_102_444_800, 8)),
    ("times", at(1_000_000_000, 9), at(1_000_000_000, 10)),
];

fn apply_special_times(root: &Path) -> anyhow::Result<()> {
    for (path, atime, mtime) in SPECIAL_TIMES {
        set_times(&root.join(path), *atime, *mtime)?;
    }
    Ok(())
}

fn populate(root: &Path, knobs: &Knobs) -> anyhow::Result<()> {
    files(&root.join("files"), knobs)?;
    sparse(&root.join("sparse"), knobs)?;
    symlinks(&root.join("symlinks"), knobs)?;
    hard_links(root)?;
    specials(&root.join("special"))?;
    xattrs(&root.join("xattrs"))?;
    acls(&root.join("acl"))?;
    big_dir(&root.join("bigdir"), knobs.mkfs_dir_entries)?;
    deep(&root.join("deep"))?;
    names(&root.join("names"))?;
    empties(root)?;
    times(&root.join("times"))?;
    // Owners and modes last: chown clears setuid bits, and a mode-000
    // directory must not need writing into afterwards (root would not
    // care, but this keeps the order honest).
    owners(&root.join("owners"))?;
    modes(&root.join("modes"))?;
    apply_special_times(root)
}

/// Regular files whose sizes sit on the boundaries that matter: inline data
/// (60 bytes of i_block, ~160 with in-inode xattr space), 1K and 4K blocks,
/// the 12 direct blocks and the single-indirect range for both block sizes.
fn files(dir: &Path, knobs: &Knobs) -> anyhow::Result<()> {
    mkdirs(dir)?;
    let k = 1024u64;
    let sizes = [
        0,
        1,
        59,
        60,
        61,
        100,
        150,
        160,
        511,
        512,
        1023,
        1024,
        1025,
        2047,
        2048,
        2049,
        4095,
        4096,
        4097,
        8191,
        8192,
        8193,
        12 * k - 1,
        12 * k,
        12 * k + 1,
        48 * k - 1,
        48 * k,
        48 * k + 1,
        268 * k - 1,
        268 * k,
        268 * k + 1,
        (1 << 20) + 1,
        4144 * k - 1,
        4144 * k,
        4144 * k + 1,
    ];
    for (i, size) in sizes.into_iter().enumerate() {
        let path = dir.join(format!("size-{size}"));
        write_pattern(&path, 1000 + i as u64, 0, size)?;
    }
    write_pattern(&dir.join("big"), 7, 0, knobs.big_file)?;
    // All-zero data: mkfs stores no blocks for it, so it reads as a hole.
    fs::write(dir.join("zeros-64k"), vec![0u8; 64 << 10])?;
    File::create(dir.join("empty"))?;
    Ok(())
}

/// Holes at the start, middle and end, a file that is all hole, unaligned
/// data, and a large sparse file with islands just past each indirect-map
/// boundary (1K: 12, 268, 65804 blocks; 4K: 12, 1036 blocks).
fn sparse(dir: &Path, knobs: &Knobs) -> anyhow::Result<()> {
    mkdirs(dir)?;
    let mib = 1u64 << 20;
    write_pattern(&dir.join("hole-start"), 20, mib, 8192)?;
    write_pattern(&dir.join("hole-middle"), 21, 0, 8192)?;
    write_pattern(&dir.join("hole-middle"), 22, mib, 8192)?;
    write_pattern(&dir.join("hole-end"), 23, 0, 8192)?;
    set_len(&dir.join("hole-end"), mib + 100)?;
    set_len(&dir.join("all-hole"), 10 * mib)?;
    write_pattern(&dir.join("unaligned"), 24, 100, 100)?;
    write_pattern(&dir.join("unaligned"), 25, mib + 5, 5000)?;

    let islands = dir.join("islands");
    let k = 1024u64;
    for (i, offset) in [0, 12 * k, 48 * k, 268 * k, 4144 * k, 65804 * k, 67_383_296 + 3000, knobs.sparse_file - 5000]
        .into_iter()
        .enumerate()
    {
        write_pattern(&islands, 30 + i as u64, offset, 4096 + i as u64 * 1000)?;
    }
    set_len(&islands, knobs.sparse_file)?;

    // One 4 KiB data block every 8 KiB: one extent per block, enough to need
    // an extent tree of depth 1 (or 2 for the full tree on 1K blocks).
    let fragments = File::create(dir.join("fragments"))?;
    for i in 0..knobs.fragments {
        fragments.write_all_at(&pattern(40, i * 8192, 4096), i * 8192)?;
    }
    Ok(())
}

fn symlinks(dir: &Path, knobs: &Knobs) -> anyhow::Result<()> {
    mkdirs(dir)?;
    symlink("../files/size-1", &dir.join("fast"))?;
    symlink("x".repeat(59), &dir.join("fast-59"))?; // the longest that fits in i_block
    symlink("y".repeat(60), &dir.join("slow-60"))?;
    symlink("z".repeat(61), &dir.join("slow-61"))?;
    let long: String = (0..knobs.longest_symlink).map(|i| if i % 10 == 9 { '/' } else { 'a' }).collect();
    symlink(&long, &dir.join("slow-longest"))?;
    symlink("does/not/exist", &dir.join("dangling"))?;
    symlink("/etc/passwd", &dir.join("absolute"))?;
    symlink("../files", &dir.join("to-dir"))?;
    symlink("loop", &dir.join("loop"))?;
    symlink(std::ffi::OsStr::from_bytes(b"caf\xe9/\xff\xfe"), &dir.join("non-utf8-target"))?;
    Ok(())
}

/// Several names for one inode, across directories, for a file, a symlink
/// and a fifo.
fn hard_links(root: &Path) -> anyhow::Result<()> {
    let dir = root.join("hardlinks");
    mkdirs(&dir.join("sub"))?;
    mkdirs(&root.join("elsewhere"))?;
    write_pattern(&dir.join("a"), 50, 0, 5000)?;
    hard_link(&dir.join("a"), &dir.join("b"))?;
    hard_link(&dir.join("a"), &dir.join("sub/c"))?;
    hard_link(&dir.join("a"), &root.join("elsewhere/d"))?;
    symlink("a", &dir.join("symlink"))?;
    hard_link(&dir.join("symlink"), &dir.join("symlink-2"))?;
    let c = c_path(&dir.join("fifo"))?;
    // SAFETY: valid C string.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o644) } != 0 {
        return Err(io::Error::last_os_error()).context("mkfifo hardlinks/fifo");
    }
    hard_link(&dir.join("fifo"), &dir.join("sub/fifo-2"))?;
    Ok(())
}

fn specials(dir: &Path) -> anyhow::Result<()> {
    mkdirs(dir)?;
    mknod(&dir.join("char-259-300000"), libc::S_IFCHR, 259, 300_000)?;
    mknod(&dir.join("char-1-3"), libc::S_IFCHR, 1, 3)?;
    mknod(&dir.join("char-max"), libc::S_IFCHR, 4095, (1 << 20) - 1)?;
    mknod(&dir.join("block-8-1"), libc::S_IFBLK, 8, 1)?;
    mknod(&dir.join("block-259-65536"), libc::S_IFBLK, 259, 65536)?;
    mknod(&dir.join("char-0-0"), libc::S_IFCHR, 0, 0)?;
    let c = c_path(&dir.join("fifo"))?;
    // SAFETY: valid C string.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error()).context("mkfifo special/fifo");
    }
    // Binding creates the socket inode; dropping the listener leaves it.
    drop(std::os::unix::net::UnixListener::bind(dir.join("socket")).context("bind special/socket")?);
    Ok(())
}

/// Small xattrs only: libext2fs 1.47.0 rejects an inode whose xattrs pass
/// about 1 KiB, so the big ones are added by [`complete_in_image`].
fn xattrs(dir: &Path) -> anyhow::Result<()> {
    mkdirs(dir)?;
    let file = |name: &str| -> anyhow::Result<PathBuf> {
        let path = dir.join(name);
        write_pattern(&path, 60, 0, 100)?;
        Ok(path)
    };
    set_xattr(&file("small")?, "user.small", b"v")?;
    set_xattr(&file("empty-value")?, "user.empty", b"")?;
    let several = file("several")?;
    for i in 0..5 {
        set_xattr(&several, &format!("user.value{i}"), &pattern(61 + i, 0, 100 + i as usize * 10))?;
    }
    let binary: Vec<u8> = (0..=255).collect();
    set_xattr(&file("binary")?, "user.binary", &binary)?;
    let namespaces = file("namespaces")?;
    set_xattr(&namespaces, "trusted.t", b"trusted value")?;
    set_xattr(&namespaces, "security.s", b"security value")?;
    set_xattr(&namespaces, "user.u", b"user value")?;
    set_xattr(&file("long-name")?, &format!("user.{}", "n".repeat(250)), b"long name")?;
    mkdirs(&dir.join("dir"))?;
    set_xattr(&dir.join("dir"), "user.on-a-dir", b"d")?;
    // user.* is refused on symlinks and special files; trusted.* is not.
    symlink("small", &dir.join("symlink"))?;
    set_xattr(&dir.join("symlink"), "trusted.on-a-symlink", b"s")?;
    let c = c_path(&dir.join("fifo"))?;
    // SAFETY: valid C string.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o644) } != 0 {
        return Err(io::Error::last_os_error()).context("mkfifo xattrs/fifo");
    }
    set_xattr(&dir.join("fifo"), "trusted.on-a-fifo", b"f")?;
    Ok(())
}

fn setfacl(args: &[&str], path: &Path) -> anyhow::Result<()> {
    let status = Command::new("setfacl").args(args).arg(path).status().context("running setfacl")?;
    ensure!(status.success(), "setfacl {args:?} {} failed: {status}", path.display());
    Ok(())
}

fn acls(dir: &Path) -> anyhow::Result<()> {
    mkdirs(&dir.join("dir"))?;
    write_pattern(&dir.join("file"), 70, 0, 10)?;
    setfacl(&["-m", "u:1000:rwx,u:3000000000:r,g:2000:r-x,m:rwx"], &dir.join("file"))?;
    setfacl(&["-m", "u:1000:rwx,g:2000:rx"], &dir.join("dir"))?;
    setfacl(&["-d", "-m", "u:1000:rx,g:2000:rwx,o::-"], &dir.join("dir"))?;
    Ok(())
}

/// A directory of many entries with names of varied length. mkfs writes it
/// as a multi-block linear directory (it builds no htree); the kernel-made
/// htree directory is in [`complete_in_image`].
fn big_dir(dir: &Path, entries: usize) -> anyhow::Result<()> {
    mkdirs(dir)?;
    for i in 0..entries {
        let name = format!("entry-{i:06}-{}", "p".repeat(i % 97));
        File::create(dir.join(name))?;
    }
    Ok(())
}

fn deep(dir: &Path) -> anyhow::Result<()> {
    let mut path = dir.to_path_buf();
    for level in 0..40 {
        path.push(format!("d{level:02}"));
    }
    mkdirs(&path)?;
    write_pattern(&path.join("leaf"), 80, 0, 40)?;
    Ok(())
}

fn names(dir: &Path) -> anyhow::Result<()> {
    mkdirs(dir)?;
    let raw = |bytes: &[u8]| dir.join(std::ffi::OsStr::from_bytes(bytes));
    let high_a: Vec<u8> = (0x80..=0xbf).collect();
    let high_b: Vec<u8> = (0xc0..=0xff).collect();
    let every_byte: Vec<u8> = (1..=255u8).filter(|&b| b != b'/').collect();
    for name in [&high_a[..], &high_b, &every_byte, &[0xff; 255], b"caf\xe9", b"\xc3\x28"] {
        write_pattern(&raw(name), 90, 0, name.len() as u64)?;
    }
    let odd_dir = raw(b"dir\xfe");
    mkdirs(&odd_dir)?;
    File::create(odd_dir.join(std::ffi::OsStr::from_bytes(b"\xfd")))?;
    for name in ["h\u{e9}llo-w\u{f6}rld-\u{65e5}\u{672c}", ".hidden", "...", " ", "-", "a b\tc\nd"] {
        File::create(dir.join(name))?;
    }
    let long = "n".repeat(255);
    File::create(dir.join(&long))?;
    mkdirs(&dir.join("l".repeat(255)))?;
    File::create(dir.join("l".repeat(255)).join(&long))?;
    symlink(&long, &dir.join("s".repeat(255)))?;
    Ok(())
}

fn empties(root: &Path) -> anyhow::Result<()> {
    mkdirs(&root.join("empty"))?;
    mkdirs(&root.join("empty-nested/a/b/c"))?;
    Ok(())
}

fn times(dir: &Path) -> anyhow::Result<()> {
    mkdirs(&dir.join("dir-2100"))?;
    for (path, _, _) in SPECIAL_TIMES {
        if let Some(name) = path.strip_prefix("times/").filter(|n| !n.starts_with("dir-") && !n.starts_with("symlink"))
        {
            write_pattern(&dir.join(name), 95, 0, 10)?;
        }
    }
    symlink("2100-01-01", &dir.join("symlink-1969"))?;
    Ok(())
}

fn owners(dir: &Path) -> anyhow::Result<()> {
    mkdirs(dir)?;
    for (uid, gid) in [(0, 0), (1000, 1000), (65535, 65535), (65536, 65537), (3_000_000_000u32, 3_000_000_001u32)] {
        let path = dir.join(format!("uid-{uid}-gid-{gid}"));
        File::create(&path)?;
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
    }
    let max = dir.join("uid-4294967294");
    File::create(&max)?;
    std::os::unix::fs::lchown(&max, Some(4_294_967_294), Some(4_294_967_294))?;
    symlink("uid-0-gid-0", &dir.join("symlink-owned"))?;
    std::os::unix::fs::lchown(dir.join("symlink-owned"), Some(3_000_000_000), Some(12345))?;
    mkdirs(&dir.join("dir-owned"))?;
    std::os::unix::fs::lchown(dir.join("dir-owned"), Some(70000), Some(80000))?;
    Ok(())
}

fn modes(dir: &Path) -> anyhow::Result<()> {
    mkdirs(dir)?;
    let chmod = |path: &Path, mode: u32| {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", path.display()))
    };
    for mode in [0o000, 0o600, 0o644, 0o4755, 0o2755, 0o1755, 0o7777, 0o6711] {
        let path = dir.join(format!("file-{mode:04o}"));
        File::create(&path)?;
        chmod(&path, mode)?;
    }
    for mode in [0o1777, 0o2775, 0o700, 0o000] {
        let path = dir.join(format!("dir-{mode:04o}"));
        mkdirs(&path)?;
        File::create(path.join("inside"))?;
        chmod(&path, mode)?;
    }
    let fifo = dir.join("fifo-0000");
    let c = c_path(&fifo)?;
    // SAFETY: valid C string.
    if unsafe { libc::mkfifo(c.as_ptr(), 0) } != 0 {
        return Err(io::Error::last_os_error()).context("mkfifo modes/fifo-0000");
    }
    chmod(&fifo, 0)?;
    Ok(())
}

/// Adds, through the kernel, what `mkfs.ext4 -d` cannot put in an image
/// (see the module docs). `root` is the image mounted read-write; `size`
/// the tree the image was made from. Also gives every inode nanosecond
/// timestamps. Tolerates only EOPNOTSUPP from fallocate (no extents).
pub fn complete_in_image(root: &Path, size: TreeSize) -> anyhow::Result<()> {
    let knobs = size.knobs();
    let dir = root.join("kernel");
    mkdirs(&dir)?;
    let block_size = fs::metadata(root)?.blksize();

    // Xattrs too big for libext2fs, sized to fit one xattr block.
    let big = (block_size as usize).min(4096) * 3 / 4;
    let large = dir.join("large-xattr");
    write_pattern(&large, 100, 0, 10)?;
    set_xattr(&large, "user.large", &pattern(101, 0, big))?;
    set_xattr(&large, "user.second", &pattern(102, 0, 100))?;
    set_xattr(&large, "trusted.third", &pattern(103, 0, 30))?;
    // Identical xattr sets: the kernel shares one xattr block (refcount 2).
    for name in ["shared-xattr-1", "shared-xattr-2"] {
        let path = dir.join(name);
        write_pattern(&path, 104, 0, 10)?;
        set_xattr(&path, "user.shared", &pattern(105, 0, big / 2))?;
    }

    // With ea_inode a value larger than a block lives in its own inode;
    // without it the kernel refuses the value, and there is nothing to add.
    let huge = dir.join("huge-xattr");
    write_pattern(&huge, 106, 0, 10)?;
    match lsetxattr(&huge, "user.huge", &pattern(107, 0, 60_000)) {
        Err(err) if matches!(err.raw_os_error(), Some(libc::ENOSPC | libc::E2BIG)) => {}
        other => other.with_context(|| format!("setxattr user.huge on {}", huge.display()))?,
    }

    // Unwritten extents: allocated, reading as zeros, reported as holes.
    let fallocated = dir.join("fallocated");
    write_pattern(&fallocated, 110, 0, 8192)?;
    let file = OpenOptions::new().write(true).open(&fallocated)?;
    fallocate(&file, 0, 64 << 10, 128 << 10)?;
    file.write_all_at(&pattern(111, 100 << 10, 4096), 100 << 10)?;
    fallocate(&file, libc::FALLOC_FL_KEEP_SIZE, 256 << 10, 256 << 10)?;
    drop(file);

    // Extents allocated by the kernel's allocator: every third block.
    let written = dir.join("every-third-block");
    let file = File::create(&written)?;
    for i in 0..300u64 {
        file.write_all_at(&pattern(112, i * 3 * 4096, 4096), i * 3 * 4096)?;
    }
    drop(file);

    // A directory the kernel indexes as it grows: with ~200-byte names a
    // 4 KiB leaf holds ~19 entries, so 20,000 entries need two htree levels.
    let htree = dir.join("htree");
    mkdirs(&htree)?;
    for i in 0..knobs.kernel_dir_entries {
        let name = format!("{i:06}-{}", "h".repeat(150 + i % 99));
        if i % 1000 == 0 {
            mkdirs(&htree.join(name))?;
        } else {
            File::create(htree.join(name))?;
        }
    }

    stamp_nanoseconds(root)?;
    apply_special_times(root)
}

fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open fd.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, offset as libc::off_t, len as libc::off_t) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
            return Ok(()); // block-mapped files have no unwritten extents
        }
        return Err(err).context("fallocate");
    }
    Ok(())
}

/// Gives every entry under `root` (and `root`) an atime and mtime with
/// nanoseconds, derived from its inode number so each differs; utimensat
/// also sets ctime to now, with nanoseconds.
fn stamp_nanoseconds(root: &Path) -> anyhow::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).with_context(|| format!("lstat {}", path.display()))?;
        if meta.is_dir() {
            for entry in fs::read_dir(&path).with_context(|| format!("readdir {}", path.display()))? {
                stack.push(entry?.path());
            }
        }
        let ino = meta.ino();
        let nsec = (ino.wrapping_mul(2_654_435_761) % 1_000_000_000) as u32;
        set_times(&path, at(meta.mtime() - 86_400, nsec / 2), at(meta.mtime(), nsec))?;
    }
    Ok(())
}

/// Changes made through a `data=journal` mount just before a simulated crash
/// (see `Image::crash_with_dirty_journal`): new and renamed names, removed and
/// truncated files, overwritten and appended data, xattr, mode, owner,
/// time and link-count changes. A reader that skips journal replay shows
/// the tree without them.
pub fn change_in_journal(root: &Path) -> anyhow::Result<()> {
    let dir = root.join("journal");
    mkdirs(&dir.join("new-dir"))?;
    write_pattern(&dir.join("new-file"), 200, 0, 100 << 10)?;
    set_xattr(&dir.join("new-file"), "user.journaled", &pattern(201, 0, 500))?;
    for i in 0..50 {
        File::create(dir.join("new-dir").join(format!("entry-{i}")))?;
    }
    symlink("../hardlinks/a", &dir.join("symlink"))?;
    hard_link(&root.join("hardlinks/a"), &dir.join("link-to-a"))?;
    fs::rename(root.join("files/size-1"), root.join("files/renamed-size-1"))?;
    fs::remove_file(root.join("files/size-511"))?;
    fs::remove_dir_all(root.join("empty-nested/a/b"))?;
    write_pattern(&root.join("files/size-8192"), 202, 1000, 3000)?;
    set_len(&root.join("files/size-49153"), 100)?;
    write_pattern(&root.join("sparse/hole-end"), 203, (1 << 20) + 100, 5000)?;
    set_xattr(&root.join("xattrs/small"), "user.small", b"journaled")?;
    fs::set_permissions(root.join("modes/file-0644"), fs::Permissions::from_mode(0o640))?;
    std::os::unix::fs::lchown(root.join("owners/uid-1000-gid-1000"), Some(2000), Some(2000))?;
    set_times(&root.join("times/epoch"), at(1, 1), at(2, 2))?;
    Ok(())
}
