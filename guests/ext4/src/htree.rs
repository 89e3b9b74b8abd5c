//! The hashed directory index (htree, `dir_index`): finding the leaf blocks
//! that can hold a name in O(depth) block reads.
//!
//! Block 0 of an indexed directory is the root: fake "." and ".." records,
//! then `dx_root_info` (hash version, depth) and a sorted array of
//! (hash, block) pairs; interior nodes (at most two more levels with
//! largedir) are blocks whose single fake record spans the block, holding
//! another array. Leaves are ordinary directory blocks. The walk follows
//! the kernel's `dx_probe` and `ext4_htree_next_block`, including the
//! collision rule: a name's entries continue into the next leaf while the
//! next index hash equals the name's hash with its low bit set.
//!
//! Structural problems in the index (bad limits, unknown hash, cycles) are
//! reported as [`Probe::Bad`], on which the caller falls back to a linear
//! scan as the kernel does (`ERR_BAD_DX_DIR`); checksum and read errors are
//! plain errors.

use fshost_sdk::bytes::{le_u16, le_u32, slice, u8_at};
use fshost_sdk::{Error, Result};

use crate::csum::crc32c;
use crate::dir;
use crate::features::incompat;
use crate::hash;
use crate::inode::Inode;
use crate::mapping;
use crate::volume::Volume;

/// Size of a dx entry (hash, block) and of the checksum tail.
const ENTRY_SIZE: usize = 8;
const TAIL_SIZE: usize = 8;
/// Where the count/limit pair sits in an interior node.
const NODE_ENTRIES: usize = 8;
/// Where `dx_root_info` starts in the root.
const ROOT_INFO: usize = 24;

/// The result of looking a hash up in the index.
pub enum Probe {
    /// The index is sound; the cursor points at the first candidate leaf.
    Found(Cursor),
    /// The index is malformed; search the directory linearly instead.
    Bad(Error),
}

/// One level of the path from the root to a leaf.
struct Frame {
    /// (hash, block) pairs; the first pair's hash is implicitly 0.
    entries: Vec<(u32, u32)>,
    at: usize,
}

/// A position in the index: the path to the current candidate leaf.
pub struct Cursor {
    frames: Vec<Frame>,
    hash: u32,
    blocks: u64,
}

/// Parse the count/limit pair at `off` and the entries after it, checking
/// the limit and (with metadata_csum) the dx tail checksum.
fn entries(vol: &Volume, dir: &Inode, block: &[u8], off: usize, limit: usize) -> Result<Result<Vec<(u32, u32)>>> {
    let got_limit = usize::from(le_u16(block, off)?);
    let count = usize::from(le_u16(block, off + 2)?);
    // As the kernel, verify the checksum (with the limit as stored) before
    // trusting anything else in the block.
    if vol.csum.metadata {
        let tail = off + got_limit * ENTRY_SIZE;
        let computed = slice(block, 0, off + count.min(got_limit) * ENTRY_SIZE).and_then(|covered| {
            let c = crc32c(dir.csum_seed, covered);
            // The tail's reserved word, then its checksum field as zero.
            let c = crc32c(c, slice(block, tail, 4)?);
            Ok(crc32c(c, &[0; 4]))
        });
        let stored = le_u32(block, tail + 4);
        match (computed, stored) {
            (Ok(c), Ok(stored)) if c == stored => {}
            (Ok(c), Ok(stored)) => {
                return Err(Error::bad_checksum(format!(
                    "directory {}: index checksum {stored:#010x} does not match computed {c:#010x}",
                    dir.ino
                )));
            }
            _ => {
                return Err(Error::bad_checksum(format!(
                    "directory {}: index checksum: no room for the tail (limit {got_limit})",
                    dir.ino
                )));
            }
        }
    }
    if got_limit != limit {
        return Ok(Err(Error::corrupted(format!("dx limit {got_limit} != expected {limit}"))));
    }
    if count == 0 || count > limit {
        return Ok(Err(Error::corrupted(format!("dx count {count} beyond limit {limit}"))));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let at = off + i * ENTRY_SIZE;
        let hash = if i == 0 { 0 } else { le_u32(block, at)? };
        out.push((hash, le_u32(block, at + 4)? & 0x0fff_ffff));
    }
    Ok(Ok(out))
}

