//! Name indexes for directories without an htree, and what else the guest
//! keeps about a directory between calls ([`DirMemo`]).
//!
//! `mkfs.ext4 -d`, old ext2/ext3 tools and every directory of one block
//! leave directories unindexed; a lookup in one is a linear scan. The
//! kernel scans from its page cache; the guest would re-read, re-verify
//! (crc32c of every leaf block and of the extent blocks on the way) and
//! re-parse the whole directory for every name, which made `find` over a
//! tree of 2,000-entry directories quadratic (measured: 37 s for 23,771
//! entries under /usr/share/man, against 0.2 s warm). A [`NameIndex`] is
//! the directory parsed once into a hash map, kept in an LRU by the
//! filesystem.
//!
//! An index answers exactly what the linear scan answers: the first
//! record with the name. Whenever the scan could differ (an htree, an
//! inline or casefolded directory, a block that fails to read or verify,
//! more than [`NameIndex::MAX_ENTRIES`] records) no index is built and the
//! lookup scans as before, reporting its errors as before.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry as Slot;

use crate::directory::{self, Found, Order};
use crate::inode::Inode;
use crate::volume::Volume;

/// The live records of one directory, by name.
#[derive(Debug, Default)]
pub struct NameIndex {
    names: HashMap<Vec<u8>, Found>,
}

impl NameIndex {
    /// The most records an index holds (about 5 MiB of guest memory with
    /// 30-byte names); a larger directory is scanned.
    pub const MAX_ENTRIES: usize = 65536;

    /// The index of `dir`, or `None` when lookups in it must scan.
    pub fn build(vol: &Volume, dir: &Inode) -> Option<NameIndex> {
        if !directory::is_linear(vol, dir) {
            return None;
        }
        let mut index = NameIndex::default();
        let complete = directory::for_each_record(vol, dir, &mut |name, found| {
            if let Slot::Vacant(slot) = index.names.entry(name.to_vec()) {
                slot.insert(found);
            }
            index.names.len() <= Self::MAX_ENTRIES
        });
        matches!(complete, Ok(true)).then_some(index)
    }

    /// The record named `name`, if any.
    pub fn get(&self, name: &[u8]) -> Option<Found> {
        self.names.get(name).copied()
    }
}

/// What the guest keeps about one directory between calls: its name index
/// (lookups) and how it lists ([`Order`]: for an htree, its whole index),
/// each made on first use. `Ext4` keeps these per directory and the writer
/// drops a directory's whenever it writes the directory's inode, which
/// every change of its records or index does (times, size).
#[derive(Debug, Default)]
pub struct DirMemo {
    names: OnceCell<Option<NameIndex>>,
    order: OnceCell<Order>,
}

impl DirMemo {
    /// The name index of `dir`, or `None` when lookups in it must scan.
    pub fn names(&self, vol: &Volume, dir: &Inode) -> Option<&NameIndex> {
        self.names.get_or_init(|| NameIndex::build(vol, dir)).as_ref()
    }

    /// How `dir` lists.
    pub fn order(&self, vol: &Volume, dir: &Inode) -> &Order {
        self.order.get_or_init(|| directory::order(vol, dir))
    }
}
