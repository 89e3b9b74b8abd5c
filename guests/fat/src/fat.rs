//! The file allocation table: cluster chains, walked into runs of
//! contiguous clusters, the way Linux's vfat walks them (`fat_get_cluster`,
//! `fat_ent_read` and the `ent_get` of each width).
//!
//! A chain is untrusted. As in the kernel, a link to a cluster that is not
//! a data cluster, or a free entry inside a chain, breaks the chain there
//! (EIO), and the bad-cluster marker and every value above it end the
//! chain. A directory's chain is walked to its end and fails as a whole
//! when broken or looping, as the kernel's `fat_calc_dir_size` fails the
//! directory's inode. A file's chain is walked only as far as its size
//! needs, and a break fails only the clusters from the break on: the part
//! before it maps, as the kernel reads it. A file's chain may loop within
//! its size (the kernel reads the loop's clusters again); every walk stops
//! after as many links as the volume has clusters, so none is endless: a
//! file whose size needs more (only a size past the volume's does, and
//! only a loop makes a chain that long) maps the rest by repeating the
//! loop, as the kernel would read it.

use fshost_sdk::{Device, Error, Result};

use crate::boot::{FIRST_CLUSTER, FatType, Geometry};

/// What a FAT entry says comes after a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Cluster(u32),
    /// The end of the chain: the end marker, or the bad-cluster marker,
    /// which the kernel's `ent_get` also takes as the end.
    End,
    Free,
}

/// A run of `len` contiguous clusters starting at `cluster`, holding the
/// chain's clusters `index .. index + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub index: u32,
    pub cluster: u32,
    pub len: u32,
}

/// Reads FAT entries through a window of the first FAT.
pub struct Fat<'a> {
    dev: &'a Device,
    geo: &'a Geometry,
    window_start: u64,
    window: Vec<u8>,
}

/// Bytes of the FAT read at once.
const WINDOW: u64 = 64 * 1024;

impl<'a> Fat<'a> {
    pub fn new(dev: &'a Device, geo: &'a Geometry) -> Self {
        Self { dev, geo, window_start: 0, window: Vec::new() }
    }

    /// `len` (<= 4) bytes of the FAT at byte `at` within it.
    fn bytes(&mut self, at: u64, len: usize) -> Result<[u8; 4]> {
        let mut out = [0u8; 4];
        let end = at + len as u64;
        if end > self.geo.fat_bytes {
            return Err(Error::corrupted(format!("FAT entry at byte {at} is past the end of the FAT")));
        }
        let inside = at >= self.window_start && end <= self.window_start + self.window.len() as u64;
        if !inside {
            let start = at - at % WINDOW;
            let take = WINDOW.min(self.geo.fat_bytes - start);
            self.window = self.dev.read(self.geo.fat_start + start, take as usize)?;
            self.window_start = start;
            if end > start + take {
                // A FAT12 entry straddling the window's end: read it alone.
                self.dev.read_into(self.geo.fat_start + at, &mut out[..len])?;
                return Ok(out);
            }
        }
        let from = (at - self.window_start) as usize;
        let src = self.window.get(from..from + len).ok_or_else(|| Error::io("short FAT read"))?;
        out[..len].copy_from_slice(src);
        Ok(out)
    }

    /// The raw entry for cluster `n` (which must be < the FAT's entry count).
    pub fn entry(&mut self, n: u32) -> Result<u32> {
        let n64 = u64::from(n);
        Ok(match self.geo.fat_type {
            FatType::Fat12 => {
                let b = self.bytes(n64 * 3 / 2, 2)?;
                let v = u32::from(u16::from_le_bytes([b[0], b[1]]));
                if n & 1 == 1 { v >> 4 } else { v & 0xfff }
            }
            FatType::Fat16 => {
                let b = self.bytes(n64 * 2, 2)?;
                u32::from(u16::from_le_bytes([b[0], b[1]]))
            }
            FatType::Fat32 => u32::from_le_bytes(self.bytes(n64 * 4, 4)?) & 0x0fff_ffff,
        })
    }

    /// What follows data cluster `cluster`.
    pub fn next(&mut self, cluster: u32) -> Result<Next> {
        let v = self.entry(cluster)?;
        let bad = match self.geo.fat_type {
            FatType::Fat12 => 0xff7,
            FatType::Fat16 => 0xfff7,
            FatType::Fat32 => 0x0fff_fff7,
        };
        Ok(match v {
            0 => Next::Free,
            v if v >= bad => Next::End,
            v => Next::Cluster(v),
        })
    }

