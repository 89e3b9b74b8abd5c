//! `cargo xtask bench`: fshost against the kernel's ext4 driver and fuse2fs
//! on the same images, in one run. A benchmark, not a test: it prints
//! numbers and asserts nothing about them.
//!
//! ```text
//! cargo xtask bench [--small] [--runs N] [--only seq,rand,walk,tar,mount,bigdir,write] [--no-build] [--tree DIR]
//! ```
//!
//! - Images (built once into `target/bench/`, reused while their `.done`
//!   marker exists): `big.img` holds one 1 GiB file of PRNG bytes;
//!   `tree.img` is `mkfs.ext4 -d /usr` (100k+ real files). `--small` uses
//!   a 64 MiB file and `/usr/include` (~10k entries) for a smoke run.
//! - Each image is mounted three ways: the kernel (`losetup -r` + `mount -o
//!   ro`), `fuse2fs -o ro -f`, and `fshost mount --foreground` (with its own
//!   compiled-guest cache in `target/bench/guest-cache`, primed once).
//! - Every run of a workload mounts afresh and drops the page cache
//!   (`sync; echo 3 > drop_caches`) before its cold part, so no peer keeps
//!   a warm userspace cache either; runs are interleaved across the peers
//!   (the order rotates every run) and the table shows medians.
//! - Every mount and loop device is held by a guard that unmounts / detaches
//!   on every path; SIGINT/SIGTERM stop the run between steps, and the mount
//!   servers run in their own process group so ctrl-C reaches only us.
//! - `write` (bench/write.rs): read-write rows on fresh copies, each
//!   checked with `e2fsck -fn` after its unmount.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

mod bigdir;
mod write;

const MIB: u64 = 1 << 20;
/// Seq reads and the read-all use this chunk size.
const CHUNK: usize = 1 << 20;
/// Random reads: this size, at aligned offsets.
const RAND_IO: u64 = 4096;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Peer {
    Kernel,
    Fuse2fs,
    Fshost,
}

const PEERS: [Peer; 3] = [Peer::Kernel, Peer::Fuse2fs, Peer::Fshost];

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Kernel => "kernel",
            Peer::Fuse2fs => "fuse2fs",
            Peer::Fshost => "fshost",
        }
    }
}

/// The peers in the order of run `i` (rotated, so no peer always goes first).
fn order(i: usize) -> [Peer; 3] {
    let mut p = PEERS;
    p.rotate_left(i % 3);
    p
}

// ---- stopping on SIGINT / SIGTERM -------------------------------------------

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    STOP.store(true, Ordering::SeqCst);
}

unsafe extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
    fn sysconf(name: i32) -> i64;
}

fn catch_signals() {
    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;
    for sig in [SIGINT, SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe { signal(sig, on_signal as *const () as usize) };
    }
}

fn check_stop() -> anyhow::Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

// ---- options ------------------------------------------------------------------

struct Opts {
    small: bool,
    runs: usize,
    only: Vec<String>,
    build: bool,
    tree: Option<PathBuf>,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts { small: false, runs: 3, only: Vec::new(), build: true, tree: None };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--small" => o.small = true,
            "--no-build" => o.build = false,
            "--runs" => o.runs = it.next().context("--runs N")?.parse().context("--runs N")?,
            "--only" => o.only = it.next().context("--only LIST")?.split(',').map(str::to_string).collect(),
            "--tree" => o.tree = Some(it.next().context("--tree DIR")?.into()),
            _ => bail!(
                "usage: cargo xtask bench [--small] [--runs N] [--only seq,rand,walk,tar,mount,bigdir,write] [--no-build] [--tree DIR]"
            ),
        }
    }
    if o.runs == 0 {
        bail!("--runs must be at least 1");
    }
    for w in &o.only {
        if !["seq", "rand", "walk", "tar", "mount", "bigdir", "write"].contains(&w.as_str()) {
            bail!("unknown workload {w:?} (seq, rand, walk, tar, mount, bigdir, write)");
        }
    }
    Ok(o)
}

impl Opts {
    fn wants(&self, w: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == w)
    }
}

// ---- small helpers ------------------------------------------------------------

fn quiet(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim_end());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn drop_caches() -> anyhow::Result<()> {
    check_stop()?;
    // syncfs of the filesystem holding the images, not sync(2): a global
    // sync waits on every filesystem of the machine, and one stuck
    // elsewhere (a kernel bug's leaked journal handle was seen here) would
    // hang the benchmark.
    quiet(Command::new("sync").arg("-f").arg(crate::target_dir()))?;
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("dropping caches (needs root)")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Whether `path` is a mount point now (from /proc/self/mountinfo).
fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 })
}

