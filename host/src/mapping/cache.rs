//! A per-inode interval cache of validated mappings.
//!
//! On a read-only mount a mapping never goes stale; on a read-write mount
//! the write half drops an inode's mappings whenever it changes them
//! ([`MappingCache::forget`]), and an answer the guest gave before such a
//! change is not cached after it (the generation). The cache is bounded by
//! a total number of mappings, each inode's first counting twice (an
//! inode's tree costs more than a mapping: a tar of 135k small files kept
//! 80 MiB of one-mapping trees), and emptied when full (simple, and
//! refilling costs one guest call per extent; the kernel's page cache
//! keeps what was read).

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use crate::types::{Ino, Mapping};

/// Mappings by inode, keyed by file offset.
pub struct MappingCache {
    inner: RwLock<Inner>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    by_ino: HashMap<Ino, BTreeMap<u64, Mapping>>,
    count: usize,
    /// Bumped by every [`MappingCache::forget`].
    generation: u64,
}

impl MappingCache {
    /// A cache holding at most `capacity` mappings and inodes together.
    pub fn new(capacity: usize) -> Self {
        MappingCache { inner: RwLock::new(Inner::default()), capacity }
    }

    /// The cached mapping of `ino` that contains file offset `pos`.
    pub fn get(&self, ino: Ino, pos: u64) -> Option<Mapping> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let (_, m) = inner.by_ino.get(&ino)?.range(..=pos).next_back()?;
        m.contains(pos).then(|| m.clone())
    }

    /// The generation to note before asking the guest for mappings.
    pub fn generation(&self) -> u64 {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).generation
    }

    /// Drop every mapping (a read-write mount's guest restarted mid-change).
    pub fn clear(&self) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.by_ino.clear();
        inner.count = 0;
        inner.generation += 1;
    }

    /// Drop every mapping of `ino` (the write half changed its layout).
    pub fn forget(&self, ino: Ino) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(tree) = inner.by_ino.remove(&ino) {
            inner.count -= tree.len() + 1;
        }
        inner.generation += 1;
    }

    /// Remember `mappings` of `ino` (validated: sorted and contiguous),
    /// asked for when the generation was `seen`: nothing is kept if a
    /// layout changed since. Ranges that overlap what is cached replace it.
    pub fn insert(&self, ino: Ino, mappings: &[Mapping], seen: u64) {
        let (Some(first), Some(last)) = (mappings.first(), mappings.last()) else { return };
        let (start, end) = (first.offset.0, last.end());
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if inner.generation != seen {
            return;
        }
        let new_tree = usize::from(!inner.by_ino.contains_key(&ino));
        if inner.count + mappings.len() + new_tree > self.capacity {
            inner.by_ino.clear();
            inner.count = 0;
        }
        let new_tree = usize::from(!inner.by_ino.contains_key(&ino));
        inner.count += new_tree;
        let tree = inner.by_ino.entry(ino).or_default();
        // Drop cached ranges that overlap [start, end).
        let mut stale: Vec<u64> = tree.range(start..end).map(|(k, _)| *k).collect();
        if let Some((k, m)) = tree.range(..start).next_back()
            && m.end() > start
        {
            stale.push(*k);
        }
        let removed = stale.iter().filter(|k| tree.remove(k).is_some()).count();
        for m in mappings {
            tree.insert(m.offset.0, m.clone());
        }
        inner.count = inner.count + mappings.len() - removed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{DeviceOffset, FileOffset, MappingKind};

    fn m(off: u64, len: u64, dev: u64) -> Mapping {
        Mapping { offset: FileOffset(off), length: len, kind: MappingKind::Mapped(DeviceOffset(dev)) }
    }

    #[test]
    fn finds_the_containing_mapping_only() {
        let c = MappingCache::new(100);
        c.insert(Ino(5), &[m(0, 4096, 8192), m(4096, 8192, 65536)], 0);
        assert_eq!(c.get(Ino(5), 4095), Some(m(0, 4096, 8192)));
        assert_eq!(c.get(Ino(5), 12287), Some(m(4096, 8192, 65536)));
        assert_eq!(c.get(Ino(5), 12288), None);
        assert_eq!(c.get(Ino(6), 0), None);
    }

    #[test]
    fn overlapping_inserts_replace_and_capacity_bounds() {
        let c = MappingCache::new(5);
        c.insert(Ino(1), &[m(0, 8192, 0)], 0);
        c.insert(Ino(1), &[m(4096, 4096, 40960)], 0);
        assert_eq!(c.get(Ino(1), 0), None, "the overlapped range was dropped");
        assert_eq!(c.get(Ino(1), 4096), Some(m(4096, 4096, 40960)));
        c.insert(Ino(2), &[m(0, 4096, 0), m(4096, 4096, 0), m(8192, 4096, 0)], 0);
        assert_eq!(c.get(Ino(1), 4096), None, "full cache was emptied");
        assert!(c.get(Ino(2), 8192).is_some());
    }

    #[test]
    fn forget_drops_an_inode_and_refuses_answers_from_before() {
        let c = MappingCache::new(100);
        c.insert(Ino(1), &[m(0, 4096, 8192)], c.generation());
        c.insert(Ino(2), &[m(0, 4096, 12288)], c.generation());
        let before = c.generation();
        c.forget(Ino(1));
        assert_eq!(c.get(Ino(1), 0), None);
        assert!(c.get(Ino(2), 0).is_some(), "other inodes stay");
        c.insert(Ino(1), &[m(0, 4096, 8192)], before);
        assert_eq!(c.get(Ino(1), 0), None, "an answer from before the change is not kept");
        c.insert(Ino(1), &[m(0, 4096, 16384)], c.generation());
        assert_eq!(c.get(Ino(1), 0), Some(m(0, 4096, 16384)));
    }
}
