//! Crash safety of the journaled writer (`-o journal`), against oracles
//! nobody here wrote: e2fsprogs' journal replay and checker, debugfs, and
//! the kernel's ext4 driver.
//!
//! A workload (creates with fsync, a directory big enough to be indexed,
//! appends, truncates, renames over existing files, unlinks, syncfs) runs
//! on an image made by mkfs.ext4 through a device that records every write
//! and flush in order, the file data written into the mappings as the host
//! writes it, through the same device. Then, for many crash points, the
//! image is rebuilt as the device could hold it after a power cut: every
//! write before some flush, plus a random subset of the writes after it
//! (one of them possibly torn at a sector boundary), since a device may
//! reorder or drop anything not yet flushed. For each such image:
//! `e2fsck -E journal_only` replays the journal, then `e2fsck -fn` must
//! report the filesystem clean, and every file fsync'd (or covered by a
//! syncfs) before the cut, and not touched since, reads back intact with
//! debugfs. A sample of the crash images is also mounted by the kernel
//! (which replays the journal itself), the files read back through it, and
//! e2fsck -fn is clean after its unmount.
//!
//! Knobs: FSHOST_CRASH_POINTS (crash images per configuration, default
//! 24), FSHOST_CRASH_SEED (the workload and cut seed), FSHOST_CRASH_OPS
//! (workload length, default 120), FSHOST_CRASH_KERNEL (kernel mounts per
//! configuration, default 2).

mod common;

use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

use common::{Rng, Scratch};
use ext4::Ext4;
use fshost_sdk::device::BlockIo;
use fshost_sdk::{
    AttrChanges, Device, FallocateFlags, FileType, Filesystem, Ino, IomapFlags, MappingKind, MountOptions, NewInode,
    RenameFlags, Timestamp, XattrFlags,
};
use fshost_tests::kernel::{KernelMount, require_root};

const T: Timestamp = Timestamp { seconds: 1_700_000_000, nanoseconds: 0 };
const ROOT: Ino = 2;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What the device saw, in order.
#[derive(Clone, Debug)]
enum Event {
    Write(u64, Vec<u8>),
    Flush,
}

/// A [`BlockIo`] over an image file that records every write and flush.
struct LoggingIo {
    file: File,
    size: u64,
    log: Rc<RefCell<Vec<Event>>>,
}

impl BlockIo for LoggingIo {
    fn size(&self) -> u64 {
        self.size
    }
    fn sector_size(&self) -> u32 {
        512
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> fshost_sdk::Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| fshost_sdk::Error::io(e.to_string()))
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> fshost_sdk::Result<()> {
        self.log.borrow_mut().push(Event::Write(offset, data.to_vec()));
        self.file.write_all_at(data, offset).map_err(|e| fshost_sdk::Error::io(e.to_string()))
    }
    fn flush(&self) -> fshost_sdk::Result<()> {
        self.log.borrow_mut().push(Event::Flush);
        Ok(())
    }
}

/// File contents from the shared generator ([`common::Rng`]).
impl Rng {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let tag = self.next();
        (0..n).map(|i| (tag.rotate_left((i % 64) as u32) as u8) ^ (i / 7) as u8).collect()
    }
}

/// What a path must hold after every crash at or after event index
/// `from` (its fsync or syncfs returned) and before `until` (the next call
/// touching its name or data began): one of `allowed` (`None`: absent).
/// An unlinked file that was durable must be either intact or gone.
#[derive(Debug)]
struct Durable {
    path: String,
    allowed: Vec<Option<Vec<u8>>>,
    from: usize,
    until: usize,
}

/// One live regular file of the workload.
struct Live {
    dir: Ino,
    name: String,
    ino: Ino,
    data: Vec<u8>,
    /// Its open entry in `durable`, if any.
    durable: Option<usize>,
}