    /// The runs of a directory's chain from `start` to its end. Fails (EIO,
    /// as the kernel fails the directory) if the chain is broken or loops.
    /// `what` names the owner in errors.
    pub fn dir_runs(&mut self, start: u32, what: &dyn std::fmt::Display) -> Result<Vec<Run>> {
        let mut runs: Vec<Run> = Vec::new();
        let mut cluster = start;
        let mut count = 0u32;
        loop {
            if !self.geo.valid_cluster(cluster) {
                return Err(self.out_of_range(what, cluster));
            }
            push(&mut runs, count, cluster);
            count += 1;
            cluster = match self.next(cluster)? {
                Next::Cluster(c) if count < self.geo.clusters => c,
                // As many clusters as the volume has and still going.
                Next::Cluster(_) => return Err(Error::io(format!("{what}: cluster chain loops"))),
                Next::End => break,
                Next::Free => return Err(free_in_chain(what, cluster)),
            };
        }
        check_no_repeats(&runs, what)?;
        Ok(runs)
    }

    /// The chain of a file that needs `need` clusters, from `start`: the
    /// runs of its first clusters, up to `need` or to where the chain
    /// breaks (with the error reading from there gets). A chain longer than
    /// the size needs is not followed further.
    pub fn file_chain(&mut self, start: u32, need: u32, what: &dyn std::fmt::Display) -> FileChain {
        let mut runs: Vec<Run> = Vec::new();
        let mut cluster = start;
        let mut count = 0u32;
        let mut cycle = None;
        let broken = loop {
            if count == need {
                break None;
            }
            if !self.geo.valid_cluster(cluster) {
                break Some(self.out_of_range(what, cluster));
            }
            if count == self.geo.clusters {
                // More links than the volume has clusters: the chain has
                // come back to `cluster`, and from its first place on it
                // repeats (every cluster after it has been met already).
                let first = runs.iter().find_map(|r| {
                    let at = cluster.checked_sub(r.cluster).filter(|&at| at < r.len)?;
                    Some(r.index + at)
                });
                match first {
                    Some(from) => {
                        cycle = Some(Cycle { from, period: count - from });
                        break None;
                    }
                    None => break Some(Error::io(format!("{what}: cluster chain loops"))),
                }
            }
            push(&mut runs, count, cluster);
            count += 1;
            if count == need {
                break None;
            }
            cluster = match self.next(cluster) {
                Ok(Next::Cluster(c)) => c,
                Ok(Next::End) => {
                    break Some(Error::io(format!(
                        "{what}: cluster chain ends after {count} clusters, the size needs {need}"
                    )));
                }
                Ok(Next::Free) => break Some(free_in_chain(what, cluster)),
                Err(e) => break Some(e),
            };
        };
        FileChain { runs, broken, cycle, need }
    }

    fn out_of_range(&self, what: &dyn std::fmt::Display, cluster: u32) -> Error {
        Error::io(format!(
            "{what}: cluster chain reaches cluster {cluster}, out of range 2..={}",
            u64::from(self.geo.clusters) + 1
        ))
    }

    /// Free data clusters, counted from the FAT as the kernel's statfs does
    /// (it trusts FSInfo's count only with `-o usefree`).
    pub fn count_free(&mut self) -> Result<u64> {
        let width = match self.geo.fat_type {
            FatType::Fat12 => {
                let mut free = 0u64;
                for n in FIRST_CLUSTER..FIRST_CLUSTER + self.geo.clusters {
                    free += u64::from(self.entry(n)? == 0);
                }
                return Ok(free);
            }
            FatType::Fat16 => 2u64,
            FatType::Fat32 => 4u64,
        };
        // FAT16/32 entries never straddle a window: scan whole windows
        // (a large FAT32 has millions of entries, counted at mount).
        let first = u64::from(FIRST_CLUSTER) * width;
        let end = (u64::from(FIRST_CLUSTER) + u64::from(self.geo.clusters)) * width;
        let mut free = 0u64;
        let mut at = first;
        while at < end {
            let take = (WINDOW - at % WINDOW).min(end - at);
            let chunk = self.dev.read(self.geo.fat_start + at, take as usize)?;
            free += chunk
                .chunks_exact(width as usize)
                .filter(|e| match e {
                    [a, b] => *a == 0 && *b == 0,
                    [a, b, c, d] => *a == 0 && *b == 0 && *c == 0 && *d & 0x0f == 0,
                    _ => false,
                })
                .count() as u64;
            at += take;
        }
        Ok(free)
    }
}

