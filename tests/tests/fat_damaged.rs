//! Damaged FAT images: fshost against Linux's vfat, object by object.
//!
//! The rule (issue 10): on a damaged image fshost never shows less than the
//! kernel — every entry, attribute and byte the kernel's vfat shows, fshost
//! shows too — it fails one object at a time, and where both fail it
//! returns the kernel's errno. Showing more is acceptable on a read-only
//! mount when it is really on disk and safe.
//!
//! Each image is made by `mkfs.vfat` (FAT12, FAT16 and FAT32, 4 KiB
//! clusters, so a page is a cluster on both sides) and filled by `mcopy`,
//! then damaged here at offsets computed from its boot sector (parsed here,
//! not by the guest's code): one file or directory per kind of damage (see
//! [`damage`]), next to intact ones. Four more images: a FAT32 one whose
//! boot sector, FSInfo and FAT header carry what the kernel tolerates
//! ([`tolerated_bpb`]), a FAT16 one cut short in the middle of a file, and
//! two FAT32 ones whose root's chain ends at the bad-cluster marker after
//! its first cluster, or loops (both sides refuse that mount). The
//! kernel's view is taken inside user-mode Linux 6.1 (this machine's
//! kernel has no vfat; `fshost_tests::uml`), all seven images in one boot;
//! fshost's through its FUSE mount. Both sides run the same probe
//! (`fshost_tests::probe`, this test binary re-run inside UML): names and
//! d_types from readdir, lstat's fields or errno, how many bytes read
//! before the first failing read, their hash and that errno, statfs, and
//! lookups of every damaged object by name.
//!
//! What may differ is listed in [`DELIBERATE`], each with its reason; the
//! test fails when a listed difference disappears or another one appears.
//! `FAT_DAMAGED_KEEP=DIR` copies the damaged images there, to look at by
//! hand.
//!
//! Needs root (FUSE mounts) and dosfstools, mtools, user-mode-linux.
//! About 15 s, the UML boot 6 s of it.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{Context, ensure};
use fshost_tests::fshost::{FshostMount, guest};
use fshost_tests::kernel::{self, require_root};
use fshost_tests::pattern::pattern;
use fshost_tests::probe::{self, Probe};
use fshost_tests::scratch::ScratchDir;
use fshost_tests::uml;

/// A tool run in UTC, with mtools' geometry check off.
fn run(command: &mut Command) -> anyhow::Result<Output> {
    kernel::run(command.env("TZ", "UTC").env("MTOOLS_SKIP_CHECK", "1"))
}

/// The environment that makes [`probe_in_uml`] probe a tree.
const PROBE_ROOT: &str = "FAT_PROBE_ROOT";
const PROBE_OUT: &str = "FAT_PROBE_OUT";
const PROBE_NAMES: &str = "FAT_PROBE_NAMES";

/// Not a test of its own: the kernel's side of the probe. The UML init
/// runs this binary with `--exact probe_in_uml` and the three variables
/// set (the tree, the output file, the names to look up); without them it
/// does nothing.
#[test]
fn probe_in_uml() {
    let (Some(root), Some(out)) = (std::env::var_os(PROBE_ROOT), std::env::var_os(PROBE_OUT)) else { return };
    let names = std::env::var_os(PROBE_NAMES).map(|p| read_names(Path::new(&p))).unwrap_or_default();
    let probe = probe::take(Path::new(&root), &names);
    probe::write(&probe, Path::new(&out)).expect("writing the probe");
}

fn read_names(path: &Path) -> Vec<Vec<u8>> {
    fs::read(path).unwrap_or_default().split(|&b| b == 0).filter(|n| !n.is_empty()).map(<[u8]>::to_vec).collect()
}

/// Cluster size of every image: one page, so a failing cluster fails the
/// same 4 KiB read on both sides (the kernel's page cache and FUSE both
/// read whole pages).
const CLUSTER: u64 = 4096;
/// Clusters of each file in the root directory.
const FILE_CLUSTERS: u64 = 8;
/// Their size: the last cluster partly used.
const FILE_LEN: u64 = FILE_CLUSTERS * CLUSTER - 100;
/// Empty files in each test directory: with ".", ".." and INNER.TXT, 153
/// entries, two 4 KiB clusters.
const DIR_FILES: usize = 150;

