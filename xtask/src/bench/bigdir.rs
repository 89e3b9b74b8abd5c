//! The huge-directory rows of `cargo xtask bench --only bigdir`: one
//! directory of `FSHOST_BIGDIR_ENTRIES` empty files (default 300,000;
//! 30,000 with `--small`), listed and stat'ed cold and warm.
//!
//! Images (built once into `target/bench/`, reused while their marker says
//! the same count):
//! - `htree`: mkfs.ext4, the kernel's ext4 creates the files in /big through
//!   a loop mount, so /big is an htree as on real disks;
//! - `linear`: a copy of that image with `tune2fs -O ^dir_index` and
//!   `e2fsck -fyD`, which rewrites /big as a linear directory (the kernel
//!   fills a linear directory in quadratic time: 300,000 names took it over
//!   20 minutes here);
//! - `fat`: FAT32 (`mkfs.vfat -F 32`) whose /BIG holds 65,534 files (or
//!   the count, if smaller), FAT's largest directory (65,536 slots with
//!   "." and ".."), copied in by mtools. This kernel has no vfat, so only
//!   fshost mounts it (with the FAT guest); its rows have no ratio.
//!
//! Rows per image, each group on a fresh mount (so the peak RSS printed
//! under the table is the group's), caches dropped (`sync -f` and
//! drop_caches) before every cold run:
//! - `ls -f` (names only: getdents), cold;
//! - `find DIR -printf '%s %m %u'` (every file stat'ed), cold;
//! - `ls -l`, cold and then warm (coreutils also asks every file for
//!   `security.selinux` and `system.posix_acl_access`);
//! - 2,000 `lstat`s of random names, cold.
//!
//! fuse2fs runs `ls -f` and the random stats only: its `ls -l` and `find`
//! of 300,000 files take minutes (it answers each getxattr and getattr by
//! reading the inode).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use super::{Env, Image, Mounted, Peer, Results, Rng, check_stop, drop_caches, order, read_marker, write_marker};

/// The directory's name in the ext4 images.
const NAME: &str = "big";
/// The most files a FAT directory holds with 8.3 names: 65,536 slots,
/// "." and ".." included.
const FAT_MAX: u64 = 65_534;
/// Random stats per run.
const STATS: usize = 2000;

/// Which image a row is about.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    Htree,
    Linear,
    Fat,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Htree => "htree",
            Kind::Linear => "linear",
            Kind::Fat => "FAT32",
        }
    }
}

/// The entry count: `FSHOST_BIGDIR_ENTRIES`, or the default.
fn entries(small: bool) -> anyhow::Result<u64> {
    match std::env::var("FSHOST_BIGDIR_ENTRIES") {
        Ok(n) => n.parse().with_context(|| format!("FSHOST_BIGDIR_ENTRIES={n} is not a number")),
        Err(_) => Ok(if small { 30_000 } else { 300_000 }),
    }
}

/// The `i`th file's name (from 0): `file-0000042` on ext4, `F0000043` (a
/// short name, so one slot each; numbered from 1) on FAT.
fn file_name(kind: Kind, i: u64) -> String {
    if kind == Kind::Fat { format!("F{:07}", i + 1) } else { format!("file-{i:07}") }
}

/// The three images (built if missing).
pub(super) fn images(dir: &Path, small: bool) -> anyhow::Result<Vec<(Image, Kind)>> {
    let count = entries(small)?;
    let htree = htree_image(dir, count)?;
    let linear = linear_image(dir, &htree, count)?;
    let fat = fat_image(dir, count.min(FAT_MAX))?;
    Ok(vec![(htree, Kind::Htree), (linear, Kind::Linear), (fat, Kind::Fat)])
}

fn reuse(img: &Path, count: u64, about: &str) -> Option<Image> {
    let m = read_marker(img)?;
    (m.get("count").map(String::as_str) == Some(&count.to_string())).then(|| Image {
        path: img.to_path_buf(),
        about: about.to_string(),
        entries: count,
        file_size: 0,
    })
}