/// A file's clusters as far as its chain holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChain {
    /// The runs of the file's first clusters, in file order.
    pub runs: Vec<Run>,
    /// Why the clusters after `runs` cannot be found, if the size needs
    /// more.
    pub broken: Option<Error>,
    /// For a size that needs more clusters than the volume has and a chain
    /// that loops: the clusters after `runs` repeat its loop.
    pub cycle: Option<Cycle>,
    /// The clusters the file's size needs.
    pub need: u32,
}

impl FileChain {
    /// No clusters (an empty file, or one without a first cluster).
    pub fn empty() -> FileChain {
        FileChain { runs: Vec::new(), broken: None, cycle: None, need: 0 }
    }

    /// The file cluster `index` names, as an index into `runs`' clusters:
    /// itself, or its place in the loop (the chain's `from + (index - from)
    /// % period`-th cluster). None past a break or the size.
    pub fn chain_index(&self, index: u64) -> Option<u64> {
        let mapped = self.runs.last().map_or(0, |r| u64::from(r.index) + u64::from(r.len));
        match self.cycle {
            _ if index >= u64::from(self.need) => None,
            _ if index < mapped => Some(index),
            Some(c) if c.period > 0 => Some(u64::from(c.from) + (index - u64::from(c.from)) % u64::from(c.period)),
            _ => None,
        }
    }
}

/// A loop in a chain: its clusters `from .. from + period` repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cycle {
    pub from: u32,
    pub period: u32,
}

/// Appends `cluster`, the chain's `index`-th, to `runs`.
fn push(runs: &mut Vec<Run>, index: u32, cluster: u32) {
    match runs.last_mut() {
        Some(run) if run.cluster.checked_add(run.len) == Some(cluster) => run.len += 1,
        _ => runs.push(Run { index, cluster, len: 1 }),
    }
}

fn free_in_chain(what: &dyn std::fmt::Display, cluster: u32) -> Error {
    Error::io(format!("{what}: the FAT entry of cluster {cluster} says free inside a chain"))
}