/// Files in the root, by 8.3 name (no long name), each damaged by [`damage`].
const FILES: &[&str] = &[
    "GOOD.BIN",
    "OUTRANGE.BIN",
    "RESERVED.BIN",
    "LOOP.BIN",
    "CROSSA.BIN",
    "CROSSB.BIN",
    "SHORT.BIN",
    "LONGER.BIN",
    "FREEMID.BIN",
    "BADMID.BIN",
    "COPYTWO.BIN",
    "HUGE.BIN",
    "NOSTART.BIN",
    "STARTONE.BIN",
    "STARTBIG.BIN",
    "HIGHBITS.BIN",
    "HUGELOOP.BIN",
];
/// Directories in the root, each with INNER.TXT and [`DIR_FILES`] empty files.
const DIRS: &[&str] =
    &["GOODDIR", "LOOPDIR", "FREEDIR", "RANGEDIR", "BADDIR", "GARBAGE", "ZERODIR", "NODOTS", "ODDNAMES", "CYCLE"];
/// Long names in LFNDIR, with what [`damage`] does to each.
const LONG_NAMES: &[&str] = &[
    "checksum mismatch long name.txt",
    "orphaned long name file.txt",
    "slots out of order long name.txt",
    "deleted then zeroed long name.txt",
    "after the end marker.txt",
    "intact long name to compare.txt",
];

/// A FAT volume's layout from its boot sector, computed here as the
/// kernel's `fat_fill_super` does (not with the guest's code).
#[derive(Debug, Clone, Copy)]
struct Layout {
    fat_start: u64,
    fat_bytes: u64,
    fats: u64,
    /// FAT12/16: the fixed root's device byte and entry count.
    fixed_root: Option<(u64, u64)>,
    /// FAT32: the root's first cluster.
    root_cluster: u32,
    data_start: u64,
    cluster: u64,
    clusters: u32,
    bits: u32,
}

impl Layout {
    fn parse(b: &[u8]) -> anyhow::Result<Layout> {
        let le16 = |at: usize| u64::from(u16::from_le_bytes([b[at], b[at + 1]]));
        let le32 = |at: usize| u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]));
        let sector = le16(11);
        let spc = u64::from(b[13]);
        let reserved = le16(14);
        let fats = u64::from(b[16]);
        let root_entries = le16(17);
        let fat_len = if le16(22) == 0 { le32(36) } else { le16(22) };
        let total = if le16(19) == 0 { le32(32) } else { le16(19) };
        let root_start = (reserved + fats * fat_len) * sector;
        let data_start = root_start + (root_entries * 32).div_ceil(sector) * sector;
        let clusters = (total * sector - data_start) / (spc * sector);
        let bits = if le16(22) == 0 {
            32
        } else if clusters > 4084 {
            16
        } else {
            12
        };
        ensure!(sector * spc == CLUSTER, "{sector} * {spc} is not a {CLUSTER}-byte cluster");
        Ok(Layout {
            fat_start: reserved * sector,
            fat_bytes: fat_len * sector,
            fats,
            fixed_root: (bits != 32).then_some((root_start, root_entries)),
            root_cluster: le32(44) as u32,
            data_start,
            cluster: spc * sector,
            clusters: clusters as u32,
            bits,
        })
    }

    /// The end-of-chain value the tools write, the bad-cluster marker and
    /// the first reserved value (`EOF_FAT*`, `BAD_FAT*`, 0x?FF0).
    fn eof(&self) -> u32 {
        match self.bits {
            12 => 0xFFF,
            16 => 0xFFFF,
            _ => 0x0FFF_FFFF,
        }
    }

    fn bad(&self) -> u32 {
        self.eof() - 8
    }

    fn reserved(&self) -> u32 {
        self.eof() - 0xF
    }
}

/// A FAT image in its own scratch directory.
struct Image {
    path: PathBuf,
    layout: Layout,
    _dir: ScratchDir,
}

