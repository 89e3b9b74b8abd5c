//! The FAT guest against the kernel's vfat driver, entry by entry.
//!
//! Images are made without mounting, by tools nobody here wrote: `mkfs.vfat`
//! (dosfstools) with FAT12, FAT16 and FAT32, several cluster sizes and
//! 512- and 4096-byte sectors, filled by mtools (`mcopy -s -m`, `mmd`,
//! `mdel`, `mattrib`) and, for names outside the BMP that mtools cannot
//! write, by the kernel's vfat itself. The tree holds long names, non-ASCII names (Latin,
//! CJK, emoji as UTF-16 surrogate pairs), 8.3 names in lower and mixed
//! case, a directory of 1100 long-named entries, 20 nested directories,
//! files at cluster edges, a 3 MiB file, a fragmented file, read-only,
//! hidden and system attributes, and timestamps from 1980 to 2107.
//!
//! The reference is the Linux kernel's vfat driver. This machine's kernel
//! has no FAT support at all, so the image is mounted inside user-mode
//! Linux 6.1 (Debian's `user-mode-linux`, see `fshost_tests::uml`) with
//! `-o ro,utf8` — `utf8` because Debian's default iocharset (iso8859-1)
//! shows every name outside Latin-1 as '?' and makes distinct names
//! collide; everything else is the default (`shortname=mixed`, codepage
//! 437, umask 022, uid/gid 0, UTC). fshost mounts the same image with its
//! defaults. Both sides run the same snapshot script (find, stat,
//! sha256sum, stat -f: `fshost_tests::snapshot`), and every field must
//! match: names as bytes, types, modes, link counts, owners, sizes, block
//! counts, st_blksize, atime/mtime/ctime to the nanosecond, contents and
//! statfs. One exception: inode numbers (the kernel numbers FAT inodes
//! with iunique() in the order it meets them, so they are only checked to
//! be distinct on fshost's side).
//!
//! Corrupted images (a FAT chain loop, an out-of-range cluster, a bad BPB,
//! a truncated image) must fail cleanly — EIO or EUCLEAN on the object,
//! no panic — while the rest of the image still reads.
//!
//! Needs root (mounts) and the packages `cargo xtask test` installs:
//! dosfstools, mtools, user-mode-linux, kmod.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, bail, ensure};
use fshost_tests::fshost::{FshostMount, guest, offline};
use fshost_tests::kernel::{self, require_root};
use fshost_tests::pattern::pattern;
use fshost_tests::scratch::ScratchDir;
use fshost_tests::snapshot::{self, Ignore};
use fshost_tests::uml;

/// A tool run in UTC, with mtools' geometry check off (images of any size).
fn run(command: &mut Command) -> anyhow::Result<Output> {
    kernel::run(command.env("TZ", "UTC").env("MTOOLS_SKIP_CHECK", "1"))
}

/// `touch -d DATE` (UTC) on `path`: sets atime and mtime.
fn touch(path: &Path, date: &str) -> anyhow::Result<()> {
    run(Command::new("touch").arg("-h").arg("-d").arg(date).arg(path)).map(drop)
}

