//! The file allocation table: cluster chains, walked into runs of
//! contiguous clusters.
//!
//! A chain is untrusted: every next-cluster value is checked to name a data
//! cluster, a free or bad entry inside a chain is `Corrupted`, and every
//! walk is bounded (a file walks only the clusters its size needs, a
//! directory at most as many clusters as the volume has), and the clusters
//! a walk returns are checked not to repeat, so a loop is reported rather
//! than followed.

use fshost_sdk::{Device, Error, Result};

use crate::boot::{FIRST_CLUSTER, FatType, Geometry};

/// What a FAT entry says comes after a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Cluster(u32),
    End,
    Free,
    Bad,
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
        let (bad, eof) = match self.geo.fat_type {
            FatType::Fat12 => (0xff7, 0xff8),
            FatType::Fat16 => (0xfff7, 0xfff8),
            FatType::Fat32 => (0x0fff_fff7, 0x0fff_fff8),
        };
        Ok(match v {
            0 => Next::Free,
            v if v >= eof => Next::End,
            v if v == bad => Next::Bad,
            v => Next::Cluster(v),
        })
    }

    /// The runs of the chain starting at `start`. With `Some(need)`, stops
    /// after `need` clusters and fails if the chain ends first; with `None`,
    /// follows the chain to its end. `what` names the owner in errors.
    pub fn runs(&mut self, start: u32, need: Option<u32>, what: &dyn std::fmt::Display) -> Result<Vec<Run>> {
        let limit = need.unwrap_or(self.geo.clusters);
        let mut runs: Vec<Run> = Vec::new();
        if limit == 0 {
            return Ok(runs);
        }
        if need.is_some_and(|n| n > self.geo.clusters) {
            return Err(Error::corrupted(format!(
                "{what}: needs {limit} clusters, the volume has {}",
                self.geo.clusters
            )));
        }
        let mut cluster = start;
        let mut count = 0u32;
        loop {
            if !self.geo.valid_cluster(cluster) {
                return Err(Error::corrupted(format!(
                    "{what}: cluster chain reaches cluster {cluster}, out of range 2..={}",
                    u64::from(self.geo.clusters) + 1
                )));
            }
            match runs.last_mut() {
                Some(run) if run.cluster.checked_add(run.len) == Some(cluster) => run.len += 1,
                _ => runs.push(Run { index: count, cluster, len: 1 }),
            }
            count += 1;
            if count == limit {
                if need.is_none() {
                    // As many clusters as the volume has and still going.
                    if let Next::Cluster(_) = self.next(cluster)? {
                        return Err(Error::corrupted(format!("{what}: cluster chain loops")));
                    }
                }
                break;
            }
            cluster = match self.next(cluster)? {
                Next::Cluster(c) => c,
                Next::End if need.is_none() => break,
                Next::End => {
                    return Err(Error::corrupted(format!(
                        "{what}: cluster chain ends after {count} clusters, the size needs {limit}"
                    )));
                }
                Next::Free => {
                    return Err(Error::corrupted(format!(
                        "{what}: the FAT entry of cluster {cluster} says free inside a chain"
                    )));
                }
                Next::Bad => {
                    return Err(Error::corrupted(format!(
                        "{what}: the FAT entry of cluster {cluster} says bad inside a chain"
                    )));
                }
            };
        }
        check_no_repeats(&runs, what)?;
        Ok(runs)
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

/// Fails if two runs share a cluster (a chain that loops or crosses itself).
fn check_no_repeats(runs: &[Run], what: &dyn std::fmt::Display) -> Result<()> {
    let mut sorted: Vec<(u32, u32)> = runs.iter().map(|r| (r.cluster, r.cluster + r.len)).collect();
    sorted.sort_unstable();
    for pair in sorted.windows(2) {
        if let [a, b] = pair
            && b.0 < a.1
        {
            return Err(Error::corrupted(format!("{what}: cluster chain loops (cluster {} twice)", b.0)));
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
        let runs = fat.runs(2, None, &"file").unwrap();
        assert_eq!(runs, vec![Run { index: 0, cluster: 2, len: 3 }, Run { index: 3, cluster: 6, len: 2 }]);
        assert_eq!(fat.runs(2, Some(4), &"file").unwrap().last().unwrap().len, 1);
        assert_eq!(fat.count_free().unwrap(), 1); // cluster 5
    }

    #[test]
    fn loops_short_chains_and_bad_numbers_are_corrupted() {
        for (what, entries, need) in [
            ("loop", vec![(2u32, 3u16), (3, 2)], None),
            ("loop within the size", vec![(2, 3), (3, 2)], Some(4)),
            ("short", vec![(2, 0xffff)], Some(2)),
            ("free in chain", vec![(2, 0)], Some(2)),
            ("out of range", vec![(2, 100)], Some(2)),
            ("bad cluster", vec![(2, 0xfff7)], Some(2)),
            ("bigger than volume", vec![(2, 0xffff)], Some(7)),
        ] {
            let (dev, geo) = setup(&entries);
            let err = Fat::new(&dev, &geo).runs(2, need, &"file").unwrap_err();
            assert_eq!(err.code(), ErrorCode::Corrupted, "{what}: {err}");
        }
    }
}