impl Image {
    fn read(&self, at: u64, len: u64) -> anyhow::Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        fs::File::open(&self.path)?.read_exact_at(&mut buf, at)?;
        Ok(buf)
    }

    fn write(&self, at: u64, bytes: &[u8]) -> anyhow::Result<()> {
        fs::OpenOptions::new().write(true).open(&self.path)?.write_all_at(bytes, at)?;
        Ok(())
    }

    /// FAT entry `n` of FAT copy `copy`, as stored (FAT32: all 32 bits).
    fn fat(&self, copy: u64, n: u32) -> anyhow::Result<u32> {
        let l = &self.layout;
        let base = l.fat_start + copy * l.fat_bytes;
        let n = u64::from(n);
        Ok(match l.bits {
            12 => {
                let b = self.read(base + n * 3 / 2, 2)?;
                let v = u32::from(u16::from_le_bytes([b[0], b[1]]));
                if n % 2 == 1 { v >> 4 } else { v & 0xFFF }
            }
            16 => {
                let b = self.read(base + n * 2, 2)?;
                u32::from(u16::from_le_bytes([b[0], b[1]]))
            }
            _ => {
                let b = self.read(base + n * 4, 4)?;
                u32::from_le_bytes([b[0], b[1], b[2], b[3]])
            }
        })
    }

    /// Sets FAT entry `n` to `v` in the copies `copies`.
    fn set_fat(&self, copies: std::ops::Range<u64>, n: u32, v: u32) -> anyhow::Result<()> {
        let l = self.layout;
        for copy in copies {
            let base = l.fat_start + copy * l.fat_bytes;
            let n64 = u64::from(n);
            match l.bits {
                12 => {
                    let at = base + n64 * 3 / 2;
                    let b = self.read(at, 2)?;
                    let new = if n % 2 == 1 {
                        [(b[0] & 0x0F) | ((v << 4) as u8 & 0xF0), (v >> 4) as u8]
                    } else {
                        [v as u8, (b[1] & 0xF0) | ((v >> 8) as u8 & 0x0F)]
                    };
                    self.write(at, &new)?;
                }
                16 => self.write(base + n64 * 2, &(v as u16).to_le_bytes())?,
                _ => self.write(base + n64 * 4, &v.to_le_bytes())?,
            }
        }
        Ok(())
    }

    /// Sets FAT entry `n` in every copy.
    fn set(&self, n: u32, v: u32) -> anyhow::Result<()> {
        self.set_fat(0..self.layout.fats, n, v)
    }

    /// The chain from `start` in the first FAT, to its end (at most as many
    /// clusters as the volume has).
    fn chain(&self, start: u32) -> anyhow::Result<Vec<u32>> {
        let mut chain = vec![start];
        let mask = if self.layout.bits == 32 { 0x0FFF_FFFF } else { u32::MAX };
        loop {
            let next = self.fat(0, *chain.last().unwrap_or(&start))? & mask;
            if next < 2 || next >= self.layout.bad() || chain.len() > self.layout.clusters as usize {
                break;
            }
            chain.push(next);
        }
        Ok(chain)
    }

    fn cluster_offset(&self, cluster: u32) -> u64 {
        self.layout.data_start + u64::from(cluster - 2) * self.layout.cluster
    }

    /// Device bytes of every 32-byte slot of the root (`None`) or of the
    /// directory starting at cluster `dir`.
    fn slots(&self, dir: Option<u32>) -> anyhow::Result<Vec<u64>> {
        let per_cluster = self.layout.cluster / 32;
        Ok(match (dir, self.layout.fixed_root) {
            (None, Some((start, entries))) => (0..entries).map(|i| start + i * 32).collect(),
            (dir, _) => {
                let first = dir.unwrap_or(self.layout.root_cluster);
                let mut slots = Vec::new();
                for c in self.chain(first)? {
                    slots.extend((0..per_cluster).map(|i| self.cluster_offset(c) + i * 32));
                }
                slots
            }
        })
    }

    /// Device byte of the short entry `name` ("NAME.EXT") in a directory.
    fn entry(&self, dir: Option<u32>, name: &str) -> anyhow::Result<u64> {
        let (base, ext) = name.split_once('.').unwrap_or((name, ""));
        let short = format!("{base:<8}{ext:<3}");
        for at in self.slots(dir)? {
            if self.read(at, 11)? == short.as_bytes() {
                return Ok(at);
            }
        }
        anyhow::bail!("no entry {name} in directory {dir:?}")
    }

    /// The first cluster an entry names.
    fn start(&self, entry: u64) -> anyhow::Result<u32> {
        let e = self.read(entry, 32)?;
        let hi = if self.layout.bits == 32 { u32::from(u16::from_le_bytes([e[20], e[21]])) << 16 } else { 0 };
        Ok(hi | u32::from(u16::from_le_bytes([e[26], e[27]])))
    }

    fn set_start(&self, entry: u64, cluster: u32) -> anyhow::Result<()> {
        self.write(entry + 20, &((cluster >> 16) as u16).to_le_bytes())?;
        self.write(entry + 26, &(cluster as u16).to_le_bytes())
    }

    fn set_size(&self, entry: u64, size: u32) -> anyhow::Result<()> {
        self.write(entry + 28, &size.to_le_bytes())
    }
}

/// `mkfs.vfat -F FAT -s 8` (4 KiB clusters) of `size_kib`, filled with
/// [`FILES`], [`DIRS`] and LFNDIR by `mcopy -s`.
fn build(fat: &str, size_kib: u64) -> anyhow::Result<Image> {
    build_with(fat, size_kib, 0)
}

