//! The extent tree: ext4's map from file blocks to disk blocks.
//!
//! The root lives in the inode's 60-byte `i_block` (a 12-byte header and up
//! to 4 entries); deeper nodes are whole blocks ending in a crc32c tail.
//! Index entries point to child nodes covering file blocks from their
//! `ei_block` up to the next entry's; leaf entries are extents of up to 32768
//! blocks (initialised) or 32767 (unwritten, flagged by a length above
//! 32768). The walk checks what the kernel's `__ext4_ext_check` checks
//! (magic, counts, depth, checksums) and more: the extents it returns must
//! come out strictly increasing and inside the filesystem, the tree is at
//! most 5 levels deep, and one walk visits at most [`MAX_NODES`] nodes, so a
//! crafted tree cannot loop or make the walk go backwards.

use fshost_sdk::bytes::{le_u16, le_u32, slice};
use fshost_sdk::{Error, Result};

use crate::csum::crc32c;
use crate::inode::Inode;
use crate::mapping::{Run, Runs};
use crate::volume::Volume;

const MAGIC: u16 = 0xF30A;
const HEADER_SIZE: usize = 12;
const ENTRY_SIZE: usize = 12;
/// `EXT4_MAX_EXTENT_DEPTH`.
const MAX_DEPTH: u16 = 5;
/// An extent of this length or less is initialised (`EXT_INIT_MAX_LEN`).
const INIT_MAX_LEN: u16 = 32768;
/// Nodes one walk may read before the tree is declared corrupt. A walk
/// returning at most a few hundred extents reads one leaf per extent at
/// worst, plus the path down.
const MAX_NODES: usize = 1024;

/// The allocation of `[from, to)` of `inode`, at most `max` extents.
pub fn runs(vol: &Volume, inode: &Inode, from: u64, to: u64, max: usize) -> Result<Runs> {
    let mut walk = Walk { vol, inode, from, to, max, out: Vec::new(), nodes: 0, last_end: 0 };
    let root_depth = header(&inode.block).map_err(|e| walk.err(0, e))?.depth;
    if root_depth > MAX_DEPTH {
        return Err(walk.err(0, Error::corrupted(format!("extent tree depth {root_depth} exceeds {MAX_DEPTH}"))));
    }
    let stopped = walk.node(&inode.block, root_depth, None)?;
    let end = match (stopped, walk.out.last()) {
        (true, Some(last)) if walk.out.len() >= max => last.end(),
        _ => to,
    };
    Ok(Runs { runs: walk.out, end })
}

struct Header {
    entries: u16,
    max: u16,
    depth: u16,
}

fn header(node: &[u8]) -> Result<Header> {
    let magic = le_u16(node, 0)?;
    if magic != MAGIC {
        return Err(Error::corrupted(format!("extent header magic {magic:#06x}, expected {MAGIC:#06x}")));
    }
    let h = Header { entries: le_u16(node, 2)?, max: le_u16(node, 4)?, depth: le_u16(node, 6)? };
    if h.entries > h.max {
        return Err(Error::corrupted(format!("extent header: {} entries exceed max {}", h.entries, h.max)));
    }
    Ok(h)
}

struct Walk<'a> {
    vol: &'a Volume,
    inode: &'a Inode,
    from: u64,
    to: u64,
    max: usize,
    out: Vec<Run>,
    nodes: usize,
    /// End of the last extent returned: the next must start at or after it.
    last_end: u64,
}