struct Workload {
    fs: Ext4,
    log: Rc<RefCell<Vec<Event>>>,
    dev: Rc<File>,
    bs: u64,
    rng: Rng,
    dirs: Vec<(Ino, String)>,
    files: Vec<Live>,
    durable: Vec<Durable>,
    names: u64,
    /// Where the last fsync or syncfs call began (an event index).
    synced: usize,
}

impl Workload {
    fn now(&self) -> usize {
        self.log.borrow().len()
    }

    fn path(&self, dir: Ino, name: &str) -> String {
        let d = &self.dirs.iter().find(|(i, _)| *i == dir).unwrap().1;
        format!("{d}/{name}")
    }

    /// Where the newest durable point is: just after the first flush that
    /// follows the last commit block written since `self.synced` (a sync
    /// call began there), else now.
    fn durable_point(&self) -> usize {
        let log = self.log.borrow();
        let is_commit = |e: &Event| match e {
            Event::Write(_, d) => {
                d.len() as u64 == self.bs && d[..4] == [0xC0, 0x3B, 0x39, 0x98] && d[4..8] == [0, 0, 0, 2]
            }
            Event::Flush => false,
        };
        let Some(c) = (self.synced..log.len()).rev().find(|&i| is_commit(&log[i])) else { return log.len() };
        (c..log.len()).find(|&i| matches!(log[i], Event::Flush)).map_or(log.len(), |f| f + 1)
    }

    /// A call touching file `i` begins: its durable content may change.
    fn touch(&mut self, i: usize) {
        if let Some(d) = self.files[i].durable.take() {
            self.durable[d].until = self.now();
        }
    }

    /// File `i`'s current content is durable from now on, or from the
    /// flush after the commit block the sync call that just returned wrote
    /// (`since`: where that call began), as jbd2's format defines it.
    fn durable_now(&mut self, i: usize) {
        let now = self.durable_point();
        if self.files[i].durable.is_some() {
            // Still the same content, already durable.
            return;
        }
        let path = self.path(self.files[i].dir, &self.files[i].name);
        self.durable.push(Durable {
            path,
            allowed: vec![Some(self.files[i].data.clone())],
            from: now,
            until: usize::MAX,
        });
        self.files[i].durable = Some(self.durable.len() - 1);
    }

    /// The host's data path: iomap_begin(write), the bytes into the
    /// mappings (through the logging device), ioend.
    fn host_write(&mut self, ino: Ino, offset: u64, data: &[u8]) {
        let bs = self.bs;
        let end = offset + data.len() as u64;
        let mut pos = offset;
        while pos < end {
            let flags = IomapFlags { write: true, ..Default::default() };
            let maps = self.fs.iomap_begin(ino, pos, end - pos, flags).expect("iomap_begin(write)");
            let start = pos;
            for m in &maps {
                if m.offset >= end {
                    break;
                }
                let (s, e) = (pos.max(m.offset), end.min(m.offset + m.length));
                let (at, bytes) = match m.kind {
                    MappingKind::Mapped(dev) => {
                        (dev + (s - m.offset), data[(s - offset) as usize..(e - offset) as usize].to_vec())
                    }
                    MappingKind::Unwritten(dev) => {
                        let (bs_s, bs_e) = (s / bs * bs, e.div_ceil(bs) * bs);
                        let mut buf = vec![0u8; (bs_e - bs_s) as usize];
                        buf[(s - bs_s) as usize..(e - bs_s) as usize]
                            .copy_from_slice(&data[(s - offset) as usize..(e - offset) as usize]);
                        (dev + (bs_s - m.offset), buf)
                    }
                    ref other => panic!("write mapping {other:?}"),
                };
                self.log.borrow_mut().push(Event::Write(at, bytes.clone()));
                self.dev.write_all_at(&bytes, at).unwrap();
                pos = e;
            }
            self.fs.ioend(ino, start, pos - start, T).expect("ioend");
        }
    }

    fn new_name(&mut self) -> String {
        self.names += 1;
        format!("f{}", self.names)
    }