/// The hash version recorded in the index root of `dir`, if it can be read
/// and is one the kernel knows.
pub fn root_hash_version(vol: &Volume, dir: &Inode) -> Option<u8> {
    let root = mapping::read_dir_block(vol, dir, 0).ok()??;
    u8_at(&root, ROOT_INFO + 4).ok().filter(|v| [hash::LEGACY, hash::HALF_MD4, hash::TEA].contains(v))
}

/// The index root of a directory, checked as `dx_probe` checks it.
struct Root {
    /// As recorded (without the unsigned adjustment).
    hash_version: u8,
    levels: u8,
    entries: Vec<(u32, u32)>,
}

/// Read and check the root of `dir`'s index: `Ok(Err)` when it is
/// malformed (the caller falls back to linear reading), `Err` for read and
/// checksum failures.
fn root(vol: &Volume, dir: &Inode) -> Result<Result<Root>> {
    let bs = vol.sb.block_size as usize;
    let csum_space = if vol.csum.metadata { TAIL_SIZE } else { 0 };
    let Some(root) = mapping::read_dir_block(vol, dir, 0)? else {
        return Ok(Err(Error::corrupted("htree root block is a hole")));
    };
    let hash_version = u8_at(&root, ROOT_INFO + 4)?;
    let info_length = usize::from(u8_at(&root, ROOT_INFO + 5)?);
    let levels = u8_at(&root, ROOT_INFO + 6)?;
    let unused_flags = u8_at(&root, ROOT_INFO + 7)?;
    let root_off = ROOT_INFO + info_length;
    let root_limit = bs.saturating_sub(24 + info_length + csum_space) / ENTRY_SIZE;
    let first = entries(vol, dir, &root, root_off, root_limit)?;
    if ![hash::LEGACY, hash::HALF_MD4, hash::TEA].contains(&hash_version) {
        return Ok(Err(Error::corrupted(format!("unrecognised hash version {hash_version}"))));
    }
    if unused_flags & 1 != 0 {
        return Ok(Err(Error::corrupted(format!("unimplemented hash flags {unused_flags:#x}"))));
    }
    let max_levels = if vol.sb.features.incompat(incompat::LARGEDIR) { 3 } else { 2 };
    if levels >= max_levels {
        return Ok(Err(Error::corrupted(format!("htree depth {levels} exceeds {max_levels}"))));
    }
    Ok(first.map(|entries| Root { hash_version, levels, entries }))
}

/// Find the first leaf that may hold names hashing like `name`.
pub fn probe(vol: &Volume, dir: &Inode, name: &[u8]) -> Result<Probe> {
    let blocks = dir.size.div_ceil(vol.bs());
    let root = match root(vol, dir)? {
        Ok(root) => root,
        Err(e) => return Ok(Probe::Bad(e)),
    };
    let hash_version = root.hash_version;
    let Some(hash) = hash::dx_hash(hash_version + vol.sb.hash_unsigned, name, &vol.sb.hash_seed) else {
        return Ok(Probe::Bad(Error::corrupted(format!("unrecognised hash version {hash_version}"))));
    };
    let mut cursor = Cursor { frames: Vec::new(), hash, blocks };
    let mut entries_here = root.entries;
    let mut visited = vec![0u32];
    loop {
        let at = entries_here.partition_point(|&(h, _)| h <= hash).saturating_sub(1);
        let block = entries_here.get(at).map_or(0, |e| e.1);
        cursor.frames.push(Frame { entries: entries_here, at });
        if visited.contains(&block) || u64::from(block) >= blocks {
            return Ok(Probe::Bad(Error::corrupted(format!(
                "dx entry points to block {block} (cycle or past the end)"
            ))));
        }
        if cursor.frames.len() > usize::from(root.levels) {
            return Ok(Probe::Found(cursor));
        }
        visited.push(block);
        entries_here = match node(vol, dir, block)? {
            Ok(e) => e,
            Err(e) => return Ok(Probe::Bad(e)),
        };
    }
}

/// Every leaf of a directory's index, in hash order: what listing in hash
/// order needs, read once per directory (the guest keeps it between the
/// batches of a listing, names.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaves {
    /// The hash version entries are hashed with (the root's, with the
    /// superblock's unsigned adjustment).
    pub hash_version: u8,
    /// (hash, block): the hash the leaf's index entry starts at (its low
    /// bit set when the leaf continues a collision from the one before:
    /// `ext4_htree_next_block`), and the leaf's block in the directory.
    pub leaves: Vec<(u32, u32)>,
}

