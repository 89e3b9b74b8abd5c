//! The two-level cluster table: the L1 table (read whole at open) points
//! at L2 tables (one cluster each, cached), whose entries say where each
//! cluster of the virtual disk is: stored plainly in the file, compressed,
//! all zeros, or not in this image. With extended L2 entries (v3
//! incompatible bit 4) each cluster is 32 subclusters, each allocated,
//! zero or unallocated on its own.
//!
//! Decoding follows QEMU's `qcow2_get_cluster_type` and
//! `qcow2_get_subcluster_type`; an entry QEMU calls invalid is corrupt.

use crate::bytes::u64_at;
use crate::header::Header;
use crate::{Disk, Error, Result};

/// Bits 9-55 of an L1 or standard L2 entry: a cluster-aligned offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED: u64 = 1 << 62;
const ZERO: u64 = 1;
/// Subclusters per cluster with extended L2 entries.
const SUBCLUSTERS: u32 = 32;
/// Bytes of L2 tables kept (at least two tables, at most 256: the cache
/// is searched linearly).
const CACHE_BYTES: u64 = 8 << 20;
const CACHE_TABLES: u64 = 256;

/// What one range of the disk reads as, in this image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// Stored in the file at this offset.
    Backing(u64),
    Zeros,
    /// Not in this image (the backing file's, or zeros without one).
    Unallocated,
    /// A compressed cluster: its L2 entry (a cache key), where its bytes
    /// start in the file and how many there are at most.
    Compressed {
        entry: u64,
        at: u64,
        size: u64,
    },
}

/// A range of the disk and what it reads as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub offset: u64,
    pub length: u64,
    pub kind: Piece,
}

/// The L1 table, as entries.
pub fn read_l1(disk: &dyn Disk, h: &Header) -> Result<Vec<u64>> {
    // Inside the file, at most 32 MiB: checked by header::read.
    let bytes = disk.read(h.l1_offset, h.l1_size as usize * 8)?;
    Ok(bytes.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8]))).collect())
}

/// The most recently used L2 tables, by file offset.
pub struct L2Cache {
    tables: Vec<(u64, Vec<u8>)>,
    max: usize,
}

impl L2Cache {
    pub fn new(cluster_size: u64) -> Self {
        L2Cache { tables: Vec::new(), max: (CACHE_BYTES / cluster_size).clamp(2, CACHE_TABLES) as usize }
    }

    fn get(&mut self, disk: &dyn Disk, at: u64, cluster_size: u64) -> Result<&[u8]> {
        if let Some(i) = self.tables.iter().position(|(o, _)| *o == at) {
            let hit = self.tables.remove(i);
            self.tables.insert(0, hit);
        } else {
            let table = disk.read(at, cluster_size as usize)?;
            self.tables.truncate(self.max - 1);
            self.tables.insert(0, (at, table));
        }
        Ok(self.tables.first().map(|(_, t)| t.as_slice()).unwrap_or_default())
    }
}

/// What the cluster starting at disk offset `pos` (cluster-aligned) reads
/// as: one span, or one per subcluster; a whole L1 entry's range at once
/// when it has no L2 table.
pub fn pieces(disk: &dyn Disk, h: &Header, l1: &[u64], cache: &mut L2Cache, pos: u64) -> Result<Vec<Span>> {
    let cluster_size = h.cluster_size();
    let cluster = pos >> h.cluster_bits;
    let l1_index = cluster / h.l2_entries();
    let l2_index = cluster % h.l2_entries();
    let whole = |kind| Ok(vec![Span { offset: pos, length: cluster_size, kind }]);
    let Some(l1_entry) = usize::try_from(l1_index).ok().and_then(|i| l1.get(i)) else {
        return whole(Piece::Unallocated);
    };
    let l2_at = l1_entry & OFFSET_MASK;
    if l2_at == 0 {
        // No L2 table: the rest of this L1 entry's range is unallocated.
        let span = h.l2_entries() << h.cluster_bits;
        let end = (l1_index + 1).saturating_mul(span);
        return Ok(vec![Span {
            offset: pos,
            length: end.saturating_sub(pos).max(cluster_size),
            kind: Piece::Unallocated,
        }]);
    }
    if !l2_at.is_multiple_of(cluster_size) || l2_at.checked_add(cluster_size).is_none_or(|e| e > disk.size()) {
        return Err(Error::corrupted(format!(
            "L1 entry {l1_index}: L2 table at {l2_at} is unaligned or past the end of the file"
        )));
    }
    let table = cache.get(disk, l2_at, cluster_size)?;
    let at = (l2_index * h.l2_entry_size()) as usize;
    let entry = u64_at(table, at, "L2 entry")?;
    let what = || format!("L2 entry {l2_index} of the table at {l2_at} (disk byte {pos})");

    if entry & COMPRESSED != 0 {
        // Bits 0..x-1 the byte offset, x..61 the extra 512-byte sectors,
        // with x = 62 - (cluster_bits - 8).
        let shift = 62 - (h.cluster_bits - 8);
        let offset = entry & ((1u64 << shift) - 1);
        let sectors = ((entry >> shift) & ((1u64 << (h.cluster_bits - 8)) - 1)) + 1;
        let size = (sectors * 512).saturating_sub(offset % 512);
        return whole(Piece::Compressed { entry, at: offset, size });
    }
    let host = entry & OFFSET_MASK;
    if host != 0 && !host.is_multiple_of(cluster_size) {
        return Err(Error::corrupted(format!("{}: data cluster at {host} is not cluster-aligned", what())));
    }
    if !h.extended_l2 {
        return match (entry & ZERO != 0, host) {
            (true, _) => whole(Piece::Zeros),
            (false, 0) => whole(Piece::Unallocated),
            (false, host) => whole(Piece::Backing(host)),
        };
    }
    let bitmap = u64_at(table, at + 8, "L2 subcluster bitmap")?;
    let (alloc, zero) = (bitmap as u32, (bitmap >> 32) as u32);
    if alloc & zero != 0 || (host == 0 && alloc != 0) {
        return Err(Error::corrupted(format!("{}: invalid subcluster bitmap {bitmap:#018x}", what())));
    }
    let sub = cluster_size / u64::from(SUBCLUSTERS);
    Ok((0..SUBCLUSTERS)
        .map(|i| {
            let bit = 1u32 << i;
            let kind = if zero & bit != 0 {
                Piece::Zeros
            } else if alloc & bit != 0 {
                Piece::Backing(host + u64::from(i) * sub)
            } else {
                Piece::Unallocated
            };
            Span { offset: pos + u64::from(i) * sub, length: sub, kind }
        })
        .collect())
}