fn fmt_num(x: f64) -> String {
    if x >= 1000.0 {
        format!("{x:.0}")
    } else if x >= 100.0 {
        format!("{x:.1}")
    } else if x >= 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// splitmix64: fast, good enough for incompressible bytes and offsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

// ---- images ---------------------------------------------------------------------

struct Image {
    path: PathBuf,
    /// What it holds, for the header.
    about: String,
    /// Tree image: entries in the source tree.
    entries: u64,
    /// Big-file image: the file's size.
    file_size: u64,
}

const BIG_NAME: &str = "big.bin";

/// The marker written after an image is complete: `key=value` lines.
fn read_marker(img: &Path) -> Option<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(img.with_extension("done")).ok()?;
    img.exists()
        .then(|| text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

fn write_marker(img: &Path, fields: &[(&str, String)]) -> anyhow::Result<()> {
    let text: String = fields.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(img.with_extension("done"), text)?;
    Ok(())
}

fn big_image(dir: &Path, small: bool) -> anyhow::Result<Image> {
    let size = if small { 64 * MIB } else { 1024 * MIB };
    let img = dir.join(if small { "big-small.img" } else { "big.img" });
    let about = format!("one {} MiB file of PRNG bytes", size / MIB);
    if let Some(m) = read_marker(&img)
        && m.get("file_size").map(String::as_str) == Some(&size.to_string())
    {
        return Ok(Image { path: img, about, entries: 1, file_size: size });
    }
    let _ = std::fs::remove_file(img.with_extension("done"));
    let src = dir.join("big-src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src)?;
    eprintln!("bench: writing {} MiB of PRNG bytes", size / MIB);
    let mut f = std::io::BufWriter::with_capacity(CHUNK, File::create(src.join(BIG_NAME))?);
    let mut rng = Rng(0x5eed_f500_0057);
    let mut buf = vec![0u8; CHUNK];
    for _ in 0..size / CHUNK as u64 {
        check_stop()?;
        for w in buf.chunks_exact_mut(8) {
            w.copy_from_slice(&rng.next().to_le_bytes());
        }
        f.write_all(&buf)?;
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let img_mib = size / MIB * 5 / 4 + 64;
    crate::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "bench-big", "-d"])
            .arg(&src)
            .arg(&img)
            .arg(format!("{img_mib}M")),
    )?;
    std::fs::remove_dir_all(&src)?;
    write_marker(&img, &[("file_size", size.to_string())])?;
    Ok(Image { path: img, about, entries: 1, file_size: size })
}

/// Entries (as `find` counts them) and allocated bytes under `dir`.
fn scan(dir: &Path) -> (u64, u64) {
    let (mut entries, mut bytes) = (1u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            entries += 1;
            if let Ok(m) = e.path().symlink_metadata() {
                bytes += m.blocks() * 512;
                if m.is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }
    (entries, bytes)
}

fn tree_image(dir: &Path, small: bool, source: Option<&Path>) -> anyhow::Result<Image> {
    let source = source.map(Path::to_path_buf).unwrap_or_else(|| if small { "/usr/include" } else { "/usr" }.into());
    let img = dir.join(if small { "tree-small.img" } else { "tree.img" });
    let describe = |entries: u64, bytes: u64| {
        format!("mkfs.ext4 -d {} ({entries} entries, {:.1} GiB)", source.display(), bytes as f64 / (1u64 << 30) as f64)
    };
    if let Some(m) = read_marker(&img)
        && m.get("source").map(PathBuf::from).as_deref() == Some(source.as_path())
    {
        let entries = m.get("entries").and_then(|e| e.parse().ok()).unwrap_or(0);
        let bytes = m.get("bytes").and_then(|e| e.parse().ok()).unwrap_or(0);
        return Ok(Image { path: img, about: describe(entries, bytes), entries, file_size: 0 });
    }
    let _ = std::fs::remove_file(img.with_extension("done"));
    let (entries, bytes) = scan(&source);
    if !small && entries < 100_000 {
        eprintln!("bench: warning: {} has only {entries} entries (< 100k); pass --tree DIR", source.display());
    }
    let img_mib = bytes / MIB * 6 / 5 + entries * 8 / 1024 + 128;
    eprintln!(
        "bench: building the tree image from {} ({entries} entries, {} MiB; image {img_mib} MiB), this takes a while",
        source.display(),
        bytes / MIB
    );
    crate::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "bench-tree", "-d"])
            .arg(&source)
            .arg(&img)
            .arg(format!("{img_mib}M")),
    )?;
    write_marker(
        &img,
        &[("source", source.display().to_string()), ("entries", entries.to_string()), ("bytes", bytes.to_string())],
    )?;
    Ok(Image { path: img, about: describe(entries, bytes), entries, file_size: 0 })
}

// ---- mounts -------------------------------------------------------------------------

struct Env {
    dir: PathBuf,
    fshost: PathBuf,
    plugin: PathBuf,
    /// The FAT guest (the huge-directory rows' FAT image).
    fat_plugin: PathBuf,
    cache: PathBuf,
    log: PathBuf,
    /// When the snapshotted fshost binary was built.
    built: String,
}