fn write(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

/// The source tree copied into every image, under `root`.
fn source_tree(root: &Path) -> anyhow::Result<()> {
    let names: &[&str] = &[
        "a long name with spaces, commas; and more.txt",
        "café.txt",
        "naïve résumé.md",
        "Ünïcödé.TXT",
        "中文名字.txt",
        "日本語のファイル名",
        "lower.txt",
        "UPPER.TXT",
        "Mixed.Txt",
        "base.TXT",
        "BASE2.txt",
        "noext",
        "dots.in.the.name.tar.gz",
        " leading space",
        "exactly13char",
        "exactly26characters-abcdef",
        "x",
    ];
    for (i, name) in names.iter().enumerate() {
        write(&root.join(name), &pattern(100 + i * 37, i as u32))?;
    }
    // Names that differ only in case cannot share a directory on FAT.
    for (dir, name) in [("case1", "README"), ("case2", "readme"), ("case3", "ReadMe")] {
        write(&root.join(dir).join(name), name.as_bytes())?;
    }
    // Sizes around the edges of every cluster size used (512 B .. 8 KiB).
    for size in [0usize, 1, 511, 512, 513, 1023, 1024, 2047, 2048, 2049, 4095, 4096, 4097, 8191, 8192, 8193, 65537] {
        write(&root.join("sizes").join(format!("size-{size}")), &pattern(size, size as u32))?;
    }
    write(&root.join("big.bin"), &pattern(3 << 20, 7))?;
    // 1100 long names (each 3 LFN slots + the short entry): a 140 KiB
    // directory. Most are empty, so they cost no clusters.
    let many = root.join("many");
    fs::create_dir_all(&many)?;
    for i in 0..1100 {
        let data = if i % 100 == 0 { pattern(3000, i) } else { Vec::new() };
        write(&many.join(format!("a fairly long file name, number {i:04}.data")), &data)?;
    }
    let mut deep = root.join("deep");
    for level in 1..=20 {
        deep = deep.join(format!("level {level:02}"));
    }
    write(&deep.join("bottom.txt"), b"twenty directories down\n")?;
    fs::create_dir_all(root.join("empty dir"))?;
    for (name, date) in [
        ("times/1980-01-01", "1980-01-01 00:00:00"),
        ("times/1980-01-01-odd-second", "1980-01-01 00:00:01"),
        ("times/leap-2000-02-29", "2000-02-29 12:34:56"),
        ("times/1999-12-31", "1999-12-31 23:59:59"),
        ("times/2038-01-19", "2038-01-19 03:14:08"),
        ("times/2099-12-31", "2099-12-31 23:59:58"),
        ("times/2107-12-31", "2107-12-31 23:59:58"),
    ] {
        let path = root.join(name);
        write(&path, date.as_bytes())?;
        touch(&path, date)?;
    }
    touch(&root.join("times"), "2001-09-09 01:46:40")?;
    touch(&root.join("empty dir"), "1995-05-05 05:05:04")?;
    Ok(())
}

/// A FAT image in its own scratch directory.
struct FatImage {
    path: PathBuf,
    _dir: ScratchDir,
}

impl FatImage {
    /// `mkfs.vfat MKFS_ARGS -C IMG SIZE_KIB`, the source tree copied in with
    /// `mcopy -s -m`, attributes set with `mattrib`, then a fragmented file:
    /// 16 files written, every other one deleted, and a file written into
    /// the holes (checked with `mshowfat`). `fsck.fat -n` must pass.
    fn build(mkfs_args: &[&str], size_kib: u64, source: &Path) -> anyhow::Result<FatImage> {
        let dir = ScratchDir::new("fat-image")?;
        let path = dir.path().join("fat.img");
        run(Command::new("mkfs.vfat")
            .args(mkfs_args)
            .args(["-n", "FSHOST TEST", "-i", "1234ABCD", "-C"])
            .arg(&path)
            .arg(size_kib.to_string()))?;
        let image = FatImage { path, _dir: dir };
        let mut mcopy = Command::new("mcopy");
        mcopy.args(["-s", "-m", "-Q", "-i"]).arg(&image.path);
        for entry in fs::read_dir(source)? {
            mcopy.arg(entry?.path());
        }
        run(mcopy.arg("::/"))?;
        image.mtools("mattrib", &["+r", "::/lower.txt"])?;
        image.mtools("mattrib", &["+r", "::/case1"])?;
        image.mtools("mattrib", &["+h", "+s", "::/UPPER.TXT"])?;
        image.mtools("mattrib", &["-a", "::/Mixed.Txt"])?;
        image.fragment()?;
        // mtools drops characters outside the BMP; the kernel writes them
        // (as UTF-16 surrogate pairs). The long CJK name is 250 UTF-16
        // units, 742 bytes of UTF-8: far past the 255 bytes most Linux
        // filesystems allow, and a valid vfat name.
        let long = "中".repeat(246);
        uml::write_with_vfat(
            &image.path,
            "rw,utf8",
            &format!(
                "printf smile > \"$MNT/emoji 😀🎉 file.txt\"\n\
                 mkdir \"$MNT/emoji dir 🎉\"\n\
                 printf mixed > \"$MNT/emoji dir 🎉/mixed 😀 中文 é.txt\"\n\
                 printf long > \"$MNT/emoji dir 🎉/{long}.txt\"\n\
                 touch -d '2020-02-02 02:02:02' \"$MNT/emoji 😀🎉 file.txt\"\n"
            ),
        )
        .context("writing non-BMP names with the kernel")?;
        run(Command::new("fsck.fat").arg("-n").arg(&image.path)).context("fsck.fat -n on the built image")?;
        Ok(image)
    }

    /// The 8.3 names mtools gave the entries of directories `dirs` (from
    /// `mdir`: the first 12 columns), as `dir/NAME.EXT` and in lower case,
    /// for lookups by short alias. ASCII names only; 40 per directory.
    fn short_aliases(&self, dirs: &[&str]) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut names = Vec::new();
        for dir in dirs {
            let out = self.mtools("mdir", &[&format!("::/{dir}")])?;
            let listing = String::from_utf8_lossy(&out.stdout).into_owned();
            let aliases = listing
                .lines()
                .filter(|l| l.len() > 12 && l.is_char_boundary(12) && !l.starts_with([' ', '.']))
                .filter(|l| !l.starts_with("Directory for") && l[..12].is_ascii())
                .map(|l| {
                    let (base, ext) = (l[..8].trim_end(), l[9..12].trim_end());
                    if ext.is_empty() { base.to_string() } else { format!("{base}.{ext}") }
                })
                .take(40);
            for alias in aliases {
                let path = if dir.is_empty() { alias } else { format!("{dir}/{alias}") };
                names.push(path.to_ascii_lowercase().into_bytes());
                names.push(path.into_bytes());
            }
        }
        Ok(names)
    }

    fn mtools(&self, tool: &str, args: &[&str]) -> anyhow::Result<Output> {
        run(Command::new(tool).arg("-i").arg(&self.path).args(args))
    }

    /// Writes a file whose cluster chain has several runs: 16 files of
    /// two clusters, every other one deleted, then a file of 7.5 clusters
    /// written into the holes.
    fn fragment(&self) -> anyhow::Result<()> {
        let work = ScratchDir::new("fat-frag")?;
        let mut bpb = [0u8; 512];
        fs::File::open(&self.path)?.read_exact_at(&mut bpb, 0)?;
        let sector = u64::from(u16::from_le_bytes([bpb[11], bpb[12]]));
        let cluster = (sector * u64::from(bpb[13])) as usize;
        self.mtools("mmd", &["::/frag"])?;
        for i in 0..16 {
            let piece = work.path().join(format!("piece{i:02}"));
            fs::write(&piece, pattern(2 * cluster, 1000 + i))?;
            run(Command::new("mcopy").arg("-i").arg(&self.path).arg(&piece).arg("::/frag/"))?;
        }
        for i in (0..16).step_by(2) {
            self.mtools("mdel", &[&format!("::/frag/piece{i:02}")])?;
        }
        // FAT32 keeps a next-free-cluster hint in its FSInfo sector, which
        // mtools follows; point it back at the start so the holes are used.
        if bpb[22..24] == [0, 0] {
            let fsinfo = u64::from(u16::from_le_bytes([bpb[48], bpb[49]]));
            let file = fs::OpenOptions::new().write(true).open(&self.path)?;
            file.write_all_at(&2u32.to_le_bytes(), fsinfo * sector + 0x1EC)?;
        }
        let big = work.path().join("fragmented.bin");
        fs::write(&big, pattern(7 * cluster + cluster / 2, 2000))?;
        run(Command::new("mcopy").arg("-i").arg(&self.path).arg(&big).arg("::/frag/"))?;
        let chain = self.mtools("mshowfat", &["::/frag/fragmented.bin"])?;
        let chain = String::from_utf8_lossy(&chain.stdout);
        ensure!(chain.matches('<').count() > 1, "frag/fragmented.bin is not fragmented: {chain}");
        Ok(())
    }
}