/// As [`build`], with `extra` more empty files in the root (R000...).
fn build_with(fat: &str, size_kib: u64, extra: usize) -> anyhow::Result<Image> {
    let dir = ScratchDir::new("fat-damaged")?;
    let path = dir.path().join("fat.img");
    run(Command::new("mkfs.vfat")
        .args(["-F", fat, "-s", "8", "-S", "512", "-n", "DAMAGED", "-i", "0BADF00D", "-C"])
        .arg(&path)
        .arg(size_kib.to_string()))?;
    let src = ScratchDir::new("fat-damaged-src")?;
    for (i, name) in FILES.iter().enumerate() {
        fs::write(src.path().join(name), pattern(FILE_LEN as usize, 500 + i as u32))?;
    }
    for i in 0..extra {
        fs::write(src.path().join(format!("R{i:03}")), b"")?;
    }
    for (i, name) in DIRS.iter().enumerate() {
        let d = src.path().join(name);
        fs::create_dir(&d)?;
        fs::write(d.join("INNER.TXT"), pattern(3000, 600 + i as u32))?;
        for f in 0..DIR_FILES {
            fs::write(d.join(format!("F{f:03}")), b"")?;
        }
    }
    let mut mcopy = Command::new("mcopy");
    mcopy.args(["-s", "-Q", "-i"]).arg(&path);
    for entry in fs::read_dir(src.path())? {
        mcopy.arg(entry?.path());
    }
    run(mcopy.arg("::/"))?;
    // LFNDIR's entries one by one, in this order (damage depends on it).
    run(Command::new("mmd").arg("-i").arg(&path).arg("::/LFNDIR"))?;
    let lfn = ScratchDir::new("fat-damaged-lfn")?;
    for (i, name) in LONG_NAMES.iter().enumerate() {
        let file = lfn.path().join(name);
        fs::write(&file, pattern(700, 700 + i as u32))?;
        run(Command::new("mcopy").arg("-i").arg(&path).arg(&file).arg("::/LFNDIR/"))?;
    }
    let boot = fs::read(&path)?;
    let layout = Layout::parse(&boot[..512])?;
    Ok(Image { path, layout, _dir: dir })
}

/// The index of the slot in `slots` (device bytes) holding the first 13
/// characters of the long name starting with `start` (≤ 5 ASCII
/// characters): sequence number 1, just before the short entry.
fn first_lfn_slot(image: &Image, slots: &[u64], start: &str) -> anyhow::Result<usize> {
    let utf16: Vec<u8> = start.encode_utf16().flat_map(u16::to_le_bytes).collect();
    for (i, &at) in slots.iter().enumerate() {
        let s = image.read(at, 32)?;
        if s[11] == 0x0F && s[0] & 0x3F == 1 && s[1..].starts_with(&utf16) {
            return Ok(i);
        }
    }
    anyhow::bail!("no long-name slot starting with {start:?}")
}