impl Env {
    fn mountpoint(&self, peer: Peer) -> PathBuf {
        self.dir.join("mnt").join(peer.name())
    }
}

/// CPU seconds (utime + stime, all threads) and peak RSS (VmHWM) of a
/// process.
#[derive(Clone, Copy, Debug)]
struct Usage {
    cpu_s: f64,
    hwm_mib: f64,
}

fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name "(...)": state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    const SC_CLK_TCK: i32 = 2;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { sysconf(SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(Usage { cpu_s: ticks as f64 / hz, hwm_mib: kib / 1024.0 })
}

/// One mounted image. Dropping it unmounts, ends the server and detaches
/// the loop device, whatever state the mount got to.
struct Mounted {
    mnt: PathBuf,
    loopdev: Option<String>,
    server: Option<Child>,
}

impl Mounted {
    /// Mount `img` for `peer` and wait until its root answers `stat`.
    /// Returns the guard and the time that took.
    fn new(env: &Env, peer: Peer, img: &Path, no_cache: bool) -> anyhow::Result<(Mounted, Duration)> {
        Self::mount(env, peer, img, no_cache, false, &env.plugin)
    }

    /// Mount `img` read-only with fshost's guest `plugin` instead of ext4's.
    fn with_plugin(env: &Env, peer: Peer, img: &Path, plugin: &Path) -> anyhow::Result<(Mounted, Duration)> {
        Self::mount(env, peer, img, false, false, plugin)
    }

    /// Mount `img` read-write for `peer` (the write rows).
    fn new_rw(env: &Env, peer: Peer, img: &Path) -> anyhow::Result<(Mounted, Duration)> {
        Self::mount(env, peer, img, false, true, &env.plugin)
    }

    fn mount(
        env: &Env,
        peer: Peer,
        img: &Path,
        no_cache: bool,
        rw: bool,
        plugin: &Path,
    ) -> anyhow::Result<(Mounted, Duration)> {
        check_stop()?;
        let mnt = env.mountpoint(peer);
        std::fs::create_dir_all(&mnt)?;
        if is_mounted(&mnt) {
            bail!("{} is still mounted", mnt.display());
        }
        let mut m = Mounted { mnt: mnt.clone(), loopdev: None, server: None };
        let log = || -> anyhow::Result<Stdio> {
            Ok(std::fs::OpenOptions::new().create(true).append(true).open(&env.log)?.into())
        };
        let t0 = Instant::now();
        match peer {
            Peer::Kernel => {
                let ro = if rw { None } else { Some("-r") };
                let dev = quiet(Command::new("losetup").args(ro).args(["-f", "--show"]).arg(img))?;
                m.loopdev = Some(dev.clone());
                quiet(
                    Command::new("mount").args(["-t", "ext4", "-o", if rw { "rw" } else { "ro" }]).arg(&dev).arg(&mnt),
                )?;
            }
            Peer::Fuse2fs | Peer::Fshost => {
                let mut cmd = if peer == Peer::Fuse2fs {
                    let mut c = Command::new("fuse2fs");
                    c.arg(img).arg(&mnt).args(["-o", if rw { "rw" } else { "ro" }, "-f"]);
                    c
                } else {
                    let mut c = Command::new(&env.fshost);
                    c.arg("mount").arg("--plugin").arg(plugin).arg(img).arg(&mnt).arg("--foreground");
                    if no_cache {
                        c.arg("--no-cache");
                    }
                    if rw {
                        c.args(["-o", "rw"]);
                    }
                    c.env("FSHOST_CACHE_DIR", &env.cache);
                    c
                };
                // Its own process group: ctrl-C reaches us, and we unmount.
                cmd.stdin(Stdio::null()).stdout(log()?).stderr(log()?).process_group(0);
                m.server = Some(cmd.spawn().with_context(|| format!("starting {cmd:?}"))?);
                let server = m.server.as_mut().expect("just set");
                while !is_mounted(&mnt) {
                    if let Some(status) = server.try_wait()? {
                        bail!("{} exited before mounting ({status}); see {}", peer.name(), env.log.display());
                    }
                    if t0.elapsed() > Duration::from_secs(60) {
                        bail!("{} did not mount within 60 s", peer.name());
                    }
                    check_stop()?;
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
        }
        std::fs::metadata(&mnt).with_context(|| format!("stat {}", mnt.display()))?;
        let took = t0.elapsed();
        Ok((m, took))
    }

    fn usage(&self) -> Option<Usage> {
        usage(self.server.as_ref()?.id())
    }

    /// Unmount, and fail if any step did.
    fn unmount(mut self) -> anyhow::Result<()> {
        let r = self.cleanup(true);
        std::mem::forget(self);
        r
    }

    fn cleanup(&mut self, strict: bool) -> anyhow::Result<()> {
        let mut err = None;
        let unmounted = is_mounted(&self.mnt);
        if unmounted && let Err(e) = umount_patiently(&self.mnt) {
            let _ = quiet(Command::new("umount").arg("-l").arg(&self.mnt));
            err = Some(e);
        }
        if let Some(mut child) = self.server.take() {
            // After umount the server exits by itself; one that never
            // mounted (interrupted start-up) is killed at once.
            let grace = if unmounted { Duration::from_secs(10) } else { Duration::ZERO };
            let t0 = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        if !status.success() && strict && err.is_none() {
                            err = Some(anyhow::anyhow!("mount server exited with {status}"));
                        }
                        break;
                    }
                    Ok(None) if t0.elapsed() < grace => std::thread::sleep(Duration::from_millis(5)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        if unmounted {
                            err.get_or_insert_with(|| {
                                anyhow::anyhow!("mount server did not exit after umount; killed")
                            });
                        }
                        break;
                    }
                }
            }
            // It may have mounted between our check and the kill.
            if is_mounted(&self.mnt) {
                let _ = quiet(Command::new("umount").arg("-l").arg(&self.mnt));
            }
        }
        if let Some(dev) = self.loopdev.take() {
            // The kernel may hold the device a moment after umount.
            let mut detached = quiet(Command::new("losetup").arg("-d").arg(&dev));
            for _ in 0..50 {
                if detached.is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
                detached = quiet(Command::new("losetup").arg("-d").arg(&dev));
            }
            if let Err(e) = detached {
                err.get_or_insert(e);
            }
        }
        err.map_or(Ok(()), Err)
    }
}

