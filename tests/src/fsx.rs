//! An fsx-style checker: a seeded sequence of writes, truncates, fallocate
//! calls (allocate, keep-size, punch, zero-range), reads and mmap reads and
//! writes on one file, checked against an in-memory model of its bytes.
//! Every read is compared with the model; so is the whole file every
//! `check_every` ops and at the end, and SEEK_DATA must find every non-zero
//! byte once the file is synced. The first mismatch stops the run with the
//! recent ops listed.
//!
//! Like xfstests' fsx, it knows nothing of the filesystem: the model is the
//! POSIX meaning of each call. An op the filesystem refuses with EOPNOTSUPP
//! (fallocate on a block-mapped ext2/ext3 file) leaves the model as it was
//! and is counted, so a run on the kernel and a run on fshost with the same
//! seed must also refuse the same ops.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, bail};

use crate::kernel::data_ranges;
use crate::workload::script::Rng;
use crate::workload::sys;

/// How a run is shaped.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    pub ops: usize,
    /// The file never grows past this.
    pub max_size: u64,
    /// Compare the whole file with the model every this many ops.
    pub check_every: usize,
    pub mmap: bool,
    pub fallocate: bool,
}

impl Config {
    /// FSHOST_FSX_OPS ops (default 3000), a 1 MiB file, everything on, the
    /// whole file checked every FSHOST_FSX_CHECK_EVERY ops (default 100; 1
    /// finds the first op that breaks it); FSHOST_FSX_MMAP=0 and
    /// FSHOST_FSX_FALLOCATE=0 leave those ops out.
    pub fn from_env(seed: u64) -> anyhow::Result<Config> {
        let ops = match std::env::var("FSHOST_FSX_OPS") {
            Ok(v) => v.trim().parse().with_context(|| format!("FSHOST_FSX_OPS={v:?} is not a number"))?,
            Err(_) => 3000,
        };
        let check_every = match std::env::var("FSHOST_FSX_CHECK_EVERY") {
            Ok(v) => v.trim().parse().with_context(|| format!("FSHOST_FSX_CHECK_EVERY={v:?} is not a number"))?,
            Err(_) => 100,
        };
        let on = |var: &str| std::env::var(var).map_or(true, |v| v.trim() != "0");
        let (mmap, fallocate) = (on("FSHOST_FSX_MMAP"), on("FSHOST_FSX_FALLOCATE"));
        Ok(Config { seed, ops, max_size: 1 << 20, check_every, mmap, fallocate })
    }
}

/// One fsx operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsxOp {
    Read {
        offset: u64,
        len: u64,
    },
    Write {
        offset: u64,
        len: u64,
    },
    MapRead {
        offset: u64,
        len: u64,
    },
    MapWrite {
        offset: u64,
        len: u64,
    },
    Truncate {
        size: u64,
    },
    Fallocate {
        offset: u64,
        len: u64,
        keep_size: bool,
    },
    PunchHole {
        offset: u64,
        len: u64,
    },
    ZeroRange {
        offset: u64,
        len: u64,
        keep_size: bool,
    },
    /// fsync, close and reopen the file.
    Reopen,
}

impl FsxOp {
    fn name(&self) -> &'static str {
        match self {
            FsxOp::Read { .. } => "read",
            FsxOp::Write { .. } => "write",
            FsxOp::MapRead { .. } => "mapread",
            FsxOp::MapWrite { .. } => "mapwrite",
            FsxOp::Truncate { .. } => "truncate",
            FsxOp::Fallocate { .. } => "fallocate",
            FsxOp::PunchHole { .. } => "punch",
            FsxOp::ZeroRange { .. } => "zero",
            FsxOp::Reopen => "reopen",
        }
    }
}

/// What a run did: ops per name, and those refused with EOPNOTSUPP. Two
/// runs of one seed on correct filesystems of one layout give equal
/// reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub done: BTreeMap<&'static str, usize>,
    pub unsupported: BTreeMap<&'static str, usize>,
    /// The model's bytes at the end: what the file must hold.
    pub expected: Vec<u8>,
}

/// A fault to plant, to prove the checker notices one: after op `at`, one
/// byte of the file is changed behind the model's back.
#[derive(Debug, Clone, Copy)]
pub struct Plant {
    pub at: usize,
}