/// Fails if two runs share a cluster (a chain that loops or crosses itself).
fn check_no_repeats(runs: &[Run], what: &dyn std::fmt::Display) -> Result<()> {
    let mut sorted: Vec<(u32, u32)> = runs.iter().map(|r| (r.cluster, r.cluster + r.len)).collect();
    sorted.sort_unstable();
    for pair in sorted.windows(2) {
        if let [a, b] = pair
            && b.0 < a.1
        {
            return Err(Error::io(format!("{what}: cluster chain loops (cluster {} twice)", b.0)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fshost_sdk::{ErrorCode, testing::memory_device};

    /// A FAT16 geometry whose FAT is the first 512 bytes of the device.
    fn setup(entries: &[(u32, u16)]) -> (Device, Geometry) {
        let mut bytes = vec![0u8; 4096];
        for &(n, v) in entries {
            let at = n as usize * 2;
            bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
        let geo = Geometry {
            fat_type: FatType::Fat16,
            sector_size: 512,
            cluster_size: 512,
            fat_start: 0,
            fat_bytes: 512,
            data_start: 1024,
            clusters: 6,
            root: crate::boot::RootDir::Fixed { start: 512, entries: 16 },
            fsinfo: None,
            serial: None,
            label: None,
        };
        (memory_device(bytes), geo)
    }

    #[test]
    fn coalesces_contiguous_clusters() {
        let (dev, geo) = setup(&[(2, 3), (3, 4), (4, 6), (6, 7), (7, 0xffff)]);
        let mut fat = Fat::new(&dev, &geo);
        let runs = fat.dir_runs(2, &"dir").unwrap();
        assert_eq!(runs, vec![Run { index: 0, cluster: 2, len: 3 }, Run { index: 3, cluster: 6, len: 2 }]);
        let chain = fat.file_chain(2, 4, &"file");
        assert_eq!(chain.broken, None);
        assert_eq!(chain.runs.last().unwrap().len, 1);
        assert_eq!(fat.count_free().unwrap(), 1); // cluster 5
    }

    #[test]
    fn broken_or_looping_directory_chains_fail_with_eio() {
        for (what, entries) in [
            ("loop", vec![(2u32, 3u16), (3, 2)]),
            ("self loop", vec![(2, 2)]),
            ("free in chain", vec![(2, 0)]),
            ("out of range", vec![(2, 100)]),
            ("reserved value", vec![(2, 0xfff0)]),
        ] {
            let (dev, geo) = setup(&entries);
            let err = Fat::new(&dev, &geo).dir_runs(2, &"dir").unwrap_err();
            assert_eq!(err.code(), ErrorCode::Io, "{what}: {err}");
        }
    }

    #[test]
    fn the_bad_cluster_marker_and_above_end_a_chain() {
        for end in [0xfff7u16, 0xfffe, 0xffff] {
            let (dev, geo) = setup(&[(2, 3), (3, end)]);
            let runs = Fat::new(&dev, &geo).dir_runs(2, &"dir").unwrap();
            assert_eq!(runs, vec![Run { index: 0, cluster: 2, len: 2 }], "0x{end:x}");
        }
    }

    /// A file's chain maps up to where it breaks; the error is for the
    /// clusters after.
    #[test]
    fn a_broken_file_chain_keeps_its_first_clusters() {
        for (what, entries, need, mapped) in [
            ("short", vec![(2u32, 3u16), (3, 0xffff)], 4, 2),
            ("bad marker", vec![(2, 3), (3, 0xfff7)], 4, 2),
            ("free in chain", vec![(2, 3), (3, 0)], 4, 2),
            ("out of range", vec![(2, 3), (3, 100)], 4, 2),
            ("bigger than the volume", vec![(2, 3), (3, 0xffff)], 1000, 2),
        ] {
            let (dev, geo) = setup(&entries);
            let chain = Fat::new(&dev, &geo).file_chain(2, need, &"file");
            let err = chain.broken.unwrap_or_else(|| panic!("{what}: not broken"));
            assert_eq!(err.code(), ErrorCode::Io, "{what}: {err}");
            let clusters: u32 = chain.runs.iter().map(|r| r.len).sum();
            assert_eq!(clusters, mapped, "{what}");
        }
        let (dev, geo) = setup(&[]);
        let chain = Fat::new(&dev, &geo).file_chain(100, 2, &"file");
        assert!(chain.runs.is_empty() && chain.broken.is_some(), "a first cluster out of range");
    }

    /// As the kernel, a loop inside the size is followed: the file reads
    /// its clusters again.
    #[test]
    fn a_file_chain_loops_within_its_size() {
        let (dev, geo) = setup(&[(2, 3), (3, 2)]);
        let chain = Fat::new(&dev, &geo).file_chain(2, 5, &"file");
        assert_eq!(chain.broken, None);
        let clusters: Vec<u32> = chain.runs.iter().flat_map(|r| (0..r.len).map(move |i| r.cluster + i)).collect();
        assert_eq!(clusters, [2, 3, 2, 3, 2]);
        assert_eq!(chain.runs.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 2, 4]);
    }

    /// A loop past the volume's clusters: the walk stops at the volume's
    /// cluster count and the rest of the file repeats the loop.
    #[test]
    fn a_file_larger_than_the_volume_repeats_its_loop() {
        // 2 -> 3 -> 4 -> 5 -> 3: the loop is 3, 4, 5 (chain places 1..4).
        let (dev, geo) = setup(&[(2, 3), (3, 4), (4, 5), (5, 3)]);
        let chain = Fat::new(&dev, &geo).file_chain(2, 1000, &"file");
        assert_eq!(chain.broken, None);
        assert_eq!(chain.cycle, Some(Cycle { from: 3, period: 3 }));
        let cluster_at = |i: u64| -> u32 {
            let c = chain.chain_index(i).unwrap() as u32;
            let r = chain.runs.iter().find(|r| r.index <= c && c < r.index + r.len).unwrap();
            r.cluster + (c - r.index)
        };
        let walked: Vec<u32> = (0..12).map(cluster_at).collect();
        assert_eq!(walked, [2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 3, 4]);
        assert_eq!(cluster_at(999), [3, 4, 5][(999 - 1) % 3]);
        assert_eq!(chain.chain_index(1000), None, "past the size");
        // Without a loop the chain index ends where the runs do.
        let short = Fat::new(&dev, &geo).file_chain(2, 3, &"file");
        assert_eq!(short.chain_index(2), Some(2));
        assert_eq!(short.chain_index(3), None);
    }
}
