//! A mounted filesystem's fixed context: where to read, the geometry, and
//! which checksums to verify. Every parser takes a `&Volume`; caches live
//! in the `Ext4` value above it (fs.rs), so parsers stay pure functions of
//! the disk.

use crate::csum::Checksums;
use crate::disk::Disk;
use crate::superblock::Superblock;

/// What every parser needs to find and check an on-disk structure.
pub struct Volume {
    pub disk: Disk,
    pub sb: Superblock,
    pub csum: Checksums,
    /// Inode-table blocks read at once around an inode's block (the
    /// kernel's `inode_readahead_blks`, a power of two; 0: none).
    pub inode_readahead: u32,
}

impl Volume {
    /// The filesystem block size in bytes, as u64 for offset arithmetic.
    pub fn bs(&self) -> u64 {
        u64::from(self.sb.block_size)
    }
}