/// Damages `image`, one object per kind of damage; returns the names to
/// look up besides the listing (every damaged object, listed or not).
///
/// Files (8 clusters each; "cluster k" is the file's k-th, from 0):
/// - OUTRANGE: cluster 2's FAT entry names a cluster past the volume.
/// - RESERVED: cluster 2's entry is the first reserved value (0x?FF0).
/// - LOOP: cluster 4's entry points back to cluster 1 (a loop within the
///   size: the chain still has 8 links).
/// - CROSSA, CROSSB: CROSSB's cluster 0 leads into CROSSA's cluster 3
///   (cross-linked; CROSSB's size cut to 5 clusters).
/// - SHORT: cluster 4's entry is end-of-chain (the size needs 8).
/// - LONGER: the size says 2 clusters; the chain has 8.
/// - FREEMID: cluster 4's entry is free (0).
/// - BADMID: cluster 4's entry is the bad-cluster marker.
/// - COPYTWO: the second FAT copy disagrees (its chain freed, one link
///   reserved); the first is intact.
/// - HUGE: the size is 4 GiB - 256, far larger than the volume.
/// - HUGELOOP: as large, and its last cluster leads back to its first.
/// - NOSTART: first cluster 0 with a size.
/// - STARTONE: first cluster 1 (no data cluster).
/// - STARTBIG: first cluster past the volume.
/// - HIGHBITS (FAT32): every link has its 4 reserved high bits set.
///
/// Directories (2 clusters each):
/// - LOOPDIR: cluster 1's entry points back to cluster 0.
/// - FREEDIR: cluster 0's entry is free.
/// - RANGEDIR: cluster 0's entry names a cluster past the volume.
/// - BADDIR: cluster 0's entry is the bad-cluster marker.
/// - GARBAGE: cluster 1 overwritten with pseudo-random bytes.
/// - ZERODIR: first cluster 0.
/// - NODOTS: "." and ".." erased (0xE5).
/// - ODDNAMES: its last entry's short name holds a '/' (code page 437
///   has one; no Linux name can), the one before ends in '.'.
/// - CYCLE: its last entry is a directory BACK whose first cluster is
///   CYCLE's own (CYCLE/BACK/BACK is BACK again).
///
/// LFNDIR: a long name with a wrong checksum, an orphaned long name (its
/// short entry deleted), slots out of order, a deleted entry's first slot
/// made 0x00 (the end marker) with live entries after it, a 0xE5 entry
/// mid-directory.
fn damage(image: &Image) -> anyhow::Result<Vec<Vec<u8>>> {
    let l = image.layout;
    let root = |name: &str| image.entry(None, name);
    // Every chain first: the damage changes them.
    let mut files = std::collections::BTreeMap::new();
    for name in FILES {
        let entry = root(name)?;
        let chain = image.chain(image.start(entry)?)?;
        ensure!(chain.len() as u64 == FILE_CLUSTERS, "{name}: {} clusters", chain.len());
        files.insert(*name, (entry, chain));
    }
    let mut dirs = std::collections::BTreeMap::new();
    for name in DIRS {
        let entry = root(name)?;
        let chain = image.chain(image.start(entry)?)?;
        ensure!(chain.len() == 2, "{name}: {} clusters", chain.len());
        dirs.insert(*name, (entry, chain));
    }
    let file = |name: &str| files.get(name).cloned().context("no such file");
    let dir = |name: &str| dirs.get(name).cloned().context("no such directory");
    let past_volume = l.clusters + 2 + 10;

    let (_, c) = file("OUTRANGE.BIN")?;
    image.set(c[2], past_volume)?;
    let (_, c) = file("RESERVED.BIN")?;
    image.set(c[2], l.reserved())?;
    let (_, c) = file("LOOP.BIN")?;
    image.set(c[4], c[1])?;
    let (_, a) = file("CROSSA.BIN")?;
    let (b_entry, b) = file("CROSSB.BIN")?;
    image.set(b[0], a[3])?;
    image.set_size(b_entry, (5 * CLUSTER - 10) as u32)?;
    let (_, c) = file("SHORT.BIN")?;
    image.set(c[4], l.eof())?;
    let (e, _) = file("LONGER.BIN")?;
    image.set_size(e, (2 * CLUSTER - 7) as u32)?;
    let (_, c) = file("FREEMID.BIN")?;
    image.set(c[4], 0)?;
    let (_, c) = file("BADMID.BIN")?;
    image.set(c[4], l.bad())?;
    let (_, c) = file("COPYTWO.BIN")?;
    ensure!(l.fats >= 2, "mkfs.vfat made {} FAT copies", l.fats);
    for &cluster in &c {
        image.set_fat(1..2, cluster, 0)?;
    }
    image.set_fat(1..2, c[0], l.reserved())?;
    let (e, _) = file("HUGE.BIN")?;
    image.set_size(e, 0xFFFF_FF00)?;
    let (e, c) = file("HUGELOOP.BIN")?;
    image.set_size(e, 0xFFFF_FF00)?;
    image.set(c[7], c[0])?;
    let (e, _) = file("NOSTART.BIN")?;
    image.set_start(e, 0)?;
    let (e, _) = file("STARTONE.BIN")?;
    image.set_start(e, 1)?;
    let (e, _) = file("STARTBIG.BIN")?;
    image.set_start(e, past_volume)?;
    if l.bits == 32 {
        let (_, c) = file("HIGHBITS.BIN")?;
        for &cluster in &c {
            let v = image.fat(0, cluster)?;
            image.set(cluster, v | 0xF000_0000)?;
        }
    }

    let (_, d) = dir("LOOPDIR")?;
    image.set(d[1], d[0])?;
    let (_, d) = dir("FREEDIR")?;
    image.set(d[0], 0)?;
    let (_, d) = dir("RANGEDIR")?;
    image.set(d[0], past_volume)?;
    let (_, d) = dir("BADDIR")?;
    image.set(d[0], l.bad())?;
    let (_, d) = dir("GARBAGE")?;
    let mut garbage = pattern(l.cluster as usize, 4242);
    // No '/' and no '.' in short names: ODDNAMES has those, alone.
    for slot in garbage.chunks_mut(32).filter(|s| s[11] != 0x0F) {
        for b in &mut slot[..11] {
            if matches!(*b, b'/' | b'.') {
                *b = b'_';
            }
        }
    }
    image.write(image.cluster_offset(d[1]), &garbage)?;
    let live = |d: u32| -> anyhow::Result<Vec<u64>> {
        let mut live = Vec::new();
        for at in image.slots(Some(d))? {
            if !matches!(image.read(at, 1)?[0], 0 | 0xE5 | b'.') {
                live.push(at);
            }
        }
        Ok(live)
    };
    let (_, d) = dir("ODDNAMES")?;
    let entries = live(d[0])?;
    ensure!(entries.len() > 2, "ODDNAMES has {} entries", entries.len());
    image.write(entries[entries.len() - 2], b"DOT     AB.")?;
    image.write(entries[entries.len() - 1], b"SL/SH   TXT")?;
    let (_, d) = dir("CYCLE")?;
    let back = *live(d[0])?.last().context("CYCLE is empty")?;
    image.write(back, b"BACK       \x10")?;
    image.set_start(back, d[0])?;
    let (e, _) = dir("ZERODIR")?;
    image.set_start(e, 0)?;
    let (_, d) = dir("NODOTS")?;
    image.write(image.cluster_offset(d[0]), &[0xE5])?;
    image.write(image.cluster_offset(d[0]) + 32, &[0xE5])?;

    let lfn = image.start(root("LFNDIR")?)?;
    let slots = image.slots(Some(lfn))?;
    let i = first_lfn_slot(image, &slots, "check")?;
    let sum = image.read(slots[i] + 13, 1)?[0];
    image.write(slots[i] + 13, &[sum ^ 0x5A])?;
    let i = first_lfn_slot(image, &slots, "orpha")?;
    image.write(slots[i + 1], &[0xE5])?;
    let i = first_lfn_slot(image, &slots, "slots")?;
    let (one, two) = (image.read(slots[i], 32)?, image.read(slots[i - 1], 32)?);
    image.write(slots[i], &two)?;
    image.write(slots[i - 1], &one)?;
    // "deleted then zeroed": its long name's last slot (first on disk)
    // becomes the end-of-directory marker; the short entry is deleted.
    let i = first_lfn_slot(image, &slots, "delet")?;
    image.write(slots[i + 1], &[0xE5])?;
    let first = (0..=i).rev().find(|&j| image.read(slots[j], 1).is_ok_and(|b| b[0] & 0x40 != 0)).context("LFN head")?;
    image.write(slots[first], &[0x00])?;

    let mut names: Vec<Vec<u8>> = FILES.iter().chain(DIRS).map(|n| n.as_bytes().to_vec()).collect();
    names.extend([&b"ODDNAMES/DOT.AB."[..], b"ODDNAMES/DOT.AB", b"CYCLE/BACK/BACK/INNER.TXT"].map(<[u8]>::to_vec));
    names.extend(DIRS.iter().map(|d| format!("{d}/INNER.TXT").into_bytes()));
    names.extend(LONG_NAMES.iter().map(|n| format!("LFNDIR/{n}").into_bytes()));
    Ok(names)
}

