//! A per-inode interval cache of validated mappings.
//!
//! The image is read-only, so a mapping never goes stale; the cache is
//! bounded by a total number of mappings and emptied when full (simple,
//! and refilling costs one guest call per extent).

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
}

impl MappingCache {
    /// A cache holding at most `capacity` mappings.
    pub fn new(capacity: usize) -> Self {
        MappingCache { inner: RwLock::new(Inner::default()), capacity }
    }

    /// The cached mapping of `ino` that contains file offset `pos`.
    pub fn get(&self, ino: Ino, pos: u64) -> Option<Mapping> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let (_, m) = inner.by_ino.get(&ino)?.range(..=pos).next_back()?;
        m.contains(pos).then(|| m.clone())
    }

    /// Remember `mappings` of `ino` (validated: sorted and contiguous).
    /// Ranges that overlap what is cached replace it.
    pub fn insert(&self, ino: Ino, mappings: &[Mapping]) {
        let (Some(first), Some(last)) = (mappings.first(), mappings.last()) else { return };
        let (start, end) = (first.offset.0, last.end());
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if inner.count + mappings.len() > self.capacity {
            inner.by_ino.clear();
            inner.count = 0;
        }
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
        c.insert(Ino(5), &[m(0, 4096, 8192), m(4096, 8192, 65536)]);
        assert_eq!(c.get(Ino(5), 4095), Some(m(0, 4096, 8192)));
        assert_eq!(c.get(Ino(5), 12287), Some(m(4096, 8192, 65536)));
        assert_eq!(c.get(Ino(5), 12288), None);
        assert_eq!(c.get(Ino(6), 0), None);
    }

    #[test]
    fn overlapping_inserts_replace_and_capacity_bounds() {
        let c = MappingCache::new(3);
        c.insert(Ino(1), &[m(0, 8192, 0)]);
        c.insert(Ino(1), &[m(4096, 4096, 40960)]);
        assert_eq!(c.get(Ino(1), 0), None, "the overlapped range was dropped");
        assert_eq!(c.get(Ino(1), 4096), Some(m(4096, 4096, 40960)));
        c.insert(Ino(2), &[m(0, 4096, 0), m(4096, 4096, 0), m(8192, 4096, 0)]);
        assert_eq!(c.get(Ino(1), 4096), None, "full cache was emptied");
        assert!(c.get(Ino(2), 8192).is_some());
    }
}