fn htree_image(dir: &Path, count: u64) -> anyhow::Result<Image> {
    let img = dir.join(format!("bigdir-htree-{count}.img"));
    let about = format!("/{NAME} holds {count} empty files made by the kernel's ext4 (an htree directory)");
    if let Some(image) = reuse(&img, count, &about) {
        return Ok(image);
    }
    let _ = std::fs::remove_file(img.with_extension("done"));
    eprintln!("bench: building {} ({count} files through the kernel)", img.display());
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-L", "bench-bigdir", "-N"]).arg((count + 10_000).to_string());
    crate::run(mkfs.arg(&img).arg(format!("{}M", 256 + count / 200)))?;
    let mnt = dir.join("mnt/bigdir-build");
    std::fs::create_dir_all(&mnt)?;
    crate::run(Command::new("mount").args(["-o", "loop"]).arg(&img).arg(&mnt))?;
    let filled = (|| -> anyhow::Result<()> {
        let d = mnt.join(NAME);
        std::fs::create_dir(&d)?;
        for i in 0..count {
            if i % 1_000 == 0 {
                check_stop()?;
            }
            File::create(d.join(file_name(Kind::Htree, i)))?;
        }
        Ok(())
    })();
    let unmounted = super::umount_patiently(&mnt);
    filled?;
    unmounted?;
    write_marker(&img, &[("count", count.to_string())])?;
    Ok(Image { path: img, about, entries: count, file_size: 0 })
}

fn linear_image(dir: &Path, htree: &Image, count: u64) -> anyhow::Result<Image> {
    let img = dir.join(format!("bigdir-linear-{count}.img"));
    let about = format!(
        "the htree image with tune2fs -O ^dir_index and e2fsck -fyD: /{NAME} a linear directory of {count} files"
    );
    if let Some(image) = reuse(&img, count, &about) {
        return Ok(image);
    }
    let _ = std::fs::remove_file(img.with_extension("done"));
    eprintln!("bench: building {} (the htree image, unindexed)", img.display());
    crate::run(Command::new("cp").arg("--sparse=always").arg(&htree.path).arg(&img))?;
    crate::run(Command::new("tune2fs").args(["-O", "^dir_index"]).arg(&img))?;
    // Exit 1: "errors corrected", here the index flag cleared as asked.
    let status = Command::new("e2fsck").arg("-fyD").arg(&img).stdout(Stdio::null()).status()?;
    if !matches!(status.code(), Some(0 | 1)) {
        bail!("e2fsck -fyD {}: {status}", img.display());
    }
    let dump = Command::new("debugfs").arg("-R").arg(format!("htree_dump /{NAME}")).arg(&img).output()?;
    if String::from_utf8_lossy(&dump.stdout).contains("Root node dump") {
        bail!("/{NAME} of {} is still indexed", img.display());
    }
    write_marker(&img, &[("count", count.to_string())])?;
    Ok(Image { path: img, about, entries: count, file_size: 0 })
}

fn fat_image(dir: &Path, count: u64) -> anyhow::Result<Image> {
    let img = dir.join(format!("bigdir-fat-{count}.img"));
    let about = format!("FAT32 whose /BIG holds {count} empty files with 8.3 names, copied in by mtools");
    if let Some(image) = reuse(&img, count, &about) {
        return Ok(image);
    }
    let _ = std::fs::remove_file(img.with_extension("done"));
    let _ = std::fs::remove_file(&img);
    eprintln!("bench: building {} ({count} files through mtools)", img.display());
    let src = dir.join("bigdir-fat-src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(src.join("BIG"))?;
    for i in 0..count {
        File::create(src.join("BIG").join(file_name(Kind::Fat, i)))?;
    }
    crate::run(Command::new("mkfs.vfat").args(["-F", "32", "-n", "BIGDIR", "-C"]).arg(&img).arg("524288"))?;
    crate::run(Command::new("mcopy").arg("-s").arg("-i").arg(&img).arg(src.join("BIG")).arg("::/"))?;
    std::fs::remove_dir_all(&src)?;
    write_marker(&img, &[("count", count.to_string())])?;
    Ok(Image { path: img, about, entries: count, file_size: 0 })
}

/// `ls` with `args` on `dir`, its output read and dropped; seconds.
fn ls(dir: &Path, args: &[&str]) -> anyhow::Result<f64> {
    check_stop()?;
    let t0 = Instant::now();
    let out = Command::new("ls").args(args).arg(dir).env("LC_ALL", "C").stderr(Stdio::inherit()).output()?;
    let secs = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("ls {args:?} {} failed: {}", dir.display(), out.status);
    }
    Ok(secs)
}

