//! A concurrent namespace workload for read-write mounts: several processes
//! each run [`run`] on one shared set of directories, racing each other
//! with creates, writes, truncates, renames (plain, noreplace, exchange),
//! hard and symbolic links, unlinks, mkdir/rmdir, chmod and xattrs, until
//! a deadline. Names come from a small set, so the processes collide all
//! the time: a rename finds its source gone, a rmdir its directory
//! refilled, a link its target renamed away.
//!
//! What a run proves by itself is small: each call answered either success
//! or an errno that a race can explain (ENOENT, EEXIST, ENOTEMPTY, ...);
//! anything else (EIO, ENOTCONN, EUCLEAN, ...) is recorded as unexpected.
//! Each process also keeps one private file and checks every write it makes
//! there by reading it back. What the tree left behind means is judged
//! afterwards by oracles nobody here wrote: `e2fsck -fn`, and the kernel's
//! ext4 driver showing the tree fshost showed (`crate::capture`).
//!
//! Outcomes cross the process boundary as text lines on stdout
//! ([`Tally::line`], [`Tally::parse`]), so a test can re-execute its own
//! binary as the workers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::workload::sys;

/// Shared directories (`d0` .. `d7`), each with subdirectory names `s0`
/// .. `s3` and entry names `f0` .. `f11` in play.
const DIRS: u64 = 8;
const SUBDIRS: u64 = 4;
const NAMES: u64 = 12;

/// Errnos a race between the workers (or an op aimed at the wrong kind of
/// entry) explains.
pub const EXPECTED: &[i32] = &[
    libc::ENOENT,
    libc::EEXIST,
    libc::ENOTEMPTY,
    libc::ENOTDIR,
    libc::EISDIR,
    // rename of a directory into itself, a subdirectory of itself, or a
    // RENAME_EXCHANGE across a subtree.
    libc::EINVAL,
    // link(2) of a directory.
    libc::EPERM,
    // removexattr of a name not set.
    libc::ENODATA,
];

/// The prefix of the lines a worker prints.
pub const TALLY: &str = "fshost-stress-tally";
pub const UNEXPECTED: &str = "fshost-stress-unexpected";

/// What one worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Per op name: calls that succeeded.
    pub ok: BTreeMap<String, u64>,
    /// Per errno: calls that failed with an expected errno.
    pub expected: BTreeMap<i32, u64>,
    /// Each unexpected answer or wrong read-back, described.
    pub unexpected: Vec<String>,
}

impl Tally {
    pub fn ops(&self) -> u64 {
        self.ok.values().sum::<u64>() + self.expected.values().sum::<u64>() + self.unexpected.len() as u64
    }

    /// Adds another worker's tally.
    pub fn add(&mut self, other: &Tally) {
        for (k, v) in &other.ok {
            *self.ok.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.expected {
            *self.expected.entry(*k).or_default() += v;
        }
        self.unexpected.extend(other.unexpected.iter().cloned());
    }

    /// The lines a worker prints: one per unexpected answer, then the
    /// counts.
    pub fn lines(&self) -> String {
        let mut out = String::new();
        for u in &self.unexpected {
            let _ = writeln!(out, "{UNEXPECTED} {}", u.replace('\n', " "));
        }
        let ok: Vec<String> = self.ok.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        let expected: Vec<String> = self.expected.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        let _ = writeln!(out, "{TALLY} ok={} expected={}", ok.join(","), expected.join(","));
        out
    }

    /// Reads back what [`Tally::lines`] printed (among other output); None
    /// without the counts line (the worker died before it).
    pub fn parse(text: &str) -> Option<Tally> {
        let mut tally = Tally::default();
        let mut counted = false;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(UNEXPECTED) {
                tally.unexpected.push(rest.trim().to_string());
            } else if let Some(rest) = line.strip_prefix(TALLY) {
                for field in rest.split_whitespace() {
                    let (key, list) = field.split_once('=')?;
                    for pair in list.split(',').filter(|p| !p.is_empty()) {
                        let (name, n) = pair.rsplit_once(':')?;
                        let n: u64 = n.parse().ok()?;
                        match key {
                            "ok" => *tally.ok.entry(name.to_string()).or_default() += n,
                            "expected" => *tally.expected.entry(name.parse().ok()?).or_default() += n,
                            _ => return None,
                        }
                    }
                }
                counted = true;
            }
        }
        counted.then_some(tally)
    }
}