    fn create(&mut self, dir: Ino, size: usize, fsync: bool) {
        let name = self.new_name();
        let new = NewInode { kind: FileType::Regular, perm: 0o644, uid: 0, gid: 0, rdev: 0, time: T };
        let ino = self.fs.create(dir, name.as_bytes(), &new).expect("create").ino;
        let data = self.rng.bytes(size);
        if !data.is_empty() {
            self.host_write(ino, 0, &data);
        }
        self.files.push(Live { dir, name, ino, data, durable: None });
        if fsync {
            self.synced = self.now();
            self.fs.fsync(ino, false).expect("fsync");
            let i = self.files.len() - 1;
            self.durable_now(i);
        }
    }

    fn step(&mut self) {
        let pick = self.rng.below(100);
        let nfiles = self.files.len() as u64;
        match pick {
            0..=29 => {
                let dir = self.dirs[self.rng.below(self.dirs.len() as u64) as usize].0;
                let size = match self.rng.below(4) {
                    0 => 0,
                    1 => self.rng.below(3000) as usize,
                    2 => self.rng.below(40_000) as usize,
                    _ => self.rng.below(300_000) as usize,
                };
                let fsync = self.rng.below(3) != 0;
                self.create(dir, size, fsync);
            }
            30..=39 => {
                // A burst of small files in the big directory.
                let big = self.dirs[1].0;
                for _ in 0..self.rng.below(60) + 10 {
                    let fsync = self.rng.below(8) == 0;
                    let size = self.rng.below(200) as usize;
                    self.create(big, size, fsync);
                }
            }
            40..=49 if nfiles > 0 => {
                // Append, then fsync (a file growing).
                let i = self.rng.below(nfiles) as usize;
                self.touch(i);
                let len = self.rng.below(80_000) as usize + 1;
                let more = self.rng.bytes(len);
                let at = self.files[i].data.len() as u64;
                let ino = self.files[i].ino;
                self.host_write(ino, at, &more);
                self.files[i].data.extend_from_slice(&more);
                self.synced = self.now();
                self.fs.fsync(ino, false).expect("fsync");
                self.durable_now(i);
            }
            50..=59 if nfiles > 0 => {
                // Truncate down, then fsync.
                let i = self.rng.below(nfiles) as usize;
                self.touch(i);
                let cut = self.rng.below(self.files[i].data.len() as u64 + 1);
                let ino = self.files[i].ino;
                // As the kernel and the host do: the rest of the block
                // holding the new end is zeroed first (so a later extension
                // reads zeros there).
                let len = self.files[i].data.len() as u64;
                let tail = (cut.div_ceil(self.bs) * self.bs).min(len) - cut;
                if !cut.is_multiple_of(self.bs) && tail > 0 {
                    self.host_write(ino, cut, &vec![0; tail as usize]);
                }
                self.fs.setattr(ino, &AttrChanges { size: Some(cut), mtime: Some(T), ..Default::default() }).unwrap();
                self.files[i].data.truncate(cut as usize);
                self.synced = self.now();
                self.fs.fsync(ino, false).expect("fsync");
                self.durable_now(i);
            }
            60..=74 if nfiles > 1 => {
                // Rename: to a new name, or over another file.
                let i = self.rng.below(nfiles) as usize;
                self.touch(i);
                let ino = self.files[i].ino;
                let (from_dir, from_name) = (self.files[i].dir, self.files[i].name.clone());
                if self.rng.below(2) == 0 {
                    let j = self.rng.below(nfiles) as usize;
                    if j == i {
                        return;
                    }
                    self.touch(j);
                    let (to_dir, to_name) = (self.files[j].dir, self.files[j].name.clone());
                    let gone = self
                        .fs
                        .rename(from_dir, from_name.as_bytes(), to_dir, to_name.as_bytes(), RenameFlags::default(), T)
                        .expect("rename over");
                    let victim = self.files.remove(j);
                    if let Some(u) = gone
                        && u.nlink == 0
                    {
                        self.fs.evict(victim.ino).expect("evict");
                    }
                    let i = if j < i { i - 1 } else { i };
                    self.files[i].dir = to_dir;
                    self.files[i].name = to_name;
                } else {
                    let to_dir = self.dirs[self.rng.below(self.dirs.len() as u64) as usize].0;
                    let to_name = self.new_name();
                    self.fs
                        .rename(from_dir, from_name.as_bytes(), to_dir, to_name.as_bytes(), RenameFlags::default(), T)
                        .expect("rename");
                    self.files[i].dir = to_dir;
                    self.files[i].name = to_name;
                }
                if self.rng.below(2) == 0 {
                    // ext4's fsync commits the whole transaction, the
                    // rename with it.
                    let i = self.files.iter().position(|f| f.ino == ino).unwrap();
                    self.synced = self.now();
                    self.fs.fsync(ino, false).expect("fsync");
                    self.durable_now(i);
                }
            }
            75..=86 if nfiles > 0 => {
                let i = self.rng.below(nfiles) as usize;
                let was_durable = self.files[i].durable.is_some();
                self.touch(i);
                if was_durable {
                    let path = self.path(self.files[i].dir, &self.files[i].name);
                    let allowed = vec![Some(self.files[i].data.clone()), None];
                    self.durable.push(Durable { path, allowed, from: self.now(), until: usize::MAX });
                }
                let f = self.files.remove(i);
                let u = self.fs.unlink(f.dir, f.name.as_bytes(), T).expect("unlink");
                if u.nlink == 0 {
                    self.fs.evict(f.ino).expect("evict");
                }
            }
            87..=90 => {
                let name = self.new_name();
                let parent = self.dirs[0].0;
                let new = NewInode { kind: FileType::Directory, perm: 0o755, uid: 0, gid: 0, rdev: 0, time: T };
                let ino = self.fs.create(parent, name.as_bytes(), &new).expect("mkdir").ino;
                let path = format!("{}/{name}", self.dirs[0].1);
                self.dirs.push((ino, path));
            }
            95..=96 if nfiles > 0 => {
                // Allocate past the end (the size grows, zeros read), or
                // punch whole blocks inside; then fsync.
                let i = self.rng.below(nfiles) as usize;
                self.touch(i);
                let ino = self.files[i].ino;
                let len = self.files[i].data.len() as u64;
                let (offset, length, flags) = if self.rng.below(2) == 0 || len < 3 * self.bs {
                    (len, (self.rng.below(16) + 1) * self.bs, FallocateFlags::default())
                } else {
                    let first = self.rng.below(len / self.bs - 1) + 1;
                    let blocks = self.rng.below(len / self.bs - first).max(1);
                    (
                        first * self.bs,
                        blocks * self.bs,
                        FallocateFlags { punch_hole: true, keep_size: true, ..Default::default() },
                    )
                };
                self.fs.fallocate(ino, offset, length, flags, T).expect("fallocate");
                let data = &mut self.files[i].data;
                if flags.punch_hole {
                    let end = ((offset + length) as usize).min(data.len());
                    data[offset as usize..end].fill(0);
                } else {
                    data.resize((offset + length) as usize, 0);
                }
                self.synced = self.now();
                self.fs.fsync(ino, false).expect("fsync");
                self.durable_now(i);
            }
            97 if nfiles > 0 => {
                // A value big enough for an xattr block (freed with the file).
                let i = self.rng.below(nfiles) as usize;
                let size = (self.rng.below(self.bs - 400) + 200) as usize;
                let value = self.rng.bytes(size);
                let ino = self.files[i].ino;
                self.fs.setxattr(ino, b"user.crash", &value, XattrFlags::default(), T).expect("setxattr");
            }
            98 => {
                // A slow symlink (its target in a block).
                let name = self.new_name();
                let dir = self.dirs[self.rng.below(self.dirs.len() as u64) as usize].0;
                let target = vec![b't'; self.rng.below(300) as usize + 61];
                let new = NewInode { kind: FileType::Symlink, perm: 0o777, uid: 0, gid: 0, rdev: 0, time: T };
                self.fs.symlink(dir, name.as_bytes(), &target, &new).expect("symlink");
            }
            91..=94 => {
                self.synced = self.now();
                self.fs.syncfs().expect("syncfs");
                for i in 0..self.files.len() {
                    self.durable_now(i);
                }
            }
            _ => {}
        }
    }
}