/// `umount`, retried for a few seconds while the mount is busy: a reader
/// that just ended (tar, find) can hold it a moment after it exits, and
/// fuse2fs was seen to answer EBUSY right after a tar run.
fn umount_patiently(mnt: &Path) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        match quiet(Command::new("umount").arg(mnt)) {
            Ok(_) => return Ok(()),
            Err(e) if t0.elapsed() < Duration::from_secs(10) && format!("{e:#}").contains("busy") => {
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => return Err(e),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup(false) {
            eprintln!("bench: cleaning up {}: {e:#}", self.mnt.display());
        }
    }
}

/// Leftovers of an interrupted earlier run: our mount points and loop
/// devices backed by our images.
fn clean_stale(env: &Env) {
    for peer in PEERS {
        let mnt = env.mountpoint(peer);
        if is_mounted(&mnt) {
            eprintln!("bench: unmounting leftover {}", mnt.display());
            let _ = quiet(Command::new("umount").arg("-l").arg(&mnt));
        }
    }
    let Ok(rd) = std::fs::read_dir(&env.dir) else { return };
    for e in rd.flatten() {
        if e.path().extension().is_some_and(|x| x == "img")
            && let Ok(list) = quiet(Command::new("losetup").arg("-j").arg(e.path()))
        {
            for dev in list.lines().filter_map(|l| l.split(':').next()).filter(|d| !d.is_empty()) {
                eprintln!("bench: detaching leftover {dev}");
                let _ = quiet(Command::new("losetup").arg("-d").arg(dev));
            }
        }
    }
}

// ---- workloads ------------------------------------------------------------------------

/// Read `path` start to end in 1 MiB chunks; MB/s (10^6 bytes).
fn seq_read(path: &Path) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let mut f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        check_stop()?;
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    Ok(total as f64 / 1e6 / t0.elapsed().as_secs_f64())
}

/// `count` reads of 4 KiB at random aligned offsets, split over `threads`
/// threads sharing one file (pread); IOPS. The same seed gives every peer
/// the same offsets.
fn rand_read(path: &Path, size: u64, threads: usize, count: usize, seed: u64) -> anyhow::Result<f64> {
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
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
                        f.read_exact_at(&mut buf, off)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().expect("reader thread panicked"))
    })?;
    Ok((count / threads * threads) as f64 / t0.elapsed().as_secs_f64())
}