/// Every path under `root`, relative, as bytes.
fn source_paths(root: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut paths = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            paths.push(path.strip_prefix(root)?.as_os_str().as_bytes().to_vec());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    paths.sort();
    Ok(paths)
}

/// Other spellings of the source paths that a vfat lookup resolves (or
/// not) by its own rules: every component in ASCII upper and lower case,
/// trailing dots on the last one (vfat ignores them), and the bytes folded
/// as Latin-1 capitals (the kernel compares names with iso8859-1's
/// lower-case table byte by byte, UTF-8 or not). The 1100-entry
/// directory contributes only its first entries.
fn lookup_variants(sources: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut names = Vec::new();
    for path in sources
        .iter()
        .filter(|p| !p.starts_with(b"many/") || p.starts_with(b"many/a fairly long file name, number 000"))
    {
        for variant in [
            path.to_ascii_uppercase(),
            path.to_ascii_lowercase(),
            [&path[..], b"."].concat(),
            [&path[..], b"..."].concat(),
            latin1_lower(path),
        ] {
            if &variant != path && !names.contains(&variant) {
                names.push(variant);
            }
        }
    }
    names
}

/// `bytes` with iso8859-1's capitals (A-Z, 0xC0..=0xD6, 0xD8..=0xDE)
/// lowered, as the kernel's `nls_tolower` does.
fn latin1_lower(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().map(|&b| if matches!(b, b'A'..=b'Z' | 0xC0..=0xD6 | 0xD8..=0xDE) { b + 0x20 } else { b }).collect()
}