/// The image labelled BPB: FAT32 whose boot sector, FSInfo sector and FAT
/// header hold what the kernel tolerates: no 0x55AA signature, a zeroed
/// jump and OEM name, no sectors per track or heads, absurd hidden sectors,
/// an unknown FAT32 version, FSInfo signatures wrong and its counts absurd,
/// the FAT's media byte disagreeing with the BPB's, the "clean" and "no
/// error" bits of FAT entry 1 cleared, and the backup boot sector garbage.
fn tolerated_bpb(image: &Image) -> anyhow::Result<()> {
    image.write(510, &[0, 0])?;
    image.write(0, &[0; 11])?;
    image.write(24, &[0, 0, 0, 0])?;
    image.write(28, &0xDEAD_BEEFu32.to_le_bytes())?;
    image.write(42, &[1, 1])?;
    let fsinfo = u64::from(u16::from_le_bytes(image.read(48, 2)?.try_into().unwrap_or_default())) * 512;
    image.write(fsinfo, b"XXXX")?;
    image.write(fsinfo + 484, b"YYYY")?;
    image.write(fsinfo + 488, &0xFFFF_FFF0u32.to_le_bytes())?;
    image.write(fsinfo + 492, &0xFFFF_FFF0u32.to_le_bytes())?;
    let backup = u64::from(u16::from_le_bytes(image.read(50, 2)?.try_into().unwrap_or_default())) * 512;
    image.write(backup, &pattern(512, 77))?;
    let fat0 = image.fat(0, 0)?;
    image.set(0, (fat0 & !0xFF) | 0xF0)?;
    let fat1 = image.fat(0, 1)?;
    image.set(1, fat1 & !0x0C00_0000)?;
    Ok(())
}

/// The images, each with a label and the names to look up.
struct Damaged {
    label: &'static str,
    image: Image,
    lookups: Vec<Vec<u8>>,
}