/// The image as the device could hold it: `base`, every write of
/// `events[..cut]`, and of `extra` (writes after the cut: a subset, one
/// maybe torn) written at `path`.
fn materialise(path: &Path, base: &[u8], events: &[Event], cut: usize, extra: &[(usize, Option<usize>)]) {
    let mut img = base.to_vec();
    let mut put = |at: u64, data: &[u8]| img[at as usize..at as usize + data.len()].copy_from_slice(data);
    for e in &events[..cut] {
        if let Event::Write(at, data) = e {
            put(*at, data);
        }
    }
    for &(i, torn) in extra {
        if let Event::Write(at, data) = &events[i] {
            put(*at, &data[..torn.unwrap_or(data.len()).min(data.len())]);
        }
    }
    std::fs::write(path, img).unwrap();
}

fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// debugfs `dump` of every path, into `dir`; the contents read.
fn dump_all(image: &Path, dir: &Path, paths: &[&str]) -> Vec<Option<Vec<u8>>> {
    let script = dir.join("script");
    let mut text = String::new();
    for (n, p) in paths.iter().enumerate() {
        text.push_str(&format!("dump {p} {}\n", dir.join(format!("out{n}")).display()));
    }
    std::fs::write(&script, text).unwrap();
    output(Command::new("debugfs").arg("-f").arg(&script).arg(image));
    (0..paths.len())
        .map(|n| {
            let f = dir.join(format!("out{n}"));
            let got = std::fs::read(&f).ok();
            let _ = std::fs::remove_file(&f);
            got
        })
        .collect()
}