/// The kernel's snapshot and fshost's (mounted with `-o FSHOST_OPTIONS`)
/// of one image built with `mkfs_args`, and fshost's log.
fn views(
    mkfs_args: &[&str],
    size_kib: u64,
    fshost_options: &[&str],
) -> anyhow::Result<(snapshot::Snapshot, snapshot::Snapshot, String)> {
    require_root();
    let source = ScratchDir::new("fat-source")?;
    source_tree(source.path())?;
    let image = FatImage::build(mkfs_args, size_kib, source.path())?;
    let sources = source_paths(source.path())?;
    let names_dir = ScratchDir::new("fat-names")?;
    let names = names_dir.path().join("names");
    let aliases = image.short_aliases(&["", "sizes", "case2", "times", "deep", "many"])?;
    let mut variants = lookup_variants(&sources);
    variants.extend(aliases.iter().cloned());
    snapshot::write_names(&names, &variants)?;
    let kernel = uml::snapshot_vfat(&image.path, "ro,utf8", Some(&names))?;
    // The kernel must show the source tree as it was: every name, byte for
    // byte (so the comparison below covers all of them).
    let missing: Vec<String> =
        sources.iter().filter(|p| !kernel.entries.contains_key(*p)).map(|p| p.escape_ascii().to_string()).collect();
    ensure!(
        missing.is_empty(),
        "the kernel's view lacks {} source names: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    ensure!(kernel.lookups.len() > 100, "the kernel resolved only {} other spellings", kernel.lookups.len());
    let unresolved: Vec<String> =
        aliases.iter().filter(|a| !kernel.lookups.contains_key(*a)).map(|a| a.escape_ascii().to_string()).collect();
    ensure!(unresolved.is_empty(), "the kernel does not resolve the short aliases {unresolved:?}");
    let mount = FshostMount::mount(&guest("fat"), &image.path, fshost_options)?;
    let out = ScratchDir::new("fat-snapshot")?;
    let fshost = snapshot::take(mount.path(), out.path(), Some(&names))?;
    Ok((kernel, fshost, mount.log()))
}

/// One image, both views, every difference.
fn compare(mkfs_args: &[&str], size_kib: u64, ignore: Ignore) -> anyhow::Result<()> {
    let (kernel, fshost, log) = views(mkfs_args, size_kib, &[])?;
    let mut diffs: Vec<String> = snapshot::diff(&kernel, &fshost, ignore).iter().map(|d| d.to_string()).collect();
    diffs.extend(snapshot::duplicate_inode_numbers(&fshost));
    if !diffs.is_empty() {
        let shown: Vec<&str> = diffs.iter().take(60).map(String::as_str).collect();
        bail!(
            "{} differences between the kernel's vfat and fshost on mkfs.vfat {mkfs_args:?} (first {}):\n{}\nfshost log:\n{log}",
            diffs.len(),
            shown.len(),
            shown.join("\n"),
        );
    }
    Ok(())
}

/// The comparison can fail: fshost mounted with another owner and mask
/// differs from the kernel's default view in exactly those fields, on
/// every entry.
#[test]
fn the_comparison_sees_other_owners_and_modes() -> anyhow::Result<()> {
    let (kernel, fshost, _) = views(&["-F", "16", "-s", "2"], 16 << 10, &["uid=1234", "umask=077"])?;
    let diffs = snapshot::diff(&kernel, &fshost, SAME);
    let count = |what: &str| diffs.iter().filter(|d| d.what == what).count();
    assert_eq!(count("uid"), kernel.entries.len(), "every entry's owner differs");
    // Read-only files show 0555 on the kernel's side and 0500 on fshost's:
    // every mode differs too.
    assert_eq!(count("mode"), kernel.entries.len(), "every entry's mode differs");
    // Lookups of other spellings print the mode too, and nothing else may differ.
    let other: Vec<_> =
        diffs.iter().filter(|d| !matches!(&d.what[..], "uid" | "mode") && !d.what.starts_with("lookup (")).collect();
    assert!(other.is_empty(), "nothing else differs: {:?}", &other[..other.len().min(10)]);
    Ok(())
}

/// What every comparison leaves out: inode numbers (iunique() in the
/// kernel).
const SAME: Ignore = Ignore { inode_numbers: true, block_size: false };

#[test]
fn fat12_2k_clusters() -> anyhow::Result<()> {
    compare(&["-F", "12", "-s", "4"], 8000, SAME)
}

#[test]
fn fat16_4k_clusters() -> anyhow::Result<()> {
    compare(&["-F", "16", "-s", "8"], 40 << 10, SAME)
}

#[test]
fn fat32_512_byte_clusters() -> anyhow::Result<()> {
    compare(&["-F", "32", "-s", "1"], 64 << 10, SAME)
}

#[test]
fn fat32_4k_sectors() -> anyhow::Result<()> {
    compare(&["-F", "32", "-S", "4096", "-s", "1"], 300 << 10, SAME)
}

#[test]
fn fat16_64k_clusters() -> anyhow::Result<()> {
    compare(&["-F", "16", "-s", "128"], 300 << 10, SAME)
}

/// `mkfs.vfat -a` does not align the data region to the cluster size, so
/// clusters do not start on cluster-size boundaries of the device. The
/// host wants mappings aligned to fs-info's block size from device byte 0,
/// so the guest then answers with the sector size as its block size, and
/// st_blksize and statfs's f_bsize cannot be the kernel's cluster size:
/// statfs is compared in bytes instead.
#[test]
fn fat16_unaligned_data_region() -> anyhow::Result<()> {
    compare(&["-F", "16", "-s", "4", "-a", "-R", "3"], 20 << 10, Ignore { block_size: true, ..SAME })
}

/// Raw access to FAT16 structures, for corrupting them on purpose. Offsets
/// come from the BPB, as any reader computes them.
impl FatImage {
    fn le16(&self, offset: u64) -> anyhow::Result<u64> {
        let mut b = [0u8; 2];
        fs::File::open(&self.path)?.read_exact_at(&mut b, offset)?;
        Ok(u64::from(u16::from_le_bytes(b)))
    }

    fn poke(&self, offset: u64, bytes: &[u8]) -> anyhow::Result<()> {
        fs::OpenOptions::new().write(true).open(&self.path)?.write_all_at(bytes, offset)?;
        Ok(())
    }

    /// Device byte of FAT16 entry `cluster` in the first FAT (the one
    /// readers use), from the BPB's sector size and reserved sectors.
    fn fat_entry(&self, cluster: u64) -> anyhow::Result<u64> {
        Ok(self.le16(11)? * self.le16(14)? + 2 * cluster)
    }

    /// The first cluster of `file` in the root directory, from mshowfat.
    fn first_cluster(&self, file: &str) -> anyhow::Result<u64> {
        let out = self.mtools("mshowfat", &[&format!("::/{file}")])?;
        let out = String::from_utf8_lossy(&out.stdout);
        let first = out.split('<').nth(1).and_then(|r| r.split(['-', '>']).next()).context("no chain")?;
        first.trim().parse().with_context(|| format!("mshowfat said {out:?}"))
    }

    fn byte(&self, offset: u64) -> anyhow::Result<u64> {
        let mut b = [0u8; 1];
        fs::File::open(&self.path)?.read_exact_at(&mut b, offset)?;
        Ok(u64::from(b[0]))
    }

    /// Device byte of the FAT16 root directory: after the reserved sectors
    /// and the FATs.
    fn root_offset(&self) -> anyhow::Result<u64> {
        Ok((self.le16(14)? + self.byte(16)? * self.le16(22)?) * self.le16(11)?)
    }

    /// Device byte of data cluster `cluster`: clusters start after the root
    /// directory, at cluster number 2.
    fn cluster_offset(&self, cluster: u64) -> anyhow::Result<u64> {
        let data = self.root_offset()? + self.le16(17)? * 32;
        Ok(data + (cluster - 2) * self.byte(13)? * self.le16(11)?)
    }

    /// The FAT16 root directory: its device byte and its bytes.
    fn root_dir(&self) -> anyhow::Result<(u64, Vec<u8>)> {
        let root = self.root_offset()?;
        let mut dir = vec![0u8; (self.le16(17)? * 32) as usize];
        fs::File::open(&self.path)?.read_exact_at(&mut dir, root)?;
        Ok((root, dir))
    }

    /// Device byte of the root-directory entry whose 8.3 name is `short`.
    fn root_entry(&self, short: &[u8; 11]) -> anyhow::Result<u64> {
        let (root, dir) = self.root_dir()?;
        let at = dir.chunks(32).position(|e| &e[..11] == short).context("entry not in the root directory")?;
        Ok(root + at as u64 * 32)
    }
}

/// A small FAT16 image (2 KiB clusters) for corruption: `good.bin`,
/// `victim.bin` and `victim2.bin` (10 000 bytes, 5 clusters each) in the
/// root, `sub/inner.txt`, and `tail.bin` (2 MiB) written last, so it lies at
/// the end of the used area.
struct Corruptible {
    image: FatImage,
    data: Vec<u8>,
    tail: Vec<u8>,
}

impl Corruptible {
    fn build() -> anyhow::Result<Corruptible> {
        let dir = ScratchDir::new("fat-image")?;
        let path = dir.path().join("fat.img");
        run(Command::new("mkfs.vfat").args(["-F", "16", "-s", "4", "-C"]).arg(&path).arg("20000"))?;
        let image = FatImage { path, _dir: dir };
        let src = ScratchDir::new("fat-source")?;
        let data = pattern(10_000, 42);
        let tail = pattern(2 << 20, 43);
        for name in ["good.bin", "victim.bin", "victim2.bin"] {
            fs::write(src.path().join(name), &data)?;
        }
        fs::create_dir(src.path().join("sub"))?;
        fs::write(src.path().join("sub/inner.txt"), b"inner\n")?;
        fs::write(src.path().join("tail.bin"), &tail)?;
        for name in ["good.bin", "victim.bin", "victim2.bin", "sub", "tail.bin"] {
            run(Command::new("mcopy").args(["-s", "-i"]).arg(&image.path).arg(src.path().join(name)).arg("::/"))?;
        }
        Ok(Corruptible { image, data, tail })
    }
}

/// `read` fails with EIO or EUCLEAN, not with some other error or success.
fn assert_clean_failure(path: &Path) {
    match fs::read(path) {
        Ok(data) => panic!("{} read {} bytes from a corrupted file", path.display(), data.len()),
        Err(e) => assert!(
            matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EUCLEAN)),
            "{}: expected EIO or EUCLEAN, got {e}",
            path.display()
        ),
    }
}