fn damaged_images() -> anyhow::Result<Vec<Damaged>> {
    let mut out = Vec::new();
    for (label, fat, size_kib) in [("FAT12", "12", 8 << 10), ("FAT16", "16", 24 << 10), ("FAT32", "32", 300 << 10)] {
        let image = build(fat, size_kib)?;
        ensure!(image.layout.bits.to_string() == fat, "{label}: mkfs.vfat made FAT{}", image.layout.bits);
        let lookups = damage(&image)?;
        out.push(Damaged { label, image, lookups });
    }
    let image = build("32", 300 << 10)?;
    tolerated_bpb(&image)?;
    let lookups = FILES.iter().map(|n| n.as_bytes().to_vec()).collect();
    out.push(Damaged { label: "BPB", image, lookups });
    // A FAT16 image cut after GOOD.BIN's second cluster: what lies before
    // the cut reads, what lies after it fails.
    let image = build("16", 24 << 10)?;
    let good = image.chain(image.start(image.entry(None, "GOOD.BIN")?)?)?;
    let cut = image.cluster_offset(good[2]);
    fs::OpenOptions::new().write(true).open(&image.path)?.set_len(cut)?;
    let lookups = FILES.iter().map(|n| n.as_bytes().to_vec()).collect();
    out.push(Damaged { label: "TRUNC", image, lookups });
    // FAT32 roots: one of two clusters whose link is the bad-cluster
    // marker (the kernel ends the root there), one that loops.
    let image = build_with("32", 300 << 10, 150)?;
    let root = image.chain(image.layout.root_cluster)?;
    ensure!(root.len() >= 2, "the FAT32 root has {} clusters", root.len());
    image.set(root[0], image.layout.bad())?;
    let lookups = FILES.iter().map(|n| n.as_bytes().to_vec()).collect();
    out.push(Damaged { label: "ROOTBAD", image, lookups });
    let image = build("32", 300 << 10)?;
    image.set(image.layout.root_cluster, image.layout.root_cluster)?;
    out.push(Damaged { label: "ROOTLOOP", image, lookups: Vec::new() });
    Ok(out)
}

/// A difference kept on purpose: on which images (labels), which
/// differences it covers, and why. Each must cover at least one
/// difference on each of its images.
struct Deliberate {
    images: &'static [&'static str],
    name: &'static str,
    why: &'static str,
    covers: fn(&Probe, &probe::Difference) -> bool,
}

const DAMAGED: &[&str] = &["FAT12", "FAT16", "FAT32"];

/// What fshost shows differently from the kernel, on purpose.
const DELIBERATE: &[Deliberate] = &[
    Deliberate {
        images: DAMAGED,
        name: "a short name with '/' is skipped, not the end of the listing",
        why: "readdir in the kernel fails with EIO at a name holding '/' (verify_dirent_name) and \
              the entries after it are never listed; the guest skips that one entry (with a \
              warning) and lists the rest",
        covers: |_, d| {
            d.key == "ODDNAMES listing"
                && d.kernel.as_deref().is_some_and(|k| k.starts_with("errno 5 "))
                && d.fshost.as_deref() == Some("ok")
        },
    },
    Deliberate {
        images: DAMAGED,
        name: "a short name ending in '.' can be opened",
        why: "the kernel lists it, but its lookup strips trailing dots and then cannot find it \
              (ENOENT); fshost finds a name exactly as listed, so it can be read",
        covers: |_, d| {
            d.key.starts_with("ODDNAMES/DOT.AB. ")
                && d.kernel.as_deref().is_none_or(|k| k.starts_with("errno 2 "))
                && d.fshost.as_deref().is_some_and(|f| !f.starts_with("errno"))
        },
    },
    Deliberate {
        images: &["TRUNC"],
        name: "past the end of a truncated image the kernel in UML reads zeros",
        why: "a read request that starts inside the image and runs past its end comes back \
              zero-filled from user-mode Linux's block driver (ubd), so the kernel there reads \
              zeros beyond the image's last byte before EIO (8 KiB here); fshost reads what the \
              image holds and fails with EIO at its end. Checked: the kernel's extra bytes are \
              zeros",
        covers: |_, d| {
            let Some(path) = d.key.strip_suffix(" read") else { return false };
            let (Some(k), Some(f)) = (read_result(&d.kernel), read_result(&d.fshost)) else { return false };
            let Some(content) = content_of(path) else { return false };
            if k.0 <= f.0 || f.0 > content.len() as u64 {
                return false;
            }
            let expected: Vec<u8> = content
                .iter()
                .take(f.0 as usize)
                .copied()
                .chain(std::iter::repeat_n(0, (k.0 - f.0) as usize))
                .collect();
            k.2 && f.2 && k.1 == sha256_hex(&expected)
        },
    },
];