impl Walk<'_> {
    fn err(&self, block: u64, e: Error) -> Error {
        if block == 0 {
            e.context(format!("inode {}: extent root", self.inode.ino))
        } else {
            e.context(format!("inode {}: extent block {block}", self.inode.ino))
        }
    }

    /// Walk `node` (the root when `block` is None) expecting `depth`; true
    /// when the walk is done (past `to`, or `max` extents collected).
    fn node(&mut self, node: &[u8], depth: u16, block: Option<u64>) -> Result<bool> {
        let at = block.unwrap_or(0);
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(self.err(at, Error::corrupted(format!("walk visits more than {MAX_NODES} nodes"))));
        }
        let h = header(node).map_err(|e| self.err(at, e))?;
        let space = if block.is_some() { node.len() } else { self.inode.block.len() };
        let limit = (space - HEADER_SIZE) / ENTRY_SIZE;
        if usize::from(h.max) > limit {
            return Err(self.err(at, Error::corrupted(format!("eh_max {} exceeds {limit}", h.max))));
        }
        if h.depth != depth {
            return Err(self.err(at, Error::corrupted(format!("depth {} where {depth} expected", h.depth))));
        }
        if depth > 0 && h.entries == 0 {
            return Err(self.err(at, Error::corrupted("index node without entries")));
        }
        if block.is_some() && self.vol.csum.metadata {
            self.verify(node, h.max).map_err(|e| self.err(at, e))?;
        }
        if depth == 0 { self.leaf(node, h.entries, at) } else { self.index(node, h.entries, depth, at) }
    }

    fn verify(&self, node: &[u8], max: u16) -> Result<()> {
        let tail = HEADER_SIZE + ENTRY_SIZE * usize::from(max);
        let stored = le_u32(node, tail)?;
        let computed = crc32c(self.inode.csum_seed, slice(node, 0, tail)?);
        if stored != computed {
            return Err(Error::bad_checksum(format!(
                "checksum {stored:#010x} does not match computed {computed:#010x}"
            )));
        }
        Ok(())
    }

    fn leaf(&mut self, node: &[u8], entries: u16, at: u64) -> Result<bool> {
        let mut prev_end = 0u64;
        for i in 0..usize::from(entries) {
            let off = HEADER_SIZE + i * ENTRY_SIZE;
            let lblk = u64::from(le_u32(node, off)?);
            let raw_len = le_u16(node, off + 4)?;
            let pblk = u64::from(le_u16(node, off + 6)?) << 32 | u64::from(le_u32(node, off + 8)?);
            let (len, unwritten) = if raw_len <= INIT_MAX_LEN {
                (u64::from(raw_len), false)
            } else {
                (u64::from(raw_len - INIT_MAX_LEN), true)
            };
            if len == 0 {
                return Err(self.err(at, Error::corrupted(format!("extent {i} (block {lblk}) has length 0"))));
            }
            if !self.vol.sb.blocks_valid(pblk, len) {
                return Err(self.err(
                    at,
                    Error::corrupted(format!("extent {i} maps to blocks {pblk}+{len} outside the filesystem")),
                ));
            }
            let end = lblk + len;
            if lblk < prev_end {
                return Err(
                    self.err(at, Error::corrupted(format!("extent {i} (block {lblk}) overlaps its predecessor")))
                );
            }
            prev_end = end;
            if end <= self.from {
                continue;
            }
            if lblk >= self.to {
                return Ok(true);
            }
            if lblk < self.last_end {
                return Err(
                    self.err(at, Error::corrupted(format!("extent {i} (block {lblk}) out of order in the tree")))
                );
            }
            self.out.push(Run { lblk, len, pblk, unwritten });
            self.last_end = end;
            if self.out.len() >= self.max {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn index(&mut self, node: &[u8], entries: u16, depth: u16, at: u64) -> Result<bool> {
        let mut children = Vec::with_capacity(usize::from(entries));
        for i in 0..usize::from(entries) {
            let off = HEADER_SIZE + i * ENTRY_SIZE;
            let lblk = u64::from(le_u32(node, off)?);
            let child = u64::from(le_u16(node, off + 8)?) << 32 | u64::from(le_u32(node, off + 4)?);
            if children.last().is_some_and(|&(prev, _)| prev >= lblk) {
                return Err(self.err(at, Error::corrupted(format!("index entry {i} (block {lblk}) out of order"))));
            }
            children.push((lblk, child));
        }
        let start = children.iter().rposition(|&(lblk, _)| lblk <= self.from).unwrap_or(0);
        for &(lblk, child) in children.get(start..).unwrap_or_default() {
            if lblk >= self.to {
                return Ok(true);
            }
            if !self.vol.sb.blocks_valid(child, 1) {
                return Err(
                    self.err(at, Error::corrupted(format!("index points to block {child} outside the filesystem")))
                );
            }
            let data = self.vol.disk.read_block(child)?;
            if self.node(&data, depth - 1, Some(child))? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