/// Whatever the corruption, the intact objects still read back.
fn assert_intact(mount: &FshostMount, c: &Corruptible) {
    assert_eq!(fs::read(mount.path().join("good.bin")).expect("good.bin"), c.data);
    assert_eq!(fs::read(mount.path().join("sub/inner.txt")).expect("sub/inner.txt"), b"inner\n");
}

fn assert_no_panic(log: &str) {
    assert!(!log.contains("panicked"), "a panic in the log:\n{log}");
}

/// Damaged chains: a loop within the file's size is followed, as the
/// kernel follows it (`fat_damaged.rs` compares these with the kernel);
/// out-of-range clusters fail with EIO from where they are met.
#[test]
fn fat_chain_loop_and_out_of_range_clusters_fail_cleanly() -> anyhow::Result<()> {
    require_root();
    let c = Corruptible::build()?;
    // victim.bin: its third cluster points back to its first (2 KiB
    // clusters: the file reads clusters 0, 1, 2, 0, 1).
    let first = c.image.first_cluster("victim.bin")?;
    c.image.poke(c.image.fat_entry(first + 2)?, &(first as u16).to_le_bytes())?;
    // victim2.bin: its second cluster points past the last cluster.
    let first2 = c.image.first_cluster("victim2.bin")?;
    c.image.poke(c.image.fat_entry(first2 + 1)?, &0xFFF0u16.to_le_bytes())?;
    // tail.bin: its directory entry names a cluster past the end.
    let tail = c.image.root_entry(b"TAIL    BIN")?;
    c.image.poke(tail + 26, &0xFFF0u16.to_le_bytes())?;

    let mount = FshostMount::mount(&guest("fat"), &c.image.path, &[])?;
    let looped = [&c.data[..6144], &c.data[..10_000 - 6144]].concat();
    assert_eq!(fs::read(mount.path().join("victim.bin")).context("victim.bin")?, looped);
    for name in ["victim2.bin", "tail.bin"] {
        assert_clean_failure(&mount.path().join(name));
    }
    assert_intact(&mount, &c);
    let names: Vec<_> = fs::read_dir(mount.path())?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
    assert_eq!(names.len(), 5, "the listing survives: {names:?}");
    assert_no_panic(&mount.log());

    let cat = offline("cat", &guest("fat"), &c.image.path, &["victim2.bin".as_ref()])?;
    assert!(!cat.status.success(), "fshost cat of a broken chain succeeded");
    let stderr = String::from_utf8_lossy(&cat.stderr);
    assert!(!stderr.trim().is_empty(), "fshost cat failed without saying why");
    assert_no_panic(&stderr);
    Ok(())
}