/// A `read` record: bytes read, their sha256, whether EIO ended it.
fn read_result(value: &Option<String>) -> Option<(u64, String, bool)> {
    let v = value.as_deref()?;
    let mut words = v.split(' ');
    let count = words.next()?.parse().ok()?;
    let hash = words.nth(2)?.trim_end_matches(',').to_string();
    Some((count, hash, v.ends_with("then errno 5 (Input/output error)")))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// What [`build`] wrote into the file at `path` (FILES and each
/// directory's INNER.TXT), before any damage.
fn content_of(path: &str) -> Option<Vec<u8>> {
    if let Some(i) = FILES.iter().position(|f| *f == path) {
        return Some(pattern(FILE_LEN as usize, 500 + i as u32));
    }
    let dir = path.strip_suffix("/INNER.TXT")?;
    let i = DIRS.iter().position(|d| *d == dir)?;
    Some(pattern(3000, 600 + i as u32))
}

/// The kernel's probe of each image (one UML boot) and fshost's (its FUSE
/// mount), with fshost's logs.
fn probes(images: &[Damaged]) -> anyhow::Result<Vec<(Probe, Probe, String)>> {
    let names_dir = ScratchDir::new("fat-damaged-names")?;
    let mut name_files = Vec::new();
    for (i, d) in images.iter().enumerate() {
        let file = names_dir.path().join(format!("names{i}"));
        let mut bytes = Vec::new();
        for n in &d.lookups {
            bytes.extend_from_slice(n);
            bytes.push(0);
        }
        fs::write(&file, bytes)?;
        name_files.push(file);
    }
    let exe = std::env::current_exe()?;
    let body = format!(
        "{PROBE_ROOT}=\"$MNT\" {PROBE_OUT}=\"$OUT/probe\" {PROBE_NAMES}=\"$NAMES\" '{}' --exact probe_in_uml --nocapture --test-threads=1 --quiet\n",
        exe.display()
    );
    // The names file of image N: the body finds it from $OUT's last component.
    let body = format!("NAMES={}/names$(basename \"$OUT\")\n{body}", names_dir.path().canonicalize()?.display());
    let paths: Vec<&Path> = images.iter().map(|d| d.image.path.as_path()).collect();
    let started = Instant::now();
    let kernel = uml::probe_vfat(&paths, "ro,utf8", &body, |_, out| {
        if out.join("mount-failed").exists() {
            return Ok(refused());
        }
        probe::read_file(&out.join("probe"))
    })?;
    eprintln!("the kernel's probes of {} images: {:.1?}", images.len(), started.elapsed());
    let mut out = Vec::new();
    for (d, kernel) in images.iter().zip(kernel) {
        match FshostMount::mount(&guest("fat"), &d.image.path, &[]) {
            Ok(mount) => {
                let fshost = probe::take(mount.path(), &d.lookups);
                out.push((kernel, fshost, mount.log()));
            }
            // The error holds fshost's log.
            Err(e) => out.push((kernel, refused(), format!("{e:#}"))),
        }
    }
    Ok(out)
}

/// The probe of an image that was not mounted.
fn refused() -> Probe {
    Probe::from([("mount".to_string(), "failed".to_string())])
}

/// Every damaged image against the kernel: only the [`DELIBERATE`]
/// differences, no panic.
#[test]
fn damaged_images_show_what_the_kernel_shows() -> anyhow::Result<()> {
    require_root();
    let started = Instant::now();
    let images = damaged_images()?;
    if let Some(keep) = std::env::var_os("FAT_DAMAGED_KEEP") {
        // For looking at a failure by hand: the damaged images, by label.
        for d in &images {
            fs::copy(&d.image.path, Path::new(&keep).join(format!("{}.img", d.label)))?;
        }
    }
    let views = probes(&images)?;
    let mut report = Vec::new();
    let mut unexpected = 0;
    let mut seen = BTreeSet::new();
    for (d, (kernel, fshost, log)) in images.iter().zip(&views) {
        ensure!(!log.contains("panicked"), "{}: a panic in fshost's log:\n{log}", d.label);
        let listed = kernel.keys().filter(|k| k.ends_with("\ttype")).count();
        eprintln!("{}: the kernel shows {listed} names, {} records", d.label, kernel.len());
        ensure!(kernel.len() > 10 || *kernel == refused(), "{}: the kernel showed almost nothing: {kernel:?}", d.label);
        for diff in probe::diff(kernel, fshost) {
            let listed = DELIBERATE.iter().find(|x| x.images.contains(&d.label) && (x.covers)(kernel, &diff));
            match listed {
                Some(x) => {
                    seen.insert((d.label, x.name));
                }
                None => {
                    unexpected += 1;
                    report.push(format!("{}: {diff}", d.label));
                }
            }
        }
    }
    let vanished: Vec<String> = DELIBERATE
        .iter()
        .flat_map(|x| x.images.iter().map(move |i| (*i, x)))
        .filter(|(i, x)| !seen.contains(&(*i, x.name)))
        .map(|(i, x)| format!("{i}: {} (listed because: {})", x.name, x.why))
        .collect();
    eprintln!("damaged images compared in {:.1?}", started.elapsed());
    ensure!(
        unexpected == 0 && vanished.is_empty(),
        "{unexpected} differences not listed as deliberate:\n{}\n{} listed differences no longer seen:\n{}",
        report.join("\n"),
        vanished.len(),
        vanished.join("\n")
    );
    Ok(())
}