struct Run<'a> {
    path: &'a Path,
    file: File,
    model: Vec<u8>,
    rng: Rng,
    recent: VecDeque<(usize, FsxOp)>,
    page: u64,
}

/// Runs fsx on `path` (created, or truncated to empty).
pub fn run(path: &Path, config: &Config, plant: Option<Plant>) -> anyhow::Result<Report> {
    let file = sys::open(path, libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC, 0o644)
        .with_context(|| format!("creating {}", path.display()))?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let mut run = Run { path, file, model: Vec::new(), rng: Rng::new(config.seed), recent: VecDeque::new(), page };
    let mut report = Report::default();
    for i in 0..config.ops {
        let op = run.draw(config);
        run.recent.push_back((i, op));
        if run.recent.len() > 30 {
            run.recent.pop_front();
        }
        match run.apply(op) {
            Ok(()) => *report.done.entry(op.name()).or_default() += 1,
            Err(err) if err.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                *report.unsupported.entry(op.name()).or_default() += 1
            }
            Err(err) => return Err(run.fail(i, &format!("{op:?} failed: {err}"))),
        }
        if let Some(p) = plant
            && p.at == i
        {
            run.plant_fault()?;
        }
        if (i + 1) % config.check_every.max(1) == 0 {
            run.check_all(i)?;
        }
    }
    run.file.sync_all().context("fsync at the end")?;
    run.check_all(config.ops)?;
    report.expected = run.model;
    Ok(report)
}

/// Checks that the file at `path` holds `expected` (after a remount), and
/// that SEEK_DATA finds every non-zero byte.
pub fn verify(path: &Path, expected: &[u8]) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let size = file.metadata()?.len();
    if size != expected.len() as u64 {
        bail!("{}: size {size}, the model says {}", path.display(), expected.len());
    }
    let mut buf = vec![0u8; expected.len()];
    let n = sys::read_full_at(&file, &mut buf, 0)?;
    if let Some(at) = first_difference(&buf[..n], expected) {
        bail!("{}: byte {at} is {:#04x}, the model says {:#04x}", path.display(), buf[at], expected[at]);
    }
    check_map(&file, expected).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn first_difference(got: &[u8], want: &[u8]) -> Option<usize> {
    got.iter().zip(want).position(|(a, b)| a != b).or((got.len() != want.len()).then_some(got.len().min(want.len())))
}

/// Every non-zero byte of `expected` lies in a data range.
fn check_map(file: &File, expected: &[u8]) -> Result<(), String> {
    let ranges = data_ranges(file, expected.len() as u64).map_err(|e| format!("SEEK_DATA/SEEK_HOLE: {e}"))?;
    let mut at = 0usize;
    for &(start, end) in &ranges {
        if let Some(pos) = expected[at..(start as usize).min(expected.len())].iter().position(|&b| b != 0) {
            return Err(format!("byte {} is not zero but SEEK_HOLE reports a hole there ({ranges:?})", at + pos));
        }
        at = (end as usize).min(expected.len());
    }
    if let Some(pos) = expected[at..].iter().position(|&b| b != 0) {
        return Err(format!("byte {} is not zero but lies past the last data range ({ranges:?})", at + pos));
    }
    Ok(())
}

