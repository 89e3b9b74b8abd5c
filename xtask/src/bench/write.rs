//! The write rows of `cargo xtask bench --only write`: each peer mounts a
//! fresh copy of an image read-write (the kernel: `losetup` + `mount`;
//! `fuse2fs -o rw`; `fshost mount -o rw`), runs one workload, unmounts, and
//! the copy is checked with `e2fsck -fn` (a peer that leaves an unclean
//! image gets a note: speed that loses data is not speed).
//!
//! Workloads (the crash-safety and write-speed issue's targets):
//! - sequential write of a file in 1 MiB writes, fsync at the end (MB/s);
//! - random 4 KiB overwrites inside the big image's file, 1 and 4 threads,
//!   fsync at the end (IOPS);
//! - untar of the tree (the tarball on tmpfs) then `sync -f` (seconds);
//! - `rm -rf` of that tree then `sync -f` (seconds).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use super::{CHUNK, Env, Image, MIB, Mounted, RAND_IO, Results, Rng, check_stop, drop_caches, order};

/// A copy of `img` at `to` (sparse), for one read-write run.
fn fresh_copy(img: &Path, to: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(to);
    crate::run(Command::new("cp").arg("--sparse=always").arg(img).arg(to))
}

/// An empty ext4 image of `mib` MiB with its inode tables and journal
/// initialised at mkfs time (so the kernel's lazy init thread does not
/// write behind the timed runs).
fn empty_image(path: &Path, mib: u64) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    crate::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "bench-rw", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(path)
            .arg(format!("{mib}M")),
    )
}

/// `e2fsck -fn`: None when clean, else the first lines of its report.
fn fsck(img: &Path) -> Option<String> {
    let out = Command::new("e2fsck").arg("-fn").arg(img).output().ok()?;
    if out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some(format!("exit {}: {}", out.status, text.lines().take(6).collect::<Vec<_>>().join(" | ")))
}

/// Write `size` bytes of PRNG data to a new file `path` in 1 MiB writes,
/// then fsync; MB/s over the whole (fsync included).
fn seq_write(path: &Path, size: u64) -> anyhow::Result<f64> {
    let mut buf = vec![0u8; CHUNK];
    let mut rng = Rng(0x5eed_0000_0077);
    let t0 = Instant::now();
    let mut f = File::create(path).with_context(|| format!("create {}", path.display()))?;
    for _ in 0..size / CHUNK as u64 {
        check_stop()?;
        for w in buf.chunks_exact_mut(8) {
            w.copy_from_slice(&rng.next().to_le_bytes());
        }
        f.write_all(&buf)?;
    }
    f.sync_all()?;
    Ok(size as f64 / 1e6 / t0.elapsed().as_secs_f64())
}

/// `count` 4 KiB pwrites at random aligned offsets inside the first `size`
/// bytes of `path`, split over `threads`, then fsync; IOPS.
fn rand_write(path: &Path, size: u64, threads: usize, count: usize, seed: u64) -> anyhow::Result<f64> {
    let f = OpenOptions::new().write(true).open(path).with_context(|| format!("open {}", path.display()))?;
    let blocks = size / RAND_IO;
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let f = &f;
                s.spawn(move || -> anyhow::Result<()> {
                    let mut rng = Rng(seed ^ (t as u64).wrapping_mul(0x1234_5678_9abc_def1));
                    let mut buf = [0u8; RAND_IO as usize];
                    for i in 0..count / threads {
                        if i % 256 == 0 {
                            check_stop()?;
                        }
                        let off = rng.next() % blocks * RAND_IO;
                        buf[..8].copy_from_slice(&rng.next().to_le_bytes());
                        f.write_all_at(&buf, off)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().expect("writer thread panicked"))
    })?;
    f.sync_all()?;
    Ok((count / threads * threads) as f64 / t0.elapsed().as_secs_f64())
}

/// Run `cmd` (in `dir`), then `sync -f dir`; seconds for both.
fn timed_then_sync(cmd: &mut Command, dir: &Path) -> anyhow::Result<f64> {
    check_stop()?;
    let t0 = Instant::now();
    let out = cmd.current_dir(dir).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("{cmd:?} failed: {}: {}", out.status, err.lines().take(3).collect::<Vec<_>>().join(" | "));
    }
    crate::run(Command::new("sync").arg("-f").arg(dir))?;
    let took = t0.elapsed().as_secs_f64();
    check_stop()?;
    Ok(took)
}