/// xorshift64*: a small seeded generator (no dependency, the same
/// sequence on every machine).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Makes the shared directories under `root` (once, before the workers).
pub fn prepare(root: &Path) -> std::io::Result<()> {
    for d in 0..DIRS {
        std::fs::create_dir_all(root.join(format!("d{d}")))?;
    }
    std::fs::create_dir_all(root.join("own"))
}

/// A path in play: `dN/fM`, `dN/sK` or `dN/sK/fM`.
fn any_path(root: &Path, rng: &mut Rng) -> PathBuf {
    let dir = root.join(format!("d{}", rng.below(DIRS)));
    match rng.below(4) {
        0 => dir.join(format!("s{}", rng.below(SUBDIRS))),
        1 => dir.join(format!("s{}", rng.below(SUBDIRS))).join(format!("f{}", rng.below(NAMES))),
        _ => dir.join(format!("f{}", rng.below(NAMES))),
    }
}

/// A directory path in play: `dN/sK`.
fn sub_path(root: &Path, rng: &mut Rng) -> PathBuf {
    root.join(format!("d{}", rng.below(DIRS))).join(format!("s{}", rng.below(SUBDIRS)))
}

/// Runs worker `id` on `root` (after [`prepare`]) for `duration`.
pub fn run(root: &Path, id: u64, seed: u64, duration: Duration) -> Tally {
    let mut rng = Rng::new(seed ^ (id + 1).wrapping_mul(0x1000_0000_01b3));
    let mut tally = Tally::default();
    let own_path = root.join("own").join(format!("w{id}"));
    let mut own_model: Vec<u8> = Vec::new();
    let own = match sys::open(&own_path, libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC, 0o644) {
        Ok(f) => Some(f),
        Err(e) => {
            tally.unexpected.push(format!("worker {id}: creating its own file: {e}"));
            None
        }
    };
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        let (name, result): (&str, std::io::Result<()>) = match rng.below(20) {
            0..=2 => {
                let path = any_path(root, &mut rng);
                let len = rng.below(20_000) as usize;
                let data = rng.bytes(len);
                let at = rng.below(64 << 10);
                (
                    "create-write",
                    sys::open(&path, libc::O_CREAT | libc::O_WRONLY, 0o644).and_then(|f| f.write_all_at(&data, at)),
                )
            }
            3 => {
                let path = any_path(root, &mut rng);
                let len = rng.below(40_000);
                ("truncate", sys::open(&path, libc::O_WRONLY, 0).and_then(|f| f.set_len(len)))
            }
            4..=6 => {
                let (from, to) = (any_path(root, &mut rng), any_path(root, &mut rng));
                let flags = match rng.below(6) {
                    0 => libc::RENAME_NOREPLACE,
                    1 => libc::RENAME_EXCHANGE,
                    _ => 0,
                };
                ("rename", sys::rename(&from, &to, flags))
            }
            7 => {
                let (from, to) = (any_path(root, &mut rng), any_path(root, &mut rng));
                ("link", sys::link(&from, &to))
            }
            8 => {
                let path = any_path(root, &mut rng);
                let target = format!("../t{}", rng.below(1000));
                ("symlink", sys::symlink(target.as_bytes(), &path))
            }
            9..=10 => ("unlink", sys::unlink(&any_path(root, &mut rng))),
            11 => ("mkdir", sys::mkdir(&sub_path(root, &mut rng), 0o755)),
            12 => ("rmdir", sys::rmdir(&sub_path(root, &mut rng))),
            13..=14 => {
                let path = any_path(root, &mut rng);
                let n = rng.below(6);
                let name = format!("user.k{n}");
                // Small values (in the inode) and one name with a value that
                // needs an xattr block; all six fit one 1 KiB block.
                let len = if n == 0 { 200 + rng.below(300) } else { rng.below(60) } as usize;
                let value = rng.bytes(len);
                ("setxattr", sys::setxattr(&path, name.as_bytes(), &value, 0))
            }
            15 => {
                let name = format!("user.k{}", rng.below(6));
                ("removexattr", sys::removexattr(&any_path(root, &mut rng), name.as_bytes()))
            }
            16 => {
                let mode = 0o600 | (rng.below(0o200) as u32);
                ("chmod", sys::chmod(&any_path(root, &mut rng), mode))
            }
            17 => {
                let dir = root.join(format!("d{}", rng.below(DIRS)));
                ("list", std::fs::read_dir(&dir).and_then(|mut entries| entries.try_for_each(|e| e.map(drop))))
            }
            _ => {
                let Some(file) = &own else { continue };
                ("own-write", own_write(file, &mut own_model, &mut rng, id))
            }
        };
        match result {
            Ok(()) => *tally.ok.entry(name.to_string()).or_default() += 1,
            Err(e) => {
                let errno = sys::errno(&e);
                if EXPECTED.contains(&errno) && name != "own-write" {
                    *tally.expected.entry(errno).or_default() += 1;
                } else {
                    tally.unexpected.push(format!("worker {id}: {name}: {e}"));
                }
            }
        }
    }
    if let Some(file) = &own {
        let mut back = vec![0; own_model.len()];
        match sys::read_full_at(file, &mut back, 0) {
            Ok(n) if n == own_model.len() && back == own_model => {}
            Ok(n) => tally.unexpected.push(format!(
                "worker {id}: its own file holds other bytes than it wrote ({n} of {} read back)",
                own_model.len()
            )),
            Err(e) => tally.unexpected.push(format!("worker {id}: reading its own file: {e}")),
        }
    }
    tally
}