impl Run<'_> {
    fn size(&self) -> u64 {
        self.model.len() as u64
    }

    fn range(&mut self, max: u64, within_size: bool) -> (u64, u64) {
        let limit = if within_size { self.size() } else { max };
        if limit == 0 {
            return (0, 0);
        }
        let offset = match self.rng.below(4) {
            0 => self.rng.below(limit) & !(self.page - 1),
            1 => self.size().saturating_sub(self.rng.below(8192)).min(limit - 1),
            _ => self.rng.below(limit),
        };
        let len = match self.rng.below(4) {
            0 => self.page,
            1 => self.rng.below(16) + 1,
            _ => self.rng.below(64 << 10) + 1,
        };
        (offset, len.min(limit - offset))
    }

    fn draw(&mut self, config: &Config) -> FsxOp {
        let max = config.max_size;
        loop {
            let kind = self.rng.below(14);
            let op = match kind {
                0..=2 => {
                    let (offset, len) = self.range(max, true);
                    FsxOp::Read { offset, len }
                }
                3..=5 => {
                    let (offset, len) = self.range(max, false);
                    FsxOp::Write { offset, len }
                }
                6 if config.mmap => {
                    let (offset, len) = self.range(max, true);
                    FsxOp::MapRead { offset, len }
                }
                7 if config.mmap => {
                    let (offset, len) = self.range(max, false);
                    FsxOp::MapWrite { offset, len }
                }
                8 => {
                    let size = match self.rng.below(3) {
                        0 => self.rng.below(self.size() + 1),
                        _ => self.rng.below(max),
                    };
                    FsxOp::Truncate { size }
                }
                9 if config.fallocate => {
                    let (offset, len) = self.range(max, false);
                    FsxOp::Fallocate { offset, len, keep_size: self.rng.chance(50) }
                }
                10 if config.fallocate => {
                    let (offset, len) = self.range(max, false);
                    FsxOp::PunchHole { offset, len }
                }
                11 if config.fallocate => {
                    let (offset, len) = self.range(max, false);
                    FsxOp::ZeroRange { offset, len, keep_size: self.rng.chance(50) }
                }
                12 if self.rng.chance(10) => FsxOp::Reopen,
                _ => continue,
            };
            let empty = matches!(
                op,
                FsxOp::Read { len: 0, .. }
                    | FsxOp::Write { len: 0, .. }
                    | FsxOp::MapRead { len: 0, .. }
                    | FsxOp::MapWrite { len: 0, .. }
                    | FsxOp::Fallocate { len: 0, .. }
                    | FsxOp::PunchHole { len: 0, .. }
                    | FsxOp::ZeroRange { len: 0, .. }
            );
            if !empty {
                return op;
            }
        }
    }

    fn data(&mut self, len: u64) -> Vec<u8> {
        let seed = self.rng.next_u64();
        crate::tree::pattern(seed, 0, len as usize)
    }

    fn resize(&mut self, size: u64) {
        self.model.resize(size as usize, 0);
    }

    fn zero(&mut self, offset: u64, len: u64) {
        let end = (offset + len).min(self.size());
        if offset < end {
            self.model[offset as usize..end as usize].fill(0);
        }
    }

    fn apply(&mut self, op: FsxOp) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        match op {
            FsxOp::Read { offset, len } => {
                let mut buf = vec![0u8; len as usize];
                let n = sys::read_full_at(&self.file, &mut buf, offset)?;
                self.compare(offset, &buf[..n], len)
            }
            FsxOp::Write { offset, len } => {
                let bytes = self.data(len);
                self.file.write_all_at(&bytes, offset)?;
                if offset + len > self.size() {
                    self.resize(offset + len);
                }
                self.model[offset as usize..(offset + len) as usize].copy_from_slice(&bytes);
                Ok(())
            }
            FsxOp::MapRead { offset, len } => {
                let map = Mapping::new(fd, offset, len, self.page, false)?;
                let got = map.slice(offset, len).to_vec();
                drop(map);
                self.compare(offset, &got, len)
            }
            FsxOp::MapWrite { offset, len } => {
                // As fsx does: extend the file first, a mapping cannot.
                if offset + len > self.size() {
                    self.file.set_len(offset + len)?;
                    self.resize(offset + len);
                }
                let bytes = self.data(len);
                let mut map = Mapping::new(fd, offset, len, self.page, true)?;
                map.slice_mut(offset, len).copy_from_slice(&bytes);
                map.sync()?;
                drop(map);
                self.model[offset as usize..(offset + len) as usize].copy_from_slice(&bytes);
                Ok(())
            }
            FsxOp::Truncate { size } => {
                self.file.set_len(size)?;
                self.resize(size);
                Ok(())
            }
            FsxOp::Fallocate { offset, len, keep_size } => {
                let mode = if keep_size { libc::FALLOC_FL_KEEP_SIZE } else { 0 };
                sys::fallocate(&self.file, mode, offset, len)?;
                if !keep_size && offset + len > self.size() {
                    self.resize(offset + len);
                }
                Ok(())
            }
            FsxOp::PunchHole { offset, len } => {
                sys::fallocate(&self.file, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, offset, len)?;
                self.zero(offset, len);
                Ok(())
            }
            FsxOp::ZeroRange { offset, len, keep_size } => {
                let mode = libc::FALLOC_FL_ZERO_RANGE | if keep_size { libc::FALLOC_FL_KEEP_SIZE } else { 0 };
                sys::fallocate(&self.file, mode, offset, len)?;
                self.zero(offset, len);
                if !keep_size && offset + len > self.size() {
                    self.resize(offset + len);
                }
                Ok(())
            }
            FsxOp::Reopen => {
                self.file.sync_all()?;
                self.file = sys::open(self.path, libc::O_RDWR, 0)?;
                Ok(())
            }
        }
    }

    /// A read's bytes against the model (ops report mismatches as EIO
    /// errors carrying the detail; `run` turns them into a failure).
    fn compare(&self, offset: u64, got: &[u8], len: u64) -> io::Result<()> {
        let end = (offset + len).min(self.size()).max(offset);
        let want = &self.model[(offset.min(self.size())) as usize..end as usize];
        match first_difference(got, want) {
            None => Ok(()),
            Some(at) => Err(io::Error::other(format!(
                "read {len}@{offset}: byte {} is {} but the model says {} (read {} bytes, expected {})",
                offset + at as u64,
                got.get(at).map_or("missing".into(), |b| format!("{b:#04x}")),
                want.get(at).map_or("missing".into(), |b| format!("{b:#04x}")),
                got.len(),
                want.len()
            ))),
        }
    }

    fn check_all(&self, i: usize) -> anyhow::Result<()> {
        let size = self.file.metadata()?.len();
        if size != self.size() {
            return Err(self.fail(i, &format!("size {size}, the model says {}", self.size())));
        }
        let mut buf = vec![0u8; self.model.len()];
        let n = sys::read_full_at(&self.file, &mut buf, 0)?;
        if let Err(e) = self.compare(0, &buf[..n], self.size()) {
            return Err(self.fail(i, &format!("whole-file check: {e}")));
        }
        // The map only after fdatasync: the kernel's ext4 reports a dirty,
        // not yet allocated page of a block-mapped (ext2/ext3) file as a
        // hole on a live mount, so the map is checked for data on disk.
        self.file.sync_data()?;
        check_map(&self.file, &self.model).map_err(|e| self.fail(i, &e))
    }

    /// Changes one byte of the file through a second descriptor; the
    /// model is left alone.
    fn plant_fault(&mut self) -> anyhow::Result<()> {
        let other = sys::open(self.path, libc::O_RDWR, 0)?;
        if self.model.is_empty() {
            self.file.set_len(1)?; // a size the model does not know
            return Ok(());
        }
        let at = self.rng.below(self.size());
        other.write_all_at(&[self.model[at as usize] ^ 0x40], at)?;
        Ok(())
    }

    fn fail(&self, i: usize, what: &str) -> anyhow::Error {
        let recent: Vec<String> = self.recent.iter().map(|(n, op)| format!("  {n}: {op:?}")).collect();
        anyhow::anyhow!("fsx op {i} on {}: {what}\nlast ops:\n{}", self.path.display(), recent.join("\n"))
    }
}