#[test]
fn bad_boot_sectors_are_refused_without_panic() -> anyhow::Result<()> {
    require_root();
    let c = Corruptible::build()?;
    let original = fs::read(&c.image.path)?;
    let cases: [(&str, u64, &[u8]); 6] = [
        ("sector size 513", 11, &513u16.to_le_bytes()),
        ("sector size 8192", 11, &8192u16.to_le_bytes()),
        ("3 sectors per cluster", 13, &[3]),
        ("no reserved sectors", 14, &[0, 0]),
        ("no FATs", 16, &[0]),
        ("FAT size 0 with 0 sectors", 19, &[0, 0, 0xF8, 0, 0]),
    ];
    for (what, offset, bytes) in cases {
        fs::write(&c.image.path, &original)?;
        c.image.poke(offset, bytes)?;
        let out = offline("ls", &guest("fat"), &c.image.path, &[])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: fshost ls succeeded:\n{}", String::from_utf8_lossy(&out.stdout));
        assert!(!stderr.trim().is_empty(), "{what}: failed without a message");
        assert_no_panic(&stderr);
    }
    Ok(())
}

#[test]
fn a_truncated_image_reads_up_to_its_end() -> anyhow::Result<()> {
    require_root();
    let c = Corruptible::build()?;
    // Cut the image 1 MiB into tail.bin, the last file written.
    let cut = c.image.cluster_offset(c.image.first_cluster("tail.bin")?)? + (1 << 20);
    fs::OpenOptions::new().write(true).open(&c.image.path)?.set_len(cut)?;

    let mount = FshostMount::mount(&guest("fat"), &c.image.path, &[])?;
    assert_intact(&mount, &c);
    let file = fs::File::open(mount.path().join("tail.bin"))?;
    let mut head = vec![0u8; 1 << 19];
    file.read_exact_at(&mut head, 0).context("the part of tail.bin inside the image")?;
    assert_eq!(head, c.tail[..1 << 19]);
    assert_clean_failure(&mount.path().join("tail.bin"));
    assert_no_panic(&mount.log());
    Ok(())
}