/// Read the whole index of `dir`: `Ok(Err)` when any part of it is
/// malformed or out of order (every node is checked as `dx_probe` checks
/// the nodes on one path, each block is visited once and lies inside the
/// directory), `Err` for read and checksum failures.
pub fn leaves(vol: &Volume, dir: &Inode) -> Result<Result<Leaves>> {
    let blocks = dir.size.div_ceil(vol.bs());
    let root = match root(vol, dir)? {
        Ok(root) => root,
        Err(e) => return Ok(Err(e)),
    };
    let mut walk = Walk { blocks, levels: root.levels, visited: std::collections::HashSet::from([0]), out: Vec::new() };
    if let Err(e) = walk.node(vol, dir, 0, root.entries, 0)? {
        return Ok(Err(e));
    }
    if walk.out.windows(2).any(|w| w[0].0 > w[1].0) {
        return Ok(Err(Error::corrupted("index hashes out of order")));
    }
    let version = root.hash_version;
    let hash_version = if version <= hash::TEA { version + vol.sb.hash_unsigned } else { version };
    Ok(Ok(Leaves { hash_version, leaves: walk.out }))
}

/// The state of [`leaves`]' depth-first walk.
struct Walk {
    blocks: u64,
    levels: u8,
    visited: std::collections::HashSet<u32>,
    out: Vec<(u32, u32)>,
}

impl Walk {
    /// Walk the entries of one node at `level` (0: the root), whose first
    /// entry starts at hash `start`.
    fn node(
        &mut self,
        vol: &Volume,
        dir: &Inode,
        level: u8,
        entries: Vec<(u32, u32)>,
        start: u32,
    ) -> Result<Result<()>> {
        for (i, (hash, block)) in entries.into_iter().enumerate() {
            let hash = if i == 0 { start } else { hash };
            if u64::from(block) >= self.blocks || !self.visited.insert(block) {
                return Ok(Err(Error::corrupted(format!("dx entry points to block {block} (cycle or past the end)"))));
            }
            if level >= self.levels {
                self.out.push((hash, block));
                continue;
            }
            let lower = match node(vol, dir, block)? {
                Ok(e) => e,
                Err(e) => return Ok(Err(e)),
            };
            if let Err(e) = self.node(vol, dir, level + 1, lower, hash)? {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }
}

/// Read interior node `block` of `dir`'s index and parse its entries.
fn node(vol: &Volume, dir: &Inode, block: u32) -> Result<Result<Vec<(u32, u32)>>> {
    let Some(data) = mapping::read_dir_block(vol, dir, u64::from(block))? else {
        return Ok(Err(Error::corrupted(format!("htree node block {block} is a hole"))));
    };
    if dir::first_rec_len(&data, vol.sb.block_size)? != data.len() {
        return Ok(Err(Error::corrupted(format!("block {block}: leaf found where an index node belongs"))));
    }
    let csum_space = if vol.csum.metadata { TAIL_SIZE } else { 0 };
    let limit = (data.len() - NODE_ENTRIES - csum_space) / ENTRY_SIZE;
    entries(vol, dir, &data, NODE_ENTRIES, limit)
}

impl Cursor {
    /// The directory block of the current candidate leaf.
    pub fn leaf(&self) -> u32 {
        self.frames.last().and_then(|f| f.entries.get(f.at)).map_or(0, |e| e.1)
    }

    /// Move to the next leaf if the name's entries may continue there
    /// (`ext4_htree_next_block`); false when the search is over.
    pub fn advance(&mut self, vol: &Volume, dir: &Inode) -> Result<bool> {
        let mut level = self.frames.len();
        let bhash = loop {
            if level == 0 {
                return Ok(false);
            }
            level -= 1;
            let Some(frame) = self.frames.get_mut(level) else { return Ok(false) };
            frame.at += 1;
            if let Some(&(h, _)) = frame.entries.get(frame.at) {
                break h;
            }
        };
        if bhash & !1 != self.hash {
            return Ok(false);
        }
        for lower in level + 1..self.frames.len() {
            let block = self.frames.get(lower - 1).and_then(|f| f.entries.get(f.at)).map_or(0, |e| e.1);
            if u64::from(block) >= self.blocks {
                return Err(Error::corrupted(format!("directory {}: dx entry points past the end", dir.ino)));
            }
            let entries = node(vol, dir, block)?.map_err(|e| e.context(format!("directory {}", dir.ino)))?;
            if let Some(frame) = self.frames.get_mut(lower) {
                *frame = Frame { entries, at: 0 };
            }
        }
        Ok(true)
    }
}