/// Removes a directory (the crash images in /dev/shm) when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Config {
    name: &'static str,
    mkfs: &'static [&'static str],
    /// What happens to the journal before the workload.
    prepare: Prepare,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Prepare {
    /// As mkfs left it (no journal features: the writer sets them).
    Mkfs,
    /// Mounted and unmounted by the kernel, which sets its features.
    KernelFirst,
    /// Switched to checksum v2 (the format older kernels wrote), by
    /// editing the journal superblock as jbd2 defines it.
    CsumV2,
}

/// Set journal checksum v2 on `image` (a filesystem without
/// metadata_csum, whose writer keeps the journal's own checksum kind).
fn make_csum_v2(image: &Path) {
    let said = common::run(Command::new("debugfs").args(["-R", "bmap <8> 0"]).arg(image));
    let block: u64 = said.trim().parse().expect("journal block 0");
    let bs = block_size(image);
    let f = File::options().read(true).write(true).open(image).unwrap();
    let mut sb = vec![0u8; 1024];
    f.read_exact_at(&mut sb, block * bs).unwrap();
    assert_eq!(sb[0..4], [0xC0, 0x3B, 0x39, 0x98], "journal superblock magic");
    let incompat = u32::from_be_bytes(sb[0x28..0x2C].try_into().unwrap()) | 0x8;
    sb[0x28..0x2C].copy_from_slice(&incompat.to_be_bytes());
    sb[0x50] = 4; // crc32c
    sb[0xFC..0x100].fill(0);
    // jbd2_chksum(~0, sb): the crc32c register with no final inversion.
    let c = !crc32c::crc32c_append(0, &sb);
    sb[0xFC..0x100].copy_from_slice(&c.to_be_bytes());
    f.write_all_at(&sb, block * bs).unwrap();
    let header = common::run(Command::new("dumpe2fs").arg("-h").arg(image));
    assert!(header.contains("journal_checksum_v2"), "{header}");
}