/// A shared mapping of the pages around `[offset, offset + len)`,
/// unmapped on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
    start: u64,
}

impl Mapping {
    fn new(fd: libc::c_int, offset: u64, len: u64, page: u64, write: bool) -> io::Result<Mapping> {
        let start = offset & !(page - 1);
        let map_len = (offset + len - start) as usize;
        let prot = libc::PROT_READ | if write { libc::PROT_WRITE } else { 0 };
        // SAFETY: a fresh shared mapping of an open fd; no Rust reference
        // aliases it; it is unmapped on drop.
        let ptr =
            unsafe { libc::mmap(std::ptr::null_mut(), map_len, prot, libc::MAP_SHARED, fd, start as libc::off_t) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr, len: map_len, start })
    }

    fn slice(&self, offset: u64, len: u64) -> &[u8] {
        // SAFETY: the range lies inside the mapping (offset >= start,
        // offset + len = start + self.len at most), which lives as long as
        // self; the caller keeps it inside the file's size.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>().add((offset - self.start) as usize), len as usize) }
    }

    fn slice_mut(&mut self, offset: u64, len: u64) -> &mut [u8] {
        // SAFETY: as in `slice`, and the mapping is writable.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.cast::<u8>().add((offset - self.start) as usize), len as usize)
        }
    }

    /// msync(MS_SYNC): the written pages reach the filesystem now.
    fn sync(&self) -> io::Result<()> {
        // SAFETY: our own mapping.
        if unsafe { libc::msync(self.ptr, self.len, libc::MS_SYNC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}