/// The index of the 32-byte slot in `dir` holding the first 13 characters
/// of a long name that starts with `start` (≤ 5 ASCII characters): the
/// LFN slot with sequence number 1, just before the short entry.
fn first_lfn_slot(dir: &[u8], start: &str) -> anyhow::Result<usize> {
    let utf16: Vec<u8> = start.encode_utf16().flat_map(u16::to_le_bytes).collect();
    dir.chunks(32)
        .position(|slot| slot[11] == 0x0F && slot[0] & 0x3F == 1 && slot[1..].starts_with(&utf16))
        .with_context(|| format!("no long-name slot starting with {start:?}"))
}

/// Directory edge cases, each as the kernel's __fat_readdir and
/// fat_parse_long treat it, made by editing a root directory that mtools
/// wrote: a long name whose checksum no longer matches its short entry, one
/// with a broken sequence number, one whose short entry was deleted (an
/// orphan), a UTF-16 name holding a lone surrogate, a short name whose first
/// byte is 0x05 (shown as 0xE5, cp437 'σ'), and live entries after a 0x00
/// "end of directory" slot (the kernel reads on). Both views must agree.
#[test]
fn directory_edge_cases_match_the_kernel() -> anyhow::Result<()> {
    require_root();
    let dir = ScratchDir::new("fat-image")?;
    let path = dir.path().join("fat.img");
    run(Command::new("mkfs.vfat").args(["-F", "16", "-s", "4", "-n", "EDGES", "-C"]).arg(&path).arg("20000"))?;
    let image = FatImage { path, _dir: dir };
    let src = ScratchDir::new("fat-source")?;
    let names = [
        "checksum mismatch long name.txt",
        "sequence broken in this long name.txt",
        "orphaned long name file.txt",
        "lone surrogate in here.txt",
        "E5START.TXT",
        "deleted then zeroed.txt",
        "after the end marker.txt",
        "AFTER2.TXT",
    ];
    for (i, name) in names.iter().enumerate() {
        fs::write(src.path().join(name), pattern(700, i as u32))?;
        run(Command::new("mcopy").arg("-i").arg(&image.path).arg(src.path().join(name)).arg("::/"))?;
    }
    image.mtools("mdel", &["::/deleted then zeroed.txt"])?;
    let (root, mut raw) = image.root_dir()?;
    let slot = |i: usize| i * 32;
    // The checksum of the slot nearest the short entry.
    let i = first_lfn_slot(&raw, "check")?;
    raw[slot(i) + 13] ^= 0x5A;
    // The middle slot's sequence number (3 slots: 0x43, 2, 1).
    let i = first_lfn_slot(&raw, "seque")?;
    raw[slot(i - 1)] = 7;
    // The short entry after the long name, deleted.
    let i = first_lfn_slot(&raw, "orpha")?;
    raw[slot(i + 1)] = 0xE5;
    // The fourth UTF-16 unit of "lone surrogate...", a high surrogate alone.
    let i = first_lfn_slot(&raw, "lone ")?;
    raw[slot(i) + 7..slot(i) + 9].copy_from_slice(&0xD800u16.to_le_bytes());
    // 0x05 in a short name's first byte stands for 0xE5.
    let e5 = raw.chunks(32).position(|e| &e[..11] == b"E5START TXT").context("E5START.TXT")?;
    raw[slot(e5)] = 0x05;
    // The first slot of the deleted file becomes an end marker.
    let zeroed = raw.chunks(32).position(|e| e[0] == 0xE5 && e[11] == 0x0F).context("deleted slots")?;
    raw[slot(zeroed)] = 0x00;
    fs::OpenOptions::new().write(true).open(&image.path)?.write_all_at(&raw, root)?;

    let kernel = uml::snapshot_vfat(&image.path, "ro,utf8", None)?;
    // What the edits did, in the kernel's view: names shown by their short
    // alias, the orphan gone, the surrogate dropped, 0x05 shown as σ,
    // entries after the 0x00 slot still there.
    for name in
        ["CHECKS~1.TXT", "SEQUEN~1.TXT", "lon surrogate in here.txt", "\u{3c3}5START.TXT", "after the end marker.txt"]
    {
        ensure!(
            kernel.entries.contains_key(name.as_bytes()),
            "the kernel does not show {name:?}: {:?}",
            kernel.entries.keys().map(|k| k.escape_ascii().to_string()).collect::<Vec<_>>()
        );
    }
    let mount = FshostMount::mount(&guest("fat"), &image.path, &[])?;
    let out = ScratchDir::new("fat-snapshot")?;
    let fshost = snapshot::take(mount.path(), out.path(), None)?;
    let diffs: Vec<String> = snapshot::diff(&kernel, &fshost, SAME).iter().map(|d| d.to_string()).collect();
    ensure!(diffs.is_empty(), "{} differences:\n{}\nfshost log:\n{}", diffs.len(), diffs.join("\n"), mount.log());
    Ok(())
}