fn block_size(image: &Path) -> u64 {
    let header = common::run(Command::new("dumpe2fs").arg("-h").arg(image));
    header.lines().find_map(|l| l.strip_prefix("Block size:")).unwrap().trim().parse().unwrap()
}

fn run(config: &Config, seed: u64) {
    let scratch = Scratch::new(&format!("crash-{}", config.name));
    let shm = PathBuf::from(format!("/dev/shm/fshost-crash-{}-{}", std::process::id(), config.name));
    std::fs::create_dir_all(&shm).unwrap();
    let _cleanup = RemoveOnDrop(shm.clone());
    let src = scratch.join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::create_dir_all(src.join("big")).unwrap();
    std::fs::write(src.join("d/seed"), vec![7u8; 5000]).unwrap();
    let image = shm.join("image");
    common::mkfs(&src, &image, config.mkfs, "32M");
    match config.prepare {
        Prepare::Mkfs => {}
        Prepare::KernelFirst => drop(KernelMount::read_write(&image, "").expect("kernel mount")),
        Prepare::CsumV2 => make_csum_v2(&image),
    }
    let base = std::fs::read(&image).unwrap();

    let log = Rc::new(RefCell::new(Vec::new()));
    let file = File::options().read(true).write(true).open(&image).unwrap();
    let size = file.metadata().unwrap().len();
    let dev = Rc::new(file.try_clone().unwrap());
    let device = Device::new(Box::new(LoggingIo { file, size, log: log.clone() }));
    let options = MountOptions { read_only: false, options: vec![("journal".into(), String::new())] };
    let mut fs = Ext4::mount(device, &options).expect("mount");
    fs.begin_write().expect("begin_write");
    let bs = u64::from(fs.info().unwrap().block_size);
    let d = fs.lookup(ROOT, b"d").unwrap().ino;
    let big = fs.lookup(ROOT, b"big").unwrap().ino;
    let mut w = Workload {
        fs,
        log: log.clone(),
        dev,
        bs,
        rng: Rng(seed | 1),
        dirs: vec![(d, "/d".into()), (big, "/big".into())],
        files: Vec::new(),
        durable: Vec::new(),
        names: 0,
        synced: 0,
    };
    let ops = knob("FSHOST_CRASH_OPS", 120);
    for _ in 0..ops {
        w.step();
    }
    w.synced = w.now();
    w.fs.unmount().expect("unmount");
    for i in 0..w.files.len() {
        w.durable_now(i);
    }
    let durable = std::mem::take(&mut w.durable);
    drop(w);
    let events = log.borrow().clone();

    // The whole run: clean, every file as written.
    if let Err(e) = fshost_tests::fsck::e2fsck(&image) {
        panic!("{}: after unmount: {e:#}", config.name);
    }
    let header = output(Command::new("dumpe2fs").arg("-h").arg(&image)).1;
    assert!(!header.contains("needs_recovery"), "{}: needs_recovery after unmount", config.name);

    let flushes: Vec<usize> =
        events.iter().enumerate().filter(|(_, e)| matches!(e, Event::Flush)).map(|(i, _)| i).collect();
    eprintln!(
        "{}: {} events, {} flushes, {} durable versions",
        config.name,
        events.len(),
        flushes.len(),
        durable.len()
    );
    assert!(flushes.len() > 10, "the workload flushed too rarely to test anything");

    let mut rng = Rng(seed.wrapping_mul(31) | 1);
    let points = knob("FSHOST_CRASH_POINTS", 24);
    let kernel = knob("FSHOST_CRASH_KERNEL", 2);
    let crash = shm.join("crash");
    for n in 0..points {
        // A flush, and whether to add a random part of what followed it.
        let f = flushes[rng.below(flushes.len() as u64) as usize];
        let cut = f + 1;
        let next = flushes.iter().copied().find(|&x| x > f).unwrap_or(events.len());
        let mut extra = Vec::new();
        if n % 2 == 1 {
            for (i, event) in events.iter().enumerate().take(next).skip(cut) {
                if rng.below(2) == 0 {
                    let torn = (rng.below(8) == 0).then(|| {
                        let len = match event {
                            Event::Write(_, d) => d.len() as u64,
                            Event::Flush => 0,
                        };
                        (rng.below(len / 512 + 1) * 512) as usize
                    });
                    extra.push((i, torn));
                }
            }
        }
        // Past the last write the image holds, nothing happened yet.
        let window_end = extra.last().map_or(cut, |&(i, _)| i + 1);
        materialise(&crash, &base, &events, cut, &extra);
        let what = format!("{} seed {seed} point {n}: events ..{cut} + {} of ..{next}", config.name, extra.len());

        let (_, said) = output(Command::new("e2fsck").args(["-E", "journal_only", "-y"]).arg(&crash));
        // A torn commit block is a transaction not committed (jbd2 says
        // "corrupt, replay aborted" and keeps the older state); else the
        // replay must find nothing wrong.
        let lower = said.to_lowercase();
        let torn = extra.iter().any(|(_, t)| t.is_some());
        assert!(
            torn || !lower.contains("checksum") && !lower.contains("corrupt") && !lower.contains("invalid"),
            "{what}: the journal replay complained:\n{said}"
        );

        let (clean, check) = output(Command::new("e2fsck").arg("-fn").arg(&crash));
        assert!(clean, "{what}: e2fsck -fn after the journal replay:\n{said}\n{check}");

        let want: Vec<&Durable> = durable.iter().filter(|d| d.from <= cut && window_end <= d.until).collect();
        let paths: Vec<&str> = want.iter().map(|d| d.path.as_str()).collect();
        let got = dump_all(&crash, &shm, &paths);
        for (d, got) in want.iter().zip(&got) {
            if !d.allowed.contains(got) {
                let diff = |want: &Option<Vec<u8>>| match (want, got) {
                    (Some(w), Some(g)) => {
                        let at = w.iter().zip(g).position(|(a, b)| a != b);
                        format!("{} bytes, first difference at {at:?}", w.len())
                    }
                    (w, _) => format!("{:?}", w.as_ref().map(Vec::len)),
                };
                let wanted: Vec<String> = d.allowed.iter().map(diff).collect();
                panic!(
                    "{what}: {} lost its fsync'd content (durable from event {}): now {:?} bytes; wanted {wanted:?}",
                    d.path,
                    d.from,
                    got.as_ref().map(Vec::len)
                );
            }
        }

        if n < kernel {
            // The kernel replays the journal of the same crash image itself.
            materialise(&crash, &base, &events, cut, &extra);
            {
                let mount =
                    KernelMount::read_write(&crash, "").unwrap_or_else(|e| panic!("{what}: kernel mount: {e:#}"));
                for d in &want {
                    let got = std::fs::read(mount.path().join(&d.path[1..])).ok();
                    assert!(d.allowed.contains(&got), "{what}: the kernel reads {} differently", d.path);
                }
            }
            let (clean, check) = output(Command::new("e2fsck").arg("-fn").arg(&crash));
            assert!(clean, "{what}: e2fsck -fn after the kernel's recovery:\n{check}");
        }
    }
}

