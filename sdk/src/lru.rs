//! A small least-recently-used map for parsed objects. The host calls
//! getattr, lookup, readdirplus and iomap-begin on the same objects over
//! and over; a guest that keeps a few thousand parsed inodes, directory
//! listings or extent lists saves re-reading and re-checking them each
//! time. The ext4 and FAT guests use it; [`crate::Device`] already caches
//! the raw blocks.
//!
//! Eviction drops the older half at once when full, so inserting stays
//! O(1) amortised without a linked list.

use std::collections::HashMap;
use std::hash::Hash;

/// A bounded map that forgets the least recently used half when full.
pub struct Lru<K, V> {
    map: HashMap<K, (u64, V)>,
    tick: u64,
    capacity: usize,
}

impl<K: Hash + Eq + Copy, V: Clone> Lru<K, V> {
    /// An empty cache holding up to `capacity` values.
    pub fn new(capacity: usize) -> Self {
        Self { map: HashMap::new(), tick: 0, capacity: capacity.max(2) }
    }

    /// The value for `key`, marking it used.
    pub fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(key).map(|(used, v)| {
            *used = tick;
            v.clone()
        })
    }

    /// Remember `value` for `key`.
    pub fn insert(&mut self, key: K, value: V) {
        if self.map.len() >= self.capacity {
            let mut ticks: Vec<u64> = self.map.values().map(|(t, _)| *t).collect();
            let mid = ticks.len() / 2;
            let (_, &mut median, _) = ticks.select_nth_unstable(mid);
            self.map.retain(|_, (t, _)| *t > median);
        }
        self.tick += 1;
        self.map.insert(key, (self.tick, value));
    }

    /// Forget `key` (a writer changed the object), returning its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.map.remove(key).map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_recent_entries_and_stays_bounded() {
        let mut lru = Lru::new(10);
        for i in 0..10 {
            lru.insert(i, i * 2);
        }
        assert_eq!(lru.get(&0), Some(0));
        lru.insert(10, 20);
        assert!(lru.map.len() <= 10);
        assert_eq!(lru.get(&0), Some(0), "recently used entry survives eviction");
        assert_eq!(lru.get(&10), Some(20));
        assert_eq!(lru.get(&1), None, "oldest entry evicted");
        for i in 0..1000 {
            lru.insert(i, i);
        }
        assert!(lru.map.len() <= 10);
    }
}