/// The tarball of `source` on tmpfs (built once per source).
fn tarball(source: &Path) -> anyhow::Result<PathBuf> {
    let tar = PathBuf::from("/dev/shm/fshost-bench-tree.tar");
    let marker = tar.with_extension("source");
    if tar.exists() && std::fs::read_to_string(&marker).is_ok_and(|s| Path::new(&s) == source) {
        return Ok(tar);
    }
    eprintln!("bench: making the tarball of {} on tmpfs", source.display());
    let _ = std::fs::remove_file(&marker);
    // --ignore-failed-read: /usr holds a few unreadable files for non-root;
    // as root there are none, but a partial tree is still a fair workload.
    let status = Command::new("tar")
        .args(["cf"])
        .arg(&tar)
        .args(["--ignore-failed-read", "-C"])
        .arg(source)
        .arg(".")
        .stderr(Stdio::null())
        .status()?;
    if !status.success() && status.code() != Some(1) {
        bail!("tar of {} failed: {status}", source.display());
    }
    std::fs::write(&marker, source.as_os_str().as_encoded_bytes())?;
    Ok(tar)
}

/// The write rows. `big` holds one file of `big.file_size` bytes (the
/// random overwrites' target); `tree` is the tree image, whose source
/// (`tree_source`) is the untar workload's tarball.
pub(super) fn run(
    env: &Env,
    res: &mut Results,
    (runs, small): (usize, bool),
    big: &Image,
    tree: &Image,
    tree_source: &Path,
) -> anyhow::Result<()> {
    let tree_entries = tree.entries;
    let tree_mib = std::fs::metadata(&tree.path).map_or(0, |m| m.len()) / MIB;
    let seq_size = if small { 64 * MIB } else { 1024 * MIB };
    let rand_count = if small { 4000 } else { 20_000 };
    let scratch = env.dir.join("rw");
    std::fs::create_dir_all(&scratch)?;
    let copy = scratch.join("copy.img");
    let empty = scratch.join("empty.img");
    let empty_mib = seq_size / MIB + tree_mib * 5 / 4 + 256;
    empty_image(&empty, empty_mib)?;
    let tar = tarball(tree_source)?;

    res.row("w_seq", format!("seq write {} MiB + fsync", seq_size / MIB), "MB/s", true);
    res.row("w_rand1", format!("random 4 KiB overwrite, 1 thread + fsync ({rand_count})"), "IOPS", true);
    res.row("w_rand4", format!("random 4 KiB overwrite, 4 threads + fsync ({rand_count})"), "IOPS", true);
    res.row("w_untar", format!("untar {tree_entries} entries + sync"), "s", false);
    res.row("w_rmrf", "rm -rf of that tree + sync".into(), "s", false);
    res.load.push(super::loadavg());
    let mut unclean = Vec::new();
    for i in 0..runs {
        for peer in order(i) {
            eprintln!("bench: write run {}/{runs}: {}", i + 1, peer.name());
            res.attempt(format!("write run {}: {}", i + 1, peer.name()), |res| {
                // Sequential write, untar and rm -rf on an empty image.
                fresh_copy(&empty, &copy)?;
                let (m, _) = Mounted::new_rw(env, peer, &copy)?;
                drop_caches()?;
                res.add("w_seq", peer, seq_write(&m.mnt.join("seq.bin"), seq_size)?);
                let dest = m.mnt.join("tree");
                std::fs::create_dir(&dest)?;
                drop_caches()?;
                res.add("w_untar", peer, timed_then_sync(Command::new("tar").arg("xf").arg(&tar), &dest)?);
                drop_caches()?;
                res.add("w_rmrf", peer, timed_then_sync(Command::new("rm").args(["-rf", "tree"]), &m.mnt)?);
                res.add_usage("write: seq + untar + rm -rf", peer, &m);
                m.unmount()?;
                if let Some(report) = fsck(&copy) {
                    unclean.push(format!("{} (seq/untar/rm, run {}): {report}", peer.name(), i + 1));
                }
                // Random overwrites inside the big image's file.
                fresh_copy(&big.path, &copy)?;
                let (m, _) = Mounted::new_rw(env, peer, &copy)?;
                let file = m.mnt.join(super::BIG_NAME);
                let seed = 0x77e1_0000 + i as u64;
                drop_caches()?;
                res.add("w_rand1", peer, rand_write(&file, big.file_size, 1, rand_count, seed)?);
                drop_caches()?;
                res.add("w_rand4", peer, rand_write(&file, big.file_size, 4, rand_count, seed + 1000)?);
                res.add_usage("write: random overwrites", peer, &m);
                m.unmount()?;
                if let Some(report) = fsck(&copy) {
                    unclean.push(format!("{} (random overwrites, run {}): {report}", peer.name(), i + 1));
                }
                Ok(())
            })?;
        }
    }
    let _ = std::fs::remove_file(&copy);
    res.notes.push(format!(
        "write: each run on a fresh copy mounted read-write (kernel: losetup + mount; fuse2fs -o rw; fshost -o rw), \
         e2fsck -fn after every unmount: {}",
        if unclean.is_empty() { "every image clean".to_string() } else { format!("NOT CLEAN: {}", unclean.join("; ")) }
    ));
    Ok(())
}