fn seed() -> u64 {
    knob("FSHOST_CRASH_SEED", 0x5eed_1234)
}

#[test]
fn crash_4k_metadata_csum_64bit() {
    require_root();
    run(
        &Config { name: "4k-csum-64", mkfs: &["-b", "4096", "-O", "metadata_csum,64bit"], prepare: Prepare::Mkfs },
        seed(),
    );
}

#[test]
fn crash_1k_no_csum_32bit() {
    require_root();
    run(
        &Config { name: "1k-plain-32", mkfs: &["-b", "1024", "-O", "^metadata_csum,^64bit"], prepare: Prepare::Mkfs },
        seed() + 1,
    );
}

#[test]
fn crash_1k_metadata_csum_32bit() {
    require_root();
    run(
        &Config { name: "1k-csum-32", mkfs: &["-b", "1024", "-O", "metadata_csum,^64bit"], prepare: Prepare::Mkfs },
        seed() + 2,
    );
}

#[test]
fn crash_4k_no_csum_64bit() {
    require_root();
    run(
        &Config { name: "4k-plain-64", mkfs: &["-b", "4096", "-O", "^metadata_csum,64bit"], prepare: Prepare::Mkfs },
        seed() + 3,
    );
}

#[test]
fn crash_4k_journal_the_kernel_mounted_first() {
    require_root();
    let config = Config { name: "4k-kernel-first", mkfs: &["-b", "4096"], prepare: Prepare::KernelFirst };
    run(&config, seed() + 4);
}