/// `find MNT -printf '%s %m %u\n' > /dev/null`; seconds.
fn walk(mnt: &Path) -> anyhow::Result<f64> {
    check_stop()?;
    let t0 = Instant::now();
    let status = Command::new("find")
        .arg(mnt)
        .args(["-printf", "%s %m %u\\n"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()?;
    let took = t0.elapsed().as_secs_f64();
    check_stop()?;
    if !status.success() {
        bail!("find {} failed: {status}", mnt.display());
    }
    Ok(took)
}

/// `tar cf - . | wc -c` in MNT (the count done here); seconds and bytes.
fn tar_all(mnt: &Path) -> anyhow::Result<(f64, u64)> {
    check_stop()?;
    let t0 = Instant::now();
    let mut tar = Command::new("tar")
        .args(["cf", "-", "."])
        .current_dir(mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut out = tar.stdout.take().expect("piped");
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let status = tar.wait()?;
    let took = t0.elapsed().as_secs_f64();
    check_stop()?;
    // 1: "some files differ" (a warning); 2: fatal.
    if !status.success() && status.code() != Some(1) {
        bail!("tar in {} failed: {status}", mnt.display());
    }
    Ok((took, total))
}

// ---- results ------------------------------------------------------------------------------

struct Row {
    label: String,
    unit: &'static str,
    higher_is_better: bool,
    values: BTreeMap<Peer, Vec<f64>>,
}

#[derive(Default)]
struct Results {
    rows: Vec<(&'static str, Row)>,
    /// (workload group, peer) -> usage of the mount server per run.
    usage: BTreeMap<(&'static str, Peer), Vec<Usage>>,
    notes: Vec<String>,
    load: Vec<String>,
}

impl Results {
    fn row(&mut self, key: &'static str, label: String, unit: &'static str, higher_is_better: bool) {
        self.rows.push((key, Row { label, unit, higher_is_better, values: BTreeMap::new() }));
    }

    fn add(&mut self, key: &str, peer: Peer, v: f64) {
        let row = self.rows.iter_mut().find(|(k, _)| *k == key).expect("row declared");
        row.1.values.entry(peer).or_default().push(v);
    }

    /// Run one measurement of one peer. A failure (a peer that will not
    /// mount or unmount, a tool that fails) costs this run, not the
    /// benchmark: it is noted under the table, and the rows measured so
    /// far and later still print. An interrupt still ends the run.
    fn attempt(&mut self, what: String, run: impl FnOnce(&mut Results) -> anyhow::Result<()>) -> anyhow::Result<()> {
        match run(self) {
            Ok(()) => Ok(()),
            Err(e) => {
                check_stop()?;
                eprintln!("bench: {what} FAILED: {e:#}");
                self.notes.push(format!("FAILED: {what}: {e:#}"));
                Ok(())
            }
        }
    }

    /// Print what was measured so far (rows fill in as runs finish) and
    /// keep it in `path`, so an interrupted or crashed run leaves its rows.
    fn checkpoint(&self, header: &str, path: &Path) {
        let table = self.render(header);
        eprintln!("{table}");
        if let Err(e) = std::fs::write(path, &table) {
            eprintln!("bench: cannot write {}: {e}", path.display());
        }
    }

    fn add_usage(&mut self, group: &'static str, peer: Peer, m: &Mounted) {
        if let Some(u) = m.usage() {
            self.usage.entry((group, peer)).or_default().push(u);
        }
    }

    fn render(&self, header: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{header}");
        let _ = writeln!(
            s,
            "{:<44} {:>5} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "workload (median)", "unit", "better", "kernel", "fuse2fs", "fshost", "fh/kern", "fh/f2fs"
        );
        for (_, r) in &self.rows {
            let m = |p: Peer| r.values.get(&p).and_then(|v| median(v));
            let cell = |x: Option<f64>| x.map_or("-".to_string(), fmt_num);
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "-".to_string(),
            };
            let (k, f, h) = (m(Peer::Kernel), m(Peer::Fuse2fs), m(Peer::Fshost));
            if k.is_none() && f.is_none() && h.is_none() {
                continue;
            }
            let _ = writeln!(
                s,
                "{:<44} {:>5} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
                r.label,
                r.unit,
                if r.higher_is_better { "higher" } else { "lower" },
                cell(k),
                cell(f),
                cell(h),
                ratio(h, k),
                ratio(h, f)
            );
        }
        let _ = writeln!(
            s,
            "ratios are fshost/peer of the medians: for MB/s and IOPS above 1 means fshost is faster, for s and ms below 1 does."
        );
        if !self.usage.is_empty() {
            let _ = writeln!(
                s,
                "\nmount server process per mount (median CPU = utime+stime of all threads, max peak RSS = VmHWM):"
            );
            let _ = writeln!(
                s,
                "{:<34} {:>12} {:>12} {:>12} {:>12}",
                "mount session", "fshost CPU", "fshost RSS", "fuse2fs CPU", "fuse2fs RSS"
            );
            let groups: Vec<&'static str> = {
                let mut g: Vec<&'static str> = self.usage.keys().map(|(g, _)| *g).collect();
                g.dedup();
                g
            };
            for g in groups {
                let cell = |p: Peer| {
                    let u = self.usage.get(&(g, p));
                    let cpu = u.and_then(|u| median(&u.iter().map(|x| x.cpu_s).collect::<Vec<_>>()));
                    let rss = u.and_then(|u| u.iter().map(|x| x.hwm_mib).reduce(f64::max));
                    (cpu.map_or("-".into(), |c| format!("{c:.2} s")), rss.map_or("-".into(), |r| format!("{r:.0} MiB")))
                };
                let (hc, hr) = cell(Peer::Fshost);
                let (fc, fr) = cell(Peer::Fuse2fs);
                let _ = writeln!(s, "{:<34} {:>12} {:>12} {:>12} {:>12}", g, hc, hr, fc, fr);
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "{n}");
        }
        s
    }
}

// ---- the run --------------------------------------------------------------------------------

fn header(env: &Env, opts: &Opts, images: &[&Image]) -> String {
    let date = quiet(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])).unwrap_or_default();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']))
        .unwrap_or("?");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or("?".into(), |k| format!("{:.0} GiB", k as f64 / 1048576.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let root = crate::root();
    let commit =
        quiet(Command::new("git").arg("-C").arg(&root).args(["rev-parse", "--short", "HEAD"])).unwrap_or_default();
    let dirty =
        quiet(Command::new("git").arg("-C").arg(&root).args(["status", "--porcelain", "host", "guests/ext4", "sdk"]))
            .is_ok_and(|s| !s.is_empty());
    let built = &env.built;
    let f2fs = quiet(Command::new("sh").args(["-c", "fuse2fs -V 2>&1 | head -1"])).unwrap_or_default();
    let mut s = format!(
        "fshost bench {} — {date} — {}: {model}, {cores} cores, {mem}, Linux {}\n",
        if opts.small { "(--small)" } else { "(full)" },
        host.trim(),
        kernel.trim()
    );
    let _ = writeln!(
        s,
        "fshost {commit}{} (release build of {built}, copied to {}); {f2fs}; {} runs per workload, interleaved across peers, medians",
        if dirty { " + uncommitted changes" } else { "" },
        env.fshost.parent().unwrap_or(Path::new("")).display(),
        opts.runs
    );
    for img in images {
        let size = std::fs::metadata(&img.path).map_or(0, |m| m.len());
        let _ = writeln!(
            s,
            "image {} ({} MiB): {}",
            img.path.file_name().unwrap_or_default().to_string_lossy(),
            size / MIB,
            img.about
        );
    }
    s
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let opts = parse(args)?;
    catch_signals();
    if opts.build {
        crate::build()?;
    } else {
        crate::setup()?;
    }
    let dir = crate::target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    // Canonical, as /proc/self/mountinfo shows mount points.
    let dir = dir.canonicalize()?;
    let target = dir.parent().context("target dir")?;
    // Others may rebuild target/release/fshost during a long run: measure
    // one snapshot of the binary and the guest throughout.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let built = quiet(Command::new("date").arg("-u").arg("-r").arg(target.join("release/fshost")).arg("+%H:%M UTC"))
        .unwrap_or_default();
    let mut snapshot = Vec::new();
    for (from, name) in
        [("release/fshost", "fshost"), ("guests/ext4.wasm", "ext4.wasm"), ("guests/fat.wasm", "fat.wasm")]
    {
        let from = target.join(from);
        let to = bin.join(name);
        let _ = std::fs::remove_file(&to);
        std::fs::copy(&from, &to).with_context(|| format!("copying {} (run cargo xtask build)", from.display()))?;
        snapshot.push(to);
    }
    let env = Env {
        fshost: snapshot[0].clone(),
        plugin: snapshot[1].clone(),
        fat_plugin: snapshot[2].clone(),
        cache: dir.join("guest-cache"),
        log: dir.join("servers.log"),
        built,
        dir: dir.clone(),
    };
    clean_stale(&env);
    let load_start = loadavg();

    let big =
        if ["seq", "rand", "write"].iter().any(|w| opts.wants(w)) { Some(big_image(&dir, opts.small)?) } else { None };
    // The mount is timed on the tree image: the larger (8.5 GiB; the
    // performance issue asks for 4 GiB or more) and the fuller one.
    let tree_source = opts.tree.clone().unwrap_or_else(|| if opts.small { "/usr/include" } else { "/usr" }.into());
    let tree = if ["walk", "tar", "mount", "write"].iter().any(|w| opts.wants(w)) {
        Some(tree_image(&dir, opts.small, opts.tree.as_deref())?)
    } else {
        None
    };

    // Prime fshost's compiled-guest cache (the first mount after a guest
    // rebuild compiles it).
    if let Some(img) = big.as_ref().or(tree.as_ref()) {
        let (m, took) = Mounted::new(&env, Peer::Fshost, &img.path, false)?;
        m.unmount()?;
        eprintln!("bench: priming mount of fshost took {:.0} ms", took.as_secs_f64() * 1e3);
    }

    let mut res = Results::default();
    // Rows so far, rewritten after each workload; the final table goes
    // to results.txt.
    let partial = dir.join(if opts.small { "results-small.partial.txt" } else { "results.partial.txt" });
    let runs = opts.runs;
    let rand_count = if opts.small { 4000 } else { 20_000 };

    if let Some(img) = big.as_ref() {
        let size = format!("{} MiB", img.file_size / MIB);
        if opts.wants("seq") {
            res.row("seq_cold", format!("seq read {size} file, cold"), "MB/s", true);
            res.row("seq_warm", format!("seq read {size} file, warm (page cache)"), "MB/s", true);
            res.load.push(loadavg());
            for i in 0..runs {
                for peer in order(i) {
                    eprintln!("bench: seq run {}/{runs}: {}", i + 1, peer.name());
                    res.attempt(format!("seq run {}: {}", i + 1, peer.name()), |res| {
                        let (m, _) = Mounted::new(&env, peer, &img.path, false)?;
                        let file = m.mnt.join(BIG_NAME);
                        if i == 0
                            && let Some(dev) = &m.loopdev
                        {
                            let name = dev.trim_start_matches("/dev/");
                            let ra = std::fs::read_to_string(format!("/sys/block/{name}/queue/read_ahead_kb"));
                            res.notes.push(format!(
                                "kernel: ext4 on a loop device (buffered, read_ahead_kb {}); the FUSE peers read the image file directly.",
                                ra.as_deref().unwrap_or("?").trim()
                            ));
                        }
                        drop_caches()?;
                        res.add("seq_cold", peer, seq_read(&file)?);
                        res.add("seq_warm", peer, seq_read(&file)?);
                        res.add_usage("seq read: cold + warm", peer, &m);
                        m.unmount()
                    })?;
                }
            }
            res.checkpoint(&header(&env, &opts, &[img]), &partial);
        }
        if opts.wants("rand") {
            res.row("rand1", format!("random 4 KiB pread, 1 thread, cold ({rand_count})"), "IOPS", true);
            res.row("rand4", format!("random 4 KiB pread, 4 threads, cold ({rand_count})"), "IOPS", true);
            res.load.push(loadavg());
            for i in 0..runs {
                for peer in order(i) {
                    eprintln!("bench: rand run {}/{runs}: {}", i + 1, peer.name());
                    res.attempt(format!("rand run {}: {}", i + 1, peer.name()), |res| {
                        let (m, _) = Mounted::new(&env, peer, &img.path, false)?;
                        let file = m.mnt.join(BIG_NAME);
                        let seed = 0xabcd_0000 + i as u64;
                        drop_caches()?;
                        res.add("rand1", peer, rand_read(&file, img.file_size, 1, rand_count, seed)?);
                        drop_caches()?;
                        res.add("rand4", peer, rand_read(&file, img.file_size, 4, rand_count, seed + 1000)?);
                        res.add_usage("random reads: 1 + 4 threads", peer, &m);
                        m.unmount()
                    })?;
                }
            }
            res.checkpoint(&header(&env, &opts, &[img]), &partial);
        }
    }

    if let Some(img) = tree.as_ref() {
        if opts.wants("walk") {
            res.row("walk_cold", format!("find -printf walk, {} entries, cold", img.entries), "s", false);
            res.row("walk_warm", format!("find -printf walk, {} entries, warm", img.entries), "s", false);
            res.load.push(loadavg());
            for i in 0..runs {
                for peer in order(i) {
                    eprintln!("bench: walk run {}/{runs}: {}", i + 1, peer.name());
                    res.attempt(format!("walk run {}: {}", i + 1, peer.name()), |res| {
                        let (m, _) = Mounted::new(&env, peer, &img.path, false)?;
                        drop_caches()?;
                        res.add("walk_cold", peer, walk(&m.mnt)?);
                        res.add("walk_warm", peer, walk(&m.mnt)?);
                        res.add_usage("find walk: cold + warm", peer, &m);
                        m.unmount()
                    })?;
                }
            }
            res.checkpoint(&header(&env, &opts, &[img]), &partial);
        }
        if opts.wants("tar") {
            res.row("tar", "tar cf - . | wc -c (read every file), cold".into(), "s", false);
            res.load.push(loadavg());
            let mut bytes: BTreeMap<Peer, u64> = BTreeMap::new();
            for i in 0..runs {
                for peer in order(i) {
                    eprintln!("bench: tar run {}/{runs}: {}", i + 1, peer.name());
                    res.attempt(format!("tar run {}: {}", i + 1, peer.name()), |res| {
                        let (m, _) = Mounted::new(&env, peer, &img.path, false)?;
                        drop_caches()?;
                        let (secs, n) = tar_all(&m.mnt)?;
                        res.add("tar", peer, secs);
                        bytes.insert(peer, n);
                        res.add_usage("tar read-all: cold", peer, &m);
                        m.unmount()
                    })?;
                }
            }
            let n: Vec<u64> = bytes.values().copied().collect();
            res.notes
                .push(format!("tar stream: {:.2} GiB", n.first().copied().unwrap_or(0) as f64 / (1u64 << 30) as f64));
            if n.windows(2).any(|w| w[0] != w[1]) {
                res.notes.push(format!("WARNING: tar stream sizes differ between peers: {bytes:?}"));
            }
            res.checkpoint(&header(&env, &opts, &[img]), &partial);
        }
    }

    if let (Some(big), Some(tree)) = (big.as_ref(), tree.as_ref())
        && opts.wants("write")
    {
        write::run(&env, &mut res, (runs, opts.small), big, tree, &tree_source)?;
        res.checkpoint(&header(&env, &opts, &[big, tree]), &partial);
    }

    let bigdirs = if opts.wants("bigdir") { bigdir::images(&dir, opts.small)? } else { Vec::new() };
    if !bigdirs.is_empty() {
        bigdir::run(&env, &mut res, runs, &bigdirs)?;
        let images: Vec<&Image> = bigdirs.iter().map(|(img, _)| img).collect();
        res.checkpoint(&header(&env, &opts, &images), &partial);
    }

    if let Some(img) = tree.as_ref()
        && opts.wants("mount")
    {
        let mib = std::fs::metadata(&img.path).map_or(0, |m| m.len()) / MIB;
        res.row("mount", format!("mount + stat root ({mib} MiB image), cached"), "ms", false);
        res.row("mount_nocache", "mount + stat root, fshost --no-cache".into(), "ms", false);
        res.load.push(loadavg());
        for i in 0..runs.max(5) {
            for peer in order(i) {
                res.attempt(format!("mount run {}: {}", i + 1, peer.name()), |res| {
                    let (m, took) = Mounted::new(&env, peer, &img.path, false)?;
                    m.unmount()?;
                    res.add("mount", peer, took.as_secs_f64() * 1e3);
                    if peer != Peer::Fshost {
                        // Nothing to compile: the same number as above.
                        res.add("mount_nocache", peer, took.as_secs_f64() * 1e3);
                    } else {
                        let (m, took) = Mounted::new(&env, peer, &img.path, true)?;
                        m.unmount()?;
                        res.add("mount_nocache", peer, took.as_secs_f64() * 1e3);
                    }
                    Ok(())
                })?;
            }
        }
        res.notes.push(
            "mount: kernel = losetup -r + mount -o ro; FUSE peers until the mount shows in mountinfo; all then stat the root. \
             fshost's warm number loads the compiled guest from its cache; --no-cache compiles it \
             (kernel and fuse2fs compile nothing: that row repeats their mount numbers)."
                .into(),
        );
    }

    let load_end = loadavg();
    res.notes.push(format!(
        "load average (1/5/15 min) at start {load_start}, before each workload [{}], at end {load_end}; \
         other jobs share this machine, so numbers under load are noisy.",
        res.load.join("; ")
    ));
    let images: Vec<&Image> = big.iter().chain(tree.iter()).chain(bigdirs.iter().map(|(img, _)| img)).collect();
    let table = res.render(&header(&env, &opts, &images));
    println!("{table}");
    let out = dir.join(if opts.small { "results-small.txt" } else { "results.txt" });
    std::fs::write(&out, &table)?;
    eprintln!("bench: table written to {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_costs_a_note_not_the_benchmark() {
        let mut res = Results::default();
        res.row("r", "row".into(), "s", false);
        res.attempt("run 1: kernel".into(), |res| {
            res.add("r", Peer::Kernel, 1.5);
            Ok(())
        })
        .unwrap();
        res.attempt("run 1: fuse2fs".into(), |_| bail!("umount: target is busy")).unwrap();
        let table = res.render("header");
        assert!(table.contains("FAILED: run 1: fuse2fs: umount: target is busy"), "{table}");
        assert!(table.lines().any(|l| l.starts_with("row") && l.contains("1.500")), "{table}");
    }

    /// A mount held busy for a moment (a shell whose cwd is inside it) is
    /// unmounted once it is released, not reported as failed.
    #[test]
    fn a_briefly_busy_mount_is_unmounted_after_retries() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { crate::libc_geteuid() } != 0 {
            panic!("needs root (mounts a tmpfs)");
        }
        let dir = std::env::temp_dir().join(format!("fshost-bench-busy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        quiet(Command::new("mount").args(["-t", "tmpfs", "none"]).arg(&dir)).unwrap();
        let mut holder = Command::new("sh").arg("-c").arg("sleep 1.5").current_dir(&dir).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let plain = quiet(Command::new("umount").arg(&dir));
        assert!(
            plain.is_err_and(|e| format!("{e:#}").contains("busy")),
            "the mount was not busy: the test proves nothing"
        );
        let result = umount_patiently(&dir);
        let _ = holder.wait();
        if result.is_err() {
            let _ = quiet(Command::new("umount").arg("-l").arg(&dir));
        }
        let _ = std::fs::remove_dir(&dir);
        result.unwrap();
    }
}