/// A write (or truncate) of the worker's own file, read back at once and
/// compared with the worker's model of the file.
fn own_write(file: &std::fs::File, model: &mut Vec<u8>, rng: &mut Rng, id: u64) -> std::io::Result<()> {
    if rng.below(5) == 0 {
        let len = rng.below(300_000) as usize;
        file.set_len(len as u64)?;
        model.resize(len, 0);
    } else {
        let at = rng.below(256 << 10) as usize;
        let len = 1 + rng.below(70_000) as usize;
        let data = rng.bytes(len);
        file.write_all_at(&data, at as u64)?;
        if model.len() < at + data.len() {
            model.resize(at + data.len(), 0);
        }
        model[at..at + data.len()].copy_from_slice(&data);
        let mut back = vec![0; data.len()];
        let n = sys::read_full_at(file, &mut back, at as u64)?;
        if n != data.len() || back != data {
            return Err(std::io::Error::other(format!(
                "worker {id}: {} bytes written at {at} read back otherwise",
                data.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_survives_its_lines() {
        let mut t = Tally::default();
        t.ok.insert("rename".into(), 3);
        t.ok.insert("own-write".into(), 1);
        t.expected.insert(libc::ENOENT, 7);
        t.unexpected.push("worker 1: link: Input/output error (os error 5)".into());
        let text = format!("noise\n{}more noise\n", t.lines());
        assert_eq!(Tally::parse(&text), Some(t));
        assert_eq!(Tally::parse("no counts here\n"), None);
    }

    #[test]
    fn the_generator_is_seeded() {
        let (mut a, mut b, mut c) = (Rng::new(1), Rng::new(1), Rng::new(2));
        let (x, y, z): (Vec<u64>, Vec<u64>, Vec<u64>) = (
            (0..8).map(|_| a.next()).collect(),
            (0..8).map(|_| b.next()).collect(),
            (0..8).map(|_| c.next()).collect(),
        );
        assert_eq!(x, y);
        assert_ne!(x, z);
    }
}