#[test]
fn crash_1k_journal_checksum_v2() {
    require_root();
    let config =
        Config { name: "1k-v2", mkfs: &["-b", "1024", "-O", "^metadata_csum,^64bit"], prepare: Prepare::CsumV2 };
    run(&config, seed() + 5);
}

/// Blocks a transaction frees wait for its commit; when they are what is
/// left, the next call commits first instead of failing with ENOSPC.
#[test]
fn space_freed_without_a_sync_is_usable_again() {
    require_root();
    let scratch = Scratch::new("crash-full");
    let src = scratch.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let image = scratch.join("image");
    common::mkfs(&src, &image, &["-b", "4096"], "24M");
    let file = File::options().read(true).write(true).open(&image).unwrap();
    let size = file.metadata().unwrap().len();
    let log = Rc::new(RefCell::new(Vec::new()));
    let dev = Rc::new(file.try_clone().unwrap());
    let device = Device::new(Box::new(LoggingIo { file, size, log: log.clone() }));
    let options = MountOptions { read_only: false, options: vec![("journal".into(), String::new())] };
    let mut fs = Ext4::mount(device, &options).expect("mount");
    fs.begin_write().expect("begin_write");
    let info = fs.info().unwrap();
    let bs = u64::from(info.block_size);
    // Most of what is free, so that two such files do not fit at once.
    let len = (info.free_blocks * 3 / 4 * bs) as usize;
    let mut w = Workload {
        fs,
        log,
        dev,
        bs,
        rng: Rng(99),
        dirs: vec![(ROOT, String::new())],
        files: Vec::new(),
        durable: Vec::new(),
        names: 0,
        synced: 0,
    };
    w.create(ROOT, len, true);
    let first = w.files.remove(0);
    assert_eq!(w.fs.unlink(ROOT, first.name.as_bytes(), T).unwrap().nlink, 0);
    w.fs.evict(first.ino).unwrap();
    w.create(ROOT, len, false);
    let second = w.files.remove(0);
    w.fs.unmount().expect("unmount");
    drop(w);
    fshost_tests::fsck::e2fsck(&image).unwrap_or_else(|e| panic!("{e:#}"));
    let dir = scratch.join("dump");
    std::fs::create_dir_all(&dir).unwrap();
    let path = format!("/{}", second.name);
    assert!(dump_all(&image, &dir, &[path.as_str()])[0].as_deref() == Some(&second.data[..]));
}

#[test]
fn ext2_without_a_journal_keeps_the_not_clean_mark() {
    require_root();
    let scratch = Scratch::new("crash-ext2");
    let src = scratch.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let image = scratch.join("image");
    common::mkfs(&src, &image, &["-O", "^has_journal"], "16M");
    let device = fshost_sdk::testing::open_image_rw(&image).unwrap();
    let options = MountOptions { read_only: false, options: vec![("journal".into(), String::new())] };
    let mut fs = Ext4::mount(device, &options).expect("mount");
    fs.begin_write().expect("begin_write");
    let header = output(Command::new("dumpe2fs").arg("-h").arg(&image)).1;
    assert!(header.contains("not clean"), "{header}");
    fs.unmount().unwrap();
    drop(fs);
    let header = output(Command::new("dumpe2fs").arg("-h").arg(&image)).1;
    assert!(header.contains("clean") && !header.contains("not clean"), "{header}");
}
