//! A map bounded by entry count, for the volume's attribute and xattr-name
//! caches. A walk of a large tree touches every inode once: an unbounded
//! map grew to 37 MiB for 135k inodes (more than the rest of the server),
//! and emptying it when full forgot the entries a reader was about to use.
//! Two generations instead: inserts go to the young one; when it holds half
//! the bound it becomes the old one and the previous old one is dropped, so
//! the last half-bound inserts always survive and memory stays within the
//! bound. O(1) per call, no list to keep.

use std::collections::HashMap;
use std::hash::Hash;

/// A map of at most `bound` entries that forgets the oldest half first.
#[derive(Debug)]
pub(crate) struct Bounded<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
    half: usize,
}

impl<K: Hash + Eq, V> Bounded<K, V> {
    /// An empty map holding at most `bound` entries (at least 2).
    pub(crate) fn new(bound: usize) -> Self {
        Bounded { young: HashMap::new(), old: HashMap::new(), half: (bound / 2).max(1) }
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.young.get(key).or_else(|| self.old.get(key))
    }

    pub(crate) fn insert(&mut self, key: K, value: V) {
        if self.young.len() >= self.half && !self.young.contains_key(&key) {
            self.old = std::mem::take(&mut self.young);
        }
        self.old.remove(&key);
        self.young.insert(key, value);
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let young = self.young.remove(key);
        let old = self.old.remove(key);
        young.or(old)
    }

    pub(crate) fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_half_and_stays_bounded() {
        let mut m = Bounded::new(10);
        for i in 0..1000u32 {
            m.insert(i, i * 2);
            assert!(m.len() <= 10, "bounded after {i}");
            // The last five inserted are always there.
            for j in i.saturating_sub(4)..=i {
                assert_eq!(m.get(&j), Some(&(j * 2)), "{j} after {i}");
            }
        }
        assert_eq!(m.get(&0), None, "the oldest went first");
    }

    #[test]
    fn replaces_removes_and_clears_in_both_generations() {
        let mut m = Bounded::new(4);
        m.insert(1, "a");
        m.insert(2, "b");
        m.insert(3, "c"); // 1 and 2 are old now
        m.insert(1, "A");
        assert_eq!(m.get(&1), Some(&"A"), "a newer value wins");
        assert_eq!(m.len(), 3, "no copy left behind");
        assert_eq!(m.remove(&2), Some("b"));
        assert_eq!(m.get(&2), None);
        m.clear();
        assert_eq!((m.len(), m.get(&3)), (0, None));
    }
}