/// The volume label and serial fshost reports (`fshost info`) are what
/// blkid reads: the root directory's label entry (`mlabel` rewrites it)
/// and the BPB's serial number, on FAT12, FAT16 and FAT32.
#[test]
fn label_and_serial_match_blkid() -> anyhow::Result<()> {
    for (fat, size_kib) in [("12", "4000"), ("16", "20000"), ("32", "40000")] {
        let dir = ScratchDir::new("fat-image")?;
        let path = dir.path().join("fat.img");
        run(Command::new("mkfs.vfat")
            .args(["-F", fat, "-n", "FIRST NAME", "-i", "89ABCDEF", "-C"])
            .arg(&path)
            .arg(size_kib))?;
        let image = FatImage { path, _dir: dir };
        for relabel in [None, Some("RENAMED")] {
            if let Some(label) = relabel {
                image.mtools("mlabel", &[&format!("::{label}")])?;
            }
            let blkid = run(Command::new("blkid").args(["-o", "export"]).arg(&image.path))?;
            let blkid = String::from_utf8_lossy(&blkid.stdout);
            let field = |name: &str| -> String {
                blkid.lines().find_map(|l| l.strip_prefix(&format!("{name}="))).unwrap_or_default().replace("\\ ", " ")
            };
            ensure!(field("LABEL") == relabel.unwrap_or("FIRST NAME"), "blkid: {blkid}");
            let info = offline("info", &guest("fat"), &image.path, &[])?;
            ensure!(info.status.success(), "fshost info: {}", String::from_utf8_lossy(&info.stderr));
            let info = String::from_utf8_lossy(&info.stdout);
            let line = |name: &str| -> String {
                info.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).unwrap_or_default().to_string()
            };
            assert_eq!(line("label"), field("LABEL"), "FAT{fat} label (relabelled: {relabel:?})\n{blkid}\n{info}");
            assert_eq!(line("uuid"), field("UUID").replace('-', "").to_lowercase(), "FAT{fat} serial\n{blkid}\n{info}");
            assert_eq!(line("type"), "vfat");
        }
    }
    Ok(())
}