/// `lstat` of `STATS` random names of the directory; seconds.
fn random_stats(dir: &Path, kind: Kind, count: u64, seed: u64) -> anyhow::Result<f64> {
    check_stop()?;
    let mut rng = Rng(seed);
    let names: Vec<PathBuf> = (0..STATS).map(|_| dir.join(file_name(kind, rng.next() % count))).collect();
    let t0 = Instant::now();
    for n in &names {
        std::fs::symlink_metadata(n).with_context(|| format!("lstat {}", n.display()))?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// The directory in a mounted image: /big, or FAT's BIG as the mount
/// shows its name.
fn the_dir(mnt: &Path, kind: Kind) -> anyhow::Result<PathBuf> {
    if kind != Kind::Fat {
        return Ok(mnt.join(NAME));
    }
    for e in std::fs::read_dir(mnt)? {
        let e = e?;
        if e.file_name().eq_ignore_ascii_case("big") {
            return Ok(e.path());
        }
    }
    bail!("no BIG in {}", mnt.display())
}

/// A row key or label made at run time (rows are keyed by static strings).
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Measure every row of every image.
pub(super) fn run(env: &Env, res: &mut Results, runs: usize, images: &[(Image, Kind)]) -> anyhow::Result<()> {
    for (img, kind) in images {
        let (n, k) = (img.entries, kind.name());
        let row = |what: &str| leak(format!("bigdir_{what}_{k}"));
        let (f, find, lc, lw, st) = (row("f"), row("find"), row("lc"), row("lw"), row("stat"));
        res.row(f, format!("ls -f of {n} names ({k}), cold"), "s", false);
        res.row(find, format!("find -printf of {n} files ({k}), cold"), "s", false);
        res.row(lc, format!("ls -l of {n} files ({k}), cold"), "s", false);
        res.row(lw, format!("ls -l of {n} files ({k}), warm"), "s", false);
        res.row(st, format!("{STATS} random lstat of {n} ({k}), cold"), "s", false);
        let group = |what: &str| leak(format!("{k} {n}: {what}"));
        let groups = (group("ls -f"), group("find"), group("ls -l cold+warm"), group("random lstat"));
        res.load.push(super::loadavg());
        for i in 0..runs {
            let this_run: Vec<Peer> = if *kind == Kind::Fat { vec![Peer::Fshost] } else { order(i).to_vec() };
            for peer in this_run {
                eprintln!("bench: bigdir {k} run {}/{runs}: {}", i + 1, peer.name());
                res.attempt(format!("bigdir {k} run {}: {}", i + 1, peer.name()), |res| {
                    let mount = || -> anyhow::Result<(Mounted, PathBuf)> {
                        let (m, _) = if *kind == Kind::Fat {
                            Mounted::with_plugin(env, peer, &img.path, &env.fat_plugin)?
                        } else {
                            Mounted::new(env, peer, &img.path, false)?
                        };
                        let d = the_dir(&m.mnt, *kind)?;
                        Ok((m, d))
                    };
                    let (m, d) = mount()?;
                    drop_caches()?;
                    res.add(f, peer, ls(&d, &["-f"])?);
                    res.add_usage(groups.0, peer, &m);
                    m.unmount()?;
                    let (m, d) = mount()?;
                    drop_caches()?;
                    res.add(st, peer, random_stats(&d, *kind, n, 0x57a7_0000 + i as u64)?);
                    res.add_usage(groups.3, peer, &m);
                    m.unmount()?;
                    if peer == Peer::Fuse2fs {
                        return Ok(());
                    }
                    let (m, d) = mount()?;
                    drop_caches()?;
                    res.add(find, peer, super::walk(&d)?);
                    res.add_usage(groups.1, peer, &m);
                    m.unmount()?;
                    let (m, d) = mount()?;
                    drop_caches()?;
                    res.add(lc, peer, ls(&d, &["-l"])?);
                    res.add(lw, peer, ls(&d, &["-l"])?);
                    res.add_usage(groups.2, peer, &m);
                    m.unmount()
                })?;
            }
        }
    }
    res.notes.push(
        "huge directory: each group on a fresh mount; fuse2fs runs ls -f and the random lstats only (its ls -l and \
         find of 300,000 files take minutes). FAT32: fshost alone (this kernel has no vfat), no ratio."
            .into(),
    );
    Ok(())
}
